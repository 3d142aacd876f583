"""Service discovery: live endpoint sets for ``strict_dns``, ``logical_dns``
and ``eds`` clusters (docs/discovery.md).

As active health checks, discovery runs once per process that owns the
config (the supervisor, or the single process / embedded Proxy), never in a
worker: a name is resolved once and a file read once, whatever the number of
workers, and never on a worker's loop. Each cluster's source reports its
whole endpoint set when it changes; ``on_change`` gets ``{cluster: [
DiscoveredEndpoint, ...]}`` and the runtime hands it to every worker
(``DataPlane.set_endpoints``, which swaps the set on the live ClusterState:
balancer state kept where it can be, pools of removed endpoints drained).

A source that fails keeps its last good set: a name that stops resolving,
an endpoint file that becomes invalid or is half-written. A name that never
resolved gives an empty cluster (503, ``upstream_cx_none_healthy``) and is
retried with backoff, instead of failing the start.

``effective(config)`` is the config with each dynamic cluster's endpoints
replaced by what discovery knows, for everything that reads endpoints from a
Config (compiling a snapshot, health checks, /config_dump).
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fastmesh.control.dns import resolve
from fastmesh.control.eds_file import DiscoveredEndpoint, EdsError, parse_cluster_load_assignment
from fastmesh.control.schema import ClusterConfig, Config, EndpointConfig
from fastmesh.control.tasks import cancel_and_wait

log = logging.getLogger("fastmesh.discovery")

Table = dict[str, tuple[DiscoveredEndpoint, ...]]

# Envoy's cluster.<name>.* discovery stats that fastmesh counts.
COUNTERS = ("update_attempt", "update_success", "update_failure", "update_rejected",
            "update_empty", "membership_change")
GAUGES = ("membership_total", "membership_healthy")


class _Source:
    """One dynamic cluster's source: a task that calls `publish` with the
    whole endpoint set whenever it changes."""

    def __init__(self, cfg: ClusterConfig, disc: Discovery) -> None:
        self.cfg = cfg
        self.disc = disc
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"discovery {self.cfg.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self.task)
        self.task = None

    async def run(self) -> None:
        raise NotImplementedError

    def count(self, name: str) -> None:
        self.disc.stats[self.cfg.name][name] += 1


class _DnsSource(_Source):
    """strict_dns: every address of every endpoint's name; logical_dns: the
    first address of its one name. Re-resolved at dns_refresh_rate (or the
    answer's TTL with respect_dns_ttl); after a failure, at the failure
    refresh rate, doubling up to its max, with jitter (Envoy's backoff)."""

    async def run(self) -> None:
        d = self.cfg.discovery
        base = d.dns_failure_base_interval or d.dns_refresh_rate
        cap = d.dns_failure_max_interval or base * 10
        last: dict[int, tuple[str, ...]] = {}     # endpoint index -> last good addresses
        failures = 0
        while True:
            self.count("update_attempt")
            results = await asyncio.gather(
                *(resolve(ep.address, ep.port, d) for ep in self.cfg.endpoints),
                return_exceptions=True)
            ttls: list[float] = []
            failed = []
            for i, r in enumerate(results):
                if isinstance(r, BaseException):
                    failed.append(f"{self.cfg.endpoints[i].address}: {r}")
                    continue
                last[i] = r.addresses
                if r.ttl is not None:
                    ttls.append(r.ttl)
            eps: list[DiscoveredEndpoint] = []
            seen: set[tuple[str, int]] = set()
            for i, ep in enumerate(self.cfg.endpoints):
                addrs = last.get(i, ())
                if d.type == "logical_dns":
                    addrs = addrs[:1]
                for a in addrs:
                    if (a, ep.port) not in seen:
                        seen.add((a, ep.port))
                        eps.append(DiscoveredEndpoint(a, ep.port, ep.weight))
            self.disc.publish(self.cfg.name, eps)
            if failed:
                self.count("update_failure")
                failures += 1
                delay = min(cap, base * 2 ** (failures - 1))
                delay = random.uniform(delay / 2, delay)
                log.warning("cluster %s: DNS resolution failed (%s); %s; retrying in %.1fs",
                            self.cfg.name, "; ".join(failed),
                            "keeping the last answer" if eps else "no endpoints yet", delay)
            else:
                self.count("update_success")
                failures = 0
                delay = d.dns_refresh_rate
                if d.respect_dns_ttl and ttls:
                    delay = max(min(ttls), 0.001)
            await asyncio.sleep(delay)


_gc_lock = threading.Lock()
_gc_pauses = 0


def without_gc(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) with the cyclic collector paused, for a large endpoint set
    parsed in a thread (an endpoint file here, an EDS push in control/xds):
    10,000 endpoints are ~60,000 live containers while they are checked,
    and a full collection scanning them (10-40 ms, holding the GIL) would
    stall the loop that serves traffic beside this thread. What the parse
    leaves behind is freed by reference counting; the collector runs again
    after."""
    global _gc_pauses
    with _gc_lock:
        _gc_pauses += 1
        was = gc.isenabled() if _gc_pauses == 1 else True
        gc.disable()
    try:
        return fn(*args)
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and was:
                gc.enable()


class _EdsFileSource(_Source):
    """eds with a path config source: the file is read now and whenever it
    or its directory changes (watchfiles: inotify; an atomic rename or a
    Kubernetes ConfigMap's symlink swap are both seen). An invalid file is
    rejected whole, the last good endpoints stay."""

    def __init__(self, cfg: ClusterConfig, disc: Discovery) -> None:
        super().__init__(cfg, disc)
        path = Path(cfg.discovery.eds_path or "")
        self.path = path if path.is_absolute() else disc.base_dir / path
        self.last_text: str | None = None

    async def read(self) -> None:
        self.count("update_attempt")
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            self.count("update_failure")
            log.error("cluster %s: cannot read endpoint file %s: %s; the last good endpoints "
                      "keep serving", self.cfg.name, self.path, exc.strerror or exc)
            return
        if text == self.last_text:
            return                      # an event that changed nothing we read
        try:
            # Off the loop: 10,000 endpoints take tens of milliseconds to
            # check, and with --single-process this loop also serves traffic.
            eps = await asyncio.get_running_loop().run_in_executor(
                None, without_gc, parse_cluster_load_assignment, text, self.cfg.name)
        except EdsError as exc:
            self.count("update_rejected")
            log.error("cluster %s: endpoint file %s rejected, the last good endpoints keep "
                      "serving: %s", self.cfg.name, self.path, exc)
            return
        self.last_text = text
        self.count("update_success")
        self.disc.publish(self.cfg.name, eps)

    async def run(self) -> None:
        import watchfiles

        await self.read()
        # Watch the directory, not the file: a rename over the file or a
        # symlink swap replaces the inode a file watch would follow.
        watch_dir = self.path.parent
        while True:
            if not watch_dir.is_dir():
                await asyncio.sleep(1.0)
                await self.read()
                continue
            try:
                async for _changes in watchfiles.awatch(watch_dir, debounce=20, step=10,
                                                        recursive=False,
                                                        rust_timeout=1000, yield_on_timeout=True):
                    await self.read()
            except (OSError, RuntimeError) as exc:
                log.warning("cluster %s: watching %s failed (%s); polling", self.cfg.name,
                            watch_dir, exc)
                await asyncio.sleep(1.0)
                await self.read()


_SOURCES: dict[str, type[_Source]] = {
    "strict_dns": _DnsSource,
    "logical_dns": _DnsSource,
    "eds": _EdsFileSource,
}


class _AdsSource(_Source):
    """eds with ``eds_config: {ads: {}}``: the xDS client (control/xds)
    publishes the cluster's ClusterLoadAssignments itself; this source only
    holds the cluster's place in the table."""

    def start(self) -> None:
        pass


def _source_class(cfg: ClusterConfig) -> type[_Source]:
    if cfg.discovery.ads:
        return _AdsSource
    if cfg.discovery.type == "eds" and cfg.discovery.etcd is not None:
        # Imported here: aetcd and grpcio load only when a cluster uses etcd.
        from fastmesh.control.etcd_source import EtcdSource
        return EtcdSource
    return _SOURCES[cfg.discovery.type]


def with_endpoints(config: Config,
                   endpoints: Mapping[str, Iterable[tuple[str, int, int]]]) -> Config:
    """`config` with each dynamic cluster's endpoints replaced by
    `endpoints[name]` ((host, port, weight); none known: an empty cluster)."""
    if not any(c.discovery.dynamic for c in config.clusters):
        return config
    clusters = tuple(
        dataclasses.replace(c, endpoints=tuple(
            EndpointConfig(h, p, w) for h, p, w in endpoints.get(c.name, ())))
        if c.discovery.dynamic else c
        for c in config.clusters)
    return dataclasses.replace(config, clusters=clusters)


class Discovery:
    """Runs each dynamic cluster's source; knows every cluster's current set."""

    def __init__(self, on_change: Callable[[Table], None], base_dir: str | os.PathLike | None = None
                 ) -> None:
        self.on_change = on_change
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.table: Table = {}
        self.sources: dict[str, _Source] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self._lock = asyncio.Lock()
        self._stopped = False

    async def update(self, config: Config) -> None:
        """Run the sources `config` asks for: unchanged clusters keep their
        source and set, changed ones restart (keeping their set until the
        new source publishes), removed ones stop and are forgotten."""
        async with self._lock:
            if self._stopped:
                return
            wanted = {c.name: c for c in config.clusters if c.discovery.dynamic}
            for name in [n for n in self.sources if n not in wanted]:
                await self.sources.pop(name).stop()
                self.table.pop(name, None)
                self.stats.pop(name, None)
            for name, cfg in wanted.items():
                src = self.sources.get(name)
                if src is not None and src.cfg.discovery == cfg.discovery \
                        and src.cfg.endpoints == cfg.endpoints:
                    src.cfg = cfg
                    continue
                if src is not None:
                    await src.stop()
                self.stats.setdefault(name, dict.fromkeys(COUNTERS, 0))
                self.table.setdefault(name, ())
                src = _source_class(cfg)(cfg, self)
                self.sources[name] = src
                src.start()

    async def stop(self) -> None:
        async with self._lock:
            self._stopped = True
            for src in self.sources.values():
                await src.stop()
            self.sources.clear()

    def publish(self, cluster: str, endpoints: list[DiscoveredEndpoint]) -> None:
        """A source's new set (the same set again is not passed on)."""
        new = tuple(endpoints)
        if self.table.get(cluster) == new:
            return
        if cluster in self.stats:
            self.stats[cluster]["membership_change"] += 1
            if not new:
                self.stats[cluster]["update_empty"] += 1
        log.info("cluster %s: %d endpoint(s) from discovery", cluster, len(new))
        self.table[cluster] = new
        self.on_change({cluster: list(new)})

    def effective(self, config: Config) -> Config:
        """`config` with each dynamic cluster's endpoints as discovered
        (none yet: an empty cluster)."""
        return with_endpoints(config, {name: [(e.host, e.port, e.weight) for e in eps]
                                       for name, eps in self.table.items()})

    def blocks(self) -> list[dict[str, Any]]:
        """Per cluster block (prefix "cluster", label cluster=name), in the
        stats registry snapshot format (docs/stats.md)."""
        out = []
        for name, values in self.stats.items():
            eps = self.table.get(name, ())
            vals: dict[str, int] = {**values, "membership_total": len(eps),
                                    "membership_healthy": sum(e.healthy for e in eps)}
            out.append({"prefix": "cluster", "labels": [["cluster", name]], "values": vals,
                        "kinds": {k: "gauge" if k in GAUGES else "counter" for k in vals}})
        return out
