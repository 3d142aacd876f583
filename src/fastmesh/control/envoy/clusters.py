"""Envoy Clusters (and ClusterLoadAssignments) to fastmesh clusters.

Cluster types STATIC, STRICT_DNS, LOGICAL_DNS and EDS; the endpoints of a
``load_assignment`` become the native ``endpoints``. An EDS cluster reads
its assignment from a file (``path_config_source``, watched by fastmesh) or
from the xDS client (``ads`` / ``api_config_source``: native ``eds_config:
{ads: {}}``, the client publishing the assignments itself). Resilience settings (circuit breakers, outlier
detection, health checks) already use Envoy's names natively: they pass
through with durations and wrapper values normalized.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastmesh.control.envoy.engine import (
    Bad,
    Path,
    Table,
    Tx,
    boolean,
    copy,
    custom,
    duration,
    enum,
    ignore,
    normalize,
    reject,
    string,
    type_name,
    uint32,
)
from fastmesh.control.envoy.listeners import address
from fastmesh.control.envoy.tls import UPSTREAM_SOCKET

T_CLUSTER = "test_clusters_translated"
T_EDS = "test_eds_clusters"
T_RESIL = "test_cluster_resilience"
T_PROTO = "test_cluster_http2"
T_REJECT = "test_rejections"

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# ---------------------------------------------------------------- endpoints

ENDPOINT = Table("envoy.config.endpoint.v3.Endpoint", (
    custom("address", "address, port", address, "socket_address", T_CLUSTER),
    ignore("hostname", "informational", T_CLUSTER),
    reject("health_check_config", "per-endpoint health check ports", T_REJECT),
    reject("additional_addresses", "additional_addresses", T_REJECT),
))

_DROPPED = ("UNHEALTHY", "DRAINING", "TIMEOUT")


def _health_status(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    try:
        status = enum({k: k for k in ("UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING",
                                      "TIMEOUT", "DEGRADED")})(value)
    except Bad as exc:
        tx.error(epath, exc.reason)
        return
    if status == "DEGRADED":
        tx.error(epath, "not supported yet: DEGRADED endpoints")
    elif status in _DROPPED:
        out["_dropped"] = True


LB_ENDPOINT = Table("envoy.config.endpoint.v3.LbEndpoint", (
    custom("endpoint", "address, port", lambda tx, e, n, v, o: tx.walk(ENDPOINT, e, n, v, o),
           "", T_CLUSTER),
    copy("load_balancing_weight", "weight", uint32, "UInt32Value; fastmesh takes 1..128",
         T_CLUSTER),
    custom("health_status", "", _health_status, "UNHEALTHY, DRAINING and TIMEOUT endpoints "
           "are left out (Envoy sends them no traffic)", T_EDS),
    ignore("metadata", "endpoint metadata is not used", T_CLUSTER),
    reject("endpoint_name", "named endpoints", T_REJECT),
))


def _lb_endpoints(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list):
        tx.error(epath, "expected a list of lb_endpoints")
        return
    native = out["_endpoints"]
    for i, ep in enumerate(value):
        k = len(native)
        item: dict = {}
        if tx.walk(LB_ENDPOINT, epath + (i,), npath + (k,), ep, item) and not item.pop(
                "_dropped", False):
            tx.paths[npath + (k,)] = epath + (i,)
            native.append(item)
            if "endpoint" not in ep:
                tx.error(epath + (i,), "missing required field 'endpoint'")


def _priority(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    try:
        if uint32(value) != 0:
            tx.error(epath, "not supported yet: priorities other than 0")
    except Bad as exc:
        tx.error(epath, exc.reason)


LOCALITY_LB_ENDPOINTS = Table("envoy.config.endpoint.v3.LocalityLbEndpoints", (
    custom("lb_endpoints", "endpoints", _lb_endpoints, "flattened over localities", T_CLUSTER),
    ignore("locality", "fastmesh does not balance by locality", T_CLUSTER),
    custom("priority", "", _priority, "0 only", T_CLUSTER),
    reject("load_balancing_weight", "locality weights", T_REJECT),
    reject("leds_cluster_locality_config", "LEDS", T_REJECT),
))


def _endpoint_groups(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list):
        tx.error(epath, "expected a list of LocalityLbEndpoints")
        return
    for i, group in enumerate(value):
        tx.walk(LOCALITY_LB_ENDPOINTS, epath + (i,), npath, group, out)


CLUSTER_LOAD_ASSIGNMENT = Table("envoy.config.endpoint.v3.ClusterLoadAssignment", (
    ignore("cluster_name", "the cluster's own name is used", T_CLUSTER),
    custom("endpoints", "endpoints", _endpoint_groups, "", T_CLUSTER),
    reject("policy", "load assignment policies (overprovisioning, drop_overloads)", T_REJECT),
    reject("named_endpoints", "named endpoints", T_REJECT),
), type_url="envoy.config.endpoint.v3.ClusterLoadAssignment")


def endpoints_from(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    """A ClusterLoadAssignment into ``out['endpoints']`` (at native ``npath`` = the cluster)."""
    holder: dict = {"_endpoints": []}
    tx.walk(CLUSTER_LOAD_ASSIGNMENT, epath, npath + ("endpoints",), value, holder)
    out["endpoints"] = holder["_endpoints"]
    tx.paths.setdefault(npath + ("endpoints",), epath)


def _load_assignment(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    endpoints_from(tx, epath, npath, value, out)


# ---------------------------------------------------------------- EDS

def _eds_cluster_config(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, Mapping):
        tx.error(epath, "expected an EdsClusterConfig: {eds_config, service_name}")
        return
    extra = set(value) - {"eds_config", "service_name"}
    for k in sorted(extra):
        tx.error(epath + (k,), f"field {k!r} of EdsClusterConfig is not supported by fastmesh",
                 key=True)
    source = value.get("eds_config", {})
    out["_eds"] = (value.get("service_name"), source, epath)


def _eds(tx: Tx, epath: Path, out: dict, npath: Path, name: Any) -> None:
    """Where an EDS cluster's endpoints come from: a watched file, or the xDS client.

    ADS and api_config_source both become native ``eds_config: {ads: {}}``: the xDS
    client publishes the assignments through the discovery (endpoint) path, so an
    endpoint push never recompiles the config; they are never inlined here."""
    service, source, spath = out.pop("_eds", (None, {}, epath + ("type",)))
    if isinstance(source, Mapping) and ("ads" in source or "api_config_source" in source):
        tx.set(out, npath, "eds_config", {"ads": {}}, spath + ("eds_config",))
        tx.ads_eds.append((service or name, spath))
        return
    if isinstance(source, Mapping) and ("path_config_source" in source or "path" in source):
        tx.set(out, npath, "eds_config", normalize(
            {k: v for k, v in source.items() if k in ("path_config_source", "path",
                                                      "resource_api_version")}),
            spath + ("eds_config",))
        for k in sorted(set(source) - {"path_config_source", "path", "resource_api_version",
                                       "initial_fetch_timeout"}):
            tx.error(spath + ("eds_config", k), f"field {k!r} of the ConfigSource is not "
                     "supported with path_config_source", key=True)
        return
    tx.error(spath + ("eds_config",), "an EDS cluster's eds_config needs path_config_source "
             "(a watched file), ads or api_config_source (the xDS client)")


# ---------------------------------------------------------------- protocol options

def _explicit(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, Mapping) or len(value) != 1:
        tx.error(epath, "expected exactly one of http_protocol_options, http2_protocol_options")
        return
    (key, opts), = value.items()
    if key == "http2_protocol_options":
        tx.set(out, npath, "protocol", "http2", epath + (key,))
    elif key == "http_protocol_options":
        tx.set(out, npath, "protocol", "http1", epath + (key,))
    else:
        tx.error(epath + (key,), f"not supported yet: {key}", key=True)
        return
    if opts:
        tx.warn(epath + (key,), "ignored: fastmesh's upstream codec takes no options here")


UPSTREAM_COMMON = Table("envoy.config.core.v3.HttpProtocolOptions (cluster)", (
    copy("idle_timeout", "idle_timeout", duration, "a pooled connection's idle timeout; "
         "default 1h, as Envoy (a native cluster's is 60s)", T_PROTO),
    copy("max_requests_per_connection", "max_requests_per_connection", uint32,
         "UInt32Value", T_PROTO),
    reject("max_connection_duration", "max_connection_duration", T_REJECT),
    reject("max_stream_duration", "upstream max_stream_duration", T_REJECT),
))

UPSTREAM_HTTP_OPTIONS = Table(HTTP_PROTOCOL_OPTIONS, (
    custom("explicit_http_config", "protocol", _explicit,
           "http2_protocol_options: http2; http_protocol_options: http1", T_PROTO),
    custom("use_downstream_protocol_config", "protocol",
           lambda tx, e, n, v, o: tx.set(o, n, "protocol", "auto", e),
           "protocol: auto (the client's)", T_PROTO),
    custom("common_http_protocol_options", "", lambda tx, e, n, v, o: tx.walk(
        UPSTREAM_COMMON, e, n, v, o), "", T_PROTO),
    reject("auto_config", "ALPN-negotiated upstream protocol (auto_config)", T_REJECT),
    reject("upstream_http_protocol_options", "upstream_http_protocol_options", T_REJECT),
), type_url=HTTP_PROTOCOL_OPTIONS)


def _protocol_options(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, Mapping):
        tx.error(epath, "expected a mapping of extension name to its options")
        return
    for key, opts in value.items():
        path = epath + (key,)
        msg = None
        if isinstance(opts, Mapping) and "@type" in opts:
            try:
                msg = type_name(opts["@type"])
            except Bad as exc:
                tx.error(path + ("@type",), exc.reason)
                continue
        if key == HTTP_PROTOCOL_OPTIONS or msg == HTTP_PROTOCOL_OPTIONS:
            tx.walk(UPSTREAM_HTTP_OPTIONS, path, npath, opts, out)
        else:
            tx.error(path, f"not supported yet: protocol options {key!r}", key=True)


def _http2_legacy(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    tx.set(out, npath, "protocol", "http2", epath)
    if value:
        tx.warn(epath, "ignored: fastmesh's upstream HTTP/2 codec takes no options here")


# ---------------------------------------------------------------- resilience

_OD_WRAPPERS = frozenset({
    "consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure",
    "success_rate_minimum_hosts", "success_rate_request_volume", "success_rate_stdev_factor",
    "failure_percentage_minimum_hosts", "failure_percentage_request_volume",
    "max_ejection_percent", "enforcing_consecutive_5xx",
    "enforcing_consecutive_gateway_failure", "enforcing_consecutive_local_origin_failure",
    "enforcing_success_rate", "enforcing_local_origin_success_rate",
    "enforcing_failure_percentage", "enforcing_failure_percentage_local_origin",
    "failure_percentage_threshold", "always_eject_one_host"})


def _outlier(value: Any) -> Any:
    return normalize(value, durations=frozenset({"interval", "base_ejection_time",
                                                 "max_ejection_time",
                                                 "max_ejection_time_jitter"}),
                     wrappers=_OD_WRAPPERS)


def _breakers(value: Any) -> Any:
    v = normalize(value, wrappers=frozenset({
        "max_connections", "max_pending_requests", "max_requests", "max_retries",
        "max_connection_pools", "min_retry_concurrency"}))
    for t in v.get("thresholds", []) if isinstance(v, dict) and isinstance(
            v.get("thresholds"), list) else []:
        if isinstance(t, dict) and t.get("priority") in ("DEFAULT", "HIGH"):
            t["priority"] = t["priority"].lower()
    return v


def _health_checks(value: Any) -> Any:
    return normalize(value, durations=frozenset({"timeout", "interval", "interval_jitter",
                                                 "no_traffic_interval"}),
                     wrappers=frozenset({"unhealthy_threshold", "healthy_threshold"}),
                     ints=frozenset({"start", "end"}))


def _dns_resolution(value: Any) -> Any:
    # Envoy: {resolvers: [Address]}; fastmesh: {resolvers: [{address, port}]}.
    if not isinstance(value, Mapping) or set(value) - {"resolvers"}:
        raise Bad("only dns_resolution_config.resolvers is supported")
    out = []
    for r in value.get("resolvers", []):
        sa = r.get("socket_address") if isinstance(r, Mapping) else None
        if not isinstance(sa, Mapping):
            raise Bad("a resolver is an Address: {socket_address: {address, port_value}}")
        out.append({"address": sa.get("address"), "port": sa.get("port_value", 53)})
    return {"resolvers": out}


_TYPES = {"STATIC": "static", "STRICT_DNS": "strict_dns", "LOGICAL_DNS": "logical_dns",
          "EDS": "eds"}
_LB = {"ROUND_ROBIN": "round_robin", "LEAST_REQUEST": "least_request", "RANDOM": "random",
       "RING_HASH": "ring_hash", "MAGLEV": "maglev"}

CLUSTER = Table("envoy.config.cluster.v3.Cluster", (
    copy("name", "name", string, "", T_CLUSTER),
    copy("type", "type", enum(_TYPES), "default STATIC, as Envoy", T_CLUSTER),
    copy("connect_timeout", "connect_timeout", duration, "default 5s", T_CLUSTER),
    copy("lb_policy", "lb", enum(_LB), "", T_CLUSTER),
    custom("load_assignment", "endpoints", _load_assignment, "", T_CLUSTER),
    custom("eds_cluster_config", "eds_config", _eds_cluster_config,
           "path_config_source (a watched file), or ads / api_config_source through the "
           "xDS client", T_EDS),
    copy("circuit_breakers", "circuit_breakers", _breakers, "", T_RESIL),
    copy("outlier_detection", "outlier_detection", _outlier, "", T_RESIL),
    copy("health_checks", "health_checks", _health_checks, "at most one", T_RESIL),
    copy("common_lb_config", "common_lb_config", normalize, "healthy_panic_threshold",
         T_RESIL),
    custom("typed_extension_protocol_options", "protocol", _protocol_options,
           "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", T_PROTO),
    custom("http2_protocol_options", "protocol", _http2_legacy,
           "deprecated in Envoy: protocol http2", T_PROTO),
    custom("transport_socket", "tls", lambda tx, e, n, v, o: tx.walk(UPSTREAM_SOCKET, e, n, v, o),
           "UpstreamTlsContext", "test_tls_contexts"),
    copy("per_connection_buffer_limit_bytes", "per_connection_buffer_limit", uint32,
         "UInt32Value", T_CLUSTER),
    copy("max_requests_per_connection", "max_requests_per_connection", uint32,
         "deprecated in Envoy (HttpProtocolOptions has it)", T_CLUSTER),
    copy("ring_hash_lb_config", "ring_hash", lambda v: normalize(v, wrappers=frozenset({
        "minimum_ring_size", "maximum_ring_size"}), ints=frozenset({"minimum_ring_size",
                                                                     "maximum_ring_size"})),
         "the ring hashes the client address", T_CLUSTER),
    copy("maglev_lb_config", "maglev", lambda v: normalize(
        v, wrappers=frozenset({"table_size"}), ints=frozenset({"table_size"})),
         "the table hashes the client address", T_CLUSTER),
    copy("dns_refresh_rate", "dns_refresh_rate", duration, "", T_CLUSTER),
    copy("dns_failure_refresh_rate", "dns_failure_refresh_rate", lambda v: normalize(
        v, durations=frozenset({"base_interval", "max_interval"})), "", T_CLUSTER),
    copy("respect_dns_ttl", "respect_dns_ttl", boolean, "", T_CLUSTER),
    copy("dns_lookup_family", "dns_lookup_family", string, "", T_CLUSTER),
    copy("dns_resolution_config", "dns_resolution_config", _dns_resolution, "resolvers",
         T_CLUSTER),
    ignore("alt_stat_name", "fastmesh's stats use the cluster's name", T_CLUSTER),
    reject("lb_subset_config", "subset load balancing", T_REJECT),
    reject("cluster_type", "custom cluster types", T_REJECT),
    reject("least_request_lb_config", "least_request_lb_config (two choices, fixed)",
           T_REJECT),
    reject("load_balancing_policy", "load_balancing_policy extensions", T_REJECT),
    reject("upstream_connection_options", "upstream_connection_options", T_REJECT),
    reject("transport_socket_matches", "transport_socket_matches", T_REJECT),
), type_url="envoy.config.cluster.v3.Cluster")


def translate_cluster(tx: Tx, epath: Path, npath: Path, value: Any) -> dict:
    out: dict = {}
    tx.walk(CLUSTER, epath, npath, value, out)
    if not isinstance(value, Mapping):
        return out
    out.setdefault("type", "static")          # Envoy's default type
    out.setdefault("idle_timeout", 3600.0)    # Envoy's pooled-connection idle timeout (1h)
    if "name" not in value:
        tx.error(epath, "missing required field 'name'")
    if out["type"] == "eds":
        out.pop("endpoints", None)
        _eds(tx, epath, out, npath, value.get("name"))
    else:
        out.pop("_eds", None)
        if "eds_cluster_config" in value:
            tx.error(epath + ("eds_cluster_config",), "eds_cluster_config needs type: EDS",
                     key=True)
        if "load_assignment" not in value:
            tx.error(epath, f"a {value.get('type', 'STATIC')} cluster needs load_assignment")
    return out
