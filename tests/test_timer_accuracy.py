"""Deadlines fire in their own millisecond, end to end through a live proxy
(the per-worker timer wheel, docs/timers.md).

Each test sets one timeout to TIMEOUT_MS (route timeout, request header
timeout, idle timeout of an http and of a tcp listener, pooled-connection idle
timeout, connect timeout), lets it expire ROUNDS times one after the other and
measures each expiry from outside the proxy, over an interval that contains
the proxy's own:

* never early: every sample is >= TIMEOUT_MS;
* on time: the median is below MEDIAN_BOUND_MS. The 100 ms tick the wheel
  replaced fired on its first tick after the deadline, 20..120 ms after the
  start, and back-to-back rounds lock onto the tick's phase: its medians were
  ~100 ms, so every test here fails against that build.

Waits are bounded (socket timeouts, queue timeouts); no sleep decides a verdict.
"""
import queue
import socket
import statistics
import threading
import time

import pytest

from support.harness import Client, cluster, http_config, tcp_listener

TIMEOUT_MS = 20
ROUNDS = 15
MEDIAN_BOUND_MS = 50
WAIT = 5.0              # upper bound on any single wait


def check(samples):
    """samples: seconds from before the timeout could start to after its effect."""
    ms = [round(s * 1000, 1) for s in samples]
    assert len(ms) == ROUNDS
    assert min(ms) >= TIMEOUT_MS, f"fired early: {ms}"
    assert statistics.median(ms) < MEDIAN_BOUND_MS, f"late: median of {sorted(ms)}"


def ms(n):
    return f"{n}ms"


class SilentOrigin:
    """Completes TCP handshakes (the kernel's accept queue) and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(ROUNDS * 2 + 16)
        self.address = self.sock.getsockname()

    def close(self):
        self.sock.close()


class RecordingOrigin:
    """A minimal keep-alive HTTP/1.1 origin for bodiless requests. For every
    connection it puts (time the last response was sent, time the peer closed)
    on `closed` when the peer closes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = self.sock.getsockname()
        self.closed = queue.Queue()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        sent = None
        c.settimeout(30)
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    sent = time.monotonic()
                    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except OSError:
            pass
        self.closed.put((sent, time.monotonic()))
        c.close()

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def silent_origin():
    o = SilentOrigin()
    yield o
    o.close()


@pytest.fixture
def recording_origin():
    o = RecordingOrigin()
    yield o
    o.close()


def test_route_timeout_504_to_the_millisecond(start_proxy, silent_origin):
    p = start_proxy(http_config(silent_origin, routes=[
        {"match": {"prefix": "/"}, "cluster": "origin", "timeout": ms(TIMEOUT_MS)}]))
    samples = []
    for _ in range(ROUNDS):
        c = Client(p.address("web"), timeout=WAIT)
        t0 = time.monotonic()
        r = c.request("GET", "/never")
        samples.append(time.monotonic() - t0)
        assert r.status == 504 and r.body == b"upstream request timeout\n"
        c.close()
    check(samples)
    assert p.cluster_stats()["upstream_rq_timeout"] == ROUNDS


def test_request_headers_timeout_408_to_the_millisecond(start_proxy, recording_origin):
    p = start_proxy(http_config(recording_origin,
                                listener={"request_headers_timeout": ms(TIMEOUT_MS)}))
    samples = []
    for _ in range(ROUNDS):
        c = Client(p.address("web"), timeout=WAIT)
        t0 = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\n")      # the clock starts at the first byte
        r = c.read_response()
        samples.append(time.monotonic() - t0)
        assert r.status == 408
        c.close()
    check(samples)
    assert p.stats()["downstream_rq_header_timeout"] == ROUNDS


def test_http_idle_timeout_to_the_millisecond(start_proxy, recording_origin):
    p = start_proxy(http_config(recording_origin, listener={"idle_timeout": ms(TIMEOUT_MS)}))
    samples = []
    for _ in range(ROUNDS):
        t0 = time.monotonic()              # before connect: the proxy arms on accept
        c = Client(p.address("web"), timeout=WAIT)
        assert c.is_closed_by_peer(timeout=WAIT)
        samples.append(time.monotonic() - t0)
        c.close()
    check(samples)
    assert p.stats()["downstream_cx_idle_timeout"] == ROUNDS


def test_tcp_idle_timeout_to_the_millisecond(start_proxy, tcp_echo):
    p = start_proxy({"drain_timeout": 1,
                     "listeners": [tcp_listener("tcp", "echo", idle_timeout=ms(TIMEOUT_MS))],
                     "clusters": [cluster("echo", tcp_echo)]})
    samples = []
    for _ in range(ROUNDS):
        t0 = time.monotonic()
        c = Client(p.address("tcp"), timeout=WAIT)
        assert c.is_closed_by_peer(timeout=WAIT)
        samples.append(time.monotonic() - t0)
        c.close()
    check(samples)
    assert p.stats()["downstream_cx_idle_timeout"] == ROUNDS


def test_pool_idle_timeout_to_the_millisecond(start_proxy, recording_origin, clients):
    # Measured at the origin, from sending a response (the proxy arms the
    # pooled connection's deadline after reading it) to seeing it closed.
    p = start_proxy(http_config(recording_origin, cluster_opts={"idle_timeout": ms(TIMEOUT_MS)}))
    c = clients(p.address("web"), timeout=WAIT)
    samples = []
    for _ in range(ROUNDS):
        assert c.request("GET", "/").status == 200
        sent, closed = recording_origin.closed.get(timeout=WAIT)
        samples.append(closed - sent)
    check(samples)
    assert p.cluster_stats()["upstream_cx_total"] == ROUNDS


@pytest.fixture
def blackhole():
    """An address whose connects hang: a listener with backlog 0 whose one
    queue place is taken (Linux then drops further SYNs)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    addr = srv.getsockname()
    held = []
    for _ in range(2):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(addr)
        held.append(s)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(addr)
        hangs = False
    except (TimeoutError, socket.timeout):
        hangs = True
    except OSError:
        hangs = False
    probe.close()
    if not hangs:
        for s in held + [srv]:
            s.close()
        pytest.skip("connects to a full accept queue do not hang on this system")
    yield addr
    for s in held + [srv]:
        s.close()


def test_connect_timeout_504_to_the_millisecond(start_proxy, blackhole):
    p = start_proxy(http_config(blackhole, cluster_opts={"connect_timeout": ms(TIMEOUT_MS)}))
    samples = []
    for _ in range(ROUNDS):
        c = Client(p.address("web"), timeout=WAIT)
        t0 = time.monotonic()
        r = c.request("GET", "/")
        samples.append(time.monotonic() - t0)
        assert r.status == 504 and r.body == b"upstream connect timeout\n"
        c.close()
    check(samples)
    assert p.cluster_stats()["upstream_cx_connect_timeout"] == ROUNDS


def test_closed_connections_leave_the_wheel_and_an_idle_worker_sleeps(start_proxy, origin):
    # Every live connection here has its one deadline armed (downstreams:
    # idle, the pooled upstream: pool idle); a closed one has none, and once
    # the last deadline has fired the worker has no loop handle left. The
    # clients close well within the pool idle timeout, so nothing but the
    # pooled connection is armed when it fires.
    p = start_proxy(http_config(origin, cluster_opts={"idle_timeout": "1s"}))
    cs = [Client(p.address("web"), timeout=WAIT) for _ in range(4)]
    for c in cs:
        assert c.request("GET", "/").status == 200

    def wheel():
        w = p.proxy._dataplane.worker
        return w.wheel.armed, w.wheel.handle is not None, w.connection_count()

    armed, _, conns = p._in_loop(wheel)
    assert armed == conns            # 4 idle downstreams, their pooled upstreams
    for c in cs:
        c.close()
    deadline = time.monotonic() + WAIT
    while p._in_loop(wheel) != (0, False, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p._in_loop(wheel) == (0, False, 0)
    assert p.cluster_stats()["upstream_cx_active"] == 0
