"""The HTTP desync corpus (http-desync-guardian) through the live proxy.

Every case becomes raw request bytes (request line, headers, a small body
where the headers imply one), followed by an innocent pipelined request
`GET /second`, sent to a live fastmesh in front of a recording origin. Then:

* `Severe` cases: the client gets 400 and the connection is closed, and the
  origin received nothing at all;
* every case: the bytes the origin received parse cleanly with h11 (an h11
  error means the proxy sent something ambiguous or malformed); each request
  the origin saw carries at most one framing (one Content-Length, or
  Transfer-Encoding: chunked alone) and exactly as many body bytes as that
  framing says; its target is the case's URI or /second (never a smuggled
  request); and the origin saw exactly as many requests as the client got
  responses from the origin.

The corpus is vendored in tests/data/http-desync-guardian (Apache-2.0)
(override with FASTMESH_DESYNC_CORPUS). As in test_desync_codec.py, cases
without a Host header get `Host: example.com` appended.
"""
import socket

import h11
import pytest

from support import desync
from support.harness import Client, ResponseError, http_config

SECOND = b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED_BODY = desync.CHUNKED_BODY
CORPUS = desync.CORPUS
_bytes = desync.corpus_bytes
load_cases = desync.load_cases


def build(case):
    headers = desync.case_headers(case)
    body = b""
    te = [v for n, v in headers if n.strip().lower() == b"transfer-encoding"]
    cl = [v for n, v in headers if n.strip().lower() == b"content-length"]
    if any(b"chunked" in v.lower() for v in te):
        body = CHUNKED_BODY
    elif cl:
        try:
            n = int(cl[0].strip())
        except ValueError:
            n = -1
        if 0 <= n <= 1 << 20:
            body = b"A" * n
    return desync.build_head(case) + body


def allowed_targets(case):
    uri = _bytes(case["uri"])
    allowed = {uri, b"/second"}
    low = uri.lower()
    for scheme in (b"http://", b"https://"):
        if low.startswith(scheme):
            rest = uri[len(scheme):]
            i = rest.find(b"/")
            allowed.add(rest[i:] if i >= 0 else b"/")
    return allowed


def parse_origin_stream(raw: bytes):
    """Requests in one upstream connection's bytes, parsed by h11:
    [(method, target, headers, body)]. Raises AssertionError on an h11 error."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    out = []
    cur = None
    while True:
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError as e:
            raise AssertionError(f"h11 rejects what the proxy sent upstream: {e!r}\n{raw[:2000]!r}")
        if ev is h11.NEED_DATA:
            assert conn.their_state is h11.IDLE or conn.their_state is h11.DONE, \
                f"upstream stream ends inside a request ({conn.their_state}): {raw[-500:]!r}"
            return out
        if ev is h11.PAUSED:
            if conn.their_state is h11.DONE and conn.our_state is h11.SEND_RESPONSE:
                # pretend we answered so h11 moves on to the next request
                conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    rest = conn.trailing_data[0]
                    assert not rest, f"bytes after a closing request: {rest[:300]!r}"
                    return out
                conn.start_next_cycle()
                continue
            return out
        if isinstance(ev, h11.Request):
            cur = [bytes(ev.method), bytes(ev.target), [(bytes(n), bytes(v)) for n, v in ev.headers],
                   bytearray()]
            out.append(cur)
        elif isinstance(ev, h11.Data):
            cur[3] += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            pass
        elif isinstance(ev, h11.ConnectionClosed):
            return out


@pytest.fixture(scope="module")
def live():
    """One origin + proxy for the whole corpus (the origin's records are reset per case)."""
    from support.harness import ProxyThread
    from support.origin import Origin
    origin = Origin("desync").start()
    proxy = ProxyThread(http_config(origin)).start()
    yield proxy, origin
    proxy.stop()
    origin.stop()


def read_responses(c: Client, first_method: bytes, limit=2):
    out = []
    while len(out) < limit:
        try:
            r = c.read_response(first_method if not out else b"GET")
        except ResponseError:
            if not c.buf and c.eof:
                break           # clean close
            raise
        except (socket.timeout, TimeoutError):
            break
        out.append(r)
        if r.connection_close:
            break
    return out


@pytest.mark.parametrize("case", load_cases())
def test_desync_case(live, case):
    desync.require_case(case)
    proxy, origin = live
    proxy.wait_idle()
    origin.reset_records()
    conns_before = origin.connections
    raw = build(case) + SECOND
    c = Client(proxy.address("web"), timeout=3)
    try:
        c.send(raw)
        responses = read_responses(c, _bytes(case["method"]))
        closed = c.is_closed_by_peer(timeout=0.5) if not c.eof else True
    finally:
        c.close()
    proxy.wait_idle()
    tier = case["expected"]["tier"]
    if tier == "Severe":
        assert responses, "no response to a Severe request"
        assert responses[0].status == 400, (responses[0].status, responses[0].body)
        assert len(responses) == 1, [r.status for r in responses]
        assert closed, "connection left open after a Severe request"
        assert origin.all_raw() == b"", origin.all_raw()[:500]
        assert origin.connections == conns_before

    # Whatever reached the origin is unambiguous and contains no smuggled request.
    allowed = allowed_targets(case)
    seen = []
    for cid, data in sorted(origin.raw_bytes().items()):
        for method, target, headers, body in parse_origin_stream(data):
            cls = [v for n, v in headers if n == b"content-length"]
            tes = [v for n, v in headers if n == b"transfer-encoding"]
            assert not (cls and tes), f"both Content-Length and Transfer-Encoding: {headers}"
            assert len(cls) <= 1 and len(tes) <= 1, headers
            if tes:
                assert tes[0].lower() == b"chunked", tes
            if cls:
                assert int(cls[0]) == len(body), (cls, len(body))
            if not cls and not tes:
                assert body == b"", body[:100]
            assert target in allowed, f"smuggled request target {target!r} (allowed {allowed})"
            seen.append(target)
    from_origin = [r for r in responses if r.header("x-origin") == b"desync"]
    assert len(seen) == len(from_origin), (seen, [r.status for r in responses])
    assert origin.errors == [], origin.errors
