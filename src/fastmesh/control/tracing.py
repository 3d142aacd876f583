"""A listener's ``tracing``: validation and compilation (docs/observability.md#tracing).

The shape is Envoy's http_connection_manager ``tracing``
(``config.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing``)
with the OpenTelemetry tracer (``envoy.tracers.opentelemetry``,
``config.trace.v3.OpenTelemetryConfig``)::

    tracing:
      random_sampling: {value: 1}          # percent; Envoy's default is 100
      client_sampling: {value: 100}        # requests with x-client-trace-id
      overall_sampling: {value: 100}
      spawn_upstream_span: true            # a client span per upstream attempt
      custom_tags:
      - {tag: env, literal: {value: prod}}
      - {tag: pod, environment: {name: POD_NAME, default_value: unknown}}
      provider:
        name: envoy.tracers.opentelemetry
        typed_config:
          "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
          grpc_service: {envoy_grpc: {cluster_name: otel}, timeout: 2s}
          # or: http_service: {http_uri: {uri: "http://collector:4318/v1/traces",
          #                              cluster: otel, timeout: 2s}}
          service_name: frontend
      propagation:                          # fastmesh's (OpenTelemetry's propagator names)
        extract: [tracecontext, b3, b3multi]
        inject: [tracecontext]             # default: the format the request came in with

The collector is reached directly by the export thread (runtime/trace_export.py),
at the first endpoint of the named cluster (or google_grpc's target_uri).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastmesh.control.durations import parse_duration
from fastmesh.control.loader import Path, _Ctx
from fastmesh.control.validation import _Bad, _bool, _list, _Map, _nonempty_str, _str

OTEL_TRACER = "envoy.tracers.opentelemetry"
OTEL_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
PROPAGATORS = ("tracecontext", "b3", "b3multi")
_FORMAT_BITS = {"tracecontext": 1, "b3": 2, "b3multi": 4}     # TC_* (trace_context.pxd)

_KEYS = ("random_sampling", "client_sampling", "overall_sampling", "provider", "custom_tags",
         "spawn_upstream_span", "propagation", "verbose", "max_path_tag_length")
_PROVIDER_KEYS = ("name", "typed_config")
_OTEL_KEYS = ("@type", "grpc_service", "http_service", "service_name", "resource_detectors",
              "sampler", "max_cache_size")
_GRPC_KEYS = ("envoy_grpc", "google_grpc", "timeout", "initial_metadata")
_HTTP_SERVICE_KEYS = ("http_uri", "request_headers_to_add")
_HTTP_URI_KEYS = ("uri", "cluster", "timeout")
_TAG_KEYS = ("tag", "literal", "environment", "request_header", "metadata", "value")
_PROPAGATION_KEYS = ("extract", "inject")


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """A validated ``tracing`` section."""

    random_sampling: float = 100.0          # percent
    client_sampling: float = 100.0
    overall_sampling: float = 100.0
    spawn_upstream_span: bool = True
    custom_tags: tuple[tuple[str, str], ...] = ()
    extract: tuple[str, ...] = PROPAGATORS
    inject: tuple[str, ...] = ()            # () = as received (tracecontext for new traces)
    # the OpenTelemetry provider; protocol None = propagation only
    protocol: str | None = None             # "grpc" | "http"
    cluster: str | None = None              # the collector's cluster ...
    target: str | None = None               # ... or an explicit address / URL
    path: str = "/v1/traces"                # OTLP/HTTP
    timeout: float = 10.0
    headers: tuple[tuple[str, str], ...] = ()
    service_name: str = "fastmesh"


def _percent(ctx: _Ctx, path: Path, value: Any) -> float:
    # Envoy's type.v3.Percent ({value: 0..100}); a bare number is taken too.
    if isinstance(value, Mapping):
        m = _Map(ctx, path, value, ("value",), "a percentage ({value: 0..100})")
        return m.get("value", _pct_number, 100.0)
    try:
        return _pct_number(value)
    except _Bad as exc:
        ctx.error(path, exc.reason)
        return 100.0


def _pct_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"expected a percentage (a number from 0 to 100), got {type(value).__name__}")
    if not 0 <= value <= 100:
        raise _Bad(f"{value} is out of range; a percentage is from 0 to 100")
    return float(value)


def _timeout(value: Any) -> float:
    try:
        t = parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise _Bad(str(exc)) from None
    if t <= 0:
        raise _Bad("the timeout must be positive")
    return t


def _tag(ctx: _Ctx, path: Path, value: Any) -> tuple[str, str] | None:
    m = _Map(ctx, path, value, _TAG_KEYS, "a custom tag")
    name = m.get("tag", _nonempty_str)
    for unsupported in ("request_header", "metadata", "value"):
        m.forbid(unsupported, f"custom tags from {unsupported!r} are not supported yet; "
                              "use literal or environment")
    kind = m.one_of(("literal", "environment"), "a custom tag")
    if name is None or kind is None:
        return None
    if kind == "literal":
        lm = _Map(ctx, path + ("literal",), m.data["literal"], ("value",), "a literal tag")
        v = lm.get("value", _str)
    else:
        em = _Map(ctx, path + ("environment",), m.data["environment"],
                  ("name", "default_value"), "an environment tag")
        env = em.get("name", _nonempty_str)
        default = em.get("default_value", _str, "")
        v = os.environ.get(env, default) if env is not None else None
    return None if v is None else (name, v)


def _propagators(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _Bad(f"expected a non-empty list of {', '.join(PROPAGATORS)}")
    for v in value:
        if v not in PROPAGATORS:
            raise _Bad(f"unknown propagator {v!r}; expected one of: {', '.join(PROPAGATORS)}")
    return tuple(dict.fromkeys(value))


def _header_pair(ctx: _Ctx, path: Path, value: Any) -> tuple[str, str] | None:
    # Envoy's HeaderValueOption {header: {key, value}} or HeaderValue {key, value}.
    if isinstance(value, Mapping) and "header" in value:
        m = _Map(ctx, path, value, ("header", "append_action", "append"), "a header to add")
        return _header_pair(ctx, path + ("header",), m.data["header"])
    m = _Map(ctx, path, value, ("key", "value"), "a header")
    k, v = m.get("key", _nonempty_str), m.get("value", _str, "")
    return None if k is None or v is None else (k, v)


def _provider(ctx: _Ctx, path: Path, value: Any) -> dict[str, Any]:
    m = _Map(ctx, path, value, _PROVIDER_KEYS, "a tracing provider")
    name = m.get("name", _nonempty_str)
    if name is not None and name != OTEL_TRACER:
        ctx.error(path + ("name",), f"tracer {name!r} is not supported; fastmesh exports "
                  f"with OpenTelemetry: {OTEL_TRACER}")
        return {}
    tpath = path + ("typed_config",)
    t = _Map(ctx, tpath, m.data.get("typed_config", {}), _OTEL_KEYS, "OpenTelemetryConfig")
    typ = t.get("@type", _str, OTEL_TYPE)
    if typ is not None and typ != OTEL_TYPE:
        ctx.error(tpath + ("@type",), f"expected {OTEL_TYPE}, got {typ!r}")
    for k in ("resource_detectors", "sampler"):
        t.forbid(k, f"{k!r} is not supported yet (sampling is the tracing section's)")
    out: dict[str, Any] = {"service_name": t.get("service_name", _nonempty_str, "fastmesh")}
    kind = t.one_of(("grpc_service", "http_service"), "OpenTelemetryConfig")
    if kind == "grpc_service":
        gpath = tpath + ("grpc_service",)
        g = _Map(ctx, gpath, t.data[kind], _GRPC_KEYS, "a gRPC service")
        out["protocol"] = "grpc"
        out["timeout"] = g.get("timeout", _timeout, 10.0)
        out["headers"] = tuple(p for p in g.section("initial_metadata", lambda c, p, v: _list(
            c, p, v, _header_pair, min_items=0, what="metadata"), ()) or () if p is not None)
        which = g.one_of(("envoy_grpc", "google_grpc"), "grpc_service")
        if which == "envoy_grpc":
            e = _Map(ctx, gpath + (which,), g.data[which], ("cluster_name", "authority"),
                     "envoy_grpc")
            out["cluster"] = e.get("cluster_name", _nonempty_str)
            if out["cluster"] is not None:
                ctx.cluster_refs.append((gpath + (which, "cluster_name"), out["cluster"]))
        elif which == "google_grpc":
            e = _Map(ctx, gpath + (which,), g.data[which], ("target_uri", "stat_prefix"),
                     "google_grpc")
            out["target"] = e.get("target_uri", _nonempty_str)
    elif kind == "http_service":
        hpath = tpath + ("http_service",)
        h = _Map(ctx, hpath, t.data[kind], _HTTP_SERVICE_KEYS, "an HTTP service")
        out["protocol"] = "http"
        out["headers"] = tuple(p for p in h.section("request_headers_to_add", lambda c, p, v: _list(
            c, p, v, _header_pair, min_items=0, what="headers"), ()) or () if p is not None)
        u = _Map(ctx, hpath + ("http_uri",), h.data.get("http_uri"), _HTTP_URI_KEYS, "http_uri")
        uri = u.get("uri", _nonempty_str)
        out["timeout"] = u.get("timeout", _timeout, 10.0)
        out["cluster"] = u.get("cluster", _nonempty_str, None)
        if out["cluster"] is not None:
            ctx.cluster_refs.append((hpath + ("http_uri", "cluster"), out["cluster"]))
        if uri is not None:
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                ctx.error(hpath + ("http_uri", "uri"), f"expected an http:// URL, got {uri!r}")
            else:
                out["target"] = uri
                out["path"] = parts.path or "/v1/traces"
    return out


def parse_tracing(ctx: _Ctx, path: Path, value: Any) -> TracingConfig | None:
    """The ``tracing`` section of an http listener; None after reporting errors."""
    m = _Map(ctx, path, value, _KEYS, "tracing settings")
    for k in ("verbose", "max_path_tag_length"):
        m.forbid(k, f"{k!r} is not supported yet")
    random = m.section("random_sampling", _percent, 100.0)
    client = m.section("client_sampling", _percent, 100.0)
    overall = m.section("overall_sampling", _percent, 100.0)
    spawn = m.get("spawn_upstream_span", _bool, True)
    tags = tuple(t for t in m.section("custom_tags", lambda c, p, v: _list(
        c, p, v, _tag, min_items=0, what="custom tags"), ()) or () if t is not None)
    extract, inject = PROPAGATORS, ()
    if "propagation" in m:
        pm = _Map(ctx, path + ("propagation",), m.data["propagation"], _PROPAGATION_KEYS,
                  "propagation settings")
        extract = pm.get("extract", _propagators, PROPAGATORS)
        inject = pm.get("inject", _propagators, ())
    provider = m.section("provider", _provider, {})
    return TracingConfig(
        random_sampling=random, client_sampling=client, overall_sampling=overall,
        spawn_upstream_span=bool(spawn), custom_tags=tags, extract=extract or PROPAGATORS,
        inject=inject or (), **{k: v for k, v in (provider or {}).items() if v is not None})


def to_dict(cfg: TracingConfig) -> dict[str, Any]:
    """The section back in the config's shape (control/dump.py): every
    default written, environment tags as the literals they were read as."""
    out: dict[str, Any] = {
        "random_sampling": {"value": cfg.random_sampling},
        "client_sampling": {"value": cfg.client_sampling},
        "overall_sampling": {"value": cfg.overall_sampling},
        "spawn_upstream_span": cfg.spawn_upstream_span,
        "custom_tags": [{"tag": k, "literal": {"value": v}} for k, v in cfg.custom_tags],
        "propagation": {"extract": list(cfg.extract)},
    }
    if cfg.inject:
        out["propagation"]["inject"] = list(cfg.inject)
    if cfg.protocol is None:
        return out
    typed: dict[str, Any] = {"@type": OTEL_TYPE, "service_name": cfg.service_name}
    if cfg.protocol == "grpc":
        svc: dict[str, Any] = {"timeout": cfg.timeout}
        if cfg.cluster is not None:
            svc["envoy_grpc"] = {"cluster_name": cfg.cluster}
        else:
            svc["google_grpc"] = {"target_uri": cfg.target}
        if cfg.headers:
            svc["initial_metadata"] = [{"key": k, "value": v} for k, v in cfg.headers]
        typed["grpc_service"] = svc
    else:
        uri: dict[str, Any] = {"uri": cfg.target, "timeout": cfg.timeout}
        if cfg.cluster is not None:
            uri["cluster"] = cfg.cluster
        typed["http_service"] = {"http_uri": uri}
        if cfg.headers:
            typed["http_service"]["request_headers_to_add"] = [
                {"header": {"key": k, "value": v}} for k, v in cfg.headers]
    out["provider"] = {"name": OTEL_TRACER, "typed_config": typed}
    return out


def _collector(cfg: TracingConfig, clusters: Mapping[str, Any]) -> str | None:
    # Where the export thread sends: google_grpc's target, the http_uri, or
    # the first endpoint of the named cluster (Envoy sends through it).
    ep = None
    c = clusters.get(cfg.cluster) if cfg.cluster else None
    if c is not None and c.endpoints:
        ep = c.endpoints[0]
    if cfg.protocol == "grpc":
        if ep is not None:
            host = f"[{ep.address}]" if ":" in ep.address else ep.address
            return f"{host}:{ep.port}"
        return cfg.target
    if ep is not None:
        host = f"[{ep.address}]" if ":" in ep.address else ep.address
        return f"http://{host}:{ep.port}{cfg.path}"
    return cfg.target


def build(cfg: TracingConfig | None, clusters: Mapping[str, Any]) -> Any:
    """The data plane's TracingConf (None without tracing), with the process's
    exporter for its provider."""
    if cfg is None:
        return None
    from fastmesh import _core
    from fastmesh.runtime import trace_export
    sink = None
    endpoint = _collector(cfg, clusters) if cfg.protocol else None
    if endpoint is not None:
        sink = trace_export.exporter_for(cfg.protocol, endpoint, cfg.service_name,
                                         cfg.timeout, cfg.headers).sink
    bits = 0
    for f in cfg.extract:
        bits |= _FORMAT_BITS[f]
    if "b3" in cfg.extract:
        bits |= _FORMAT_BITS["b3multi"]   # OpenTelemetry's b3 extracts both forms
    inject = 0
    for f in cfg.inject:
        inject |= _FORMAT_BITS[f]
    return _core.TracingConf(
        random_sampling=cfg.random_sampling, client_sampling=cfg.client_sampling,
        overall_sampling=cfg.overall_sampling, extract=bits, inject=inject,
        spawn_upstream_span=cfg.spawn_upstream_span, custom_tags=cfg.custom_tags, sink=sink)
