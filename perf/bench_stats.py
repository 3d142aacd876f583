"""pyperf microbenchmark: the stats registry's hot-path writes, per operation.

fastmesh: `blk.v[SLOT] += 1` on a registry block and `Histogram.record()`,
both timed from C loops in fastmesh._stats (`_bench_inc`, `_bench_record`),
with a compiler barrier after each write so that the loop cannot fold them.
Baselines in the same run: a fixed cdef field (how _core counted before
the registry), the same C loop shape; and what a registry with a name lookup
per write costs (a Python dict increment, a Python bisect for a histogram).

    python perf/bench_stats.py --fast -o /tmp/stats.json

pyperf's numbers are per loop, and one loop is one write: they read as ns/op.
"""
from bisect import bisect_left

import pyperf

from fastmesh._stats import (
    HISTOGRAM_BOUNDS, StatsRegistry, _bench_field_inc, _bench_inc, _bench_record,
)

NAMES = ("upstream_rq_total", "upstream_rq_active", "upstream_cx_total")
registry = StatsRegistry()
block = registry.block("cluster", NAMES, ("counter", "gauge", "counter"), {"cluster": "backend"})
hist = registry.histogram("cluster", "upstream_rq_time", {"cluster": "backend"})
VALUES = [0.0002 * 1.35 ** i for i in range(64)]   # the values _bench_record cycles through


def slot_inc(loops: int) -> float:
    t0 = pyperf.perf_counter()
    _bench_inc(block, 0, loops)
    return pyperf.perf_counter() - t0


def field_inc(loops: int) -> float:
    t0 = pyperf.perf_counter()
    _bench_field_inc(loops)
    return pyperf.perf_counter() - t0


def dict_inc(loops: int) -> float:
    d = dict.fromkeys(NAMES, 0)
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        d["upstream_rq_total"] += 1
    return pyperf.perf_counter() - t0


def record(loops: int) -> float:
    t0 = pyperf.perf_counter()
    _bench_record(hist, loops)
    return pyperf.perf_counter() - t0


def bisect_record(loops: int) -> float:
    buckets = [0] * (len(HISTOGRAM_BOUNDS) + 1)
    vals = VALUES
    total = 0.0
    t0 = pyperf.perf_counter()
    for i in range(loops):
        v = vals[i & 63]
        buckets[bisect_left(HISTOGRAM_BOUNDS, v)] += 1
        total += v
    return pyperf.perf_counter() - t0


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.bench_time_func("stats: fastmesh block slot += 1 (C)", slot_inc)
    runner.bench_time_func("stats: baseline cdef field += 1 (C)", field_inc)
    runner.bench_time_func("stats: baseline dict[name] += 1 (Python)", dict_inc)
    runner.bench_time_func("histogram: fastmesh record() (C)", record)
    runner.bench_time_func("histogram: baseline bisect + list (Python)", bisect_record)
