"""A safe process: `user`/`group` drop root once the listeners are bound
(keeping only CAP_NET_BIND_SERVICE), a warning for root without them, and a
loud warning for an admin reachable from the network.

Real `fastmesh run` processes on real privileged ports; what each process
runs as is read from /proc/<pid>/status. Needs root (skipped otherwise).
"""
from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from support.meshproc import Proc, fastmesh_argv

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="dropping root needs root"),
    pytest.mark.timeout(90),
]

NOBODY = pwd.getpwnam("nobody")
CAP_NET_BIND_SERVICE = 1 << 10


def free_low_port(avoid: tuple[int, ...] = ()) -> int:
    """A free port below 1024 (only root, or CAP_NET_BIND_SERVICE, binds it)."""
    for port in range(1023, 700, -1):
        if port in avoid:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


def status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def identity(pid: int) -> tuple[int, int, str, int, int]:
    """(real uid, real gid, supplementary groups, effective caps, permitted caps)."""
    st = status(pid)
    return (int(st["Uid"].split()[0]), int(st["Gid"].split()[0]), st["Groups"],
            int(st["CapEff"], 16), int(st["CapPrm"], 16))


def listener(name: str, port: int) -> str:
    return (f"  - name: {name}\n    address: 127.0.0.1\n    port: {port}\n"
            "    virtual_hosts:\n      - name: all\n        domains: ['*']\n"
            "        routes: [{match: {prefix: /}, cluster: origin}]\n")


class Run(Proc):
    name = "fastmesh"

    def __init__(self, tmp: Path, origin, ports: list[int], *args: str, top: str = "",
                 admin_address: str = "127.0.0.1", admin_extra: str = "",
                 ready: bool = True) -> None:
        super().__init__(tmp)
        self.cfg = self.tmp / "fastmesh.yaml"
        self.origin = origin
        self.write(ports, top, admin_address, admin_extra)
        self.spawn(fastmesh_argv(self.cfg, *args), ready=ready)

    def write(self, ports: list[int], top: str = "", admin_address: str = "127.0.0.1",
              admin_extra: str = "") -> None:
        host, port = self.origin
        self.cfg.write_text(
            f"{top}drain_timeout: 1s\n"
            f"admin: {{address: {admin_address}, port: {self.admin}{admin_extra}}}\n"
            "listeners:\n" + "".join(listener(f"l{p}", p) for p in ports)
            + f"clusters:\n  - name: origin\n    endpoints: [{{address: {host}, port: {port}}}]\n")
        # the supervisor re-reads it on SIGHUP; in single-process mode the
        # dropped process itself does
        os.chmod(self.cfg, 0o644)


def get(port: int, path: str = "/") -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


@pytest.fixture
def public_dir():
    """A directory the dropped process can read (pytest's tmp_path is root's, 0700)."""
    d = Path(tempfile.mkdtemp(prefix="fastmesh-priv-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def runs():
    made: list[Run] = []
    yield made
    for r in made:
        r.stop()


def test_workers_drop_root_after_binding_a_privileged_port(tmp_path, origin, runs):
    port = free_low_port()
    r = Run(tmp_path, origin.address, [port], "--workers", "2", top="user: nobody\ngroup: nogroup\n")
    runs.append(r)
    assert get(port) == 200
    pids = json.loads(r.admin_get("/stats?format=json")[1])["worker_pids"]
    assert len(pids) == 2
    for pid in pids:
        uid, gid, groups, eff, prm = identity(pid)
        assert (uid, gid) == (NOBODY.pw_uid, NOBODY.pw_gid), status(pid)
        assert groups == "" and eff == CAP_NET_BIND_SERVICE and prm == CAP_NET_BIND_SERVICE
    # The supervisor keeps root to restart workers (documented, as nginx's master).
    assert identity(r.pid)[0] == 0
    assert "running as user nobody" in r.output()
    assert "running as root" not in r.output()
    # A reload binds a new privileged port in the dropped workers.
    port2 = free_low_port(avoid=(port,))
    r.write([port, port2], top="user: nobody\ngroup: nogroup\n")
    os.kill(r.pid, signal.SIGHUP)
    assert r.wait(lambda: get(port2) == 200), r.output()
    assert get(port) == 200


def test_single_process_drops_root_and_cannot_get_it_back(public_dir, origin, runs):
    port = free_low_port()
    r = Run(public_dir, origin.address, [port], "--single-process", "--user", "nobody")
    runs.append(r)
    assert get(port) == 200
    uid, gid, groups, eff, prm = identity(r.pid)
    assert (uid, gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert eff == CAP_NET_BIND_SERVICE and prm == CAP_NET_BIND_SERVICE
    # reload (re-read by the dropped process) with a second privileged port
    port2 = free_low_port(avoid=(port,))
    r.write([port, port2])
    os.kill(r.pid, signal.SIGHUP)
    assert r.wait(lambda: get(port2) == 200), r.output()


def test_root_without_user_is_warned_about(tmp_path, origin, runs):
    r = Run(tmp_path, origin.address, [free_low_port()], "--single-process")
    runs.append(r)
    assert "running as root: set `user`" in r.output()
    assert identity(r.pid)[0] == 0


def test_an_unknown_user_stops_the_start_with_a_clear_error(tmp_path, origin):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("listeners:\n" + listener("l", 0).replace("port: 0", "port: 18080")
                   + f"clusters:\n  - name: origin\n    endpoints: [{{address: 127.0.0.1, "
                   f"port: {origin.address[1]}}}]\n")
    p = subprocess.run(fastmesh_argv(cfg, "--single-process", "--user", "no-such-user-here"),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "user 'no-such-user-here' does not exist" in p.stderr, p.stderr


def test_a_remote_admin_is_refused_unless_allowed_and_then_loudly_logged(tmp_path, origin, runs):
    port = free_low_port()
    refused = Run(tmp_path, origin.address, [port], "--single-process",
                  admin_address="0.0.0.0", ready=False)
    assert refused.proc.wait(30) == 1
    assert "is reachable from the network" in refused.output()
    refused.stop()
    (tmp_path / "remote").mkdir()
    r = Run(tmp_path / "remote", origin.address, [port], "--single-process",
            admin_address="0.0.0.0", admin_extra=", allow_remote: true")
    runs.append(r)
    assert "ADMIN IS REACHABLE FROM THE NETWORK" in r.output()
