"""Stream timeouts through a live proxy (core_timeouts.pxi): a route's
idle_timeout, the route's and the listener's max_stream_duration, and the
gRPC grpc-timeout header when max_stream_duration.grpc_timeout_header_max
says to honour it. HTTP/1.1 and HTTP/2 clients; grpcio for the gRPC status.

Timing is checked from below only (a timeout never fires early); the
verdicts come from the answers and the counters, and the conftest leak check
proves every timed-out request freed its connection.
"""
import time

import pytest

from support.h2util import H2Client, H2Origin
from support.harness import build_request, cluster, http_config
from support.origin import body_bytes

from fastmesh.control.config import ConfigError, parse_config
from fastmesh.control.dump import config_to_dict


def addr(p):
    return p.address("web")


def route(**kw):
    r = {"match": {"prefix": "/"}, "cluster": "origin", "timeout": 0}
    r.update(kw)
    return r


def lstats(p):
    return p.stats()


# ------------------------------------------------------------ route idle_timeout

def test_route_idle_timeout_504_before_the_response(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, routes=[route(idle_timeout="300ms")]))
    c = clients(addr(p))
    t0 = time.monotonic()
    r = c.request("GET", "/slow-headers/3")
    assert time.monotonic() - t0 >= 0.3
    assert r.status == 504 and r.body == b"upstream request timeout\n"
    st = p.stats()
    assert st["downstream_rq_idle_timeout"] == 1
    assert p.cluster_stats()["upstream_rq_timeout"] == 0


def test_route_idle_timeout_h2_client(start_proxy, origin):
    p = start_proxy(http_config(origin, routes=[route(idle_timeout="300ms")]))
    c = H2Client(addr(p))
    try:
        t0 = time.monotonic()
        r = c.wait(c.request("GET", "/slow-headers/3"))
        assert time.monotonic() - t0 >= 0.3
        assert r.status == 504
        assert p.stats()["downstream_rq_idle_timeout"] == 1
        # the connection stays usable for other streams
        assert c.wait(c.request("GET", "/echo")).status == 200
    finally:
        c.close()


def test_route_idle_timeout_cuts_a_stalled_response(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, routes=[route(idle_timeout="400ms")]))
    c = clients(addr(p))
    c.send(build_request("GET", "/slow-body?pause=3"))
    raw = c.read_until_close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(body) == 1000            # cut, never a complete-looking response
    assert p.stats()["downstream_rq_idle_timeout"] == 1


def test_route_idle_timeout_is_reset_by_progress(start_proxy, origin, clients):
    # 6 pieces 0.2 s apart: longer in all than the idle timeout, never idle that long.
    p = start_proxy(http_config(origin, routes=[route(idle_timeout="600ms")]))
    c = clients(addr(p))
    r = c.request("GET", "/drip?n=6&interval=0.2")
    assert r.status == 200 and r.body == body_bytes(600)
    assert p.stats()["downstream_rq_idle_timeout"] == 0


def test_route_idle_timeout_overrides_the_listener(start_proxy, origin, clients):
    # The listener's 300ms stream idle timeout would cut a 1 s wait; the
    # route's 5 s one replaces it.
    p = start_proxy(http_config(origin, listener={"stream_idle_timeout": "300ms"},
                                routes=[route(idle_timeout="5s")]))
    c = clients(addr(p))
    r = c.request("GET", "/slow-headers/1")
    assert r.status == 200 and r.body == b"slow\n"


def test_route_idle_timeout_zero_turns_it_off(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, listener={"stream_idle_timeout": "300ms"},
                                routes=[route(idle_timeout=0)]))
    c = clients(addr(p))
    r = c.request("GET", "/slow-headers/1")
    assert r.status == 200


def test_listener_stream_idle_timeout_counts_as_idle(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, listener={"stream_idle_timeout": "300ms"},
                                routes=[route()]))
    c = clients(addr(p))
    assert c.request("GET", "/slow-headers/3").status == 504
    assert p.stats()["downstream_rq_idle_timeout"] == 1
    assert p.cluster_stats()["upstream_rq_timeout"] == 0


# ------------------------------------------------------------ max_stream_duration

def test_route_max_stream_duration_504(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, routes=[
        route(max_stream_duration={"max_stream_duration": "400ms"})]))
    c = clients(addr(p))
    t0 = time.monotonic()
    r = c.request("GET", "/slow-headers/3")
    assert time.monotonic() - t0 >= 0.4
    assert r.status == 504
    assert p.stats()["downstream_rq_max_duration_reached"] == 1
    assert p.stats()["downstream_rq_idle_timeout"] == 0


def test_max_stream_duration_cuts_a_response_that_makes_progress(start_proxy, origin, clients):
    # Progress every 0.2 s keeps the idle timeout away; the duration is absolute.
    p = start_proxy(http_config(origin, routes=[
        route(max_stream_duration={"max_stream_duration": "500ms"})]))
    c = clients(addr(p))
    c.send(build_request("GET", "/drip?n=10&interval=0.2"))
    raw = c.read_until_close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(body) < 1000
    assert p.stats()["downstream_rq_max_duration_reached"] == 1


def test_max_stream_duration_h2_client(start_proxy, origin):
    p = start_proxy(http_config(origin, routes=[
        route(max_stream_duration={"max_stream_duration": "400ms"})]))
    c = H2Client(addr(p))
    try:
        t0 = time.monotonic()
        r = c.wait(c.request("GET", "/slow-headers/3"))
        assert time.monotonic() - t0 >= 0.4
        assert r.status == 504
        assert p.stats()["downstream_rq_max_duration_reached"] == 1
    finally:
        c.close()


def test_listener_max_stream_duration(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, listener={"max_stream_duration": "400ms"},
                                routes=[route()]))
    c = clients(addr(p))
    assert c.request("GET", "/slow-headers/3").status == 504
    assert p.stats()["downstream_rq_max_duration_reached"] == 1


def test_route_max_stream_duration_zero_overrides_the_listener(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, listener={"max_stream_duration": "300ms"},
                                routes=[route(max_stream_duration={"max_stream_duration": 0})]))
    c = clients(addr(p))
    assert c.request("GET", "/slow-headers/1").status == 200
    assert p.stats()["downstream_rq_max_duration_reached"] == 0


def test_max_stream_duration_is_per_request_on_keep_alive(start_proxy, origin, clients):
    # Five 0.3 s requests on one connection under a 1 s limit: 1.5 s in all,
    # each well within it. A deadline left over from an earlier request
    # would cut a later one.
    p = start_proxy(http_config(origin, routes=[
        route(max_stream_duration={"max_stream_duration": "1s"})]))
    c = clients(addr(p))
    for _ in range(5):
        r = c.request("GET", "/slow-headers/0.3")
        assert r.status == 200 and not r.connection_close
    assert p.stats()["downstream_rq_max_duration_reached"] == 0



def test_a_kept_duration_timer_still_cuts_a_later_request(start_proxy, origin, clients):
    # An HTTP/1.1 connection keeps one duration timer for all its requests
    # (disarmed lazily between them): after fast requests it must still cut
    # a slow one, at its own deadline.
    p = start_proxy(http_config(origin, routes=[
        route(max_stream_duration={"max_stream_duration": "400ms"})]))
    c = clients(addr(p))
    for _ in range(3):
        assert c.request("GET", "/fast").status == 200
    t0 = time.monotonic()
    r = c.request("GET", "/slow-headers/3")
    assert time.monotonic() - t0 >= 0.4
    assert r.status == 504
    assert p.stats()["downstream_rq_max_duration_reached"] == 1


def test_stream_timers_leave_the_wheel_with_their_streams(start_proxy, origin, clients):
    # HTTP/2 streams are not reused: their duration and per-try timers leave
    # the wheel when the request ends; an HTTP/1.1 connection's kept timers
    # leave it when the connection closes. Nothing lingers for a minute.
    p = start_proxy(http_config(origin, routes=[route(
        max_stream_duration={"max_stream_duration": "60s"},
        retry_policy={"retry_on": "5xx", "per_try_timeout": "60s"})]))

    def timers():
        w = p.proxy._dataplane.worker
        return w.wheel.armed - w.connection_count()
    h2 = H2Client(addr(p))
    try:
        for r in h2.wait(*[h2.request("GET", f"/h2/{i}") for i in range(20)]):
            assert r.status == 200
        assert p._in_loop(timers) <= 0
    finally:
        h2.close()
    c = clients(addr(p))
    for _ in range(5):
        assert c.request("GET", "/h1").status == 200
    c.close()
    p.wait_idle()
    deadline = time.monotonic() + 3
    while p._in_loop(timers) > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p._in_loop(timers) <= 0


# ------------------------------------------------------------ grpc-timeout

GRPC = [("content-type", "application/grpc"), ("te", "trailers")]


@pytest.fixture
def slow_h2():
    o = H2Origin("slow")
    yield o
    o.stop()


def _grpc_proxy(start_proxy, o, **route_kw):
    return start_proxy(http_config(
        clusters=[cluster("slow", o.address, protocol="http2")],
        routes=[{"match": {"prefix": "/"}, "cluster": "slow", "timeout": 0, **route_kw}]))


def _grpc_call(p, path, timeout_hdr):
    c = H2Client(addr(p))
    try:
        t0 = time.monotonic()
        sid = c.request("POST", path, body=b"\0\0\0\0\0",
                        headers=GRPC + [("grpc-timeout", timeout_hdr)])
        r = c.wait(sid)
        return r, time.monotonic() - t0
    finally:
        c.close()


def test_grpc_timeout_header_ignored_without_grpc_timeout_header_max(start_proxy, slow_h2):
    # Envoy: without grpc_timeout_header_max the header is the client's business.
    p = _grpc_proxy(start_proxy, slow_h2)
    r, _ = _grpc_call(p, "/sleep/0.6", "200m")
    assert r.status == 200 and r.header(b"grpc-status") is None
    assert p.stats()["downstream_rq_max_duration_reached"] == 0


def test_grpc_timeout_header_honoured_deadline_exceeded(start_proxy, slow_h2):
    p = _grpc_proxy(start_proxy, slow_h2,
                    max_stream_duration={"grpc_timeout_header_max": 0})
    r, took = _grpc_call(p, "/sleep/2", "300m")
    assert took >= 0.3
    # trailers-only: HTTP 200, grpc-status 4 (DEADLINE_EXCEEDED), no body
    assert r.status == 200 and r.header(b"grpc-status") == b"4"
    assert r.header(b"content-type") == b"application/grpc" and r.body == b""
    assert p.stats()["downstream_rq_max_duration_reached"] == 1


def test_grpc_timeout_header_capped_by_max(start_proxy, slow_h2):
    p = _grpc_proxy(start_proxy, slow_h2,
                    max_stream_duration={"grpc_timeout_header_max": "300ms"})
    r, took = _grpc_call(p, "/sleep/2", "10S")
    assert took >= 0.3
    assert r.header(b"grpc-status") == b"4"


def test_grpc_timeout_header_offset(start_proxy, slow_h2):
    # 800ms less a 500ms offset: a 0.6 s call that the header alone allows
    # times out after 0.3 s.
    p = _grpc_proxy(start_proxy, slow_h2,
                    max_stream_duration={"grpc_timeout_header_max": 0,
                                         "grpc_timeout_header_offset": "500ms"})
    r, took = _grpc_call(p, "/sleep/0.6", "800m")
    assert took >= 0.3
    assert r.header(b"grpc-status") == b"4"


def test_grpcio_client_gets_deadline_exceeded_from_the_route_timeout(start_proxy):
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    def sleepy(req, ctx):
        time.sleep(float(req.decode() or 0))
        return b"ok"

    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.S", {"M": grpc.unary_unary_rpc_method_handler(sleepy)}),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        p = start_proxy(http_config(
            clusters=[cluster("g", ("127.0.0.1", port), protocol="http2")],
            routes=[{"match": {"prefix": "/"}, "cluster": "g", "timeout": "300ms"}]))
        host, pport = addr(p)
        with grpc.insecure_channel(f"{host}:{pport}") as ch:
            call = ch.unary_unary("/t.S/M")
            assert call(b"0", timeout=5) == b"ok"
            with pytest.raises(grpc.RpcError) as ei:
                call(b"2", timeout=5)        # the client's deadline is later than the route's
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert p.cluster_stats("g")["upstream_rq_timeout"] == 1
    finally:
        srv.stop(0)


# ------------------------------------------------------------ config

BASE = """
listeners:
- name: web
  port: 8080
  virtual_hosts:
  - name: a
    domains: ["*"]
    routes:
    - match: {prefix: /}
      cluster: c
ROUTE
clusters:
- name: c
  endpoints: [{address: 127.0.0.1, port: 1}]
"""


def _cfg(route_extra: str) -> str:
    return BASE.replace("ROUTE", route_extra)


@pytest.mark.parametrize("extra, key, reason", [
    ("      idle_timeout: soon", "idle_timeout", "invalid duration"),
    ("      max_stream_duration: {max_duration: 1s}", "max_stream_duration.max_duration",
     "did you mean 'max_stream_duration'"),
    ("      max_stream_duration: {grpc_timeout_header_max: -1s}",
     "max_stream_duration.grpc_timeout_header_max", ""),
])
def test_timeout_keys_are_validated(extra, key, reason):
    with pytest.raises(ConfigError) as ei:
        parse_config(_cfg(extra), source="t.yaml")
    text = str(ei.value)
    assert key in text and "t.yaml" in text and reason in text


def test_timeouts_not_allowed_on_direct_response():
    cfg = _cfg("    - match: {prefix: /d}\n      direct_response: {status: 200}\n"
               "      idle_timeout: 1s")
    with pytest.raises(ConfigError) as ei:
        parse_config(cfg, source="t.yaml")
    assert "not allowed with direct_response" in str(ei.value)


def test_timeout_config_round_trips_through_dump():
    cfg = parse_config(_cfg("      idle_timeout: 2s\n      max_stream_duration: "
                            "{max_stream_duration: 5s, grpc_timeout_header_max: 1s, "
                            "grpc_timeout_header_offset: 50ms}").replace(
        "  port: 8080", "  port: 8080\n  max_stream_duration: 30s"))
    r = cfg.listeners[0].virtual_hosts[0].routes[0]
    assert r.idle_timeout == 2.0
    assert r.max_stream_duration.grpc_timeout_header_offset == 0.05
    assert cfg.listeners[0].max_stream_duration == 30.0
    assert parse_config(config_to_dict(cfg)) == cfg
