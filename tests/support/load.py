"""A tagged HTTP/1.1 load client for fault scenarios (issue 9).

LoadClient(address, connections=N).start() runs N threads, each with its own
keep-alive connection, sending `GET /<id>` with the id in `x-fault-id` (the
origins of support/origin_proc.py record it and echo it at the start of the
body). Every request's outcome is recorded: id, start (unix time, comparable
with the origins' records), latency, status (None on a connection error) and
whether the body was whole and answered this id. A connection that fails is
replaced by a new one for the next request. stop() ends the load and
returns the outcomes.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

TAG = "x-fault-id"


@dataclass
class Outcome:
    id: str
    start: float                 # time.time() when sent
    latency: float               # seconds until the answer (or the error)
    status: int | None           # None: no complete response (reset, EOF, timeout)
    error: str = ""
    body_ok: bool = False        # the body was complete and answered this id

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body_ok


class _Conn:
    def __init__(self, address, timeout: float) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("EOF")
        self.buf += data

    def request(self, rid: str) -> tuple[int, bytes, bool]:
        """One request; (status, body, connection: close)."""
        self.sock.sendall(f"GET /{rid} HTTP/1.1\r\nhost: fault\r\n{TAG}: {rid}\r\n\r\n".encode())
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[:end + 4]
        status = int(lines[0].split(b" ")[1])
        clen, chunked, close = None, False, False
        for line in lines[1:]:
            n, _, v = line.partition(b":")
            n, v = n.strip().lower(), v.strip().lower()
            if n == b"content-length":
                clen = int(v)
            elif n == b"transfer-encoding" and b"chunked" in v:
                chunked = True
            elif n == b"connection" and b"close" in v:
                close = True
        if chunked:
            body = bytearray()
            while True:
                while (e := self.buf.find(b"\r\n")) < 0:
                    self._fill()
                size = int(bytes(self.buf[:e]).split(b";")[0], 16)
                while len(self.buf) < e + 2 + size + 2:
                    self._fill()
                body += self.buf[e + 2:e + 2 + size]
                del self.buf[:e + 2 + size + 2]
                if size == 0:
                    return status, bytes(body), close
        clen = clen or 0
        while len(self.buf) < clen:
            self._fill()
        body = bytes(self.buf[:clen])
        del self.buf[:clen]
        return status, body, close

    def close(self) -> None:
        self.sock.close()


class LoadClient:
    """Closed-loop tagged load over `connections` keep-alive connections,
    each sending at most one request per `interval` seconds."""

    def __init__(self, address, connections: int = 6, interval: float = 0.004,
                 timeout: float = 5.0, prefix: str = "r") -> None:
        self.address = address
        self.connections = connections
        self.interval = interval
        self.timeout = timeout
        self.prefix = prefix
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> "LoadClient":
        for w in range(self.connections):
            t = threading.Thread(target=self._run, args=(w,), name=f"load-{w}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _run(self, w: int) -> None:
        conn = None
        seq = 0
        while not self.stopping.is_set():
            rid = f"{self.prefix}{w}-{seq}"
            seq += 1
            t0 = time.time()
            m0 = time.monotonic()
            try:
                if conn is None:
                    conn = _Conn(self.address, self.timeout)
                status, body, close = conn.request(rid)
                out = Outcome(rid, t0, time.monotonic() - m0, status,
                              body_ok=body.startswith(rid.encode() + b" "))
                if close:
                    conn.close()
                    conn = None
            except (OSError, ValueError, IndexError) as e:
                out = Outcome(rid, t0, time.monotonic() - m0, None, error=type(e).__name__)
                if conn is not None:
                    conn.close()
                    conn = None
            with self.lock:
                self.outcomes.append(out)
            rest = self.interval - (time.monotonic() - m0)
            if rest > 0:
                self.stopping.wait(rest)
        if conn is not None:
            conn.close()

    def count(self) -> int:
        with self.lock:
            return len(self.outcomes)

    def wait_count(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until at least n outcomes are recorded; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> list[Outcome]:
        self.stopping.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        with self.lock:
            return list(self.outcomes)


def one_request(address, rid: str, timeout: float = 5.0) -> Outcome:
    """A single tagged request on a new connection."""
    t0, m0 = time.time(), time.monotonic()
    try:
        c = _Conn(address, timeout)
        try:
            status, body, _ = c.request(rid)
        finally:
            c.close()
        return Outcome(rid, t0, time.monotonic() - m0, status,
                       body_ok=body.startswith(rid.encode() + b" "))
    except (OSError, ValueError, IndexError) as e:
        return Outcome(rid, t0, time.monotonic() - m0, None, error=type(e).__name__)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q / 100.0 * len(v)))]
