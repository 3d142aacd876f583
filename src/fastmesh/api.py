"""The embedding API: run fastmesh inside an existing asyncio/uvloop program.

    import fastmesh

    proxy = fastmesh.Proxy({"listeners": [...], "clusters": [...]})
    await proxy.start()          # binds the listeners in the running loop
    print(proxy.addresses)       # {"ingress": ("127.0.0.1", 10000)}
    await proxy.reload(new_cfg)  # swap config without dropping connections
    await proxy.stop()           # drain and close

The proxy runs in the caller's event loop (uvloop gives the best speed; the
stdlib loop works too). ``fastmesh run`` uses the same pieces, one per
worker process.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fastmesh._core import HttpFilter
from fastmesh.admin import metrics
from fastmesh.admin.ops import plane_ops
from fastmesh.admin.server import AdminServer
from fastmesh.control.config import Config, load_config, parse_config
from fastmesh.runtime.dataplane import DataPlane

ConfigLike = Config | Mapping[str, Any] | str | os.PathLike[str]


def to_config(config: ConfigLike) -> Config:
    """A validated Config from a Config, a dict, a YAML file path, or YAML text."""
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return parse_config(dict(config), source="<dict>")
    text = os.fspath(config)
    if "\n" not in text and os.path.exists(text):
        return load_config(text)
    if "\n" in text:
        return parse_config(text, source="<string>")
    return load_config(text)   # raises ConfigError naming the missing file


class Proxy:
    """A fastmesh proxy in the running event loop.

    ``config`` is a Config, a dict in the YAML schema (docs/config.md), YAML
    text, or a path to a YAML file. ``admin=True`` also serves the config's
    admin listener (/ready, /stats, /stats/prometheus, /config_dump) in this loop.
    ``owns_loop=True`` says the loop serves nothing but this proxy, which
    lets the worker batch under load (the config's ``batch_window``: it
    sleeps between polls, holding up every other callback of the loop); by
    default an embedded proxy never sleeps.
    """

    def __init__(self, config: ConfigLike, *, admin: bool = False, reuse_port: bool = False,
                 owns_loop: bool = False) -> None:
        self.config = to_config(config)
        self._dataplane = DataPlane(self.config, reuse_port=reuse_port, owns_loop=owns_loop)
        self._admin: AdminServer | None = None
        self._want_admin = admin
        self.started = False

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> "Proxy":
        return cls(load_config(path), **kwargs)

    async def start(self) -> None:
        """Bind the listeners and start serving."""
        await self._dataplane.start()
        if self._want_admin and self.config.admin is not None:
            self._admin = AdminServer(
                self.config.admin.address, self.config.admin.port,
                stats=self._stats_snapshot, config=lambda: self.config,
                ready=lambda: self.started, version=lambda: self._dataplane.version,
                clusters=self._dataplane.clusters_status,
                certs=self._dataplane.certs, ops=plane_ops(self._dataplane, lambda: ""),
                allow_remote=self.config.admin.allow_remote_changes)
            await self._admin.start()
        self.started = True

    async def _stats_snapshot(self) -> dict[str, Any]:
        return self.stats_snapshot()

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Bound (host, port) of each listener by name."""
        return self._dataplane.addresses

    @property
    def admin_address(self) -> tuple[str, int] | None:
        return self._admin.address if self._admin else None

    async def reload(self, config: ConfigLike) -> None:
        """Validate and switch to a new config. On error (ConfigError) the
        current config keeps serving."""
        cfg = to_config(config)
        await self._dataplane.reload(cfg)
        self.config = cfg

    async def add_filter(self, listener: str, flt: HttpFilter) -> None:
        """Add an HTTP filter object (a `fastmesh.HttpFilter` subclass, Python
        or Cython) to a listener's chain, after its configured `http_filters`
        and before the router. It stays through reloads. Requests already
        past the chain are not affected."""
        await self._dataplane.add_filter(listener, flt)

    def stats(self) -> dict[str, Any]:
        """The stats as one plain dict: ``downstream_*`` summed over the
        listeners, ``"listeners"`` and ``"clusters"`` by name, the worker's
        own values and ``config_version`` (docs/stats.md)."""
        return metrics.summary(self.stats_snapshot())

    def stats_snapshot(self) -> dict[str, Any]:
        """The stats registry's snapshot (docs/stats.md: every block with
        its labels, the latency histograms), with ``config_version``."""
        own = metrics.process_block(config_version=self._dataplane.version)
        return metrics.merge([self._dataplane.stats(), {"blocks": [own]}])

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, finish requests in flight (up to drain_timeout,
        default the config's drain_timeout), then close everything."""
        self.started = False
        await self._dataplane.drain(drain_timeout)
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None

    async def __aenter__(self) -> "Proxy":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
