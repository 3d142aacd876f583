"""The fault harness tests itself (issue 9): each FaultProxy mode does what it
says, switched at run time; an origin process records what it served,
survives SIGKILL + restart on its port and misbehaves as told; the load
client records every outcome."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from support.faults import FaultProxy
from support.load import LoadClient, one_request
from support.origin_proc import OriginProc

pytestmark = pytest.mark.timeout(30)


class ChunkEcho:
    """A TCP server that echoes and records the size of every recv()."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = self.sock.getsockname()
        self.chunks: list[int] = []
        self.accepted = 0
        self.eof = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c) -> None:
        try:
            while data := c.recv(65536):
                self.chunks.append(len(data))
                c.sendall(data)
            self.eof.set()
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def echo():
    e = ChunkEcho()
    yield e
    e.close()


@pytest.fixture
def fault(echo):
    fp = FaultProxy(echo.address).start()
    yield fp
    fp.stop()


def connect(fp, timeout=3.0):
    s = socket.create_connection(fp.address, timeout=timeout)
    return s


def recv_exactly(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            break
        buf += d
    return buf


def test_pass_forwards_both_ways(fault):
    with connect(fault) as s:
        s.sendall(b"hello")
        assert recv_exactly(s, 5) == b"hello"


def test_delay_holds_each_chunk(fault):
    fault.set_mode("delay", delay=0.2)
    with connect(fault) as s:
        t0 = time.monotonic()
        s.sendall(b"ping")
        assert recv_exactly(s, 4) == b"ping"
        # Held once going up and once coming back.
        assert time.monotonic() - t0 >= 0.4


def test_slice_forwards_single_bytes(fault, echo):
    fault.set_mode("slice")
    with connect(fault) as s:
        s.sendall(b"0123456789abcdef")
        assert recv_exactly(s, 16) == b"0123456789abcdef"
    # The server read the 16 bytes in (nearly) 16 reads.
    assert sum(echo.chunks) == 16 and len(echo.chunks) >= 12, echo.chunks


def test_reset_at_accept_and_after_some_bytes(fault):
    fault.set_mode("reset")
    with pytest.raises(ConnectionResetError):
        # The RST can beat connect()'s return.
        with connect(fault) as s:
            s.sendall(b"x")
            s.recv(10)
    # Mid-response: 3 bytes of the answer pass, then an RST.
    fault.set_mode("reset", after=3)
    with connect(fault) as s:
        s.sendall(b"abcdef")
        got = b""
        with pytest.raises(ConnectionResetError):
            while True:
                d = s.recv(10)
                if not d:
                    break
                got += d
        assert got == b"abc"
    assert fault.counters()["resets"] == 2


def test_a_mode_switch_reaches_an_open_connection(fault):
    with connect(fault) as s:
        s.sendall(b"a")
        assert recv_exactly(s, 1) == b"a"
        fault.set_mode("reset")
        s.sendall(b"b")
        with pytest.raises(ConnectionResetError):
            if not s.recv(10):
                raise AssertionError("EOF instead of a reset")


def test_half_close_sends_eof_and_keeps_reading(fault, echo):
    fault.set_mode("half_close", after=2)
    with connect(fault) as s:
        s.sendall(b"abcd")
        assert recv_exactly(s, 10) == b"ab"        # then EOF
        # The client's side still carries bytes to the server.
        s.sendall(b"more")
        deadline = time.monotonic() + 3
        while sum(echo.chunks) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sum(echo.chunks) == 8
    assert fault.counters()["half_closes"] == 1


def test_blackhole_swallows_and_never_connects(fault, echo):
    fault.set_mode("blackhole")
    with connect(fault, timeout=0.3) as s:
        s.sendall(b"into the void")
        deadline = time.monotonic() + 3
        while fault.counters()["blackholed"] < 13 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fault.counters()["blackholed"] == 13
        assert echo.accepted == 0
        with pytest.raises(socket.timeout):
            s.recv(10)


def test_bad_mode_is_refused(fault):
    with pytest.raises(ValueError):
        fault.set_mode("explode")


# ------------------------------------------------------------------ origin process and load client

def test_origin_process_records_survives_kill_and_restarts(tmp_path):
    o = OriginProc("o", tmp_path).start()
    try:
        assert one_request(o.address, "a1").ok
        o.kill()
        assert one_request(o.address, "a2", timeout=1).status is None
        o.start()           # same port
        assert one_request(o.address, "a3").ok
        assert [(r[0], r[1]) for r in o.records()] == [("a1", "200"), ("a3", "200")]
    finally:
        o.stop()


def test_origin_process_misbehaves_as_told(tmp_path):
    o = OriginProc("o", tmp_path, fail_rate=1.0).start()
    try:
        assert one_request(o.address, "f1").status == 503
        o.stop()
        o.start(fail_rate=0, reset_rate=1.0, body=50000)
        r = one_request(o.address, "r1")
        assert r.status is None and r.error in ("ConnectionResetError", "ConnectionError")
        o.stop()
        o.start(reset_rate=0, hang=True)
        r = one_request(o.address, "h1", timeout=0.3)
        assert r.status is None and r.error == "TimeoutError"
        assert [(x[0], x[1]) for x in o.records()] == [("f1", "503"), ("r1", "reset"),
                                                      ("h1", "hang")]
    finally:
        o.stop()


def test_load_client_records_every_outcome(tmp_path):
    o = OriginProc("o", tmp_path).start()
    try:
        lc = LoadClient(o.address, connections=3).start()
        assert lc.wait_count(200)
        outcomes = lc.stop()
        assert all(x.ok for x in outcomes)
        served = [r[0] for r in o.records()]
        assert sorted(served) == sorted(x.id for x in outcomes)
    finally:
        o.stop()
