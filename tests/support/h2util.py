"""HTTP/2 test peers built on the `h2` library (the oracle): a blocking
client over a raw socket, and an h2c origin server in a thread.

H2Client: send requests on streams, read frames until the wanted streams are
complete; flow control is acknowledged as data arrives unless `auto_ack` is
off (a slow reader). H2Origin: records every request (headers as a list,
body, trailers) and answers by path:
  /echo          the request body back (trailers echoed as x-echo-* trailers)
  /big/N         N bytes (flow control exercised)
  /trailers      a body, then trailers
  /status/NNN    that status, empty body
  /sleep/S       answers after S seconds
  anything else  "hello <path>\\n"
With `fixed_status` set, every request gets that status, empty body.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

TIMEOUT = 10.0


@dataclass
class H2Response:
    stream_id: int
    status: int | None = None
    headers: list = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list = field(default_factory=list)
    interim: list = field(default_factory=list)     # header lists of 1xx responses
    ended: bool = False
    reset: int | None = None

    def header(self, name: bytes):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def trailer(self, name: bytes):
        for k, v in self.trailers:
            if k == name:
                return v
        return None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    def __init__(self, address, settings=None, auto_ack=True, connect=True):
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_inbound_headers=False,
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False)
        self.conn = h2.connection.H2Connection(cfg)
        self.auto_ack = auto_ack
        self.responses: dict[int, H2Response] = {}
        self.goaway = None
        self.closed = False
        self.events = []
        if connect:
            self.conn.initiate_connection()
            if settings:
                self.conn.update_settings(settings)
            self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method="GET", path="/", headers=(), body=b"", trailers=None,
                authority="example.com", end=True):
        sid = self.conn.get_next_available_stream_id()
        hs = [(b":method", method.encode()), (b":scheme", b"http"),
              (b":authority", authority.encode()), (b":path", path.encode())]
        hs += [(k if isinstance(k, bytes) else k.encode(), v if isinstance(v, bytes) else v.encode())
               for k, v in headers]
        self.responses[sid] = H2Response(sid)
        no_body = not body and trailers is None
        self.conn.send_headers(sid, hs, end_stream=no_body and end)
        self.flush()
        if body:
            self.send_body(sid, body, end=trailers is None and end)
        if trailers is not None:
            self.conn.send_headers(sid, trailers, end_stream=True)
            self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        view = memoryview(body)
        while view:
            r = self.responses.get(sid)
            if r is not None and (r.reset is not None or r.done):
                return      # the server answered (or reset) early: stop sending, as clients do
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.read_some()
                continue
            chunk = view[:window]
            view = view[window:]
            self.conn.send_data(sid, bytes(chunk), end_stream=end and not view)
            self.flush()
        if end and not body:
            self.conn.send_data(sid, b"", end_stream=True)
            self.flush()

    def reset(self, sid, code=8):
        self.conn.reset_stream(sid, code)
        self.flush()

    def read_some(self, timeout=TIMEOUT):
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise ConnectionError("connection closed by the proxy")
        for ev in self.conn.receive_data(data):
            self.events.append(ev)
            self._on_event(ev)
        self.flush()

    def _on_event(self, ev):
        r = self.responses.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.InformationalResponseReceived):
            r.interim.append(list(ev.headers))
        elif isinstance(ev, h2.events.ResponseReceived):
            r.headers = list(ev.headers)
            r.status = int(dict(ev.headers)[b":status"])
        elif isinstance(ev, h2.events.DataReceived):
            if r is not None:
                r.body += ev.data
            if self.auto_ack and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            r.trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded):
            if r is not None:
                r.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if r is not None:
                r.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def wait(self, *sids, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while not all(self.responses[s].done for s in sids):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"streams {sids} not complete")
            self.read_some(left)
        return [self.responses[s] for s in sids] if len(sids) != 1 else self.responses[sids[0]]

    def get(self, path="/", **kw):
        return self.wait(self.request("GET", path, **kw))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class H2Request:
    conn_id: int
    stream_id: int
    headers: list
    body: bytearray = field(default_factory=bytearray)
    trailers: list = field(default_factory=list)
    reset: bool = False

    def header(self, name: bytes):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_values(self, name: bytes):
        return [v for k, v in self.headers if k == name]


class H2Origin:
    """An h2c (prior knowledge) origin: one thread per connection.
    max_concurrent_streams: None for h2's default (100), 0 for an empty SETTINGS."""

    def __init__(self, name="h2origin", max_concurrent_streams=None, goaway_first=False,
                 refuse_streams=False):
        self.name = name
        # Every request stream is reset with REFUSED_STREAM (not processed,
        # RFC 9113 8.7), as an overloaded server does; it is still recorded.
        self.refuse_streams = refuse_streams
        self.fixed_status: int | None = None   # every request's status, when set
        self.max_concurrent_streams = max_concurrent_streams
        # The first connection gets SETTINGS (100 streams, as h2 announces on
        # the others) and GOAWAY (last stream 0) in one write, as a server
        # shutting down would, then nothing.
        self.goaway_first = goaway_first
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.address = self.lsock.getsockname()
        self.requests: list[H2Request] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                cid = self.connections
                self.socks.append(s)
            threading.Thread(target=self._serve, args=(s, cid), daemon=True).start()

    def stop(self):
        self.stopping = True
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def received(self):
        with self.lock:
            return list(self.requests)

    def _serve(self, sock, cid):
        if self.goaway_first and cid == 1:
            sock.sendall(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x03"
                         + (100).to_bytes(4, "big")
                         + b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(8))
            sock.settimeout(10)
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            sock.close()
            return
        cfg = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                        validate_inbound_headers=False,
                                        normalize_inbound_headers=False)
        conn = h2.connection.H2Connection(cfg)
        conn.initiate_connection()
        if self.max_concurrent_streams == 0:
            # An empty SETTINGS frame on the wire: every setting at its RFC
            # default, so no stream limit (RFC 9113 6.5.2). h2's own values
            # match those defaults but for its 100 streams, raised here.
            conn.data_to_send()
            conn.local_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 1000
            sock.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        if self.max_concurrent_streams:
            conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS:
                                  self.max_concurrent_streams})
        wlock = threading.Lock()
        reqs: dict[int, H2Request] = {}
        pending: dict[int, list] = {}     # sid -> [data remaining, trailers]

        def send():
            data = conn.data_to_send()
            if data:
                try:
                    sock.sendall(data)
                except OSError:
                    pass

        def pump():
            for sid in list(pending):
                data, trailers = pending[sid]
                try:
                    while data:
                        w = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                        if w <= 0:
                            break
                        conn.send_data(sid, data[:w])
                        data = data[w:]
                    pending[sid][0] = data
                    if not data:
                        if trailers:
                            conn.send_headers(sid, trailers, end_stream=True)
                        else:
                            conn.end_stream(sid)
                        del pending[sid]
                except Exception:
                    pending.pop(sid, None)

        def respond(req: H2Request):
            path = (req.header(b":path") or b"/").decode()
            if path.startswith("/h2/"):
                path = path[3:]
            status, body, trailers, extra = 200, None, None, []
            full = (req.header(b":path") or b"/").decode()
            if self.fixed_status is not None:
                status, body = self.fixed_status, b""
            elif path.startswith("/echo"):
                body = bytes(req.body)
                trailers = [(b"x-echo-" + k, v) for k, v in req.trailers] or None
                extra = [(b"x-body-len", str(len(req.body)).encode())]
            elif path.startswith("/big/"):
                body = (b"0123456789abcdef" * (int(path[5:]) // 16 + 1))[:int(path[5:])]
            elif path.startswith("/trailers"):
                body, trailers = b"with trailers\n", [(b"x-checksum", b"abc"), (b"x-final", b"yes")]
            elif path.startswith("/status/"):
                status, body = int(path[8:11]), b""
            elif path.startswith("/sleep/"):
                time.sleep(float(path[7:]))
            elif path.startswith("/early-hints"):
                with wlock:
                    conn.send_headers(req.stream_id, [
                        (b":status", b"103"), (b"link", b"</style.css>; rel=preload; as=style")])
                    send()
                body = b"after hints\n"
            if body is None:
                body = f"hello {full}\n".encode()
            with wlock:
                try:
                    hs = [(b":status", str(status).encode()), (b"x-origin", self.name.encode())]
                    if trailers is None:
                        hs.append((b"content-length", str(len(body)).encode()))
                    conn.send_headers(req.stream_id, hs + extra, end_stream=not body and not trailers)
                    if body or trailers:
                        pending[req.stream_id] = [body, trailers]
                        pump()
                except Exception:
                    pass
                send()

        with wlock:
            send()
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            with wlock:
                try:
                    events = conn.receive_data(data)
                except Exception:
                    send()
                    break
                todo = []
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        r = H2Request(cid, ev.stream_id, list(ev.headers))
                        with self.lock:
                            self.requests.append(r)
                        if self.refuse_streams:
                            conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                            continue
                        reqs[ev.stream_id] = r
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        if ev.stream_id in reqs:
                            reqs[ev.stream_id].body += ev.data
                    elif isinstance(ev, h2.events.TrailersReceived):
                        if ev.stream_id in reqs:
                            reqs[ev.stream_id].trailers = list(ev.headers)
                    elif isinstance(ev, h2.events.StreamEnded):
                        if ev.stream_id in reqs:
                            todo.append(reqs[ev.stream_id])
                    elif isinstance(ev, h2.events.StreamReset):
                        if ev.stream_id in reqs:
                            reqs[ev.stream_id].reset = True
                        pending.pop(ev.stream_id, None)
                    elif isinstance(ev, h2.events.WindowUpdated):
                        pass
                pump()
                send()
            for r in todo:
                if b"/sleep/" in (r.header(b":path") or b""):
                    threading.Thread(target=respond, args=(r,), daemon=True).start()
                else:
                    respond(r)
        try:
            sock.close()
        except OSError:
            pass
