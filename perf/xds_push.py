"""xDS pushes under load, fastmesh and Envoy on the same feed, same run
(issue 12's bars).

    python perf/xds_push.py [--pushes 100] [--flips 100] [--eds 10000] [--delta]
                            [--workers N] [--json out.json]

One management server (tests/support/xds_server.py) feeds fastmesh
(`fastmesh run --single-process`, or --workers N) and Envoy
(`--concurrency 1`) the same resources; each proxy has its own listener
port (its per-node LDS). Origins are separate processes that record every
request they serve (support/origin_proc.py), so failures are counted by
the client and by the origins.

1. --pushes pushes under a closed-loop load on both proxies, in turn a
   route change (r1 flips between clusters c1 and c2), an endpoint change
   (a third origin joins or leaves the routed cluster) and a cluster change
   (c4 added or removed, c1's connect_timeout changed: a full apply while
   c1 serves). Each push waits until both proxies ACKed it. Failed
   requests: client outcomes that are not a whole 200, and requests the
   origins saw fail.
2. --flips route flips: push-to-traffic latency, from just before the
   server sends the new route to the first request the new cluster's
   origin serves for that proxy (origin timestamps, same clock).
3. A --eds-endpoint EDS push to a cluster no route uses (addresses that
   are never connected to), 10% of the endpoints replaced, then all of
   them: 5 pushes without load, the CPU (per-thread run time from
   /proc/*/schedstat, the process and its children) each proxy spent from
   the send until both ACKed plus 1 s; then 3 pushes under load, the
   slowest request in flight from the send until 1 s after the ACKs,
   beside the slowest of the quiet second before.

Timings on a shared 2-core machine are noisy; the comparisons are same-run
(both proxies get the same push at the same time).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.load import LoadClient, percentile  # noqa: E402
from support.origin_proc import OriginProc, free_port  # noqa: E402
from support.xds_boot import XdsEnvoy, XdsMesh  # noqa: E402
from support.xds_resources import cla, eds_cluster, http_listener, route_config  # noqa: E402
from support.xds_server import CDS, EDS, LDS, RDS, XdsServer  # noqa: E402



def cpu_seconds(pid: int) -> float:
    """CPU time of pid and its children (workers), all their threads, in
    seconds: the kernel's per-thread run time in ns (/proc/.../schedstat),
    finer than utime+stime's clock ticks."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total / 1e9


class Feed:
    """The resources, and pushing them as a new version."""

    def __init__(self, xds: XdsServer, origins: dict[str, OriginProc], sides) -> None:
        self.xds = xds
        self.o = {n: o.address for n, o in origins.items()}
        self.sides = sides
        self.eps = {"c1": [self.o["o1"]], "c2": [self.o["o2"]]}
        self.route = "c1"
        self.c1_timeout = 1.0
        self.big: list[tuple[str, int]] | None = None
        self.n = 0

    def push(self) -> str:
        self.n += 1
        version = f"v{self.n}"
        clusters = [eds_cluster("c1", self.c1_timeout)] + [eds_cluster(n) for n in self.eps
                                                            if n != "c1"]
        if self.big is not None:
            clusters.append(eds_cluster("big"))
        eds = [cla(n, e) for n, e in self.eps.items()]
        if self.big is not None:
            eds.append(cla("big", self.big))
        self.xds.set(version, {CDS: clusters, EDS: eds,
                               RDS: [route_config("r1", [("/", self.route)])]},
                     per_node={s.node: {LDS: [http_listener("web", s.port, "r1")]}
                               for s in self.sides})
        return version

    def acked(self, version: str, type_url: str, timeout: float = 20.0) -> bool:
        return self.xds.wait_for(lambda ev: all(
            any(e.node == s.node and e.version == version and e.type_url == type_url
                for e in ev) for s in self.sides), timeout)


class Side:
    def __init__(self, node: str, tag: str) -> None:
        self.node, self.tag = node, tag
        self.port = free_port()
        self.proc = None
        self.load: LoadClient | None = None


def first_after(origin: OriginProc, tag: str, t: float) -> float | None:
    for rid, outcome, when, _name in origin.records():
        if rid.startswith(tag) and when >= t:
            return when
    return None


def big_set(n: int, generation: int, fraction: float) -> list[tuple[str, int]]:
    """n endpoints (addresses never connected to) of which `fraction` are
    new in each generation: the first n*fraction move to a port that
    changes with the generation, the others stay."""
    moved = int(n * fraction)
    return [(f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
             10000 + generation if i < moved else 9999) for i in range(n)]


def measure_eds(feed: Feed, sides, n: int, fraction: float) -> dict:
    """5 pushes without load (CPU), then 3 under load (the slowest request)."""
    gen = getattr(feed, "gen", 0)
    cpu: dict[str, list[float]] = {s.node: [] for s in sides}
    feed.big = big_set(n, gen, fraction)
    v = feed.push()
    feed.acked(v, EDS, 60)
    time.sleep(1.0)
    for _ in range(5):
        gen += 1
        feed.big = big_set(n, gen, fraction)
        before = {s.node: cpu_seconds(s.proc.pid) for s in sides}
        v = feed.push()
        if not feed.acked(v, EDS, 60):
            print(f"EDS push {v} not ACKed")
        time.sleep(1.0)
        for s in sides:
            cpu[s.node].append(cpu_seconds(s.proc.pid) - before[s.node])
    stalls: dict[str, list[float]] = {s.node: [] for s in sides}
    baseline: dict[str, list[float]] = {s.node: [] for s in sides}
    for s in sides:
        s.load = LoadClient(("127.0.0.1", s.port), connections=2, interval=0.002,
                            prefix=s.tag + "S").start()
    for _ in range(3):
        time.sleep(1.0)
        t_quiet = time.time()
        time.sleep(1.0)
        gen += 1
        feed.big = big_set(n, gen, fraction)
        t0 = time.time()
        v = feed.push()
        feed.acked(v, EDS, 60)
        time.sleep(1.0)
        t1 = time.time()
        for s in sides:
            with s.load.lock:
                outs = list(s.load.outcomes)
            baseline[s.node] += [o.latency for o in outs if t_quiet <= o.start < t0]
            # In flight at any time from the send until 1 s after both ACKed.
            stalls[s.node] += [o.latency for o in outs
                               if o.start + o.latency >= t0 and o.start < t1]
    failed = {}
    for s in sides:
        outs = s.load.stop()
        failed[s.node] = sum(1 for o in outs if not o.ok)
    feed.gen = gen
    return {
        "endpoints": n, "replaced": int(n * fraction),
        "cpu_ms": {k: [round(x * 1e3, 1) for x in v] for k, v in cpu.items()},
        "cpu_ms_median": {k: round(statistics.median(v) * 1e3, 1) for k, v in cpu.items()},
        "max_latency_ms_around_push": {k: round(max(v) * 1e3, 1) for k, v in stalls.items()},
        "max_latency_ms_quiet_second_before": {k: round(max(v) * 1e3, 1)
                                               for k, v in baseline.items()},
        "failed_requests": failed,
    }


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"n": len(values), "p50_ms": round(percentile(values, 50) * 1e3, 1),
            "p90_ms": round(percentile(values, 90) * 1e3, 1),
            "p99_ms": round(percentile(values, 99) * 1e3, 1),
            "max_ms": round(max(values) * 1e3, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pushes", type=int, default=100)
    ap.add_argument("--flips", type=int, default=100)
    ap.add_argument("--eds", type=int, default=10000)
    ap.add_argument("--delta", action="store_true")
    ap.add_argument("--workers", type=int, default=0, help="fastmesh workers (0: single process)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if shutil.which("envoy") is None:
        print("envoy is not installed")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="xds_push."))
    origins = {n: OriginProc(n, tmp).start() for n in ("o1", "o2", "o3")}
    fm, env = Side("fastmesh", "F"), Side("envoy", "E")
    sides = (fm, env)
    xds = XdsServer().start()
    feed = Feed(xds, origins, sides)
    result: dict = {"mode": "delta" if args.delta else "sotw",
                    "fastmesh": "single process" if not args.workers
                    else f"{args.workers} workers"}
    try:
        v = feed.push()
        fm_args = ("--single-process",) if not args.workers else ("--workers", str(args.workers))
        fm.proc = XdsMesh(tmp, fm.node, xds.port, args.delta, *fm_args)
        env.proc = XdsEnvoy(tmp, env.node, xds.port, args.delta)
        for s in sides:
            s.proc.port = s.port
        assert feed.acked(v, RDS), "the proxies did not ACK the first version"
        time.sleep(0.5)

        # --- 1. pushes under load -------------------------------------------------
        for s in sides:
            s.load = LoadClient(("127.0.0.1", s.port), connections=4, interval=0.005,
                                prefix=s.tag).start()
        time.sleep(0.5)
        kinds = {"route": 0, "endpoints": 0, "cluster": 0}
        for i in range(args.pushes):
            kind = ("route", "endpoints", "cluster")[i % 3]
            kinds[kind] += 1
            if kind == "route":
                feed.route = "c2" if feed.route == "c1" else "c1"
                t = RDS
            elif kind == "endpoints":
                c = feed.route
                base = [feed.o["o1"] if c == "c1" else feed.o["o2"]]
                feed.eps[c] = base if len(feed.eps[c]) > 1 else base + [feed.o["o3"]]
                t = EDS
            else:
                if "c4" in feed.eps:
                    del feed.eps["c4"]
                else:
                    feed.eps["c4"] = [feed.o["o3"]]
                feed.c1_timeout = 2.0 if feed.c1_timeout == 1.0 else 1.0
                t = CDS
            v = feed.push()
            if not feed.acked(v, t):
                print(f"push {v} ({kind}) not ACKed by both within 20s")
            time.sleep(0.05)
        time.sleep(0.5)
        per = {}
        for s in sides:
            outs = s.load.stop()
            records = [r for o in origins.values() for r in o.records() if r[0].startswith(s.tag)]
            origin_failed = sum(1 for r in records if r[1] != "200")
            served = {r[0] for r in records if r[1] == "200"}
            client_failed = [o for o in outs if not o.ok]
            per[s.node] = {"requests": len(outs), "client_failed": len(client_failed),
                           "origin_failed": origin_failed,
                           "ok_at_client_not_at_origin": sum(
                               1 for o in outs if o.ok and o.id not in served),
                           "failures": sorted({f"{o.status} {o.error}" for o in client_failed})}
        result["pushes_under_load"] = {"pushes": args.pushes, "kinds": kinds, **per}
        print("pushes under load:", json.dumps(result["pushes_under_load"], indent=1))

        # --- 2. push to traffic ------------------------------------------------------
        for s in sides:
            s.load = LoadClient(("127.0.0.1", s.port), connections=2, interval=0.002,
                                prefix=s.tag + "L").start()
        lat: dict[str, list[float]] = {s.node: [] for s in sides}
        for _ in range(args.flips):
            feed.route = "c2" if feed.route == "c1" else "c1"
            target = origins["o1" if feed.route == "c1" else "o2"]
            t0 = time.time()
            v = feed.push()
            feed.acked(v, RDS)
            deadline = time.monotonic() + 5
            got: dict[str, float | None] = {s.node: None for s in sides}
            while time.monotonic() < deadline and None in got.values():
                for s in sides:
                    if got[s.node] is None:
                        got[s.node] = first_after(target, s.tag + "L", t0)
                time.sleep(0.01)
            for s in sides:
                if got[s.node] is not None:
                    lat[s.node].append(got[s.node] - t0)
            time.sleep(0.02)
        for s in sides:
            s.load.stop()
        result["push_to_traffic"] = {n: summary(v) for n, v in lat.items()}
        print("push to traffic:", json.dumps(result["push_to_traffic"], indent=1))

        # --- 3. a large EDS push --------------------------------------------------------
        result["eds_push"] = {}
        for label, fraction in (("10% replaced", 0.1), ("all replaced", 1.0)):
            result["eds_push"][label] = measure_eds(feed, sides, args.eds, fraction)
            print(f"EDS push, {args.eds} endpoints, {label}:",
                  json.dumps(result["eds_push"][label], indent=1))
    finally:
        for s in sides:
            if s.load is not None:
                s.load.stop()
            if s.proc is not None:
                s.proc.stop()
        xds.stop()
        for o in origins.values():
            o.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
