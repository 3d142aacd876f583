"""`fastmesh run -c envoy.yaml` with ``dynamic_resources``: the xDS client
(control/xds) feeding the single process or the supervisor.

Startup follows Envoy's init: connect, wait for the first clusters and
listeners (warmed, or initial_fetch_timeout), then start the runtime on
that config, with every EDS cluster's endpoints already known. From then
on each accepted update goes through the runtime's two-phase apply, and
EDS through its discovery (the endpoint path). The admin shows the xDS
resources in /config_dump and the xDS stats.
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Any

from fastmesh.control.config import Config, ConfigError
from fastmesh.control.eds_file import DiscoveredEndpoint
from fastmesh.control.xds import XdsSource

log = logging.getLogger("fastmesh.xds")

SOURCE = "xds"


class SingleTarget:
    """Applies to a SingleProcess's DataPlane."""

    def __init__(self, single: Any) -> None:
        self.single = single

    async def apply(self, config: Config, native: dict[str, Any]) -> None:
        try:
            await self.single.plane.reload(config)
        except OSError as exc:         # a listener that cannot bind
            self.single.reloads_failed += 1
            raise ConfigError(SOURCE, None, "", f"cannot apply: {exc}") from None
        self.single.config = config
        self.single.reloads_ok += 1

    def publish(self, cluster: str, endpoints: list[DiscoveredEndpoint]) -> None:
        disc = self.single.plane.discovery
        if disc is not None:
            disc.publish(cluster, endpoints)


class SupervisorTarget:
    """Applies to every worker of a Supervisor (prepare, then commit)."""

    def __init__(self, sup: Any) -> None:
        self.sup = sup

    async def apply(self, config: Config, native: dict[str, Any]) -> None:
        if not await self.sup.apply(config, json.dumps(native), SOURCE):
            raise ConfigError(SOURCE, None, "", self.sup.last_reload_error or "not applied")

    def publish(self, cluster: str, endpoints: list[DiscoveredEndpoint]) -> None:
        self.sup.discovery.publish(cluster, endpoints)


async def run(args: Any, doc: dict[str, Any], path: str) -> int:
    """`fastmesh run` on an xDS bootstrap; the exit code."""
    try:
        xds = XdsSource(doc, file=path)
    except ConfigError as exc:
        print(f"fastmesh: invalid config: {exc}", file=sys.stderr)
        return 1
    native, _config = await xds.initial()
    text = json.dumps(native)
    if args.single_process:
        from fastmesh.runtime.single import SingleProcess

        rt: Any = SingleProcess(text, SOURCE, path=None, user=args.user, group=args.group)
        target: Any = SingleTarget(rt)
    else:
        from fastmesh.runtime.supervisor import Supervisor

        rt = Supervisor(text, SOURCE, path=None, workers=args.workers,
                        log_level=args.log_level, user=args.user, group=args.group)
        target = SupervisorTarget(rt)
    rt.xds = xds
    # The endpoints are known before the first snapshot is compiled.
    xds.attach(target)
    try:
        await rt.start()
    except (RuntimeError, OSError) as exc:
        await xds.stop()
        print(f"fastmesh: {exc}", file=sys.stderr)
        return 1
    code = await rt.wait()
    await xds.stop()
    return code
