"""The TCP proxy (connection splicing), live: client -> fastmesh tcp listener
-> a raw echo server that answers EOF with b"BYE" and a half-close."""
import hashlib
import socket
import threading
import time

import pytest

from support.harness import Client, cluster, tcp_listener
from support.origin import body_bytes, closed_port

MiB = 1 << 20


def tcp_config(target, **listener_opts):
    return {"drain_timeout": 1,
            "listeners": [tcp_listener("tcp", "echo", **listener_opts)],
            "clusters": [cluster("echo", target)]}


@pytest.fixture
def proxy(start_proxy, tcp_echo):
    return start_proxy(tcp_config(tcp_echo))


def addr(p):
    return p.address("tcp")


def test_echo_round_trip(proxy, tcp_echo, clients):
    c = clients(addr(proxy))
    c.send(b"hello")
    assert c.recv_exactly(5) == b"hello"
    c.send(b"\x00\xff\r\n binary")
    assert c.recv_exactly(11) == b"\x00\xff\r\n binary"
    st = proxy.stats()
    assert st["downstream_cx_tcp"] == 1 and st["downstream_cx_active"] == 1
    assert st["clusters"]["echo"]["upstream_cx_total"] == 1
    assert tcp_echo.connections == 1


def test_bytes_sent_before_upstream_connects_are_kept(proxy, tcp_echo, clients):
    c = clients(addr(proxy))
    c.send(b"early")                       # probably before the upstream is connected
    c.shutdown_write()
    assert c.read_until_close() == b"earlyBYE"


def test_half_close_propagated(proxy, tcp_echo, clients):
    c = clients(addr(proxy))
    c.send(b"last words")
    c.shutdown_write()
    # the echo server sees our EOF only through the proxy's write_eof
    assert c.read_until_close() == b"last wordsBYE"
    assert tcp_echo.eofs == 1
    st = proxy.wait_idle()
    assert st["downstream_cx_active"] == 0
    assert proxy.wait_for(lambda s: s["clusters"]["echo"]["upstream_cx_active"] == 0) \
        ["clusters"]["echo"]["upstream_cx_active"] == 0


def test_large_transfer_both_ways_concurrently(proxy, tcp_echo, clients):
    c = clients(addr(proxy), timeout=10)
    data = body_bytes(8 * MiB)
    errors = []

    def sender():
        try:
            for i in range(0, len(data), 65536):
                c.send(data[i:i + 65536])
            c.shutdown_write()
        except Exception as e:   # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=sender)
    t.start()
    got = c.read_until_close()
    t.join(10)
    assert not errors
    assert len(got) == len(data) + 3
    assert hashlib.sha256(got[:-3]).digest() == hashlib.sha256(data).digest()
    assert got[-3:] == b"BYE"
    assert tcp_echo.received_total == len(data)


def test_slow_reader_backpressure(start_proxy, tcp_echo, clients):
    p = start_proxy(tcp_config(tcp_echo, per_connection_buffer_limit="64KiB"))
    c = clients(addr(p), timeout=10, rcvbuf=16384)
    data = body_bytes(4 * MiB)
    errors = []

    def sender():
        try:
            c.send(data)
            c.shutdown_write()
        except Exception as e:   # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=sender)
    t.start()
    time.sleep(0.3)                         # let everything back up
    got = bytearray()
    reads = 0
    while True:
        chunk = c.sock.recv(32768)
        if not chunk:
            break
        got += chunk
        reads += 1
        if reads % 16 == 0:
            time.sleep(0.002)
    t.join(10)
    assert not errors
    assert bytes(got[:-3]) == data and got[-3:] == b"BYE"


def test_upstream_refused_closes_client(start_proxy, clients):
    p = start_proxy(tcp_config(("127.0.0.1", closed_port())))
    c = clients(addr(p))
    assert c.is_closed_by_peer(timeout=3)
    st = p.wait_idle()
    assert st["downstream_cx_active"] == 0
    assert st["clusters"]["echo"]["upstream_cx_connect_fail"] == 1


def test_upstream_refused_with_client_data(start_proxy, clients):
    p = start_proxy(tcp_config(("127.0.0.1", closed_port())))
    c = clients(addr(p))
    c.send(b"data for nobody")
    assert c.is_closed_by_peer(timeout=3)


def test_idle_timeout_closes(start_proxy, tcp_echo, clients):
    p = start_proxy(tcp_config(tcp_echo, idle_timeout=0.5))
    c = clients(addr(p))
    c.send(b"x")
    assert c.recv_exactly(1) == b"x"
    assert c.is_closed_by_peer(timeout=3)
    st = p.wait_idle()
    assert st["downstream_cx_idle_timeout"] == 1
    assert p.wait_for(lambda s: s["clusters"]["echo"]["upstream_cx_active"] == 0) \
        ["clusters"]["echo"]["upstream_cx_active"] == 0


def test_activity_defers_idle_timeout(start_proxy, tcp_echo, clients):
    p = start_proxy(tcp_config(tcp_echo, idle_timeout=0.5))
    c = clients(addr(p))
    for i in range(6):                      # 1.2 s of traffic, never 0.5 s idle
        c.send(b"%d" % i)
        assert c.recv_exactly(1) == b"%d" % i
        time.sleep(0.2)
    assert p.stats()["downstream_cx_idle_timeout"] == 0


def test_upstream_closes_first(start_proxy, clients):
    # an upstream that sends a greeting and closes: the client gets it, then EOF
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(5)
    try:
        p = start_proxy(tcp_config(srv.getsockname()))
        c = clients(addr(p))
        conn, _ = srv.accept()
        conn.sendall(b"greeting")
        conn.close()
        assert c.read_until_close() == b"greeting"
    finally:
        srv.close()


def test_many_tcp_connections(proxy, tcp_echo):
    cs = [Client(addr(proxy)) for _ in range(100)]
    try:
        for i, c in enumerate(cs):
            c.send(b"conn-%03d" % i)
        for i, c in enumerate(cs):
            assert c.recv_exactly(8) == b"conn-%03d" % i
    finally:
        for c in cs:
            c.close()
    st = proxy.wait_idle()
    assert st["downstream_cx_total"] == 100 and st["downstream_cx_active"] == 0
