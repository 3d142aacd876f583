"""Transparent interception (issue 14): `fastmesh iptables`, the original
destination (SO_ORIGINAL_DST) and the original_dst cluster, and outbound
protocol detection.

The end-to-end tests build two network namespaces joined by a veth pair
(tests/support/netns.py): "app" holds an unmodified client, fastmesh and
the NAT rules `fastmesh iptables` installs; "srv" holds unmodified servers
(nginx for HTTP/1.1 and h2c, small TCP servers). The client dials the
servers' own addresses; only the rules bring its connections to fastmesh,
and only the original destination tells fastmesh where they were going (the
clusters have no endpoints). Skipped with the reason where this machine
cannot make namespaces or NAT rules.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop

from fastmesh import _core
from fastmesh.control.config import ConfigError, parse_config
from fastmesh.control.compile import build_snapshot
from fastmesh.control.dump import config_to_dict
from fastmesh.sidecar import iptables as ipt
from support.netns import NetnsPair, why_not

SUPPORT = Path(__file__).parent / "support"
SRC = Path(__file__).resolve().parents[1] / "src"
CLIENT_UID = 1337          # the application's user; fastmesh runs as root (uid 0)
OUTBOUND = 15001

# --- the detector, sans-IO ----------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.mark.parametrize("data, kind", [
    (b"GET / HTTP/1.1\r\n", "http1"),
    (b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n", "http1"),
    (b"M-SEARCH * HTTP/1.1\r\n", "http1"),
    (b"OPTIONS ", "http1"),
    (b"G", "need_more"),
    (b"DELET", "need_more"),
    (H2_PREFACE, "http2"),
    (H2_PREFACE + b"\x00\x00\x12\x04", "http2"),
    (H2_PREFACE[:10], "need_more"),
    (b"PRI * HTTP/1.1\r\n", "http1"),       # a method called PRI, not the preface
    (b"PUT", "need_more"),
    (b"\x16\x03\x01\x02\x00\x01", "tls"),
    (b"\x16", "tls"),
    (b"\x16\x01", "tcp"),
    (b"\x00\x00\x00\x01", "tcp"),          # a binary protocol
    (b"get / HTTP/1.1\r\n", "tcp"),        # methods are case-sensitive
    (b" GET", "tcp"),
    (b"HELO example.com\r\n", "http1"),     # looks like a method: the codec answers 400
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "tcp"),  # no method is that long
    (b"", "need_more"),
])
def test_detector(data, kind):
    assert _core.detect(data) == kind


def test_detector_byte_at_a_time_agrees_with_whole():
    # Fed one more byte each time, the answer only goes from need_more to
    # the final one (what the ListenerInspector relies on across reads).
    for whole in (b"GET / HTTP/1.1\r\n", H2_PREFACE, b"\x16\x03\x01", b"SSH-2.0-OpenSSH\r\n"):
        final = _core.detect(whole)
        seen = [_core.detect(whole[:i]) for i in range(1, len(whole) + 1)]
        decided = [k for k in seen if k != "need_more"]
        assert decided and all(k == final for k in decided), (whole, seen)


# --- config -------------------------------------------------------------------

INTERCEPT_CONFIG = """
admin: {address: 127.0.0.1, port: 15000}
listeners:
- name: outbound
  address: "::"
  port: 15001
  use_original_dst: true
  protocol: auto
  protocol_detection_timeout: 100ms
  cluster: passthrough_tcp
  virtual_hosts:
  - {name: all, domains: ["*"], routes: [{match: {prefix: /}, cluster: passthrough}]}
- name: outbound_8080
  address: 0.0.0.0
  port: 8080
  bind_to_port: false
  virtual_hosts:
  - {name: pinned, domains: [pinned.example], routes: [{match: {prefix: /}, cluster: pinned}]}
  - {name: all, domains: ["*"], routes: [{match: {prefix: /}, cluster: passthrough}]}
clusters:
- {name: passthrough, type: original_dst, protocol: auto, cleanup_interval: 30s}
- {name: passthrough_tcp, type: original_dst}
- name: pinned
  endpoints: [{address: SRV_IP, port: 8090}]
"""


def test_config_round_trip_and_snapshot():
    cfg = parse_config(INTERCEPT_CONFIG.replace("SRV_IP", "10.0.0.2"))
    out, tcp = cfg.listeners
    assert out.use_original_dst and out.protocol == "auto" and out.cluster == "passthrough_tcp"
    assert out.protocol_detection_timeout == 0.1
    assert not cfg.listeners[1].bind_to_port
    pt = cfg.clusters[0]
    assert pt.discovery.type == "original_dst" and pt.original_dst.cleanup_interval == 30
    assert parse_config(config_to_dict(cfg)) == cfg
    snap = build_snapshot(cfg)
    assert snap.virtual == {("0.0.0.0", 8080): "outbound_8080"}


@pytest.mark.parametrize("patch, where", [
    ({"endpoints": [{"address": "10.0.0.1", "port": 1}]}, "clusters[0].endpoints"),
    ({"lb": "round_robin"}, "clusters[0].lb"),
    ({"health_checks": []}, "clusters[0].health_checks"),
])
def test_original_dst_cluster_refuses(patch, where):
    doc = {"listeners": [{"name": "o", "port": 1, "protocol": "tcp", "cluster": "p"}],
           "clusters": [{"name": "p", "type": "original_dst", **patch}]}
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    assert where in str(e.value), str(e.value)


def test_auto_listener_needs_cluster_and_timeout_only_on_auto():
    vh = [{"name": "a", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "cluster": "p"}]}]
    cl = [{"name": "p", "type": "original_dst"}]
    with pytest.raises(ConfigError, match="cluster"):
        parse_config({"listeners": [{"name": "o", "port": 1, "protocol": "auto",
                                     "virtual_hosts": vh}], "clusters": cl})
    with pytest.raises(ConfigError, match="protocol_detection_timeout"):
        parse_config({"listeners": [{"name": "o", "port": 1, "virtual_hosts": vh,
                                     "protocol_detection_timeout": "1s"}], "clusters": cl})


# --- fastmesh iptables: rules -------------------------------------------------

def _ipt(*args: str, ns: str | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "fastmesh", "iptables", *args]
    if ns is not None:
        argv = ["ip", "netns", "exec", ns] + argv
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


def test_dry_run_prints_restore_input():
    r = _ipt("--dry-run", "--proxy-uid", "1337", "--exclude-inbound-ports", "15000,22",
             "--exclude-outbound-ports", "5432", "--exclude-outbound-cidrs",
             "10.96.0.0/12,fd00::/8")
    assert r.returncode == 0, r.stderr
    v4, v6 = re.split(r"^# ip6tables-restore.*$", r.stdout, flags=re.M)
    for text, lo, cidr, other in ((v4, "127.0.0.1/32", "10.96.0.0/12", "fd00::/8"),
                                  (v6, "::1/128", "fd00::/8", "10.96.0.0/12")):
        lines = [l for l in text.splitlines() if l and not l.startswith("#")]
        assert lines[0] == "*nat" and lines[-1] == "COMMIT"
        for chain in ipt.CHAINS:
            assert f":{chain} - [0:0]" in lines
        assert "-A PREROUTING -p tcp -j FASTMESH_INBOUND" in lines
        assert "-A OUTPUT -p tcp -j FASTMESH_OUTPUT" in lines
        assert "-A FASTMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in lines
        assert "-A FASTMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in lines
        assert "-A FASTMESH_INBOUND -p tcp --dport 15000 -j RETURN" in lines
        assert "-A FASTMESH_OUTPUT -p tcp --dport 5432 -j RETURN" in lines
        assert f"-A FASTMESH_OUTPUT -d {cidr} -j RETURN" in lines
        assert not any(other in l for l in lines)
        # The loop guard comes before the catch-all redirect.
        own = lines.index("-A FASTMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN")
        assert own < lines.index("-A FASTMESH_OUTPUT -j FASTMESH_REDIRECT")
        assert lines.index(f"-A FASTMESH_OUTPUT -d {lo} -j RETURN") < \
            lines.index("-A FASTMESH_OUTPUT -j FASTMESH_REDIRECT")


def test_dry_run_inbound_port_list():
    r = _ipt("--dry-run", "--no-ipv6", "--inbound-ports", "8080,9090")
    assert r.returncode == 0, r.stderr
    assert "-A FASTMESH_INBOUND -p tcp --dport 8080 -j FASTMESH_IN_REDIRECT" in r.stdout
    assert "-A FASTMESH_INBOUND -p tcp --dport 9090 -j FASTMESH_IN_REDIRECT" in r.stdout
    assert "-A FASTMESH_INBOUND -p tcp -j FASTMESH_IN_REDIRECT" not in r.stdout
    assert "ip6tables" not in r.stdout


REASON = why_not()
needs_netns = pytest.mark.skipif(REASON is not None, reason=f"interception tests: {REASON}")


def _save(ns: str, backend: str, v6: bool) -> str:
    exe = f"{'ip6tables' if v6 else 'iptables'}-{backend}-save"
    return subprocess.run(["ip", "netns", "exec", ns, exe, "-t", "nat"], capture_output=True,
                          text=True, timeout=30, check=True).stdout


def _canon(rule: str) -> tuple[str, ...]:
    # iptables-save prints a rule's matches in its own order, and adds
    # "-m tcp" before --dport: compare the words, not their order.
    return tuple(sorted(rule.replace(" -m tcp ", " ").split()))


@needs_netns
@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_install_twice_then_cleanup_leaves_nothing(backend):
    ns = f"fmipt{os.getpid()}{backend}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        expected = {v6: ipt.rules(ipt.InterceptConfig(), v6) for v6 in (False, True)}
        for _ in range(2):    # a restarted init container: the same rules, once
            r = _ipt("--iptables-backend", backend, ns=ns)
            assert r.returncode == 0, r.stderr
            for v6 in (False, True):
                got = [l for l in _save(ns, backend, v6).splitlines() if l.startswith("-A ")]
                assert sorted(map(_canon, got)) == sorted(map(_canon, expected[v6]))
        r = _ipt("--cleanup", "--iptables-backend", backend, ns=ns)
        assert r.returncode == 0, r.stderr
        for v6 in (False, True):
            assert "FASTMESH" not in _save(ns, backend, v6)
        r = _ipt("--cleanup", "--iptables-backend", backend, ns=ns)   # nothing to do: fine
        assert r.returncode == 0, r.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@needs_netns
def test_backend_detection_follows_existing_rules():
    ns = f"fmdet{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # Some other component (kube-proxy, a CNI) wrote with legacy: use it.
        subprocess.run(["ip", "netns", "exec", ns, "iptables-legacy", "-t", "nat", "-A",
                        "OUTPUT", "-d", "192.0.2.1", "-j", "RETURN"], check=True)
        r = _ipt(ns=ns)
        assert r.returncode == 0, r.stderr
        assert "iptables-legacy" in r.stdout
        assert "FASTMESH_OUTPUT" in _save(ns, "legacy", False)
        assert "FASTMESH" not in _save(ns, "nft", False)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# --- end to end ---------------------------------------------------------------

NGINX_CONF = """
user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
    log_format counts '$server_addr $server_port $server_protocol $status $host';
    access_log {d}/access.log counts;
    {temps}
    keepalive_requests 1000000;
    server {{ listen {srv}:8080; listen [{srv6}]:8080;
             location / {{ return 200 "port 8080\\n"; }} }}
    server {{ listen {srv}:8090; location / {{ return 200 "port 8090\\n"; }} }}
    server {{ listen {srv}:8081 http2; location / {{ return 200 "h2c 8081\\n"; }} }}
}}
"""


class Mesh:
    """The namespaces, the servers in srv and fastmesh in app."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.net = NetnsPair()
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        net, d = self.net, self.tmp
        temps = " ".join(f"{k}_temp_path {d}/{k};" for k in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, temps=temps, srv=net.srv_ip,
                                                        srv6=net.srv_ip6))
        self.nginx = net.start(net.srv, ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.echo = net.start(net.srv, [sys.executable, str(SUPPORT / "tcp_peers.py"), "echo",
                                        net.srv_ip, "9000"], stdout=subprocess.PIPE, text=True)
        self.greeter = net.start(net.srv, [sys.executable, str(SUPPORT / "tcp_peers.py"),
                                           "greeter", net.srv_ip, "2525"],
                                 stdout=subprocess.PIPE, text=True)
        for port in (8080, 8081, 8090, 9000, 2525):
            net.wait_port(net.srv, net.srv_ip, port)
        cfg = d / "fastmesh.yaml"
        cfg.write_text(INTERCEPT_CONFIG.replace("SRV_IP", net.srv_ip))
        self.log = open(d / "fastmesh.log", "w+b")
        env = dict(os.environ, PYTHONPATH=str(SRC))
        self.proxy = net.start(net.app, [sys.executable, "-m", "fastmesh", "run", "-c", str(cfg),
                                         "--single-process", "--log-level", "warning"],
                               stdout=self.log, stderr=subprocess.STDOUT, env=env)
        net.wait_port(net.app, "127.0.0.1", 15000)
        # The proxy runs as root here: uid 0 is the proxy's uid.
        r = _ipt("--proxy-uid", "0", "--exclude-inbound-ports", "15000", ns=net.app)
        assert r.returncode == 0, r.stderr

    def client(self, argv: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
        """An unmodified client in app, as the application's user."""
        return self.net.run(self.net.app, argv, user=CLIENT_UID, timeout=timeout, check=False)

    def served(self) -> list[list[str]]:
        """nginx's access log: one [addr, port, protocol, status, host] per request."""
        text = (self.tmp / "access.log").read_text() if (self.tmp / "access.log").exists() else ""
        return [line.split() for line in text.splitlines()]

    def stats(self) -> dict:
        r = self.net.run(self.net.app, ["curl", "-s", "http://127.0.0.1:15000/stats?format=json"])
        return json.loads(r.stdout)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def close(self) -> None:
        self.net.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    if REASON is not None:
        pytest.skip(f"interception tests: {REASON}")
    for tool in ("nginx", "h2load", "curl"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            pytest.skip(f"interception tests: {tool} is not installed")
    d = tmp_path_factory.mktemp("intercept")
    os.chmod(d, 0o755)
    m = Mesh(d)
    yield m
    m.close()


def _h2load(out: str) -> dict[str, int]:
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    assert m, out
    s = re.search(r"status codes: (\d+) 2xx", out)
    return {"total": int(m[1]), "succeeded": int(m[4]), "failed": int(m[5]),
            "errored": int(m[6]), "timeout": int(m[7]), "2xx": int(s[1]) if s else 0}


def _served(mesh: Mesh, port: str, proto: str | None = None, host: str | None = None) -> int:
    return sum(1 for f in mesh.served() if f[1] == port and (proto is None or f[2] == proto)
               and (host is None or f[4] == host))


N = 10_000


def _lst(mesh: Mesh, name: str, key: str) -> int:
    return mesh.stats()["listeners"][name][key]


def _cl(mesh: Mesh, name: str, key: str) -> int:
    return mesh.stats()["clusters"][name][key]


@needs_netns
def test_http1_10k_through_interception(mesh):
    before = _served(mesh, "8080", "HTTP/1.1")
    rq = _lst(mesh, "outbound_8080", "downstream_rq_2xx")
    r = mesh.client(["h2load", "--h1", "-n", str(N), "-c", "8", f"http://{mesh.net.srv_ip}:8080/"])
    got = _h2load(r.stdout)
    assert got["succeeded"] == N and got["2xx"] == N and got["failed"] == 0, r.stdout
    assert _served(mesh, "8080", "HTTP/1.1") - before == N, mesh.output()
    # Proxied as HTTP by the listener for port 8080 (the hand-off), not spliced.
    assert _lst(mesh, "outbound_8080", "downstream_rq_2xx") - rq == N


@needs_netns
def test_h2c_10k_detected_and_routed_by_original_dst(mesh):
    before = _served(mesh, "8081", "HTTP/2.0")
    rq = _lst(mesh, "outbound", "downstream_rq_2xx")
    up = _cl(mesh, "passthrough", "upstream_rq_total")
    r = mesh.client(["h2load", "-n", str(N), "-c", "4", "-m", "10",
                     f"http://{mesh.net.srv_ip}:8081/"])
    got = _h2load(r.stdout)
    assert got["succeeded"] == N and got["2xx"] == N and got["failed"] == 0, r.stdout
    # h2c from the client, h2c (the client's protocol) to the server.
    assert _served(mesh, "8081", "HTTP/2.0") - before == N, mesh.output()
    # Detected as HTTP/2 on the outbound listener (no listener for 8081) and
    # routed per request to the original destination.
    assert _lst(mesh, "outbound", "downstream_rq_2xx") - rq == N
    assert _cl(mesh, "passthrough", "upstream_rq_total") - up == N


@needs_netns
def test_opaque_tcp_10k_round_trips(mesh):
    cx = _cl(mesh, "passthrough_tcp", "upstream_cx_total")
    r = mesh.client(["python3", str(SUPPORT / "tcp_clients.py"), "echo", mesh.net.srv_ip,
                     "9000", "100", str(N // 100)])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": N, "failed": 0}
    # Each of the 100 connections spliced by the TCP proxy to the echo server.
    assert _cl(mesh, "passthrough_tcp", "upstream_cx_total") - cx == 100


@needs_netns
def test_port_then_host_picks_the_route(mesh):
    # Port 8080 has its own (bind_to_port: false) listener; on it the Host
    # pinned.example goes to cluster "pinned" (the server's port 8090),
    # any other Host to the original destination.
    before90 = _served(mesh, "8090", host="pinned.example")
    before80 = _served(mesh, "8080", host="other.example")
    for host, n, body in (("pinned.example", 50, "port 8090\n"),
                          ("other.example", 30, "port 8080\n")):
        # curl, one keep-alive connection, n requests: the bodies say who answered
        r = mesh.client(["curl", "-sS", "--fail", "--max-time", "20", "-H", f"host: {host}"]
                        + [f"http://{mesh.net.srv_ip}:8080/"] * n)
        assert r.stdout == body * n, r.stderr
    assert _served(mesh, "8090", host="pinned.example") - before90 == 50
    assert _served(mesh, "8080", host="other.example") - before80 == 30


@needs_netns
def test_ipv6_original_destination(mesh):
    before = sum(1 for f in mesh.served() if f[0] == mesh.net.srv_ip6 and f[1] == "8080")
    rq = _lst(mesh, "outbound", "downstream_rq_2xx")
    r = mesh.client(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w",
                     "%{http_code}", f"http://[{mesh.net.srv_ip6}]:8080/"])
    assert r.stdout == "200", r.stderr + mesh.output()
    assert sum(1 for f in mesh.served()
               if f[0] == mesh.net.srv_ip6 and f[1] == "8080") - before == 1
    # Through fastmesh (ip6tables, IP6T_SO_ORIGINAL_DST). Served by the
    # outbound listener itself: outbound_8080 is bound to 0.0.0.0, which an
    # IPv6 destination does not match (as in Envoy).
    assert _lst(mesh, "outbound", "downstream_rq_2xx") - rq == 1


@needs_netns
def test_server_speaks_first_goes_to_tcp_after_the_timeout(mesh):
    tcp_before = mesh.stats()["listeners"]["outbound"].get("downstream_cx_tcp", 0)
    r = mesh.client(["python3", str(SUPPORT / "tcp_clients.py"), "greet", mesh.net.srv_ip,
                     "2525"], timeout=30)
    assert r.returncode == 0, r.stderr + mesh.output()
    out = json.loads(r.stdout)
    assert out["greeting"].startswith("220 fastmesh-test greeter")
    assert out["reply"] == "250 HELO client\r\n"
    # The client waited at least the detection timeout, and not much more.
    assert 0.09 <= out["waited"] < 3.0, out
    assert mesh.stats()["listeners"]["outbound"]["downstream_cx_tcp"] > tcp_before


@needs_netns
def test_counts_and_no_loop(mesh):
    # Every intercepted connection went to the outbound listener and then to
    # the server: nothing looped back (the proxy's own connections are not
    # redirected: a loop would show as a flood of connections on it).
    st = mesh.stats()
    out = st["listeners"]["outbound"]
    served = len(mesh.served())
    assert out["downstream_cx_total"] < 1000, out
    assert served >= 2 * N
    assert st["clusters"]["passthrough"]["upstream_rq_total"] >= 2 * N


# --- the original_dst cluster without interception (loopback, any user) -------

def _marked_origin(mark: bytes):
    async def serve(reader, writer):
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(mark), mark))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
    return serve


async def _get(port: int, headers: str = "") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET / HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_original_dst_cluster_by_header_per_destination_and_cleanup():
    import fastmesh

    async def main() -> None:
        a = await asyncio.start_server(_marked_origin(b"A"), "127.0.0.1", 0)
        b = await asyncio.start_server(_marked_origin(b"B"), "127.0.0.1", 0)
        pa, pb = (s.sockets[0].getsockname()[1] for s in (a, b))
        vh = [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                                                            "cluster": "odst"}]}]
        proxy = fastmesh.Proxy({
            "listeners": [{"name": "web", "address": "127.0.0.1", "port": 0,
                           "virtual_hosts": vh},
                          {"name": "tcp", "address": "127.0.0.1", "port": 0,
                           "protocol": "tcp", "cluster": "odst"}],
            "clusters": [{"name": "odst", "type": "original_dst", "cleanup_interval": "200ms",
                          "original_dst_lb_config": {"use_http_header": True}}]})
        await proxy.start()
        try:
            port = proxy.addresses["web"][1]
            hdr = "x-envoy-original-dst-host: 127.0.0.1:{}\r\n"
            assert await _get(port, hdr.format(pa)) == (200, b"A")
            assert await _get(port, hdr.format(pb)) == (200, b"B")
            assert await _get(port, hdr.format(pa)) == (200, b"A")
            state = proxy._dataplane.worker.cluster("odst")
            assert sorted(e.port for e in state.endpoints) == sorted((pa, pb))
            # A connection that was not redirected has no original destination
            # (the listener itself is not one: no loop): 503 for HTTP, ...
            status, body = await _get(port)
            assert (status, body) == (503, b"no original destination\n")
            # ... closed at once for TCP.
            r, w = await asyncio.open_connection("127.0.0.1", proxy.addresses["tcp"][1])
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()
            # Unused destinations go after the cleanup interval.
            deadline = asyncio.get_running_loop().time() + 5
            while state.endpoints and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            assert state.endpoints == []
            assert await _get(port, hdr.format(pb)) == (200, b"B")
            assert [e.port for e in state.endpoints] == [pb]
        finally:
            await proxy.stop(drain_timeout=1)
            a.close()
            b.close()

    uvloop.run(main())
