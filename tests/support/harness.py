"""Run a live fastmesh proxy in a background thread, and talk to it over raw sockets.

ProxyThread: a fastmesh.Proxy in its own thread with its own uvloop loop,
started from a config dict; addresses, stats(), reload(cfg), stop().
Everything that touches the proxy runs in its loop (run_coroutine_threadsafe).

http_config(): one http listener on 127.0.0.1:0 routing "/" to a cluster of
the given origins; listener, cluster and route options can be overridden.

Client: a blocking socket with a timeout on every operation; send raw bytes,
read one HTTP/1.1 response exactly (status line, headers, body framed by
Content-Length / chunked / close, trailers, 1xx interim responses), each
complete response also validated by h11 acting as the client.
"""
from __future__ import annotations

import asyncio
import copy
import socket
import time
from dataclasses import dataclass, field

import h11
import uvloop

import fastmesh

from support.headers import HeaderLookup
from support.loopthread import LoopThread

TIMEOUT = 5.0


# ------------------------------------------------------------------ config

def cluster(name: str, *addrs, **opts) -> dict:
    eps = []
    for a in addrs:
        if isinstance(a, dict):
            eps.append(a)
        else:
            host, port = a if isinstance(a, tuple) else a.address
            eps.append({"address": host, "port": port})
    c = {"name": name, "endpoints": eps}
    c.update(opts)
    return c


def http_config(*origins, routes=None, listener=None, cluster_opts=None,
                clusters=None, extra_listeners=(), domains=("*",)) -> dict:
    """Config dict: listener "web" (http, 127.0.0.1:0) -> routes (default: "/" to
    cluster "origin" made of `origins`, Origin objects or (host, port))."""
    lst = {"name": "web", "address": "127.0.0.1", "port": 0, "protocol": "http",
           "virtual_hosts": [{"name": "all", "domains": list(domains),
                              "routes": routes if routes is not None else
                              [{"match": {"prefix": "/"}, "cluster": "origin"}]}]}
    lst.update(listener or {})
    cls = list(clusters) if clusters is not None else []
    if origins:
        cls.insert(0, cluster("origin", *origins, **(cluster_opts or {})))
    return {"drain_timeout": 1, "listeners": [lst, *extra_listeners], "clusters": cls}


def tcp_listener(name: str, cluster_name: str, **opts) -> dict:
    d = {"name": name, "address": "127.0.0.1", "port": 0, "protocol": "tcp",
         "cluster": cluster_name}
    d.update(opts)
    return d


# ------------------------------------------------------------------ proxy

class ProxyThread(LoopThread):
    """A fastmesh.Proxy running in a background thread's uvloop loop."""

    thread_name = "fastmesh-proxy"

    def __init__(self, config: dict, owns_loop: bool = False) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        self.owns_loop = owns_loop
        self.proxy: fastmesh.Proxy | None = None
        self.loop_errors: list = []
        self.drain_timeout = 0.5

    def new_loop(self):
        loop = uvloop.new_event_loop()
        loop.set_exception_handler(lambda lp, ctx: self.loop_errors.append(ctx))
        return loop

    async def _setup(self) -> None:
        self.proxy = fastmesh.Proxy(self.config, owns_loop=self.owns_loop)
        await self.proxy.start()

    async def _shutdown(self) -> None:
        await self.proxy.stop(self.drain_timeout)

    def call(self, coro, timeout=TIMEOUT):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _in_loop(self, fn):
        async def wrap():
            return fn()
        return self.call(wrap())

    @property
    def addresses(self) -> dict:
        return self._in_loop(lambda: dict(self.proxy.addresses))

    def address(self, name: str = "web") -> tuple[str, int]:
        return self.addresses[name]

    def stats(self) -> dict:
        return self._in_loop(self.proxy.stats)

    def cluster_stats(self, name: str = "origin") -> dict:
        return self.stats()["clusters"][name]

    def reload(self, config: dict) -> None:
        self.config = copy.deepcopy(config)
        self.call(self.proxy.reload(self.config))

    def wait_for(self, pred, timeout=3.0, interval=0.02):
        """Poll stats until pred(stats) holds and return those stats; fail
        the test (AssertionError with the last stats) if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"stats never satisfied the condition in {timeout} s: {st}")
            time.sleep(interval)

    def wait_requests_done(self, timeout=3.0) -> dict:
        """Wait until no downstream request is active (connections may stay open)."""
        return self.wait_for(lambda s: s["downstream_rq_active"] == 0, timeout)

    def wait_idle(self, timeout=3.0) -> dict:
        """Wait until no downstream connection or request is active."""
        return self.wait_for(lambda s: s["downstream_cx_active"] == 0
                             and s["downstream_rq_active"] == 0, timeout)

    def stop(self, drain_timeout: float = 0.5) -> None:
        self.drain_timeout = drain_timeout
        self.stop_timeout = drain_timeout + 5
        super().stop()


# ------------------------------------------------------------------ client

class ResponseError(AssertionError):
    pass


@dataclass
class Response(HeaderLookup):
    status: int
    reason: bytes
    version: bytes
    headers: list                    # [(name lower-case bytes, value bytes)] in order
    body: bytes = b""
    trailers: list = field(default_factory=list)
    interim: list = field(default_factory=list)    # 1xx responses (status, headers)
    raw: bytes = b""                 # the final response's bytes, exactly as received
    framing: str = ""                # "length" | "chunked" | "close" | "none"

    @property
    def connection_close(self) -> bool:
        v = self.header("connection")
        return v is not None and b"close" in v.lower()


class Client:
    """One client connection to the proxy, every operation bounded by `timeout`."""

    def __init__(self, address, timeout: float = TIMEOUT, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        self.closed = False

    # -- raw I/O
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, n=262144) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(n)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def recv_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ResponseError(f"EOF after {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until_close(self, limit: int = 64 << 20) -> bytes:
        while self._fill():
            if len(self.buf) > limit:
                raise ResponseError("too much data")
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def is_closed_by_peer(self, timeout: float = 2.0) -> bool:
        """True if the peer closes (EOF or reset) within timeout, with no more
        bytes arriving (bytes arriving raise)."""
        if self.buf:
            raise ResponseError(f"unexpected bytes pending: {bytes(self.buf[:200])!r}")
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except (socket.timeout, TimeoutError):
            return False
        finally:
            self.sock.settimeout(old)
        if data:
            raise ResponseError(f"unexpected bytes instead of close: {data[:200]!r}")
        self.eof = True
        return True

    def _line(self, limit=1 << 17) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > limit:
                raise ResponseError("line too long")
            if not self._fill():
                raise ResponseError(f"EOF in line: {bytes(self.buf)!r}")

    def _head(self):
        start = self._line()
        parts = start.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
            raise ResponseError(f"bad status line {start!r}")
        headers = []
        raw = [start]
        while True:
            line = self._line()
            raw.append(line)
            if not line:
                break
            name, sep, value = line.partition(b":")
            if not sep or name != name.strip() or not name:
                raise ResponseError(f"bad header line {line!r}")
            headers.append((name.lower(), value.strip(b" \t")))
        return (parts[0], int(parts[1]), parts[2] if len(parts) > 2 else b"", headers,
                b"\r\n".join(raw) + b"\r\n")

    def read_response(self, method: bytes | str = b"GET", validate: bool = True) -> Response:
        """Read exactly one final response (after any 1xx) off the connection."""
        if isinstance(method, str):
            method = method.encode()
        interim = []
        while True:
            version, status, reason, headers, rawhead = self._head()
            if 100 <= status < 200 and status != 101:
                interim.append((status, headers))
                continue
            break
        resp = Response(status, reason, version, headers, interim=interim)
        cl = [v for n, v in headers if n == b"content-length"]
        te = [v for n, v in headers if n == b"transfer-encoding"]
        raw = bytearray(rawhead)
        if cl and te:
            raise ResponseError(f"response has both Content-Length and Transfer-Encoding: {headers}")
        if len(cl) > 1:
            raise ResponseError(f"response has several Content-Length: {cl}")
        if method == b"HEAD" or status in (101, 204, 304):
            resp.framing = "none"
        elif te:
            if te != [b"chunked"]:
                raise ResponseError(f"unexpected transfer-encoding {te}")
            resp.framing = "chunked"
            body = bytearray()
            while True:
                line = self._line()
                raw += line + b"\r\n"
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    break
                chunk = self.recv_exactly(size + 2)
                raw += chunk
                if chunk[-2:] != b"\r\n":
                    raise ResponseError("chunk not followed by CRLF")
                body += chunk[:-2]
            trailers = []
            while True:
                line = self._line()
                raw += line + b"\r\n"
                if not line:
                    break
                n, _, v = line.partition(b":")
                trailers.append((n.lower(), v.strip()))
            resp.body = bytes(body)
            resp.trailers = trailers
        elif cl:
            resp.framing = "length"
            resp.body = self.recv_exactly(int(cl[0]))
            raw += resp.body
        else:
            resp.framing = "close"
            resp.body = self.read_until_close()
            raw += resp.body
        resp.raw = bytes(raw)
        if validate and status != 101:
            _h11_check(method, resp)
        return resp

    def request(self, method="GET", target="/", headers=None, body=b"", host="example.com",
                version="HTTP/1.1") -> Response:
        self.send(build_request(method, target, headers, body, host, version))
        return self.read_response(method)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_request(method="GET", target="/", headers=None, body=b"", host="example.com",
                  version="HTTP/1.1") -> bytes:
    """Request bytes; adds Host (unless None) and Content-Length for a body
    unless the headers already frame it."""
    if isinstance(method, str):
        method = method.encode()
    if isinstance(target, str):
        target = target.encode()
    hdrs = []
    for n, v in (headers or []):
        hdrs.append((n.encode() if isinstance(n, str) else n, v.encode() if isinstance(v, str) else v))
    names = {n.lower() for n, _ in hdrs}
    if host is not None and b"host" not in names:
        hdrs.insert(0, (b"Host", host.encode()))
    if body and b"content-length" not in names and b"transfer-encoding" not in names:
        hdrs.append((b"Content-Length", str(len(body)).encode()))
    return (method + b" " + target + b" " + version.encode() + b"\r\n"
            + b"".join(n + b": " + v + b"\r\n" for n, v in hdrs) + b"\r\n" + body)


def chunk_body(data: bytes, size: int = 1000, trailers: bytes = b"") -> bytes:
    out = bytearray()
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    out += b"0\r\n" + trailers + b"\r\n"
    return bytes(out)


def _h11_check(method: bytes, resp: Response) -> None:
    """Re-parse the final response with h11 as the client: it must agree on the body."""
    conn = h11.Connection(h11.CLIENT)
    # only HEAD changes how a response is framed; other (maybe invalid) methods act as GET
    conn.send(h11.Request(method=b"HEAD" if method == b"HEAD" else b"GET", target="/",
                          headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(resp.raw)
    if resp.framing == "close":
        conn.receive_data(b"")
    body = bytearray()
    try:
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                break
            elif ev is h11.NEED_DATA or ev is h11.PAUSED:
                raise ResponseError(f"h11 says the response is incomplete ({ev})")
    except h11.RemoteProtocolError as e:
        raise ResponseError(f"h11 rejects the response: {e!r}; raw head "
                            f"{resp.raw[:400]!r}") from e
    if bytes(body) != resp.body:
        raise ResponseError("h11 and the test client disagree on the response body")
