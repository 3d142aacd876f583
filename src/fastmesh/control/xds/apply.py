"""From accepted xDS resources to what the data plane serves.

Every accepted CDS, LDS, RDS or SDS update becomes one native fastmesh
config (``translate_resources`` of control/envoy, then ``parse_config``)
that goes through the runtime's versioned two-phase apply (prepare in every
worker, then commit). EDS never does: a ClusterLoadAssignment of a cluster
that serves already is published as that cluster's endpoint set, the path
the other discovery sources take (``Discovery.publish``: the set swapped on
the live ClusterState in every worker, no recompile).

Warming, as Envoy: a new EDS cluster waits for its endpoints and a listener
for its route configuration (RDS) before the config that holds them is
applied; after ``initial_fetch_timeout`` it is applied with what is there
(a cluster without endpoints answers 503, a listener without routes 404).
Meanwhile the running config keeps serving. A route that names a cluster
the server removed gets an empty cluster of that name (503, as Envoy's
``cluster_not_found``) instead of failing the whole config.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from fastmesh.control.config import Config, parse_config
from fastmesh.control.eds_file import DiscoveredEndpoint
from fastmesh.control.xds.resources import CDS, EDS, LDS, RDS, SDS
from fastmesh.control.xds.state import Entry

from fastmesh.control.envoy import translate_resources

log = logging.getLogger("fastmesh.xds")

States = Mapping[str, Mapping[str, Entry]]


class Target(Protocol):
    """The runtime the xDS client feeds (runtime/xds.py adapts the single
    process and the supervisor)."""

    async def apply(self, config: Config, native: dict[str, Any]) -> None:
        """Serve `config` from now on (two-phase); ConfigError if refused."""

    def publish(self, cluster: str, endpoints: list[DiscoveredEndpoint]) -> None:
        """A dynamic cluster's new endpoint set (the cheap path)."""


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    # Every (key, value) of a proto3-JSON tree.
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            for k, v in n.items():
                yield k, v
                if isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(n, list):
            stack.extend(x for x in n if isinstance(x, (dict, list)))


def route_config_names(listener: dict[str, Any]) -> set[str]:
    """The RDS route configurations a listener's HTTP connection managers name."""
    return {v["route_config_name"] for k, v in _walk(listener)
            if k == "rds" and isinstance(v, dict) and "route_config_name" in v}


def secret_names(doc: dict[str, Any]) -> set[str]:
    """The SDS secrets a listener's or cluster's TLS contexts name."""
    out: set[str] = set()
    for k, v in _walk(doc):
        if k.endswith("sds_secret_config") and isinstance(v, dict) and "name" in v:
            out.add(v["name"])
        elif k.endswith("sds_secret_configs") and isinstance(v, list):
            out.update(x["name"] for x in v if isinstance(x, dict) and "name" in x)
    return out


def cluster_refs(doc: dict[str, Any]) -> set[str]:
    """The clusters routes and TCP proxies send to (route.cluster,
    weighted_clusters, tcp_proxy, request mirrors)."""
    out: set[str] = set()
    for k, v in _walk(doc):
        if k == "cluster" and isinstance(v, str):
            out.add(v)
        elif k == "weighted_clusters" and isinstance(v, dict):
            out.update(c["name"] for c in v.get("clusters", ()) if "name" in c)
    return out


def eds_service_name(cluster: dict[str, Any]) -> str | None:
    """The ClusterLoadAssignment name an EDS cluster subscribes to (its
    service_name, else its name); None for other cluster types."""
    if cluster.get("type") != "EDS":
        return None
    return (cluster.get("eds_cluster_config") or {}).get("service_name") or cluster["name"]


# TEMPORARY (until control/envoy translates eds_config {ads: {}} to the native
# eds_config {ads: {}}: /work/scratch/notes-for-envoy-config.md, note 1): an
# ADS-fed EDS cluster goes to the translator as a file-fed one with a marked
# path, and comes back as ads. Its endpoints never go through the translator:
# they take the endpoint path (Discovery.publish).
_MARK = "/.fastmesh-xds-eds/"


def _ads_as_marked_files(clusters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in clusters:
        ecc = c.get("eds_cluster_config")
        src = (ecc or {}).get("eds_config") or {}
        if c.get("type") == "EDS" and ("ads" in src or "api_config_source" in src):
            c = {**c, "eds_cluster_config": {**ecc, "eds_config": {
                "path_config_source": {"path": _MARK + c["name"]}}}}
        out.append(c)
    return out


def _marked_files_as_ads(native: dict[str, Any]) -> None:
    for c in native.get("clusters", ()):
        path = ((c.get("eds_config") or {}).get("path_config_source") or {}).get("path", "")
        if isinstance(path, str) and path.startswith(_MARK):
            c["eds_config"] = {"ads": {}}


def _no_routes(name: str) -> dict[str, Any]:
    # A route table that routes nothing: Envoy answers every request 404
    # (NR); the translator wants a virtual host, so one that says 404.
    return {"name": name, "virtual_hosts": [{"name": "none", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}}]}]}


class Assembler:
    """Builds native configs from the accepted resources, warms, applies."""

    def __init__(self, base: dict[str, Any], static_listeners: list[dict[str, Any]],
                 static_clusters: list[dict[str, Any]], initial_fetch_timeout: float) -> None:
        self.base = base                  # native top level: admin, drain_timeout ...
        self.static_listeners = static_listeners
        self.static_clusters = static_clusters
        self.timeout = initial_fetch_timeout
        self.target: Target | None = None
        self.applied: dict[str, Any] | None = None     # the native config serving
        self.serving_eds: dict[str, str | None] = {}   # EDS cluster -> service name, serving
        self.latest: tuple[dict[str, Any], Config] | None = None   # built, maybe warming
        self.warming: set[str] = set()                 # "eds:<name>", "rds:<name>", ...
        self.changed = asyncio.Event()                 # set at every apply (startup waits)
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.timeouts = 0
        # The resources accepted now (the client's; set by XdsClient).
        self.states_fn: Any = lambda: {t: {} for t in (CDS, EDS, LDS, RDS, SDS)}

    # --- building ------------------------------------------------------------

    def build(self, states: States) -> tuple[dict[str, Any], Config]:
        """The native config of `states` (ConfigError if it is refused)."""
        listeners = self.static_listeners + [e.doc for e in states[LDS].values()]
        clusters = self.static_clusters + [e.doc for e in states[CDS].values()]
        routes = {n: e.doc if e.doc.get("virtual_hosts") else _no_routes(n)
                  for n, e in states[RDS].items()}
        for lst in listeners:
            for name in route_config_names(lst):
                # Not there yet (warming timed out): no routes, 404 as Envoy.
                routes.setdefault(name, _no_routes(name))
        known = {c["name"] for c in clusters}
        missing = set()
        for doc in [*listeners, *routes.values()]:
            missing |= cluster_refs(doc) - known
        # A route to a cluster the server removed: an empty cluster (503), not
        # a rejected config, as Envoy.
        clusters += [{"name": n, "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}},
                      "connect_timeout": "1s"} for n in sorted(missing)]
        native = translate_resources(listeners, _ads_as_marked_files(clusters), routes, {},
                                     {n: e.doc for n, e in states[SDS].items()},
                                     validate=False)
        _marked_files_as_ads(native)
        native = {**self.base, **native}
        return native, parse_config(native, source="xds", min_listeners=0)

    def pending(self, states: States) -> set[str]:
        """What the current resources wait for (warming)."""
        out = set()
        for e in states[CDS].values():
            svc = eds_service_name(e.doc)
            if svc is not None and svc not in states[EDS]:
                out.add(f"eds:{svc}")
        for e in states[LDS].values():
            out |= {f"rds:{n}" for n in route_config_names(e.doc) if n not in states[RDS]}
        for e in [*states[LDS].values(), *states[CDS].values()]:
            out |= {f"sds:{n}" for n in secret_names(e.doc) if n not in states[SDS]}
        return out

    # --- applying ------------------------------------------------------------

    async def config_changed(self, states: States, built: tuple[dict[str, Any], Config]) -> None:
        """A CDS/LDS/RDS/SDS update was accepted: apply its config, now or
        once what it waits for is there."""
        async with self._lock:
            self.latest = built
            self.warming = self.pending(states)
            if self.warming:
                log.info("xds: warming, waiting for %s", ", ".join(sorted(self.warming)))
                self._arm_timer(states)
                return
            await self._apply(states)

    async def endpoints_changed(self, states: States, names: set[str]) -> None:
        """EDS: new endpoint sets for `names` (service names)."""
        async with self._lock:
            if self.target is not None:
                for cluster, svc in self.serving_eds.items():
                    if svc in names:
                        self.target.publish(cluster, states[EDS][svc].extra)
            if self.warming:
                self.warming = self.pending(states)
                if not self.warming and self.latest is not None:
                    await self._apply(states)

    def _arm_timer(self, states: States) -> None:
        if self._timer is None or self._timer.done():
            if self.timeout > 0:
                self._timer = asyncio.create_task(self._time_out())

    async def _time_out(self) -> None:
        await asyncio.sleep(self.timeout)
        async with self._lock:
            states = self.states_fn()
            if not self.warming or self.latest is None:
                return
            log.warning("xds: initial_fetch_timeout (%gs): applying without %s",
                        self.timeout, ", ".join(sorted(self.warming)))
            self.timeouts += 1
            self.warming = set()
            try:
                # Rebuilt: what came meanwhile is in, what is missing is filled.
                self.latest = self.build(states)
                await self._apply(states)
            except Exception as exc:     # nothing to NACK: log, keep serving
                log.error("xds: applying after initial_fetch_timeout failed: %s", exc)

    async def _apply(self, states: States) -> None:
        assert self.latest is not None
        native, config = self.latest
        self.warming = set()
        # EDS cluster -> the assignment it takes; None: a cluster made for a
        # route whose cluster is gone (no endpoints).
        eds: dict[str, str | None] = {c.name: None for c in config.clusters if c.discovery.ads}
        for e in states[CDS].values():
            svc = eds_service_name(e.doc)
            if svc is not None:
                eds[e.doc["name"]] = svc
        if self.target is None:
            self.applied = native
            self.serving_eds = eds
            self.changed.set()
            return
        # Endpoints first: new clusters compile with them. A cluster whose
        # assignment is gone (removed, or never came) has none.
        for cluster, svc in eds.items():
            if svc is None or svc not in states[EDS]:
                self.target.publish(cluster, [])
            elif self.serving_eds.get(cluster, "") != svc:
                self.target.publish(cluster, states[EDS][svc].extra)
        if native != self.applied:
            await self.target.apply(config, native)
            self.applied = native
        self.serving_eds = eds
        self.changed.set()

    def attach(self, target: Target, states: States) -> None:
        """Start feeding `target`, which serves `self.applied`; it gets every
        EDS cluster's endpoints now."""
        self.target = target
        for cluster, svc in self.serving_eds.items():
            target.publish(cluster, states[EDS][svc].extra if svc in states[EDS] else [])

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
