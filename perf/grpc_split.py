"""Where the `grpc` scenario's time goes: CPU per call of every process.

    python perf/grpc_split.py [--rounds 6] [--duration 5] [--perf]

Runs the bench's grpcio origin and h2load on core 1 and fastmesh and Envoy
(the bench's own configs) on core 0, interleaves h2load runs against the two
proxies (A B A B) and prints, per run, calls/s and the CPU microseconds per
call of the origin, of h2load and of the proxy, plus the proxy's voluntary
context switches (how often it slept in epoll) per call. With --perf it also
records core 1 with `perf record -g` during one run per proxy and prints the
share of that core spent waking the proxy (sock_def_readable).

Used for the analysis of the grpc gap in perf/RESULTS.md: core 1 is saturated
in every run, so calls/s = 1 / (origin + h2load CPU per call).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from fastmesh.bench import grpcorigin
from fastmesh.bench.peers import Envoy, Fastmesh
from fastmesh.bench.procs import CLK_TCK

ORIGIN, FM, ENVOY = 18195, 18196, 18197


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sleeps(pid: int) -> int:
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    n += int(line.split()[1])
    return n


def h2load(port: int, duration: int, body: str) -> tuple[int, float]:
    argv = ["taskset", "-c", "1", "/usr/bin/time", "-f", "TIME %U %S", "h2load", "-t1",
            "-c16", "-m10", f"-D{duration}", "-d", body,
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"http://127.0.0.1:{port}{grpcorigin.GRPC_PATH}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    text = out.stdout + out.stderr
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", text).group(1))
    u, s = map(float, re.search(r"TIME ([\d.]+) ([\d.]+)", text).groups())
    return done, u + s


def perf_share(port: int, duration: int, body: str, data: str) -> float | None:
    """Share of core 1 under sock_def_readable (waking a reader) during one run."""
    if shutil.which("perf") is None:
        return None
    load = subprocess.Popen(
        ["taskset", "-c", "1", "h2load", "-t1", "-c16", "-m10", f"-D{duration}", "-d", body,
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{port}{grpcorigin.GRPC_PATH}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    subprocess.run(["perf", "record", "-q", "-C", "1", "-g", "-o", data, "--", "sleep",
                    str(max(1, duration - 1))], capture_output=True)
    load.wait()
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "sym",
                          "-q", "-g", "caller,0.5,callee", "--stdio",
                          "--symbols", "_raw_spin_unlock_irqrestore"],
                         capture_output=True, text=True).stdout
    m = re.search(r"([\d.]+)%--sock_def_readable", rep)
    return float(m.group(1)) if m else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--perf", action="store_true")
    o = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fastmesh-grpc-split-")
    body = os.path.join(work, "req.bin")
    with open(body, "wb") as f:
        f.write(grpcorigin.grpc_frame())
    procs = []

    def start(argv, core):
        p = subprocess.Popen(["taskset", "-c", str(core)] + argv, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(p)
        return p

    try:
        origin = start([sys.executable, "-m", "fastmesh.bench.grpcorigin", str(ORIGIN)], 1)
        fm = start(Fastmesh().command(work, "grpc", FM, ORIGIN), 0)
        env = start(Envoy().command(work, "grpc", ENVOY, ORIGIN), 0)
        deadline = time.monotonic() + 20
        while not all(grpcorigin.call_ok(p) for p in (ORIGIN, FM, ENVOY)):
            if time.monotonic() > deadline:
                raise SystemExit("origin or proxies did not come up")
            time.sleep(0.2)
        rows = {"fastmesh": [], "envoy": []}
        for rnd in range(o.rounds):
            for name, port, proc in (("fastmesh", FM, fm), ("envoy", ENVOY, env)):
                o0, p0, z0 = cpu_s(origin.pid), cpu_s(proc.pid), sleeps(proc.pid)
                n, h = h2load(port, o.duration, body)
                o1, p1, z1 = cpu_s(origin.pid), cpu_s(proc.pid), sleeps(proc.pid)
                row = {"calls_s": n / o.duration, "origin_us": (o1 - o0) * 1e6 / n,
                       "h2load_us": h * 1e6 / n, "proxy_us": (p1 - p0) * 1e6 / n,
                       "proxy_sleeps": (z1 - z0) / n}
                rows[name].append(row)
                print(f"round {rnd + 1} {name:8} {row['calls_s']:7.0f} calls/s  origin "
                      f"{row['origin_us']:6.1f}  h2load {row['h2load_us']:5.1f}  proxy "
                      f"{row['proxy_us']:6.1f} us/call  proxy sleeps {row['proxy_sleeps']:.2f}/call",
                      flush=True)
        med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in rows.items()}
        if o.perf:
            for name, port in (("fastmesh", FM), ("envoy", ENVOY)):
                med[name]["core1_waking_reader_pct"] = perf_share(
                    port, o.duration, body, os.path.join(work, f"perf-{name}.data"))
        print(json.dumps({"medians": med, "ratio_calls": med["fastmesh"]["calls_s"]
                          / med["envoy"]["calls_s"]}, indent=1))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
