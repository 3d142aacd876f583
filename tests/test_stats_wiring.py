"""The data plane counts in its stats registry (core_counters.pxi, docs/stats.md):
per listener and per cluster blocks with their labels, latency histograms
recorded at the end of each request (HTTP/1.1 and HTTP/2, both directions),
response classes, the summary dict that Proxy.stats() returns, and the slot
enums in step with the stat tables. The multi-worker sums, /stats and its
filter are tested through the real command in test_process.py.
"""
from __future__ import annotations

import re
import socket
import struct
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from fastmesh import _core
from fastmesh.admin.metrics import render_prometheus
from support.h2util import H2Client, H2Origin
from support.harness import cluster, http_config, tcp_listener

COUNTERS = Path(_core.__file__).parent / "core_counters.pxi"   # beside the build under test


def hist(snap: dict, prefix: str, name: str, **labels: str) -> dict:
    [h] = [h for h in snap["histograms"] if (h["prefix"], h["name"]) == (prefix, name)
           and dict(h["labels"]) == labels]
    return h


def test_slot_enums_follow_the_stat_tables():
    # The hot path writes st[DOWNSTREAM_RQ_TOTAL]; the registry names slot i
    # after LISTENER_STATS[i]. One out of step would count under another name.
    text = COUNTERS.read_text()
    for table, names in (("WORKER_STATS", _core.WORKER_NAMES),
                         ("LISTENER_STATS", _core.LISTENER_NAMES),
                         ("CLUSTER_STATS", _core.CLUSTER_NAMES)):
        body = re.search(rf"cdef enum:  # {table}\n((?:    .*\n)+)", text).group(1)
        members = [line.split()[0] for line in body.splitlines()]
        assert members[-1].endswith("_NSTATS")
        # Dotted names (Envoy's circuit_breakers.default.cx_open, ssl.handshake)
        # have _ in the enum; a cluster slot named like a listener slot has the
        # suffix _UP there (C enum members share one namespace).
        assert [m.lower().removesuffix("_up") for m in members[:-1]] == [
            n.replace(".", "_") for n in names], table
    assert set(_core.LISTENER_KINDS) == set(_core.CLUSTER_KINDS) == {"counter", "gauge"}
    assert {n for n, k in zip(_core.LISTENER_NAMES, _core.LISTENER_KINDS) if k == "gauge"} == {
        "downstream_cx_active", "downstream_rq_active"}
    assert {n for n, k in zip(_core.CLUSTER_NAMES, _core.CLUSTER_KINDS) if k == "gauge"
            and not n.startswith("circuit_breakers.")} == {
        "upstream_rq_active", "upstream_cx_active", "upstream_rq_pending_active",
        "outlier_detection.ejections_active"}


def test_listeners_and_clusters_count_apart_with_their_labels(start_proxy, make_origin, clients,
                                                              tcp_echo):
    a, b = make_origin("a"), make_origin("b")
    api = {"name": "api", "address": "127.0.0.1", "port": 0, "protocol": "http",
           "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/b"}, "cluster": "other"}]}]}
    p = start_proxy(http_config(a, clusters=[cluster("other", b), cluster("echo", tcp_echo)],
                                extra_listeners=[api, tcp_listener("raw", "echo")]))
    web, other = clients(p.address("web")), clients(p.address("api"))
    for _ in range(3):
        assert web.request("GET", "/a").status == 200
    for _ in range(2):
        assert other.request("GET", "/b").status == 200
    assert other.request("GET", "/nothing").status == 404      # no route: listener only
    raw = clients(p.address("raw"))
    raw.send(b"ping")
    assert raw.sock.recv(4) == b"ping"

    st = p.wait_for(lambda s: s["listeners"]["raw"]["downstream_cx_total"] == 1)
    lw, la, lr = st["listeners"]["web"], st["listeners"]["api"], st["listeners"]["raw"]
    assert (lw["downstream_rq_total"], lw["downstream_rq_2xx"], lw["downstream_rq_4xx"]) == (3, 3, 0)
    assert (la["downstream_rq_total"], la["downstream_rq_2xx"], la["downstream_rq_4xx"]) == (3, 2, 1)
    assert (lr["downstream_cx_tcp"], lr["downstream_cx_http"], lr["downstream_rq_total"]) == (1, 0, 0)
    assert (lw["downstream_cx_http"], la["downstream_cx_http"]) == (1, 1)
    # The flat names are the sums over the listeners (the dict's old shape).
    assert st["downstream_rq_total"] == 6 and st["downstream_rq_2xx"] == 5
    assert st["downstream_cx_total"] == 3 and st["downstream_cx_active"] == 3
    assert st["clusters"]["origin"]["upstream_rq_total"] == 3
    assert st["clusters"]["other"]["upstream_rq_2xx"] == 2
    assert st["clusters"]["echo"]["upstream_cx_total"] == 1
    assert st["config_version"] == 1

    snap = p._in_loop(p.proxy.stats_snapshot)
    labels = {(blk["prefix"], tuple(map(tuple, blk["labels"]))) for blk in snap["blocks"]}
    assert labels == {("", ()), ("listener", (("listener", "web"),)),
                      ("listener", (("listener", "api"),)), ("listener", (("listener", "raw"),)),
                      ("cluster", (("cluster", "origin"),)), ("cluster", (("cluster", "other"),)),
                      ("cluster", (("cluster", "echo"),)),
                      # per route (unnamed: "<virtual host>/<index>"), from its first request
                      ("route", (("listener", "web"), ("route", "all/0"))),
                      ("route", (("listener", "api"), ("route", "all/0")))}
    assert hist(snap, "listener", "downstream_rq_time", listener="web")["count"] == 3
    assert hist(snap, "listener", "downstream_rq_time", listener="api")["count"] == 3
    assert hist(snap, "cluster", "upstream_rq_time", cluster="origin")["count"] == 3
    assert hist(snap, "cluster", "upstream_rq_time", cluster="other")["count"] == 2
    # ... and in Prometheus, as labels.
    fams = {f.name: f for f in text_string_to_metric_families(render_prometheus(snap))}
    by_labels = {tuple(sorted(s.labels.items())): s.value
                 for s in fams["fastmesh_listener_downstream_rq_xx"].samples}
    assert by_labels[(("listener", "api"), ("response_code_class", "4xx"))] == 1
    assert by_labels[(("listener", "web"), ("response_code_class", "2xx"))] == 3
    counts = {s.labels["cluster"]: s.value for s in fams["fastmesh_cluster_upstream_rq_time_seconds"]
              .samples if s.name.endswith("_count")}
    assert counts == {"origin": 3, "other": 2, "echo": 0}


def test_http2_requests_are_timed_on_both_sides(start_proxy, origin, clients):
    h2o = H2Origin("h2o")
    try:
        p = start_proxy(http_config(origin, clusters=[cluster("h2", h2o.address, protocol="http2")],
                                    routes=[{"match": {"prefix": "/h2/"}, "cluster": "h2"},
                                            {"match": {"prefix": "/"}, "cluster": "origin"}]))
        c = H2Client(p.address("web"))
        try:
            for path in ("/h2/a", "/h2/b", "/h2/c", "/one", "/two"):
                assert c.get(path).status == 200
        finally:
            c.close()
        h1 = clients(p.address("web"))
        assert h1.request("GET", "/h2/d").status == 200     # HTTP/1.1 client, HTTP/2 upstream
        st = p.wait_requests_done()
        snap = p._in_loop(p.proxy.stats_snapshot)
    finally:
        h2o.stop()
    assert st["listeners"]["web"]["downstream_rq_2xx"] == 6
    assert hist(snap, "listener", "downstream_rq_time", listener="web")["count"] == 6
    assert hist(snap, "cluster", "upstream_rq_time", cluster="h2")["count"] == 4
    assert hist(snap, "cluster", "upstream_rq_time", cluster="origin")["count"] == 2
    assert st["clusters"]["h2"]["upstream_rq_2xx"] == 4


def test_latency_is_recorded_in_seconds_at_the_end_of_the_response(start_proxy, origin, clients):
    p = start_proxy(http_config(origin))
    c = clients(p.address("web"))
    t0 = time.monotonic()
    assert c.request("GET", "/slow-headers/0.3").status == 200
    took = time.monotonic() - t0
    snap = p._in_loop(p.proxy.stats_snapshot)
    for h in (hist(snap, "listener", "downstream_rq_time", listener="web"),
              hist(snap, "cluster", "upstream_rq_time", cluster="origin")):
        assert h["count"] == 1 and 0.3 <= h["sum"] <= took
        assert h["buckets"][h["bounds"].index(0.5)] == 1     # (0.25 s, 0.5 s]


def test_a_reset_request_counts_but_is_not_timed(start_proxy, origin, clients):
    p = start_proxy(http_config(origin))
    c = clients(p.address("web"))
    c.send(b"GET /slow-headers/0.5 HTTP/1.1\r\nhost: x\r\n\r\n")
    p.wait_for(lambda s: s["clusters"]["origin"]["upstream_rq_active"] == 1)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()                                   # a reset, not a half-close
    st = p.wait_idle()
    assert (st["downstream_rq_total"], st["downstream_rq_rx_reset"]) == (1, 1)
    snap = p._in_loop(p.proxy.stats_snapshot)
    assert hist(snap, "listener", "downstream_rq_time", listener="web")["count"] == 0
    assert hist(snap, "cluster", "upstream_rq_time", cluster="origin")["count"] == 0


def test_a_removed_cluster_leaves_the_stats_and_comes_back_from_zero(start_proxy, origin, clients):
    cfg = http_config(origin, clusters=[cluster("x", origin)],
                      routes=[{"match": {"prefix": "/x"}, "cluster": "x"},
                              {"match": {"prefix": "/"}, "cluster": "origin"}])
    p = start_proxy(cfg)
    c = clients(p.address("web"))
    assert c.request("GET", "/x").status == 200
    assert p.stats()["clusters"]["x"]["upstream_rq_total"] == 1
    p.reload(http_config(origin))
    snap = p._in_loop(p.proxy.stats_snapshot)
    assert sorted(p.stats()["clusters"]) == ["origin"]
    assert [h for h in snap["histograms"] if dict(h["labels"]).get("cluster") == "x"] == []
    p.reload(cfg)
    assert p.stats()["clusters"]["x"]["upstream_rq_total"] == 0
    assert c.request("GET", "/x").status == 200
    assert p.stats()["clusters"]["x"]["upstream_rq_total"] == 1
    snap = p._in_loop(p.proxy.stats_snapshot)
    assert hist(snap, "cluster", "upstream_rq_time", cluster="x")["count"] == 1
