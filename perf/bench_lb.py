"""Cost of one load-balancer pick (fastmesh._lb), against Python baselines.

Each C benchmark calls LoadBalancer.bench_picks(n): n picks in a C loop with
a fresh 64-bit hash key per pick, so the value pyperf reports is the cost of
one pick() through the C vtable (plus the xorshift that makes the key). The
baselines, timed in the same run, are what a pure-Python proxy would do per
request: next() on an itertools.cycle over the weighted schedule, and
random.choices(..., k=1).

    python perf/bench_lb.py --fast -o /tmp/lb.json
"""
import itertools
import random
import time

import pyperf

from fastmesh._lb import make_lb

PICKS = 20_000          # picks per timed call (inner loops)

SCENARIOS = {
    # name: weights
    "w123": [1, 2, 3],
    "n100": [1 + (i * 7) % 10 for i in range(100)],           # uneven, 1..10
}
POLICIES = ["round_robin", "least_request", "random", "ring_hash", "maglev"]


def c_picks(loops, lb):
    t0 = time.perf_counter()
    for i in range(loops):
        lb.bench_picks(PICKS, i + 1)     # new hash keys every call
    return time.perf_counter() - t0


def py_cycle(loops, weights):
    # Python weighted round robin: the smooth schedule expanded once, cycled.
    sched = [i for i, w in enumerate(weights) for _ in range(w)]
    it = itertools.cycle(sched)
    nxt = next
    t0 = time.perf_counter()
    for _ in range(loops):
        for _ in itertools.repeat(None, PICKS):
            nxt(it)
    return time.perf_counter() - t0


def py_choices(loops, weights):
    population = range(len(weights))
    cum = list(itertools.accumulate(weights))
    choices = random.choices
    t0 = time.perf_counter()
    for _ in range(loops):
        for _ in itertools.repeat(None, PICKS):
            choices(population, cum_weights=cum, k=1)[0]
    return time.perf_counter() - t0


def main():
    # 10 worker processes (5 with --fast) keep a --fast run near a minute
    runner = pyperf.Runner(processes=10)
    runner.metadata["description"] = "fastmesh load-balancer pick cost (ns per pick)"
    results = []
    for scen, weights in SCENARIOS.items():
        keys = [f"10.0.{i // 256}.{i % 256}:8080".encode() for i in range(len(weights))]
        for policy in POLICIES:
            lb = make_lb(policy, weights, keys, {"seed": 1})
            name = f"lb_{policy}_{scen}"
            results.append(runner.bench_time_func(name, c_picks, lb, inner_loops=PICKS))
        results.append(runner.bench_time_func(f"py_itertools_cycle_rr_{scen}", py_cycle,
                                              weights, inner_loops=PICKS))
        results.append(runner.bench_time_func(f"py_random_choices_{scen}", py_choices,
                                              weights, inner_loops=PICKS))
    if not runner.args.worker:
        print("\nns per pick (mean):")
        for bench in results:
            if bench is not None:
                print(f"  {bench.get_name():36s} {bench.mean() * 1e9:8.1f}")


if __name__ == "__main__":
    main()
