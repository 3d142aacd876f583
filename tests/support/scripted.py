"""A scripted origin for the retry tests: one server, HTTP/1.1 (h11) or h2c
(h2), whose answer to each request is chosen by `action` (a fixed action or
a function of the request), and which records every request it got: when
it arrived, its path, headers and body. So a test knows which attempts
reached which endpoint, when, and with what body.

Actions:
  ("ok",)                       200, body "ok <name>", x-origin: <name>,
                                x-body-sha256 of the request body
  ("status", N)                 status N, empty body
  ("grpc", CODE[, PUSHBACK])    a trailers-only gRPC answer: 200,
                                content-type application/grpc, grpc-status
                                CODE (and grpc-retry-pushback-ms PUSHBACK,
                                a string, when given)
  ("reset",)                    HTTP/1.1: the connection closes without an
                                answer; h2: the stream is reset (INTERNAL_ERROR)
  ("partial",)                  HTTP/1.1 only: part of a response head, then close
  ("hang",)                     no answer (until the server stops)
"""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field

import h11
import h2.config
import h2.connection
import h2.events


@dataclass
class Seen:
    at: float                       # time.monotonic() when the request was complete
    path: str
    headers: dict                   # lower-case name (str) -> value (str), last wins
    body: bytes = b""
    conn: int = 0


@dataclass
class Scripted:
    name: str = "scripted"
    h2: bool = False
    action: object = ("ok",)        # a tuple, or a function(Seen) -> tuple
    seen: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.address = self.lsock.getsockname()
        self.stopping = False
        self.socks: list = []
        self.nconn = 0
        threading.Thread(target=self._accept, daemon=True).start()

    # --- for tests ---------------------------------------------------------

    def received(self) -> list:
        with self.lock:
            return list(self.seen)

    def wait_count(self, n: int, timeout: float = 10.0) -> list:
        """Wait until at least n requests arrived (a deadline, not a sleep)."""
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.seen) < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: {len(self.seen)} requests, wanted {n}")
                self.cond.wait(left)
            return list(self.seen)

    def stop(self) -> None:
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    # --- serving -----------------------------------------------------------

    def _accept(self) -> None:
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.socks.append(s)
                self.nconn += 1
                cid = self.nconn
            target = self._serve_h2 if self.h2 else self._serve_h1
            threading.Thread(target=target, args=(s, cid), daemon=True).start()

    def _record(self, rec: Seen) -> tuple:
        with self.cond:
            self.seen.append(rec)
            self.cond.notify_all()
        a = self.action
        return a(rec) if callable(a) else a

    def _hang(self, sock) -> None:
        while not self.stopping:
            try:
                sock.settimeout(0.2)
                if not sock.recv(65536):
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    def _serve_h1(self, sock, cid) -> None:
        conn = h11.Connection(h11.SERVER)
        sock.settimeout(30)
        try:
            while True:
                path, headers, body = None, {}, bytearray()
                while True:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        data = sock.recv(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                        continue
                    if isinstance(ev, h11.Request):
                        path = ev.target.decode()
                        headers = {k.decode().lower(): v.decode("latin-1") for k, v in ev.headers}
                    elif isinstance(ev, h11.Data):
                        body += ev.data
                    elif isinstance(ev, h11.EndOfMessage):
                        break
                    elif isinstance(ev, h11.ConnectionClosed):
                        return
                act = self._record(Seen(time.monotonic(), path, headers, bytes(body), cid))
                kind = act[0]
                if kind == "hang":
                    self._hang(sock)
                    return
                if kind == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
                if kind == "partial":
                    sock.sendall(b"HTTP/1.1 200 OK\r\nx-partial: ")
                    return
                status, hs, out = self._answer(act, body)
                sock.sendall(conn.send(h11.Response(status_code=status, headers=hs))
                             + conn.send(h11.Data(data=out)) + conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (OSError, h11.LocalProtocolError, h11.RemoteProtocolError):
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _answer(self, act, body) -> tuple:
        hs = [("x-origin", self.name), ("x-body-sha256", hashlib.sha256(body).hexdigest())]
        if act[0] == "ok":
            out = f"ok {self.name}".encode()
            return 200, hs + [("content-length", str(len(out)))], out
        if act[0] == "status":
            return act[1], hs + [("content-length", "0")], b""
        if act[0] == "grpc":
            hs += [("content-type", "application/grpc"), ("grpc-status", str(act[1]))]
            if len(act) > 2:
                hs.append(("grpc-retry-pushback-ms", act[2]))
            return 200, hs + [("content-length", "0")], b""
        raise ValueError(act)

    def _serve_h2(self, sock, cid) -> None:
        cfg = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                        validate_inbound_headers=False)
        conn = h2.connection.H2Connection(cfg)
        conn.initiate_connection()
        reqs: dict = {}
        sock.settimeout(None)
        try:
            sock.sendall(conn.data_to_send())
            while not self.stopping:
                data = sock.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        hs = {k.decode().lower(): v.decode("latin-1") for k, v in ev.headers}
                        reqs[ev.stream_id] = [hs.get(":path"), hs, bytearray()]
                        if ev.stream_ended:
                            self._h2_respond(conn, ev.stream_id, reqs.pop(ev.stream_id), cid)
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        if ev.stream_id in reqs:
                            reqs[ev.stream_id][2] += ev.data
                        if ev.stream_ended and ev.stream_id in reqs:
                            self._h2_respond(conn, ev.stream_id, reqs.pop(ev.stream_id), cid)
                    elif isinstance(ev, h2.events.StreamEnded):
                        if ev.stream_id in reqs:
                            self._h2_respond(conn, ev.stream_id, reqs.pop(ev.stream_id), cid)
                    elif isinstance(ev, h2.events.StreamReset):
                        reqs.pop(ev.stream_id, None)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
        except Exception:
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _h2_respond(self, conn, sid, req, cid) -> None:
        path, hs, body = req
        act = self._record(Seen(time.monotonic(), path, hs, bytes(body), cid))
        if act[0] == "hang":
            return
        if act[0] == "reset":
            conn.reset_stream(sid, 2)
            return
        status, rhs, out = self._answer(act, body)
        headers = [(":status", str(status))] + [(k, v) for k, v in rhs if k != "content-length"]
        if act[0] == "grpc" or not out:
            conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in headers], end_stream=True)
            return
        conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in headers])
        conn.send_data(sid, out, end_stream=True)
