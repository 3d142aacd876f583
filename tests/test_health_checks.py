"""Active health checks (control/health.py) and the panic threshold, live:
real origins (support/origin.py: /healthz answers `Origin.health_status`), a
real TCP echo server, a real grpcio server with grpcio-health-checking's
servicer, the proxy in a thread and `fastmesh run --workers 2` as a child
process. Every wait polls with a deadline."""
from __future__ import annotations

import asyncio
import http.client
import os
import signal
import textwrap
import time
from concurrent import futures

import pytest

from support.harness import http_config
from support.meshproc import Proc, fastmesh_argv
from support.origin import closed_port

from fastmesh.control.config import ConfigError, parse_config
from fastmesh.control.health import HealthChecker, _Target

pytestmark = pytest.mark.timeout(60)

INTERVAL = 0.1


def hc(kind="http", interval=INTERVAL, unhealthy=1, healthy=1, timeout=1.0, **spec):
    body = {"http": {"http_health_check": {"path": "/healthz"} | spec},
            "tcp": {"tcp_health_check": spec},
            "grpc": {"grpc_health_check": spec}}[kind]
    return {"timeout": timeout, "interval": interval, "unhealthy_threshold": unhealthy,
            "healthy_threshold": healthy, **body}


def hc_cluster_opts(check=None, panic=None):
    opts = {"health_checks": [check or hc()]}
    if panic is not None:
        opts["common_lb_config"] = {"healthy_panic_threshold": {"value": panic}}
    return opts


def healthy(p, cluster="origin"):
    return p.cluster_stats(cluster).get("health_check.healthy")


def served(c, n=12):
    out = []
    for _ in range(n):
        r = c.request("GET", "/")
        out.append((r.status, r.header("x-origin")))
    return out


def healthz_count(o):
    return sum(1 for r in o.received() if r.path == "/healthz")


# ------------------------------------------------------------------ config

def test_config_health_checks_and_panic_threshold_round_trip():
    from fastmesh.control.config import config_to_dict
    cfg = http_config(("127.0.0.1", 1), cluster_opts={
        "health_checks": [{**hc(interval="2s", host="svc",
                                expected_statuses=[{"start": 200, "end": 300}],
                                request_headers_to_add=[{"header": {"key": "x-hc",
                                                                    "value": "1"}}]),
                           "interval_jitter": "100ms"}],
        "common_lb_config": {"healthy_panic_threshold": {"value": 25}}})
    c = parse_config(cfg)
    cl = c.cluster("origin")
    assert cl.healthy_panic_threshold == 25.0
    h = cl.health_checks[0]
    assert (h.interval, h.interval_jitter, h.no_traffic_interval) == (2.0, 0.1, 60.0)
    assert h.http.expected_statuses == ((200, 300),) and h.http.host == "svc"
    assert parse_config(config_to_dict(c)) == c
    # Envoy's defaults: 200 only, panic at 50 %.
    d = parse_config(http_config(("127.0.0.1", 1), cluster_opts={"health_checks": [hc()]}))
    assert d.cluster("origin").health_checks[0].http.expected_statuses == ((200, 201),)
    assert d.cluster("origin").healthy_panic_threshold == 50.0


@pytest.mark.parametrize("opts, where, reason", [
    ({"health_checks": [{"interval": 1, "unhealthy_threshold": 1, "healthy_threshold": 1,
                         "http_health_check": {"path": "/h"}}]},
     "health_checks[0].timeout", "missing required key"),
    ({"health_checks": [hc(expected_statuses=[{"start": 300, "end": 200}])]},
     "expected_statuses[0].end", "end 200 must be greater than start 300"),
    ({"health_checks": [hc("tcp", send={"text": "zz"})]}, "send.text", "not hex"),
    ({"health_checks": [{**hc(), "reuse_connection": True}]}, "reuse_connection",
     "not supported yet"),
    ({"health_checks": [hc(), hc()]}, "health_checks[1]", "only one health check"),
    ({"common_lb_config": {"healthy_panic_threshold": {"value": 101}}},
     "healthy_panic_threshold.value", "out of range"),
])
def test_config_errors_name_line_key_and_reason(opts, where, reason):
    import yaml
    text = yaml.safe_dump(http_config(("127.0.0.1", 1), cluster_opts=opts), sort_keys=False)
    with pytest.raises(ConfigError) as ei:
        parse_config(text, source="mesh.yaml")
    msg = str(ei.value)
    assert msg.startswith("mesh.yaml:") and msg.split(":")[1].strip().isdigit(), msg
    assert where in msg and reason in msg, msg


# ------------------------------------------------------------------ thresholds (checker alone)

def _run_checks(cluster_cfg, host, port, verdicts_then):
    """Drive one target's checks one by one against a real endpoint; `steps`
    is a list of callables run before each check; returns the changes."""
    changes = []

    async def go():
        checker = HealthChecker(changes.extend)
        t = _Target(cluster_cfg, host, port)
        out = []
        for before in verdicts_then:
            before()
            await checker._check_once(t)
            out.append(t.healthy)
        return out, checker

    return asyncio.run(go()), changes


def test_thresholds_first_check_decides_then_counts(make_origin):
    o = make_origin("a")
    cfg = parse_config(http_config(o, cluster_opts=hc_cluster_opts(
        hc(unhealthy=2, healthy=3)))).cluster("origin")
    host, port = o.address
    ok = lambda: setattr(o, "health_status", 200)        # noqa: E731
    bad = lambda: setattr(o, "health_status", 503)       # noqa: E731
    # Envoy: one success at startup; a status outside expected_statuses
    # fails at once; back to healthy takes healthy_threshold successes.
    (states, checker), changes = _run_checks(cfg, host, port, [ok, bad, ok, ok, ok])
    assert states == [True, False, False, False, True]
    assert changes == [("origin", host, port, True), ("origin", host, port, False),
                       ("origin", host, port, True)]
    st = checker.stats["origin"]
    assert (st["health_check.attempt"], st["health_check.success"],
            st["health_check.failure"], st["health_check.network_failure"]) == (5, 4, 1, 0)


def test_thresholds_network_failures_need_unhealthy_threshold(make_origin):
    o = make_origin("a")
    cfg = parse_config(http_config(o, cluster_opts=hc_cluster_opts(
        hc(unhealthy=3, healthy=1, timeout=0.5)))).cluster("origin")
    host, port = o.address
    nothing = lambda: None                                # noqa: E731
    stop = lambda: o.stop()                               # noqa: E731
    (states, checker), _ = _run_checks(cfg, host, port, [nothing, stop, nothing, nothing])
    assert states == [True, True, True, False]
    st = checker.stats["origin"]
    assert st["health_check.network_failure"] == 3 and st["health_check.failure"] == 3


def test_tcp_check_send_and_expect(tcp_echo):
    host, port = tcp_echo.address
    good = parse_config(http_config((host, port), cluster_opts=hc_cluster_opts(
        hc("tcp", send={"text": "70696e67"}, receive=[{"text": "70"}, {"text": "6e67"}])))
    ).cluster("origin")
    (states, _), _ = _run_checks(good, host, port, [lambda: None])
    assert states == [True]
    # The echo never sends "pong": the check times out (a network failure).
    bad = parse_config(http_config((host, port), cluster_opts=hc_cluster_opts(
        hc("tcp", timeout=0.3, send={"text": "70696e67"}, receive=[{"text": "706f6e67"}])))
    ).cluster("origin")
    (states, checker), _ = _run_checks(bad, host, port, [lambda: None])
    assert states == [False] and checker.stats["origin"]["health_check.network_failure"] == 1
    # Connect only, to a port nothing listens on.
    dead = closed_port()
    conn = parse_config(http_config(("127.0.0.1", dead), cluster_opts=hc_cluster_opts(
        hc("tcp")))).cluster("origin")
    (states, _), _ = _run_checks(conn, "127.0.0.1", dead, [lambda: None])
    assert states == [False]


def test_http_check_over_h2c_when_the_cluster_speaks_http2():
    from support.h2util import H2Origin
    with H2Origin("h2") as o:
        host, port = o.address

        def cluster(path):
            return parse_config(http_config((host, port), cluster_opts={
                "protocol": "http2", **hc_cluster_opts(hc(path=path, timeout=2))})
            ).cluster("origin")

        (states, checker), _ = _run_checks(cluster("/status/200"), host, port, [lambda: None])
        assert states == [True] and checker.stats["origin"]["health_check.success"] == 1
        (states, checker), _ = _run_checks(cluster("/status/503"), host, port, [lambda: None])
        assert states == [False]
        assert checker.stats["origin"]["health_check.network_failure"] == 0   # a verdict
        reqs = o.received()
        assert [r.header(b":path") for r in reqs] == [b"/status/200", b"/status/503"]
        assert reqs[0].header(b":authority") == b"origin"
        assert reqs[0].header(b"user-agent") == b"Envoy/HC"


@pytest.fixture
def grpc_health_server():
    grpc = pytest.importorskip("grpc")
    health = pytest.importorskip("grpc_health.v1.health")
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("svc", health_pb2.HealthCheckResponse.SERVING)
    yield servicer, port, health_pb2.HealthCheckResponse
    server.stop(0)


def test_grpc_check_against_grpcio_health_servicer(grpc_health_server, start_proxy):
    servicer, port, resp = grpc_health_server
    p = start_proxy(http_config(("127.0.0.1", port), cluster_opts={
        "protocol": "http2", **hc_cluster_opts(hc("grpc", service_name="svc"))}))
    assert p.wait_for(lambda s: s["clusters"]["origin"].get("health_check.healthy") == 1,
                      timeout=10)["clusters"]["origin"]["health_check.healthy"] == 1
    servicer.set("svc", resp.NOT_SERVING)     # an ACTIVE failure: unhealthy at once
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 0,
                      timeout=10)["clusters"]["origin"]["health_check.healthy"] == 0
    servicer.set("svc", resp.SERVING)
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 1,
                      timeout=10)["clusters"]["origin"]["health_check.healthy"] == 1
    # An unknown service is grpc NOT_FOUND: a failure, not a pass.
    p.reload(http_config(("127.0.0.1", port), cluster_opts={
        "protocol": "http2", **hc_cluster_opts(hc("grpc", service_name="nope"))}))
    st = p.wait_for(lambda s: s["clusters"]["origin"]["health_check.failure"] >= 1, timeout=10)
    assert st["clusters"]["origin"]["health_check.failure"] >= 1
    assert st["clusters"]["origin"]["health_check.healthy"] == 1   # state kept, then...
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 0,
                      timeout=10)["clusters"]["origin"]["health_check.healthy"] == 0


# ------------------------------------------------------------------ through the proxy

def test_endpoint_leaves_and_rejoins_the_balancer(start_proxy, make_origin, clients):
    a, b = make_origin("a"), make_origin("b")
    p = start_proxy(http_config(a, b, cluster_opts=hc_cluster_opts()))
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 2)[
        "clusters"]["origin"]["health_check.healthy"] == 2
    c = clients(p.address())
    assert {o for _, o in served(c)} == {b"a", b"b"}
    b.health_status = 503
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 1)[
        "clusters"]["origin"]["health_check.healthy"] == 1
    b.reset_records()
    assert served(c) == [(200, b"a")] * 12           # 1 of 2 healthy: no panic at 50 %
    assert not [r for r in b.received() if r.path == "/"]
    b.health_status = 200
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 2)[
        "clusters"]["origin"]["health_check.healthy"] == 2
    assert {o for _, o in served(c)} == {b"a", b"b"}
    st = p.cluster_stats()
    assert st["health_check.attempt"] >= st["health_check.success"] + st["health_check.failure"]
    assert st["health_check.failure"] >= 1 and st["lb_healthy_panic"] == 0


def test_checks_keep_their_interval(start_proxy, make_origin):
    o = make_origin("a")
    start_proxy(http_config(o, cluster_opts=hc_cluster_opts(hc(interval=0.2))))
    deadline = time.monotonic() + 10
    while healthz_count(o) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0, n0 = time.monotonic(), healthz_count(o)
    while healthz_count(o) < n0 + 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    n, elapsed = healthz_count(o) - n0, time.monotonic() - t0
    assert n >= 5
    assert elapsed >= 0.2 * (n - 1) * 0.9, (n, elapsed)   # not faster than the interval
    req = [r for r in o.received() if r.path == "/healthz"][0]
    assert req.header("host") == b"origin" and req.header("user-agent") == b"Envoy/HC"


def test_panic_threshold_routes_to_all_below_it(start_proxy, make_origin, clients):
    a, b, d = make_origin("a"), make_origin("b"), make_origin("d")
    p = start_proxy(http_config(a, b, d, cluster_opts=hc_cluster_opts()))
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 3)[
        "clusters"]["origin"]["health_check.healthy"] == 3
    a.health_status = b.health_status = 503
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 1)[
        "clusters"]["origin"]["health_check.healthy"] == 1
    c = clients(p.address())
    # 1 of 3 healthy < 50 %: Envoy's panic, every endpoint takes traffic.
    assert {o for _, o in served(c, 18)} == {b"a", b"b", b"d"}
    assert p.cluster_stats()["lb_healthy_panic"] > 0


def test_all_down_with_panic_off_answers_503_at_once_and_recovers(start_proxy, make_origin,
                                                                  clients):
    interval = 0.3
    a, b = make_origin("a"), make_origin("b")
    p = start_proxy(http_config(a, b, cluster_opts=hc_cluster_opts(hc(interval=interval),
                                                                    panic=0)))
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 2)[
        "clusters"]["origin"]["health_check.healthy"] == 2
    a.health_status = b.health_status = 503
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 0)[
        "clusters"]["origin"]["health_check.healthy"] == 0
    a.reset_records()
    b.reset_records()
    c = clients(p.address())
    t0 = time.monotonic()
    r = c.request("GET", "/")
    took = time.monotonic() - t0
    assert r.status == 503 and r.body == b"no healthy upstream\n"
    assert took < 0.5                                    # sanity bound, not a speed claim
    assert not [x for x in a.received() + b.received() if x.path == "/"]
    assert p.cluster_stats()["upstream_cx_none_healthy"] >= 1
    # Recovery: the first check after the origins come back lets traffic in.
    a.health_status = 200
    t0 = time.monotonic()
    deadline = t0 + 5
    while c.request("GET", "/").status != 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    back = time.monotonic() - t0
    assert back < interval + 0.5, back       # one interval (+ slack for a loaded machine)


def test_all_endpoints_closed_ports_fail_fast_without_connecting(start_proxy, clients):
    cfg = http_config(("127.0.0.1", closed_port()), ("127.0.0.1", closed_port()),
                      cluster_opts=hc_cluster_opts(hc("tcp"), panic=0))
    p = start_proxy(cfg)
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.network_failure"] >= 2)[
        "clusters"]["origin"]["health_check.network_failure"] >= 2
    c = clients(p.address())
    for _ in range(5):
        assert c.request("GET", "/").status == 503
    st = p.cluster_stats()
    assert st["upstream_cx_none_healthy"] == 5 and st["upstream_cx_total"] == 0


def test_reload_keeps_state_checks_new_forgets_removed(start_proxy, make_origin, clients):
    a, b = make_origin("a"), make_origin("b")
    opts = hc_cluster_opts(hc(interval=0.2), panic=0)
    p = start_proxy(http_config(a, cluster_opts=opts))
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 1)[
        "clusters"]["origin"]["health_check.healthy"] == 1
    b.health_status = 503
    p.reload(http_config(a, b, cluster_opts=opts))
    c = clients(p.address())
    # a stays healthy across the reload (no 503 window); b starts unhealthy.
    assert served(c) == [(200, b"a")] * 12
    assert p.cluster_stats()["health_check.healthy"] == 1
    assert p.wait_for(lambda s: healthz_count(b) >= 2, timeout=5) and healthz_count(b) >= 2
    assert served(c) == [(200, b"a")] * 12
    b.health_status = 200
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 2)[
        "clusters"]["origin"]["health_check.healthy"] == 2
    assert {o for _, o in served(c)} == {b"a", b"b"}
    # a removed: its checks stop.
    p.reload(http_config(b, cluster_opts=opts))
    assert p.wait_for(lambda s: s["clusters"]["origin"]["health_check.healthy"] == 1)[
        "clusters"]["origin"]["health_check.healthy"] == 1
    n, nb = healthz_count(a), healthz_count(b)
    assert p.wait_for(lambda s: healthz_count(b) >= nb + 3, timeout=5) and healthz_count(b) >= nb + 3
    assert healthz_count(a) <= n + 1     # at most one check that was already running
    # Health checks removed from the cluster: every endpoint is healthy again.
    b.health_status = 503
    p.reload(http_config(b, cluster_opts={"common_lb_config":
                                          {"healthy_panic_threshold": {"value": 0}}}))
    assert served(c, 3) == [(200, b"b")] * 3


# ------------------------------------------------------------------ multi-worker

class _Run(Proc):
    """`fastmesh run --workers 2` with one checked cluster (panic off)."""

    name = "fastmesh"
    stop_timeout = 15.0

    def __init__(self, tmp, origin, interval, single=False):
        super().__init__(tmp)
        cfg = tmp / "fastmesh.yaml"
        host, oport = origin.address
        cfg.write_text(textwrap.dedent(f"""\
            drain_timeout: 2s
            admin: {{address: 127.0.0.1, port: {self.admin}}}
            listeners:
              - name: web
                address: 127.0.0.1
                port: {self.port}
                virtual_hosts:
                  - name: all
                    domains: ["*"]
                    routes: [{{match: {{prefix: /}}, cluster: origin}}]
            clusters:
              - name: origin
                endpoints: [{{address: {host}, port: {oport}}}]
                common_lb_config: {{healthy_panic_threshold: {{value: 0}}}}
                health_checks:
                  - timeout: 1s
                    interval: {interval}s
                    unhealthy_threshold: 1
                    healthy_threshold: 1
                    http_health_check: {{path: /healthz}}
            """))
        # not waiting for /ready here: the test checks that it comes
        self.spawn(fastmesh_argv(cfg, "--workers", "2",
                                 *(["--single-process"] if single else [])), ready=False)

    def statuses(self, n=40):
        # New connections: SO_REUSEPORT spreads them over both workers.
        out = []
        for _ in range(n):
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                out.append(r.status)
            finally:
                c.close()
        return out


@pytest.mark.parametrize("mode", ["workers", "single-process"])
def test_checks_once_per_process_and_every_worker_follows(tmp_path, make_origin, mode):
    interval = 0.2
    o = make_origin("a")
    run = _Run(tmp_path, o, interval, single=mode == "single-process")
    try:
        assert run.wait(lambda: run.admin_get("/ready")[0] == 200), run.output()
        assert run.wait(lambda: run.stats()["clusters"]["origin"]["health_check.healthy"] == 1)
        # Once per process: one check per interval at the origin, not one per worker.
        n0, t0 = healthz_count(o), time.monotonic()
        assert run.wait(lambda: healthz_count(o) >= n0 + 8)
        n, elapsed = healthz_count(o) - n0, time.monotonic() - t0
        per_interval = n * interval / elapsed
        assert per_interval < 1.5, (n, elapsed)
        assert run.stats()["clusters"]["origin"]["health_check.attempt"] >= n
        # Both workers route while healthy...
        assert run.statuses() == [200] * 40
        # ...and both learn the change: every connection gets the fast 503.
        o.health_status = 503
        assert run.wait(lambda: run.stats()["clusters"]["origin"]["health_check.healthy"] == 0)
        assert run.wait(lambda: run.statuses(10) == [503] * 10, timeout=5)
        assert run.statuses() == [503] * 40
        o.health_status = 200
        assert run.wait(lambda: run.statuses(10) == [200] * 10, timeout=5)
        assert run.statuses() == [200] * 40
        if mode == "single-process":
            return
        # A restarted worker gets the current table (else: unhealthy, 503).
        pids = run.stats()["worker_pids"]
        os.kill(pids[0], signal.SIGKILL)
        assert run.wait(lambda: run.stats()["worker_restarts_total"] == 1
                        and run.stats()["workers_ready"] == 2)
        assert run.statuses() == [200] * 40
    finally:
        run.stop()
