"""Worker count from the container's CPU quota (runtime/cpus.py), on fake
cgroup v1 and v2 trees in tmp dirs, and on this machine's real one."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from fastmesh.runtime.cpus import available_cpus, cgroup_cpu_quota


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


def v2_tree(tmp: Path, levels: dict[str, str], own: str = "/kubepods/pod1/ctr") -> tuple[Path, Path]:
    root = tmp / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory\n")
    for rel, cpu_max in levels.items():
        d = root / rel.strip("/") if rel != "/" else root
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(cpu_max + "\n")
    (root / own.strip("/")).mkdir(parents=True, exist_ok=True)
    proc = tmp / "proc_cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def v1_tree(tmp: Path, quota: int, period: int, controller: str = "cpu,cpuacct",
            own: str = "/docker/abc") -> tuple[Path, Path]:
    root = tmp / "cgroup"
    d = root / controller / own.strip("/")
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (d / "cpu.cfs_period_us").write_text(f"{period}\n")
    proc = tmp / "proc_cgroup"
    proc.write_text(f"12:memory:{own}\n4:{controller}:{own}\n0::/\n")
    return root, proc


def test_v2_quota(tmp_path):
    root, proc = v2_tree(tmp_path, {"/kubepods/pod1/ctr": "150000 100000"})
    assert cgroup_cpu_quota(root, proc) == 1.5
    assert available_cpus(root, proc) == min(_affinity(), 2)


def test_v2_no_quota(tmp_path):
    root, proc = v2_tree(tmp_path, {"/kubepods/pod1/ctr": "max 100000"})
    assert cgroup_cpu_quota(root, proc) is None
    assert available_cpus(root, proc) == _affinity()


def test_v2_parent_quota_limits_the_child(tmp_path):
    # the pod's cgroup caps at half a core; the container's own says "max"
    root, proc = v2_tree(tmp_path, {"/kubepods/pod1": "50000 100000",
                                    "/kubepods/pod1/ctr": "max 100000"})
    assert cgroup_cpu_quota(root, proc) == 0.5
    assert available_cpus(root, proc) == 1


def test_v2_namespaced_root(tmp_path):
    # a container with its own cgroup namespace sees "0::/" and its quota at the mount
    root, proc = v2_tree(tmp_path, {"/": "300000 100000"}, own="/")
    assert cgroup_cpu_quota(root, proc) == 3.0


def test_v2_hybrid_unified_mount(tmp_path):
    root = tmp_path / "cgroup"
    (root / "unified" / "sys").mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text("cpu\n")
    (root / "unified" / "sys" / "cpu.max").write_text("100000 100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/sys\n")
    assert cgroup_cpu_quota(root, proc) == 1.0


@pytest.mark.parametrize("controller", ["cpu,cpuacct", "cpu"])
def test_v1_quota(tmp_path, controller):
    root, proc = v1_tree(tmp_path, 250000, 100000, controller)
    assert cgroup_cpu_quota(root, proc) == 2.5
    assert available_cpus(root, proc) == min(_affinity(), 3)


def test_v1_unlimited(tmp_path):
    root, proc = v1_tree(tmp_path, -1, 100000)
    assert cgroup_cpu_quota(root, proc) is None
    assert available_cpus(root, proc) == _affinity()


def test_no_cgroups_at_all(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "nothing", tmp_path / "none") is None
    assert available_cpus(tmp_path / "nothing", tmp_path / "none") == _affinity()


def test_garbage_files_are_ignored(tmp_path):
    root, proc = v2_tree(tmp_path, {"/kubepods/pod1/ctr": "lots 0"})
    assert cgroup_cpu_quota(root, proc) is None


def test_real_machine():
    """This machine's own cgroups: the answer agrees with what the files say."""
    quota = cgroup_cpu_quota()
    cpus = available_cpus()
    assert 1 <= cpus <= _affinity()
    if quota is None:
        assert cpus == _affinity()
    else:
        assert cpus == max(1, min(_affinity(), math.ceil(quota)))


def test_run_defaults_workers_to_available_cpus():
    """`fastmesh run` without --workers starts available_cpus() workers
    (here: the machine's real cgroups), read back from the admin's stats."""
    import http.client
    import json
    import subprocess
    import sys

    from support.origin_proc import free_port
    from support.served import poll

    port, admin = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fastmesh", "run", "--port", str(port),
                             "--admin-port", str(admin)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats: dict = {}

    def started() -> bool:
        try:
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
            c.request("GET", "/stats?format=json")
            stats.update(json.loads(c.getresponse().read()))
            c.close()
            return True
        except (OSError, ValueError):
            return False
    try:
        assert poll(started, 30)
        assert stats["workers"] == available_cpus()
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.parametrize("tree", ["v1", "v2"])
def test_one_core_quota_means_one_worker(tmp_path, tree):
    """A 1-CPU limit gives one worker however many cores the host has."""
    if tree == "v1":
        root, proc = v1_tree(tmp_path, 100000, 100000)
    else:
        root, proc = v2_tree(tmp_path, {"/kubepods/pod1/ctr": "100000 100000"})
    assert available_cpus(root, proc) == 1
