"""fastmesh fed by a real xDS management server (tests/support/xds_server.py,
grpcio): the ADS stream, ACK/NACK, warming, the endpoint path, reconnects,
/config_dump and the xDS stats, in both state-of-the-world and delta."""
from __future__ import annotations

import json

import pytest

from support.harness import Client
from support.origin_proc import free_port
from support.served import poll
from support.xds_boot import XdsMesh
from support.xds_resources import cla, eds_cluster, http_listener, route_config
from support.xds_server import CDS, EDS, LDS, RDS, XdsServer

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def xds():
    s = XdsServer().start()
    yield s
    s.stop()


def origins_of(addr, n: int, path: str = "/x") -> list[str]:
    out = []
    c = Client(addr)
    try:
        for i in range(n):
            r = c.request("GET", f"{path}{i}")
            out.append(r.header("x-origin").decode() if r.status == 200 else str(r.status))
    finally:
        c.close()
    return out


def text_stats(p) -> dict[str, float]:
    """Envoy-style /stats text as {name: value} (counters and gauges)."""
    out = {}
    for line in p.admin_get("/stats")[1].decode().splitlines():
        name, _, value = line.partition(": ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def snapshot(port: int, eps: dict[str, list], routes) -> dict:
    return {CDS: [eds_cluster(n) for n in eps],
            EDS: [cla(n, e) for n, e in eps.items()],
            LDS: [http_listener("web", port, "r1")],
            RDS: [route_config("r1", routes)]}


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_xds_feed_ack_nack_endpoints(tmp_path, xds, make_origin, delta):
    a, b = make_origin("a"), make_origin("b")
    port = free_port()
    xds.set("v1", snapshot(port, {"ca": [a.address], "cb": [b.address]}, [("/", "ca")]))
    p = XdsMesh(tmp_path, "fm", xds.port, delta)
    try:
        addr = ("127.0.0.1", port)
        assert origins_of(addr, 4) == ["a"] * 4
        assert xds.wait_for(lambda ev: {e.type_url for e in ev if e.node == "fm"
                                        and e.version == "v1" and e.ack} >= {CDS, EDS, LDS, RDS})
        # The node identity as the bootstrap gives it, fastmesh as user agent.
        node = next(n for n in xds.nodes if n.id == "fm")
        assert node.cluster == "test-cluster" and node.user_agent_name == "fastmesh"
        assert node.metadata.fields["role"].string_value == "sidecar"

        # A route change: all traffic to cb.
        xds.set("v2", snapshot(port, {"ca": [a.address], "cb": [b.address]}, [("/", "cb")]))
        assert poll(lambda: origins_of(addr, 2) == ["b", "b"])
        # EDS only: cb's endpoint becomes origin a's address. The endpoint
        # path: no new config version.
        version = json.loads(p.admin_get("/config_dump")[1])["version"]
        xds.set("v3", snapshot(port, {"ca": [a.address], "cb": [a.address]}, [("/", "cb")]))
        assert poll(lambda: origins_of(addr, 2) == ["a", "a"])
        assert json.loads(p.admin_get("/config_dump")[1])["version"] == version

        # An invalid resource: NACKed with a reason, the old config serves.
        bad = snapshot(port, {"ca": [a.address], "cb": [a.address]}, [("/", "cb")])
        bad[EDS] = [cla("ca", [("not-an-ip", 80)]), cla("cb", [a.address])]
        xds.set("v4", bad)
        assert xds.wait_for(lambda ev: any(e.node == "fm" and e.version == "v4" and not e.ack
                                           and "not-an-ip" in e.error for e in ev))
        assert origins_of(addr, 2) == ["a", "a"]
        dump = json.loads(p.admin_get("/config_dump")[1])
        eds_dump = next(c for c in dump["configs"] if c["@type"].endswith("EndpointsConfigDump"))
        ca = next(x for x in eds_dump["dynamic_endpoint_configs"]
                  if x["endpoint_config"]["cluster_name"] == "ca")
        assert "not-an-ip" in ca["error_state"]["details"]
        st = text_stats(p)
        assert st["control_plane.connected_state"] == 1
        assert st["eds.update_rejected"] >= 1
        assert st["cluster_manager.cds.update_success"] >= 1

        # The server goes away: traffic keeps flowing on the last good config.
        xds.stop()
        assert p.wait(lambda: text_stats(p)["control_plane.connected_state"] == 0)
        assert origins_of(addr, 3) == ["a"] * 3
        # ... and comes back on the same port: the client reconnects.
        xds.start()
        xds.set("v5", snapshot(port, {"ca": [a.address], "cb": [b.address]}, [("/", "cb")]))
        assert poll(lambda: origins_of(addr, 2) == ["b", "b"], 20)
    finally:
        p.stop()


def test_xds_with_workers(tmp_path, xds, make_origin):
    """The supervisor runs the client: full applies go to every worker
    (prepare, commit), EDS to every worker's live clusters."""
    a, b = make_origin("a"), make_origin("b")
    port = free_port()
    xds.set("v1", snapshot(port, {"ca": [a.address], "cb": [b.address]}, [("/", "ca")]))
    p = XdsMesh(tmp_path, "fmw", xds.port, True, "--workers", "2")
    try:
        addr = ("127.0.0.1", port)
        assert poll(lambda: origins_of(addr, 4) == ["a"] * 4)
        xds.set("v2", snapshot(port, {"ca": [a.address], "cb": [b.address]}, [("/", "cb")]))
        # Several connections: the kernel spreads them over both workers.
        assert poll(lambda: all(origins_of(addr, 2) == ["b", "b"] for _ in range(6)))
        version = json.loads(p.admin_get("/config_dump")[1])["version"]
        xds.set("v3", snapshot(port, {"ca": [a.address], "cb": [a.address]}, [("/", "cb")]))
        assert poll(lambda: all(origins_of(addr, 2) == ["a", "a"] for _ in range(6)))
        assert json.loads(p.admin_get("/config_dump")[1])["version"] == version
        st = text_stats(p)
        assert st["control_plane.connected_state"] == 1
        assert st["listener_manager.lds.update_success"] >= 1
    finally:
        p.stop()
