"""Circuit breakers (issue 9): Envoy's circuit_breakers thresholds per
cluster and priority, through a live proxy. The origin here holds every
request until the test releases it (events, never sleeps), so the limits
are reached on purpose: max_requests, max_connections with its FIFO pending
queue and max_pending_requests, max_connection_pools, max_retries and the
retry budget. Over a limit: a fast 503 with x-envoy-overloaded (gRPC:
UNAVAILABLE), counted; gauges as Envoy exports them. Pending requests are
freed on client disconnect, route timeout and when a reload removes their
cluster. HTTP/1.1 and HTTP/2 clients."""
from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

import fastmesh
from fastmesh import _core
from support.h2util import H2Client
from support.harness import build_request, cluster, http_config
from support.origin import closed_port

TIMEOUT = 5.0
pytestmark = pytest.mark.timeout(60)


class GatedOrigin:
    """An HTTP/1.1 origin that holds each request until release() (one
    permit per request, in arrival order). Records the x-id (or path) of
    every request as it arrives and counts connections. With
    `fail_first`, the first request for each x-id is answered 503 at once
    (and its retry is held): concurrent retries on demand."""

    def __init__(self, fail_first: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.address = self.sock.getsockname()
        self.fail_first = fail_first
        self.arrived: list[str] = []
        self.seen: set[str] = set()
        self.accepted = 0
        self.cond = threading.Condition()
        self.permits = 0
        self.stopping = False
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.cond:
                self.accepted += 1
                self.conns.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = s.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                rid = lines[0].split(b" ")[1].decode()
                for line in lines[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"x-id":
                        rid = v.strip().decode()
                with self.cond:
                    first = rid not in self.seen
                    self.seen.add(rid)
                    self.arrived.append(rid)
                    self.cond.notify_all()
                if self.fail_first and first:
                    s.sendall(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                    continue
                with self.cond:
                    self.cond.wait_for(lambda: self.permits > 0 or self.stopping)
                    if self.stopping:
                        return
                    self.permits -= 1
                body = rid.encode()
                s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            return

    def wait_arrived(self, n: int, timeout: float = TIMEOUT) -> list[str]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.arrived) >= n, timeout), self.arrived
            return list(self.arrived)

    def release(self, n: int = 1) -> None:
        with self.cond:
            self.permits += n
            self.cond.notify_all()

    def drop_first(self) -> None:
        """Reset the oldest connection still open (the upstream fails)."""
        with self.cond:
            s = self.conns.pop(0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
            conns = list(self.conns)
        self.sock.close()
        for s in conns:
            s.close()


@pytest.fixture
def gated():
    made: list[GatedOrigin] = []

    def make(**kw) -> GatedOrigin:
        o = GatedOrigin(**kw)
        made.append(o)
        return o

    yield make
    for o in made:
        o.stop()


def breakers(**thresholds) -> dict:
    return {"circuit_breakers": {"thresholds": [thresholds]}}


def cb_config(origin, *, routes=None, **thresholds) -> dict:
    return http_config(origin, routes=routes, cluster_opts=breakers(**thresholds))


class Clients:
    """Concurrent requests over HTTP/1.1 (a connection each) or HTTP/2 (one
    connection, a stream each), sent now and read later."""

    def __init__(self, proto: str, address) -> None:
        self.proto = proto
        self.address = address
        self.h2 = H2Client(address) if proto == "h2" else None
        self.pending: dict[str, object] = {}

    def send(self, rid: str, path: str = "/") -> None:
        if self.h2 is not None:
            self.pending[rid] = self.h2.request("GET", path, headers=[("x-id", rid)])
        else:
            s = socket.create_connection(self.address, timeout=TIMEOUT)
            s.sendall(build_request("GET", path, [("x-id", rid)]))
            self.pending[rid] = s

    def drop(self, rid: str) -> None:
        """The client gives up on rid (HTTP/1.1: a reset connection, since a
        FIN after a whole request is a half-close that still gets its answer;
        HTTP/2: RST_STREAM)."""
        h = self.pending.pop(rid)
        if self.h2 is not None:
            self.h2.reset(h)
        else:
            h.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close()

    def result(self, rid: str) -> tuple[int, dict]:
        """(status, {lower-case header: value}) of rid."""
        h = self.pending.pop(rid)
        if self.h2 is not None:
            r = self.h2.wait(h, timeout=TIMEOUT)
            return r.status, {k.decode().lower(): v.decode() for k, v in r.headers}
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = h.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            h.close()
        lines = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().decode().lower()] = v.strip().decode()
        return int(lines[0].split(b" ")[1]), headers

    def close(self) -> None:
        for rid in list(self.pending):
            self.drop(rid)
        if self.h2 is not None:
            self.h2.close()


@pytest.fixture
def clients_for():
    made: list[Clients] = []

    def make(proto, address) -> Clients:
        c = Clients(proto, address)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def wait_stats(p, pred, what: str, name: str = "origin") -> dict:
    st = p.wait_for(lambda s: pred(s["clusters"][name]), timeout=TIMEOUT)["clusters"][name]
    assert pred(st), f"{what}: {st}"
    return st


# ------------------------------------------------------------------ config


def test_defaults_are_envoys():
    from fastmesh.control.compile import build_snapshot
    from fastmesh.control.config import parse_config
    cfg = parse_config(http_config(("127.0.0.1", 1)))
    assert cfg.clusters[0].circuit_breakers == ()
    assert cfg.listeners[0].virtual_hosts[0].routes[0].priority == "default"
    limits = build_snapshot(cfg).clusters["origin"].breakers
    for prio in ("default", "high"):
        assert limits.limits(prio) == {
            "max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024,
            "max_retries": 3, "max_connection_pools": None, "track_remaining": False,
            "retry_budget": None}


def test_thresholds_round_trip_and_reach_the_data_plane():
    from fastmesh.control.compile import build_snapshot
    from fastmesh.control.config import parse_config
    from fastmesh.control.dump import config_to_dict
    cfg = parse_config(http_config(("127.0.0.1", 1), cluster_opts={"circuit_breakers": {
        "thresholds": [{"max_connections": 7, "max_connection_pools": 2},
                       {"priority": "high", "max_requests": 9, "track_remaining": True,
                        "retry_budget": {"budget_percent": {"value": 25.0},
                                         "min_retry_concurrency": 1}}]}}))
    assert parse_config(config_to_dict(cfg)) == cfg
    limits = build_snapshot(cfg).clusters["origin"].breakers
    assert limits.limits("default")["max_connections"] == 7
    assert limits.limits("default")["max_connection_pools"] == 2
    assert limits.limits("high")["max_requests"] == 9
    assert limits.limits("high")["max_connections"] == 1024
    assert limits.limits("high")["retry_budget"] == {"budget_percent": 25.0,
                                                     "min_retry_concurrency": 1}


@pytest.mark.parametrize("cb, message", [
    ({"thresholds": [{"max_conections": 1}]}, "did you mean 'max_connections'"),
    ({"thresholds": [{"max_requests": -1}]}, "out of range"),
    ({"thresholds": [{"max_retries": "3"}]}, "expected an integer"),
    ({"thresholds": [{"priority": "urgent"}]}, "expected one of: default, high"),
    ({"thresholds": [{"priority": "high"}, {"priority": "high"}]}, "given twice"),
    ({"thresholds": [{"retry_budget": {"budget_percent": 20}}]}, "a percent"),
    ({"thresholds": [{"retry_budget": {"budget_percent": {"value": 120}}}]}, "out of range"),
    ({"thresholds": [{"track_remaining": "yes"}]}, "expected true or false"),
    ({"threshold": []}, "did you mean 'thresholds'"),
])
def test_bad_circuit_breakers_are_config_errors(cb, message):
    with pytest.raises(fastmesh.ConfigError) as e:
        fastmesh.Proxy(http_config(("127.0.0.1", 1), cluster_opts={"circuit_breakers": cb}))
    assert "circuit_breakers" in str(e.value) and message in str(e.value), str(e.value)


@pytest.mark.parametrize("route, message", [
    ({"match": {"prefix": "/"}, "cluster": "origin", "priority": "HIGH"},
     "expected one of: default, high"),
    ({"match": {"prefix": "/"}, "direct_response": {"status": 200}, "priority": "high"},
     "not allowed with direct_response"),
])
def test_bad_route_priorities_are_config_errors(route, message):
    with pytest.raises(fastmesh.ConfigError) as e:
        fastmesh.Proxy(http_config(("127.0.0.1", 1), routes=[route]))
    assert "priority" in str(e.value) and message in str(e.value), str(e.value)


# ------------------------------------------------------------------ limits, live


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_max_requests_overflow_is_a_fast_503_with_overloaded(proto, start_proxy, gated,
                                                             clients_for):
    o = gated()
    p = start_proxy(cb_config(o.address, max_requests=2))
    c = clients_for(proto, p.address("web"))
    c.send("a")
    c.send("b")
    o.wait_arrived(2)
    c.send("c")
    status, headers = c.result("c")
    assert status == 503 and headers.get("x-envoy-overloaded") == "true"
    st = p.cluster_stats()
    assert st["upstream_rq_pending_overflow"] == 1
    assert st["circuit_breakers.default.rq_open"] == 1
    # a and b reached the origin, c did not; a and b race each other to it
    # over two upstream connections (over HTTP/2 they share one client
    # connection), so their order is not part of the verdict
    assert sorted(o.arrived) == ["a", "b"]
    o.release(2)
    assert c.result("a")[0] == 200 and c.result("b")[0] == 200
    c.send("d")
    o.release(1)
    assert c.result("d")[0] == 200
    assert wait_stats(p, lambda s: s["circuit_breakers.default.rq_open"] == 0, "rq_open")


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_max_connections_queues_in_fifo_order_and_releases(proto, start_proxy, gated,
                                                           clients_for):
    o = gated()
    p = start_proxy(cb_config(o.address, max_connections=1, max_pending_requests=10))
    c = clients_for(proto, p.address("web"))
    c.send("r0")
    o.wait_arrived(1)
    for i in (1, 2, 3):
        c.send(f"r{i}")
        # one at a time, so that the queue's order is the sending order
        wait_stats(p, lambda s, i=i: s["upstream_rq_pending_active"] == i, "queued")
    st = p.cluster_stats()
    assert st["upstream_rq_pending_total"] == 3 and st["upstream_cx_overflow"] == 3
    assert st["circuit_breakers.default.cx_open"] == 1
    assert o.arrived == ["r0"] and o.accepted == 1
    for i in range(4):
        o.release(1)
        assert c.result(f"r{i}")[0] == 200
    assert o.arrived == ["r0", "r1", "r2", "r3"]
    st = wait_stats(p, lambda s: s["upstream_rq_pending_active"] == 0, "queue empty")
    assert st["upstream_cx_total"] == 1 and o.accepted == 1
    assert st["upstream_rq_pending_overflow"] == 0


def test_a_closed_connection_lets_the_queue_open_new_ones_in_order(start_proxy, gated,
                                                                   clients_for):
    # The one connection fails under r0: the head of the queue opens a new
    # connection, the next waits for it (not behind itself), in order.
    o = gated()
    p = start_proxy(cb_config(o.address, max_connections=1))
    c = clients_for("h2", p.address("web"))
    c.send("r0")
    o.wait_arrived(1)
    c.send("r1")
    wait_stats(p, lambda s: s["upstream_rq_pending_active"] == 1, "queued")
    c.send("r2")
    wait_stats(p, lambda s: s["upstream_rq_pending_active"] == 2, "queued")
    o.drop_first()
    assert c.result("r0")[0] == 502
    assert o.wait_arrived(2) == ["r0", "r1"]
    st = wait_stats(p, lambda s: s["upstream_rq_pending_active"] == 1, "r2 waits")
    assert st["upstream_cx_total"] == 2 and st["upstream_cx_active"] == 1
    o.release(3)                               # (r0's permit is taken too, then lost)
    assert c.result("r1")[0] == 200 and c.result("r2")[0] == 200
    assert o.arrived == ["r0", "r1", "r2"]


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_max_pending_requests_overflow(proto, start_proxy, gated, clients_for):
    o = gated()
    p = start_proxy(cb_config(o.address, max_connections=1, max_pending_requests=1))
    c = clients_for(proto, p.address("web"))
    c.send("r0")
    o.wait_arrived(1)
    c.send("r1")
    wait_stats(p, lambda s: s["upstream_rq_pending_active"] == 1, "queued")
    c.send("r2")
    status, headers = c.result("r2")
    assert status == 503 and headers.get("x-envoy-overloaded") == "true"
    st = p.cluster_stats()
    assert st["upstream_rq_pending_overflow"] == 1
    assert st["circuit_breakers.default.rq_pending_open"] == 1
    o.release(2)
    assert c.result("r0")[0] == 200 and c.result("r1")[0] == 200
    assert o.arrived == ["r0", "r1"]


@pytest.mark.parametrize("max_pending", [0, 5])
def test_max_connections_counts_http2_upstream_connections(max_pending, start_proxy):
    # An HTTP/2 upstream with room for one stream per connection (learnt
    # from its SETTINGS on a first request): each further concurrent
    # request would need another connection. They wait for the one
    # connection, or overflow when the queue has no room.
    from support.h2util import H2Origin
    o = H2Origin("h2", max_concurrent_streams=1)
    try:
        p = start_proxy(http_config(clusters=[cluster(
            "h2", o.address, protocol="http2",
            **breakers(max_connections=1, max_pending_requests=max_pending))],
            routes=[{"match": {"prefix": "/"}, "cluster": "h2"}]))
        c = H2Client(p.address("web"))
        try:
            assert c.get("/").status == 200
            rs = c.wait(*[c.request("GET", "/sleep/0.2") for _ in range(3)])
        finally:
            c.close()
        st = p.cluster_stats("h2")
        got = [r.status for r in rs]
        if max_pending == 0:
            assert got == [200, 503, 503], got
            assert all(r.header(b"x-envoy-overloaded") == b"true" for r in rs[1:])
            assert st["upstream_rq_pending_overflow"] == 2
        else:
            assert got == [200, 200, 200], got
            assert st["upstream_rq_pending_total"] == 2
        assert st["upstream_cx_total"] == 1 and o.connections == 1
        assert st["upstream_cx_overflow"] == 2
    finally:
        o.stop()


def test_max_connection_pools(start_proxy, make_origin):
    a, b = make_origin("a"), make_origin("b")
    p = start_proxy(http_config(a, b, cluster_opts=breakers(max_connection_pools=1)))
    from support.harness import Client
    got = []
    for _ in range(6):
        with Client(p.address("web")) as c:
            r = c.request("GET", "/x")
            ov = r.header("x-envoy-overloaded")
            got.append((r.status, ov.decode() if ov else None))
    assert got.count((503, "true")) == 3 and got.count((200, None)) == 3, got
    assert sorted([len(a.received()), len(b.received())]) == [0, 3]
    st = p.cluster_stats()
    assert st["upstream_cx_pool_overflow"] == 3
    assert st["circuit_breakers.default.cx_pool_open"] == 1


def test_grpc_overflow_is_unavailable(start_proxy):
    grpc = pytest.importorskip("grpc")
    dead = ("127.0.0.1", closed_port())
    p = start_proxy(http_config(clusters=[cluster("g", dead, protocol="http2",
                                                  **breakers(max_requests=0))],
                                routes=[{"match": {"prefix": "/"}, "cluster": "g"}]))
    host, port = p.address("web")
    ch = grpc.insecure_channel(f"{host}:{port}")
    try:
        call = ch.unary_unary("/fmtest.TestService/Unary",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            call(b"", timeout=TIMEOUT)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        md = dict(e.value.trailing_metadata() or ()) | dict(e.value.initial_metadata() or ())
        assert md.get("x-envoy-overloaded") == "true", md
    finally:
        ch.close()
    st = p.cluster_stats("g")
    assert st["upstream_rq_pending_overflow"] == 1 and st["upstream_cx_total"] == 0


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_high_priority_has_its_own_thresholds(proto, start_proxy, gated, clients_for):
    o = gated()
    routes = [{"match": {"prefix": "/hi"}, "cluster": "origin", "priority": "high"},
              {"match": {"prefix": "/"}, "cluster": "origin"}]
    p = start_proxy(http_config(o.address, routes=routes, cluster_opts={"circuit_breakers": {
        "thresholds": [{"max_requests": 1}, {"priority": "high", "max_requests": 2}]}}))
    c = clients_for(proto, p.address("web"))
    c.send("d0", "/")
    o.wait_arrived(1)
    c.send("d1", "/")
    assert c.result("d1")[0] == 503            # default: full
    c.send("h0", "/hi")
    c.send("h1", "/hi")
    o.wait_arrived(3)                          # high: its own room
    c.send("h2", "/hi")
    assert c.result("h2")[0] == 503            # high: full at 2
    st = p.cluster_stats()
    assert st["circuit_breakers.default.rq_open"] == 1
    assert st["circuit_breakers.high.rq_open"] == 1
    assert st["upstream_rq_pending_overflow"] == 2
    o.release(3)
    assert [c.result(r)[0] for r in ("d0", "h0", "h1")] == [200, 200, 200]


# ------------------------------------------------------------------ retries


RETRY = [{"match": {"prefix": "/"}, "cluster": "origin",
          "retry_policy": {"retry_on": "5xx", "num_retries": 1}}]


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_max_retries_caps_concurrent_retries(proto, start_proxy, gated, clients_for):
    # Each request's first attempt gets 503 at once; its retry is held.
    o = gated(fail_first=True)
    p = start_proxy(cb_config(o.address, routes=RETRY, max_retries=1))
    c = clients_for(proto, p.address("web"))
    c.send("a")
    o.wait_arrived(2)                          # a, and its retry (held)
    c.send("b")
    assert c.result("b")[0] == 503             # no retry slot: the 503 stands
    st = p.cluster_stats()
    assert st["upstream_rq_retry_overflow"] == 1 and st["upstream_rq_retry"] == 1
    assert st["circuit_breakers.default.rq_retry_open"] == 1
    o.release(1)
    assert c.result("a")[0] == 200
    # The slot is back once a's request is over.
    wait_stats(p, lambda s: s["circuit_breakers.default.rq_retry_open"] == 0, "slot back")
    c.send("c")
    o.wait_arrived(5)                          # a a b c c
    o.release(1)
    assert c.result("c")[0] == 200
    assert p.cluster_stats()["upstream_rq_retry"] == 2


def test_retry_budget_replaces_max_retries(start_proxy, gated, clients_for):
    # max_retries 0 would allow none; the budget's floor allows 2 at once.
    o = gated(fail_first=True)
    p = start_proxy(cb_config(o.address, routes=RETRY, max_retries=0, retry_budget={
        "budget_percent": {"value": 0.0}, "min_retry_concurrency": 2}))
    c = clients_for("h2", p.address("web"))
    c.send("a")
    o.wait_arrived(2)
    c.send("b")
    o.wait_arrived(4)
    c.send("c")
    assert c.result("c")[0] == 503
    assert p.cluster_stats()["upstream_rq_retry_overflow"] == 1
    o.release(2)
    assert c.result("a")[0] == 200 and c.result("b")[0] == 200


def test_retry_budget_percent_of_active_requests(start_proxy, gated, clients_for):
    # 4 requests held: 50 % of them is 2 retries (above the floor of 1).
    o = gated()
    p = start_proxy(cb_config(o.address, routes=RETRY, track_remaining=True, retry_budget={
        "budget_percent": {"value": 50.0}, "min_retry_concurrency": 1}))
    c = clients_for("h2", p.address("web"))
    for i in range(4):
        c.send(f"r{i}")
    o.wait_arrived(4)
    st = wait_stats(p, lambda s: s["circuit_breakers.default.remaining_rq"] == 1020, "4 active")
    assert st["circuit_breakers.default.remaining_retries"] == 2
    o.release(4)
    for i in range(4):
        assert c.result(f"r{i}")[0] == 200
    st = wait_stats(p, lambda s: s["circuit_breakers.default.remaining_rq"] == 1024, "idle")
    assert st["circuit_breakers.default.remaining_retries"] == 1


# ------------------------------------------------------------------ gauges


def test_remaining_gauges_only_with_track_remaining(start_proxy, gated, clients_for):
    o = gated()
    routes = [{"match": {"prefix": "/hi"}, "cluster": "origin", "priority": "high"},
              {"match": {"prefix": "/"}, "cluster": "origin"}]
    p = start_proxy(http_config(o.address, routes=routes, cluster_opts={"circuit_breakers": {
        "thresholds": [{"max_requests": 3, "max_connections": 5, "track_remaining": True}]}}))
    c = clients_for("h1", p.address("web"))
    c.send("a")
    o.wait_arrived(1)
    st = p.cluster_stats()
    assert st["circuit_breakers.default.remaining_rq"] == 2
    assert st["circuit_breakers.default.remaining_cx"] == 4
    assert st["circuit_breakers.default.remaining_pending"] == 1024
    assert st["circuit_breakers.default.remaining_retries"] == 3
    assert st["circuit_breakers.default.rq_open"] == 0
    assert not any(k.startswith("circuit_breakers.high.remaining") for k in st)
    assert "circuit_breakers.high.rq_open" in st
    o.release(1)
    assert c.result("a")[0] == 200


def test_an_unconfigured_cluster_counts_no_overflow(start_proxy, origin):
    p = start_proxy(http_config(origin))
    c = H2Client(p.address("web"))
    try:
        assert all(r.status == 200 for r in c.wait(*[c.request("GET", "/") for _ in range(20)]))
    finally:
        c.close()
    st = p.cluster_stats()
    for k in ("upstream_rq_pending_overflow", "upstream_cx_overflow", "upstream_rq_retry_overflow",
              "upstream_cx_pool_overflow", "upstream_rq_pending_total"):
        assert st[k] == 0, k
    assert not any(k.startswith("circuit_breakers.") and k.split(".")[2].startswith("remaining")
                   for k in st)
    assert all(st[f"circuit_breakers.{pr}.{g}"] == 0 for pr in ("default", "high")
               for g in ("cx_open", "rq_pending_open", "rq_open", "rq_retry_open", "cx_pool_open"))


# ------------------------------------------------------------------ pending requests end


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_client_disconnect_while_pending_frees_it(proto, start_proxy, gated, clients_for):
    o = gated()
    p = start_proxy(cb_config(o.address, max_connections=1))
    c = clients_for(proto, p.address("web"))
    c.send("r0")
    o.wait_arrived(1)
    c.send("r1")
    wait_stats(p, lambda s: s["upstream_rq_pending_active"] == 1, "queued")
    c.drop("r1")
    st = wait_stats(p, lambda s: s["upstream_rq_pending_active"] == 0
                    and s["upstream_rq_active"] == 1, "freed")
    c.send("r2")
    wait_stats(p, lambda s: s["upstream_rq_pending_active"] == 1, "queued")
    o.release(2)
    assert c.result("r0")[0] == 200 and c.result("r2")[0] == 200
    assert o.arrived == ["r0", "r2"]           # r1 never went upstream


def test_route_timeout_while_pending_answers_504(start_proxy, gated, clients_for):
    o = gated()
    # r0 (its own route, a long timeout) holds the one connection; r1 waits
    # for it past its route's timeout.
    routes = [{"match": {"prefix": "/long"}, "cluster": "origin", "timeout": "5s"},
              {"match": {"prefix": "/"}, "cluster": "origin", "timeout": "0.3s"}]
    p = start_proxy(cb_config(o.address, routes=routes, max_connections=1))
    c = clients_for("h1", p.address("web"))
    c.send("r0", "/long")
    o.wait_arrived(1)
    c.send("r1")
    assert c.result("r1")[0] == 504
    st = wait_stats(p, lambda s: s["upstream_rq_pending_active"] == 0, "freed")
    assert st["upstream_rq_pending_total"] == 1
    o.release(1)
    assert c.result("r0")[0] == 200
    assert o.arrived == ["r0"]


def test_reload_removing_the_cluster_answers_pending_503(start_proxy, gated, clients_for, origin):
    o = gated()
    cfg = cb_config(o.address, max_connections=1)
    p = start_proxy(cfg)
    c = clients_for("h2", p.address("web"))
    c.send("r0")
    o.wait_arrived(1)
    c.send("r1")
    wait_stats(p, lambda s: s["upstream_rq_pending_active"] == 1, "queued")
    p.reload(http_config(clusters=[cluster("other", origin)],
                         routes=[{"match": {"prefix": "/"}, "cluster": "other"}]))
    assert c.result("r1")[0] == 503
    o.release(1)
    assert c.result("r0")[0] == 200            # in flight: finishes
    assert o.arrived == ["r0"]
