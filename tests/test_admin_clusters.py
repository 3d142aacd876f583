"""Admin /clusters (issue 11): every cluster's current endpoints with their
source, weight, health flags, locality/priority and per-endpoint request
counts, in Envoy's text lines and its ?format=json, from a real
`fastmesh run` (one process, and two workers whose answers the supervisor
merges). Parsed here by hand: no Prometheus or Envoy client."""
from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import pytest

from support.meshproc import Proc, fastmesh_argv
from support.origin import Origin
from support.origin_proc import free_port

pytestmark = pytest.mark.timeout(90)


class Run(Proc):
    name = "fastmesh"

    def __init__(self, tmp: Path, cfg: dict, *args: str) -> None:
        super().__init__(tmp)
        cfg = json.loads(json.dumps(cfg).replace('"PORT"', str(self.port))
                         .replace('"ADMIN"', str(self.admin)))
        self.cfg = self.tmp / "fastmesh.yaml"
        self.cfg.write_text(json.dumps(cfg, indent=1))
        self.spawn(fastmesh_argv(self.cfg, "--log-level", "warning", *args))


def parse_text(body: str) -> dict[tuple[str, ...], str]:
    """Envoy's /clusters lines: `cluster::field::value` and
    `cluster::host:port::field::value` -> {(cluster, [host:port,] field): value}."""
    out: dict[tuple[str, ...], str] = {}
    for line in body.splitlines():
        parts = line.split("::")
        assert len(parts) in (3, 4), line
        out[tuple(parts[:-1])] = parts[-1]
    return out


def json_hosts(doc: dict) -> dict[tuple[str, str], dict]:
    """{(cluster, host:port): host status} from Envoy's admin.v3.Clusters JSON."""
    out = {}
    for c in doc["cluster_statuses"]:
        for h in c["host_statuses"]:
            sa = h["address"]["socket_address"]
            out[(c["name"], f"{sa['address']}:{sa['port_value']}")] = h
    return out


def get(n: int, port: int, path: str) -> None:
    # A new connection each time, so that with two workers both get some.
    for i in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            c.request("GET", f"{path}{i}")
            r = c.getresponse()
            r.read()
            assert r.status == 200
        finally:
            c.close()


@pytest.fixture
def origin():
    o = Origin("a")
    o.start()
    yield o
    o.stop()


@pytest.mark.parametrize("mode", [("--single-process",), ("--workers", "2")],
                         ids=["single", "workers"])
def test_clusters_shows_endpoints_source_flags_locality_and_counts(tmp_path, origin, mode):
    dead = ("127.0.0.1", free_port())          # nothing listens: fails its check
    eds = tmp_path / "disc.json"
    eds.write_text(json.dumps({"cluster_name": "disc", "endpoints": [{
        "locality": {"region": "eu-west-1", "zone": "eu-west-1a", "sub_zone": "rack7"},
        "priority": 1,
        "lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": origin.port}}},
             "health_status": "HEALTHY", "load_balancing_weight": 2},
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.2",
                                                         "port_value": origin.port}}},
             "health_status": "DRAINING"}]}]}))
    cfg = {"drain_timeout": 1, "admin": {"address": "127.0.0.1", "port": "ADMIN"},
           "listeners": [{"name": "web", "address": "127.0.0.1", "port": "PORT",
                          "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                              {"match": {"prefix": "/s"}, "cluster": "stat"},
                              {"match": {"prefix": "/d"}, "cluster": "disc"}]}]}],
           "clusters": [
               {"name": "stat", "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
                "endpoints": [{"address": "127.0.0.1", "port": origin.port, "weight": 3},
                              {"address": dead[0], "port": dead[1]}],
                "health_checks": [{"timeout": "1s", "interval": "200ms",
                                   "unhealthy_threshold": 1, "healthy_threshold": 1,
                                   "tcp_health_check": {}}]},
               {"name": "disc", "type": "eds",
                "eds_config": {"path_config_source": {"path": str(eds)}}}]}
    r = Run(tmp_path, cfg, *mode)
    a, d = f"127.0.0.1:{origin.port}", f"{dead[0]}:{dead[1]}"
    b = f"127.0.0.2:{origin.port}"
    try:
        # Both checks have answered (the live one passes, the dead one fails).
        assert r.wait(lambda: parse_text(r.admin_get("/clusters")[1].decode()).get(
            ("stat", d, "health_flags")) == "/failed_active_hc"), r.output()
        assert r.wait(lambda: parse_text(r.admin_get("/clusters")[1].decode()).get(
            ("stat", a, "health_flags")) == "healthy"), r.output()
        assert r.wait(lambda: (("disc", a, "weight") in parse_text(
            r.admin_get("/clusters")[1].decode()))), r.output()
        get(6, r.port, "/s")
        get(4, r.port, "/d")
        # The counts are summed over the workers; the requests are over.
        assert r.wait(lambda: parse_text(r.admin_get("/clusters")[1].decode()).get(
            ("disc", a, "rq_total")) == "4"), r.output()
        status, body = r.admin_get("/clusters")
        assert status == 200
        t = parse_text(body.decode())
        assert t[("stat", "added_via_api")] == "false"
        assert t[("stat", "discovery_type")] == "static"
        assert t[("disc", "discovery_type")] == "eds"
        assert t[("stat", a, "rq_total")] == "6" and t[("stat", a, "rq_active")] == "0"
        assert t[("stat", a, "weight")] == "3"
        assert int(t[("stat", a, "cx_active")]) >= 1      # kept alive in the pool
        assert t[("stat", d, "rq_total")] == "0"
        assert t[("disc", a, "weight")] == "2"
        assert t[("disc", a, "health_flags")] == "healthy"
        assert (t[("disc", a, "region")], t[("disc", a, "zone")], t[("disc", a, "sub_zone")],
                t[("disc", a, "priority")]) == ("eu-west-1", "eu-west-1a", "rack7", "1")
        assert t[("disc", b, "health_flags")] == "/failed_eds_health"
        assert t[("disc", b, "rq_total")] == "0"

        status, body = r.admin_get("/clusters?format=json")
        assert status == 200
        doc = json.loads(body)
        kinds = {c["name"]: c["discovery_type"] for c in doc["cluster_statuses"]}
        assert kinds == {"stat": "static", "disc": "eds"}
        hs = json_hosts(doc)
        assert set(hs) == {("stat", a), ("stat", d), ("disc", a), ("disc", b)}
        stats = {s["name"]: s["value"] for s in hs[("stat", a)]["stats"]}
        assert stats["rq_total"] == "6" and stats["rq_active"] == "0"
        assert hs[("stat", a)]["weight"] == 3
        assert hs[("stat", d)]["health_status"]["failed_active_health_check"] is True
        assert "failed_active_health_check" not in hs[("stat", a)]["health_status"]
        assert hs[("disc", b)]["health_status"]["eds_health_status"] == "DRAINING"
        assert hs[("disc", a)]["health_status"]["eds_health_status"] == "HEALTHY"
        assert hs[("disc", a)]["locality"] == {"region": "eu-west-1", "zone": "eu-west-1a",
                                              "sub_zone": "rack7"}
        assert hs[("disc", a)]["priority"] == 1

        assert r.admin_get("/clusters?format=prometheus")[0] == 400
    finally:
        r.stop()


def test_clusters_follows_an_endpoint_file_change(tmp_path, origin):
    """A removed endpoint leaves /clusters with the update; a new one appears."""
    eds = tmp_path / "disc.json"

    def write(*hosts: str) -> None:
        tmp = eds.with_name(".disc.tmp")
        tmp.write_text(json.dumps({"cluster_name": "disc", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": h,
                                                         "port_value": origin.port}}}}
            for h in hosts]}]}))
        tmp.replace(eds)
    write("127.0.0.1", "127.0.0.2")
    cfg = {"drain_timeout": 1, "admin": {"address": "127.0.0.1", "port": "ADMIN"},
           "listeners": [{"name": "web", "address": "127.0.0.1", "port": "PORT",
                          "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                              {"match": {"prefix": "/"}, "cluster": "disc"}]}]}],
           "clusters": [{"name": "disc", "type": "eds",
                         "eds_config": {"path_config_source": {"path": str(eds)}}}]}
    r = Run(tmp_path, cfg, "--single-process")

    def hosts() -> set[str]:
        return {k[1] for k in parse_text(r.admin_get("/clusters")[1].decode()) if len(k) == 3}
    try:
        p = origin.port
        assert r.wait(lambda: hosts() == {f"127.0.0.1:{p}", f"127.0.0.2:{p}"}), r.output()
        write("127.0.0.2", "127.0.0.3")
        deadline = time.monotonic() + 10
        assert r.wait(lambda: hosts() == {f"127.0.0.2:{p}", f"127.0.0.3:{p}"},
                      deadline - time.monotonic()), r.output()
    finally:
        r.stop()
