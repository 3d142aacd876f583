"""A route's retry_policy (issue 9, first part): connect failures and
refused streams go again, to another endpoint (the balancer's exclusion
pick), up to num_retries; Envoy's names. Real origins, one endpoint a closed
port, HTTP/1.1 and HTTP/2 clients."""
from __future__ import annotations

import pytest

import fastmesh
from support.h2util import H2Client, H2Origin
from support.harness import cluster
from support.harness import http_config as _http_config
from support.origin import body_bytes, closed_port

DEAD = ("127.0.0.1", closed_port())

# These tests retry many requests at once (HTTP/2: all streams together);
# Envoy's default circuit breaker allows 3 concurrent retries per cluster
# (max_retries), which they are not about.
MANY_RETRIES = {"circuit_breakers": {"thresholds": [{"max_retries": 1000}]}}


def http_config(*origins, **kw) -> dict:
    kw.setdefault("cluster_opts", MANY_RETRIES)
    return _http_config(*origins, **kw)


def routes(retry=None, prefix="/"):
    r = {"match": {"prefix": prefix}, "cluster": "origin"}
    if retry is not None:
        r["retry_policy"] = retry
    return [r]


def statuses(p, proto, n, path="/r", method="GET", body=b""):
    out = []
    if proto == "h1":
        from support.harness import Client
        for _ in range(n):
            c = Client(p.address("web"))
            try:
                out.append(c.request(method, path, body=body).status)
            finally:
                c.close()
        return out
    c = H2Client(p.address("web"))
    try:
        for r in c.wait(*[c.request(method, path, body=body) for _ in range(n)], timeout=30):
            out.append(r.status)
    finally:
        c.close()
    return out


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_connect_failure_goes_to_another_endpoint(proto, start_proxy, origin):
    p = start_proxy(http_config(origin, DEAD, routes=routes(
        {"retry_on": "connect-failure", "num_retries": 1})))
    assert statuses(p, proto, 20) == [200] * 20
    st = p.cluster_stats()
    assert st["upstream_cx_connect_fail"] >= 1
    assert st["upstream_rq_retry"] == st["upstream_cx_connect_fail"]
    assert len(origin.received()) == 20


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_without_the_policy_connect_failures_are_answered(proto, start_proxy, origin):
    p = start_proxy(http_config(origin, DEAD))
    got = statuses(p, proto, 20)
    assert 200 in got and any(s in (502, 503) for s in got)
    assert p.cluster_stats()["upstream_rq_retry"] == 0


def test_a_request_body_is_sent_whole_to_the_endpoint_that_answers(start_proxy, origin):
    p = start_proxy(http_config(origin, DEAD, routes=routes({"retry_on": "connect-failure"})))
    body = body_bytes(100_000)
    assert statuses(p, "h1", 6, path="/echo", method="POST", body=body) == [200] * 6
    assert [r.body for r in origin.received()] == [body] * 6


def test_num_retries_bounds_the_attempts(start_proxy):
    # Every endpoint refuses: 1 + num_retries attempts, then the error.
    dead2 = ("127.0.0.1", closed_port())
    p = start_proxy(http_config(DEAD, dead2, routes=routes(
        {"retry_on": "connect-failure", "num_retries": 2})))
    assert statuses(p, "h1", 1) == [502]
    st = p.cluster_stats()
    assert st["upstream_cx_connect_fail"] == 3 and st["upstream_rq_retry"] == 2


@pytest.mark.parametrize("policy, attempts", [(None, 2), (3, 4)])
def test_refused_stream_retries_follow_num_retries(policy, attempts, start_proxy, origin):
    # Two endpoints that refuse every stream: without a policy a request
    # gets the one transparent retry (REFUSED_STREAM: not processed); with
    # refused-stream and num_retries: 3 it is tried 1 + 3 times, each time
    # away from the endpoint that just refused it, then answered 502.
    bad1, bad2 = H2Origin("r1", refuse_streams=True), H2Origin("r2", refuse_streams=True)
    try:
        r = {"match": {"prefix": "/"}, "cluster": "h2"}
        if policy is not None:
            r["retry_policy"] = {"retry_on": "refused-stream", "num_retries": policy}
        p = start_proxy(http_config(
            origin, clusters=[cluster("h2", bad1.address, bad2.address, protocol="http2",
                                      **MANY_RETRIES)],
            routes=[r]))
        assert statuses(p, "h2", 5) == [502] * 5
        assert len(bad1.received()) + len(bad2.received()) == 5 * attempts
        assert p.cluster_stats("h2")["upstream_rq_retry"] == 5 * (attempts - 1)
    finally:
        for o in (bad1, bad2):
            o.stop()


@pytest.mark.parametrize("policy, message", [
    ({"retry_on": "envoy-ratelimited"}, "not supported yet"),
    ({"retry_on": "connect-failur"}, "unknown retry_on condition"),
    ({"retry_on": "connect-failure", "num_retries": -1}, "out of range"),
    ({"retry_on": "connect-failure", "per_try_timeout": "soon"}, "per_try_timeout"),
    ({"retry_on": "5xx", "retry_back_off": {"max_interval": "1s"}}, "base_interval"),
    ({"retry_on": "5xx", "retry_back_off": {"base_interval": "0s"}}, "greater than zero"),
    ({"retry_on": "5xx", "retry_back_off": {"base_interval": "1s", "max_interval": "10ms"}},
     "must be at least base_interval"),
    ({"retry_on": "retriable-status-codes", "retriable_status_codes": [503, 99]},
     "out of range"),
    ({"retry_on": "retriable-status-codes", "retriable_status_codes": []}, "must not be empty"),
    ({"retry_on": "5xx", "retry_back_off": {"base_interval": "25ms", "jitter": 1}}, "jitter"),
])
def test_bad_retry_policies_are_config_errors(policy, message):
    cfg = http_config(("127.0.0.1", 1), routes=routes(policy))
    with pytest.raises(fastmesh.ConfigError) as ei:
        fastmesh.Proxy(cfg)
    assert message in str(ei.value) and "retry_policy" in str(ei.value)


def test_retry_policy_not_allowed_with_direct_response():
    cfg = http_config(("127.0.0.1", 1), routes=[{
        "match": {"prefix": "/"}, "direct_response": {"status": 200},
        "retry_policy": {"retry_on": "connect-failure"}}])
    with pytest.raises(fastmesh.ConfigError) as ei:
        fastmesh.Proxy(cfg)
    assert "not allowed with direct_response" in str(ei.value)


@pytest.fixture
def failing_endpoint():
    """failing_endpoint(status) -> address of a real HTTP endpoint that
    answers `status` to everything: a fastmesh listener with a
    direct_response. (Not under start_proxy's leak check: the proxy under
    test keeps a pooled connection to it until the end.)"""
    from support.harness import ProxyThread
    made = []

    def make(status):
        p = ProxyThread({"listeners": [{
            "name": "web", "address": "127.0.0.1", "port": 0, "protocol": "http",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
                "match": {"prefix": "/"},
                "direct_response": {"status": status, "body": "failing\n"}}]}]}],
            "clusters": []}).start()
        made.append(p)
        return p.address("web")
    yield make
    for p in made:
        p.stop()


@pytest.mark.parametrize("proto", ["h1", "h2"])
@pytest.mark.parametrize("retry_on, status, retried", [
    ("5xx", 500, True), ("5xx", 503, True), ("gateway-error", 503, True),
    ("gateway-error", 500, False), ("connect-failure", 503, False)])
def test_a_5xx_answer_is_retried_elsewhere(proto, retry_on, status, retried, start_proxy,
                                           origin, failing_endpoint):
    bad = failing_endpoint(status)
    p = start_proxy(http_config(origin, bad, routes=routes({"retry_on": retry_on})))
    got = statuses(p, proto, 20)
    st = p.cluster_stats()
    if retried:
        assert got == [200] * 20
        assert st["upstream_rq_retry"] >= 1 and st["upstream_rq_5xx"] == st["upstream_rq_retry"]
        assert len(origin.received()) == 20
    else:
        assert status in got and st["upstream_rq_retry"] == 0


def test_a_request_with_a_body_over_the_buffer_limit_is_not_retried(start_proxy,
                                                                    failing_endpoint):
    # Its body went upstream as it arrived and outgrew the replay buffer
    # (per_request_buffer_limit_bytes): the answer stands.
    bad = failing_endpoint(503)
    r = routes({"retry_on": "5xx", "num_retries": 3})
    r[0]["per_request_buffer_limit_bytes"] = 500
    p = start_proxy(http_config(bad, routes=r))
    assert statuses(p, "h1", 2, path="/echo", method="POST", body=b"x" * 1000) == [503, 503]
    assert p.cluster_stats()["upstream_rq_retry"] == 0


def test_a_5xx_answer_from_an_http2_upstream_is_retried_elsewhere(start_proxy, origin,
                                                                 failing_endpoint):
    # The failing stream is reset (the rest of its response is not wanted)
    # and the request goes to the other endpoint, over HTTP/2 both ways.
    bad = failing_endpoint(503)
    good = H2Origin("good")
    try:
        p = start_proxy(http_config(
            origin, clusters=[cluster("h2", bad, good.address, protocol="http2", **MANY_RETRIES)],
            routes=[{"match": {"prefix": "/"}, "cluster": "h2",
                     "retry_policy": {"retry_on": "gateway-error"}}]))
        assert statuses(p, "h2", 20) == [200] * 20
        assert len(good.received()) == 20
        st = p.cluster_stats("h2")
        assert st["upstream_rq_retry"] >= 1 and st["upstream_rq_5xx"] == st["upstream_rq_retry"]
    finally:
        good.stop()


def test_a_retry_takes_a_pooled_connection_at_the_other_endpoint(start_proxy, origin):
    # Sequential requests, every other one first to the closed port: the
    # retries reuse the origin's pooled connection. A fresh connection per
    # retry left one more idle connection in the pool each time (found by
    # the fault scenarios' leak check, tests/test_fault_scenarios.py).
    p = start_proxy(http_config(origin, DEAD, routes=routes({"retry_on": "connect-failure"})))
    assert statuses(p, "h1", 20) == [200] * 20
    st = p.cluster_stats()
    assert st["upstream_rq_retry"] >= 5
    assert st["upstream_cx_total"] - st["upstream_cx_connect_fail"] == 1, st
