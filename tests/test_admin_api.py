"""Envoy's admin API on a real `fastmesh run` (2 workers): same paths and
shapes, state-changing endpoints POST-only and acting on every worker."""
from __future__ import annotations

import http.client
import json
import socket

import pytest

from support.served import poll
from test_metrics_exposition import Mesh, origin, traffic  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(90)


def call(m: Mesh, method: str, path: str) -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", m.admin, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


@pytest.fixture
def mesh(tmp_path, origin):  # noqa: F811 - the fixture
    m = Mesh(tmp_path, origin)
    yield m
    m.stop()


def test_help_lists_every_endpoint_and_each_answers(mesh):
    from fastmesh.admin.server import ENDPOINTS
    status, _, body = call(mesh, "GET", "/help")
    assert status == 200 and body.startswith(b"admin commands are:")
    listed = [ln.split(":")[0].strip() for ln in body.decode().splitlines()[1:]]
    assert sorted(listed) == sorted(ENDPOINTS)
    for path, (method, _) in ENDPOINTS.items():
        if method == "GET":
            assert call(mesh, "GET", path)[0] == 200, path
        else:
            # POST only: GET is refused, naming the method allowed
            status, headers, _ = call(mesh, "GET", path)
            assert status == 405 and headers["allow"] == "POST", path
    assert call(mesh, "POST", "/stats")[0] == 405
    assert call(mesh, "GET", "/nope")[0] == 404


def test_healthcheck_fail_makes_ready_503_while_traffic_flows(mesh):
    assert call(mesh, "GET", "/ready")[:1] == (200,)
    assert call(mesh, "POST", "/healthcheck/fail")[0] == 200
    status, _, body = call(mesh, "GET", "/ready")
    assert (status, body) == (503, b"DRAINING\n")
    assert json.loads(call(mesh, "GET", "/server_info")[2])["state"] == "DRAINING"
    traffic(mesh, 3, 1)                       # still served
    assert call(mesh, "POST", "/healthcheck/ok")[0] == 200
    assert call(mesh, "GET", "/ready")[:1] == (200,)


def test_reset_counters_zeroes_every_worker(mesh):
    traffic(mesh, 20, 0)
    before = mesh.stats()
    assert before["clusters"]["origin"]["upstream_rq_total"] == 20
    assert call(mesh, "POST", "/reset_counters")[0] == 200
    after = mesh.stats()
    assert after["clusters"]["origin"]["upstream_rq_total"] == 0
    assert after["downstream_rq_total"] == 0
    assert after["workers"] == 2                       # a gauge: kept
    text = call(mesh, "GET", "/stats?filter=upstream_rq_time")[2].decode()
    assert "No recorded values" in text


def test_stats_filter_usedonly_and_envoy_json(mesh):
    traffic(mesh, 5, 2)
    text = call(mesh, "GET", "/stats?usedonly")[2].decode()
    names = [ln.split(":")[0] for ln in text.splitlines()]
    assert "cluster.origin.upstream_rq_total" in names
    assert "cluster.origin.upstream_rq_timeout" not in names       # 0: never written
    js = json.loads(call(mesh, "GET", "/stats?format=json&filter=route")[2])
    stats = js["stats"]
    values = {s["name"]: s["value"] for s in stats if "name" in s}
    assert values["route.web.local.downstream_rq_total"] == 2
    assert all("route" in n for n in values)
    hist = stats[-1]["histograms"]
    assert hist["supported_quantiles"][0] == 0 and hist["supported_quantiles"][-1] == 100
    assert {c["name"] for c in hist["computed_quantiles"]} == {
        "route.web.local.downstream_rq_time", "route.web.all/1.downstream_rq_time"}


def test_listeners_server_info_memory_config_dump(mesh):
    status, _, body = call(mesh, "GET", "/listeners")
    assert body.decode() == f"web::127.0.0.1:{mesh.port}\n"
    js = json.loads(call(mesh, "GET", "/listeners?format=json")[2])
    assert js == {"listener_statuses": [{"name": "web", "local_address": {
        "socket_address": {"address": "127.0.0.1", "port_value": mesh.port}}}]}
    info = json.loads(call(mesh, "GET", "/server_info")[2])
    assert info["state"] == "LIVE" and info["version"].startswith("fastmesh/")
    assert info["command_line_options"]["concurrency"] == 2
    assert info["command_line_options"]["config_path"].endswith("fm.json")
    assert info["uptime_current_epoch"].endswith("s") and "id" in info["node"]
    mem = json.loads(call(mesh, "GET", "/memory")[2])
    assert int(mem["allocated"]) > 0 and len(mem["processes"]) == 3   # supervisor + 2
    dump = json.loads(call(mesh, "GET", "/config_dump?resource=clusters&mask=name")[2])
    assert dump == {"version": 1, "clusters": [{"name": "origin"}]}
    assert call(mesh, "GET", "/config_dump?resource=nope")[0] == 400


def test_logging_levels(mesh):
    status, _, body = call(mesh, "POST", "/logging")
    assert status == 200 and b"fastmesh:" in body
    status, _, body = call(mesh, "POST", "/logging?paths=fastmesh.health:debug")
    assert status == 200 and "  fastmesh.health: debug" in body.decode()
    status, _, body = call(mesh, "POST", "/logging?level=error")
    assert status == 200 and "  fastmesh.health: error" in body.decode()
    assert call(mesh, "POST", "/logging?level=loud")[0] == 400


def test_drain_listeners_stops_accepting_in_every_worker(mesh):
    traffic(mesh, 2, 0)
    assert call(mesh, "POST", "/drain_listeners")[0] == 200

    def refused() -> bool:
        # SO_REUSEPORT spreads connects over the workers' sockets: try
        # several, all must be refused once every worker closed its own.
        for _ in range(8):
            try:
                socket.create_connection(("127.0.0.1", mesh.port), timeout=1).close()
                return False
            except ConnectionRefusedError:
                pass
        return True

    assert poll(refused, 10)
    assert call(mesh, "GET", "/ready")[0] == 200        # the admin still answers


def _local_non_loopback() -> str | None:
    # This host's address toward the outside (no packet is sent by a UDP connect).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


@pytest.mark.parametrize("changes", [False, True])
def test_state_changes_answer_loopback_only_unless_allowed(tmp_path, origin, changes):  # noqa: F811
    addr = _local_non_loopback()
    if addr is None:
        pytest.skip("no non-loopback address on this host")
    m = Mesh.__new__(Mesh)
    from support.meshproc import Proc, fastmesh_argv
    Proc.__init__(m, tmp_path)
    admin = {"address": "0.0.0.0", "port": m.admin, "allow_remote": True}
    if changes:
        admin["allow_remote_changes"] = True
    cfg = {"drain_timeout": 1, "admin": admin,
           "listeners": [{"name": "web", "address": "127.0.0.1", "port": m.port,
                          "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                              {"match": {"prefix": "/"}, "cluster": "origin"}]}]}],
           "clusters": [{"name": "origin", "endpoints": [
               {"address": origin[0], "port": origin[1]}]}]}
    (tmp_path / "fm.json").write_text(json.dumps(cfg))
    m.spawn(fastmesh_argv(tmp_path / "fm.json", "--single-process", "--log-level", "warning"))
    try:
        def remote(method: str, path: str) -> int:
            # From this host's own non-loopback address: the admin sees a remote peer.
            c = http.client.HTTPConnection(addr, m.admin, timeout=10, source_address=(addr, 0))
            try:
                c.request(method, path)
                return c.getresponse().status
            finally:
                c.close()

        assert remote("GET", "/ready") == 200                 # reads: allow_remote
        expected = 200 if changes else 403
        for path in ("/reset_counters", "/healthcheck/fail", "/logging?level=info",
                     "/drain_listeners"):
            assert remote("POST", path) == expected, path
        if not changes:
            # from loopback the same requests are served
            assert call(m, "POST", "/healthcheck/fail")[0] == 200
            assert call(m, "GET", "/ready")[0] == 503
    finally:
        m.stop()
