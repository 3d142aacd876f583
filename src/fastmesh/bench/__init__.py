"""`fastmesh bench`: the whole-proxy benchmark.

Runs a load generator against an nginx origin directly and through each
proxy under test (fastmesh, Envoy, and HAProxy / nginx when installed), all
on 127.0.0.1, configured to do equivalent work, pinned so the proxy has one
core and the load generator plus origin the other. See docs/bench.md.

    fastmesh bench [--scenarios h1,h1-conn1,h1-64k,tcp,h2,grpc]
                   [--proxies fastmesh,envoy,haproxy,nginx] [--baseline DIR]
                   [--rounds N] [--duration S] [--quick] [--json FILE] [--report FILE]
                   [--no-pin]

`--baseline DIR` adds the row `fastmesh-baseline`: the fastmesh package in
DIR (an older build), run exactly like `fastmesh`, in the same rounds.

Modules: `scenarios` (the scenario table), `peers` (origin and proxy
configs), `loadgen` (wrk command and output parser), `procs` (process
groups, /proc readings), `stats` (median/spread), `runner` (orchestration),
`report` (tables, JSON, HTML), `tools` (finding programs, machine info),
`tlscerts` (the TLS scenarios' certificates, from the built-in CA).
"""
from __future__ import annotations

import argparse
import signal
import sys

EXIT_MISSING_TOOL = 2


# Kept here (not imported from the submodules) so that building the `fastmesh`
# argument parser stays cheap for `fastmesh run`; checked against the tables
# in run() and in tests. These are the defaults; EXTRA_SCENARIOS run only
# when named, and fastmesh-baseline comes with --baseline.
SCENARIO_NAMES = ["h1", "h1-conn1", "h1-64k", "tcp", "h2", "grpc"]
EXTRA_SCENARIOS = ["h1-pyfilter", "h1-cyfilter", "h1-ratelimit", "h1-resilience",
                   "tls", "tls-handshake", "tls-resume", "mtls"]
PROXY_NAMES = ["fastmesh", "envoy", "haproxy", "nginx"]
BASELINE = "fastmesh-baseline"


def _csv(text: str) -> list[str]:
    return list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--scenarios", type=_csv, default=list(SCENARIO_NAMES),
                    help=f"comma-separated, default {','.join(SCENARIO_NAMES)}; also "
                         f"{','.join(EXTRA_SCENARIOS)} (what a no-op filter costs "
                         "fastmesh; TLS termination against Envoy)")
    ap.add_argument("--proxies", type=_csv, default=list(PROXY_NAMES),
                    help=f"comma-separated, default {','.join(PROXY_NAMES)} (haproxy and "
                         "nginx are skipped with a note when not installed)")
    ap.add_argument("--baseline", metavar="DIR",
                    help=f"also run the fastmesh package in DIR (an older build) as "
                         f"'{BASELINE}', configured and pinned like fastmesh, in the same "
                         "rounds; the tables show fastmesh / baseline")
    ap.add_argument("--rounds", type=int, default=None, help="measured rounds (default 5)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per run (default 10)")
    ap.add_argument("--quick", action="store_true",
                    help="1 round of 2 s runs, 1 s warm-up: a smoke test, not a measurement")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--report", metavar="FILE", help="write a self-contained HTML report")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the proxy / load generator to separate cores")
    ap.add_argument("--disturb-threshold", type=float, default=0.10, metavar="CORES",
                    help="repeat a run when other processes or steal used more than this "
                         "share of a core during it (default 0.10)")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from fastmesh.bench import report, tools
    from fastmesh.bench.peers import PEERS
    from fastmesh.bench.runner import Bench, BenchError, Options, preflight
    from fastmesh.bench.scenarios import SCENARIOS

    for what, given, known in (("scenario", args.scenarios, list(SCENARIOS)),
                               ("proxy", args.proxies, [*PEERS, BASELINE])):
        bad = [x for x in given if x not in known]
        if bad or not given:
            print(f"fastmesh bench: unknown {what} {', '.join(bad) or '(none given)'}; "
                  f"choose from {','.join(known)}", file=sys.stderr)
            return 2
    proxies = list(args.proxies)
    if BASELINE in proxies and not args.baseline:
        print(f"fastmesh bench: {BASELINE} needs --baseline DIR", file=sys.stderr)
        return 2
    if args.baseline and BASELINE not in proxies:
        # next to fastmesh: the two then run one after the other in every round
        at = proxies.index("fastmesh") + 1 if "fastmesh" in proxies else len(proxies)
        proxies.insert(at, BASELINE)

    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 10.0)
    if rounds < 1 or duration < 1:
        print("fastmesh bench: --rounds must be >= 1 and --duration >= 1", file=sys.stderr)
        return 2
    opts = Options(scenarios=args.scenarios, proxies=proxies, rounds=rounds,
                   duration=duration, warmup=1.0 if args.quick else min(3.0, duration),
                   pin=not args.no_pin, disturb_threshold=args.disturb_threshold,
                   baseline=args.baseline)
    fatal, proxies, notes = preflight(opts)
    if fatal:
        for msg in fatal:
            print(f"fastmesh bench: {msg}", file=sys.stderr)
        return EXIT_MISSING_TOOL
    for n in notes:
        print(f"fastmesh bench: {n}", file=sys.stderr)

    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    bench = Bench(opts)
    bench.notes.extend(notes)
    try:
        data = bench.run(proxies)
    except BenchError as exc:
        print(f"fastmesh bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fastmesh bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    data["machine"] = tools.machine_info()
    if BASELINE in proxies:
        data["machine"]["versions"][BASELINE] = bench.peers[BASELINE].describe()
    print(report.text_tables(data))
    if args.json:
        report.write_json(data, args.json)
        print(f"JSON: {args.json}", file=sys.stderr)
    if args.report:
        report.write_html(data, args.report)
        print(f"HTML report: {args.report}", file=sys.stderr)
    return 0
