"""`fastmesh top` and `fastmesh stats`: the admin's numbers on a terminal.

``top`` polls a running sidecar's ``/dashboard/data`` (admin/dashboard.py)
and prints, per listener, route and cluster, requests/s, the 5xx share,
latency percentiles over the last interval (from the histogram buckets'
difference) and requests in flight; then endpoints, workers and
certificates. It redraws every ``--interval`` seconds; ``--once`` prints one
table (two samples an interval apart) and exits, for scripts and tests.
``stats`` prints ``/stats`` (``--filter``, ``--format``) as the admin serves it.
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from typing import Any
from urllib.parse import quote

from fastmesh.admin.metrics import quantile

KINDS = ("listeners", "routes", "clusters")


def add_arguments(ap: argparse.ArgumentParser, top: bool) -> None:
    ap.add_argument("--admin", default="127.0.0.1:9901",
                    help="the sidecar's admin address HOST:PORT (default 127.0.0.1:9901)")
    if top:
        ap.add_argument("--interval", type=float, default=1.0,
                        help="seconds between samples (default 1)")
        ap.add_argument("--once", action="store_true",
                        help="print one table (two samples an interval apart) and exit")
    else:
        ap.add_argument("--filter", help="only the stats whose name matches this regex")
        ap.add_argument("--format", default="text", choices=["text", "json", "prometheus"])


def _get(admin: str, path: str) -> bytes:
    host, _, port = admin.rpartition(":")
    c = http.client.HTTPConnection(host.strip("[]") or "127.0.0.1", int(port), timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise OSError(f"{path}: HTTP {r.status}: {body[:200]!r}")
        return body
    finally:
        c.close()


def sample(admin: str) -> dict[str, Any]:
    return json.loads(_get(admin, "/dashboard/data"))


def rows(prev: dict[str, Any], cur: dict[str, Any]) -> list[dict[str, Any]]:
    """Per listener, route and cluster: rates and percentiles between two samples."""
    out = []
    dt = max(cur["time"] - prev["time"], 1e-3)
    for kind in KINDS:
        for name in sorted(cur[kind]):
            c, p = cur[kind][name], prev[kind].get(name)
            drq = c["rq"] - p["rq"] if p else 0
            d5 = c["rq_5xx"] - p["rq_5xx"] if p else 0
            buckets = [a - (p["buckets"][i] if p and i < len(p["buckets"]) else 0)
                       for i, a in enumerate(c["buckets"])]
            p50 = quantile(cur["bounds"], buckets, 0.5) if buckets else None
            p99 = quantile(cur["bounds"], buckets, 0.99) if buckets else None
            out.append({"kind": kind[:-1], "name": name, "rps": max(drq, 0) / dt,
                        "err": 100.0 * d5 / drq if drq > 0 else 0.0,
                        "p50_ms": None if p50 is None else p50 * 1000,
                        "p99_ms": None if p99 is None else p99 * 1000,
                        "active": c["active"], "requests": c["rq"]})
    return out


def _f(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render(admin: str, prev: dict[str, Any], cur: dict[str, Any]) -> str:
    ready = sum(1 for w in cur["workers"] if w.get("ready"))
    lines = [f"fastmesh {admin}  {cur['state']}  config v{cur.get('config_version')}  "
             f"workers {ready}/{len(cur['workers'])} ready  uptime {cur['uptime']}s",
             "",
             f"{'KIND':<9} {'NAME':<28} {'REQ/S':>9} {'ERR%':>6} {'P50ms':>8} {'P99ms':>8} "
             f"{'ACTIVE':>6} {'REQUESTS':>10}"]
    for r in rows(prev, cur):
        lines.append(f"{r['kind']:<9} {r['name'][:28]:<28} {r['rps']:>9.1f} {r['err']:>6.1f} "
                     f"{_f(r['p50_ms'], 2):>8} {_f(r['p99_ms'], 2):>8} "
                     f"{'-' if r['active'] is None else r['active']:>6} {r['requests']:>10}")
    lines += ["", f"{'CLUSTER':<20} {'ENDPOINT':<24} {'HEALTH':<22} {'REQUESTS':>9} {'ACTIVE':>6} "
                  f"{'CX':>4}"]
    for cname in sorted(cur["clusters"]):
        row = cur["clusters"][cname]
        for h in row.get("hosts", ()):
            health = ",".join(h["health_flags"]) or "healthy"
            lines.append(f"{cname[:20]:<20} {h['address'][:24]:<24} {health[:22]:<22} "
                         f"{h['rq_total']:>9} {h['rq_active']:>6} {h['cx_active']:>4}")
        if row.get("ejections_active") or row.get("ejections_total"):
            lines.append(f"{cname[:20]:<20} ejected now {row['ejections_active']}, "
                         f"ejections so far {row['ejections_total']}")
    lines += ["", "WORKERS  " + "  ".join(
        f"#{w['id']} pid {w.get('pid')} {'ready' if w.get('ready') else 'NOT READY'}"
        f" restarts {w.get('restarts', 0)}" for w in cur["workers"])]
    if cur.get("certs"):
        lines.append("CERTS    " + "  ".join(
            f"{c['owner']} {c['kind']}: {c['days_until_expiration']}d"
            for c in cur["certs"]))
    return "\n".join(lines) + "\n"


def run_top(args: argparse.Namespace) -> int:
    try:
        prev = sample(args.admin)
        while True:
            time.sleep(args.interval)
            cur = sample(args.admin)
            text = render(args.admin, prev, cur)
            if args.once:
                sys.stdout.write(text)
                return 0
            # Home and clear, then the table: a refreshing view without curses.
            sys.stdout.write("\x1b[H\x1b[2J" + text)
            sys.stdout.flush()
            prev = cur
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(f"fastmesh top: cannot read {args.admin}: {exc}", file=sys.stderr)
        return 1


def run_stats(args: argparse.Namespace) -> int:
    path = f"/stats?format={args.format}"
    if args.filter:
        path += "&filter=" + quote(args.filter)
    try:
        sys.stdout.write(_get(args.admin, path).decode())
    except OSError as exc:
        print(f"fastmesh stats: cannot read {args.admin}: {exc}", file=sys.stderr)
        return 1
    return 0
