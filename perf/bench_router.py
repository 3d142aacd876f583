"""Cost of one route match (fastmesh._router), against a Python baseline.

Each C benchmark calls Router.bench_match(host, target, headers, n): the
request is laid out once like the codec does (buffer + HeaderSlice offsets),
then matched n times in a C loop, so the value pyperf reports is the cost of
one Router.match(). The baseline, timed in the same run over the same routes,
is what a plain Python router would do: a dict lookup of the lowercased host
and a loop of str.startswith over the route prefixes.

    python perf/bench_router.py --fast -o /tmp/router.json
"""
import itertools
import time

import pyperf

from fastmesh._router import HeaderMatch, Route, RouteMatch, Router

MATCHES = 20_000        # matches per timed call (inner loops)

# 20 prefix routes on an exact-domain vhost, a wildcard vhost and a default.
PREFIXES = [f"/svc{i:02d}/" for i in range(20)]


def build_router():
    routes = [(RouteMatch(prefix=p.encode()), Route(p, "cluster", cluster=p)) for p in PREFIXES]
    header_route = (RouteMatch(prefix=b"/", headers=[
        HeaderMatch(b"x-canary", exact=b"1"), HeaderMatch(b"authorization", prefix=b"Bearer ")]),
        Route("canary", "cluster", cluster="canary"))
    return Router([
        ("api", ["api.example.com", "api.example.com:8080"], routes + [header_route]),
        ("wild", ["*.example.com"], routes),
        ("default", ["*"], [(RouteMatch(prefix=b"/"), Route("default", "cluster", cluster="d"))]),
    ])


HEADERS = [(b"User-Agent", b"bench/1.0"), (b"Accept", b"*/*"),
           (b"Authorization", b"Bearer token"), (b"X-Canary", b"1")]

CASES = {
    # name: (host, target, headers)
    "first_route": (b"api.example.com", b"/svc00/items?id=1", HEADERS),
    "route_20": (b"api.example.com", b"/svc19/items?id=1", HEADERS),
    "headers_route": (b"api.example.com", b"/other", HEADERS),
    "wildcard_host": (b"Shop.Example.com", b"/svc10/x", HEADERS),
    "default_host": (b"localhost:8080", b"/x", HEADERS),
}


def c_match(loops, router, host, target, headers):
    t0 = time.perf_counter()
    for _ in range(loops):
        router.bench_match(host, target, headers, MATCHES)
    return time.perf_counter() - t0


def py_match(loops, host, target):
    # the same table in Python: exact dict, then startswith in order
    table = {"api.example.com": PREFIXES}
    h = host.decode()
    t = target.decode()
    t0 = time.perf_counter()
    for _ in range(loops):
        for _ in itertools.repeat(None, MATCHES):
            routes = table.get(h.lower())
            if routes is not None:
                for p in routes:
                    if t.startswith(p):
                        break
    return time.perf_counter() - t0


def main():
    # 10 worker processes (5 with --fast) keep a --fast run near a minute
    runner = pyperf.Runner(processes=10)
    runner.metadata["description"] = "fastmesh route match cost (ns per match)"
    router = build_router()
    results = []
    for name, (host, target, headers) in CASES.items():
        results.append(runner.bench_time_func(f"router_{name}", c_match, router, host, target,
                                              headers, inner_loops=MATCHES))
    for name in ("first_route", "route_20"):
        host, target, _ = CASES[name]
        results.append(runner.bench_time_func(f"py_dict_startswith_{name}", py_match, host,
                                              target, inner_loops=MATCHES))
    if not runner.args.worker:
        print("\nns per match (mean):")
        for bench in results:
            if bench is not None:
                print(f"  {bench.get_name():36s} {bench.mean() * 1e9:8.1f}")


if __name__ == "__main__":
    main()
