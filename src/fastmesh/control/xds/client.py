"""The xDS client: one ADS stream (gRPC, v3) to the management server,
state of the world or incremental (delta), and what it does with each
response.

Each response is checked whole before anything changes: decoded, its
endpoints checked (EDS) or the whole config it makes translated and
validated (CDS, LDS, RDS, SDS). A good one is accepted and ACKed (the
response's version_info and nonce); a bad one is NACKed (the last accepted
version, the nonce, and error_detail saying why) and the last good config
keeps serving. The stream is re-opened after any failure with Envoy's
jittered exponential backoff, on the next address of the list; while the
server is away nothing changes. The wire formats are in sotw.py and delta.py.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import grpc

from fastmesh.control.discovery import without_gc
from fastmesh.control.eds_file import EdsError
from fastmesh.control.loader import ConfigError
from fastmesh.control.xds.apply import (Assembler, eds_service_name, route_config_names,
                                        secret_names)
from fastmesh.control.xds.bootstrap import XdsSettings
from fastmesh.control.xds.eds import endpoints_of
from fastmesh.control.xds.resources import (CDS, EDS, LDS, ORDER, RDS, SDS, WILDCARD,
                                            ResourceError, decode, name_of, to_dict)
from fastmesh.control.xds.state import Entry, TypeState

log = logging.getLogger("fastmesh.xds")

# Envoy's backoff for a failed xDS stream: 500 ms doubling to 30 s, jittered.
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0

Update = tuple[str, str, Any]        # (name or "", version, packed Any)

# An assignment larger than this is read in a thread (about 400 endpoints).
PARSE_INLINE_BYTES = 8192


def _parse_many(raws: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for raw in raws:
        try:
            out.append(endpoints_of(raw))
        except EdsError as exc:
            out.append(exc)
    return out


class XdsClient:
    """Keeps an ADS stream open and feeds accepted updates to an Assembler."""

    def __init__(self, settings: XdsSettings, assembler: Assembler) -> None:
        self.settings = settings
        self.assembler = assembler
        self.types = {t: TypeState(t) for t in ORDER}
        self.connected = False
        self.target: str | None = None       # the address of the current stream
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self.stream_count = 0                # streams opened (1 + reconnects)
        assembler.states_fn = self.states

    # --- what we hold and want ------------------------------------------------

    def states(self) -> dict[str, dict[str, Entry]]:
        return {t: ts.entries for t, ts in self.types.items()}

    def wanted(self, type_url: str) -> set[str] | None:
        """The resource names to subscribe to; None: all (wildcard)."""
        if type_url in WILDCARD:
            return None
        cds = [e.doc for e in self.types[CDS].entries.values()]
        lds = [e.doc for e in self.types[LDS].entries.values()]
        if type_url == EDS:
            return {s for s in map(eds_service_name, cds + self.assembler.static_clusters) if s}
        if type_url == RDS:
            return {n for d in lds + self.assembler.static_listeners
                    for n in route_config_names(d)}
        out: set[str] = set()
        for d in (cds + lds + self.assembler.static_listeners + self.assembler.static_clusters):
            out |= secret_names(d)
        return out

    # --- one response -----------------------------------------------------------

    async def on_response(self, type_url: str, updates: Sequence[Update],
                          removed: Sequence[str], version_info: str, *, sotw: bool) -> str | None:
        """Check and accept one response; the NACK's reason, or None to ACK."""
        ts = self.types.get(type_url)
        if ts is None:
            return f"fastmesh does not subscribe to {type_url}"
        ts.count("update_attempt")
        ts.received = True
        old = ts.entries
        # State of the world: a wildcard type's response is the whole set; a
        # named type's holds what was asked for (absent ones are kept).
        new = {} if sotw and type_url in WILDCARD else dict(old)
        changed: set[str] = set()
        docs: dict[str, dict[str, Any]] = {}
        names: list[str] = []
        built = None
        try:
            parsed = await self._parse_eds(updates, old) if type_url == EDS else {}
            now = time.time()
            for name, version, packed in updates:
                if packed.type_url != type_url:
                    raise ResourceError(f"a {packed.type_url} resource in a {type_url} response")
                raw = packed.value
                if type_url == EDS:
                    # Read from the bytes (no protobuf objects: 10,000 endpoints).
                    try:
                        got = parsed.get(id(packed))
                        if got is None:
                            got = endpoints_of(raw)
                        elif isinstance(got, EdsError):
                            raise got
                        cname, eps = got
                    except EdsError as exc:
                        # Named in the NACK and in /config_dump's error_state.
                        name = name or decode(type_url, packed).cluster_name
                        names.append(name)
                        raise ResourceError(f"ClusterLoadAssignment {name!r}: {exc}") from None
                    name = name or cname
                    msg = None
                else:
                    msg = decode(type_url, packed)
                    name = name or name_of(type_url, msg)
                names.append(name)
                if name in changed:
                    raise ResourceError(f"{name!r} is in the response twice")
                prev = old.get(name)
                if prev is not None and prev.raw == raw:
                    new[name] = prev if prev.version == version else Entry(
                        name, version, raw, prev.last_updated, prev.msg, prev.doc, prev.extra)
                    continue
                entry = Entry(name, version, raw, now, msg)
                if type_url == EDS:
                    entry.extra = eps
                else:
                    entry.doc = docs[name] = to_dict(msg)
                new[name] = entry
                changed.add(name)
            for name in removed:
                if new.pop(name, None) is not None:
                    changed.add(name)
            if sotw and type_url in WILDCARD:
                changed |= old.keys() - new.keys()
            if type_url != EDS and changed:
                built = self.assembler.build({**self.states(), type_url: new})
        except (ResourceError, ConfigError) as exc:
            return self._reject(ts, version_info, names, str(exc), docs)
        old_version = ts.version_info
        held = self.states()
        ts.accept(new, version_info)
        self._forget_unwanted()
        try:
            if type_url == EDS:
                if changed:
                    await self.assembler.endpoints_changed(self.states(), changed)
            elif built is not None:
                await self.assembler.config_changed(self.states(), built)
        except ConfigError as exc:
            # Valid, but the data plane refused it (a worker could not
            # prepare it): as a NACK, the old resources stay.
            for t, entries in held.items():
                self.types[t].entries = entries
            ts.version_info = old_version
            ts.counters["update_success"] -= 1
            return self._reject(ts, version_info, names, str(exc), docs)
        log.info("xds: %s version %r accepted (%d resource(s), %d changed)", ts.short,
                 version_info, len(new), len(changed))
        return None

    async def _parse_eds(self, updates: Sequence[Update], old: dict[str, Entry]
                         ) -> dict[int, Any]:
        # Large assignments that changed are read in a thread, the collector
        # paused, so the loop (which serves traffic with --single-process)
        # keeps running: the reader lets it take the GIL every 256 endpoints.
        held = {e.raw for e in old.values()}
        todo = [p for _name, _v, p in updates
                if len(p.value) > PARSE_INLINE_BYTES and p.value not in held]
        if not todo:
            return {}
        results = await asyncio.get_running_loop().run_in_executor(
            None, without_gc, _parse_many, [p.value for p in todo])
        return {id(p): r for p, r in zip(todo, results)}

    def _reject(self, ts: TypeState, version: str, names: list[str], details: str,
                docs: dict[str, dict[str, Any]]) -> str:
        ts.reject(version, tuple(names), details, docs)
        log.error("xds: %s update %r rejected, the last good config keeps serving: %s",
                  ts.short, version, details)
        return details

    def _forget_unwanted(self) -> None:
        # Resources of named types nothing refers to any more (a removed
        # cluster's endpoints), as Envoy unsubscribes them.
        for t in (EDS, RDS, SDS):
            wanted = self.wanted(t)
            ts = self.types[t]
            if wanted is not None and ts.entries.keys() - wanted:
                ts.entries = {n: e for n, e in ts.entries.items() if n in wanted}

    # --- the connection -----------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="xds")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        await self.assembler.stop()

    async def _run(self) -> None:
        from fastmesh.control.xds.delta import DeltaStream
        from fastmesh.control.xds.sotw import SotwStream

        failures = 0
        i = 0
        targets = self.settings.targets
        while True:
            target = targets[i % len(targets)]
            stream_cls = DeltaStream if self.settings.delta else SotwStream
            got_response = False
            try:
                async with grpc.aio.insecure_channel(target) as channel:
                    self._channel = channel
                    await asyncio.wait_for(channel.channel_ready(), 5.0)
                    self.target = target
                    self.connected = True
                    self.stream_count += 1
                    log.info("xds: connected to %s (%s)", target,
                             "delta" if self.settings.delta else "state of the world")
                    stream = stream_cls(self, channel)
                    got_response = await stream.run()
                    log.warning("xds: the management server at %s closed the stream", target)
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, asyncio.TimeoutError, OSError) as exc:
                detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
                log.warning("xds: stream to %s failed: %s; the last good config keeps serving",
                            target, detail)
            finally:
                self.connected = False
                self._channel = None
            if got_response:
                failures = 0           # it worked for a while: start the backoff over
            failures += 1
            i += 1
            delay = random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (failures - 1)))
            await asyncio.sleep(delay)

    # --- admin ----------------------------------------------------------------------

    def blocks(self) -> list[dict[str, Any]]:
        """Envoy's xDS stats in the stats snapshot format (docs/stats.md):
        control_plane.connected_state, cluster_manager.cds.*,
        listener_manager.lds.*, and rds.*, eds.*, sds.* for the others."""
        from fastmesh.admin.metrics import plain_block

        prefixes = {CDS: "cluster_manager.cds", LDS: "listener_manager.lds", RDS: "rds",
                    EDS: "eds", SDS: "sds"}
        out = [plain_block("control_plane", {"connected_state": int(self.connected)},
                           gauges=("connected_state",))]
        for t, ts in self.types.items():
            out.append(plain_block(prefixes[t], dict(ts.counters)))
        return out
