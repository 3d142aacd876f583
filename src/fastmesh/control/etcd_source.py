"""etcd as an endpoint source: ``type: eds`` with
``eds_config: {etcd: {endpoints: [http://host:port], prefix: /p/}}``
(docs/discovery.md "etcd").

Every key under the prefix is one endpoint, its value JSON::

    {"address": "10.0.3.17", "port": 8080, "weight": 2, "health_status": "HEALTHY",
     "locality": {"region": "eu-west-1", "zone": "eu-west-1a"}, "priority": 0}

written by ``fastmesh register`` (control/etcd_register.py) or anything
else, normally attached to a lease so that a crashed instance disappears
when its lease expires.

The source reads the whole prefix once (a range read at revision R), then
watches it from R+1. After a disconnect it watches again from the last
revision it saw (nothing missed, nothing read twice); if etcd compacted
that revision away meanwhile (the watch is refused or cancelled with a
compact_revision), it reads the whole prefix again. While etcd is
unreachable the last known endpoints keep serving and the source retries
with jittered exponential backoff, trying each configured URL in turn.

This module is imported only when a cluster uses etcd, so aetcd (and
grpcio) are never loaded otherwise.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
from typing import Any

from fastmesh.control.discovery import Discovery, _Source
from fastmesh.control.eds_file import (
    HEALTH_STATUSES,
    MAX_WEIGHT,
    UNHEALTHY_STATUSES,
    DiscoveredEndpoint,
    EdsError,
)
from fastmesh.control.schema import ClusterConfig

log = logging.getLogger("fastmesh.discovery")

# etcd-only counters, beside discovery.COUNTERS in the cluster's stats block.
ETCD_COUNTERS = ("etcd_watch_resumed", "etcd_compacted")

# gRPC keepalive, so that an etcd that vanishes without a TCP reset (a host
# gone, a partition) is noticed in ~15 s; etcd accepts pings every 5 s.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 10_000, "grpc.keepalive_timeout_ms": 5_000,
                "grpc.keepalive_permit_without_calls": 1}


def split_url(url: str) -> tuple[str, int]:
    """("host", port) of http://host:port (validated by validation.py)."""
    host, _, port = url.partition("://")[2].rstrip("/").rpartition(":")
    return host.strip("[]"), int(port)


NEEDS_AETCD = "etcd needs the aetcd package: pip install 'fastmesh[etcd]'"


def client_for(url: str, timeout: float) -> Any:
    """An aetcd client (not yet connected) for one etcd URL."""
    import aetcd

    host, port = split_url(url)
    return aetcd.Client(host=host, port=port, timeout=timeout, options=dict(GRPC_OPTIONS))


def parse_endpoint_value(value: bytes | str) -> DiscoveredEndpoint:
    """The endpoint a key's JSON value describes; EdsError names the field."""
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EdsError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EdsError("expected a JSON object {address, port, ...}")
    unknown = set(doc) - {"address", "port", "weight", "health_status", "locality", "priority"}
    if unknown:
        raise EdsError(f"unknown field(s) {', '.join(sorted(unknown))}; expected address, port, "
                       "weight, health_status, locality, priority")
    host = doc.get("address")
    try:
        host = str(ipaddress.ip_address(host)) if isinstance(host, str) else None
    except ValueError:
        host = None
    if host is None:
        raise EdsError(f"address: {doc.get('address')!r} is not an IP address")
    port = doc.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise EdsError(f"port: {port!r} is not a port")
    weight = doc.get("weight", 1)
    if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= MAX_WEIGHT:
        raise EdsError(f"weight: {weight!r}; a weight is an integer from 1 to {MAX_WEIGHT}")
    status = doc.get("health_status", "UNKNOWN")
    if status not in HEALTH_STATUSES:
        raise EdsError(f"health_status: {status!r} is not one of {', '.join(HEALTH_STATUSES)}")
    loc = doc.get("locality", {})
    if not isinstance(loc, dict) or not all(isinstance(loc.get(k, ""), str)
                                            for k in ("region", "zone", "sub_zone")):
        raise EdsError("locality: expected {region, zone, sub_zone} strings")
    priority = doc.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        raise EdsError(f"priority: {priority!r} is not a non-negative integer")
    return DiscoveredEndpoint(host, port, weight, status not in UNHEALTHY_STATUSES, status,
                              loc.get("region", ""), loc.get("zone", ""),
                              loc.get("sub_zone", ""), priority)


def endpoint_value(address: str, port: int, weight: int = 1, health_status: str = "HEALTHY",
                   region: str = "", zone: str = "", sub_zone: str = "",
                   priority: int = 0) -> str:
    """The JSON value `parse_endpoint_value` reads (what `fastmesh register` writes)."""
    doc: dict[str, Any] = {"address": address, "port": port, "weight": weight,
                           "health_status": health_status}
    loc = {k: v for k, v in (("region", region), ("zone", zone), ("sub_zone", sub_zone)) if v}
    if loc:
        doc["locality"] = loc
    if priority:
        doc["priority"] = priority
    return json.dumps(doc, separators=(",", ":"))


class _Restart(Exception):
    """The watch must be started again (after a full read if `reread`)."""

    def __init__(self, reread: bool) -> None:
        super().__init__()
        self.reread = reread


class EtcdSource(_Source):
    """One eds cluster fed by an etcd prefix (module docstring)."""

    def __init__(self, cfg: ClusterConfig, disc: Discovery) -> None:
        super().__init__(cfg, disc)
        assert cfg.discovery.etcd is not None
        self.etcd = cfg.discovery.etcd
        self.prefix = self.etcd.prefix.encode()
        for name in ETCD_COUNTERS:
            disc.stats[cfg.name].setdefault(name, 0)
        self.kvs: dict[bytes, DiscoveredEndpoint] = {}   # key -> its last good endpoint
        self.revision = 0                # last revision applied; 0: read the prefix first
        self.failures = 0                # consecutive failures (the backoff's exponent)
        self._flush_pending = False

    # -- applying what etcd says

    def _set(self, key: bytes, value: bytes) -> None:
        try:
            self.kvs[key] = parse_endpoint_value(value)
        except EdsError as exc:
            # The key keeps its last good endpoint (if any), as an endpoint
            # file keeps its last good version.
            self.count("update_rejected")
            log.error("cluster %s: etcd key %s rejected: %s", self.cfg.name,
                      key.decode(errors="replace"), exc)

    def _publish(self) -> None:
        self._flush_pending = False
        eps: list[DiscoveredEndpoint] = []
        seen: dict[tuple[str, int], bytes] = {}
        for key in sorted(self.kvs):
            e = self.kvs[key]
            if (e.host, e.port) in seen:
                log.warning("cluster %s: etcd keys %s and %s both name %s:%d; using the first",
                            self.cfg.name, seen[e.host, e.port].decode(errors="replace"),
                            key.decode(errors="replace"), e.host, e.port)
                continue
            seen[e.host, e.port] = key
            eps.append(e)
        self.disc.publish(self.cfg.name, eps)

    def _schedule_publish(self) -> None:
        # aetcd hands a watch response's events over one by one without
        # yielding to the loop: publishing once they are all applied sends
        # one endpoint set per etcd response, not one per key.
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._publish)

    async def _read_all(self, client: Any) -> None:
        self.count("update_attempt")
        r = await client.get_prefix(self.prefix)
        self.kvs = {}
        for kv in r:
            self._set(kv.key, kv.value)
        self.revision = r.header.revision
        self.count("update_success")
        log.info("cluster %s: read %d key(s) under %s at etcd revision %d", self.cfg.name,
                 len(r), self.etcd.prefix, self.revision)
        self._publish()

    async def _current_revision(self, client: Any) -> int:
        # A count-only range: the store's revision without reading the keys.
        from aetcd import rpc, utils

        r = await client.kvstub.Range(
            rpc.RangeRequest(key=self.prefix, range_end=utils.prefix_range_end(self.prefix),
                             count_only=True),
            timeout=self.etcd.dial_timeout, metadata=client.metadata)
        return int(r.header.revision)

    async def _watch(self, client: Any, resume: bool) -> None:
        import aetcd

        self.count("update_attempt")
        try:
            watch = await client.watch_prefix(self.prefix, start_revision=self.revision + 1)
        except aetcd.exceptions.RevisionCompactedError as exc:
            raise _Restart(self._compacted(exc)) from None
        self.count("update_success")
        if resume:
            self.count("etcd_watch_resumed")
            log.info("cluster %s: etcd reachable again; watching %s from revision %d",
                     self.cfg.name, self.etcd.prefix, self.revision + 1)
        self.failures = 0
        self.watching.set()
        try:
            async for ev in watch:
                if ev.kind == aetcd.rtypes.EventKind.PUT:
                    self._set(ev.kv.key, ev.kv.value)
                else:
                    self.kvs.pop(ev.kv.key, None)
                self.revision = max(self.revision, ev.kv.mod_revision)
                self._schedule_publish()
        except aetcd.exceptions.RevisionCompactedError as exc:
            raise _Restart(self._compacted(exc)) from None
        finally:
            self.watching.clear()
        raise ConnectionError("the watch ended")

    def _compacted(self, exc: Any) -> bool:
        self.count("etcd_compacted")
        log.warning("cluster %s: etcd compacted revision %d away (below %d); reading %s again",
                    self.cfg.name, self.revision + 1, exc.compacted_revision, self.etcd.prefix)
        self.revision = 0
        return True

    # -- the loop: connect, read, watch; reconnect with backoff

    async def run(self) -> None:
        try:
            import aetcd
        except ImportError:
            log.error("cluster %s: %s; the cluster stays empty", self.cfg.name, NEEDS_AETCD)
            return

        self.watching = asyncio.Event()     # set while a watch runs (tests, perf)
        url_index = 0
        while True:
            url = self.etcd.endpoints[url_index % len(self.etcd.endpoints)]
            client = client_for(url, self.etcd.dial_timeout)
            try:
                await client.connect()
                while True:
                    try:
                        # after a disconnect: resumed from the revision, unless
                        # it was compacted away (then revision is 0: read all)
                        resume = self.failures > 0 and self.revision != 0
                        if resume and await self._current_revision(client) < self.revision:
                            # etcd came back with less history than we saw
                            # (its data wiped): our revision means nothing there
                            log.warning("cluster %s: etcd's revision went back; reading %s "
                                        "again", self.cfg.name, self.etcd.prefix)
                            self.revision, resume = 0, False
                        if self.revision == 0:
                            await self._read_all(client)
                        await self._watch(client, resume)
                    except _Restart:
                        continue            # compacted: read again, at once
            except Exception as exc:  # noqa: BLE001 - any failure: keep serving, retry
                expected = isinstance(exc, (aetcd.exceptions.ClientError, aetcd.rpc.AioRpcError,
                                            ConnectionError, OSError, asyncio.TimeoutError))
                if not expected:        # a bug: say so loudly, but do not stop watching
                    log.exception("cluster %s: etcd source failed", self.cfg.name)
                self.count("update_failure")
                self.failures += 1
                url_index += 1
                delay = min(self.etcd.retry_max_interval,
                            self.etcd.retry_base_interval * 2 ** min(self.failures - 1, 30))
                delay = random.uniform(delay / 2, delay)
                log.warning("cluster %s: etcd %s unreachable (%s); %s; retrying in %.2fs",
                            self.cfg.name, url, exc or type(exc).__name__,
                            "keeping the last known endpoints" if self.kvs
                            else "no endpoints yet", delay)
            finally:
                try:
                    await asyncio.wait_for(client.close(), 2.0)
                except Exception:  # noqa: BLE001 - a dead channel may fail to close
                    pass
            await asyncio.sleep(delay)
