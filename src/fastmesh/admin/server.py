"""The admin listener: readiness, stats and the running config.

Control side, plain asyncio: it serves operators and scrapers, not traffic.

    GET /ready              200 "LIVE" when serving, 503 otherwise (draining, starting)
    GET /stats              Envoy's text: `name: value`, histograms as quantiles in ms
    GET /stats?format=json  the same stats as one JSON object (admin.metrics.summary)
    GET /stats/prometheus   the Prometheus text format 0.0.4 (or /stats?format=prometheus)
    GET /config_dump        the running config as JSON, with its "version" when known
    GET /clusters           every cluster's endpoints: Envoy's `cluster::host:port::field::value`
                            lines, or its admin.v3.Clusters JSON with ?format=json (admin/clusters.py)
    GET /certs              the TLS certificates in use (Envoy's admin.v3.Certificates JSON)

``?filter=REGEX`` on the stats keeps those whose Envoy name it matches
(``re.search``), in every format, as Envoy's admin does. The stats come from
the runtime as one merged registry snapshot (docs/stats.md).
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from fastmesh.admin.clusters import render_json as render_clusters_json
from fastmesh.admin.clusters import render_text as render_clusters_text
from fastmesh.admin.metrics import render_prometheus, render_text, select, summary
from fastmesh.control.config import Config, config_to_dict

log = logging.getLogger("fastmesh.admin")

# A merged registry snapshot (admin.metrics.merge) with the process's own
# block, plus "info": plain data for the JSON summary (worker pids...).
StatsProvider = Callable[[], Awaitable[dict[str, Any]]]
# The merged cluster statuses (admin.clusters.merge).
ClustersProvider = Callable[[], Awaitable[list[dict[str, Any]]]]

_STATS_FORMATS = ("text", "json", "prometheus")

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}


class AdminServer:
    """An HTTP/1.1 admin endpoint (one request per connection)."""

    def __init__(self, address: str, port: int, *, stats: StatsProvider,
                 config: Callable[[], Config], ready: Callable[[], bool],
                 version: Callable[[], int] | None = None,
                 clusters: ClustersProvider | None = None,
                 certs: Callable[[], dict[str, Any]] | None = None,
                 xds_configs: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.host = address
        self.port = port
        self._stats = stats
        self._config = config
        self._ready = ready
        self._version = version
        self._clusters = clusters
        self._certs = certs
        # With an xDS client: its resources in Envoy's config_dump shape.
        self._xds_configs = xds_configs
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        log.info("admin on %s:%d", *self.address)
        if not ipaddress.ip_address(self.address[0]).is_loopback:
            # Validation refuses this unless admin.allow_remote says it is meant.
            log.warning("ADMIN IS REACHABLE FROM THE NETWORK on %s:%d (admin.allow_remote): "
                        "anyone who can connect can read /config_dump and /stats and drain "
                        "this proxy; restrict it with a firewall", *self.address)

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            if len(parts) != 3:
                status, ctype, body = 400, "text/plain", b"bad request\n"
            else:
                method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
                status, ctype, body = await self.dispatch(method, target)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError):
            writer.close()
            return
        except Exception:
            log.exception("admin request failed")
            status, ctype, body = 500, "text/plain", b"internal error\n"
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"content-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n".encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def dispatch(self, method: str, target: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        path, _, query = target.partition("?")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        if path == "/ready":
            if self._ready():
                return 200, "text/plain", b"LIVE\n"
            return 503, "text/plain", b"NOT READY\n"
        if path == "/stats":
            return await self.stats(params.get("format", "text"), params.get("filter"))
        if path == "/stats/prometheus":
            return await self.stats("prometheus", params.get("filter"))
        if path == "/config_dump":
            dump = config_to_dict(self._config())
            if self._version is not None:
                dump = {"version": self._version(), **dump}
            if self._xds_configs is not None:
                dump["configs"] = self._xds_configs()
            return 200, "application/json", json.dumps(dump, indent=2).encode()
        if path == "/clusters" and self._clusters is not None:
            fmt = params.get("format", "text")
            if fmt not in ("text", "json"):
                return 400, "text/plain", b"format must be one of text, json\n"
            statuses = await self._clusters()
            if fmt == "json":
                return 200, "application/json", json.dumps(render_clusters_json(statuses),
                                                           indent=2).encode()
            return 200, "text/plain; charset=utf-8", render_clusters_text(statuses).encode()
        if path == "/certs":
            # JSON only, as Envoy's; no key material is in it (control/certs.py).
            body = self._certs() if self._certs is not None else {"certificates": []}
            return 200, "application/json", json.dumps(body, indent=2).encode()
        if path == "/":
            return 200, "text/plain", (b"/ready\n/stats\n/stats/prometheus\n/config_dump\n/certs\n"
                                       + (b"/clusters\n" if self._clusters else b""))
        return 404, "text/plain", b"not found\n"

    async def stats(self, fmt: str, filter_regex: str | None) -> tuple[int, str, bytes]:
        if fmt not in _STATS_FORMATS:
            return 400, "text/plain", f"format must be one of {', '.join(_STATS_FORMATS)}\n".encode()
        try:
            snap = select(await self._stats(), filter_regex)
        except re.error as exc:
            return 400, "text/plain", f"invalid filter regex: {exc}\n".encode()
        if fmt == "json":
            return 200, "application/json", json.dumps(summary(snap), indent=2).encode()
        if fmt == "prometheus":
            return 200, "text/plain; version=0.0.4; charset=utf-8", render_prometheus(snap).encode()
        return 200, "text/plain; charset=utf-8", render_text(snap).encode()
