"""A real HTTP/1.1 origin server (and a raw TCP echo server) for live proxy tests.

Each server runs on 127.0.0.1 with an ephemeral port, in its own thread with
its own (stdlib asyncio) event loop, so the proxy under test (uvloop, another
thread) talks to it over real sockets.

`Origin` parses requests with h11 (server side) and records, per request, the
method, target, version, headers, body, trailers and connection id, and per
connection every raw byte received, so tests can assert on exactly what
reached the upstream. The response is chosen by path:

  /echo                 200, body = request body; x-seen-headers = JSON list
                        of [name, value] as received (h11 lower-cases names),
                        x-seen-method, x-seen-target, x-seen-version
  /bytes/N              N-byte body (body_bytes(N)) with Content-Length
  /chunked/N/K          N chunks of K bytes (body_bytes(N*K)), chunked;
                        ?trailers=1 adds trailers x-trailer-a and x-body-sha256
  /slow-headers/S       sleeps S seconds before sending the head
  /slow-body            20000-byte body: 1000 bytes, a pause (?pause=S, default
                        0.3 s), the rest
  /drip                 ?n=N&interval=S: head at once (Content-Length N*100),
                        then N pieces of 100 bytes, one every S seconds
  /die-mid-body         head with Content-Length 100000, 1000 bytes, then close
  /close-delimited      no Content-Length / Transfer-Encoding; closes at end
                        (?n=SIZE, default 5000: body_bytes(SIZE))
  /head-cl              Content-Length 1234 (HEAD: no body; GET: the body)
  /status/N             status N (no body for 204/304)
  /ws                   with Upgrade: answers 101 (Upgrade: websocket), then
                        echoes raw bytes until the client closes; with
                        ?server_eof=1, once b"QUIT" was received it sends
                        b"BYE", half-closes, and waits for the client's EOF
  /reset-before-response  aborts the connection without answering
  /keepalive-close      200 with Connection: close, then closes
  /early-hints          102, then 103 with a Link header, then 200 "after hints"
  /healthz              status `Origin.health_status` (200 unless a test
                        switches it), body "ok" (health check tests)
  anything else         200 "hello <target>\n"

With `fixed_status` set (outlier detection tests), every request but
/healthz gets that status instead, whatever its path.

Every response carries x-origin: <name> (to tell origins apart).
With idle_close_ms set, a keep-alive connection that stays idle that long
after a response is closed by the origin (stale pooled connection tests).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import h11

from support.headers import HeaderLookup
from support.loopthread import LoopThread

READ_TIMEOUT = 30.0


def body_bytes(n: int) -> bytes:
    """Deterministic, position-dependent bytes (a reordering or a lost chunk changes the hash)."""
    return random.Random(n).randbytes(n)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class RecordedRequest(HeaderLookup):
    conn_id: int
    method: bytes
    target: bytes
    http_version: bytes
    headers: list            # [(name lower-case bytes, value bytes)] as received
    body: bytes = b""
    trailers: list = field(default_factory=list)

    @property
    def path(self) -> str:
        return urlsplit(self.target.decode("latin-1")).path


class _ServerThread(LoopThread):
    """An asyncio loop in a daemon thread; subclasses implement _serve()."""

    def __init__(self) -> None:
        super().__init__()
        self.thread_name = type(self).__name__
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self._tasks: set = set()
        self._writers: set = set()
        self.lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def _setup(self) -> None:
        self.server = await self._serve()
        self.port = self.server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        self.server.close()
        for w in list(self._writers):
            w.transport.abort()
        try:
            await asyncio.wait_for(self.server.wait_closed(), 2)
        except Exception:   # noqa: BLE001
            pass

    def _finish(self, loop) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))

    def stop(self) -> None:
        try:
            super().stop()
        except Exception:   # noqa: BLE001 - a stuck shutdown must not fail the test
            self.thread = None

    def _track(self):
        t = asyncio.current_task()
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)


class Origin(_ServerThread):
    """The HTTP origin (see the module docstring)."""

    def __init__(self, name: str = "origin", idle_close_ms: int | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        # host/port: e.g. two origins on one port at 127.0.0.1 and
        # 127.0.0.2, for DNS discovery (port 0: ephemeral)
        self.host, self.port = host, port
        self.name = name
        self.idle_close_ms = idle_close_ms
        self.requests: list[RecordedRequest] = []
        self.raw: dict[int, bytearray] = {}
        self.errors: list = []            # (conn_id, repr(h11 error))
        self.connections = 0              # accepted connections
        self.idle_closed = 0              # connections closed by the idle_close_ms rule
        self.ws_client_eof = 0            # /ws?server_eof=1 tunnels that saw the client's EOF
        self.health_status = 200          # what /healthz answers
        self.fixed_status: int | None = None  # every other request's status, when set
        self._next_id = 0

    async def _serve(self):
        return await asyncio.start_server(self._handle, self.host, self.port)

    # ---- inspection (thread-safe snapshots) ----

    def received(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self.requests)

    def raw_bytes(self) -> dict[int, bytes]:
        with self.lock:
            return {k: bytes(v) for k, v in self.raw.items()}

    def all_raw(self) -> bytes:
        return b"".join(self.raw_bytes().values())

    def reset_records(self) -> None:
        with self.lock:
            self.requests.clear()
            self.raw.clear()
            self.errors.clear()

    # ---- connection handling ----

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._track()
        self._writers.add(writer)
        with self.lock:
            self._next_id += 1
            cid = self._next_id
            self.connections += 1
            self.raw[cid] = bytearray()
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=256 * 1024)
        try:
            await self._serve_conn(cid, conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    async def _read(self, cid, reader, timeout=READ_TIMEOUT) -> bytes:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        with self.lock:
            self.raw[cid].extend(data)
        return data

    async def _serve_conn(self, cid, conn, reader, writer):
        while True:
            req = None
            body = bytearray()
            trailers: list = []
            first_wait = True
            while True:
                try:
                    ev = conn.next_event()
                except h11.RemoteProtocolError as e:
                    with self.lock:
                        self.errors.append((cid, repr(e)))
                    writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                                 b"connection: close\r\n\r\n")
                    await writer.drain()
                    writer.close()
                    return
                if ev is h11.NEED_DATA:
                    if (first_wait and self.idle_close_ms is not None and req is None
                            and conn.our_state is h11.IDLE):
                        try:
                            data = await self._read(cid, reader, self.idle_close_ms / 1000)
                        except asyncio.TimeoutError:
                            with self.lock:
                                self.idle_closed += 1
                            writer.close()
                            return
                    else:
                        data = await self._read(cid, reader)
                    first_wait = False
                    conn.receive_data(data)
                    continue
                if isinstance(ev, h11.Request):
                    req = ev
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    trailers = list(ev.headers)
                    break
                elif isinstance(ev, h11.ConnectionClosed):
                    writer.close()
                    return
                elif ev is h11.PAUSED:
                    break
            if req is None:
                writer.close()
                return
            rec = RecordedRequest(cid, bytes(req.method), bytes(req.target), bytes(req.http_version),
                                  [(bytes(n), bytes(v)) for n, v in req.headers],
                                  bytes(body), [(bytes(n), bytes(v)) for n, v in trailers])
            with self.lock:
                self.requests.append(rec)
            keep = await self._respond(cid, conn, reader, writer, rec)
            if not keep or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                writer.close()
                return
            conn.start_next_cycle()

    def _send(self, conn, writer, *events):
        for ev in events:
            data = conn.send(ev)
            if data:
                writer.write(data)

    async def _respond(self, cid, conn, reader, writer, rec: RecordedRequest) -> bool:
        url = urlsplit(rec.target.decode("latin-1"))
        parts = [p for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        head = [("x-origin", self.name)]
        kind = parts[0] if parts else ""
        is_head = rec.method == b"HEAD"

        def simple(status, data, extra=()):
            hdrs = head + list(extra)
            if status not in (204, 304) and not (100 <= status < 200):
                hdrs.append(("content-length", str(len(data))))
            events = [h11.Response(status_code=status, headers=hdrs)]
            if data and not is_head and status not in (204, 304):
                events.append(h11.Data(data=data))
            events.append(h11.EndOfMessage())
            self._send(conn, writer, *events)

        if kind == "healthz":
            simple(self.health_status, b"ok")
        elif self.fixed_status is not None:
            simple(self.fixed_status, f"fixed {self.fixed_status}\n".encode())
        elif kind == "echo":
            seen = json.dumps([[n.decode("latin-1"), v.decode("latin-1")] for n, v in rec.headers])
            simple(200, rec.body, [("content-type", "application/octet-stream"),
                                   ("x-seen-headers", seen),
                                   ("x-seen-method", rec.method),
                                   ("x-seen-target", rec.target),
                                   ("x-seen-version", rec.http_version)])
        elif kind == "bytes":
            simple(200, body_bytes(int(parts[1])))
        elif kind == "chunked":
            n, k = int(parts[1]), int(parts[2])
            data = body_bytes(n * k)
            self._send(conn, writer, h11.Response(
                status_code=200, headers=head + [("transfer-encoding", "chunked")]))
            for i in range(n):
                self._send(conn, writer, h11.Data(data=data[i * k:(i + 1) * k]))
                if i % 64 == 63:
                    await writer.drain()
            trailers = []
            if query.get("trailers") == ["1"]:
                trailers = [("x-trailer-a", "alpha"), ("x-body-sha256", sha256(data))]
            self._send(conn, writer, h11.EndOfMessage(headers=trailers))
        elif kind == "slow-headers":
            await asyncio.sleep(float(parts[1]))
            simple(200, b"slow\n")
        elif kind == "slow-body":
            data = body_bytes(20000)
            self._send(conn, writer, h11.Response(
                status_code=200, headers=head + [("content-length", str(len(data)))]),
                h11.Data(data=data[:1000]))
            await writer.drain()
            await asyncio.sleep(float(query.get("pause", ["0.3"])[0]))
            self._send(conn, writer, h11.Data(data=data[1000:]), h11.EndOfMessage())
        elif kind == "drip":
            n = int(query.get("n", ["6"])[0])
            interval = float(query.get("interval", ["0.2"])[0])
            data = body_bytes(n * 100)
            self._send(conn, writer, h11.Response(
                status_code=200, headers=head + [("content-length", str(len(data)))]))
            for i in range(n):
                await writer.drain()
                await asyncio.sleep(interval)
                self._send(conn, writer, h11.Data(data=data[i * 100:(i + 1) * 100]))
            self._send(conn, writer, h11.EndOfMessage())
        elif kind == "die-mid-body":
            writer.write(b"HTTP/1.1 200 OK\r\nx-origin: " + self.name.encode()
                         + b"\r\ncontent-length: 100000\r\n\r\n" + body_bytes(1000))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            return False
        elif kind == "close-delimited":
            n = int(query.get("n", ["5000"])[0])
            writer.write(b"HTTP/1.1 200 OK\r\nx-origin: " + self.name.encode()
                         + b"\r\ncontent-type: application/octet-stream\r\n\r\n")
            if not is_head:
                data = body_bytes(n)
                for i in range(0, n, 1000):   # several segments, a pause in the middle
                    writer.write(data[i:i + 1000])
                    if i == 2000:
                        await writer.drain()
                        await asyncio.sleep(0.05)
            await writer.drain()
            writer.close()
            return False
        elif kind == "head-cl":
            data = body_bytes(1234)
            self._send(conn, writer, h11.Response(
                status_code=200, headers=head + [("content-length", "1234")]))
            if not is_head:
                self._send(conn, writer, h11.Data(data=data))
            self._send(conn, writer, h11.EndOfMessage())
        elif kind == "status":
            status = int(parts[1])
            simple(status, b"" if status in (204, 304) else f"status {status}\n".encode())
        elif kind == "ws":
            if conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
                simple(400, b"not an upgrade\n")
                return True
            self._send(conn, writer, h11.InformationalResponse(
                status_code=101, headers=head + [("upgrade", "websocket"), ("connection", "Upgrade")]))
            await writer.drain()
            pending, _closed = conn.trailing_data
            server_eof = query.get("server_eof") == ["1"]
            seen = bytearray(pending)
            if pending:
                writer.write(pending)
            while not (server_eof and b"QUIT" in seen):
                data = await self._read(cid, reader)
                if not data:
                    break
                seen += data
                writer.write(data)
                await writer.drain()
            if server_eof and b"QUIT" in seen:
                # half-close first, then wait for the client's EOF
                writer.write(b"BYE")
                writer.write_eof()
                while await self._read(cid, reader, 10):
                    pass
                with self.lock:
                    self.ws_client_eof += 1
            writer.close()
            return False
        elif kind == "early-hints":
            # 102 and 103 before the final response (RFC 8297)
            self._send(conn, writer,
                       h11.InformationalResponse(status_code=102, headers=head),
                       h11.InformationalResponse(status_code=103, headers=head + [
                           ("link", "</style.css>; rel=preload; as=style")]))
            simple(200, b"after hints\n")
        elif kind == "reset-before-response":
            writer.transport.abort()
            return False
        elif kind == "keepalive-close":
            simple(200, b"bye\n", [("connection", "close")])
            await writer.drain()
            writer.close()
            return False
        else:
            simple(200, b"hello " + rec.target + b"\n")
        await writer.drain()
        return True


class TcpEchoServer(_ServerThread):
    """Raw TCP echo. On EOF from the client it sends b"BYE" and shuts down its
    write side (half-close), then waits for the client to close."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0
        self.received_total = 0
        self.eofs = 0

    async def _serve(self):
        return await asyncio.start_server(self._handle, self.host, 0, limit=1 << 20)

    async def _handle(self, reader, writer):
        self._track()
        self._writers.add(writer)
        with self.lock:
            self.connections += 1
        try:
            while True:
                data = await asyncio.wait_for(reader.read(262144), READ_TIMEOUT)
                if not data:
                    with self.lock:
                        self.eofs += 1
                    writer.write(b"BYE")
                    await writer.drain()
                    if writer.can_write_eof():
                        writer.write_eof()
                    # wait for the peer to close (or time out)
                    try:
                        await asyncio.wait_for(reader.read(1), 10)
                    except asyncio.TimeoutError:
                        pass
                    break
                with self.lock:
                    self.received_total += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound then closed)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
