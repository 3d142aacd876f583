"""The xDS client: fastmesh fed by an xDS management server (Istio, Kuma,
Consul, go-control-plane ...) over ADS, gRPC v3, state of the world or
delta. Design notes: docs/xds.md.

One concern per module: ``bootstrap`` (the bootstrap's dynamic_resources
and node), ``resources`` (type URLs, protobufs), ``sotw`` and ``delta``
(the two wire protocols), ``client`` (the stream, reconnects, ACK/NACK),
``state`` (accepted resources, versions, counters), ``eds`` (a
ClusterLoadAssignment as an endpoint set), ``apply`` (warming, native
configs, the endpoint path) and ``dump`` (/config_dump). The runtime glue
is runtime/xds.py.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from fastmesh.control.config import Config
from fastmesh.control.envoy import translate_bootstrap
from fastmesh.control.loader import ConfigError
from fastmesh.control.xds.apply import Assembler, Target
from fastmesh.control.xds.bootstrap import XdsSettings, is_xds_bootstrap, settings_of
from fastmesh.control.xds.client import XdsClient
from fastmesh.control.xds.dump import xds_configs
from fastmesh.control.xds.resources import CDS, LDS, ResourceError, to_dict

from envoy.config.bootstrap.v3 import bootstrap_pb2

__all__ = ["XdsSource", "is_xds_bootstrap", "settings_of"]

log = logging.getLogger("fastmesh.xds")


def _static(doc: Mapping[str, Any], file: str | None) -> tuple[list[dict], list[dict]]:
    # The bootstrap's static listeners and clusters in proto3 JSON (what the
    # management server's resources are turned into): through the Bootstrap
    # proto, which checks the field names and writes them one way.
    static = doc.get("static_resources") or {}
    try:
        bs = bootstrap_pb2.Bootstrap()
        json_format.ParseDict({"static_resources": static}, bs)
        return ([to_dict(x) for x in bs.static_resources.listeners],
                [to_dict(x) for x in bs.static_resources.clusters])
    except (json_format.ParseError, ResourceError) as exc:
        raise ConfigError(file, None, "static_resources", str(exc)) from None


def _base(doc: Mapping[str, Any], file: str | None) -> dict[str, Any]:
    # The native top level (admin, ...) of the bootstrap; its static
    # resources go to translate_resources with the dynamic ones.
    bs = translate_bootstrap({k: v for k, v in doc.items()
                              if k not in ("dynamic_resources", "static_resources")}, file=file)
    return {k: v for k, v in bs.config.items() if k not in ("listeners", "clusters")}


class XdsSource:
    """An Envoy bootstrap's ADS source: the client, its assembler and the
    startup wait (Envoy's init: the first CDS and LDS, warmed)."""

    def __init__(self, doc: Mapping[str, Any], file: str | None = None) -> None:
        self.settings: XdsSettings = settings_of(doc, file)
        listeners, clusters = _static(doc, file)
        self.assembler = Assembler(_base(doc, file), listeners, clusters,
                                   self.settings.initial_fetch_timeout)
        self.client = XdsClient(self.settings, self.assembler)

    async def initial(self) -> tuple[dict[str, Any], Config]:
        """Connect and wait for the first config to serve: the first CDS and
        LDS responses with their clusters and listeners warmed, or what is
        there after initial_fetch_timeout (if it has a listener)."""
        self.client.start()
        a = self.assembler
        cds, lds = self.client.types[CDS], self.client.types[LDS]
        timeout = self.settings.initial_fetch_timeout or float("inf")
        deadline = time.monotonic() + timeout
        warned = False
        while True:
            if a.applied is not None and cds.received and lds.received and not a.warming \
                    and a.applied.get("listeners"):
                break
            if time.monotonic() >= deadline:
                if not warned:
                    warned = True
                    for ts in (cds, lds):
                        if not ts.received:
                            ts.count("init_fetch_timeout")
                    log.warning("xds: no complete config from the management server within "
                                "initial_fetch_timeout (%gs)", timeout)
                try:
                    native, config = a.build(self.client.states())
                    if config.listeners:
                        a.latest, a.applied = (native, config), native
                        break
                except ConfigError as exc:
                    log.error("xds: %s", exc)
            a.changed.clear()
            try:
                await asyncio.wait_for(a.changed.wait(), max(0.05, min(1.0, deadline -
                                                                       time.monotonic())))
            except asyncio.TimeoutError:
                pass
        assert a.latest is not None
        return a.applied, a.latest[1]

    def attach(self, target: Target) -> None:
        """From now on accepted updates go to `target` (which serves the
        config `initial` returned)."""
        self.assembler.attach(target, self.client.states())

    async def stop(self) -> None:
        await self.client.stop()

    def blocks(self) -> list[dict[str, Any]]:
        return self.client.blocks()

    def config_dump(self) -> list[dict[str, Any]]:
        return xds_configs(self.client.types, self.assembler.static_listeners,
                           self.assembler.static_clusters)
