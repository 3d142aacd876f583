"""Per-message parse cost of fastmesh._http1 against httptools (llhttp) and h11.

    python perf/bench_http1.py --fast -o /tmp/http1.json

Each benchmark parses one whole message (head + body) from the same bytes:
fastmesh through Http1Parser.parse_bytes_once (parse_head + parse_body in C,
then reset), httptools by feeding a keep-alive parser that is reused, h11
with a fresh Connection per message (h11 cannot start a new cycle on the
server side without sending a response; for responses the h11 number also
includes sending the request head it needs first).
"""
import h11
import httptools
import pyperf

from fastmesh._http1 import Http1Parser

GET = (
    b"GET /api/v1/users/12345?fields=name,email HTTP/1.1\r\n"
    b"Host: users.internal.svc.cluster.local\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.abc\r\n"
    b"X-Request-Id: 5f0c3c1e-8b7a-4a51-9a39-8f1c0d1e2f3a\r\n"
    b"X-Forwarded-For: 10.0.0.1\r\n"
    b"\r\n"
)
POST = (
    b"POST /api/v1/upload HTTP/1.1\r\n"
    b"Host: upload.internal\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Length: 1024\r\n"
    b"X-Request-Id: 1234\r\n"
    b"\r\n" + b"x" * 1024
)
CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Server: backend\r\n"
    b"\r\n"
    b"100\r\n" + b"a" * 256 + b"\r\n"
    b"80;ext=1\r\n" + b"b" * 128 + b"\r\n"
    b"0\r\n\r\n"
)


class _Proto:
    """The smallest httptools protocol that still receives the data."""
    __slots__ = ("done",)

    def __init__(self):
        self.done = 0

    def on_url(self, url):
        pass

    def on_header(self, name, value):
        pass

    def on_body(self, body):
        pass

    def on_message_complete(self):
        self.done += 1


def h11_request(data):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    while True:
        ev = conn.next_event()
        if type(ev) is h11.EndOfMessage:
            return


_H11_REQ = h11.Request(method="GET", target="/", headers=[("Host", "x")])


def h11_response(data):
    conn = h11.Connection(h11.CLIENT)
    conn.send(_H11_REQ)
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    while True:
        ev = conn.next_event()
        if type(ev) is h11.EndOfMessage:
            return


def main():
    runner = pyperf.Runner()
    req_parser = Http1Parser(True)
    resp_parser = Http1Parser(False)
    for data, name in ((GET, "get-8-headers"), (POST, "post-1KiB")):
        assert req_parser.parse_bytes_once(data) == len(data)
        runner.bench_func(f"fastmesh {name}", req_parser.parse_bytes_once, data)
        hp = httptools.HttpRequestParser(_Proto())
        runner.bench_func(f"httptools {name}", hp.feed_data, data)
        runner.bench_func(f"h11 {name}", h11_request, data)
    assert resp_parser.parse_bytes_once(CHUNKED_RESPONSE) == len(CHUNKED_RESPONSE)
    runner.bench_func("fastmesh chunked-response", resp_parser.parse_bytes_once, CHUNKED_RESPONSE)
    hp = httptools.HttpResponseParser(_Proto())
    runner.bench_func("httptools chunked-response", hp.feed_data, CHUNKED_RESPONSE)
    runner.bench_func("h11 chunked-response", h11_response, CHUNKED_RESPONSE)


if __name__ == "__main__":
    main()
