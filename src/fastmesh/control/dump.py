"""Writing a ``Config`` back out as plain data in the shape of the config file.

Every default is written out, so the result documents the effective config
(the admin ``/config_dump`` endpoint serves it as JSON) and is itself a
valid config: ``parse_config(config_to_dict(c)) == c``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from fastmesh.control.schema import (
    ClusterConfig,
    Config,
    HealthCheckConfig,
    ListenerConfig,
    RouteConfig,
    ThresholdsConfig,
    thaw,
)
from fastmesh.control.tls import CCD_KEYS, downstream_to_dict, upstream_to_dict
from fastmesh.control import tracing


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain JSON-serialisable data, in the shape of the config file.

    Every default is written out, durations as float seconds and sizes as
    int bytes, so the result documents the effective config and is itself a
    valid config: ``parse_config(config_to_dict(c)) == c``.
    """
    out: dict[str, Any] = {"drain_timeout": cfg.drain_timeout, "batch_window": cfg.batch_window}
    om = cfg.overload_manager
    out["overload_manager"] = {"file_descriptor_threshold": om.file_descriptor_threshold}
    if om.global_downstream_max_connections:
        out["overload_manager"]["global_downstream_max_connections"] = \
            om.global_downstream_max_connections
    if cfg.admin is not None:
        out["admin"] = {"address": cfg.admin.address, "port": cfg.admin.port,
                        "allow_remote": cfg.admin.allow_remote}
        if cfg.admin.allow_remote_changes:
            out["admin"]["allow_remote_changes"] = True
        mc = cfg.admin.metrics
        if mc != type(mc)():
            out["admin"]["metrics"] = {"naming": mc.naming, "istio": mc.istio,
                                       "reporter": mc.reporter,
                                       **({"workload": mc.workload} if mc.workload else {}),
                                       **({"namespace": mc.namespace} if mc.namespace else {})}
    if cfg.user is not None:
        out["user"] = cfg.user
    if cfg.group is not None:
        out["group"] = cfg.group
    out["listeners"] = [_listener_to_dict(listener) for listener in cfg.listeners]
    out["clusters"] = [_cluster_to_dict(cluster) for cluster in cfg.clusters]
    return out


def _listener_to_dict(lst: ListenerConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": lst.name,
        "address": lst.address,
        "port": lst.port,
        "protocol": lst.protocol,
        "idle_timeout": lst.idle_timeout,
        "per_connection_buffer_limit": lst.per_connection_buffer_limit,
    }
    if lst.max_connections:
        out["max_connections"] = lst.max_connections
    if lst.use_original_dst:
        out["use_original_dst"] = True
    if not lst.bind_to_port:
        out["bind_to_port"] = False
    if lst.protocol == "auto":
        out["cluster"] = lst.cluster
        out["protocol_detection_timeout"] = lst.protocol_detection_timeout
    if lst.tls is not None:
        out["tls"] = downstream_to_dict(lst.tls)
        out["tls_mode"] = lst.tls_mode
    if lst.protocol == "tcp":
        out["cluster"] = lst.cluster
        if lst.network_filters:
            out["network_filters"] = [{"name": f.name, "typed_config": thaw(f.config)}
                                      for f in lst.network_filters]
        return out
    out.update(
        request_headers_timeout=lst.request_headers_timeout,
        first_byte_timeout=lst.first_byte_timeout,
        stream_idle_timeout=lst.stream_idle_timeout,
        max_request_headers_kb=lst.max_request_headers_kb,
        max_headers_count=lst.max_headers_count,
        xff_append=lst.xff_append,
        generate_request_id=lst.generate_request_id,
        trust_retry_headers=lst.trust_retry_headers,
        http2={"max_concurrent_streams": lst.http2.max_concurrent_streams,
               "initial_stream_window_size": lst.http2.initial_stream_window_size,
               "initial_connection_window_size": lst.http2.initial_connection_window_size},
        virtual_hosts=[
            {
                "name": vh.name,
                "domains": list(vh.domains),
                "routes": [_route_to_dict(route) for route in vh.routes],
                **({"typed_per_filter_config": thaw(vh.typed_per_filter_config)}
                   if vh.typed_per_filter_config else {}),
                **({"include_request_attempt_count": True}
                   if vh.include_request_attempt_count else {}),
            }
            for vh in lst.virtual_hosts
        ],
        http_filters=[{"name": f.name, "import": f.import_path, "config": thaw(f.config)}
                      if f.import_path is not None else
                      {"name": f.name, "typed_config": thaw(f.config)}
                      for f in lst.http_filters],
    )
    out["forward_client_cert_details"] = lst.forward_client_cert_details
    ccd = lst.set_current_client_cert_details
    if ccd is not None:
        out["set_current_client_cert_details"] = {k: getattr(ccd, k) for k in CCD_KEYS}
    if lst.max_stream_duration:
        out["max_stream_duration"] = lst.max_stream_duration
    if lst.tracing is not None:
        out["tracing"] = tracing.to_dict(lst.tracing)
    return out


def _route_to_dict(route: RouteConfig) -> dict[str, Any]:
    m = route.match
    match: dict[str, Any] = {}
    for key in ("prefix", "path", "regex"):
        if getattr(m, key) is not None:
            match[key] = getattr(m, key)
    match["case_sensitive"] = m.case_sensitive
    if m.headers:
        match["headers"] = [
            {
                "name": h.name,
                **{k: getattr(h, k) for k in ("exact", "prefix", "regex", "present")
                   if getattr(h, k) is not None},
                "invert": h.invert,
            }
            for h in m.headers
        ]
    out: dict[str, Any] = {}
    if route.name is not None:
        out["name"] = route.name
    out["match"] = match
    if route.action == "cluster":
        out["cluster"] = route.cluster
    elif route.action == "weighted_clusters":
        out["weighted_clusters"] = [{"name": w.name, "weight": w.weight}
                                    for w in route.weighted_clusters]
    else:
        assert route.direct_response is not None
        out["direct_response"] = {"status": route.direct_response.status,
                                  "body": route.direct_response.body}
    if route.action != "direct_response":
        out["timeout"] = route.timeout
    rp = route.retry_policy
    if rp is not None:
        policy: dict[str, Any] = {"retry_on": ",".join(rp.retry_on),
                                  "num_retries": rp.num_retries}
        if rp.per_try_timeout:
            policy["per_try_timeout"] = rp.per_try_timeout
        back_off: dict[str, Any] = {"base_interval": rp.base_interval}
        if rp.max_interval:
            back_off["max_interval"] = rp.max_interval
        policy["retry_back_off"] = back_off
        if rp.retriable_status_codes:
            policy["retriable_status_codes"] = list(rp.retriable_status_codes)
        out["retry_policy"] = policy
    if route.per_request_buffer_limit_bytes is not None:
        out["per_request_buffer_limit_bytes"] = route.per_request_buffer_limit_bytes
    if route.action != "direct_response":
        out["priority"] = route.priority
    if route.idle_timeout is not None:
        out["idle_timeout"] = route.idle_timeout
    if route.max_stream_duration is not None:
        d = route.max_stream_duration
        out["max_stream_duration"] = {k: getattr(d, k) for k in (
            "max_stream_duration", "grpc_timeout_header_max", "grpc_timeout_header_offset")
            if getattr(d, k) is not None}
    if route.typed_per_filter_config:
        out["typed_per_filter_config"] = thaw(route.typed_per_filter_config)
    return out


def _cluster_to_dict(c: ClusterConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "lb": c.lb}
    if c.hash_policy is not None:
        out["hash_policy"] = ({"header": c.hash_policy.header} if c.hash_policy.header
                              else {"source_ip": True})
    if c.lb == "ring_hash":
        out["ring_hash"] = {"minimum_ring_size": c.ring_min, "maximum_ring_size": c.ring_max}
    if c.lb == "maglev":
        out["maglev"] = {"table_size": c.maglev_table_size}
    out.update(
        connect_timeout=c.connect_timeout,
        idle_timeout=c.idle_timeout,
        per_connection_buffer_limit=c.per_connection_buffer_limit,
        max_requests_per_connection=c.max_requests_per_connection,
        protocol=c.protocol,
        endpoints=[{"address": e.address, "port": e.port, "weight": e.weight}
                   for e in c.endpoints],
        common_lb_config={"healthy_panic_threshold": {"value": c.healthy_panic_threshold}},
    )
    if c.health_checks:
        out["health_checks"] = [_health_check_to_dict(hc) for hc in c.health_checks]
    if c.tls is not None:
        out["tls"] = upstream_to_dict(c.tls)
    if c.outlier_detection is not None:
        out["outlier_detection"] = dataclasses.asdict(c.outlier_detection)
    if c.circuit_breakers:
        out["circuit_breakers"] = {"thresholds": [_thresholds_to_dict(t)
                                                  for t in c.circuit_breakers]}
    out.update(_discovery_to_dict(c))
    if c.discovery.type == "eds":
        del out["endpoints"]        # they come from the endpoint file
    if c.original_dst is not None:
        out["lb"] = "cluster_provided"
        del out["endpoints"]        # each client's destination is one
        out["cleanup_interval"] = c.original_dst.cleanup_interval
        out["original_dst_lb_config"] = {"use_http_header": c.original_dst.use_http_header,
                                         "http_header_name": c.original_dst.http_header_name}
    return out


def _thresholds_to_dict(t: ThresholdsConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "priority": t.priority, "max_connections": t.max_connections,
        "max_pending_requests": t.max_pending_requests, "max_requests": t.max_requests,
        "max_retries": t.max_retries, "track_remaining": t.track_remaining,
    }
    if t.max_connection_pools is not None:
        out["max_connection_pools"] = t.max_connection_pools
    if t.retry_budget is not None:
        out["retry_budget"] = {"budget_percent": {"value": t.retry_budget.budget_percent},
                               "min_retry_concurrency": t.retry_budget.min_retry_concurrency}
    return out


def _discovery_to_dict(c: ClusterConfig) -> dict[str, Any]:
    d = c.discovery
    out: dict[str, Any] = {"type": d.type}
    if d.type == "eds" and d.etcd is not None:
        e = d.etcd
        out["eds_config"] = {"etcd": {
            "endpoints": list(e.endpoints), "prefix": e.prefix, "dial_timeout": e.dial_timeout,
            "retry_backoff": {"base_interval": e.retry_base_interval,
                              "max_interval": e.retry_max_interval}}}
    elif d.type == "eds" and d.ads:
        out["eds_config"] = {"ads": {}}
    elif d.type == "eds":
        out["eds_config"] = {"path_config_source": {"path": d.eds_path}}
    elif d.type not in ("static", "original_dst"):
        out.update(dns_refresh_rate=d.dns_refresh_rate, respect_dns_ttl=d.respect_dns_ttl,
                   dns_lookup_family=d.dns_lookup_family)
        if d.dns_failure_base_interval is not None:
            fail: dict[str, float] = {"base_interval": d.dns_failure_base_interval}
            if d.dns_failure_max_interval is not None:
                fail["max_interval"] = d.dns_failure_max_interval
            out["dns_failure_refresh_rate"] = fail
        if d.dns_resolvers:
            out["dns_resolution_config"] = {"resolvers": [
                {"address": r.address, "port": r.port} for r in d.dns_resolvers]}
    return out


def _health_check_to_dict(hc: HealthCheckConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "timeout": hc.timeout, "interval": hc.interval, "interval_jitter": hc.interval_jitter,
        "unhealthy_threshold": hc.unhealthy_threshold,
        "healthy_threshold": hc.healthy_threshold,
        "no_traffic_interval": hc.no_traffic_interval,
    }
    if hc.http is not None:
        http: dict[str, Any] = {
            "path": hc.http.path,
            "expected_statuses": [{"start": a, "end": b} for a, b in hc.http.expected_statuses],
            "request_headers_to_add": [{"header": {"key": k, "value": v}}
                                       for k, v in hc.http.request_headers_to_add],
        }
        if hc.http.host is not None:
            http["host"] = hc.http.host
        out["http_health_check"] = http
    elif hc.tcp is not None:
        tcp: dict[str, Any] = {"receive": [{"text": r.hex()} for r in hc.tcp.receive]}
        if hc.tcp.send:
            tcp["send"] = {"text": hc.tcp.send.hex()}
        out["tcp_health_check"] = tcp
    elif hc.grpc is not None:
        grpc: dict[str, Any] = {"service_name": hc.grpc.service_name}
        if hc.grpc.authority is not None:
            grpc["authority"] = hc.grpc.authority
        out["grpc_health_check"] = grpc
    return out
