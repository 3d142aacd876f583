"""Outlier detection (issue 9): a cluster's `outlier_detection`, Envoy's
names, defaults and semantics, through a live proxy with real origins.

Each ejection is seen where it matters: the ejected origin's own record of
the requests it served (zero while ejected), the cluster's
outlier_detection.* counters and the `fastmesh.outlier` log lines. Times
are short (interval 0.05-0.2 s, base_ejection_time 0.3-1 s); every wait
polls with a deadline, and only lower bounds of ejection times are
asserted (an endpoint never returns early; when it returns late the test
only waits longer).
"""
from __future__ import annotations

import logging
import socket
import time

import pytest

from fastmesh.control.config import ConfigError, parse_config
from fastmesh.control.dump import config_to_dict
from fastmesh.control.schema import OutlierDetectionConfig
from support.h2util import H2Client, H2Origin
from support.harness import cluster, http_config, tcp_listener
from support.origin import closed_port

pytestmark = pytest.mark.timeout(60)

OD = "outlier_detection."


def od_config(*origins, od=None, clusters=None, **kw) -> dict:
    """Route "/" to cluster "origin" (round robin over `origins`) with
    outlier_detection `od` (None: none)."""
    opts = {} if od is None else {"outlier_detection": od}
    return http_config(*origins, cluster_opts=opts, clusters=clusters, **kw)


def served(origin) -> int:
    """Requests an origin (HTTP/1.1 Origin or H2Origin) has served."""
    return len(origin.received()) if hasattr(origin, "received") else len(origin.requests)


def wait_until(pred, timeout=10.0, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def detector(p, name="origin"):
    return p._in_loop(lambda: p.proxy._dataplane.worker.cluster(name).outlier)


def host_state(p, addr, name="origin") -> dict:
    """The OutlierHost fields of endpoint `addr`, read in the proxy's loop."""
    def read(worker):
        h = worker.cluster(name).outlier.host(*addr)
        return None if h is None else {"ejected": h.ejected, "backoff": h.backoff,
                                       "num_ejections": h.num_ejections}
    return p._in_loop(lambda: read(p.proxy._dataplane.worker))


class H1:
    """A keep-alive HTTP/1.1 client (a new connection after one the proxy
    closes, as after a 504); get() -> status."""

    def __init__(self, clients, p):
        self.clients, self.addr = clients, p.address("web")
        self.c = clients(self.addr)

    def get(self, path="/x") -> int:
        r = self.c.request("GET", path)
        if r.connection_close:
            self.c = self.clients(self.addr)
        return r.status


class H2:
    """One HTTP/2 client connection; get() -> status."""

    def __init__(self, clients, p):
        self.c = H2Client(p.address("web"))
        clients.all.append(self.c)

    def get(self, path="/x") -> int:
        return self.c.get(path).status


@pytest.fixture(params=["h1", "h2"])
def client_kind(request):
    return {"h1": H1, "h2": H2}[request.param]


def bad_and_good(make_origin, status=503, n_good=1):
    bad = make_origin("bad")
    bad.fixed_status = status
    return bad, [make_origin(f"good{i}") for i in range(n_good)]


# ------------------------------------------------------------------ config


def test_defaults_are_envoys():
    base = od_config(("127.0.0.1", 1), od={})
    od = parse_config(base).cluster("origin").outlier_detection
    assert od == OutlierDetectionConfig()
    # Envoy's config.cluster.v3.OutlierDetection defaults, field by field.
    assert (od.consecutive_5xx, od.consecutive_gateway_failure,
            od.consecutive_local_origin_failure) == (5, 5, 5)
    assert od.split_external_local_origin_errors is False
    assert (od.interval, od.base_ejection_time, od.max_ejection_time,
            od.max_ejection_time_jitter) == (10.0, 30.0, 300.0, 0.0)
    assert od.max_ejection_percent == 10
    assert (od.enforcing_consecutive_5xx, od.enforcing_consecutive_gateway_failure,
            od.enforcing_consecutive_local_origin_failure, od.enforcing_success_rate,
            od.enforcing_local_origin_success_rate, od.enforcing_failure_percentage,
            od.enforcing_failure_percentage_local_origin) == (100, 0, 100, 100, 100, 0, 0)
    assert (od.success_rate_minimum_hosts, od.success_rate_request_volume,
            od.success_rate_stdev_factor) == (5, 100, 1900)
    assert (od.failure_percentage_threshold, od.failure_percentage_minimum_hosts,
            od.failure_percentage_request_volume) == (85, 5, 50)
    assert od.always_eject_one_host is False
    # Off unless configured.
    assert parse_config(od_config(("127.0.0.1", 1))).cluster("origin").outlier_detection is None


YAML = """\
listeners:
  - name: web
    port: 10000
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {prefix: /}
            cluster: backend
clusters:
  - name: backend
    endpoints:
      - {address: 127.0.0.1, port: 8081}
    outlier_detection:
      interval: 1s
"""


@pytest.mark.parametrize("line, reason", [
    ("consecutive_5xx: -1", "out of range"),
    ("enforcing_success_rate: 101", "out of range"),
    ("max_ejection_percent: 150", "out of range"),
    ("base_ejection_time: 0s", "greater than zero"),
    ("max_ejection_time: 10s", "shorter than base_ejection_time"),
    ("max_ejection_time_jitter: soon", "duration"),
    ("split_external_local_origin_errors: 1", "true or false"),
    ("consecutive_5x: 3", "did you mean 'consecutive_5xx'"),
    ("successful_active_health_check_uneject_host: true", "not supported yet"),
])
def test_bad_values_name_file_line_and_key(line, reason):
    text = YAML + "      base_ejection_time: 30s\n" * ("max_ejection_time:" in line) \
        + f"      {line}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="od.yaml")
    err = info.value
    key = line.split(":")[0]
    assert err.file == "od.yaml", str(err)
    assert err.path == f"clusters[0].outlier_detection.{key}", str(err)
    assert err.line == text.splitlines().index(f"      {line}") + 1, str(err)
    assert reason in str(err), str(err)


def test_max_ejection_time_follows_a_longer_base_and_dump_round_trips():
    cfg = parse_config(YAML + "      base_ejection_time: 400s\n")
    od = cfg.cluster("backend").outlier_detection
    # Envoy: without max_ejection_time, the larger of 300 s and the base.
    assert (od.base_ejection_time, od.max_ejection_time) == (400.0, 400.0)
    assert parse_config(config_to_dict(cfg)) == cfg


# ------------------------------------------------------------------ consecutive errors


def test_consecutive_5xx_ejects_within_the_count(start_proxy, make_origin, clients, client_kind,
                                                 caplog):
    caplog.set_level(logging.INFO, logger="fastmesh.outlier")
    bad, (good,) = bad_and_good(make_origin)
    p = start_proxy(od_config(bad, good, od={"consecutive_5xx": 3, "interval": "10s",
                                              "max_ejection_percent": 50}))
    c = client_kind(clients, p)
    statuses = [c.get() for _ in range(6)]
    # Round robin: bad gets every other request until its third 503.
    assert statuses.count(503) == 3 and served(bad) == 3
    for _ in range(40):
        assert c.get() == 200
    assert served(bad) == 3, "a request reached the ejected endpoint"
    st = p.cluster_stats()
    assert st[OD + "ejections_enforced_consecutive_5xx"] == 1
    assert st[OD + "ejections_detected_consecutive_5xx"] == 1
    assert st[OD + "ejections_enforced_total"] == 1 and st[OD + "ejections_total"] == 1
    assert st[OD + "ejections_active"] == 1
    assert st[OD + "ejections_detected_consecutive_gateway_failure"] == 0   # 3 < 5
    addr = f"{bad.address[0]}:{bad.address[1]}"
    lines = [r.getMessage() for r in caplog.records if r.name == "fastmesh.outlier"]
    assert any("cluster origin" in m and addr in m and "ejected" in m
               and "consecutive_5xx" in m for m in lines), lines


def test_h2_upstream_5xx_ejects(start_proxy, make_origin, clients):
    # The HTTP/2 upstream path reports its streams' statuses the same way.
    bad, good = H2Origin("h2bad"), H2Origin("h2good")
    bad.fixed_status = 503
    try:
        cfg = od_config(bad.address, good.address,
                        od={"consecutive_5xx": 2, "max_ejection_percent": 50})
        cfg["clusters"][0]["protocol"] = "http2"
        p = start_proxy(cfg)
        c = H1(clients, p)
        for _ in range(30):
            c.get()
        assert len(bad.requests) == 2
        assert p.cluster_stats()[OD + "ejections_enforced_consecutive_5xx"] == 1
    finally:
        bad.stop()
        good.stop()


@pytest.mark.parametrize("enforcing", [100, 0])
def test_consecutive_gateway_failure(start_proxy, make_origin, clients, enforcing):
    bad, (good,) = bad_and_good(make_origin, status=502)
    p = start_proxy(od_config(bad, good, od={
        "consecutive_5xx": 1000, "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": enforcing, "max_ejection_percent": 50}))
    c = H1(clients, p)
    for _ in range(40):
        c.get()
    st = p.cluster_stats()
    # Detected every third consecutive 502; ejected only when enforced.
    if enforcing:
        assert served(bad) == 3
        assert st[OD + "ejections_enforced_consecutive_gateway_failure"] == 1
    else:
        assert served(bad) == 20
        assert st[OD + "ejections_detected_consecutive_gateway_failure"] == 6
        assert st[OD + "ejections_enforced_consecutive_gateway_failure"] == 0
        assert st[OD + "ejections_active"] == 0


def test_500_is_5xx_but_not_a_gateway_failure(start_proxy, make_origin, clients):
    bad, (good,) = bad_and_good(make_origin, status=500)
    p = start_proxy(od_config(bad, good, od={
        "consecutive_5xx": 4, "consecutive_gateway_failure": 2,
        "enforcing_consecutive_gateway_failure": 100, "max_ejection_percent": 50}))
    c = H1(clients, p)
    for _ in range(30):
        c.get()
    assert served(bad) == 4
    st = p.cluster_stats()
    assert st[OD + "ejections_enforced_consecutive_5xx"] == 1
    assert st[OD + "ejections_detected_consecutive_gateway_failure"] == 0


def test_a_success_resets_the_consecutive_count(start_proxy, make_origin, clients):
    # The bad origin alternates by path: /fail is 503 via /status, the rest 200.
    o = make_origin("flaky")
    p = start_proxy(od_config(o, od={"consecutive_5xx": 3, "max_ejection_percent": 100}))
    c = H1(clients, p)
    for _ in range(10):
        assert c.get("/status/503") == 503
        assert c.get("/status/503") == 503
        assert c.get("/ok") == 200
    assert p.cluster_stats()[OD + "ejections_detected_consecutive_5xx"] == 0
    for _ in range(3):
        assert c.get("/status/503") == 503
    assert p.cluster_stats()[OD + "ejections_enforced_consecutive_5xx"] == 1


# ------------------------------------------------------------------ local-origin errors


def test_connect_failures_count_as_5xx_when_not_split(start_proxy, make_origin, clients,
                                                      client_kind):
    good = make_origin("good")
    dead = ("127.0.0.1", closed_port())
    p = start_proxy(od_config(dead, good, od={"consecutive_5xx": 3, "max_ejection_percent": 50}))
    c = client_kind(clients, p)
    statuses = [c.get() for _ in range(46)]
    assert len([s for s in statuses if s != 200]) == 3, statuses
    assert statuses[6:] == [200] * 40
    st = p.cluster_stats()
    assert st[OD + "ejections_enforced_consecutive_5xx"] == 1
    assert st["upstream_cx_connect_fail"] == 3


def test_killed_origin_is_ejected(start_proxy, make_origin, clients):
    a, b = make_origin("a"), make_origin("b")
    p = start_proxy(od_config(a, b, od={"consecutive_5xx": 2, "max_ejection_percent": 50}))
    c = H1(clients, p)
    for _ in range(4):
        assert c.get() == 200
    b.stop()
    statuses = [c.get() for _ in range(30)]
    assert len([s for s in statuses if s != 200]) <= 2 + 1, statuses   # + a pooled one
    assert statuses[-20:] == [200] * 20
    assert p.cluster_stats()[OD + "ejections_active"] == 1


def test_split_local_origin_failures(start_proxy, make_origin, clients):
    good = make_origin("good")
    bad = make_origin("bad")
    bad.fixed_status = 503
    dead = ("127.0.0.1", closed_port())
    p = start_proxy(od_config(dead, bad, good, od={
        "split_external_local_origin_errors": True, "consecutive_local_origin_failure": 2,
        "consecutive_5xx": 1000, "consecutive_gateway_failure": 1000,
        "max_ejection_percent": 100}))
    c = H1(clients, p)
    for _ in range(30):
        c.get()
    st = p.cluster_stats()
    # The refused connects are local-origin failures: ejected after 2; the
    # 503s are external and do not count toward them.
    assert st[OD + "ejections_enforced_consecutive_local_origin_failure"] == 1
    assert st[OD + "ejections_detected_consecutive_5xx"] == 0
    assert st[OD + "ejections_active"] == 1
    assert host_state(p, bad.address)["ejected"] is False
    assert host_state(p, dead)["ejected"] is True


def test_timeouts_count_as_gateway_failures(start_proxy, make_origin, clients):
    # A socket that accepts (the kernel does) and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        good = make_origin("good")
        cfg = od_config(silent.getsockname(), good,
                        od={"consecutive_5xx": 2, "max_ejection_percent": 50})
        cfg["listeners"][0]["virtual_hosts"][0]["routes"][0]["timeout"] = "0.2s"
        p = start_proxy(cfg)
        c = H1(clients, p)
        statuses = [c.get() for _ in range(24)]
        assert statuses.count(504) == 2, statuses
        assert p.cluster_stats()[OD + "ejections_enforced_consecutive_5xx"] == 1
    finally:
        silent.close()


def test_tcp_proxy_connect_failures_eject(start_proxy, tcp_echo, clients):
    dead = ("127.0.0.1", closed_port())
    cfg = {"drain_timeout": 1, "listeners": [tcp_listener("raw", "echo")],
           "clusters": [cluster("echo", dead, tcp_echo.address, outlier_detection={
               "consecutive_5xx": 2, "max_ejection_percent": 50})]}
    p = start_proxy(cfg)
    ok = 0
    for _ in range(30):
        s = socket.create_connection(p.address("raw"), timeout=5)
        try:
            s.sendall(b"ping")
            data = s.recv(16)
        except OSError:
            data = b""
        finally:
            s.close()
        ok += data == b"ping"
    assert ok >= 30 - 2
    st = p.cluster_stats("echo")
    assert st[OD + "ejections_enforced_consecutive_5xx"] == 1
    assert st["upstream_cx_connect_fail"] == 2


# ------------------------------------------------------------------ ejection time


def test_no_request_while_ejected_then_back_after_base_ejection_time(start_proxy, make_origin,
                                                                   clients, caplog):
    caplog.set_level(logging.INFO, logger="fastmesh.outlier")
    bad, (good,) = bad_and_good(make_origin)
    p = start_proxy(od_config(bad, good, od={"consecutive_5xx": 2, "interval": "0.05s",
                                              "base_ejection_time": "0.6s",
                                              "max_ejection_percent": 50}))
    c = H1(clients, p)
    while p.cluster_stats()[OD + "ejections_active"] == 0:
        c.get()
    ejected_at = time.monotonic()
    assert served(bad) == 2
    bad.fixed_status = None      # healthy again; still ejected until its time is over
    while served(bad) == 2:
        assert c.get() == 200
        assert time.monotonic() - ejected_at < 10, "never returned"
    back_after = time.monotonic() - ejected_at
    assert back_after >= 0.6 - 0.05, f"returned after {back_after:.3f}s, before its ejection ended"
    st = p.cluster_stats()
    assert st[OD + "ejections_active"] == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "fastmesh.outlier"]
    assert any("returned to service" in m and "cluster origin" in m for m in lines), lines


def test_ejection_time_grows_with_repeated_ejections(start_proxy, make_origin, clients):
    bad, (good,) = bad_and_good(make_origin)
    # consecutive_5xx 1: back from its first ejection, the endpoint is ejected
    # again by its first request, well within an interval (a healthy
    # interval would take one off the backoff, as in Envoy).
    p = start_proxy(od_config(bad, good, od={"consecutive_5xx": 1, "interval": "0.2s",
                                              "base_ejection_time": "0.3s",
                                              "max_ejection_time": "10s",
                                              "max_ejection_percent": 50}))
    c = H1(clients, p)

    def until_served_again() -> float:
        t0, before = time.monotonic(), served(bad)
        while served(bad) == before:
            c.get()
            assert time.monotonic() - t0 < 10, "never returned"
        return time.monotonic() - t0

    while host_state(p, bad.address) is None or not host_state(p, bad.address)["ejected"]:
        c.get()
    first = until_served_again()
    # Its first request back failed: ejected again at once, for base * 2.
    assert host_state(p, bad.address) == {"ejected": True, "backoff": 2, "num_ejections": 2}
    second = until_served_again()
    assert first >= 0.3 - 0.05 and second >= 0.6 - 0.05, (first, second)
    assert host_state(p, bad.address)["backoff"] == 3
    assert p.cluster_stats()[OD + "ejections_enforced_consecutive_5xx"] == 3


# ------------------------------------------------------------------ limits


def test_max_ejection_percent_caps_ejections(start_proxy, make_origin, clients):
    bads = [make_origin(f"bad{i}") for i in range(2)]
    for b in bads:
        b.fixed_status = 503
    goods = [make_origin(f"good{i}") for i in range(2)]
    p = start_proxy(od_config(*bads, *goods, od={"consecutive_5xx": 2,
                                                  "max_ejection_percent": 25}))
    c = H1(clients, p)
    for _ in range(40):
        c.get()
    st = p.cluster_stats()
    # One of four is 25 %: the second bad endpoint is detected but stays.
    assert st[OD + "ejections_active"] == 1
    assert st[OD + "ejections_overflow"] >= 1
    assert sorted(served(b) for b in bads)[0] == 2 and sorted(served(b) for b in bads)[1] > 2


@pytest.mark.parametrize("always", [False, True])
def test_always_eject_one_host(start_proxy, make_origin, clients, always):
    bad, (good,) = bad_and_good(make_origin)
    # One of two is 50 % > the default 10 %: only always_eject_one_host ejects.
    p = start_proxy(od_config(bad, good, od={"consecutive_5xx": 2,
                                              "consecutive_gateway_failure": 1000,
                                              "always_eject_one_host": always}))
    c = H1(clients, p)
    for _ in range(20):
        c.get()
    st = p.cluster_stats()
    if always:
        assert st[OD + "ejections_active"] == 1 and served(bad) == 2
    else:
        assert st[OD + "ejections_active"] == 0 and served(bad) == 10
        assert st[OD + "ejections_overflow"] == 5


# ------------------------------------------------------------------ interval sweeps


def sweep_config(origins, **od):
    base = {"consecutive_5xx": 1000000, "consecutive_gateway_failure": 1000000,
            "interval": "0.2s", "max_ejection_percent": 50, "base_ejection_time": "30s"}
    return od_config(*origins, od=base | od)


def test_success_rate_ejects_the_outlier(start_proxy, make_origin, clients):
    bad, goods = bad_and_good(make_origin, n_good=5)
    p = start_proxy(sweep_config([bad, *goods], success_rate_request_volume=10,
                                 enforcing_failure_percentage=0))
    c = H1(clients, p)
    deadline = time.monotonic() + 15
    while p.cluster_stats()[OD + "ejections_enforced_success_rate"] == 0:
        for _ in range(30):
            c.get()
        assert time.monotonic() < deadline, "no success-rate ejection"
    before = served(bad)
    for _ in range(60):
        assert c.get() == 200
    assert served(bad) == before
    st = p.cluster_stats()
    assert st[OD + "ejections_detected_success_rate"] == 1
    assert st[OD + "ejections_detected_consecutive_5xx"] == 0


def test_success_rate_needs_minimum_hosts(start_proxy, make_origin, clients):
    bad, goods = bad_and_good(make_origin, n_good=3)    # 4 < success_rate_minimum_hosts 5
    p = start_proxy(sweep_config([bad, *goods], success_rate_request_volume=10,
                                 failure_percentage_request_volume=10,
                                 enforcing_failure_percentage=100))
    c = H1(clients, p)
    sweeps = lambda: p._in_loop(lambda: p.proxy._dataplane.worker.cluster("origin").outlier.sweeps)
    start = sweeps()
    while sweeps() < start + 4:
        for _ in range(30):
            c.get()
    st = p.cluster_stats()
    assert st[OD + "ejections_detected_success_rate"] == 0
    assert st[OD + "ejections_detected_failure_percentage"] == 0
    assert st[OD + "ejections_active"] == 0


def test_failure_percentage_ejects(start_proxy, make_origin, clients):
    bad, goods = bad_and_good(make_origin, n_good=4)
    p = start_proxy(sweep_config([bad, *goods], enforcing_success_rate=0,
                                 enforcing_failure_percentage=100,
                                 success_rate_request_volume=10,
                                 failure_percentage_request_volume=10))
    c = H2(clients, p)
    deadline = time.monotonic() + 15
    while p.cluster_stats()[OD + "ejections_enforced_failure_percentage"] == 0:
        for _ in range(30):
            c.get()
        assert time.monotonic() < deadline, "no failure-percentage ejection"
    before = served(bad)
    for _ in range(50):
        assert c.get() == 200
    assert served(bad) == before
    st = p.cluster_stats()
    assert st[OD + "ejections_enforced_success_rate"] == 0
    assert st[OD + "ejections_detected_success_rate"] >= 1     # detected, enforcing 0


# ------------------------------------------------------------------ live config


def test_reload_keeps_state_of_kept_endpoints(start_proxy, make_origin, clients):
    bad, (good,) = bad_and_good(make_origin)
    cfg = od_config(bad, good, od={"consecutive_5xx": 2, "base_ejection_time": "30s",
                                    "max_ejection_percent": 50})
    p = start_proxy(cfg)
    c = H1(clients, p)
    for _ in range(10):
        c.get()
    assert served(bad) == 2
    det = detector(p)
    third = make_origin("third")
    cfg2 = od_config(bad, good, third, od={"consecutive_5xx": 3, "base_ejection_time": "30s",
                                            "max_ejection_percent": 50})
    p.reload(cfg2)
    for _ in range(20):
        assert c.get() == 200
    assert served(bad) == 2, "the reload un-ejected a kept endpoint"
    assert detector(p) is det and det.conf.consecutive_5xx == 3
    assert p.cluster_stats()[OD + "ejections_active"] == 1
    # The endpoint leaves and comes back: its state went with it.
    p.reload(od_config(good, third, od={"consecutive_5xx": 3, "max_ejection_percent": 50}))
    assert p.cluster_stats()[OD + "ejections_active"] == 0
    bad.fixed_status = None
    p.reload(cfg2)
    wait_until(lambda: (c.get(), served(bad) > 2)[1], what="the re-added endpoint to serve")
    assert host_state(p, bad.address)["num_ejections"] == 0


def test_reload_without_outlier_detection_ends_ejections(start_proxy, make_origin, clients):
    bad, (good,) = bad_and_good(make_origin)
    p = start_proxy(od_config(bad, good, od={"consecutive_5xx": 2, "max_ejection_percent": 50}))
    c = H1(clients, p)
    for _ in range(10):
        c.get()
    assert served(bad) == 2
    p.reload(od_config(bad, good))
    assert detector(p) is None
    for _ in range(10):
        c.get()
    assert served(bad) == 7
    assert p.cluster_stats()[OD + "ejections_active"] == 0


def test_without_outlier_detection_nothing_is_ejected(start_proxy, make_origin, clients):
    bad, (good,) = bad_and_good(make_origin)
    p = start_proxy(od_config(bad, good))
    c = H1(clients, p)
    for _ in range(40):
        c.get()
    assert detector(p) is None
    assert served(bad) == 20
    assert p.cluster_stats()[OD + "ejections_total"] == 0
