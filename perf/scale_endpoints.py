#!/usr/bin/env python3
"""10,000 endpoints, 10% replaced through an endpoint file (issue 11).

For each balancer (least_request, ring_hash, maglev, round_robin):

1. memory: the proxy's RSS with an empty `eds` cluster, then with N
   endpoints (127.a.b.1 on one port, one origin bound to 0.0.0.0 serves them
   all); the difference per endpoint;
2. apply CPU: with no traffic, the CPU time (utime+stime from
   /proc/<pid>/stat, every process of the proxy) used in a fixed window
   after an update file replacing 10% of the endpoints is renamed into place,
   minus the CPU of the same window without an update; the mean over
   --updates updates;
3. stall: a closed-loop client (--connections keep-alive connections, one
   request after the other) runs while the same updates are applied once a
   second: the max latency of the requests sent in the quiet seconds before,
   and of those sent within 0.5 s after each update; and the failures.

With --envoy the same file-based EDS update is measured on Envoy
(`path_config_source` reading a DiscoveryResponse, --concurrency 1): steps 1
and 2 the same way. Results go to stdout as a table (paste into
perf/RESULTS.md) and as JSON with --json.

    python perf/scale_endpoints.py --envoy
    python perf/scale_endpoints.py --mode workers --policies least_request
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.load import LoadClient  # noqa: E402
from support.origin_proc import OriginProc, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def address(i: int) -> str:
    # Distinct loopback addresses: 250 per /16 step
    return f"127.{1 + i // 250}.{i % 250 + 1}.1"


def cla(cluster: str, port: int, lo: int, n: int, response: bool) -> str:
    doc = {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": address(i), "port_value": port}}}}
        for i in range(lo, lo + n)]}]}
    if response:     # what Envoy's path-based EDS reads
        doc = {"version_info": str(lo), "resources": [
            {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
             **doc}]}
    return json.dumps(doc)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])       # utime, stime
    return total / TICK


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def http_get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read()


class Fastmesh:
    name = "fastmesh"

    def __init__(self, tmp: Path, policy: str, origin_port: int, mode: str) -> None:
        self.tmp, self.port, self.admin = tmp, free_port(), free_port()
        self.eds = tmp / "c.json"
        write_atomic(self.eds, cla("c", origin_port, 0, 0, False))
        cfg = {"drain_timeout": 1, "admin": {"address": "127.0.0.1", "port": self.admin},
               "listeners": [{"name": "web", "address": "127.0.0.1", "port": self.port,
                              "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                  {"match": {"prefix": "/"}, "cluster": "c"}]}]}],
               "clusters": [{"name": "c", "type": "eds", "lb": policy,
                             "eds_config": {"path_config_source": {"path": str(self.eds)}}}]}
        if policy in ("ring_hash", "maglev"):
            cfg["clusters"][0]["hash_policy"] = {"header": "x-fault-id"}
        (tmp / "fastmesh.json").write_text(json.dumps(cfg))
        args = ["--single-process"] if mode == "single" else ["--workers", "1"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastmesh", "run", "-c", str(tmp / "fastmesh.json"),
             "--log-level", "warning", *args],
            env={**os.environ, "PYTHONPATH": os.environ.get("SCALE_EXTRA_PATH", "") + str(ROOT / "src")},
            stdout=open(tmp / "fastmesh.log", "wb"), stderr=subprocess.STDOUT)
        self.wait(lambda: http_get(self.admin, "/ready") == b"LIVE\n")

    def wait(self, pred, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.tmp / f"{self.name}.log").read_text()
            try:
                if pred():
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise TimeoutError((self.tmp / f"{self.name}.log").read_text()[-3000:])

    def pids(self) -> list[int]:
        kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                              text=True).stdout.split()
        return [self.proc.pid, *map(int, kids)]

    def successes(self) -> int:
        st = json.loads(http_get(self.admin, "/stats?format=json"))
        return st["clusters"]["c"]["update_success"]

    def write(self, port: int, lo: int, n: int) -> None:
        write_atomic(self.eds, cla("c", port, lo, n, False))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Envoy(Fastmesh):
    name = "envoy"

    def __init__(self, tmp: Path, policy: str, origin_port: int, mode: str) -> None:
        self.tmp, self.port, self.admin = tmp, free_port(), free_port()
        self.eds = tmp / "c.json"
        write_atomic(self.eds, cla("c", origin_port, 0, 0, True))
        route: dict = {"match": {"prefix": "/"}, "route": {"cluster": "c"}}
        if policy in ("ring_hash", "maglev"):
            route["route"]["hash_policy"] = [{"header": {"header_name": "x-fault-id"}}]
        boot = {
            "node": {"id": "scale", "cluster": "scale"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": self.admin}}},
            "static_resources": {
                "listeners": [{"name": "web", "address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": self.port}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                     "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "web",
                            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                                                "routes": [route]}]},
                            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                         "router.v3.Router"}}]}}]}]}],
                "clusters": [{"name": "c", "type": "EDS", "connect_timeout": "5s",
                              "lb_policy": policy.upper(),
                              "eds_cluster_config": {"eds_config": {
                                  "resource_api_version": "V3",
                                  "path_config_source": {"path": str(self.eds)}}}}]}}
        (tmp / "envoy.json").write_text(json.dumps(boot))
        self.proc = subprocess.Popen(
            ["envoy", "-c", str(tmp / "envoy.json"), "--concurrency", "1", "-l", "warning",
             "--base-id", str(os.getpid() % 60000)],
            stdout=open(tmp / "envoy.log", "wb"), stderr=subprocess.STDOUT)
        self.wait(lambda: http_get(self.admin, "/ready").strip() == b"LIVE")

    def successes(self) -> int:
        body = http_get(self.admin, "/stats?filter=^cluster\\.c\\.update_success$").decode()
        return int(body.split(":")[1])

    def write(self, port: int, lo: int, n: int) -> None:
        write_atomic(self.eds, cla("c", port, lo, n, True))


def measure(kind, tmp: Path, policy: str, origin: OriginProc, n: int, updates: int,
            window: float, load: bool, connections: int, mode: str) -> dict:
    p = kind(tmp, policy, origin.port, mode)
    out: dict = {"proxy": kind.name, "policy": policy, "endpoints": n}
    try:
        time.sleep(1.0)
        rss0 = rss_kib(p.pids())
        s = p.successes()
        p.write(origin.port, 0, n)
        p.wait(lambda: p.successes() > s)
        time.sleep(1.0)
        out["rss_empty_kib"], out["rss_full_kib"] = rss0, rss_kib(p.pids())
        out["bytes_per_endpoint"] = round((out["rss_full_kib"] - rss0) * 1024 / n)
        step = n // 10
        # idle baseline: the same window, no update
        pids = p.pids()
        idle = []
        for _ in range(2):
            c0 = cpu_seconds(pids)
            time.sleep(window)
            idle.append(cpu_seconds(pids) - c0)
        base = statistics.mean(idle)
        cpu = []
        lo = 0
        for _ in range(updates):
            lo += step
            s = p.successes()
            c0 = cpu_seconds(pids)
            p.write(origin.port, lo, n)
            time.sleep(window)
            cpu.append(cpu_seconds(pids) - c0 - base)
            p.wait(lambda: p.successes() > s)
        out["apply_cpu_ms"] = round(statistics.mean(cpu) * 1000, 1)
        out["apply_cpu_ms_each"] = [round(c * 1000, 1) for c in cpu]
        if load:
            lc = LoadClient(("127.0.0.1", p.port), connections=connections, interval=0).start()
            time.sleep(3.0)
            marks = []
            for _ in range(updates):
                lo += step
                marks.append(time.time())
                p.write(origin.port, lo, n)
                time.sleep(1.0)
            time.sleep(0.5)
            res = lc.stop()
            first = marks[0]
            quiet = [o.latency for o in res if first - 2.5 < o.start < first - 0.2]
            during = [o.latency for o in res
                      if any(m <= o.start < m + 0.5 for m in marks)]
            out["requests"] = len(res)
            out["failed"] = sum(1 for o in res if not o.ok)
            out["max_latency_quiet_ms"] = round(max(quiet) * 1000, 2)
            out["max_latency_updating_ms"] = round(max(during) * 1000, 2)
            out["p99_quiet_ms"] = round(statistics.quantiles(quiet, n=100)[98] * 1000, 2)
            out["p99_updating_ms"] = round(statistics.quantiles(during, n=100)[98] * 1000, 2)
    finally:
        p.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoints", type=int, default=10000)
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--window", type=float, default=1.5, help="CPU window per update (s)")
    ap.add_argument("--policies", default="least_request,ring_hash,maglev,round_robin")
    ap.add_argument("--mode", choices=("single", "workers"), default="single")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--envoy", action="store_true", help="measure Envoy's apply too")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scale-"))
    origin = OriginProc("scale", tmp, host="0.0.0.0").start()
    results = []
    try:
        for policy in args.policies.split(","):
            kinds = [Fastmesh] + ([Envoy] if args.envoy and shutil.which("envoy") else [])
            for kind in kinds:
                d = tmp / f"{kind.name}-{policy}"
                d.mkdir()
                r = measure(kind, d, policy, origin, args.endpoints, args.updates,
                            args.window, kind is Fastmesh, args.connections, args.mode)
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        origin.stop()
    print("\n| proxy | policy | apply CPU per 10% update (ms) | bytes/endpoint | max latency "
          "quiet / updating (ms) | p99 quiet / updating (ms) | failed |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['proxy']} | {r['policy']} | {r['apply_cpu_ms']} | {r['bytes_per_endpoint']} | "
              f"{r.get('max_latency_quiet_ms', '-')} / {r.get('max_latency_updating_ms', '-')} | "
              f"{r.get('p99_quiet_ms', '-')} / {r.get('p99_updating_ms', '-')} | "
              f"{r.get('failed', '-')} of {r.get('requests', '-')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if not os.environ.get("SCALE_KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
