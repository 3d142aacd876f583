#!/usr/bin/env python3
"""Zero loss under churn (issue 11): 100 endpoint changes per source (an
`eds` file and `strict_dns` answers) while tagged closed-loop load runs on
both clusters, through `fastmesh run` and origin processes that log what
they served (tests/support/churn.py; tests/test_churn.py is the bounded
version in the suite). Prints, per source: requests, failed, duplicated,
unserved, served by an origin after its removal (beyond 0.5 s), and the
change-to-traffic times (p50/p99/max) to an added endpoint's first request
and a removed one's last.

    python perf/churn.py [--changes 100] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.churn import ChurnRig  # noqa: E402


def pct(xs: list[float], q: int) -> float:
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100)[q - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--origins", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0, help="0: --single-process")
    args = ap.parse_args()
    mode = ("--single-process",) if args.workers == 0 else ("--workers", str(args.workers))
    rig = ChurnRig(Path(tempfile.mkdtemp(prefix="churn-")), origins=args.origins,
                   args=mode).start()
    try:
        of, od = rig.run(changes=args.changes, interval=args.interval)
        rows = []
        for source, outcomes in (("file", of), ("dns", od)):
            v = rig.verdict(outcomes)
            rows.append({
                "source": source, "mode": " ".join(mode), "changes": args.changes,
                "requests": v.requests, "failed": len(v.failed),
                "duplicated": len(v.duplicated), "unserved": len(v.unserved),
                "late": len(v.late),
                "to_new_ms": [round(pct(v.to_new_ms, 50), 1), round(pct(v.to_new_ms, 99), 1),
                              round(max(v.to_new_ms, default=float("nan")), 1)],
                "to_gone_ms": [round(pct(v.to_gone_ms, 50), 1),
                               round(pct(v.to_gone_ms, 99), 1),
                               round(max(v.to_gone_ms, default=float("nan")), 1)]})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        rig.stop()
    print("\n| source | mode | changes | requests | failed | duplicated | late | "
          "to added: p50/p99/max ms | to removed (last request): p50/p99/max ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['mode']} | {r['changes']} | {r['requests']} | {r['failed']} | "
              f"{r['duplicated']} | {r['late']} | {'/'.join(map(str, r['to_new_ms']))} | "
              f"{'/'.join(map(str, r['to_gone_ms']))} |")
    return 0 if all(r["failed"] == r["duplicated"] == r["late"] == r["unserved"] == 0
                    for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
