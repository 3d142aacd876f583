"""The rest of Envoy's route retry_policy (issue 9): every retry_on condition
retries when listed and not when it is not, per-try timeouts, back-off
between attempts, the request-body replay buffer, the x-envoy-retry-*
request headers (honoured only on a trusting listener) and grpc-retry-
pushback-ms. Through a live proxy, HTTP/1.1 and HTTP/2 clients, HTTP/1.1
and HTTP/2 upstreams; scripted origins record every attempt (its request id,
body and arrival time), so a test sees what ran where and how often."""
from __future__ import annotations

import collections
import socket
import struct
import time

import pytest

from support.h2util import H2Client
from support.harness import Client, cluster, http_config
from support.origin import body_bytes, sha256
from support.scripted import Scripted

CLIENTS = ["h1", "h2"]
UPSTREAMS = ["http1", "http2"]


# ------------------------------------------------------------------ helpers

@pytest.fixture
def scripted():
    """scripted(name, action, h2=False) -> a Scripted origin, stopped at teardown."""
    made = []

    def make(name, action=("ok",), h2=False):
        s = Scripted(name=name, h2=h2, action=action)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


def config(*origins, retry=None, upstream="http1", listener=None, route_extra=None,
           timeout=None):
    r = {"match": {"prefix": "/"}, "cluster": "up"}
    if retry is not None:
        r["retry_policy"] = retry
    if timeout is not None:
        r["timeout"] = timeout
    r.update(route_extra or {})
    return http_config(clusters=[cluster("up", *[o.address for o in origins],
                                         protocol=upstream)],
                       routes=[r], listener=listener)


def send(p, client, n, method="GET", path="/r", body=b"", headers=()):
    """n requests one after the other; [(status, headers dict, body)]."""
    out = []
    if client == "h1":
        for _ in range(n):
            c = Client(p.address("web"), timeout=20)
            try:
                r = c.request(method, path, body=body, headers=list(headers))
                out.append((r.status, {k.decode(): v.decode() for k, v in r.headers}, r.body))
            finally:
                c.close()
        return out
    c = H2Client(p.address("web"))
    try:
        for _ in range(n):
            hs = [(k, v) for k, v in headers]
            if body:
                hs.append(("content-length", str(len(body))))
            r = c.wait(c.request(method, path, body=body, headers=hs), timeout=20)
            out.append((r.status, {k.decode(): v.decode() for k, v in r.headers}, r.body))
    finally:
        c.close()
    return out


def ids(origin):
    return [s.headers.get("x-request-id") for s in origin.received()]


def assert_ran_once_each(n, bad, good, retried):
    """Every request ran once at `good`; at `bad` only requests that were
    then retried (each id at most once there, and then also at good)."""
    g = collections.Counter(ids(good))
    b = collections.Counter(ids(bad))
    assert all(v == 1 for v in g.values()) and all(v == 1 for v in b.values())
    if retried:
        assert sum(g.values()) == n and set(b) <= set(g)
    else:
        assert sum(g.values()) + sum(b.values()) == n and not set(b) & set(g)


# ------------------------------------------------------------------ conditions

# condition -> (the bad endpoint's action, extra policy keys, a condition that
# does not cover it, what the client gets when it is not retried)
CONDITIONS = {
    "5xx": (("status", 500), {}, "retriable-4xx", 500),
    "gateway-error": (("status", 503), {}, "retriable-4xx", 503),
    "retriable-4xx": (("status", 409), {}, "5xx", 409),
    "retriable-status-codes": (("status", 418), {"retriable_status_codes": [418]}, "5xx", 418),
    "reset": (("reset",), {}, "retriable-4xx", None),
    "reset-mid-head": (("partial",), {}, "retriable-4xx", None),
}


# (a partial head is an HTTP/1.1 failure: HTTP/2 frames a head whole)
MATRIX = [(cond, up) for cond in CONDITIONS for up in UPSTREAMS
          if not (cond == "reset-mid-head" and up == "http2")]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not-listed"])
@pytest.mark.parametrize("cond, upstream", MATRIX)
def test_condition_retries_only_when_listed(cond, upstream, listed, client, start_proxy,
                                            scripted):
    action, extra, other, status = CONDITIONS[cond]
    h2up = upstream == "http2"
    bad = scripted("bad", action, h2=h2up)
    good = scripted("good", h2=h2up)
    name = "reset" if cond == "reset-mid-head" else cond
    policy = {"retry_on": name if listed else other, "num_retries": 1,
              "retry_back_off": {"base_interval": "1ms"}, **extra}
    p = start_proxy(config(bad, good, retry=policy, upstream=upstream))
    n = 10
    got = send(p, client, n)
    st = p.cluster_stats("up")
    nbad = len(bad.received())
    assert nbad >= 1
    if listed:
        assert [g[0] for g in got] == [200] * n
        assert all(g[1].get("x-origin") == "good" for g in got)
        assert st["upstream_rq_retry"] == nbad
        assert st["upstream_rq_retry_success"] == nbad
    else:
        codes = [g[0] for g in got]
        bad_codes = [c for c in codes if c != 200]
        assert len(bad_codes) == nbad
        if status is not None:
            assert set(bad_codes) == {status}
        else:
            assert set(bad_codes) <= {502, 503}
        assert st["upstream_rq_retry"] == 0
    assert_ran_once_each(n, bad, good, listed)


@pytest.mark.parametrize("client", CLIENTS)
def test_num_retries_bounds_the_attempts_then_the_answer_stands(client, start_proxy, scripted):
    # Both endpoints answer 503: 1 + num_retries attempts, then the answer
    # stands and upstream_rq_retry_limit_exceeded counts it.
    a = scripted("a", ("status", 503))
    b = scripted("b", ("status", 503))
    p = start_proxy(config(a, b, retry={"retry_on": "5xx", "num_retries": 2,
                                        "retry_back_off": {"base_interval": "1ms"}}))
    got = send(p, client, 3)
    assert [g[0] for g in got] == [503] * 3
    assert len(a.received()) + len(b.received()) == 9
    st = p.cluster_stats("up")
    assert st["upstream_rq_retry"] == 6 and st["upstream_rq_retry_limit_exceeded"] == 3
    assert st["upstream_rq_retry_success"] == 0
    # Each request's id reached the two endpoints alternately (exclusion pick).
    for rid, n in collections.Counter(ids(a) + ids(b)).items():
        assert n == 3


@pytest.mark.parametrize("client", CLIENTS)
def test_without_a_policy_nothing_runs_twice(client, start_proxy, scripted):
    bad = scripted("bad", ("status", 503))
    good = scripted("good")
    p = start_proxy(config(bad, good))
    got = send(p, client, 10)
    assert sorted(g[0] for g in got) == [200] * 5 + [503] * 5
    assert_ran_once_each(10, bad, good, False)
    assert p.cluster_stats("up")["upstream_rq_retry"] == 0


# ------------------------------------------------------------------ per-try timeout

@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_per_try_timeout_then_success_on_another_endpoint(client, upstream, start_proxy,
                                                          scripted):
    h2up = upstream == "http2"
    slow = scripted("slow", ("hang",), h2=h2up)
    good = scripted("good", h2=h2up)
    p = start_proxy(config(slow, good, upstream=upstream, timeout="10s", retry={
        "retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.2s",
        "retry_back_off": {"base_interval": "1ms"}}))
    t0 = time.monotonic()
    got = send(p, client, 4)
    assert [g[0] for g in got] == [200] * 4
    nslow = len(slow.received())
    assert nslow >= 1
    st = p.cluster_stats("up")
    assert st["upstream_rq_per_try_timeout"] == nslow and st["upstream_rq_retry"] == nslow
    # Each slow attempt waited its per-try timeout before the retry (a lower bound).
    assert time.monotonic() - t0 >= 0.2 * nslow


@pytest.mark.parametrize("client", CLIENTS)
def test_per_try_timeout_without_retry_answers_504(client, start_proxy, scripted):
    slow = scripted("slow", ("hang",))
    p = start_proxy(config(slow, timeout="10s", retry={
        "retry_on": "retriable-4xx", "per_try_timeout": "0.2s"}))
    got = send(p, client, 1)
    assert got[0][0] == 504
    st = p.cluster_stats("up")
    assert st["upstream_rq_per_try_timeout"] == 1 and st["upstream_rq_retry"] == 0


def test_the_route_timeout_bounds_all_attempts(start_proxy, scripted):
    # Every attempt hangs: per-try timeouts retry, the route timeout (0.5 s)
    # ends the request with 504 whatever attempts remain.
    a = scripted("a", ("hang",))
    b = scripted("b", ("hang",))
    p = start_proxy(config(a, b, timeout="0.5s", retry={
        "retry_on": "reset", "num_retries": 10, "per_try_timeout": "0.2s",
        "retry_back_off": {"base_interval": "1ms"}}))
    got = send(p, "h1", 1)
    assert got[0][0] == 504
    st = p.cluster_stats("up")
    assert st["upstream_rq_timeout"] == 1
    assert 1 <= st["upstream_rq_per_try_timeout"] <= 3


# ------------------------------------------------------------------ back-off

@pytest.mark.parametrize("client", CLIENTS)
def test_backoff_between_attempts(client, start_proxy, scripted):
    # Envoy's full-jitter exponential back-off: before retry k a random wait
    # below base x (2^k - 1), capped at max_interval. Lower bounds only: over
    # 3 attempts per request (waits below 200 ms, then below 600 ms capped
    # at 400 ms), 6 requests wait well over 0.3 s in total (a mean of ~2 s).
    a = scripted("a", ("status", 503))
    b = scripted("b", ("status", 503))
    p = start_proxy(config(a, b, retry={
        "retry_on": "5xx", "num_retries": 2,
        "retry_back_off": {"base_interval": "200ms", "max_interval": "400ms"}}))
    got = send(p, client, 6)
    assert [g[0] for g in got] == [503] * 6
    seen = sorted(a.received() + b.received(), key=lambda s: s.at)
    by_id = collections.defaultdict(list)
    for s in seen:
        by_id[s.headers["x-request-id"]].append(s.at)
    gaps = [t[i + 1] - t[i] for t in by_id.values() for i in range(len(t) - 1)]
    assert len(gaps) == 12
    assert sum(gaps) > 0.3
    assert p.cluster_stats("up")["upstream_rq_retry_backoff_exponential"] == 12


def test_a_client_gone_during_backoff_frees_the_retry(start_proxy, scripted):
    # The retry waits 3 s (grpc-retry-pushback-ms); the client leaves: the
    # RetryTimer leaves the wheel with the stream, nothing stays active.
    a = scripted("a", ("grpc", 14, "3000"))
    p = start_proxy(config(a, retry={"retry_on": "unavailable"}))

    def timers():
        # wheel entries that are not connections' deadlines (every
        # connection has at most one)
        w = p.proxy._dataplane.worker
        return w.wheel.armed - w.connection_count()

    c = Client(p.address("web"))
    from support.harness import build_request
    c.send(build_request("GET", "/r"))
    a.wait_count(1)
    p.wait_for(lambda st: st["clusters"]["up"]["upstream_rq_retry_backoff_ratelimited"] == 1)
    assert p._in_loop(timers) >= 1
    # Gone for good (a reset; a half-close would still be answered).
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    st = p.wait_idle()
    assert st["downstream_rq_active"] == 0
    deadline = time.monotonic() + 3
    while p._in_loop(timers) > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p._in_loop(timers) <= 0
    assert len(a.received()) == 1
    assert p.cluster_stats("up")["upstream_rq_active"] == 0


# ------------------------------------------------------------------ replay buffer

@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_a_body_within_the_buffer_limit_is_replayed_whole(client, upstream, start_proxy,
                                                          scripted):
    # The first attempt got the whole body and answered 503: the retry
    # sends the kept body, byte for byte, to the other endpoint.
    h2up = upstream == "http2"
    bad = scripted("bad", ("status", 503), h2=h2up)
    good = scripted("good", h2=h2up)
    body = body_bytes(200_000)
    p = start_proxy(config(bad, good, upstream=upstream, retry={
        "retry_on": "5xx", "retry_back_off": {"base_interval": "1ms"}},
        route_extra={"per_request_buffer_limit_bytes": 300_000}))
    got = send(p, client, 4, method="POST", path="/up", body=body)
    assert [g[0] for g in got] == [200] * 4
    assert all(g[1]["x-body-sha256"] == sha256(body) for g in got)
    assert [s.body for s in good.received()] == [body] * 4
    assert len(bad.received()) >= 1 and all(s.body == body for s in bad.received())
    assert p.cluster_stats("up")["upstream_rq_retry"] == len(bad.received())


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_a_body_over_the_buffer_limit_is_not_retried(client, upstream, start_proxy, scripted):
    h2up = upstream == "http2"
    bad = scripted("bad", ("status", 503), h2=h2up)
    good = scripted("good", h2=h2up)
    body = body_bytes(200_000)
    p = start_proxy(config(bad, good, upstream=upstream, retry={
        "retry_on": "5xx", "retry_back_off": {"base_interval": "1ms"}},
        route_extra={"per_request_buffer_limit_bytes": 100_000}))
    got = send(p, client, 4, method="POST", path="/up", body=body)
    assert sorted(g[0] for g in got) == [200, 200, 503, 503]
    assert p.cluster_stats("up")["upstream_rq_retry"] == 0
    assert p.stats()["listeners"]["web"]["retry_or_shadow_abandoned"] == 4
    assert_ran_once_each(4, bad, good, False)


@pytest.mark.parametrize("client", CLIENTS)
def test_the_listener_buffer_limit_is_the_default(client, start_proxy, scripted):
    # No per_request_buffer_limit_bytes: the listener's
    # per_connection_buffer_limit (64 KiB here) bounds the replay.
    bad = scripted("bad", ("status", 503))
    good = scripted("good")
    cfg = config(bad, good, retry={"retry_on": "5xx",
                                   "retry_back_off": {"base_interval": "1ms"}},
                 listener={"per_connection_buffer_limit": 65536})
    p = start_proxy(cfg)
    small, big = body_bytes(30_000), body_bytes(100_000)
    got = send(p, client, 2, method="POST", path="/up", body=small)
    assert [g[0] for g in got] == [200, 200]
    got = send(p, client, 2, method="POST", path="/up", body=big)
    assert sorted(g[0] for g in got) == [200, 503]


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_a_reset_mid_upload_replays_what_was_sent_and_the_rest(upstream, start_proxy,
                                                                 scripted):
    # An HTTP/1.1 client sends its body in two parts; the first endpoint
    # resets after the whole body (its answer: reset). The retry gets the
    # kept part and the rest, in order.
    h2up = upstream == "http2"
    bad = scripted("bad", ("reset",), h2=h2up)
    good = scripted("good", h2=h2up)
    p = start_proxy(config(bad, good, upstream=upstream, retry={
        "retry_on": "reset", "retry_back_off": {"base_interval": "1ms"}}))
    body = body_bytes(50_000)
    from support.harness import chunk_body
    for _ in range(2):
        c = Client(p.address("web"), timeout=20)
        try:
            c.send(b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
            c.send(chunk_body(body[:20_000], 5000)[:-5])    # no last chunk yet
            c.send(chunk_body(body[20_000:], 5000))
            r = c.read_response("POST")
            assert r.status == 200
        finally:
            c.close()
    assert [s.body for s in good.received()] == [body] * 2


# ------------------------------------------------------------------ retry headers

@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_retry_headers_honoured_only_when_trusted(client, trusted, start_proxy, scripted):
    bad = scripted("bad", ("status", 503))
    good = scripted("good")
    p = start_proxy(config(bad, good, listener={"trust_retry_headers": trusted}))
    hs = [("x-envoy-retry-on", "gateway-error"), ("x-envoy-max-retries", "1")]
    got = send(p, client, 6, headers=hs)
    if trusted:
        assert [g[0] for g in got] == [200] * 6
        assert p.cluster_stats("up")["upstream_rq_retry"] == len(bad.received())
        # Trusted: forwarded as sent.
        assert all(s.headers.get("x-envoy-retry-on") == "gateway-error"
                   for s in good.received())
    else:
        assert sorted(g[0] for g in got) == [200] * 3 + [503] * 3
        assert p.cluster_stats("up")["upstream_rq_retry"] == 0
        # Untrusted: stripped before the upstream.
        for s in bad.received() + good.received():
            assert "x-envoy-retry-on" not in s.headers
            assert "x-envoy-max-retries" not in s.headers


@pytest.mark.parametrize("client", CLIENTS)
def test_trusted_max_retries_and_per_try_timeout_headers(client, start_proxy, scripted):
    # The route retries 5xx once; the trusted headers raise it to 3 and set
    # a 200 ms per-try timeout on endpoints that never answer but the last.
    seen = []

    def third_answers(rec):
        seen.append(rec)
        return ("ok",) if len(seen) % 4 == 0 else ("hang",)
    a = scripted("a", third_answers)
    p = start_proxy(config(a, timeout="10s", listener={"trust_retry_headers": True}, retry={
        "retry_on": "5xx", "num_retries": 1, "retry_back_off": {"base_interval": "1ms"}}))
    got = send(p, client, 1, headers=[("x-envoy-max-retries", "3"),
                                      ("x-envoy-upstream-rq-per-try-timeout-ms", "200")])
    assert got[0][0] == 200
    st = p.cluster_stats("up")
    assert st["upstream_rq_per_try_timeout"] == 3 and st["upstream_rq_retry"] == 3


def test_untrusted_headers_cannot_widen_the_route_policy(start_proxy, scripted):
    bad = scripted("bad", ("status", 503))
    good = scripted("good")
    p = start_proxy(config(bad, good, retry={"retry_on": "retriable-4xx"}))
    got = send(p, "h1", 4, headers=[("X-Envoy-Retry-On", "5xx"),
                                    ("x-envoy-upstream-rq-per-try-timeout-ms", "1")])
    assert sorted(g[0] for g in got) == [200, 200, 503, 503]
    for s in bad.received() + good.received():
        assert "x-envoy-retry-on" not in s.headers
        assert "x-envoy-upstream-rq-per-try-timeout-ms" not in s.headers
