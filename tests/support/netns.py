"""Network namespaces for interception tests (root only).

`NetnsPair` makes two namespaces joined by a veth pair: "app" (the client,
fastmesh and the iptables rules, as in a pod) at 10.231.<n>.1 / fd77:<n>::1,
and "srv" (the servers, another host) at 10.231.<n>.2 / fd77:<n>::2. Every
process started through it is stopped, and both namespaces deleted, by
`close()`. `why_not()` says why this machine cannot run such tests (then
they are skipped with that reason).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

TOOLS = ("ip", "iptables-restore", "iptables-save", "ip6tables-restore", "setpriv")


def why_not() -> str | None:
    """None if namespaces with NAT rules can be made here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (apt-get install iptables iproute2 util-linux)"
    probe = f"fmprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"the kernel refuses a network namespace: {r.stderr.strip()}"
    try:
        r = subprocess.run(["ip", "netns", "exec", probe, "iptables", "-t", "nat", "-S"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return f"no iptables nat table in a namespace: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class NetnsPair:
    """Two namespaces joined by a veth pair; see the module docstring."""

    def __init__(self) -> None:
        n = os.getpid() % 200 + 20
        self.tag = f"{os.getpid()}"
        self.app = f"fmapp{self.tag}"
        self.srv = f"fmsrv{self.tag}"
        self.app_ip, self.srv_ip = f"10.231.{n}.1", f"10.231.{n}.2"
        self.app_ip6, self.srv_ip6 = f"fd77:{n}::1", f"fd77:{n}::2"
        self.procs: list[subprocess.Popen] = []
        self._sh(["ip", "netns", "add", self.app])
        self._sh(["ip", "netns", "add", self.srv])
        va, vs = f"fma{self.tag}"[:15], f"fms{self.tag}"[:15]
        self._sh(["ip", "link", "add", va, "type", "veth", "peer", "name", vs])
        self._sh(["ip", "link", "set", va, "netns", self.app])
        self._sh(["ip", "link", "set", vs, "netns", self.srv])
        for ns, dev, ip4, ip6 in ((self.app, va, self.app_ip, self.app_ip6),
                                  (self.srv, vs, self.srv_ip, self.srv_ip6)):
            self.run(ns, ["ip", "link", "set", "lo", "up"])
            self.run(ns, ["ip", "addr", "add", f"{ip4}/24", "dev", dev])
            self.run(ns, ["ip", "-6", "addr", "add", f"{ip6}/64", "dev", dev, "nodad"])
            self.run(ns, ["ip", "link", "set", dev, "up"])

    @staticmethod
    def _sh(argv: list[str]) -> str:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
        return r.stdout

    def run(self, ns: str, argv: list[str], timeout: float = 60, check: bool = True,
            user: int | None = None, **kw) -> subprocess.CompletedProcess:
        """Run argv in namespace ns (as uid `user` if given) to completion."""
        r = subprocess.run(self.argv(ns, argv, user), capture_output=True, text=True,
                           timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {ns}: rc {r.returncode}\n{r.stdout}\n"
                               f"{r.stderr}")
        return r

    @staticmethod
    def argv(ns: str, argv: list[str], user: int | None = None) -> list[str]:
        pre = ["ip", "netns", "exec", ns]
        if user is not None:
            pre += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        return pre + list(argv)

    def start(self, ns: str, argv: list[str], user: int | None = None, **kw) -> subprocess.Popen:
        """Start argv in namespace ns; stopped by close()."""
        p = subprocess.Popen(self.argv(ns, argv, user), start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 10) -> None:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def wait_port(self, ns: str, host: str, port: int, timeout: float = 20) -> None:
        """Until something listens on host:port in ns (a connect from ns succeeds)."""
        deadline = time.monotonic() + timeout
        code = (f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()")
        while time.monotonic() < deadline:
            if self.run(ns, ["python3", "-c", code], check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"nothing listens on {host}:{port} in {ns}")

    def close(self) -> None:
        for p in reversed(self.procs):
            try:
                self.stop(p)
            except ProcessLookupError:
                pass
        self.procs.clear()
        for ns in (self.app, self.srv):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
