"""Load generators: build the command, run it, parse what it prints.

`LOADGENS` maps a scenario's `loadgen` key to a class with
`tool` (the program, for the missing-tool check), `script(workdir)` (write
any helper file once) and `command(url, scenario, duration, workdir)` and
`parse(text) -> RunResult`. wrk drives the HTTP/1.1 scenarios, h2load
(nghttp2) the h2 and grpc ones, `openssl s_time` the full-handshake one.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

# wrk calls done() once at the end with the merged latency histogram (in
# microseconds). Its text output has only p50/75/90/99, so the percentiles,
# exact counters and error counts are also printed here, machine-readably.
WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH summary requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format(
    "BENCH latency_us mean=%.1f max=%d p50=%d p75=%d p90=%d p99=%d p999=%d\n",
    latency.mean, latency.max, latency:percentile(50), latency:percentile(75),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"""


@dataclass
class RunResult:
    requests: int = 0
    duration_s: float = 0.0
    requests_per_sec: float = 0.0
    bytes: int = 0
    latency_ms: dict = field(default_factory=dict)   # "p50", "p75", "p90", "p99", "p99.9"
    errors: dict = field(default_factory=dict)       # connect/read/write/timeout/status
    raw: str = ""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"bad wrk duration {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def _count(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)([kKMG]?)", text.strip())
    if not m:
        raise ValueError(f"bad wrk count {text!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def parse_wrk(text: str) -> RunResult:
    """Parse wrk's output (with `--latency`, optionally with the BENCH lines
    of WRK_LUA, which are preferred: they are exact and have p99.9)."""
    r = RunResult(raw=text)
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+), ([\d.]+\w*B) read", text, re.M)
    if m:
        r.requests = int(m.group(1))
        r.duration_s = _ms(m.group(2)) / 1000
    m = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    if m:
        r.requests_per_sec = float(m.group(1))
    in_dist = False
    for line in text.splitlines():
        if line.strip().startswith("Latency Distribution"):
            in_dist = True
            continue
        if in_dist:
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)%\s+(\S+)\s*", line)
            if not m:
                in_dist = False
                continue
            pct = m.group(1).rstrip("0").rstrip(".") if "." in m.group(1) else m.group(1)
            r.latency_ms["p" + pct] = _ms(m.group(2))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}
    if m:
        errors.update(connect=int(m.group(1)), read=int(m.group(2)),
                      write=int(m.group(3)), timeout=int(m.group(4)))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    if m:
        errors["status"] = int(m.group(1))
    r.errors = errors

    m = re.search(r"^BENCH summary (.*)$", text, re.M)
    if m:
        kv = dict(p.split("=") for p in m.group(1).split())
        r.requests = int(kv["requests"])
        r.duration_s = int(kv["duration_us"]) / 1e6
        r.bytes = int(kv["bytes"])
        r.errors = {k: int(kv[k]) for k in ("connect", "read", "write", "timeout", "status")}
        if r.duration_s > 0:
            r.requests_per_sec = r.requests / r.duration_s
    m = re.search(r"^BENCH latency_us (.*)$", text, re.M)
    if m:
        kv = dict(p.split("=") for p in m.group(1).split())
        for key, name in (("p50", "p50"), ("p75", "p75"), ("p90", "p90"),
                          ("p99", "p99"), ("p999", "p99.9")):
            r.latency_ms[name] = float(kv[key]) / 1000
        r.latency_ms["mean"] = float(kv["mean"]) / 1000
        r.latency_ms["max"] = float(kv["max"]) / 1000
    return r


class Wrk:
    tool = "wrk"

    def __init__(self, path: str):
        self.path = path
        self.script_path: str | None = None

    def prepare(self, workdir: str) -> None:
        self.script_path = os.path.join(workdir, "bench-wrk.lua")
        with open(self.script_path, "w", encoding="utf-8") as f:
            f.write(WRK_LUA)

    def command(self, url: str, scenario, duration: float) -> list[str]:
        argv = [self.path, f"-t{scenario.threads}", f"-c{scenario.connections}",
                f"-d{max(1, round(duration))}s", "--timeout", "5s", "--latency",
                "-s", self.script_path]
        if scenario.close:
            # wrk reconnects when the response says close: one connection
            # (with TLS, one full handshake) per request.
            argv += ["-H", "Connection: close"]
        return argv + [url]

    def parse(self, text: str) -> RunResult:
        return parse_wrk(text)


_H2LOAD_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_h2load(text: str, log_path: str | None = None) -> RunResult:
    """Parse h2load's summary; percentiles come from its --log-file (one line
    per request: start time, status, duration in microseconds) when given."""
    r = RunResult(raw=text)
    m = re.search(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s, ", text, re.M)
    if m:
        r.duration_s = float(m.group(1)) * _H2LOAD_UNITS_MS[m.group(2)] / 1000
        r.requests_per_sec = float(m.group(3))
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}
    if m:
        r.requests = int(m.group(4))
        errors["read"] = int(m.group(6))
        errors["timeout"] = int(m.group(7))
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if m:
        errors["status"] = int(m.group(3)) + int(m.group(4))
    r.errors = errors
    m = re.search(r"^traffic: \S+ \((\d+)\) total", text, re.M)
    if m:
        r.bytes = int(m.group(1))
    m = re.search(r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+"
                  r"([\d.]+)(us|ms|s)", text, re.M)
    if m:
        r.latency_ms["max"] = float(m.group(3)) * _H2LOAD_UNITS_MS[m.group(4)]
        r.latency_ms["mean"] = float(m.group(5)) * _H2LOAD_UNITS_MS[m.group(6)]
    if log_path and os.path.exists(log_path):
        durs = []
        with open(log_path, encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1].isdigit() and 200 <= int(parts[1]) < 400:
                    durs.append(int(parts[2]))
        durs.sort()
        if durs:
            for name, q in (("p50", 0.50), ("p75", 0.75), ("p90", 0.90), ("p99", 0.99),
                            ("p99.9", 0.999)):
                r.latency_ms[name] = durs[min(len(durs) - 1, int(q * len(durs)))] / 1000
    return r


class H2load:
    """h2load (nghttp2) over h2c with prior knowledge: `connections` clients,
    `streams` concurrent streams each; for gRPC a fixed POST body and the
    gRPC headers."""
    tool = "h2load"

    def __init__(self, path: str):
        self.path = path
        self.workdir: str | None = None
        self.log_path: str | None = None
        self.grpc_body: str | None = None

    def prepare(self, workdir: str) -> None:
        from fastmesh.bench.grpcorigin import grpc_frame

        self.workdir = workdir
        self.grpc_body = os.path.join(workdir, "bench-grpc-request.bin")
        with open(self.grpc_body, "wb") as f:
            f.write(grpc_frame())

    def command(self, url: str, scenario, duration: float) -> list[str]:
        self.log_path = os.path.join(self.workdir or ".", "bench-h2load.log")
        if os.path.exists(self.log_path):
            os.unlink(self.log_path)
        argv = [self.path, f"-t{scenario.threads}", f"-c{scenario.connections}",
                f"-m{scenario.streams}", f"-D{max(1, round(duration))}",
                f"--log-file={self.log_path}"]
        if scenario.mode == "grpc":
            argv += ["-d", self.grpc_body, "-H", "content-type: application/grpc",
                     "-H", "te: trailers"]
        return argv + [url]

    def parse(self, text: str) -> RunResult:
        return parse_h2load(text, self.log_path)


def parse_s_time(text: str) -> RunResult:
    """Parse the output of STime's script: each `openssl s_time` process's
    "N connections in T real seconds, B bytes read per connection", and the
    wall clock around all of them (`BENCH wall_s=...`; s_time's own real
    seconds are whole seconds, too coarse for a rate)."""
    r = RunResult(raw=text)
    conns = [(int(n), int(b)) for n, b in re.findall(
        r"^(\d+) connections in \d+ real seconds, (\d+) bytes read per connection", text, re.M)]
    m = re.search(r"^BENCH wall_s=([\d.]+)", text, re.M)
    r.requests = sum(n for n, _ in conns)
    r.bytes = sum(n * b for n, b in conns)
    r.duration_s = float(m.group(1)) if m else 0.0
    if r.duration_s > 0:
        r.requests_per_sec = r.requests / r.duration_s
    # A process that could not connect prints an error and counts nothing;
    # one that got an empty answer reads 0 bytes per connection.
    failed = len(re.findall(r"^ERROR$", text, re.M))
    r.errors = {"connect": failed, "read": sum(1 for n, b in conns if n and b == 0),
                "write": 0, "timeout": 0, "status": 0}
    if conns and r.duration_s > 0:
        # Each process runs one connection at a time: its mean latency is
        # its wall time over its connections (no percentiles from s_time).
        per = [r.duration_s / n * 1000 for n, _ in conns if n]
        if per:
            r.latency_ms["mean"] = sum(per) / len(per)
    return r


class STime:
    """`openssl s_time -new`: a new connection and a FULL handshake per
    request (it never offers a session; wrk and h2load resume theirs, see
    docs/bench.md), an HTTP/1.0 GET, read to the close. One s_time process
    is one connection at a time, so `connections` processes run side by
    side under one shell, timed together."""
    tool = "openssl"

    def __init__(self, path: str):
        self.path = path

    def prepare(self, workdir: str) -> None:
        pass

    def command(self, url: str, scenario, duration: float) -> list[str]:
        m = re.fullmatch(r"https://([^/]+)(/.*)", url)
        if not m:
            raise ValueError(f"s_time needs an https:// URL, not {url!r}")
        one = (f"{shlex.quote(self.path)} s_time -connect {shlex.quote(m.group(1))} -new "
               f"-www {shlex.quote(m.group(2))} -time {max(1, round(duration))}")
        script = (f"t0=$(date +%s.%N); for i in $(seq {scenario.connections}); do "
                  f"{one} 2>&1 & done; wait; t1=$(date +%s.%N); "
                  f"awk \"BEGIN {{ printf \\\"BENCH wall_s=%.3f\\\\n\\\", $t1 - $t0 }}\"")
        return ["sh", "-c", script]

    def parse(self, text: str) -> RunResult:
        return parse_s_time(text)


LOADGENS = {"wrk": Wrk, "h2load": H2load, "s_time": STime}
