"""How many CPUs this process may really use: the container's quota, not the host's cores.

In a container ``os.cpu_count()`` reports the host's cores (64 on a big node)
while the cgroup may allow half a core; one worker per host core then means
64 processes fighting over that half core. Like Go's automaxprocs and the JVM's
container support, the default worker count comes from the cgroup's CPU
quota, rounded up, capped by the CPUs the process is allowed to run on
(``sched_getaffinity``).

cgroup v2: ``cpu.max`` holds ``"$MAX $PERIOD"`` (``max`` = no quota) in the
process's own cgroup directory. cgroup v1: ``cpu.cfs_quota_us`` (-1 = no
quota) and ``cpu.cfs_period_us`` in the ``cpu`` controller's directory. The
process's cgroup path comes from ``/proc/self/cgroup``; a quota set on a parent
cgroup limits too, so every level up to the mount root is read and the
smallest quota wins.
"""
from __future__ import annotations

import math
import os
from pathlib import Path


def _own_cgroups(proc_cgroup: str) -> tuple[str | None, str | None]:
    """(v2 path, v1 cpu-controller path) of this process, from /proc/self/cgroup text."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _levels(mount: Path, path: str) -> list[Path]:
    """``mount/path`` and each parent directory up to ``mount``, deepest first.

    Inside a container with a cgroup namespace the path is "/" and the mount
    is already the container's own cgroup.
    """
    rel = [p for p in path.strip("/").split("/") if p and p != ".."]
    out = []
    for i in range(len(rel), -1, -1):
        d = mount.joinpath(*rel[:i])
        if d.is_dir():
            out.append(d)
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_quota(directory: Path) -> float | None:
    text = _read(directory / "cpu.max")
    if not text:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(directory: Path) -> float | None:
    quota_text, period_text = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        quota, period = int(quota_text or ""), int(period_text or "")
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_quota(root: str | os.PathLike[str] = "/sys/fs/cgroup",
                     proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup") -> float | None:
    """The CPU quota in CPUs (1.5 = one and a half cores), or None when there is none.

    ``root`` is where cgroups are mounted: the unified (v2) hierarchy itself,
    or for v1 a directory holding ``cpu`` (or ``cpu,cpuacct``). Test code
    points both arguments at a fake tree.
    """
    root = Path(root)
    text = _read(Path(proc_cgroup)) or ""
    v2_path, v1_path = _own_cgroups(text)
    quotas: list[float] = []
    if v2_path is not None:
        # Pure v2: the hierarchy is the mount itself; hybrid hosts mount it at unified/.
        for mount in (root, root / "unified"):
            if (mount / "cgroup.controllers").exists():
                quotas += [q for d in _levels(mount, v2_path) if (q := _v2_quota(d)) is not None]
                break
    if v1_path is not None:
        for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            mount = root / name
            if mount.is_dir():
                quotas += [q for d in _levels(mount, v1_path) if (q := _v1_quota(d)) is not None]
                break
    return min(quotas) if quotas else None


def available_cpus(root: str | os.PathLike[str] = "/sys/fs/cgroup",
                   proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup") -> int:
    """CPUs this process can use: affinity, capped by the cgroup quota rounded up; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
