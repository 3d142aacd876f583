"""Compile a validated Config into the data plane's tables (a Snapshot).

This is the one place where the control side meets the data side: it builds
routers, listener settings with their filter chains and cluster settings
(ClusterConf) once per config, so that nothing on the request path looks at
configuration again. The Snapshot is immutable: live state (load balancers
with their counters, endpoints, pools) is kept by name in each Worker's
ClusterState, so each worker compiles its own Snapshot only because filter
objects are per process; it hands it to ``Worker.apply``.
"""
from __future__ import annotations

import dataclasses
import importlib
import ssl
from collections.abc import Mapping, Sequence

from fastmesh import _core, _router
from fastmesh.control import builtin_filters, rbac, tracing
from fastmesh.control.config import (
    ClusterConfig,
    Config,
    ConfigError,
    HttpFilterConfig,
    ListenerConfig,
    RouteConfig,
    VirtualHostConfig,
)
from fastmesh.control.schema import thaw
from fastmesh.control import tls as _tls
from fastmesh.security.peer import peer_identity


def build_cluster(cfg: ClusterConfig, index: int) -> _core.ClusterConf:
    """The cluster's settings for the snapshot. Its balancer is built by each
    worker's live ClusterState, and only when the endpoints or the policy
    change, so balancer state survives reloads."""
    # IP addresses only: a static cluster's are (validation), a dynamic
    # cluster's come from discovery (DataPlane.effective); nothing here
    # resolves a name.
    endpoints = [(ep.address, ep.port, ep.weight) for ep in cfg.endpoints]
    options: dict = {}
    if cfg.lb == "ring_hash":
        options = {"minimum_ring_size": cfg.ring_min, "maximum_ring_size": cfg.ring_max}
    elif cfg.lb == "maglev":
        options = {"table_size": cfg.maglev_table_size}
    hp = cfg.hash_policy
    if cfg.lb in ("ring_hash", "maglev") and hp is None:
        hp_header, hp_source = None, True
    elif hp is not None:
        hp_header, hp_source = hp.header, hp.source_ip
    else:
        hp_header, hp_source = None, False
    return _core.ClusterConf(
        cfg.name, cfg.lb, endpoints, lb_options=options,
        hash_header=hp_header, hash_source_ip=hp_source,
        connect_timeout=cfg.connect_timeout, idle_timeout=cfg.idle_timeout,
        buffer_limit=cfg.per_connection_buffer_limit,
        max_requests_per_connection=cfg.max_requests_per_connection,
        protocol=cfg.protocol,
        healthy_panic_threshold=cfg.healthy_panic_threshold,
        tls=build_client_tls(cfg),
        circuit_breakers=_breakers(cfg),
        outlier=(_core.OutlierConf(**dataclasses.asdict(cfg.outlier_detection))
                 if cfg.outlier_detection is not None else None),
        original_dst=(_core.OriginalDstConf(cfg.original_dst.cleanup_interval,
                                            cfg.original_dst.use_http_header,
                                            cfg.original_dst.http_header_name)
                      if cfg.original_dst is not None else None),
    )


def build_client_tls(cfg: ClusterConfig) -> _core.TlsClientConf | None:
    """The cluster's TLS origination: a ready client SSLContext (files read here)."""
    if cfg.tls is None:
        return None
    _need_material(cfg.tls, f"cluster {cfg.name!r}")
    return _core.TlsClientConf(_tls.build_client_context(cfg.tls), cfg.tls.sni,
                               _tls.san_matchers(cfg.tls.common_tls_context))


def _need_material(tls_cfg, where: str) -> None:
    # builtin_ca certificates come from control/certs.py (inlined into the
    # config compiled); none yet means the CA could not issue one.
    c = tls_cfg.common_tls_context
    if c.builtin_ca is not None and not c.tls_certificates:
        raise ConfigError(None, None, f"{where}: tls.common_tls_context.builtin_ca",
                          "no certificate issued yet by the built-in CA (see the log)")


def build_server_tls(cfg: ListenerConfig) -> _core.TlsServerConf | None:
    """The listener's TLS: one SSLContext per certificate (files read here,
    never on the data side); contexts are made anew by each compile and keep
    the listener's session ticket keys (security/tickets.py)."""
    if cfg.tls is None:
        return None
    _need_material(cfg.tls, f"listener {cfg.name!r}")
    try:
        contexts = _tls.build_server_contexts(cfg.tls, cfg.name)
    except (OSError, ValueError) as exc:   # ssl.SSLError is an OSError
        raise ConfigError(None, None, f"listener {cfg.name!r}: tls",
                          f"cannot load the certificates: {exc}") from exc
    by = ""
    # XFCC By=: our own identity, the URI SAN of the default certificate.
    pem = cfg.tls.common_tls_context.tls_certificates[0].certificate_chain.read()
    ident = peer_identity(ssl.PEM_cert_to_DER_cert(pem.decode()))
    if ident is not None:
        by = ident.uri
    return _core.TlsServerConf(
        contexts, _tls.san_matchers(cfg.tls.common_tls_context),
        permissive=cfg.tls_mode == "permissive",
        handshake_timeout=(cfg.first_byte_timeout if cfg.first_byte_timeout > 0
                           else _tls.DEFAULT_HANDSHAKE_TIMEOUT),
        forward_client_cert=cfg.forward_client_cert_details,
        ccd=cfg.set_current_client_cert_details, by=by)


def _breakers(cfg: ClusterConfig) -> dict | None:
    """{priority: thresholds} for the data plane's BreakerLimits (None:
    Envoy's defaults everywhere)."""
    if not cfg.circuit_breakers:
        return None
    out = {}
    for t in cfg.circuit_breakers:
        out[t.priority] = {
            "max_connections": t.max_connections,
            "max_pending_requests": t.max_pending_requests,
            "max_requests": t.max_requests,
            "max_retries": t.max_retries,
            "max_connection_pools": t.max_connection_pools,
            "track_remaining": t.track_remaining,
            "retry_budget": None if t.retry_budget is None else {
                "budget_percent": t.retry_budget.budget_percent,
                "min_retry_concurrency": t.retry_budget.min_retry_concurrency},
        }
    return out


# Envoy's RoutingPriority as the data plane's index (cluster_breaker.pxi).
_PRIORITY = {"default": 0, "high": 1}


def _route_timeouts(r: RouteConfig) -> _core.RouteTimeouts | None:
    """The route's idle timeout and stream duration for the data plane (None
    when it sets neither: the router then pays nothing for them)."""
    d = r.max_stream_duration
    if r.idle_timeout is None and d is None:
        return None

    def secs(v: float | None) -> float:
        return -1.0 if v is None else v

    return _core.RouteTimeouts(
        idle_timeout=secs(r.idle_timeout),
        max_stream_duration=secs(d.max_stream_duration if d else None),
        grpc_timeout_header_max=secs(d.grpc_timeout_header_max if d else None),
        grpc_timeout_header_offset=(d.grpc_timeout_header_offset or 0.0) if d else 0.0)


def _per_filter(vh: VirtualHostConfig, r: RouteConfig) -> dict | None:
    """{filter name: compiled per-route settings}: the virtual host's, then
    the route's over them (Envoy: the most specific wins). Each route gets
    its own objects, so its buckets are its own."""
    merged = {**vh.typed_per_filter_config, **r.typed_per_filter_config}
    if not merged:
        return None
    return {name: builtin_filters.BUILTIN_FILTERS[name].build(
                builtin_filters.settings_of(name, raw, per_route=True))
            for name, raw in merged.items()}


def _build_route(r: RouteConfig, vh: VirtualHostConfig | None = None, index: int = 0) -> tuple:
    m = r.match
    headers = [
        _router.HeaderMatch(h.name, exact=h.exact, prefix=h.prefix, regex=h.regex,
                            present=h.present, invert=h.invert)
        for h in m.headers
    ]
    match = _router.RouteMatch(prefix=m.prefix, path=m.path, regex=m.regex,
                               headers=headers, case_sensitive=m.case_sensitive)
    name = r.name or ""
    # The route's `route` stats label: its name; an unnamed route is
    # "<virtual host>/<index>" (stable while the route keeps its place).
    stats = _core.RouteStats(name or f"{vh.name if vh is not None else ''}/{index}")
    # Per-route policy the data plane reads from Route.extra. A route with
    # only per_request_buffer_limit_bytes gets a policy that retries nothing
    # (trusted x-envoy-retry-on headers may add conditions).
    # The virtual host's include_request_attempt_count rides on it too.
    rp = r.retry_policy
    count = vh is not None and vh.include_request_attempt_count
    if rp is not None:
        retry = _core.RetryPolicy(
            rp.retry_on, rp.num_retries, per_try_timeout=rp.per_try_timeout,
            base_interval=rp.base_interval, max_interval=rp.max_interval,
            retriable_status_codes=rp.retriable_status_codes,
            buffer_limit=r.per_request_buffer_limit_bytes or 0, attempt_count=count)
    elif r.per_request_buffer_limit_bytes is not None or count:
        retry = _core.RetryPolicy((), 0, buffer_limit=r.per_request_buffer_limit_bytes or 0,
                                  attempt_count=count)
    else:
        retry = None
    timeouts = _route_timeouts(r)
    per_filter = _per_filter(vh, r) if vh is not None else None
    if r.action == "cluster":
        # Routes name their clusters; each worker resolves the name to its
        # live ClusterState, so endpoints can change without new routes.
        route = _router.Route(name, "cluster", cluster=r.cluster, timeout=r.timeout, extra=retry,
                              priority=_PRIORITY[r.priority],
                              timeouts=timeouts, per_filter=per_filter, stats=stats)
    elif r.action == "weighted_clusters":
        route = _router.Route(
            name, "weighted",
            clusters=[w.name for w in r.weighted_clusters],
            weights=[w.weight for w in r.weighted_clusters],
            timeout=r.timeout, extra=retry, priority=_PRIORITY[r.priority],
            timeouts=timeouts, per_filter=per_filter, stats=stats,
        )
    else:
        d = r.direct_response
        route = _router.Route(name, "direct", direct_status=d.status,
                              direct_body=d.body.encode(), timeout=0.0, per_filter=per_filter,
                              stats=stats)
    return (match, route)


def load_filter(f: HttpFilterConfig, listener: str) -> _core.HttpFilter:
    """A built-in filter from its settings, or a user filter from its import
    path, made with its config mapping as keyword arguments."""
    if f.import_path is None:
        b = builtin_filters.BUILTIN_FILTERS[f.name]
        return b.make(f.name, builtin_filters.settings_of(f.name, f.config) if f.config else None)
    module_name, _, attr = f.import_path.partition(":")
    where = f"listener {listener!r}: http_filters {f.name!r}"
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # the user's module runs here: any failure is a config error
        raise ConfigError(None, None, where, f"cannot import {f.import_path!r}: {exc!r}") from exc
    try:
        flt = factory(**thaw(f.config))
    except Exception as exc:  # the user's constructor: any failure is a config error
        raise ConfigError(None, None, where, f"{f.import_path}(...) failed: {exc!r}") from exc
    if not isinstance(flt, _core.HttpFilter):
        raise ConfigError(None, None, where,
                          f"{f.import_path} made {type(flt).__name__}, not a fastmesh.HttpFilter")
    flt.name = f.name     # errors and logs name the filter as the config does
    return flt


def build_listener(cfg: ListenerConfig, extra_filters: Sequence[_core.HttpFilter] = (),
                   clusters: Mapping[str, ClusterConfig] | None = None
                   ) -> _core.ListenerConf:
    """The listener's compiled settings. Its HTTP filter chain is the
    configured `http_filters`, then `extra_filters` (objects an embedder
    added, `Proxy.add_filter`), then the router, which _core appends."""
    router = None
    cluster = None
    if cfg.protocol in ("http", "auto"):
        router = _router.Router([
            (vh.name, list(vh.domains), [_build_route(r, vh, i) for i, r in enumerate(vh.routes)])
            for vh in cfg.virtual_hosts
        ])
    if cfg.protocol in ("tcp", "auto"):
        cluster = cfg.cluster
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
        filters=[load_filter(f, cfg.name) for f in cfg.http_filters] + list(extra_filters),
        max_connections=cfg.max_connections,
        first_byte_timeout=cfg.first_byte_timeout,
        trust_retry_headers=cfg.trust_retry_headers,
        max_stream_duration=cfg.max_stream_duration,
        tls=build_server_tls(cfg),
        network_rbac=rbac.build_network(cfg.network_filters),
        address=cfg.address, port=cfg.port, bind_to_port=cfg.bind_to_port,
        use_original_dst=cfg.use_original_dst,
        protocol_detection_timeout=cfg.protocol_detection_timeout,
        tracing=tracing.build(cfg.tracing, clusters or {}),
    )


def build_snapshot(config: Config, version: int = 0,
                   extra_filters: Mapping[str, Sequence[_core.HttpFilter]] | None = None
                   ) -> _core.Snapshot:
    """Build the data plane's Snapshot for one worker from a validated Config
    (plus filter objects added by listener name, for embedders)."""
    extra = extra_filters or {}
    clusters = {c.name: build_cluster(c, i) for i, c in enumerate(config.clusters)}
    by_name = {c.name: c for c in config.clusters}
    listeners = {lc.name: build_listener(lc, extra.get(lc.name, ()), by_name)
                 for lc in config.listeners}
    return _core.Snapshot(listeners, clusters, version, config.drain_timeout)
