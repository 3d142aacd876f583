"""pyperf microbenchmark: what a filter on a listener's chain costs per request.

Each case runs the request-headers stage of a chain made of its filters
followed by the router, over synthetic requests in a C loop
(`fastmesh._core.bench_filter_chain(filters, n)`, which returns the elapsed
seconds for n requests), so the figures are per request, without the I/O:

  router only          the chain every http listener has (no user filter)
  + 1 Python no-op     fastmesh.bench.noop_filters.NoopPythonFilter
                       (on_request_headers returns None)
  + 1 Cython no-op     fastmesh._core.NoopFilter (compiled hooks, no Python call)
  + 5 Python no-op     five NoopPythonFilter: is the cost linear?

The bars (issue 8): one no-op Python filter costs at most 1.5 µs per request,
one no-op Cython filter at most 0.1 µs; the whole-proxy view of the same
question is `fastmesh bench --scenarios h1,h1-pyfilter,h1-cyfilter`
(docs/bench.md). After a full run the script prints each case minus the
router-only case; `--summary FILE` prints the same from a saved run:

    python perf/bench_filters.py --fast -o /tmp/filters.json
    python perf/bench_filters.py --summary /tmp/filters.json

pyperf's numbers are per loop, and one loop is INNER requests, divided back
(`inner_loops`): they read as time per request.
"""
import sys

import pyperf

from fastmesh import _core

INNER = 100   # requests per pyperf loop

ROUTER_ONLY = "filters: router only"
PY1 = "filters: + 1 Python no-op"
CY1 = "filters: + 1 Cython no-op"
PY5 = "filters: + 5 Python no-op"
# (case, what it is compared with, how many filters it adds, bar in seconds or None)
DIFFS = [(PY1, "one Python no-op filter", 1, 1.5e-6),
         (CY1, "one Cython no-op filter", 1, 0.1e-6),
         (PY5, "five Python no-op filters", 5, None)]


def chain_time(loops: int, filters: list) -> float:
    # bench_filter_chain times its own C loop (perf_counter), so the call into
    # it is not part of the figure.
    return _core.bench_filter_chain(filters, loops * INNER)


def cases() -> list:
    """(name, filters) per case; fails with a message while _core lacks the hooks."""
    missing = [n for n in ("bench_filter_chain", "NoopFilter") if not hasattr(_core, n)]
    if missing:
        sys.exit(f"perf/bench_filters.py: fastmesh._core has no {', '.join(missing)} "
                 f"(rebuild: python setup.py build_ext --inplace)")
    from fastmesh.bench.noop_filters import NoopPythonFilter

    return [(ROUTER_ONLY, []),
            (PY1, [NoopPythonFilter()]),
            (CY1, [_core.NoopFilter()]),
            (PY5, [NoopPythonFilter() for _ in range(5)])]


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e9:,.1f} ns" if abs(seconds) < 1e-6 else f"{seconds * 1e6:.3f} µs"


def summary(means: dict) -> str:
    """The cost of each filter case over the router-only chain, per request,
    against the bars. `means`: benchmark name -> mean seconds per request."""
    base = means.get(ROUTER_ONLY)
    if base is None:
        return f"no '{ROUTER_ONLY}' result: nothing to subtract from"
    lines = [f"per request, over '{ROUTER_ONLY}' ({_fmt(base)}):"]
    for name, what, n, bar in DIFFS:
        if name not in means:
            continue
        cost = means[name] - base
        line = f"  {what}: {_fmt(cost)}"
        if n > 1:
            line += f" ({_fmt(cost / n)} each)"
        if bar is not None:
            line += f"  [bar {_fmt(bar)}: {'ok' if cost <= bar else 'OVER'}]"
        lines.append(line)
    return "\n".join(lines)


def summary_from_file(path: str) -> str:
    suite = pyperf.BenchmarkSuite.load(path)
    return summary({b.get_name(): b.mean() for b in suite.get_benchmarks()})


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.argparser.add_argument("--summary", metavar="JSON",
                                  help="print each case minus the router-only chain from a "
                                       "file written with -o, and exit")
    args = runner.parse_args()
    if args.summary:
        print(summary_from_file(args.summary))
        sys.exit(0)
    results = {}
    for name, filters in cases():
        b = runner.bench_time_func(name, chain_time, filters, inner_loops=INNER)
        # None, or a benchmark without values, in pyperf's worker processes
        if b is not None and not args.worker and b.get_nvalue():
            results[name] = b.mean()
    if results and not args.worker:
        print()
        print(summary(results))
