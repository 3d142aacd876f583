"""Envoy Listeners to fastmesh listeners.

A listener has one filter chain whose last network filter is the
``http_connection_manager`` (a fastmesh http listener) or ``tcp_proxy`` (a
tcp listener); ``envoy.filters.network.rbac`` may come before ``tcp_proxy``.
The connection manager's fields are fastmesh's listener keys; its
``route_config`` (or, through the xDS client, its ``rds`` route
configuration) gives the ``virtual_hosts``.
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
    sub,
    type_name,
    uint32,
)
from fastmesh.control.envoy.routes import translate_route_config
from fastmesh.control.envoy.tls import DOWNSTREAM_SOCKET

T_LISTENER = "test_listeners_translated"
T_HCM = "test_http_connection_manager"
T_FILTERS = "test_http_filters"
T_TCP = "test_tcp_proxy"
T_REJECT = "test_rejections"
T_OPTIONAL = "test_optional_filter_skipped"

HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
NETWORK_RBAC = "envoy.extensions.filters.network.rbac.v3.RBAC"
ROUTER = "envoy.extensions.filters.http.router.v3.Router"

# The built-in http filters: Envoy message -> fastmesh's filter name (docs/config.md).
BUILTIN_HTTP = {
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit":
        "envoy.filters.http.local_ratelimit",
    "envoy.extensions.filters.http.fault.v3.HTTPFault": "envoy.filters.http.fault",
    "envoy.extensions.filters.http.rbac.v3.RBAC": "envoy.filters.http.rbac",
}
_LISTENER_FILTERS_OK = {
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector":
        "fastmesh tells TLS from plaintext itself (tls_mode)",
    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector":
        "fastmesh detects HTTP/1.1 and h2c itself",
}


def filter_settings(cfg: Mapping[str, Any]) -> dict:
    """A built-in filter's typed_config for native validation: '@type' dropped,
    durations in seconds, wrapper values unwrapped."""
    return normalize(cfg, durations=frozenset({"fill_interval", "fixed_delay"}),
                     wrappers=frozenset({"tokens_per_fill", "max_active_faults"}))


# ---------------------------------------------------------------- addresses

def _check(tx: Tx, epath: Path, value: Any, conv) -> None:
    """A field that is checked and writes nothing."""
    try:
        conv(value)
    except Bad as exc:
        tx.error(epath, exc.reason)


SOCKET_ADDRESS = Table("envoy.config.core.v3.SocketAddress", (
    copy("address", "address", string, "an IP literal for listeners", T_LISTENER),
    copy("port_value", "port", uint32, "", T_LISTENER),
    custom("protocol", "", lambda tx, e, n, v, o: _check(tx, e, v, enum({"TCP": "TCP"})),
           "TCP only", T_LISTENER),
    reject("named_port", "named ports", T_REJECT),
    reject("resolver_name", "custom resolvers", T_REJECT),
    reject("ipv4_compat", "ipv4_compat", T_REJECT),
))


def _socket_address(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    tx.walk(SOCKET_ADDRESS, epath, npath, value, out)
    if isinstance(value, Mapping) and "port_value" not in value and "named_port" not in value:
        tx.error(epath, "missing required field 'port_value'")


ADDRESS = Table("envoy.config.core.v3.Address", (
    custom("socket_address", "address, port", _socket_address, "", T_LISTENER),
    reject("pipe", "unix domain sockets", T_REJECT),
    reject("envoy_internal_address", "internal listeners", T_REJECT),
))


def address(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    """An Address into ``out``'s ``address`` and ``port``."""
    if tx.walk(ADDRESS, epath, npath, value, out) and "socket_address" not in value:
        tx.error(epath, "missing required field 'socket_address'")


# ---------------------------------------------------------------- http connection manager

HTTP2_OPTIONS = Table("envoy.config.core.v3.Http2ProtocolOptions", (
    copy("max_concurrent_streams", "max_concurrent_streams", uint32, "UInt32Value", T_HCM),
    copy("initial_stream_window_size", "initial_stream_window_size", uint32, "UInt32Value",
         T_HCM),
    copy("initial_connection_window_size", "initial_connection_window_size", uint32,
         "UInt32Value", T_HCM),
))

HTTP1_OPTIONS = Table("envoy.config.core.v3.Http1ProtocolOptions", (
    ignore("accept_http_10", "fastmesh always serves HTTP/1.0", T_HCM),
    ignore("default_host_for_http_10",
           "a request without Host matches the \"*\" virtual host", T_HCM),
))

COMMON_HTTP_OPTIONS = Table("envoy.config.core.v3.HttpProtocolOptions (listener)", (
    copy("idle_timeout", "idle_timeout", duration, "the connection's idle timeout (1h)",
         T_HCM),
    copy("max_stream_duration", "max_stream_duration", duration, "", T_HCM),
    copy("max_headers_count", "max_headers_count", uint32, "UInt32Value", T_HCM),
    reject("headers_with_underscores_action", "headers_with_underscores_action", T_REJECT),
    reject("max_connection_duration", "max_connection_duration", T_REJECT),
))

_CODEC = {"AUTO": "AUTO", "HTTP1": "HTTP1", "HTTP2": "HTTP2"}


def _codec(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    try:
        codec = enum(_CODEC)(value)
    except Bad as exc:
        tx.error(epath, exc.reason)
        return
    if codec != "AUTO":
        tx.warn(epath, f"served as AUTO: fastmesh http listeners take HTTP/1.1 and h2c "
                f"on the same port (codec_type {codec} would refuse the other)")


def _route_config(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    translate_route_config(tx, epath, npath, value, out)


RDS = Table("envoy.extensions.filters.network.http_connection_manager.v3.Rds", (
    copy("route_config_name", "_rds", string, "the RouteConfiguration the xDS client fetches",
         T_HCM),
    ignore("config_source", "used by the xDS client (ads or api_config_source)", T_HCM),
))


def _rds(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    holder: dict = {}
    tx.walk(RDS, epath, npath, value, holder)
    name = holder.get("_rds")
    if name is None:
        if isinstance(value, Mapping) and "route_config_name" not in value:
            tx.error(epath, "missing required field 'route_config_name'")
        return
    if tx.route_configs is not None and name in tx.route_configs:
        translate_route_config(tx, (f"route_configs[{name}]",), npath,
                               tx.route_configs[name], out)
    else:
        out["_rds"] = (name, epath)


def _http_filters(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list):
        tx.error(epath, "expected a list of http filters")
        return
    native: list = []
    tx.filter_names = {}
    router_at = None
    for i, f in enumerate(value):
        path = epath + (i,)
        if router_at is not None:
            tx.error(path, "no http filter may follow the router (envoy.filters.http.router "
                     "is the last filter)")
            break
        entry: dict = {}
        if isinstance(f, Mapping):
            # is_optional and the name decide how typed_config is read: take them first.
            try:
                entry["_optional"] = boolean(f.get("is_optional", False))
            except Bad as exc:
                tx.error(path + ("is_optional",), exc.reason)
            if isinstance(f.get("name"), str):
                entry["_name"] = f["name"]
        tx.walk(HTTP_FILTER, path, npath, f, entry)
        kind = entry.get("_kind")
        name = entry.get("_name")
        if kind == "router":
            router_at = i
        elif kind == "skip":
            tx.filter_names[name] = None
        elif kind is not None:
            if kind in tx.filter_names.values():
                tx.error(path, f"{kind} is given twice; fastmesh runs each built-in filter "
                         "once per chain")
                continue
            tx.filter_names[name] = kind
            tx.paths[npath + ("http_filters", len(native))] = path
            tx.paths[npath + ("http_filters", len(native), "typed_config")] = (
                path + ("typed_config",))
            native.append({"name": kind, "typed_config": entry["_config"]})
    if value and router_at is None:
        tx.error(epath, "the last http filter must be the router "
                 "(envoy.extensions.filters.http.router.v3.Router)")
    elif not value:
        tx.error(epath, "an http_connection_manager needs http_filters ending with the router")
    if native:
        out["http_filters"] = native
        tx.paths[npath + ("http_filters",)] = epath


def _http_filter_config(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    name = out.get("_name", "?")
    if not isinstance(value, Mapping) or "@type" not in value:
        tx.error(epath, "expected a typed_config with '@type'")
        return
    try:
        msg = type_name(value["@type"])
    except Bad as exc:
        tx.error(epath + ("@type",), exc.reason)
        return
    if msg == ROUTER:
        out["_kind"] = "router"
        tx.walk(ROUTER_TABLE, epath, npath, value, {})
    elif msg in BUILTIN_HTTP:
        out["_kind"] = BUILTIN_HTTP[msg]
        out["_config"] = filter_settings(value)
    elif out.get("_optional"):
        out["_kind"] = "skip"
        tx.warn(epath, f"skipped: http filter {name!r} ({msg}) is optional and fastmesh "
                "does not have it")
    else:
        tx.error(epath + ("@type",), f"http filter {msg!r} is not supported by fastmesh "
                 f"(it has: Router, {', '.join(m.rsplit('.', 1)[1] for m in BUILTIN_HTTP)}); "
                 "mark it is_optional: true to run without it")


def _filter_name(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    try:
        out["_name"] = string(value)
    except Bad as exc:
        tx.error(epath, exc.reason)


def _optional(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    pass      # read before typed_config, in _ordered_filter


HTTP_FILTER = Table("envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", (
    custom("name", "name", _filter_name, "routes' typed_per_filter_config use it", T_FILTERS),
    custom("typed_config", "http_filters[].typed_config", _http_filter_config,
           "Router (last), LocalRateLimit, HTTPFault, RBAC", T_FILTERS),
    custom("is_optional", "", _optional, "an optional filter fastmesh lacks is skipped with "
           "a warning", T_OPTIONAL),
    reject("disabled", "disabled filters (enabled per route)", T_REJECT),
    reject("config_discovery", "filter config discovery (ECDS)", T_REJECT),
))

ROUTER_TABLE = Table(ROUTER, (
    ignore("dynamic_stats", "fastmesh's stats are fixed", T_FILTERS),
    ignore("suppress_envoy_headers", "fastmesh adds no x-envoy-* response headers", T_FILTERS),
    reject("upstream_http_filters", "upstream http filters", T_REJECT),
), type_url=ROUTER)


def _forward_cc(value: Any) -> str:
    return enum({k: k for k in ("SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET",
                                "ALWAYS_FORWARD_ONLY")})(value)


def _set_cc(value: Any) -> Any:
    return normalize(value, wrappers=frozenset({"subject"}))


def _use_remote_address(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    try:
        tx.set(out, npath, "xff_append", boolean(value), epath)
    except Bad as exc:
        tx.error(epath, exc.reason)


def _request_timeout(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    try:
        if duration(value) != 0:
            tx.error(epath, "not supported yet: request_timeout (only 0, Envoy's default, "
                     "is accepted)")
    except Bad as exc:
        tx.error(epath, exc.reason)


HTTP_CONNECTION_MANAGER = Table(HCM, (
    ignore("stat_prefix", "fastmesh's stats are labelled with the listener's name",
           T_HCM),
    custom("codec_type", "", _codec, "AUTO; HTTP1 or HTTP2 are served as AUTO (a warning)",
           T_HCM),
    custom("route_config", "virtual_hosts", _route_config, "inline RouteConfiguration",
           "test_routes_translated"),
    custom("rds", "virtual_hosts", _rds,
           "the route configuration comes from the xDS client (translate_resources)", T_HCM),
    custom("http_filters", "http_filters", _http_filters, "", T_FILTERS),
    copy("generate_request_id", "generate_request_id", boolean, "BoolValue; default true",
         T_HCM),
    custom("use_remote_address", "xff_append", _use_remote_address,
           "true appends the client to X-Forwarded-For; default false, as Envoy", T_HCM),
    sub("http2_protocol_options", "http2", lambda: HTTP2_OPTIONS, "fastmesh's defaults "
        "(100 streams, 64 KiB / 1 MiB windows) where Envoy's are 2^31-1 and 256 MiB", T_HCM),
    custom("http_protocol_options", "", lambda tx, e, n, v, o: tx.walk(HTTP1_OPTIONS, e, n, v, {}),
           "HTTP/1.0 options (accepted)", T_HCM),
    custom("common_http_protocol_options", "", lambda tx, e, n, v, o: tx.walk(
        COMMON_HTTP_OPTIONS, e, n, v, o), "", T_HCM),
    copy("max_request_headers_kb", "max_request_headers_kb", uint32, "UInt32Value", T_HCM),
    copy("stream_idle_timeout", "stream_idle_timeout", duration, "default 5m", T_HCM),
    copy("request_headers_timeout", "request_headers_timeout", duration,
         "fastmesh's default is 10s (Envoy's: none)", T_HCM),
    custom("request_timeout", "", _request_timeout, "only 0 (off)", T_HCM),
    copy("forward_client_cert_details", "forward_client_cert_details", _forward_cc, "",
         T_HCM),
    copy("set_current_client_cert_details", "set_current_client_cert_details", _set_cc,
         "", T_HCM),
    reject("access_log", "access logs", T_REJECT),
    reject("tracing", "tracing", T_REJECT),
    reject("scoped_routes", "scoped routes (SRDS)", T_REJECT),
    reject("normalize_path", "path normalization", T_REJECT),
    reject("merge_slashes", "merge_slashes", T_REJECT),
    reject("xff_num_trusted_hops", "xff_num_trusted_hops", T_REJECT),
    reject("upgrade_configs", "upgrade_configs (fastmesh passes Upgrade requests through)",
           T_REJECT),
    reject("server_name", "server_name", T_REJECT),
), type_url=HCM)


# ---------------------------------------------------------------- tcp proxy

TCP_PROXY_TABLE = Table(TCP_PROXY, (
    ignore("stat_prefix", "fastmesh's stats are labelled with the listener's name", T_TCP),
    copy("cluster", "cluster", string, "", T_TCP),
    copy("idle_timeout", "idle_timeout", duration, "default 1h", T_TCP),
    reject("weighted_clusters", "weighted clusters on tcp_proxy", T_REJECT),
    reject("access_log", "access logs", T_REJECT),
    reject("max_connect_attempts", "max_connect_attempts", T_REJECT),
    reject("hash_policy", "tcp_proxy hash policies", T_REJECT),
    reject("tunneling_config", "tunneling (CONNECT)", T_REJECT),
), type_url=TCP_PROXY)


# ---------------------------------------------------------------- listener

def _network_filter_config(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, Mapping) or "@type" not in value:
        tx.error(epath, "expected a typed_config with '@type'")
        return
    try:
        msg = type_name(value["@type"])
    except Bad as exc:
        tx.error(epath + ("@type",), exc.reason)
        return
    out["_kind"] = msg
    out["_config"] = value
    if msg not in (HCM, TCP_PROXY, NETWORK_RBAC):
        tx.error(epath + ("@type",), f"network filter {msg!r} is not supported by fastmesh "
                 "(it has: HttpConnectionManager, TcpProxy, RBAC)")
        out["_kind"] = None


NETWORK_FILTER = Table("envoy.config.listener.v3.Filter", (
    ignore("name", "the @type of typed_config decides", T_LISTENER),
    custom("typed_config", "", _network_filter_config,
           "HttpConnectionManager or TcpProxy (last), network RBAC before TcpProxy",
           T_LISTENER),
    reject("config_discovery", "filter config discovery (ECDS)", T_REJECT),
))


def _filters(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list) or not value:
        tx.error(epath, "expected a non-empty list of network filters ending with "
                 "http_connection_manager or tcp_proxy")
        return
    entries = []
    for i, f in enumerate(value):
        e: dict = {}
        tx.walk(NETWORK_FILTER, epath + (i,), npath, f, e)
        entries.append(e)
    last = len(value) - 1
    for i, e in enumerate(entries):
        kind, path = e.get("_kind"), epath + (i, "typed_config")
        if kind is None:
            continue
        if kind in (HCM, TCP_PROXY) and i != last:
            tx.error(path, f"{kind.rsplit('.', 1)[1]} must be the last network filter")
        elif kind == HCM:
            out["protocol"] = "http"
            tx.filter_names = {}
            out.setdefault("xff_append", False)        # Envoy's use_remote_address: false
            # http_filters first: routes' typed_per_filter_config refer to their names.
            cfg = e["_config"]
            if isinstance(cfg, Mapping) and "http_filters" in cfg:
                cfg = {"http_filters": cfg["http_filters"], **cfg}
            tx.walk(HTTP_CONNECTION_MANAGER, path, npath, cfg, out)
            if "route_config" not in e["_config"] and "rds" not in e["_config"]:
                tx.error(path, "an http_connection_manager needs route_config or rds")
        elif kind == TCP_PROXY:
            out["protocol"] = "tcp"
            tx.walk(TCP_PROXY_TABLE, path, npath, e["_config"], out)
            if "cluster" not in e["_config"]:
                tx.error(path, "missing required field 'cluster'")
        elif kind == NETWORK_RBAC:
            if i == last:
                tx.error(path, "the network RBAC filter must come before tcp_proxy")
                continue
            nf = out.setdefault("network_filters", [])
            tx.paths[npath + ("network_filters", len(nf))] = epath + (i,)
            tx.paths[npath + ("network_filters", len(nf), "typed_config")] = path
            nf.append({"name": "envoy.filters.network.rbac", "typed_config": normalize(
                e["_config"])})
    if isinstance(out.get("network_filters"), list) and out.get("protocol") == "http":
        tx.error(epath, "the network RBAC filter goes with tcp_proxy; an http listener "
                 "takes envoy.filters.http.rbac in its http_filters")


FILTER_CHAIN = Table("envoy.config.listener.v3.FilterChain", (
    custom("filters", "protocol, ...", _filters, "", T_LISTENER),
    custom("transport_socket", "tls", lambda tx, e, n, v, o: tx.walk(
        DOWNSTREAM_SOCKET, e, n, v, o), "DownstreamTlsContext", "test_tls_contexts"),
    ignore("name", "filter chain names", T_LISTENER),
    reject("filter_chain_match", "filter chain matching (one filter chain per listener)",
           T_REJECT),
    reject("transport_socket_connect_timeout", "transport_socket_connect_timeout", T_REJECT),
))


def _filter_chains(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list) or not value:
        tx.error(epath, "expected a list with one filter chain")
        return
    if len(value) > 1:
        tx.error(epath + (1,), "not supported yet: several filter chains (fastmesh takes one "
                 "filter chain per listener)")
    tx.walk(FILTER_CHAIN, epath + (0,), npath, value[0], out)
    if isinstance(value[0], Mapping) and "filters" not in value[0]:
        tx.error(epath + (0,), "missing required field 'filters'")


def _listener_filter(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list):
        tx.error(epath, "expected a list of listener filters")
        return
    for i, f in enumerate(value):
        cfg = f.get("typed_config") if isinstance(f, Mapping) else None
        try:
            msg = type_name(cfg.get("@type")) if isinstance(cfg, Mapping) else None
        except Bad:
            msg = None
        if msg not in _LISTENER_FILTERS_OK:
            tx.error(epath + (i,), f"not supported yet: listener filter {msg or f!r} "
                     "(fastmesh accepts tls_inspector and http_inspector)")


LISTENER = Table("envoy.config.listener.v3.Listener", (
    copy("name", "name", string, "without it: `<address>_<port>` (Istio's form)", T_LISTENER),
    custom("address", "address, port", address, "socket_address only", T_LISTENER),
    custom("filter_chains", "(the listener)", _filter_chains, "exactly one", T_LISTENER),
    custom("listener_filters", "", _listener_filter,
           "tls_inspector, http_inspector: accepted (fastmesh does both itself)", T_LISTENER),
    copy("per_connection_buffer_limit_bytes", "per_connection_buffer_limit", uint32,
         "UInt32Value; default 1MiB", T_LISTENER),
    ignore("traffic_direction", "informational", T_LISTENER),
    ignore("stat_prefix", "fastmesh's stats are labelled with the listener's name",
           T_LISTENER),
    reject("default_filter_chain", "default_filter_chain", T_REJECT),
    reject("access_log", "access logs", T_REJECT),
    reject("udp_listener_config", "UDP listeners", T_REJECT),
    reject("connection_balance_config", "connection_balance_config", T_REJECT),
), type_url="envoy.config.listener.v3.Listener")


def translate_listener(tx: Tx, epath: Path, npath: Path, value: Any) -> dict:
    """One Listener as a native listener dict (``_rds`` set while its routes are missing)."""
    out: dict = {}
    tx.walk(LISTENER, epath, npath, value, out)
    if isinstance(value, Mapping):
        for key in ("address", "filter_chains"):
            if key not in value:
                tx.error(epath, f"missing required field {key!r}")
        if "name" not in out and "address" in out and "port" in out:
            # Envoy makes a name up for an unnamed static listener; fastmesh needs one.
            name = f"{out['address']}_{out['port']}"
            out["name"] = name if name[:1].isalnum() else "listener_" + name
            tx.paths[npath + ("name",)] = epath
    return out
