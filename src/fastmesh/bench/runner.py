"""Run the benchmark: start the origin and the proxies, drive the load,
measure, repeat disturbed runs, aggregate.

Layout (with pinning): every proxy on the first usable CPU ("proxy core"),
the load generator and the origin on the second ("load core"). Per scenario
all proxies of that scenario are started once (startup time and idle RSS
are measured then), each gets one warm-up run, then R rounds run the targets
interleaved (direct, fastmesh, envoy, ... , direct, fastmesh, envoy, ...), so
a slow drift of the machine spreads over every target instead of landing on
one. Peak RSS is read when the scenario ends, then its proxies are stopped.

Two comparisons inside one run go beside the ratios to Envoy: fastmesh
against fastmesh-baseline (an older build, `--baseline DIR`) per scenario,
and a filter-cost scenario's fastmesh CPU/req minus the one of the scenario
it adds a filter to (`Scenario.cost_over`).
"""
from __future__ import annotations

import functools
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from fastmesh.bench import procs, tlscerts, tools
from fastmesh.bench.loadgen import LOADGENS, RunResult
from fastmesh.bench.peers import BASELINE, origin_command, peers_for
from fastmesh.bench.scenarios import LARGE_BODY_SIZE, SCENARIOS, SMALL_BODY
from fastmesh.bench.stats import median, ratio, spread

REFERENCE = "envoy"
DIRECT = "direct"
NEW = "fastmesh"             # compared with BASELINE (peers.py) when both ran

# figure key -> (extract from a run record or None for per-scenario figures)
RUN_FIGURES = {
    "requests_per_sec": lambda r: r["requests_per_sec"],
    "latency_p50_ms": lambda r: r["latency_ms"].get("p50"),
    "latency_p99_ms": lambda r: r["latency_ms"].get("p99"),
    "latency_p999_ms": lambda r: r["latency_ms"].get("p99.9"),
    "cpu_us_per_request": lambda r: r["cpu_us_per_request"],
}
RATIO_FIGURES = list(RUN_FIGURES) + ["idle_rss_mib", "peak_rss_mib", "startup_ms"]


class BenchError(Exception):
    """A failure that ends the bench with a message (exit 1)."""


@dataclass
class Options:
    scenarios: list[str]
    proxies: list[str]
    rounds: int = 5
    duration: float = 10.0
    warmup: float = 3.0
    pin: bool = True
    disturb_threshold: float = 0.10   # foreign CPU or steal, in cores, over a run
    max_repeats: int = 2
    progress: object = None           # callable(str) or None (stderr)
    baseline: str | None = None       # --baseline DIR: adds the fastmesh-baseline peer


@dataclass
class Target:
    name: str
    port: int
    proc: procs.Proc | None = None      # None for the direct row
    startup_ms: float | None = None
    idle_rss_kib: int | None = None
    peak_rss_kib: int | None = None
    runs: list = field(default_factory=list)
    repeated: int = 0


def preflight(opts: Options) -> tuple[list[str], list[str], list[str]]:
    """(fatal messages, proxies to run, notes). Fatal: a required tool missing."""
    fatal, notes = [], []
    needed = []  # load generators, the origin (nginx), taskset
    for s in opts.scenarios:
        tool = LOADGENS[SCENARIOS[s].loadgen].tool
        if tool not in needed:
            needed.append(tool)
    needed.append("nginx")
    if opts.pin:
        needed.append("taskset")
    for t in needed:
        if tools.which(t) is None:
            fatal.append(str(tools.MissingTool(t)))
    if any(SCENARIOS[s].origin == "grpc" for s in opts.scenarios):
        try:
            import grpc  # noqa: F401
        except ImportError:
            fatal.append("grpcio not found (the grpc scenario's origin and check): "
                         "pip install grpcio")
    proxies = []
    peers = peers_for(opts.baseline)
    for name in opts.proxies:
        peer = peers.get(name)
        if peer is None:  # fastmesh-baseline without --baseline
            fatal.append(f"{name} needs --baseline DIR (a directory with an older fastmesh build)")
            continue
        why = peer.available()
        if why is None:
            proxies.append(name)
        elif peer.required:
            fatal.append(why)
        else:
            notes.append(f"{name} skipped: {why}")
    return fatal, proxies, notes


def http_get(port: int, path: str = "/", timeout: float = 1.0,
             tls: ssl.SSLContext | None = None) -> tuple[int, bytes] | None:
    """One GET over a fresh connection (TLS with `tls`, verifying the
    server as tlscerts.client_context does): (status, body) or None."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            try:
                s = tlscerts.wrap(s, tls)
            except OSError:
                s.close()
                raise
        with s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
    except OSError:
        return None
    data = b"".join(chunks)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    return status, body


def _responds(port: int, tls: ssl.SSLContext | None = None) -> bool:
    r = http_get(port, "/", timeout=0.5, tls=tls)
    return r is not None and r[0] == 200 and r[1] == SMALL_BODY


class Bench:
    def __init__(self, opts: Options):
        self.opts = opts
        self.say = opts.progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.notes: list[str] = []
        self.peers = peers_for(opts.baseline)
        self.procs = procs.ProcessSet()
        cpus = sorted(os.sched_getaffinity(0))
        if opts.pin and len(cpus) >= 2:
            self.proxy_cpu, self.load_cpu = cpus[0], cpus[1]
        else:
            if opts.pin:
                self.notes.append(f"only {len(cpus)} usable CPU(s): not pinning")
            self.proxy_cpu = self.load_cpu = None
        self.workdir = None
        self.loadgens = {}
        self._tls_client: ssl.SSLContext | None = None

    def _client_tls(self, scenario) -> ssl.SSLContext | None:
        """The readiness checks' client context in the TLS scenarios (it
        verifies the proxy's certificate against the bench's root)."""
        if scenario.scheme != "https":
            return None
        if self._tls_client is None:
            self._tls_client = tlscerts.client_context(tlscerts.files(self.workdir).bundle)
        return self._tls_client

    # ------------------------------------------------------------ lifecycle

    def run(self, proxies: list[str]) -> dict:
        started = time.time()
        tmp = tempfile.TemporaryDirectory(prefix="fastmesh-bench-")
        self.workdir = tmp.name
        try:
            for key in {SCENARIOS[s].loadgen for s in self.opts.scenarios}:
                lg = LOADGENS[key](tools.require(LOADGENS[key].tool))
                lg.prepare(self.workdir)
                self.loadgens[key] = lg
            origin_port = self._start_origin()
            scenarios = {}
            for sname in self.opts.scenarios:
                scenarios[sname] = self._run_scenario(SCENARIOS[sname], proxies, origin_port)
            add_filter_costs(scenarios)
        finally:
            self.procs.close()
            tmp.cleanup()
        return {
            "schema": 1,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "elapsed_s": round(time.time() - started, 1),
            "settings": {
                "scenarios": self.opts.scenarios, "proxies": proxies,
                "rounds": self.opts.rounds, "duration_s": self.opts.duration,
                "warmup_s": self.opts.warmup,
                "pinning": ({"proxy_cpu": self.proxy_cpu, "load_cpu": self.load_cpu}
                            if self.proxy_cpu is not None else None),
                "disturb_threshold_cores": self.opts.disturb_threshold,
                "max_repeats": self.opts.max_repeats,
                "reference": REFERENCE,
                "baseline": ({"dir": self.peers[BASELINE].directory,
                              "commit": self.peers[BASELINE].commit()}
                             if BASELINE in proxies else None),
            },
            "repeated_runs": sum(s["repeated_runs"] for s in scenarios.values()),
            "notes": self.notes,
            "scenarios": scenarios,
        }

    def _start(self, name: str, argv: list[str], cpu: int | None) -> procs.Proc:
        return self.procs.start(name, procs.pin_prefix(cpu) + argv, self.workdir,
                                os.path.join(self.workdir, f"{name}.log"))

    def _wait_responding(self, p: procs.Proc, port: int, timeout: float,
                         check=None) -> float:
        """Poll GET / (or `check(port)`) through `port` until it answers; ms since spawn."""
        deadline = time.monotonic() + timeout
        check = check or _responds
        while time.monotonic() < deadline:
            if check(port):
                return (time.monotonic() - p.spawned_at) * 1000
            if not p.alive():
                raise BenchError(f"{p.name} exited during startup (status {p.popen.returncode}):\n"
                                 f"{p.log_tail()}")
            time.sleep(0.005)
        raise BenchError(f"{p.name} did not answer GET / on port {port} within {timeout:.0f} s:\n"
                         f"{p.log_tail()}")

    def _start_origin(self) -> int:
        port = procs.free_port()
        p = self._start("origin", origin_command(self.workdir, port), self.load_cpu)
        self._wait_responding(p, port, 10)
        r = http_get(port, "/64k")
        if r is None or r[0] != 200 or len(r[1]) != LARGE_BODY_SIZE:
            raise BenchError("origin does not serve /64k correctly")
        self.say(f"origin: nginx on 127.0.0.1:{port}"
                 + (f", pinned to CPU {self.load_cpu} with the load generator; proxies on "
                    f"CPU {self.proxy_cpu}" if self.proxy_cpu is not None else " (no pinning)"))
        return port

    def _start_grpc_origin(self) -> tuple[procs.Proc, int]:
        """The grpc scenario's origin: a grpcio server (grpcorigin.py)."""
        from fastmesh.bench import grpcorigin

        port = procs.free_port()
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        pp = os.environ.get("PYTHONPATH")
        argv = ["env", f"PYTHONPATH={src}{os.pathsep + pp if pp else ''}",
                sys.executable, "-m", "fastmesh.bench.grpcorigin", str(port)]
        p = self._start("grpc-origin", argv, self.load_cpu)
        self._wait_responding(p, port, 20, grpcorigin.call_ok)
        self.say(f"grpc origin: grpcio on 127.0.0.1:{port}")
        return p, port

    def _start_proxy(self, name: str, scenario, origin_port: int) -> Target:
        peer = self.peers[name]
        port = procs.free_port()
        argv = peer.command(self.workdir, scenario.mode, port, origin_port)
        p = self._start(f"{name}-{scenario.name}", argv, self.proxy_cpu)
        t = Target(name, port, p)
        check = None
        tls = self._client_tls(scenario)
        if scenario.origin == "grpc":
            from fastmesh.bench.grpcorigin import call_ok as check
        elif tls is not None:
            check = functools.partial(_responds, tls=tls)
        t.startup_ms = self._wait_responding(p, port, 30, check)
        deadline = time.monotonic() + 10
        while not peer.ready():
            if time.monotonic() > deadline:
                raise BenchError(f"{name} answers but never reports ready")
            time.sleep(0.01)
        if scenario.origin == "grpc":
            time.sleep(0.3)
            t.idle_rss_kib = procs.status_kib(p.pids(), "VmRSS")
            return t
        r = http_get(port, scenario.path, timeout=2, tls=tls)
        if r is None or r[0] != 200 or len(r[1]) != scenario.body_size:
            raise BenchError(f"{name}: GET {scenario.path} through the proxy did not return "
                             f"the {scenario.body_size}-byte body ({r and r[0]})")
        time.sleep(0.3)  # settle; then idle RSS, before any load
        t.idle_rss_kib = procs.status_kib(p.pids(), "VmRSS")
        return t

    # ------------------------------------------------------------ scenarios

    def _run_scenario(self, scenario, proxies: list[str], origin_port: int) -> dict:
        o = self.opts
        self.say(f"[{scenario.name}] {scenario.title}")
        skipped = {}
        origin_proc = None
        if scenario.origin == "grpc":
            origin_proc, origin_port = self._start_grpc_origin()
        # The direct row needs an origin that speaks the load generator's
        # protocol (not so for h2 -> the HTTP/1.1 nginx origin).
        targets = [Target(DIRECT, origin_port)] if scenario.direct else []
        try:
            for name in proxies:
                why = self.peers[name].supports(scenario.mode)
                if why:
                    skipped[name] = why
                    self.say(f"[{scenario.name}] {name} skipped: {why}")
                    continue
                t = self._start_proxy(name, scenario, origin_port)
                self.say(f"[{scenario.name}] {name} up in {t.startup_ms:.0f} ms, "
                         f"idle RSS {t.idle_rss_kib / 1024:.1f} MiB")
                targets.append(t)
            for t in targets:
                self.say(f"[{scenario.name}] warm-up {t.name} ({o.warmup:g} s)")
                self._measure(scenario, t, o.warmup)
            for rnd in range(1, o.rounds + 1):
                for t in targets:
                    self._measured_run(scenario, t, rnd)
            for t in targets:
                if t.proc is not None:
                    t.peak_rss_kib = procs.status_kib(t.proc.pids(), "VmHWM")
        finally:
            for t in targets:
                if t.proc is not None:
                    self.procs.stop(t.proc)
            if origin_proc is not None:
                self.procs.stop(origin_proc)
        return self._aggregate(scenario, targets, skipped)

    def _measured_run(self, scenario, t: Target, rnd: int) -> None:
        o = self.opts
        attempts = []
        for attempt in range(o.max_repeats + 1):
            run = self._measure(scenario, t, o.duration)
            run["round"] = rnd
            run["attempt"] = attempt + 1
            attempts.append(run)
            line = (f"[{scenario.name}] round {rnd}/{o.rounds} {t.name:<9} ... "
                    f"{run['requests_per_sec']:>9,.0f} req/s  p99 {_fmt_ms(run['latency_ms'].get('p99'))}")
            if run["errors"]:
                line += f"  {run['errors']} errors"
            if not run["disturbed"]:
                self.say(line)
                t.runs.append(run)
                return
            if attempt < o.max_repeats:
                t.repeated += 1
                self.say(line + f"  disturbed ({run['disturbance']}), repeating")
            else:
                self.say(line + f"  disturbed ({run['disturbance']})")
        # still disturbed after the repeats: keep the least disturbed attempt
        best = min(attempts, key=lambda r: r["foreign_cpu_cores"] + r["steal_cores"])
        self.say(f"[{scenario.name}] round {rnd}/{o.rounds} {t.name:<9} ... keeping attempt "
                 f"{best['attempt']} (least disturbed), flagged in the JSON")
        t.runs.append(best)

    def _measure(self, scenario, t: Target, duration: float) -> dict:
        lg = self.loadgens[scenario.loadgen]
        url = f"{scenario.scheme}://127.0.0.1:{t.port}{scenario.path}"
        argv = procs.pin_prefix(self.load_cpu) + lg.command(url, scenario, duration)
        proxy_pids = t.proc.pids() if t.proc else []
        ours0 = procs.cpu_seconds(self.procs.all_pids()) + procs.self_and_children_cpu()
        proxy0 = procs.cpu_seconds(proxy_pids)
        stat0 = procs.proc_stat()
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=duration + 60)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        wall = time.monotonic() - t0
        stat1 = procs.proc_stat()
        proxy1 = procs.cpu_seconds(proxy_pids)
        ours1 = procs.cpu_seconds(self.procs.all_pids()) + procs.self_and_children_cpu()
        text = out.decode("utf-8", "replace")
        if p.returncode != 0:
            raise BenchError(f"{lg.tool} failed against {t.name} (status {p.returncode}):\n{text}")
        res: RunResult = lg.parse(text)
        if res.requests == 0:
            raise BenchError(f"{lg.tool} made no request through {t.name}:\n{text}")

        d = stat1["cpu"] - stat0["cpu"]
        foreign = max(0.0, d.busy / procs.CLK_TCK - (ours1 - ours0)) / wall
        steal = d.steal / procs.CLK_TCK / wall
        thr = self.opts.disturb_threshold
        disturbed = foreign > thr or steal > thr
        why = []
        if foreign > thr:
            why.append(f"other processes used {foreign:.0%} of a core")
        if steal > thr:
            why.append(f"hypervisor steal {steal:.0%} of a core")
        proxy_cpu = proxy1 - proxy0
        return {
            "requests": res.requests,
            "duration_s": round(res.duration_s, 3),
            "requests_per_sec": res.requests_per_sec,
            "bytes": res.bytes,
            "latency_ms": res.latency_ms,
            "errors": res.error_count,
            "error_detail": res.errors,
            "proxy_cpu_s": round(proxy_cpu, 3) if t.proc else None,
            "cpu_us_per_request": (proxy_cpu * 1e6 / res.requests) if t.proc else None,
            "foreign_cpu_cores": round(foreign, 3),
            "steal_cores": round(steal, 3),
            "disturbed": disturbed,
            "disturbance": "; ".join(why) or None,
        }

    # ------------------------------------------------------------ aggregation

    def _aggregate(self, scenario, targets: list[Target], skipped: dict) -> dict:
        results = {}
        for t in targets:
            row = {}
            sp = {}
            for key, get in RUN_FIGURES.items():
                values = [get(r) for r in t.runs]
                row[key] = median(values)
                sp[key] = spread(values)
            row["idle_rss_mib"] = t.idle_rss_kib / 1024 if t.idle_rss_kib else None
            row["peak_rss_mib"] = t.peak_rss_kib / 1024 if t.peak_rss_kib else None
            row["startup_ms"] = t.startup_ms
            row["errors"] = sum(r["errors"] for r in t.runs)
            row["requests"] = sum(r["requests"] for r in t.runs)
            row["repeated_runs"] = t.repeated
            row["disturbed_runs_kept"] = sum(1 for r in t.runs if r["disturbed"])
            row["spread"] = sp
            row["runs"] = t.runs
            results[t.name] = row
        ref = results.get(REFERENCE)
        for row in results.values():
            row["ratios"] = ({k: ratio(row[k], ref[k]) for k in RATIO_FIGURES}
                             if ref else None)
        return {
            "title": scenario.title,
            "mode": scenario.mode,
            "loadgen": scenario.loadgen,
            "path": scenario.path,
            "connections": scenario.connections,
            "body_bytes": scenario.body_size,
            "skipped": skipped,
            "repeated_runs": sum(t.repeated for t in targets),
            "results": results,
            "baseline": baseline_comparison(results),
            "filter_cost": None,  # filled by add_filter_costs in the filter-cost scenarios
        }


def baseline_comparison(results: dict) -> dict | None:
    """fastmesh against fastmesh-baseline in one scenario, when both ran:
    `ratios` new / baseline of the medians (as the ratios to Envoy), and the
    spread of the per-round CPU/req ratios (the two ran next to each other in
    every round, so a round's ratio is little touched by drift)."""
    new, base = results.get(NEW), results.get(BASELINE)
    if not new or not base:
        return None
    base_cpu = {r["round"]: r["cpu_us_per_request"] for r in base["runs"]}
    per_round = [ratio(r["cpu_us_per_request"], base_cpu.get(r["round"])) for r in new["runs"]]
    return {
        "new": NEW, "baseline": BASELINE,
        "ratios": {k: ratio(new[k], base[k]) for k in RATIO_FIGURES},
        "cpu_round_ratios": spread(per_round),
    }


def add_filter_costs(scenarios: dict) -> None:
    """For each filter-cost scenario whose `cost_over` scenario ran too:
    fastmesh's CPU/req in it minus fastmesh's CPU/req there (µs)."""
    for sname, sc in scenarios.items():
        over = SCENARIOS[sname].cost_over
        if not over or over not in scenarios:
            continue
        a = sc["results"].get(NEW, {}).get("cpu_us_per_request")
        b = scenarios[over]["results"].get(NEW, {}).get("cpu_us_per_request")
        if a is not None and b is not None:
            sc["filter_cost"] = {"over": over, "proxy": NEW, "cpu_us_per_request": a - b}


def _fmt_ms(v) -> str:
    return "-" if v is None else f"{v:.2f} ms"
