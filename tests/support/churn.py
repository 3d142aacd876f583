"""Zero loss under endpoint churn (issue 11): a rig shared by
tests/test_churn.py (a bounded run) and perf/churn.py (100 changes per source).

`ChurnRig` starts origin PROCESSES on 127.0.0.11, .12, ... (one port, each on
its own loopback address, each logging every request it served with its
time: support/origin_proc.py), a `fastmesh run` with two dynamic clusters
over them (`eds` from a watched file, `strict_dns` from a test DNS server),
and tagged closed-loop load on both (support/load.py). `run()` changes
each cluster's endpoint set `changes` times (random subsets, never empty)
while the load runs, and `verdict()` checks what the client and the origins
recorded: every request answered 200 with its own body, each id served by
exactly one origin exactly once, and no origin serving a request started
after its removal took effect (with `grace` for the source's delay).
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.dnsserver import DnsServer
from support.load import LoadClient, Outcome
from support.meshproc import Proc, fastmesh_argv
from support.origin_proc import OriginProc, free_port

NAME = "svc.churn.test"


@dataclass
class Change:
    source: str            # "file" | "dns"
    at: float              # unix time the change was written
    members: frozenset     # origin names in the new set


@dataclass
class Verdict:
    requests: int = 0
    failed: list[Outcome] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)    # ids served more than once
    unserved: list[str] = field(default_factory=list)      # ok at the client, no origin record
    late: list[tuple] = field(default_factory=list)        # served by a removed origin after grace
    to_new_ms: list[float] = field(default_factory=list)   # change -> first request at an added one
    to_gone_ms: list[float] = field(default_factory=list)  # change -> last request at a removed one

    @property
    def ok(self) -> bool:
        return not (self.failed or self.duplicated or self.unserved or self.late)


class _Mesh(Proc):
    name = "fastmesh"

    def __init__(self, tmp: Path, cfg: dict, args: tuple[str, ...]) -> None:
        super().__init__(tmp)
        cfg = json.loads(json.dumps(cfg).replace('"PORT"', str(self.port))
                         .replace('"ADMIN"', str(self.admin)))
        path = self.tmp / "fastmesh.yaml"
        path.write_text(json.dumps(cfg, indent=1))
        self.spawn(fastmesh_argv(path, "--log-level", "warning", *args))


class ChurnRig:
    def __init__(self, tmp: Path, origins: int = 5, args: tuple[str, ...] = ("--single-process",),
                 lb: str = "round_robin") -> None:
        self.tmp = Path(tmp)
        self.port = free_port()
        self.origins = [OriginProc(f"o{i}", self.tmp, self.port, host=f"127.0.0.{11 + i}")
                        for i in range(origins)]
        self.dns = DnsServer()
        self.eds = self.tmp / "churn.json"
        self.changes: list[Change] = []
        self.mesh: _Mesh | None = None
        self.args = args
        self.lb = lb

    def start(self) -> "ChurnRig":
        for o in self.origins:
            o.start()
        first = frozenset(o.name for o in self.origins[:2])
        self.set_file(first)
        self.set_dns(first)
        cfg = {"drain_timeout": 2, "admin": {"address": "127.0.0.1", "port": "ADMIN"},
               "listeners": [{"name": "web", "address": "127.0.0.1", "port": "PORT",
                              "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                  {"match": {"prefix": "/f"}, "cluster": "file"},
                                  {"match": {"prefix": "/d"}, "cluster": "dns"}]}]}],
               "clusters": [
                   {"name": "file", "type": "eds", "lb": self.lb,
                    "eds_config": {"path_config_source": {"path": str(self.eds)}}},
                   {"name": "dns", "type": "strict_dns", "lb": self.lb,
                    "dns_refresh_rate": "50ms",
                    "dns_resolution_config": {"resolvers": [
                        {"address": "127.0.0.1", "port": self.dns.port}]},
                    "endpoints": [{"address": NAME, "port": self.port}]}]}
        self.mesh = _Mesh(self.tmp, cfg, self.args)
        # Loss counts from when both clusters have their first set.
        assert self.mesh.wait(lambda: all(
            self.mesh.stats()["clusters"][c]["membership_total"] == 2 for c in ("file", "dns"))), \
            self.mesh.output()
        return self

    def _addr(self, name: str) -> str:
        return next(o.host for o in self.origins if o.name == name)

    def set_file(self, members: frozenset) -> None:
        doc = {"cluster_name": "file", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": self._addr(m),
                                                         "port_value": self.port}}}}
            for m in sorted(members)]}]}
        tmp = self.eds.with_name(".churn.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.eds)          # atomic: never read half-written
        self.changes.append(Change("file", time.time(), members))

    def set_dns(self, members: frozenset) -> None:
        self.dns.set(NAME, *sorted(self._addr(m) for m in members))
        self.changes.append(Change("dns", time.time(), members))

    def run(self, changes: int, interval: float = 0.15, connections: int = 2,
            seed: int = 11) -> tuple[list[Outcome], list[Outcome]]:
        """`changes` changes per source while tagged load runs on both
        clusters; the client outcomes (file, dns)."""
        assert self.mesh is not None
        rnd = random.Random(seed)
        names = [o.name for o in self.origins]
        lf = LoadClient(self.mesh.address, connections=connections, interval=0.002,
                        prefix="f").start()
        ld = LoadClient(self.mesh.address, connections=connections, interval=0.002,
                        prefix="d").start()
        try:
            time.sleep(0.5)
            for i in range(changes):
                for setter in (self.set_file, self.set_dns):
                    setter(frozenset(rnd.sample(names, rnd.randint(1, len(names) - 1))))
                time.sleep(interval)
            time.sleep(1.0)         # the last change reaches traffic
        finally:
            of, od = lf.stop(), ld.stop()
        return of, od

    def verdict(self, outcomes: list[Outcome], grace: float = 0.5) -> Verdict:
        """What the client and the origins recorded, checked (see module doc)."""
        v = Verdict(requests=len(outcomes))
        v.failed = [o for o in outcomes if not o.ok]
        served: dict[str, list[tuple[str, float]]] = {}
        for o in self.origins:
            for rid, outcome, t, name in o.records():
                served.setdefault(rid, []).append((name, t))
        v.duplicated = [rid for rid, s in served.items() if len(s) > 1]
        v.unserved = [o.id for o in outcomes if o.ok and o.id not in served]
        start = {o.id: o.start for o in outcomes}
        for source, prefix in (("file", "f"), ("dns", "d")):
            hist = [c for c in self.changes if c.source == source]
            # each origin's membership intervals [added, removed)
            for rid, s in served.items():
                if not rid.startswith(prefix) or rid not in start:
                    continue
                name, t0 = s[0][0], start[rid]
                # the sets in force between `grace` before it started and its
                # start (a change may take up to `grace` to reach traffic)
                before = [c for c in hist if c.at <= t0 - grace]
                sets = ([before[-1].members] if before else []) + [
                    c.members for c in hist if t0 - grace < c.at <= t0]
                if not any(name in m for m in sets):
                    v.late.append((rid, name, source))
            # change -> traffic: first request at an added origin, last at a removed one
            for prev, c in zip(hist, hist[1:]):
                nxt = next((x.at for x in hist if x.at > c.at), float("inf"))
                for name in c.members - prev.members:
                    ts = [start[r] for r, s in served.items() if r.startswith(prefix)
                          and r in start and s[0][0] == name and c.at <= start[r] < nxt]
                    if ts:
                        v.to_new_ms.append((min(ts) - c.at) * 1000)
                for name in prev.members - c.members:
                    ts = [start[r] for r, s in served.items() if r.startswith(prefix)
                          and r in start and s[0][0] == name and c.at <= start[r] < nxt]
                    v.to_gone_ms.append((max(ts) - c.at) * 1000 if ts else 0.0)
        return v

    def stop(self) -> None:
        if self.mesh is not None:
            self.mesh.stop()
        for o in self.origins:
            o.stop()
        self.dns.stop()
