"""10,000 endpoints from one endpoint file (issue 11): applied, served, and
10% of them replaced while requests run, through a live `fastmesh run` and
an origin process that answers on every 127.x.y.z (bound to 0.0.0.0).
No timing assertion here: perf/scale_endpoints.py measures the stall and
the CPU beside Envoy's."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support.load import LoadClient
from support.meshproc import Proc, fastmesh_argv
from support.origin_proc import OriginProc

pytestmark = pytest.mark.timeout(120)

N = 10000


def address(i: int) -> str:
    return f"127.{1 + i // 250}.{i % 250 + 1}.1"


def write(path: Path, port: int, lo: int) -> None:
    doc = {"cluster_name": "big", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": address(i), "port_value": port}}}}
        for i in range(lo, lo + N)]}]}
    tmp = path.with_name(".big.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


class Run(Proc):
    name = "fastmesh"

    def __init__(self, tmp: Path, eds: Path, lb: str) -> None:
        super().__init__(tmp)
        cluster = {"name": "big", "type": "eds", "lb": lb,
                   "eds_config": {"path_config_source": {"path": str(eds)}}}
        if lb in ("ring_hash", "maglev"):
            cluster["hash_policy"] = {"header": "x-fault-id"}
        cfg = {"drain_timeout": 1, "admin": {"address": "127.0.0.1", "port": self.admin},
               "listeners": [{"name": "web", "address": "127.0.0.1", "port": self.port,
                              "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                  {"match": {"prefix": "/"}, "cluster": "big"}]}]}],
               "clusters": [cluster]}
        (self.tmp / "fastmesh.json").write_text(json.dumps(cfg))
        self.spawn(fastmesh_argv(self.tmp / "fastmesh.json", "--single-process",
                                 "--log-level", "warning"))


@pytest.mark.parametrize("lb", ["least_request", "maglev"])
def test_ten_thousand_endpoints_are_applied_and_a_tenth_replaced_under_load(tmp_path, lb):
    origin = OriginProc("any", tmp_path, host="0.0.0.0").start()
    eds = tmp_path / "big.json"
    write(eds, origin.port, 0)
    r = Run(tmp_path, eds, lb)
    try:
        def members() -> int:
            return r.stats()["clusters"]["big"]["membership_total"]
        assert r.wait(lambda: members() == N), r.output()
        load = LoadClient(r.address, connections=2, interval=0.002).start()
        try:
            assert r.wait(lambda: len(origin.records()) > 50)
            write(eds, origin.port, N // 10)          # 1,000 out, 1,000 in
            assert r.wait(lambda: r.stats()["clusters"]["big"]["membership_change"] >= 2)
            n = len(origin.records())
            assert r.wait(lambda: len(origin.records()) > n + 50)
        finally:
            outcomes = load.stop()
        assert outcomes and all(o.ok for o in outcomes), \
            [(o.id, o.status, o.error) for o in outcomes if not o.ok][:5]
        # /clusters lists the new set: the first tenth gone, a new tenth there
        doc = json.loads(r.admin_get("/clusters?format=json")[1])
        hosts = {h["address"]["socket_address"]["address"]
                 for h in doc["cluster_statuses"][0]["host_statuses"]}
        assert len(hosts) == N
        assert address(0) not in hosts and address(N) in hosts and address(N // 10) in hosts
    finally:
        r.stop()
        origin.stop()
