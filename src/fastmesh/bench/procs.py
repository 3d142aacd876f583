"""Processes the bench starts, and what /proc says about them and the machine.

Every process is started in its own session (so its process group id is its
pid and Ctrl-C in the terminal reaches only the bench itself), registered in a
`ProcessSet`, and killed as a group when the set is closed: SIGTERM, a short
grace period, then SIGKILL. The bench closes the set in a `finally`, so an
exception or Ctrl-C never leaves a proxy, an origin or a wrk behind.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_prefix(cpu: int | None) -> list[str]:
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


# ---------------------------------------------------------------- /proc reads

def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    return text[text.rfind(")") + 2:].split()


def group_pids(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid` (a proxy and its workers)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        # f[0] = state (field 3), f[2] = pgrp (field 5)
        if f and f[2] == str(pgid) and f[0] != "Z":
            pids.append(int(name))
    return sorted(pids)


def cpu_seconds(pids) -> float:
    """utime + stime (all threads) of the given processes, in seconds."""
    total = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f:
            total += int(f[11]) + int(f[12])  # fields 14, 15
    return total / CLK_TCK


def status_kib(pids, key: str) -> int:
    """Sum of a /proc/<pid>/status memory line (VmRSS, VmHWM) in KiB."""
    total = 0
    for pid in pids:
        text = _read(f"/proc/{pid}/status") or ""
        for line in text.splitlines():
            if line.startswith(key + ":"):
                total += int(line.split()[1])
                break
    return total


@dataclass
class CpuTimes:
    """Jiffy counters of one /proc/stat cpu line."""
    busy: int      # user + nice + system (process time, kernel threads included)
    idle: int      # idle + iowait
    irq: int       # irq + softirq (interrupt work, e.g. loopback networking)
    steal: int     # time the hypervisor gave to another guest

    def __sub__(self, o: "CpuTimes") -> "CpuTimes":
        return CpuTimes(self.busy - o.busy, self.idle - o.idle, self.irq - o.irq,
                        self.steal - o.steal)


def proc_stat() -> dict[str, CpuTimes]:
    """{"cpu": machine-wide, "cpu0": ..., "cpu1": ...} from /proc/stat."""
    out = {}
    for line in (_read("/proc/stat") or "").splitlines():
        if not line.startswith("cpu"):
            break
        name, *vals = line.split()
        v = [int(x) for x in vals] + [0] * 10
        out[name] = CpuTimes(busy=v[0] + v[1] + v[2], idle=v[3] + v[4],
                             irq=v[5] + v[6], steal=v[7])
    return out


def self_and_children_cpu() -> float:
    import resource

    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


# ---------------------------------------------------------------- processes

class Proc:
    """One started process group."""

    def __init__(self, name: str, argv: list[str], cwd: str, log_path: str):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.spawned_at = time.monotonic()
        self.popen = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.pgid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def pids(self) -> list[int]:
        return group_pids(self.pgid)

    def log_tail(self, n: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, grace: float = 3.0) -> None:
        if self.popen.poll() is None or group_pids(self.pgid):
            try:
                os.killpg(self.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self.popen.poll()
                if not group_pids(self.pgid):
                    break
                time.sleep(0.02)
            else:
                try:
                    os.killpg(self.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


class ProcessSet:
    """Everything the bench started; `close()` stops all of it (newest first)."""

    def __init__(self):
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], cwd: str, log_path: str) -> Proc:
        p = Proc(name, argv, cwd, log_path)
        self.procs.append(p)
        return p

    def stop(self, p: Proc) -> None:
        if p in self.procs:
            self.procs.remove(p)
        p.stop()

    def all_pids(self) -> list[int]:
        pids = []
        for p in self.procs:
            pids.extend(p.pids())
        return pids

    def close(self) -> None:
        while self.procs:
            p = self.procs.pop()
            try:
                p.stop()
            except Exception:  # keep stopping the rest
                pass
