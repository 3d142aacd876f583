"""HTTP/2 attacks against the live proxy, crafted with hyperframe/hpack over
raw sockets. Each test: the attacking connection gets GOAWAY (and is closed)
or the stream is refused/reset, while an honest h2 connection opened before
the attack keeps getting correct responses during and after it."""
import socket
import time

import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame)

from support.h2util import H2Client
from support.harness import http_config

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 11
REFUSED_STREAM = 7


@pytest.fixture
def proxy(start_proxy, origin):
    return start_proxy(http_config(origin, listener={"stream_idle_timeout": "1s"}))


class Raw:
    def __init__(self, address, settings=None):
        self.sock = socket.create_connection(address, timeout=5)
        self.enc = hpack.Encoder()
        self.buf = b""
        self.frames = []
        self.eof = False
        self.sock.sendall(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())

    def send(self, *frames):
        self.sock.sendall(b"".join(f.serialize() if not isinstance(f, bytes) else f for f in frames))

    def headers(self, sid, path="/", end_stream=True, end_headers=True, extra=()):
        block = self.enc.encode([(":method", "GET"), (":scheme", "http"),
                                 (":authority", "a"), (":path", path), *extra])
        f = HeadersFrame(sid, block)
        f.flags.add("END_HEADERS") if end_headers else None
        f.flags.add("END_STREAM") if end_stream else None
        return f

    def read_until(self, pred, timeout=5.0):
        """Reads frames until pred(frame) or EOF; returns the matching frame or None."""
        deadline = time.monotonic() + timeout
        while True:
            while len(self.buf) >= 9:
                f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) < 9 + length:
                    break
                f.parse_body(memoryview(self.buf[9:9 + length]))
                self.buf = self.buf[9 + length:]
                self.frames.append(f)
                if pred(f):
                    return f
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except (socket.timeout, TimeoutError):
                return None
            except OSError:
                data = b""
            if not data:
                self.eof = True
            self.buf += data

    def goaway(self, timeout=5.0):
        return self.read_until(lambda f: isinstance(f, GoAwayFrame), timeout)

    def closed(self, timeout=5.0):
        self.read_until(lambda f: False, timeout)
        return self.eof

    def close(self):
        self.sock.close()


@pytest.fixture
def honest(proxy):
    c = H2Client(proxy.address("web"))
    assert c.get("/before").status == 200
    yield c
    c.close()


def check_honest(c, n=3):
    for i in range(n):
        r = c.get(f"/honest{i}")
        assert r.status == 200 and bytes(r.body) == f"hello /honest{i}\n".encode()


def test_rapid_reset(proxy, honest):
    a = Raw(proxy.address("web"))
    frames = []
    for i in range(600):
        sid = 2 * i + 1
        frames += [a.headers(sid, end_stream=True), RstStreamFrame(sid, error_code=8)]
    a.send(*frames)
    g = a.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    assert a.closed()
    check_honest(honest)
    a.close()


def test_settings_flood(proxy, honest):
    a = Raw(proxy.address("web"))
    a.send(*[SettingsFrame(0, settings={}) for _ in range(20000)])
    g = a.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    check_honest(honest)
    a.close()


def test_ping_flood(proxy, honest):
    a = Raw(proxy.address("web"))
    a.send(*[PingFrame(0, opaque_data=b"12345678") for _ in range(20000)])
    g = a.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    check_honest(honest)
    a.close()


def test_continuation_flood(proxy, honest):
    a = Raw(proxy.address("web"))
    a.send(a.headers(1, end_headers=False))
    junk = ContinuationFrame(1, data=b"\x40\x05x-foo\x05aaaaa" * 1000)
    for _ in range(20):
        try:
            a.send(*[junk] * 10)
        except OSError:
            break
    g = a.goaway()
    assert g is not None and g.error_code in (ENHANCE_YOUR_CALM, 9)
    check_honest(honest)
    a.close()


def test_empty_frame_flood(proxy, honest):
    a = Raw(proxy.address("web"))
    a.send(a.headers(1, path="/slow-headers/2", end_stream=False),
           *[DataFrame(1, data=b"") for _ in range(500)])
    g = a.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    check_honest(honest)
    a.close()


def test_hpack_bomb(proxy, honest):
    a = Raw(proxy.address("web"))
    # stream 1 puts a 4000-byte field in the dynamic table; stream 3 names it
    # 40 times (160 KB decoded from a ~40-byte block)
    a.send(a.headers(1, extra=[("x-bomb", "a" * 4000)]))
    r1 = a.read_until(lambda f: isinstance(f, HeadersFrame) and f.stream_id == 1)
    assert r1 is not None
    block = a.enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                          (":path", "/")])
    # the bomb entry's index in the dynamic table (62 = newest)
    idx = 62 + [n for n, v in a.enc.header_table.dynamic_entries].index(b"x-bomb")
    assert idx < 127
    bomb = HeadersFrame(3, block + bytes([0x80 | idx]) * 40)
    bomb.flags.add("END_HEADERS")
    bomb.flags.add("END_STREAM")
    a.send(bomb)
    f = a.read_until(lambda f: f.stream_id == 3 or isinstance(f, GoAwayFrame))
    assert f is not None
    assert (isinstance(f, RstStreamFrame) and f.error_code == ENHANCE_YOUR_CALM) or \
        isinstance(f, GoAwayFrame)
    check_honest(honest)
    a.close()


def test_too_many_streams_refused(proxy, honest):
    a = Raw(proxy.address("web"))
    a.send(*[a.headers(2 * i + 1, path="/slow-headers/1") for i in range(130)])
    refused = set()
    answered = set()
    deadline = time.monotonic() + 8
    while len(refused) + len(answered) < 130 and time.monotonic() < deadline:
        f = a.read_until(lambda f: isinstance(f, (RstStreamFrame, HeadersFrame)), timeout=3)
        if f is None:
            break
        if isinstance(f, RstStreamFrame):
            assert f.error_code == REFUSED_STREAM
            refused.add(f.stream_id)
        else:
            answered.add(f.stream_id)
    assert len(refused) >= 30 and len(answered) == 130 - len(refused)
    check_honest(honest)
    a.close()


def test_zero_window_forever(proxy, honest):
    # The client announces a zero stream window and never opens it: the
    # proxy buffers a bounded amount, then the stream idle timeout (1 s here)
    # resets the stream.
    a = Raw(proxy.address("web"), settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    a.send(a.headers(1, path="/bytes/5000000"))
    rst = a.read_until(lambda f: isinstance(f, RstStreamFrame) and f.stream_id == 1, timeout=6)
    assert rst is not None
    data = sum(len(f.data) for f in a.frames if isinstance(f, DataFrame))
    assert data == 0
    check_honest(honest)
    proxy.wait_for(lambda st: st["downstream_rq_active"] == 0)
    a.close()
