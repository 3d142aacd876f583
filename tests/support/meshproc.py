"""The proxy under a fault scenario as a real process: `fastmesh run
--single-process` with a config file (MeshProc), or Envoy with an equivalent
v3 bootstrap (EnvoyProc, for perf/fault_compare.py). Both expose the
listener address, readiness through their admin, and the process's open
sockets from /proc/<pid>/fd (the leak check)."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from support.origin_proc import free_port

RETRY_ON = "connect-failure,refused-stream,5xx,gateway-error"


def socket_fds(pid: int) -> int:
    """How many of the process's file descriptors are sockets."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass               # closed while we looked
    return n


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def tcp_connections(pid: int) -> int:
    """How many of the process's sockets are TCP connections (any state but
    LISTEN), from its fds' inodes and /proc/<pid>/net/tcp{,6}."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    n = 0
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[9] in inodes and cols[3] != "0A":     # 0A: LISTEN
                        n += 1
        except FileNotFoundError:
            pass
    return n


def fastmesh_argv(cfg: Path, *args: str) -> list[str]:
    """The command line of `fastmesh run -c cfg args...` with this Python."""
    return [sys.executable, "-m", "fastmesh", "run", "-c", str(cfg), *args]


class Proc:
    """A proxy process under test, started by a subclass (spawn), with its
    listener and admin ports, its output in a log file, and its admin API."""

    name = "proxy"
    stop_timeout = 10.0        # seconds SIGTERM gets before SIGKILL

    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)
        self.port, self.admin = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.log = open(self.tmp / f"{self.name}.log", "w+b")

    def spawn(self, argv: list[str], ready: bool = True, **popen) -> None:
        """Start argv with its output in the log; wait for /ready unless told not to."""
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, **popen)
        if ready:
            self.wait_ready()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def admin_get(self, path: str) -> tuple[int, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def stats(self) -> dict:
        """fastmesh's stats as JSON (EnvoyProc has cluster_stats instead)."""
        return json.loads(self.admin_get("/stats?format=json")[1])

    def wait(self, pred, timeout: float = 20) -> bool:
        """Poll pred() until it holds (True) or the deadline passes (False);
        the process must stay alive meanwhile. A pred that raises (admin not
        up yet, a key not there yet) counts as not holding."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if pred():
                    return True
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        return False

    def wait_for(self, pred, timeout: float = 10.0) -> dict | None:
        """The stats once pred(stats) holds; None on timeout."""
        got: list[dict] = []

        def check() -> bool:
            st = self.stats()
            if pred(st):
                got.append(st)
                return True
            return False

        return got[0] if self.wait(check, timeout) else None

    def wait_ready(self, timeout: float = 30) -> None:
        if not self.wait(lambda: self.admin_get("/ready")[0] == 200, timeout):
            raise AssertionError(f"{self.name} did not become ready:\n" + self.output())

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM (the drain), SIGKILL after stop_timeout; the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return None if self.proc is None else self.proc.returncode


def fastmesh_config(port: int, admin: int, origins, route_extra: dict | None = None,
                    cluster_extra: dict | None = None) -> dict:
    """One http listener, every request to cluster "origin" made of
    `origins` ((host, port) pairs), the route carrying `route_extra`
    (retry_policy, timeout) and the cluster `cluster_extra`."""
    route = {"match": {"prefix": "/"}, "cluster": "origin", **(route_extra or {})}
    cl = {"name": "origin", "endpoints": [{"address": h, "port": p} for h, p in origins],
          **(cluster_extra or {})}
    return {"drain_timeout": 1, "admin": {"address": "127.0.0.1", "port": admin},
            "listeners": [{"name": "web", "address": "127.0.0.1", "port": port,
                           "virtual_hosts": [{"name": "all", "domains": ["*"],
                                              "routes": [route]}]}],
            "clusters": [cl]}


class MeshProc(Proc):
    """`fastmesh run --single-process -c <file>`: one process, its pid is the
    worker's."""

    name = "fastmesh"

    def __init__(self, tmp: Path, origins, route_extra=None, cluster_extra=None) -> None:
        super().__init__(tmp)
        self.cfg = self.tmp / "fastmesh.yaml"
        # JSON is YAML: the loader reads it with its line numbers.
        self.cfg.write_text(json.dumps(fastmesh_config(
            self.port, self.admin, origins, route_extra, cluster_extra), indent=1))
        self.spawn(fastmesh_argv(self.cfg, "--single-process", "--log-level", "warning"))

    def cluster_stats(self) -> dict:
        return self.stats()["clusters"]["origin"]


def envoy_bootstrap(port: int, admin: int, origins, num_retries: int = 3,
                    consecutive_5xx: int = 5, max_retries: int | None = None,
                    max_ejection_percent: int | None = None) -> dict:
    """An Envoy v3 bootstrap equivalent to fastmesh_config with the fault
    scenarios' retry policy, plus outlier_detection consecutive_5xx. A
    retry goes to another host (previous_hosts), as fastmesh's does.
    max_retries sets the cluster's circuit breaker on concurrent retries
    (Envoy's default is 3; fastmesh has no such limit yet);
    max_ejection_percent the outlier detector's (Envoy's default, 10 %,
    ejects none of three hosts: the detection overflows)."""
    od = {"consecutive_5xx": consecutive_5xx}
    if max_ejection_percent is not None:
        od["max_ejection_percent"] = max_ejection_percent
    breakers = ({} if max_retries is None else
                {"circuit_breakers": {"thresholds": [{"max_retries": max_retries}]}})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "web",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "web",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {
                                "cluster": "origin",
                                "retry_policy": {
                                    "retry_on": RETRY_ON,
                                    "num_retries": num_retries,
                                    "retry_host_predicate": [{
                                        "name": "envoy.retry_host_predicates.previous_hosts",
                                        "typed_config": {
                                            "@type": "type.googleapis.com/envoy.extensions."
                                                     "retry.host.previous_hosts.v3."
                                                     "PreviousHostsPredicate"}}],
                                    "host_selection_retry_max_attempts": 3}}}]}]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions."
                                                      "filters.http.router.v3.Router"}}]}}]}]}],
            "clusters": [{
                "name": "origin",
                "type": "STATIC",
                "connect_timeout": "5s",
                "lb_policy": "ROUND_ROBIN",
                "outlier_detection": od,
                **breakers,
                "load_assignment": {"cluster_name": "origin", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {
                        "address": h, "port_value": p}}}} for h, p in origins]}]}}]}}


class EnvoyProc(Proc):
    """`envoy -c <bootstrap> --concurrency 1` (one worker, as fastmesh
    --single-process)."""

    name = "envoy"

    def __init__(self, tmp: Path, origins, **policy) -> None:
        super().__init__(tmp)
        self.cfg = self.tmp / "envoy.json"
        self.cfg.write_text(json.dumps(envoy_bootstrap(self.port, self.admin, origins, **policy),
                                       indent=1))
        self.spawn(["envoy", "-c", str(self.cfg), "--concurrency", "1", "--log-level", "error",
                    "--disable-hot-restart"])

    def cluster_stats(self) -> dict:
        """The origin cluster's counters, Envoy's names without the prefix."""
        body = self.admin_get("/stats?filter=^cluster%5C.origin%5C.")[1].decode()
        out = {}
        for line in body.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name[len("cluster.origin."):]] = int(value)
        return out
