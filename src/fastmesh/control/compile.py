"""Compile a validated Config into the data plane's tables (a Snapshot).

This is the one place where the control side meets the data side: it builds
routers, load balancers and clusters over C arrays once per config, so that
nothing on the request path looks at configuration again. Each worker
compiles its own Snapshot (the tables hold per-worker state such as the
least-request counters) and hands it to ``Worker.apply``.
"""
from __future__ import annotations

import ipaddress
import socket

from fastmesh import _core, _lb, _router
from fastmesh.control.config import (
    ClusterConfig,
    Config,
    ConfigError,
    ListenerConfig,
    RouteConfig,
)


def _resolve(address: str, port: int, where: str) -> str:
    """Endpoint hostnames are resolved once, here, never on the request path."""
    try:
        ipaddress.ip_address(address)
        return address
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(None, None, where, f"cannot resolve {address!r}: {exc}") from exc
    return infos[0][4][0]


def build_cluster(cfg: ClusterConfig, index: int) -> _core.Cluster:
    endpoints = []
    weights = []
    keys = []
    for i, ep in enumerate(cfg.endpoints):
        host = _resolve(ep.address, ep.port, f"clusters[{index}].endpoints[{i}].address")
        endpoints.append(_core.Endpoint(host, ep.port, i, ep.weight))
        weights.append(ep.weight)
        keys.append(f"{host}:{ep.port}".encode())
    options: dict = {}
    if cfg.lb == "ring_hash":
        options = {"minimum_ring_size": cfg.ring_min, "maximum_ring_size": cfg.ring_max}
    elif cfg.lb == "maglev":
        options = {"table_size": cfg.maglev_table_size}
    lb = _lb.make_lb(cfg.lb, weights, keys, options)
    hp = cfg.hash_policy
    if cfg.lb in ("ring_hash", "maglev") and hp is None:
        hp_header, hp_source = None, True
    elif hp is not None:
        hp_header, hp_source = hp.header, hp.source_ip
    else:
        hp_header, hp_source = None, False
    return _core.Cluster(
        cfg.name, lb, endpoints,
        hash_header=hp_header, hash_source_ip=hp_source,
        connect_timeout=cfg.connect_timeout, idle_timeout=cfg.idle_timeout,
        buffer_limit=cfg.per_connection_buffer_limit,
        max_requests_per_connection=cfg.max_requests_per_connection,
        protocol=cfg.protocol,
    )


def _build_route(r: RouteConfig, clusters: dict[str, _core.Cluster]) -> tuple:
    m = r.match
    headers = [
        _router.HeaderMatch(h.name, exact=h.exact, prefix=h.prefix, regex=h.regex,
                            present=h.present, invert=h.invert)
        for h in m.headers
    ]
    match = _router.RouteMatch(prefix=m.prefix, path=m.path, regex=m.regex,
                               headers=headers, case_sensitive=m.case_sensitive)
    name = r.name or ""
    if r.action == "cluster":
        route = _router.Route(name, "cluster", cluster=clusters[r.cluster], timeout=r.timeout)
    elif r.action == "weighted_clusters":
        route = _router.Route(
            name, "weighted",
            clusters=[clusters[w.name] for w in r.weighted_clusters],
            weights=[w.weight for w in r.weighted_clusters],
            timeout=r.timeout,
        )
    else:
        d = r.direct_response
        route = _router.Route(name, "direct", direct_status=d.status,
                              direct_body=d.body.encode(), timeout=0.0)
    return (match, route)


def build_listener(cfg: ListenerConfig, clusters: dict[str, _core.Cluster]) -> _core.ListenerConf:
    router = None
    cluster = None
    if cfg.protocol == "http":
        router = _router.Router([
            (vh.name, list(vh.domains), [_build_route(r, clusters) for r in vh.routes])
            for vh in cfg.virtual_hosts
        ])
    else:
        cluster = clusters[cfg.cluster]
    return _core.ListenerConf(
        cfg.name, cfg.protocol, router=router, cluster=cluster,
        idle_timeout=cfg.idle_timeout,
        headers_timeout=cfg.request_headers_timeout,
        stream_idle_timeout=cfg.stream_idle_timeout,
        buffer_limit=cfg.per_connection_buffer_limit,
        max_head_bytes=cfg.max_request_headers_kb * 1024,
        max_headers=cfg.max_headers_count,
        xff_append=cfg.xff_append,
        gen_request_id=cfg.generate_request_id,
        h2_max_concurrent_streams=cfg.http2.max_concurrent_streams,
        h2_initial_stream_window=cfg.http2.initial_stream_window_size,
        h2_initial_connection_window=cfg.http2.initial_connection_window_size,
    )


def build_snapshot(config: Config, version: int = 0) -> _core.Snapshot:
    """Build the data plane's Snapshot for one worker from a validated Config."""
    clusters = {c.name: build_cluster(c, i) for i, c in enumerate(config.clusters)}
    listeners = {lc.name: build_listener(lc, clusters) for lc in config.listeners}
    return _core.Snapshot(listeners, clusters, version, config.drain_timeout)
