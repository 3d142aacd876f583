"""Overload protection and bad clients, through a live proxy.

- first_byte_timeout: a connection that sends nothing after accept is closed;
- a listener's max_connections and the overload manager's
  global_downstream_max_connections refuse connections over the limit;
- near RLIMIT_NOFILE (a `fastmesh run` child with a low `ulimit -n`), idle
  connections are closed oldest first, so 400 silent connections against a
  300-descriptor limit do not stop honest requests; with nothing idle to
  close, new connections are refused and accepting stops until descriptors
  are free again;
- a request refused for bytes that arrived with its head (a bad chunk line)
  sends nothing upstream (a recording origin proves it);
- a refused CONNECT or Upgrade closes the connection, so bytes after it are
  never read as a request;
- a Host header with an invalid port gets 400 (RFC 9112 3.2).
"""
from __future__ import annotations

import http.client
import resource
import socket
import textwrap
from pathlib import Path

import pytest

from support.harness import Client, http_config
from support.meshproc import Proc, fastmesh_argv

# ------------------------------------------------------------------ helpers


def raw_response(c: Client):
    """The proxy's answer (validated by h11) to what was sent on c."""
    return c.read_response()


class LowFdFastmesh(Proc):
    """`fastmesh run --single-process` as a child whose RLIMIT_NOFILE is
    `nofile` (set in preexec_fn), with its admin port for stats."""

    name = "fastmesh"

    def __init__(self, tmp: Path, origin: tuple[str, int], nofile: int,
                 overload: str = "", first_byte_timeout: str = "60s") -> None:
        super().__init__(tmp)
        cfg = tmp / "fastmesh.yaml"
        cfg.write_text(textwrap.dedent(f"""\
            drain_timeout: 1s
            admin: {{address: 127.0.0.1, port: {self.admin}}}
            {overload}
            listeners:
              - name: web
                address: 127.0.0.1
                port: {self.port}
                first_byte_timeout: {first_byte_timeout}
                virtual_hosts:
                  - name: all
                    domains: ["*"]
                    routes:
                      - match: {{prefix: /}}
                        cluster: origin
            clusters:
              - name: origin
                endpoints: [{{address: {origin[0]}, port: {origin[1]}}}]
            """))

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.spawn(fastmesh_argv(cfg, "--single-process"), preexec_fn=limit)


@pytest.fixture
def low_fd(tmp_path):
    made = []

    def start(*a, **kw) -> LowFdFastmesh:
        f = LowFdFastmesh(tmp_path, *a, **kw)
        made.append(f)
        return f

    yield start
    for f in made:
        f.stop()


def get_ok(port: int, path: str = "/honest", timeout: float = 5.0) -> bool:
    """One request on a new connection: True if it got a 200."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            return r.status == 200
        finally:
            c.close()
    except OSError:
        return False


# ------------------------------------------------------------------ first_byte_timeout


def test_silent_connection_closed_after_first_byte_timeout(origin, start_proxy, clients):
    proxy = start_proxy(http_config(origin, listener={"first_byte_timeout": "300ms"}))
    # A connection that sent its request right away, then stays idle ...
    early = clients(proxy.address())
    assert early.request("GET", "/a").status == 200
    # ... and a silent one, accepted after it.
    silent = clients(proxy.address())
    assert silent.is_closed_by_peer(timeout=4.0)
    st = proxy.wait_for(lambda s: s["downstream_cx_first_byte_timeout"] == 1)
    assert st["downstream_cx_first_byte_timeout"] == 1
    # The timeout ends at the first byte: the older keep-alive connection
    # (idle longer than the silent one lived) still serves.
    assert early.request("GET", "/b").status == 200


def test_first_byte_timeout_ends_at_first_byte(origin, start_proxy, clients):
    # A head that started within the timeout is under request_headers_timeout.
    proxy = start_proxy(http_config(origin, listener={"first_byte_timeout": "300ms",
                                                      "request_headers_timeout": "1s"}))
    slow = clients(proxy.address())
    slow.send(b"GET /slow HTTP/1.1\r\n")
    silent = clients(proxy.address())
    assert silent.is_closed_by_peer(timeout=4.0)     # first_byte_timeout passed for both
    slow.send(b"Host: example.com\r\n\r\n")
    assert slow.read_response().status == 200


# ------------------------------------------------------------------ connection limits


def test_listener_max_connections(origin, start_proxy, clients):
    proxy = start_proxy(http_config(origin, listener={"max_connections": 2}))
    a, b = clients(proxy.address()), clients(proxy.address())
    assert a.request("GET", "/a").status == 200
    assert b.request("GET", "/b").status == 200
    third = clients(proxy.address())
    assert third.is_closed_by_peer(timeout=3.0)
    st = proxy.wait_for(lambda s: s["downstream_cx_overflow"] == 1)
    assert st["downstream_cx_overflow"] == 1
    assert st["downstream_cx_active"] == 2
    # Below the limit again: accepted.
    a.close()
    assert proxy.wait_for(lambda s: s["downstream_cx_active"] == 1)
    fourth = clients(proxy.address())
    assert fourth.request("GET", "/d").status == 200


def test_global_downstream_max_connections(origin, start_proxy, clients):
    cfg = http_config(origin, extra_listeners=[{
        "name": "web2", "address": "127.0.0.1", "port": 0,
        "virtual_hosts": [{"name": "all", "domains": ["*"],
                           "routes": [{"match": {"prefix": "/"}, "cluster": "origin"}]}]}])
    cfg["overload_manager"] = {"global_downstream_max_connections": 2}
    proxy = start_proxy(cfg)
    a, b = clients(proxy.address("web")), clients(proxy.address("web2"))
    assert a.request("GET", "/a").status == 200
    assert b.request("GET", "/b").status == 200
    third = clients(proxy.address("web2"))
    assert third.is_closed_by_peer(timeout=3.0)
    st = proxy.wait_for(lambda s: s["downstream_global_cx_overflow"] == 1)
    assert st["listeners"]["web2"]["downstream_global_cx_overflow"] == 1
    assert st["downstream_cx_active"] == 2


# ------------------------------------------------------------------ the descriptor limit


def test_silent_connections_do_not_exhaust_descriptors(origin, low_fd):
    """400 silent connections against a 300-descriptor limit: the oldest idle
    ones are closed near the limit and honest requests still succeed."""
    fm = low_fd(origin.address, nofile=300)
    silent = []
    try:
        for _ in range(400):
            s = socket.create_connection(("127.0.0.1", fm.port), timeout=5)
            silent.append(s)
        # Every silent connection has been accepted or is waiting in the backlog.
        for i in range(20):
            assert get_ok(fm.port, f"/honest/{i}"), f"honest request {i} failed:\n{fm.output()}"
        st = fm.stats()
        assert st["downstream_cx_overload_idle_close"] >= 100
        assert st["downstream_rq_2xx"] >= 20
        assert "closed" in fm.output() and "idle connection" in fm.output()   # logged
    finally:
        for s in silent:
            s.close()


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def test_idle_http2_connections_are_shed_first(origin, low_fd):
    """HTTP/2 connections without a stream are idle too: the oldest ones get
    GOAWAY and are closed near the limit, before younger silent HTTP/1.1 ones."""
    fm = low_fd(origin.address, nofile=300)
    h2s, silent = [], []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", fm.port), timeout=5)
            s.sendall(H2_PREFACE)
            h2s.append(s)
        assert fm.wait_for(lambda st: st["downstream_cx_active"] >= 200)
        for _ in range(200):
            silent.append(socket.create_connection(("127.0.0.1", fm.port), timeout=5))
        assert get_ok(fm.port, "/honest"), fm.output()
        # The oldest HTTP/2 connection was closed, with a GOAWAY (type 7) first.
        first = h2s[0]
        data = b""
        while True:
            try:
                chunk = first.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        assert b"\x07\x00\x00\x00\x00\x00" in data, data
    finally:
        for s in h2s + silent:
            s.close()


def test_stop_accepting_when_nothing_is_idle(make_origin, low_fd):
    """Busy connections near the descriptor limit: a new connection is
    refused and accepting stops; once the requests are done it resumes, and a
    connection that waited in the backlog meanwhile is served."""
    origin = make_origin("origin")
    fm = low_fd(origin.address, nofile=100)
    busy = []
    try:
        # Requests that hold their client and upstream connection ~2 s each.
        for _ in range(60):
            try:
                c = Client(("127.0.0.1", fm.port), timeout=10)
                c.send(b"GET /slow-headers/2 HTTP/1.1\r\nHost: x\r\n\r\n")
                busy.append(c)
            except OSError:
                break
        st = fm.wait_for(lambda s: s["overload_stop_accepting"] == 1, timeout=5)
        assert st is not None, fm.output()
        assert st["downstream_cx_overload_reject"] >= 1
        # Accepting is stopped: this connection waits in the listen backlog.
        waiting = Client(("127.0.0.1", fm.port), timeout=15)
        waiting.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in busy:
            c.close()
        st = fm.wait_for(lambda s: s["overload_stop_accepting"] == 0, timeout=15)
        assert st is not None, fm.output()
        assert waiting.read_response().status == 200
        waiting.close()
        assert get_ok(fm.port, "/later")
        assert "accepting stopped" in fm.output() and "accepting again" in fm.output()
    finally:
        for c in busy:
            c.close()


# ------------------------------------------------------------------ bytes before forwarding


BAD_CHUNKED = (b"POST /bad-chunk HTTP/1.1\r\nHost: example.com\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\nZZ\r\nworld\r\n0\r\n\r\n")


@pytest.mark.parametrize("warm", [False, True], ids=["new-upstream-cx", "pooled-upstream-cx"])
def test_bad_chunk_in_first_read_sends_nothing_upstream(origin, start_proxy, clients, warm):
    proxy = start_proxy(http_config(origin))
    if warm:
        # An idle pooled upstream connection: the attempt attaches at once.
        w = clients(proxy.address())
        assert w.request("GET", "/warm").status == 200
        w.close()
        assert proxy.wait_for(lambda s: s["downstream_cx_active"] == 0)
    c = clients(proxy.address())
    c.send(BAD_CHUNKED)
    r = c.read_response()
    assert r.status == 400
    assert c.is_closed_by_peer(timeout=3.0)
    # A later request through the proxy has arrived: anything of the refused
    # one would have been written before its 400.
    d = clients(proxy.address())
    assert d.request("GET", "/after").status == 200
    assert b"/bad-chunk" not in origin.all_raw()
    assert [q.path for q in origin.received() if q.path != "/warm"] == ["/after"]


def test_connect_refused_closes_connection(origin, start_proxy, clients):
    proxy = start_proxy(http_config(origin))
    c = clients(proxy.address())
    c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
           b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n")
    r = c.read_response(b"CONNECT")
    assert r.status == 405
    assert r.connection_close
    assert c.is_closed_by_peer(timeout=3.0)
    d = clients(proxy.address())
    assert d.request("GET", "/after").status == 200
    assert [q.path for q in origin.received()] == ["/after"]


def test_refused_upgrade_closes_connection(origin, start_proxy, clients):
    # The origin answers 200 to an Upgrade outside /ws: the upgrade is not
    # honoured, so what the client sent after its request is not HTTP.
    proxy = start_proxy(http_config(origin))
    c = clients(proxy.address())
    c.send(b"GET /plain HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
           b"Upgrade: websocket\r\n\r\n"
           b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n")
    r = c.read_response()
    assert r.status == 200
    assert r.connection_close
    assert c.is_closed_by_peer(timeout=3.0)
    d = clients(proxy.address())
    assert d.request("GET", "/after").status == 200
    assert [q.path for q in origin.received()] == ["/plain", "/after"]


def test_honoured_upgrade_still_tunnels(origin, start_proxy, clients):
    proxy = start_proxy(http_config(origin))
    c = clients(proxy.address())
    c.send(b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
           b"Upgrade: websocket\r\n\r\n")
    assert c.read_response().status == 101
    c.send(b"ping")
    assert c.recv_exactly(4) == b"ping"


# ------------------------------------------------------------------ Host


def test_absolute_form_authority_port_is_validated(origin, start_proxy, clients):
    proxy = start_proxy(http_config(origin))
    c = clients(proxy.address())
    c.send(b"GET http://example.com:99999/x HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert c.read_response().status == 400
    assert c.is_closed_by_peer(timeout=3.0)
    d = clients(proxy.address())
    d.send(b"GET http://example.com:8080/ok HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert d.read_response().status == 200
    assert [q.path for q in origin.received()] == ["/ok"]


@pytest.mark.parametrize("host,status", [
    (b"example.com:abc", 400),
    (b"example.com:99999", 400),
    (b"example.com:65536", 400),
    (b"example.com:8o", 400),
    (b"example.com:80:80", 400),
    (b"[::1", 400),
    (b"[::1]x", 400),
    (b"example.com:", 200),        # port = *DIGIT: empty is in the grammar
    (b"example.com:65535", 200),
    (b"example.com:080", 200),
    (b"[::1]:8080", 200),
    (b"[::1]", 200),
    (b"example.com", 200),
])
def test_host_port_is_validated(origin, start_proxy, clients, host, status):
    proxy = start_proxy(http_config(origin))
    c = clients(proxy.address())
    c.send(b"GET /h HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    r = c.read_response()
    assert r.status == status
    if status == 400:
        assert c.is_closed_by_peer(timeout=3.0)
        assert origin.received() == []
