"""`fastmesh run --single-process`: one process that is its own worker.

The data plane, the admin listener, SIGHUP reload and SIGTERM drain all run
in one event loop, like Envoy with ``--concurrency 1``: the smallest
footprint (one interpreter) and the fastest start, for sidecars that get one
core. There is no supervisor to restart it: that is the job of whatever
started it (the orchestrator, systemd). With several workers use the default
supervisor model.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

from fastmesh.admin import metrics
from fastmesh.admin.ops import AdminOps, plane_ops
from fastmesh.admin.server import AdminServer
from fastmesh.control.config import ConfigError, parse_config
from fastmesh.runtime import privileges
from fastmesh.runtime.dataplane import DataPlane

log = logging.getLogger("fastmesh.single")


class SingleProcess:
    """A DataPlane plus admin, reload and drain in the current loop."""

    def __init__(self, config_text: str, source: str, *, path: str | None,
                 user: str | None = None, group: str | None = None) -> None:
        self.config = parse_config(config_text, source=source)
        # Dropped to once the listeners and the admin are bound.
        self.run_as = privileges.resolve(user or self.config.user,
                                         group if user else (group or self.config.group))
        self.path = path
        self.plane = DataPlane(self.config, reuse_port=True, owns_loop=True)
        self.admin: AdminServer | None = None
        self.stopping = False
        self.reloads_ok = 0
        self.reloads_failed = 0
        self._done = asyncio.Event()
        self._started = False
        self._stop_requested = False     # SIGTERM/SIGINT while starting
        self.xds: Any = None             # the xDS source feeding it (runtime/xds.py)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Stop signals are ours before the listeners serve: one that arrives
        # meanwhile must drain, not kill the process outright.
        loop.add_signal_handler(signal.SIGTERM, self._on_stop)
        loop.add_signal_handler(signal.SIGINT, self._on_stop)
        await self.plane.start()
        if self.config.admin is not None:
            self.admin = AdminServer(self.config.admin.address, self.config.admin.port,
                                     stats=self.stats_snapshot, config=lambda: self.plane.config,
                                     ready=lambda: not self.stopping,
                                     version=lambda: self.plane.version,
                                     clusters=self.plane.clusters_status,
                                     certs=self.plane.certs, ops=self._admin_ops(),
                                     allow_remote=self.config.admin.allow_remote_changes,
                                     xds_configs=self._xds_configs())
            await self.admin.start()
        privileges.warn_if_root(self.run_as)
        if self.run_as is not None:
            privileges.drop_privileges(self.run_as)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        # Everything allocated so far lives as long as the process: keep it out
        # of the collector's way.
        gc.collect()
        gc.freeze()
        self._started = True
        if self._stop_requested:
            self._on_stop()

    def _on_stop(self) -> None:
        if not self._started:
            self._stop_requested = True      # start() stops once everything is up
        elif not self.stopping:
            self.stopping = True
            asyncio.ensure_future(self._stop())

    async def _stop(self) -> None:
        log.info("draining")
        await self.plane.drain()
        if self.admin is not None:
            await self.admin.stop()
        self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        return 0

    async def reload(self) -> bool:
        """Re-read the file; an invalid one is logged and changes nothing."""
        if self.path is None:
            log.warning("reload requested, but the config is embedded (no file to re-read)")
            return False
        try:
            with open(self.path, encoding="utf-8") as f:
                config = parse_config(f.read(), source=self.path)
            await self.plane.reload(config)
        except (ConfigError, OSError) as exc:
            self.reloads_failed += 1
            log.error("reload rejected, the running config keeps serving: %s", exc)
            return False
        self.config = config
        self.reloads_ok += 1
        log.info("config reloaded from %s", self.path)
        return True

    async def stats_snapshot(self) -> dict[str, Any]:
        """The worker's stats with the process's own values, in the
        supervisor's format (the admin's stats provider)."""
        own = metrics.process_block(
            workers=1,
            workers_ready=0 if self.stopping else 1,
            config_reloads_ok=self.reloads_ok,
            config_reloads_failed=self.reloads_failed,
            config_version=self.plane.version)
        xds = self.xds.blocks() if self.xds is not None else []
        return metrics.merge([self.plane.stats(), {"blocks": [own, *xds]}])

    def _xds_configs(self) -> Any:
        return self.xds.config_dump if self.xds is not None else None

    def _admin_ops(self) -> AdminOps:
        ops = plane_ops(self.plane, lambda: self.path or "")

        async def reset_counters() -> None:
            self.plane.reset_counters()
            self.reloads_ok = self.reloads_failed = 0

        ops.reset_counters = reset_counters
        return ops

    async def stats(self) -> dict[str, Any]:
        """The stats as one plain dict (what /stats?format=json shows)."""
        return metrics.summary(await self.stats_snapshot())
