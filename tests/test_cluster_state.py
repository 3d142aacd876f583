"""Live cluster state (issue 8): every upstream attempt charges the cluster
that started it, pools belong to their cluster, balancer state survives a
reload, endpoint sets swap without a new snapshot, removed endpoints and
clusters drain their pools. Live proxy, real origins."""
from __future__ import annotations

import pytest

from support.harness import cluster, http_config


def two_cluster_config(origin):
    # Clusters X and Y share one endpoint; /x goes to X, /y to Y. Y has its
    # own pool settings (one request per connection).
    return http_config(
        routes=[{"match": {"prefix": "/x"}, "cluster": "X"},
                {"match": {"prefix": "/y"}, "cluster": "Y"}],
        clusters=[cluster("X", origin),
                  cluster("Y", origin, max_requests_per_connection=1)])


def worker_call(p, fn):
    return p._in_loop(lambda: fn(p.proxy._dataplane.worker))


def test_two_clusters_on_one_endpoint_keep_their_own_counters(start_proxy, origin, clients):
    p = start_proxy(two_cluster_config(origin))
    c = clients(p.address("web"))
    for i in range(10):
        assert c.request("GET", f"/x{i}").status == 200
        assert c.request("GET", f"/y{i}").status == 200
    st = p.wait_requests_done()   # the client's connection stays open
    x, y = st["clusters"]["X"], st["clusters"]["Y"]
    # Before: X upstream_rq_active -10 and 2xx 20, Y active 10 and 2xx 0.
    assert (x["upstream_rq_active"], x["upstream_rq_2xx"], x["upstream_rq_total"]) == (0, 10, 10)
    assert (y["upstream_rq_active"], y["upstream_rq_2xx"], y["upstream_rq_total"]) == (0, 10, 10)
    # Y's own pool setting applies to its requests: a connection per request;
    # X keeps one connection for all of its ten.
    assert y["upstream_cx_total"] == 10
    assert x["upstream_cx_total"] == 1 and x["upstream_cx_reused"] == 9


def test_least_request_state_is_clean_after_a_same_config_reload(start_proxy, origin, clients):
    cfg = http_config(origin, cluster_opts={"lb": "least_request"})
    p = start_proxy(cfg)
    c = clients(p.address("web"))
    assert c.request("GET", "/warm").status == 200     # a pooled connection exists
    p.reload(cfg)
    for i in range(5):
        assert c.request("GET", f"/r{i}").status == 200
    p.wait_requests_done()

    def active(w):
        cs = w.cluster("origin")
        return list(cs.lb.active_counts()), cs.lb_builds
    counts, builds = worker_call(p, active)
    # Before: "active [5]" for good after 5 requests on the reloaded config.
    assert counts == [0]
    assert builds == 1          # the same endpoints: the balancer was kept
    assert p.cluster_stats()["upstream_rq_active"] == 0


def test_balancer_kept_across_reload_and_rebuilt_when_endpoints_change(
        start_proxy, make_origin, clients):
    a, b = make_origin("a"), make_origin("b")
    cfg = http_config(a, b)
    p = start_proxy(cfg)
    c = clients(p.address("web"))
    seen = [c.request("GET", "/").header("x-origin") for _ in range(5)]
    assert set(seen) == {b"a", b"b"} and all(x != y for x, y in zip(seen, seen[1:]))
    p.reload(cfg)
    # Round-robin position survives: the next pick continues the rotation
    # (a rebuilt balancer starts its cycle again).
    after = [c.request("GET", "/").header("x-origin") for _ in range(4)]
    assert all(x != y for x, y in zip(seen[-1:] + after, after))
    assert worker_call(p, lambda w: w.cluster("origin").lb_builds) == 1
    p.reload(http_config(a))
    assert worker_call(p, lambda w: w.cluster("origin").lb_builds) == 2
    assert {c.request("GET", "/").header("x-origin") for _ in range(3)} == {b"a"}


def test_set_endpoints_swaps_the_set_and_drains_pools_of_removed_endpoints(
        start_proxy, make_origin, clients):
    a, b = make_origin("a"), make_origin("b")
    p = start_proxy(http_config(a))
    c = clients(p.address("web"))
    assert c.request("GET", "/").header("x-origin") == b"a"
    assert worker_call(p, lambda w: w.cluster("origin").pool_sizes()) == {a.address: (1, 0)}
    version = worker_call(p, lambda w: w.snapshot.version)
    worker_call(p, lambda w: w.set_endpoints("origin", [(b.address[0], b.address[1], 1)]))
    # The routes were not rebuilt (same snapshot), the new endpoint serves ...
    assert {c.request("GET", "/").header("x-origin") for _ in range(3)} == {b"b"}
    assert worker_call(p, lambda w: w.snapshot.version) == version
    # ... and the idle connection to the removed endpoint was closed.
    st = p.wait_for(lambda s: s["clusters"]["origin"]["upstream_cx_active"] == 1)
    assert st["clusters"]["origin"]["upstream_cx_active"] == 1
    assert a.address not in worker_call(p, lambda w: w.cluster("origin").pool_sizes())


def test_removed_cluster_is_pruned_and_its_pool_closed(start_proxy, origin, clients):
    p = start_proxy(two_cluster_config(origin))
    c = clients(p.address("web"))
    assert c.request("GET", "/x").status == 200
    assert c.request("GET", "/y").status == 200
    before = origin.connections
    p.reload(http_config(routes=[{"match": {"prefix": "/"}, "cluster": "X"}],
                         clusters=[cluster("X", origin)]))
    assert sorted(p.stats()["clusters"]) == ["X"]
    assert worker_call(p, lambda w: sorted(w.clusters)) == ["X"]
    # X kept its pooled connection: the next request reuses it.
    assert c.request("GET", "/y").status == 200
    assert origin.connections == before


def test_excluded_endpoint_is_not_picked_while_another_can_be(start_proxy, make_origin, clients):
    a, b = make_origin("a"), make_origin("b")
    p = start_proxy(http_config(a, b))
    c = clients(p.address("web"))
    worker_call(p, lambda w: w.cluster("origin").set_excluded(0, True))
    assert {c.request("GET", "/").header("x-origin") for _ in range(6)} == {b"b"}
    worker_call(p, lambda w: w.cluster("origin").set_excluded(0, False))
    assert {c.request("GET", "/").header("x-origin") for _ in range(6)} == {b"a", b"b"}


def test_exclusion_belongs_to_the_endpoint_across_set_changes(start_proxy, make_origin,
                                                              clients):
    # An ejected endpoint stays ejected when the set changes around it (the
    # balancer is rebuilt and positions move), as Envoy's host health does.
    a, b, d = make_origin("a"), make_origin("b"), make_origin("d")
    p = start_proxy(http_config(a, b))
    c = clients(p.address("web"))
    worker_call(p, lambda w: w.cluster("origin").set_excluded(0, True))     # a
    eps = [("127.0.0.1", o.address[1], 1) for o in (d, a, b)]
    worker_call(p, lambda w: w.cluster("origin").set_endpoints(eps))        # a moves to 1
    assert {c.request("GET", "/").header("x-origin") for _ in range(9)} == {b"b", b"d"}


def test_h2_upstream_attempts_charge_their_cluster(start_proxy, clients):
    from support.h2util import H2Origin
    o = H2Origin()
    try:
        cfg = http_config(
            routes=[{"match": {"prefix": "/x"}, "cluster": "X"},
                    {"match": {"prefix": "/y"}, "cluster": "Y"}],
            clusters=[cluster("X", o.address, protocol="http2"),
                      cluster("Y", o.address, protocol="http2")])
        p = start_proxy(cfg)
        c = clients(p.address("web"))
        for i in range(4):
            assert c.request("GET", f"/x{i}").status == 200
            assert c.request("GET", f"/y{i}").status == 200
        st = p.wait_requests_done()
        for name in ("X", "Y"):
            s = st["clusters"][name]
            assert (s["upstream_rq_active"], s["upstream_rq_2xx"], s["upstream_cx_total"]) == (0, 4, 1)
    finally:
        o.stop()


def test_health_flags_combine_and_panic_balances_across_all(start_proxy, make_origin, clients):
    # Each source (health checks, outlier detection, discovery) owns one bit;
    # an endpoint is excluded while any bit is set. Below the panic threshold
    # (Envoy's default 50 % healthy) every endpoint takes traffic again.
    from fastmesh._core import HEALTH_FLAGS
    hc, od = HEALTH_FLAGS["failed_active_hc"], HEALTH_FLAGS["failed_outlier_check"]
    a, b, d = make_origin("a"), make_origin("b"), make_origin("d")
    p = start_proxy(http_config(a, b, d))
    c = clients(p.address("web"))

    def served(n=12):
        return {c.request("GET", "/").header("x-origin") for _ in range(n)}

    assert worker_call(p, lambda w: w.cluster("origin").set_health(0, hc, True)) is True
    assert worker_call(p, lambda w: w.cluster("origin").set_health(0, od, True)) is False
    assert served() == {b"b", b"d"}                    # 2 of 3 healthy: no panic
    assert p.stats()["clusters"]["origin"]["lb_healthy_panic"] == 0
    worker_call(p, lambda w: w.cluster("origin").set_health(0, hc, False))
    assert served() == {b"b", b"d"}                    # still ejected by the other bit
    worker_call(p, lambda w: w.cluster("origin").set_health(1, hc, True))
    assert worker_call(p, lambda w: w.cluster("origin").in_panic) is True
    assert served(18) == {b"a", b"b", b"d"}            # 1 of 3 healthy: panic
    assert p.stats()["clusters"]["origin"]["lb_healthy_panic"] > 0
    worker_call(p, lambda w: w.cluster("origin").set_health(0, od, False))
    assert served() == {b"a", b"d"}
