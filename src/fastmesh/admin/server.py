"""The admin listener: Envoy's admin API, the stats, a live dashboard.

Control side, plain asyncio: it serves operators and scrapers, not traffic.
Paths and shapes follow Envoy's admin (docs/observability.md lists them;
``/help`` prints the table below). Reading endpoints answer GET (and HEAD);
the ones that change state answer POST only (anything else: 405 with
``Allow: POST``) and only to a loopback client unless ``admin.allow_remote``
(403), as Envoy's mutating endpoints are POST-only.

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
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from fastmesh import __version__
from fastmesh.admin import ops as _ops
from fastmesh.admin.clusters import render_json as render_clusters_json
from fastmesh.admin.clusters import render_text as render_clusters_text
from fastmesh.admin.istio import istio_families, source_labels
from fastmesh.admin.metrics import (NAMINGS, OPENMETRICS_TYPE, PROMETHEUS_TYPE, envoy_json,
                                    render_openmetrics, render_prometheus, render_text, select,
                                    summary, used_only, wants_openmetrics)
from fastmesh.admin.ops import AdminOps
from fastmesh.control.config import Config, config_to_dict
from fastmesh.control.tls import REDACTED

log = logging.getLogger("fastmesh.admin")

# A merged registry snapshot (admin.metrics.merge) with the process's own
# block, plus "info": plain data for the JSON summary (worker pids...).
StatsProvider = Callable[[], Awaitable[dict[str, Any]]]
# The merged cluster statuses (admin.clusters.merge).
ClustersProvider = Callable[[], Awaitable[list[dict[str, Any]]]]

_STATS_FORMATS = ("text", "json", "prometheus")

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable"}

# path -> (method, help): Envoy's /help lines. POST endpoints change state.
ENDPOINTS = {
    "/": ("GET", "this list"),
    "/help": ("GET", "this list"),
    "/ready": ("GET", "200 LIVE while serving, 503 when draining, starting or after /healthcheck/fail"),
    "/stats": ("GET", "the stats: ?format=text|json|prometheus, ?filter=REGEX, ?usedonly"),
    "/stats/prometheus": ("GET", "the stats in the Prometheus text format (OpenMetrics if "
                                 "Accept asks); ?naming=fastmesh|envoy, ?filter=REGEX, ?usedonly"),
    "/config_dump": ("GET", "the running config as JSON: ?resource=KEY, ?mask=FIELD,...; "
                            "secrets redacted"),
    "/clusters": ("GET", "upstream clusters and their endpoints (?format=json)"),
    "/listeners": ("GET", "listeners and their bound addresses (?format=json)"),
    "/server_info": ("GET", "version, state, uptime, command line options, node"),
    "/certs": ("GET", "the TLS certificates in use"),
    "/memory": ("GET", "the processes' memory use"),
    "/dashboard": ("GET", "a live dashboard (HTML) of requests, errors, latency, health"),
    "/dashboard/data": ("GET", "the dashboard's numbers as JSON"),
    "/logging": ("POST", "change log levels: ?level=LEVEL (every logger) or "
                         "?paths=LOGGER:LEVEL,...; no parameter lists the loggers"),
    "/healthcheck/fail": ("POST", "fail health checks: /ready answers 503, traffic still flows"),
    "/healthcheck/ok": ("POST", "pass health checks again"),
    "/drain_listeners": ("POST", "stop accepting on every listener (?graceful: also close "
                                 "open connections after their current request)"),
    "/reset_counters": ("POST", "reset every counter and histogram to zero"),
}

Response = tuple[int, str, bytes]


def _json(body: Any, status: int = 200) -> Response:
    return status, "application/json", (json.dumps(body, indent=2) + "\n").encode()


def _text(body: str, status: int = 200) -> Response:
    return status, "text/plain; charset=utf-8", body.encode()


def _redact(value: Any) -> Any:
    # Belt and braces over control/dump.py, which already redacts inline
    # keys: inline PEM key material and credentials never leave the process.
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(v, str) and (("PRIVATE KEY" in v) or
                                       k.lower() in ("password", "token", "secret")):
                out[k] = REDACTED
            else:
                out[k] = _redact(v)
        return out
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _mask(value: Any, fields: list[list[str]]) -> Any:
    # Envoy's FieldMask: keep only these (dotted) paths of each resource.
    if isinstance(value, list):
        return [_mask(v, fields) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for path in fields:
        if path[0] not in value:
            continue
        if len(path) == 1:
            out[path[0]] = value[path[0]]
        else:
            sub = _mask(value[path[0]], [path[1:]])
            prev = out.get(path[0])
            out[path[0]] = {**prev, **sub} if isinstance(prev, dict) and isinstance(sub, dict) \
                else sub
    return out


class AdminServer:
    """An HTTP/1.1 admin endpoint (one request per connection)."""

    def __init__(self, address: str, port: int, *, stats: StatsProvider,
                 config: Callable[[], Config], ready: Callable[[], bool],
                 version: Callable[[], int] | None = None,
                 clusters: ClustersProvider | None = None,
                 certs: Callable[[], dict[str, Any]] | None = None,
                 ops: AdminOps | None = None, allow_remote: bool = False,
                 xds_configs: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.host = address
        self.port = port
        self._stats = stats
        self._config = config
        self._ready = ready
        self._version = version
        self._clusters = clusters
        self._certs = certs
        self.ops = ops or AdminOps()
        self.allow_remote = allow_remote
        # POST /healthcheck/fail: /ready answers 503 (Envoy's DRAINING
        # state) while the listeners keep serving, so a load balancer takes
        # this instance out before it drains.
        self.health_failed = False
        self.started = time.time()
        # With an xDS client: its resources in Envoy's config_dump shape.
        self._xds_configs = xds_configs
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.started = time.time()
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

    def state(self) -> str:
        """Envoy's server state: LIVE, or DRAINING (stopping, or health
        checks failed by /healthcheck/fail), or PRE_INITIALIZING."""
        if self.health_failed:
            return "DRAINING"
        return "LIVE" if self._ready() else "DRAINING"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        extra = ""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if len(parts) != 3:
                status, ctype, body = 400, "text/plain", b"bad request\n"
            else:
                peer = writer.get_extra_info("peername")
                status, ctype, body = await self.dispatch(
                    parts[0], parts[1], headers, peer[0] if peer else None)
                if status == 405:
                    extra = f"allow: {ENDPOINTS.get(parts[1].partition('?')[0], ('GET',))[0]}\r\n"
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError):
            writer.close()
            return
        except Exception:
            log.exception("admin request failed")
            status, ctype, body = 500, "text/plain", b"internal error\n"
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"content-type: {ctype}\r\ncontent-length: {len(body)}\r\n{extra}"
            "cache-control: no-cache, max-age=0\r\n"
            "connection: close\r\n\r\n".encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    def _remote_refused(self, peer: str | None) -> bool:
        if self.allow_remote or peer is None:
            return False
        try:
            return not ipaddress.ip_address(peer.split("%")[0]).is_loopback
        except ValueError:
            return False            # a unix socket path: local

    async def dispatch(self, method: str, target: str, headers: dict[str, str] | None = None,
                       peer: str | None = None) -> Response:
        path, _, query = target.partition("?")
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        headers = headers or {}
        spec = ENDPOINTS.get(path)
        if spec is None:
            return 404, "text/plain", b"not found\n"
        allowed = ("GET", "HEAD") if spec[0] == "GET" else ("POST",)
        if method not in allowed:
            return 405, "text/plain", f"method not allowed: {path} is {spec[0]} only\n".encode()
        if spec[0] == "POST":
            if self._remote_refused(peer):
                return 403, "text/plain", (b"state-changing admin endpoints answer loopback "
                                           b"clients only (admin.allow_remote)\n")
            return await self.post(path, params)
        return await self.get(path, params, headers)

    async def get(self, path: str, params: dict[str, str], headers: dict[str, str]) -> Response:
        if path in ("/", "/help"):
            lines = ["admin commands are:"]
            lines += [f"  {p}: {'(POST) ' if m == 'POST' else ''}{h}"
                      for p, (m, h) in sorted(ENDPOINTS.items())]
            return _text("\n".join(lines) + "\n")
        if path == "/ready":
            state = self.state()
            return _text(state + "\n", 200 if state == "LIVE" else 503)
        if path == "/stats":
            return await self.stats(params.get("format", "text"), params, headers)
        if path == "/stats/prometheus":
            return await self.stats("prometheus", params, headers)
        if path == "/config_dump":
            return self.config_dump(params)
        if path == "/clusters":
            if self._clusters is None:
                return _json({"cluster_statuses": []}) if params.get("format") == "json" \
                    else _text("")
            fmt = params.get("format", "text")
            if fmt not in ("text", "json"):
                return 400, "text/plain", b"format must be one of text, json\n"
            statuses = await self._clusters()
            if fmt == "json":
                return _json(render_clusters_json(statuses))
            return _text(render_clusters_text(statuses))
        if path == "/listeners":
            return self.listeners(params.get("format", "text"))
        if path == "/server_info":
            return _json(self.server_info())
        if path == "/certs":
            # JSON only, as Envoy's; no key material is in it (control/certs.py).
            return _json(self._certs() if self._certs is not None else {"certificates": []})
        if path == "/memory":
            return _json(_ops.process_memory(self.ops.pids()))
        if path == "/dashboard":
            from fastmesh.admin.dashboard import PAGE
            return 200, "text/html; charset=utf-8", PAGE
        if path == "/dashboard/data":
            from fastmesh.admin.dashboard import data
            return _json(await data(self))
        return 404, "text/plain", b"not found\n"

    async def post(self, path: str, params: dict[str, str]) -> Response:
        if path == "/healthcheck/fail":
            self.health_failed = True
            log.warning("admin: health checks failed on request (/healthcheck/fail)")
            return _text("OK\n")
        if path == "/healthcheck/ok":
            self.health_failed = False
            log.info("admin: health checks pass again (/healthcheck/ok)")
            return _text("OK\n")
        if path == "/reset_counters":
            if self.ops.reset_counters is None:
                return 501, "text/plain", b"not supported here\n"
            await self.ops.reset_counters()
            return _text("OK\n")
        if path == "/drain_listeners":
            if self.ops.drain_listeners is None:
                return 501, "text/plain", b"not supported here\n"
            graceful = "graceful" in params
            log.warning("admin: draining listeners (%s)", "graceful" if graceful else "now")
            await self.ops.drain_listeners(graceful)
            return _text("OK\n")
        if path == "/logging":
            return await self.logging(params)
        return 404, "text/plain", b"not found\n"

    async def logging(self, params: dict[str, str]) -> Response:
        levels: dict[str, int] = {}
        bad = []
        if "level" in params:
            lvl = _ops.LEVELS.get(params["level"].lower())
            if lvl is None:
                bad.append(params["level"])
            else:
                levels[""] = lvl
        for item in filter(None, params.get("paths", "").split(",")):
            name, _, lvl_name = item.partition(":")
            lvl = _ops.LEVELS.get(lvl_name.lower())
            if lvl is None or not name:
                bad.append(item)
            else:
                levels[name if name.startswith("fastmesh") else f"fastmesh.{name}"] = lvl
        # Envoy's ?<logger>=<level> form too.
        for name, value in params.items():
            if name not in ("level", "paths") and value.lower() in _ops.LEVELS:
                levels[name if name.startswith("fastmesh") else f"fastmesh.{name}"] = \
                    _ops.LEVELS[value.lower()]
        if bad:
            return 400, "text/plain", (f"invalid logging level or path: {', '.join(bad)}; "
                                       f"levels: {', '.join(_ops.LEVELS)}\n").encode()
        if levels:
            _ops.apply_log_levels(levels)
            if self.ops.set_log_levels is not None:
                await self.ops.set_log_levels(levels)
        body = "active loggers:\n" + "".join(
            f"  {n or 'root'}: {lvl}\n" for n, lvl in _ops.log_levels().items())
        return _text(body)

    def config_dump(self, params: dict[str, str]) -> Response:
        dump = config_to_dict(self._config())
        if self._xds_configs is not None:
            # With an xDS client: its resources in Envoy's config_dump shape.
            dump["configs"] = self._xds_configs()
        dump = _redact(dump)
        resource = params.get("resource")
        if resource:
            if resource not in dump:
                return 400, "text/plain", (f"unknown resource {resource!r}; one of "
                                           f"{', '.join(sorted(dump))}\n").encode()
            dump = {resource: dump[resource]}
        if params.get("mask"):
            fields = [f.strip().split(".") for f in params["mask"].split(",") if f.strip()]
            if resource:
                dump = {resource: _mask(dump[resource], fields)}
            else:
                dump = _mask(dump, fields)
        if self._version is not None:
            dump = {"version": self._version(), **dump}
        return _json(dump)

    def listeners(self, fmt: str) -> Response:
        if fmt not in ("text", "json"):
            return 400, "text/plain", b"format must be one of text, json\n"
        bound = self.ops.listeners() if self.ops.listeners is not None else {}
        rows = []
        for lc in self._config().listeners:
            host, port = bound.get(lc.name, (lc.address, lc.port))
            rows.append((lc.name, host, port))
        if fmt == "json":
            return _json({"listener_statuses": [
                {"name": n, "local_address": {"socket_address": {"address": h, "port_value": p}}}
                for n, h, p in rows]})
        return _text("".join(f"{n}::{h}:{p}\n" for n, h, p in rows))

    def server_info(self) -> dict[str, Any]:
        """Envoy's admin.v3.ServerInfo."""
        up = int(time.time() - self.started)
        cfg = self._config()
        import socket
        node = socket.gethostname()
        options = {"config_path": "", "concurrency": 1, "log_level": "info",
                   "drain_time": f"{int(cfg.drain_timeout)}s", "mode": "Serve",
                   "service_node": node, "service_cluster": ""}
        options.update(self.ops.options())
        return {
            "version": f"fastmesh/{__version__}",
            "state": self.state(),
            "hot_restart_version": "disabled",
            "command_line_options": options,
            "node": {"id": options["service_node"], "cluster": options["service_cluster"],
                     "user_agent_name": "fastmesh",
                     "user_agent_build_version": {"version": {
                         "major_number": int(__version__.split(".")[0] or 0)
                         if __version__.split(".")[0].isdigit() else 0}}},
            "uptime_current_epoch": f"{up}s",
            "uptime_all_epochs": f"{up}s",
        }

    async def stats(self, fmt: str, params: dict[str, str],
                    headers: dict[str, str] | None = None) -> Response:
        if fmt not in _STATS_FORMATS:
            return 400, "text/plain", f"format must be one of {', '.join(_STATS_FORMATS)}\n".encode()
        naming = params.get("naming", self.default_naming())
        if naming not in NAMINGS:
            return 400, "text/plain", f"naming must be one of {', '.join(NAMINGS)}\n".encode()
        try:
            snap = select(await self._stats(), params.get("filter"))
        except re.error as exc:
            return 400, "text/plain", f"invalid filter regex: {exc}\n".encode()
        if "usedonly" in params:
            snap = used_only(snap)
        if fmt == "json":
            return _json({**summary(snap), **envoy_json(snap)})
        if fmt == "prometheus":
            extra = self.istio(snap)
            if wants_openmetrics((headers or {}).get("accept")):
                return 200, OPENMETRICS_TYPE, render_openmetrics(snap, naming=naming,
                                                                 extra=extra).encode()
            return 200, PROMETHEUS_TYPE, render_prometheus(snap, naming=naming,
                                                           extra=extra).encode()
        return _text(render_text(snap))

    def _metrics_config(self) -> Any:
        cfg = self._config()
        return cfg.admin.metrics if cfg.admin is not None else None

    def istio(self, snap: dict[str, Any]) -> dict[str, list[Any]] | None:
        """Istio's standard metrics, when admin.metrics.istio asks for them."""
        mc = self._metrics_config()
        if mc is None or not mc.istio:
            return None
        return istio_families(snap, source_labels(mc.workload, mc.namespace, mc.reporter))

    def default_naming(self) -> str:
        mc = self._metrics_config()
        return mc.naming if mc is not None else "fastmesh"
