"""Service discovery through a live proxy: strict_dns and logical_dns
clusters resolved against a real DNS server on 127.0.0.1 (records changed
while the proxy runs), and eds clusters fed by endpoint files written as
Kubernetes and operators write them (atomic rename, symlink swap), both in
the embedded proxy and in `fastmesh run` with two workers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support.dnsserver import DnsServer
from support.harness import http_config
from support.meshproc import Proc, fastmesh_argv
from support.served import poll, served_by

from fastmesh.control.config import ConfigError, parse_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dns():
    d = DnsServer()
    yield d
    d.stop()


def dns_cluster(dns: DnsServer, *names_ports, **extra) -> dict:
    return {"name": "origin", "type": extra.pop("type", "strict_dns"),
            "dns_refresh_rate": extra.pop("dns_refresh_rate", "100ms"),
            "dns_resolution_config": {"resolvers": [{"address": "127.0.0.1", "port": dns.port}]},
            "endpoints": [{"address": n, "port": p} for n, p in names_ports], **extra}


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize("cluster, where, message", [
    ({"name": "c", "type": "static", "endpoints": [{"address": "svc.local", "port": 80}]},
     "clusters[0].endpoints[0].address", "a static cluster takes IP addresses"),
    ({"name": "c", "type": "logical_dns", "endpoints": [{"address": "a.local", "port": 80},
                                                        {"address": "b.local", "port": 80}]},
     "clusters[0].endpoints", "exactly one endpoint"),
    ({"name": "c", "type": "eds"}, "clusters[0].eds_config", "needs eds_config"),
    ({"name": "c", "type": "eds", "eds_config": {"path": "/x.yaml"},
      "endpoints": [{"address": "127.0.0.1", "port": 80}]},
     "clusters[0].endpoints", "takes its endpoints from eds_config"),
    ({"name": "c", "dns_refresh_rate": "1s", "endpoints": [{"address": "127.0.0.1", "port": 80}]},
     "clusters[0].dns_refresh_rate", "needs type: strict_dns"),
    ({"name": "c", "type": "strict_dns", "endpoints": [{"address": "a.local", "port": 80}],
      "dns_resolution_config": {"resolvers": [{"address": "dns.local"}]}},
     "clusters[0].dns_resolution_config.resolvers[0].address", "a resolver is an IP address"),
    ({"name": "c", "type": "dnsish", "endpoints": [{"address": "a.local", "port": 80}]},
     "clusters[0].type", "strict_dns"),
])
def test_discovery_config_errors_name_the_key(cluster, where, message):
    doc = {"listeners": [{"name": "t", "port": 1, "protocol": "tcp", "cluster": "c"}],
           "clusters": [cluster]}
    with pytest.raises(ConfigError) as ei:
        parse_config(json.dumps(doc))
    text = str(ei.value)
    assert where in text and message in text, text


def test_a_hostname_makes_a_strict_dns_cluster_and_validate_only_warns(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent("""\
        listeners: [{name: t, port: 1, protocol: tcp, cluster: c}]
        clusters: [{name: c, endpoints: [{address: no-such-name.invalid, port: 80}]}]
        """))
    assert parse_config(cfg.read_text()).clusters[0].discovery.type == "strict_dns"
    r = subprocess.run([sys.executable, "-m", "fastmesh", "validate", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "cannot resolve 'no-such-name.invalid' now" in r.stderr


# ------------------------------------------------------------------ DNS

def test_unresolvable_name_starts_empty_then_serves_when_it_resolves(start_proxy, dns, make_origin):
    a = make_origin("a")
    p = start_proxy(http_config(clusters=[dns_cluster(dns, ("svc.test", a.port))]))
    # not a failed start: an empty cluster, answered 503 and counted
    assert served_by(p, 3) == ["503"] * 3
    assert p.cluster_stats()["upstream_cx_none_healthy"] >= 3
    dns.set("svc.test", "127.0.0.1")
    assert poll(lambda: served_by(p, 1) == ["a"]), p.stats()
    st = p.cluster_stats()
    assert st["update_failure"] >= 1 and st["update_success"] >= 1
    assert st["membership_total"] == 1


def test_every_address_is_an_endpoint_and_changes_follow_the_records(start_proxy, dns, make_origin):
    a = make_origin("a")
    b = make_origin("b", host="127.0.0.2", port=a.port)
    make_origin("c", host="127.0.0.3", port=a.port)
    dns.set("svc.test", "127.0.0.1", "127.0.0.2")
    p = start_proxy(http_config(clusters=[dns_cluster(dns, ("svc.test", a.port))]))
    assert poll(lambda: set(served_by(p, 4)) == {"a", "b"})
    # a record replaced: c gets traffic, b none after the change reaches the worker
    dns.set("svc.test", "127.0.0.1", "127.0.0.3")
    assert poll(lambda: set(served_by(p, 4)) == {"a", "c"})
    nb = len(b.received())
    assert set(served_by(p, 20)) == {"a", "c"}
    assert len(b.received()) == nb
    assert p.cluster_stats()["membership_change"] >= 2


def test_a_failing_resolver_keeps_the_last_answer(start_proxy, dns, make_origin):
    a = make_origin("a")
    dns.set("svc.test", "127.0.0.1")
    p = start_proxy(http_config(clusters=[dns_cluster(
        dns, ("svc.test", a.port), dns_failure_refresh_rate={"base_interval": "50ms"})]))
    assert poll(lambda: served_by(p, 1) == ["a"])
    dns.set("svc.test")                     # the name disappears: NXDOMAIN
    assert poll(lambda: p.cluster_stats()["update_failure"] >= 2)
    assert served_by(p, 10) == ["a"] * 10   # the last good answer keeps serving
    dns.silent = True                       # the server stops answering at all
    n = p.cluster_stats()["update_failure"]
    assert poll(lambda: p.cluster_stats()["update_failure"] > n, timeout=20)
    assert served_by(p, 10) == ["a"] * 10


def test_respect_dns_ttl_resolves_again_at_the_ttl(start_proxy, dns, make_origin):
    a = make_origin("a")
    dns.set("svc.test", "127.0.0.1")
    dns.ttl = 1
    p = start_proxy(http_config(clusters=[dns_cluster(
        dns, ("svc.test", a.port), dns_refresh_rate="60s", respect_dns_ttl=True)]))
    assert poll(lambda: served_by(p, 1) == ["a"])
    first = dns.count("svc.test")
    # refresh rate 60 s, TTL 1 s: asked again within a few seconds
    assert poll(lambda: dns.count("svc.test") > first, timeout=5)


def test_without_respect_dns_ttl_the_refresh_rate_rules(start_proxy, dns, make_origin):
    a = make_origin("a")
    dns.set("svc.test", "127.0.0.1")
    dns.ttl = 1
    p = start_proxy(http_config(clusters=[dns_cluster(
        dns, ("svc.test", a.port), dns_refresh_rate="60s")]))
    assert poll(lambda: served_by(p, 1) == ["a"])
    first = dns.count("svc.test")
    # the same wait as the TTL test: nothing asked again (the feature-off twin)
    assert not poll(lambda: dns.count("svc.test") > first, timeout=2.5)


def test_logical_dns_uses_the_first_address_only(start_proxy, dns, make_origin):
    a = make_origin("a")
    make_origin("b", host="127.0.0.2", port=a.port)
    dns.set("svc.test", "127.0.0.1", "127.0.0.2")
    p = start_proxy(http_config(clusters=[dns_cluster(dns, ("svc.test", a.port),
                                                      type="logical_dns")]))
    assert poll(lambda: served_by(p, 1) == ["a"])
    assert served_by(p, 10) == ["a"] * 10
    assert p.cluster_stats()["membership_total"] == 1


def test_the_system_resolver_reads_hosts_without_a_dns_server(start_proxy, make_origin):
    a = make_origin("a")
    p = start_proxy(http_config(clusters=[{"name": "origin", "dns_refresh_rate": "100ms",
                                           "dns_lookup_family": "V4_ONLY",
                                           "endpoints": [{"address": "localhost", "port": a.port}]}]))
    assert poll(lambda: served_by(p, 1) == ["a"])


# ------------------------------------------------------------------ endpoint files

def cla(*eps: tuple[str, int], statuses: dict | None = None, weights: dict | None = None) -> str:
    statuses, weights = statuses or {}, weights or {}
    return json.dumps({"cluster_name": "origin", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}},
         "health_status": statuses.get((h, p), "HEALTHY"),
         "load_balancing_weight": weights.get((h, p), 1)} for h, p in eps]}]})


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def eds_cluster(path: Path) -> dict:
    return {"name": "origin", "type": "eds", "eds_config": {"path_config_source": {"path": str(path)}}}


def test_eds_file_changes_are_applied_and_a_bad_file_keeps_the_last_good(start_proxy, tmp_path,
                                                                        make_origin):
    a, b = make_origin("a"), make_origin("b")
    f = tmp_path / "origin.json"
    write_atomic(f, cla(a.address))
    p = start_proxy(http_config(clusters=[eds_cluster(f)]))
    assert poll(lambda: served_by(p, 1) == ["a"])
    write_atomic(f, cla(a.address, b.address))
    assert poll(lambda: set(served_by(p, 4)) == {"a", "b"})
    # invalid (a port out of range): rejected whole, both endpoints keep serving
    write_atomic(f, cla(a.address, ("127.0.0.1", 70000)))
    assert poll(lambda: p.cluster_stats()["update_rejected"] >= 1)
    assert set(served_by(p, 6)) == {"a", "b"}
    # half a file written in place: rejected too, nothing changes
    f.write_text(cla(b.address)[:40])
    assert poll(lambda: p.cluster_stats()["update_rejected"] >= 2)
    assert set(served_by(p, 6)) == {"a", "b"}
    # then a good one again
    write_atomic(f, cla(b.address))
    assert poll(lambda: served_by(p, 4) == ["b"] * 4)


def test_eds_draining_endpoints_get_no_new_requests(start_proxy, tmp_path, make_origin):
    a, b = make_origin("a"), make_origin("b")
    f = tmp_path / "origin.json"
    write_atomic(f, cla(a.address, b.address))
    p = start_proxy(http_config(clusters=[eds_cluster(f)]))
    assert poll(lambda: set(served_by(p, 4)) == {"a", "b"})
    write_atomic(f, cla(a.address, b.address, statuses={b.address: "DRAINING"}))
    assert poll(lambda: served_by(p, 4) == ["a"] * 4)
    nb = len(b.received())
    assert served_by(p, 20) == ["a"] * 20 and len(b.received()) == nb
    assert p.cluster_stats()["membership_healthy"] == 1


def test_a_configmap_symlink_swap_is_applied(start_proxy, tmp_path, make_origin):
    """Kubernetes updates a mounted ConfigMap by writing a new timestamped
    directory and renaming the `..data` symlink over the old one."""
    a, b = make_origin("a"), make_origin("b")
    mount = tmp_path / "mount"
    mount.mkdir()

    def publish(version: int, text: str) -> None:
        d = mount / f"..2026_12_02_{version}"
        d.mkdir()
        (d / "origin.json").write_text(text)
        tmp = mount / "..data_tmp"
        tmp.symlink_to(d.name)
        os.replace(tmp, mount / "..data")
        if not (mount / "origin.json").is_symlink():
            (mount / "origin.json").symlink_to("..data/origin.json")
    publish(1, cla(a.address))
    p = start_proxy(http_config(clusters=[eds_cluster(mount / "origin.json")]))
    assert poll(lambda: served_by(p, 1) == ["a"])
    publish(2, cla(b.address))
    assert poll(lambda: served_by(p, 4) == ["b"] * 4)


# ------------------------------------------------------------------ with workers

class Run(Proc):
    name = "fastmesh"

    def __init__(self, tmp: Path, text: str) -> None:
        super().__init__(tmp)
        self.cfg = self.tmp / "fastmesh.yaml"
        self.cfg.write_text(text.replace("ADMIN", str(self.admin)).replace("PORT", str(self.port)))
        self.spawn(fastmesh_argv(self.cfg, "--workers", "2"))


def test_workers_get_discovered_endpoints_from_the_supervisor(tmp_path, dns, make_origin):
    a = make_origin("a")
    make_origin("b", host="127.0.0.2", port=a.port)
    dns.set("svc.test", "127.0.0.1")
    r = Run(tmp_path, textwrap.dedent(f"""\
        drain_timeout: 1s
        admin: {{address: 127.0.0.1, port: ADMIN}}
        listeners:
          - name: web
            address: 127.0.0.1
            port: PORT
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, cluster: origin}}]}}]
        clusters:
          - name: origin
            dns_refresh_rate: 100ms
            dns_resolution_config: {{resolvers: [{{address: 127.0.0.1, port: {dns.port}}}]}}
            endpoints: [{{address: svc.test, port: {a.port}}}]
        """))
    try:
        import http.client

        def who(n: int) -> set[str]:
            # new connections: the kernel spreads them over both workers
            seen = set()
            for _ in range(n):
                c = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
                try:
                    c.request("GET", "/w")
                    resp = c.getresponse()
                    resp.read()
                    seen.add(resp.getheader("x-origin") if resp.status == 200
                             else str(resp.status))
                finally:
                    c.close()
            return seen
        assert r.wait(lambda: who(10) == {"a"}), r.output()
        # resolved once per process, not once per worker: about one query per refresh
        # (A queries only: AUTO asks A and AAAA once per resolution)
        n0, t0 = dns.count("svc.test", "A"), time.monotonic()
        assert r.wait(lambda: dns.count("svc.test", "A") >= n0 + 10)
        per_refresh = (dns.count("svc.test", "A") - n0) * 0.1 / (time.monotonic() - t0)
        assert per_refresh < 1.6, per_refresh
        dns.set("svc.test", "127.0.0.2")
        assert r.wait(lambda: who(20) == {"b"}), r.output()
        st = json.loads(r.admin_get("/stats?format=json")[1])
        assert st["clusters"]["origin"]["update_success"] >= 2
    finally:
        r.stop()


def test_discovery_settings_round_trip_through_config_dump():
    from fastmesh.control.dump import config_to_dict
    doc = {"listeners": [{"name": "t", "port": 1, "protocol": "tcp", "cluster": "a"}],
           "clusters": [
               {"name": "a", "type": "strict_dns", "dns_refresh_rate": "2s",
                "dns_failure_refresh_rate": {"base_interval": "1s", "max_interval": "8s"},
                "respect_dns_ttl": True, "dns_lookup_family": "V4_ONLY",
                "dns_resolution_config": {"resolvers": [{"address": "10.0.0.53", "port": 5353}]},
                "endpoints": [{"address": "svc.local", "port": 80}]},
               {"name": "b", "type": "eds",
                "eds_config": {"path_config_source": {"path": "/etc/fastmesh/b.yaml"}}},
               {"name": "c", "endpoints": [{"address": "127.0.0.1", "port": 80}]}]}
    cfg = parse_config(json.dumps(doc))
    assert [c.discovery.type for c in cfg.clusters] == ["strict_dns", "eds", "static"]
    assert parse_config(json.dumps(config_to_dict(cfg))) == cfg
