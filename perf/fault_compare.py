"""fastmesh against Envoy under faults (issue 9): the kill/restart and 503
scenarios of tests/test_fault_scenarios.py, in one run, interleaved.

    PYTHONPATH=src python perf/fault_compare.py [--rounds 2] [--connections 6]

Each round runs, for fastmesh (`fastmesh run --single-process`) and then
Envoy (`envoy --concurrency 1`): three origin processes (tests/support/
origin_proc.py) behind the proxy, tagged keep-alive load (tests/support/
load.py), and

- kill:  one origin SIGKILLed under load, restarted on its port once 3000
         requests went by, then 1500 more;
- 503:   one origin answers 503 to 20 % of requests, 5000 requests.

Both proxies have the same policies, in three variants each (fastmesh's
names and defaults are Envoy's): the route retry policy (retry_on
5xx,connect-failure,refused-stream,gateway-error, num_retries 3, the retry
to another host, Envoy's default back-off) and outlier_detection
consecutive_5xx: 5, with the default circuit breakers (at most 3 retries in
flight per cluster: `fastmesh`, `envoy`); with max_retries 1024 (`-mr`);
with max_retries 1024 and outlier max_ejection_percent 100 (`-od`; the
default, 10 %, ejects none of three hosts: ejections_overflow). Printed per run: requests, success ratio,
failures, ids executed twice at an origin (after a 503, which the policy
allows; after anything else), latency p50/p99/max of all requests.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.load import LoadClient, percentile  # noqa: E402
from support.meshproc import RETRY_ON, EnvoyProc, MeshProc  # noqa: E402
from support.origin_proc import OriginProc  # noqa: E402


KINDS = ("fastmesh", "envoy", "fastmesh-mr", "envoy-mr", "fastmesh-od", "envoy-od")
STATS = {"fastmesh": ("upstream_rq_retry", "upstream_rq_retry_overflow",
                      "upstream_cx_connect_fail", "outlier_detection.ejections_enforced_total",
                      "outlier_detection.ejections_overflow"),
         "envoy": ("upstream_rq_retry", "upstream_rq_retry_overflow",
                   "upstream_cx_connect_fail", "outlier_detection.ejections_enforced_total",
                   "outlier_detection.ejections_overflow")}


def start_proxy(kind: str, tmp: Path, addrs):
    # "": the default circuit breakers (max_retries 3 concurrent);
    # -mr: max_retries 1024; -od: that and max_ejection_percent 100.
    variant = kind.partition("-")[2]
    max_retries = 1024 if variant in ("mr", "od") else None
    eject_pct = 100 if variant == "od" else None
    if kind.startswith("fastmesh"):
        cluster: dict = {"outlier_detection": {"consecutive_5xx": 5}}
        if eject_pct is not None:
            cluster["outlier_detection"]["max_ejection_percent"] = eject_pct
        if max_retries is not None:
            cluster["circuit_breakers"] = {"thresholds": [{"max_retries": max_retries}]}
        return MeshProc(tmp, addrs, {"retry_policy": {"retry_on": RETRY_ON, "num_retries": 3}},
                        cluster)
    return EnvoyProc(tmp, addrs, num_retries=3, consecutive_5xx=5,
                     max_retries=max_retries, max_ejection_percent=eject_pct)


def wait_count(lc: LoadClient, n: int, timeout: float = 60) -> None:
    if not lc.wait_count(n, timeout):
        raise RuntimeError(f"load stalled at {lc.count()} requests")


def run(kind: str, scenario: str, connections: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"fault-{kind}-{scenario}-"))
    behaviours = ({}, {}, {"fail_rate": 0.2} if scenario == "503" else {})
    origins = [OriginProc(f"o{i}", tmp, **b).start() for i, b in enumerate(behaviours)]
    proxy = None
    lc = None
    killed_at = None
    try:
        proxy = start_proxy(kind, tmp, [o.address for o in origins])
        lc = LoadClient(proxy.address, connections=connections).start()
        t0 = time.monotonic()
        if scenario == "kill":
            wait_count(lc, 1000)
            killed_at = time.time()        # the origins' records are in wall-clock time
            origins[1].kill()
            wait_count(lc, lc.count() + 3000)
            origins[1].start()
            wait_count(lc, lc.count() + 1500)
        else:
            wait_count(lc, 5000)
        outcomes = lc.stop()
        elapsed = time.monotonic() - t0
        cs = proxy.cluster_stats()
        counters = {k: cs.get(k, 0) for k in STATS[kind.partition("-")[0]]}
    finally:
        if lc is not None:
            lc.stop()
        if proxy is not None:
            proxy.stop()
        for o in origins:
            o.stop()
    recs = defaultdict(list)
    for o in origins:
        for r in o.records():
            recs[r[0]].append(r)
    twice_after_503 = twice_after_kill = twice_other = 0
    for rs in recs.values():
        rs.sort(key=lambda r: r[2])
        if len(rs) > 1:
            if all(r[1] == "503" for r in rs[:-1]):
                twice_after_503 += 1
            elif killed_at is not None and all(
                    r[3] == "o1" and killed_at - 1.0 <= r[2] <= killed_at + 0.05
                    for r in rs[:-1]):
                # Recorded by the origin (before its answer) just as it was
                # SIGKILLed: the answer never left, the proxy saw a reset,
                # and retry_on 5xx retries that (Envoy's meaning).
                twice_after_kill += 1
            else:
                twice_other += 1
    ok = sum(o.ok for o in outcomes)
    lat = [o.latency for o in outcomes]
    statuses = defaultdict(int)
    for o in outcomes:
        if not o.ok:
            statuses[o.status if o.status is not None else o.error] += 1
    return {"proxy": kind, "scenario": scenario, "requests": len(outcomes),
            "rps": len(outcomes) / elapsed, "ok": ok, "ratio": ok / len(outcomes),
            "failures": dict(statuses), "twice_after_503": twice_after_503,
            "twice_after_kill": twice_after_kill, "twice_other": twice_other, "p50": percentile(lat, 50) * 1e3,
            "p99": percentile(lat, 99) * 1e3, "max": max(lat) * 1e3,
            "counters": counters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=6)
    args = ap.parse_args()
    rows = []
    hdr = (f"{'proxy':11} {'scenario':8} {'requests':>8} {'req/s':>6} {'success':>9} "
           f"{'twice503':>8} {'kill':>5} {'twice!':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  failures")
    print(hdr)
    for _ in range(args.rounds):
        for scenario in ("kill", "503"):
            for kind in KINDS:
                r = run(kind, scenario, args.connections)
                rows.append(r)
                print(f"{r['proxy']:11} {r['scenario']:8} {r['requests']:8} {r['rps']:6.0f} "
                      f"{100 * r['ratio']:8.3f}% {r['twice_after_503']:8} {r['twice_other']:6} "
                      f"{r['p50']:7.2f} {r['p99']:7.2f} {r['max']:7.1f}  {r['failures']} "
                      f"{r['counters']}",
                      flush=True)
    print("\ntotals")
    for kind in KINDS:
        for scenario in ("kill", "503"):
            rs = [r for r in rows if r["proxy"] == kind and r["scenario"] == scenario]
            n, ok = sum(r["requests"] for r in rs), sum(r["ok"] for r in rs)
            print(f"{kind:11} {scenario:8} {n:8} requests, {100 * ok / n:.3f}% succeeded, "
                  f"{n - ok} failed, executed twice: {sum(r['twice_after_503'] for r in rs)} "
                  f"after a 503, {sum(r['twice_after_kill'] for r in rs)} after their origin "
                  f"was killed, {sum(r['twice_other'] for r in rs)} otherwise")


if __name__ == "__main__":
    main()
