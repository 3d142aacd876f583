"""Issue 9, "Prove it under faults": a live `fastmesh run --single-process`
in front of three origin PROCESSES (support/origin_proc.py) under tagged
load (support/load.py), with origins killed and restarted, hanging,
answering 503, reset mid-response (support/faults.py), all down and back.

Every verdict comes from records: the client's outcome per request id and
the ids each origin served, with what it answered. After every scenario the
proxy must hold no socket beyond its listeners (/proc/<pid>/fd) once the
origins are gone.

The bars that need features not on main yet (the retry budget) are written
as the same scenario functions with the feature's config snippet and marked
xfail(strict=True): they fail today (the loader refuses the key) and turn
green, or loudly XPASS, when the feature merges.
"""
from __future__ import annotations

import time
from collections import defaultdict

import pytest

from support.faults import FaultProxy
from support.load import LoadClient, Outcome, one_request, percentile
from support.meshproc import RETRY_ON, MeshProc, fd_count, tcp_connections
from support.origin_proc import OriginProc

pytestmark = pytest.mark.timeout(60)

RETRY = {"retry_policy": {"retry_on": RETRY_ON, "num_retries": 3}}
# With every origin down each request makes 1 + 3 attempts, all refused at
# once; Envoy's default back-off (25 ms base) would add up to 275 ms of
# waiting between them. The all-down bar is about never waiting for a
# connect timeout, so those scenarios back off 1-2 ms (Envoy would need
# the same retry_back_off to meet it).
RETRY_DOWN = {"retry_policy": {**RETRY["retry_policy"],
                               "retry_back_off": {"base_interval": "1ms", "max_interval": "2ms"}}}
# Retries back off (Envoy's 25 ms base) and hold a retry slot meanwhile, so
# at this load Envoy's default max_retries (3 concurrent) overflows: Envoy
# itself reaches 92.8 % (kill) and 99.87 % (503) with it, 100 % with
# max_retries 1024 (perf/RESULTS.md, envoy / envoy-mr). The kill and 503
# bars are measured with the envoy-mr setting.
MAX_RETRIES = {"circuit_breakers": {"thresholds": [{"max_retries": 1024}]}}


class Rig:
    """Three origin processes, optional fault proxies in front of them, one
    fastmesh process; everything stopped at teardown."""

    def __init__(self, tmp) -> None:
        self.tmp = tmp
        self.origins: list[OriginProc] = []
        self.faults: list[FaultProxy] = []
        self.mesh: MeshProc | None = None
        self.loads: list[LoadClient] = []
        self.baseline_fds = 0

    def start(self, behaviours=({}, {}, {}), route_extra=RETRY, cluster_extra=None,
              fault_in_front=()) -> "Rig":
        addrs = []
        for i, b in enumerate(behaviours):
            o = OriginProc(f"o{i}", self.tmp, **b).start()
            self.origins.append(o)
            if i in fault_in_front:
                fp = FaultProxy(o.address).start()
                self.faults.append(fp)
                addrs.append(fp.address)
            else:
                addrs.append(o.address)
        self.mesh = MeshProc(self.tmp, addrs, route_extra, cluster_extra)
        # No connection made yet (the admin's /ready one may linger: at
        # worst one fd too many here, never too few).
        self.baseline_fds = fd_count(self.mesh.pid)
        return self

    def load(self, **kw) -> LoadClient:
        lc = LoadClient(self.mesh.address, **kw).start()
        self.loads.append(lc)
        return lc

    def records(self) -> dict[str, list[tuple[str, str, float, str]]]:
        """id -> [(id, outcome, time, origin)] over every origin, in time order."""
        by_id = defaultdict(list)
        for o in self.origins:
            for r in o.records():
                by_id[r[0]].append(r)
        for rs in by_id.values():
            rs.sort(key=lambda r: r[2])
        return by_id

    def check_leaks(self, timeout: float = 5.0) -> None:
        """Two looks at the proxy's sockets in /proc/<pid>/fd once the load
        stopped. With the origins still up: no more upstream connections
        than its pools can need (one per concurrent request per endpoint:
        the load's connections times the endpoints), and no client
        connection. With every origin gone (the kernel closes their ends):
        no TCP connection at all, no more fds than at start, every gauge
        at zero."""
        # (single requests count as one connection)
        bound = max(1, sum(lc.connections for lc in self.loads)) * len(self.origins)
        for lc in self.loads:
            lc.stop()
        self._wait_sockets(lambda conns, fds, st: st["downstream_cx_active"] == 0
                           and conns <= bound,
                           f"more than {bound} upstream connections with the origins up",
                           timeout)
        for o in self.origins:
            o.kill()
        for fp in self.faults:
            fp.stop()
        self.faults = []
        self._wait_sockets(lambda conns, fds, st: conns == 0 and fds <= self.baseline_fds
                           and st["downstream_cx_active"] == 0
                           and st["downstream_rq_active"] == 0
                           and st["clusters"]["origin"]["upstream_cx_active"] == 0
                           and st["clusters"]["origin"]["upstream_rq_active"] == 0,
                           "sockets left with the origins gone", timeout)

    def _wait_sockets(self, clean, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            # The fds first: the stats request's own connection is gone by
            # the next look.
            conns, fds = tcp_connections(self.mesh.pid), fd_count(self.mesh.pid)
            st = self.mesh.stats()
            if clean(conns, fds, st):
                return
            if time.monotonic() > deadline:
                cl = st["clusters"]["origin"]
                raise AssertionError(
                    f"leak ({what}): {conns} TCP connections, {fds} fds against "
                    f"{self.baseline_fds} at start; "
                    f"downstream_cx_active={st['downstream_cx_active']} "
                    f"downstream_rq_active={st['downstream_rq_active']} "
                    f"upstream_cx_active={cl['upstream_cx_active']} "
                    f"upstream_rq_active={cl['upstream_rq_active']}")
            time.sleep(0.05)

    def close(self) -> None:
        for lc in self.loads:
            lc.stop()
        for fp in self.faults:
            fp.stop()
        for o in self.origins:
            o.stop()
        if self.mesh is not None:
            self.mesh.stop()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


# ------------------------------------------------------------------ checks from the records

def success_ratio(outcomes: list[Outcome]) -> float:
    return sum(o.ok for o in outcomes) / len(outcomes)


def executed_twice(records) -> list:
    """Ids an origin executed more than once where no retry was allowed: a
    second execution is allowed only after the origin answered 503 (the
    policy's 5xx / gateway-error)."""
    bad = []
    for rid, rs in records.items():
        if len(rs) > 1 and any(r[1] != "503" for r in rs[:-1]):
            bad.append(rs)
    return bad


def check_records(outcomes: list[Outcome], records) -> None:
    """Nothing lost, nothing invented, nothing run twice unless allowed."""
    sent = {o.id for o in outcomes}
    assert set(records) <= sent, f"origins served ids never sent: {sorted(set(records) - sent)[:5]}"
    for o in outcomes:
        if o.ok:
            rs = records.get(o.id)
            assert rs and rs[-1][1] == "200", f"{o.id} succeeded but no origin answered 200: {rs}"
        assert not (o.status == 200 and not o.body_ok), f"{o.id}: a 200 with a wrong body"
    twice = executed_twice(records)
    assert not twice, f"executed twice without an allowed retry: {twice[:5]}"


def summary(outcomes: list[Outcome]) -> str:
    failed = [o for o in outcomes if not o.ok]
    return (f"{len(outcomes)} requests, {len(failed)} failed "
            f"({[(o.id, o.status, o.error) for o in failed[:8]]})")


# ------------------------------------------------------------------ scenarios

def scenario_kill_restart(rig: Rig, route_extra=RETRY, cluster_extra=None) -> list[Outcome]:
    """One of three origins SIGKILLed under load, then restarted on its port."""
    rig.start(route_extra=route_extra, cluster_extra=cluster_extra)
    lc = rig.load()
    assert lc.wait_count(1500)
    victim = rig.origins[1]
    victim.kill()
    n = lc.count()
    # A request written to the victim just before it died, which it never
    # read, is answered 502 (the kernel resets the connection, and main does
    # not retry a reset yet: Envoy's 5xx does); at most one per client
    # connection. The rest of the load keeps that a small share of the
    # ratio, as in a long run.
    assert lc.wait_count(n + 3000, timeout=20)
    victim.start()
    served_before = len(victim.records())
    # It is back when the proxy sends it requests again.
    deadline = time.monotonic() + 10
    while len(victim.records()) == served_before:
        assert time.monotonic() < deadline, "the restarted origin got no request"
        time.sleep(0.02)
    n = lc.count()
    assert lc.wait_count(n + 1500)
    outcomes = lc.stop()
    check_records(outcomes, rig.records())
    return outcomes


def test_one_origin_killed_and_restarted_under_load(rig):
    outcomes = scenario_kill_restart(rig, cluster_extra=MAX_RETRIES)
    assert success_ratio(outcomes) >= 0.999, summary(outcomes)
    rig.check_leaks()


def scenario_503(rig: Rig, route_extra=RETRY, cluster_extra=None,
                 fail_rate=0.2) -> list[Outcome]:
    """One of three origins answers 503 to a fraction of requests."""
    rig.start(behaviours=({}, {}, {"fail_rate": fail_rate}), route_extra=route_extra,
              cluster_extra=cluster_extra)
    lc = rig.load()
    assert lc.wait_count(2500)
    outcomes = lc.stop()
    check_records(outcomes, rig.records())
    return outcomes


def test_one_origin_answers_503_to_a_fifth(rig):
    outcomes = scenario_503(rig, cluster_extra=MAX_RETRIES)
    assert success_ratio(outcomes) >= 0.999, summary(outcomes)
    # The 503s really happened and were retried (executions of one id twice,
    # each after a 503).
    recs = rig.records()
    assert sum(1 for rs in recs.values() if len(rs) > 1) >= 50
    assert rig.mesh.cluster_stats()["upstream_rq_retry"] >= 50
    rig.check_leaks()


def test_an_origin_that_hangs(rig):
    # Without a per-try timeout (not on main) nothing can retry a hung
    # attempt: the route timeout answers 504 and the origin's requests are
    # the only failures; each was executed once, and nothing stays open.
    timeout = 0.5
    rig.start(behaviours=({}, {}, {"hang": True}),
              route_extra={**RETRY, "timeout": timeout})
    lc = rig.load()
    # Each connection is held for the timeout one request in three.
    assert lc.wait_count(150, timeout=15)
    outcomes = lc.stop()
    recs = rig.records()
    check_records(outcomes, recs)
    hung = {rid for rid, rs in recs.items() if rs[-1][1] == "hang"}
    failed = [o for o in outcomes if not o.ok]
    assert hung and {o.id for o in failed} <= hung
    for o in failed:
        if o.id in hung and o.status is not None:   # the last ones may be cut by stop()
            assert o.status == 504 and timeout <= o.latency < timeout + 0.5, o
    assert any(o.status == 504 for o in failed)
    rig.check_leaks()


def test_an_origin_reset_mid_response(rig):
    # The fault proxy in front of o2 lets 1000 bytes of each response through
    # and then resets both sides: the proxy had started the response, so it
    # must end the client's connection (never pass a short body off as
    # whole) and execute nothing twice. Switched back to "pass", o2 serves.
    rig.start(behaviours=({"body": 20000}, {"body": 20000}, {"body": 20000}),
              fault_in_front=(2,))
    fp = rig.faults[0]
    fp.set_mode("reset", after=1000)
    lc = rig.load()
    assert lc.wait_count(600)
    assert fp.counters()["resets"] > 0
    fp.set_mode("pass")
    n = lc.count()
    assert lc.wait_count(n + 600)
    outcomes = lc.stop()
    recs = rig.records()
    check_records(outcomes, recs)
    failed = [o for o in outcomes if not o.ok]
    assert failed and all(o.status is None for o in failed), summary(outcomes)
    assert all(recs[o.id][-1][3] == "o2" for o in failed if o.id in recs)
    # Once the resets stop, nothing fails (the last requests, after "pass").
    tail = sorted(outcomes, key=lambda o: o.start)[-300:]
    assert success_ratio(tail) == 1.0, summary(tail)
    rig.check_leaks()


def scenario_all_down_then_back(rig: Rig, route_extra=RETRY_DOWN, cluster_extra=None,
                                recovery_bound: float = 1.0) -> dict:
    """Every origin killed: requests must fail fast. Restarted: requests
    must succeed again within `recovery_bound` seconds."""
    rig.start(route_extra=route_extra, cluster_extra=cluster_extra)
    lc = rig.load()
    assert lc.wait_count(300)
    for o in rig.origins:
        o.kill()
    down_at = time.time()
    n = lc.count()
    assert lc.wait_count(n + 600)
    restart_at = time.time()
    for o in rig.origins:
        o.start()
    back_at = time.time()
    n = lc.count()
    assert lc.wait_count(n + 600)
    outcomes = lc.stop()
    check_records(outcomes, rig.records())
    # Requests wholly inside the outage (a margin for the kills to land).
    down = [o for o in outcomes if down_at + 0.1 < o.start and o.start + o.latency < restart_at]
    first_ok_after = min((o.start + o.latency for o in outcomes
                          if o.ok and o.start >= back_at), default=None)
    return {"outcomes": outcomes, "down": down, "back_at": back_at,
            "first_ok_after": first_ok_after}


def test_all_origins_down_then_back(rig):
    r = scenario_all_down_then_back(rig)
    down = r["down"]
    assert len(down) >= 300 and not any(o.ok for o in down)
    # No connect timeout (5 s) is waited for: the refused connects, four
    # attempts each, fail at once. p90, not p99: on the shared 2-core test
    # box scheduling alone puts the p99 of a 0.7 ms answer at 7-14 ms.
    lat = [o.latency for o in down]
    assert percentile(lat, 90) < 0.010 and max(lat) < 0.25, (
        percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), max(lat))
    assert r["first_ok_after"] is not None and r["first_ok_after"] - r["back_at"] < 1.0
    after = [o for o in r["outcomes"] if o.start > r["first_ok_after"]]
    assert success_ratio(after) >= 0.999, summary(after)
    rig.check_leaks()


# ------------------------------------------------------------------ bars of the resilience features

OUTLIER = {"outlier_detection": {"consecutive_5xx": 5, "interval": "1s",
                                 "base_ejection_time": "30s", "max_ejection_percent": 100}}


def test_an_ejected_endpoint_gets_no_request_until_its_ejection_ends(rig):
    # o2 answers 503 to everything. Once ejected (5 consecutive 5xx), zero
    # requests reach it during base_ejection_time (30 s > the scenario).
    rig.start(behaviours=({}, {}, {"fail_rate": 1.0}), cluster_extra=OUTLIER)
    lc = rig.load()
    assert lc.wait_count(2000)
    outcomes = lc.stop()
    check_records(outcomes, rig.records())
    bad = rig.origins[2].records()
    # Ejection after the 5th consecutive 5xx; requests already in flight at
    # that moment (at most one per client connection) may still land.
    assert len(bad) <= 5 + lc.connections, f"{len(bad)} requests reached the ejected endpoint"
    st = rig.mesh.cluster_stats()
    assert st["outlier_detection.ejections_enforced_consecutive_5xx"] == 1, st
    assert st["outlier_detection.ejections_active"] == 1, st
    assert success_ratio(outcomes) >= 0.999, summary(outcomes)
    rig.check_leaks()


def test_kill_restart_with_outlier_detection(rig):
    # A shorter ejection than the scenario's wait for the restarted origin
    # (10 s): it must come back into service once its ejection ends.
    od = {"outlier_detection": OUTLIER["outlier_detection"] | {"base_ejection_time": "2s"}}
    outcomes = scenario_kill_restart(rig, cluster_extra=od)
    st = rig.mesh.cluster_stats()
    assert st["outlier_detection.ejections_enforced_total"] >= 1, st
    assert success_ratio(outcomes) >= 0.999, summary(outcomes)
    rig.check_leaks()


HEALTH = {"health_checks": [{"timeout": "0.5s", "interval": "1s", "unhealthy_threshold": 1,
                             "healthy_threshold": 1, "http_health_check": {"path": "/health"}}]}


def test_all_down_then_back_with_health_checks(rig):
    # Down: requests fail in under 10 ms; back: served again within one
    # health-check interval.
    r = scenario_all_down_then_back(rig, cluster_extra=HEALTH)
    lat = [o.latency for o in r["down"]]
    assert lat and percentile(lat, 90) < 0.010 and max(lat) < 0.25
    assert r["first_ok_after"] is not None and r["first_ok_after"] - r["back_at"] < 1.0
    rig.check_leaks()


# max_retries 1000: the budget, not Envoy's default of 3 concurrent
# retries, is what must bound them (Envoy: a retry_budget replaces max_retries).
BUDGET = {"circuit_breakers": {"thresholds": [{"max_retries": 1000, "retry_budget": {
    "budget_percent": {"value": 20.0}, "min_retry_concurrency": 3}}]}}


def test_retries_stay_within_the_budget_when_every_origin_fails(rig):
    # Every origin answers 503: the attempts the origins see stay within the
    # offered load plus the budget (20 % of it, at least 3 concurrent).
    # Envoy's budget caps *concurrent* retries at 20 % of the requests in
    # flight: it bites when requests are in flight together, so the origins
    # answer after a delay (fault proxies) under 30 closed-loop connections
    # (a fast origin behind 6 paced connections leaves at most a request or
    # two in the proxy at once, and the floor of 3 lets every retry through).
    rig.start(behaviours=({"fail_rate": 1.0},) * 3, cluster_extra=BUDGET,
              fault_in_front=(0, 1, 2))
    for fp in rig.faults:
        fp.set_mode("delay", delay=0.01)
    lc = rig.load(connections=30, interval=0)
    assert lc.wait_count(1000, timeout=30)
    outcomes = lc.stop()
    attempts = sum(len(rs) for rs in rig.records().values())
    assert attempts <= len(outcomes) * 1.2 + 3 * lc.connections, (attempts, len(outcomes))
    st = rig.mesh.stats()["clusters"]["origin"]
    assert st["upstream_rq_retry_overflow"] > 0 and st["upstream_rq_retry"] > 0, st
    for fp in rig.faults:
        fp.set_mode("pass")
    rig.check_leaks()


# ------------------------------------------------------------------ each fault mode through the proxy

@pytest.mark.parametrize("mode", ["delay", "slice", "half_close", "blackhole"])
def test_each_fault_mode_between_the_proxy_and_its_origin(rig, mode):
    # One origin, the fault proxy between it and fastmesh. Delayed and
    # single-byte responses are served whole; a response cut by a FIN after
    # 1000 bytes ends the client's connection (never a short body passed off
    # as whole); a blackholed upstream is answered 504 at the route timeout.
    body = 3000 if mode == "slice" else 20000     # sliced: a write per byte
    rig.start(behaviours=({"body": body},), fault_in_front=(0,),
              route_extra={**RETRY, "timeout": 0.5})
    fp = rig.faults[0]
    fp.set_mode(mode, delay=0.05, after=1000, byte_pause=0)
    outcomes = [one_request(rig.mesh.address, f"{mode}-{i}") for i in range(4)]
    check_records(outcomes, rig.records())
    if mode == "delay":
        assert all(o.ok and o.latency >= 0.1 for o in outcomes), outcomes
    elif mode == "slice":
        assert all(o.ok for o in outcomes), outcomes
        # The answers crossed one byte at a time (counted once a read's
        # last byte went).
        deadline = time.monotonic() + 3
        while fp.counters()["writes_down"] < 4 * body and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fp.counters()["writes_down"] >= 4 * body
    elif mode == "half_close":
        assert all(o.status is None for o in outcomes), outcomes
        assert fp.counters()["half_closes"] == 4
    else:
        assert all(o.status == 504 and 0.5 <= o.latency < 1.0 for o in outcomes), outcomes
        assert rig.origins[0].records() == []
    fp.set_mode("pass")
    assert one_request(rig.mesh.address, f"{mode}-after").ok
    rig.check_leaks()
