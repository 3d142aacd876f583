"""Validation: composed config data in, schema dataclasses out.

Each section has a parser ``(ctx, path, value) -> dataclass`` that reads its
keys through ``_Map`` (typed reads with defaults, unknown keys reported with
a "did you mean"), converts values (durations to float seconds, sizes to
int bytes, addresses to canonical form) and reports every problem to the
``_Ctx`` instead of stopping at the first. The cross-checks that span
sections (unique names, cluster references, clashing addresses) run last.
"""
from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import keyword
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from fastmesh.control.durations import parse_duration, parse_size
from fastmesh.control.loader import _MAX_DEPTH, Path, _Ctx, _kind
from fastmesh.control.schema import (
    DEFAULT_ADMIN_ADDRESS,
    DEFAULT_ADMIN_PORT,
    DEFAULT_BATCH_WINDOW,
    DEFAULT_BUFFER_LIMIT,
    DEFAULT_HC_EXPECTED_STATUSES,
    DEFAULT_HC_NO_TRAFFIC_INTERVAL,
    DEFAULT_HEALTHY_PANIC_THRESHOLD,
    DEFAULT_CLUSTER_IDLE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_H2_INITIAL_CONNECTION_WINDOW,
    DEFAULT_H2_INITIAL_STREAM_WINDOW,
    DEFAULT_H2_MAX_CONCURRENT_STREAMS,
    DEFAULT_LISTENER_ADDRESS,
    DEFAULT_LISTENER_IDLE_TIMEOUT,
    DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_MAX_HEADERS_COUNT,
    DEFAULT_MAX_REQUEST_HEADERS_KB,
    DEFAULT_REQUEST_HEADERS_TIMEOUT,
    DEFAULT_RING_MAX,
    DEFAULT_RING_MIN,
    DEFAULT_ROUTE_TIMEOUT,
    DEFAULT_RETRY_BASE_INTERVAL,
    DEFAULT_STREAM_IDLE_TIMEOUT,
    H2_MAX_WINDOW,
    LB_POLICIES,
    MAX_BATCH_WINDOW,
    MAX_BUFFER_LIMIT,
    MAX_MAGLEV_TABLE_SIZE,
    MAX_ROUTE_WEIGHT,
    MAX_TOTAL_WEIGHT,
    PROTOCOLS,
    RETRY_ON,
    ROUTE_ACTIONS,
    UPSTREAM_PROTOCOLS,
    AdminConfig,
    MetricsConfig,
    OverloadConfig,
    DEFAULT_FD_THRESHOLD,
    DEFAULT_FIRST_BYTE_TIMEOUT,
    ClusterConfig,
    Config,
    DirectResponseConfig,
    EndpointConfig,
    FrozenMap,
    HC_KINDS,
    GrpcHealthCheckConfig,
    HashPolicyConfig,
    HeaderMatchConfig,
    HealthCheckConfig,
    HttpHealthCheckConfig,
    OutlierDetectionConfig,
    TcpHealthCheckConfig,
    Http2Config,
    HttpFilterConfig,
    ListenerConfig,
    MaxStreamDurationConfig,
    RetryPolicyConfig,
    RetryBudgetConfig,
    ROUTING_PRIORITIES,
    DEFAULT_CB_MAX_CONNECTIONS,
    DEFAULT_CB_MAX_PENDING_REQUESTS,
    DEFAULT_CB_MAX_REQUESTS,
    DEFAULT_CB_MAX_RETRIES,
    DEFAULT_MIN_RETRY_CONCURRENCY,
    DEFAULT_RETRY_BUDGET_PERCENT,
    ThresholdsConfig,
    RouteConfig,
    RouteMatchConfig,
    VirtualHostConfig,
    WeightedClusterConfig,
)

from fastmesh.control.schema import (  # noqa: E402 - discovery (docs/discovery.md)
    DEFAULT_DNS_REFRESH_RATE,
    DISCOVERY_TYPES,
    DNS_LOOKUP_FAMILIES,
    DEFAULT_ORIGINAL_DST_CLEANUP_INTERVAL,
    DEFAULT_PROTOCOL_DETECTION_TIMEOUT,
    DiscoveryConfig,
    DnsResolverConfig,
    OriginalDstConfig,
    EtcdSourceConfig,
    DEFAULT_ETCD_BACKOFF_BASE,
    DEFAULT_ETCD_BACKOFF_MAX,
    DEFAULT_ETCD_DIAL_TIMEOUT,
)

T = TypeVar("T")
_REQUIRED: Any = object()


class _Bad(Exception):
    """Raised by a converter: the value at hand is wrong for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason



def _closest(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest(word: str, choices: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest choice, or "" if none is close."""
    close = _closest(word, choices)
    return f"; did you mean {close!r}?" if close else ""


class _Map:
    """A mapping under validation: typed reads with defaults, unknown keys reported once."""

    def __init__(self, ctx: _Ctx, path: Path, value: Any, keys: Sequence[str], what: str) -> None:
        self.ctx = ctx
        self.path = path
        self.data: Mapping[str, Any] = {}
        self.suggested: set[str] = set()   # keys an unknown key probably meant
        self.ok = isinstance(value, Mapping)
        if not self.ok:
            ctx.error(path, f"expected {what} (a mapping), got {_kind(value)}")
            return
        self.data = value
        for key in value:
            if not isinstance(key, str):
                ctx.error(path, f"keys must be strings, got {_kind(key)}")
            elif key not in keys:
                close = _closest(key, keys)
                if close:
                    self.suggested.add(close)
                ctx.error(path + (key,), f"unknown key {key!r}; expected one of: "
                          f"{', '.join(keys)}{_suggest(key, keys)}", key=True)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, conv: Callable[[Any], T], default: Any = _REQUIRED) -> T:
        """``conv(value)`` of ``key``, ``default`` if absent; None after reporting an error."""
        path = self.path + (key,)
        if key not in self.data:
            if default is _REQUIRED:
                # A misspelt key already got "did you mean ...": do not also say it is missing.
                if self.ok and key not in self.suggested:
                    self.ctx.error(path, "missing required key")
                return None  # type: ignore[return-value]
            return default
        try:
            return conv(self.data[key])
        except _Bad as exc:
            self.ctx.error(path, exc.reason)
            return None  # type: ignore[return-value]

    def section(self, key: str, parse: Callable[[_Ctx, Path, Any], T], default: Any = _REQUIRED) -> T:
        """Like ``get`` for nested structures: ``parse(ctx, path, value)`` reports its own errors."""
        if key not in self.data:
            return self.get(key, lambda v: v, default)
        return parse(self.ctx, self.path + (key,), self.data[key])

    def forbid(self, key: str, reason: str) -> None:
        if key in self.data:
            self.ctx.error(self.path + (key,), reason, key=True)

    def one_of(self, keys: Sequence[str], what: str) -> str | None:
        """The single key of ``keys`` present; reports none or several as errors."""
        present = [k for k in keys if k in self.data]
        if len(present) == 1:
            return present[0]
        if not present:
            if self.ok:
                self.ctx.error(self.path, f"{what}: expected exactly one of: {', '.join(keys)}")
        else:
            self.ctx.error(self.path + (present[1],),
                           f"{what}: {' and '.join(repr(k) for k in present)} are mutually "
                           f"exclusive; expected exactly one of: {', '.join(keys)}", key=True)
        return None


def _list(ctx: _Ctx, path: Path, value: Any, item: Callable[[_Ctx, Path, Any], T],
          *, min_items: int, what: str) -> tuple[T, ...]:
    if not isinstance(value, (list, tuple)):
        ctx.error(path, f"expected a list of {what}, got {_kind(value)}")
        return ()
    if len(value) < min_items:
        ctx.error(path, f"must not be empty: give at least one entry ({what})")
    return tuple(item(ctx, path + (i,), v) for i, v in enumerate(value))


# Converters: value -> converted value, or raise _Bad(reason).

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")   # RFC 9110 token (header names)
_HOST_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_DOMAIN_RE = re.compile(r"[a-z0-9._\-]+(:[0-9]{1,5})?|\[[0-9a-f:.]+\](:[0-9]{1,5})?")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, (int, float, bool)) else ""
        raise _Bad(f"expected a string, got {_kind(value)}{hint}")
    return value


def _nonempty_str(value: Any) -> str:
    if not _str(value):
        raise _Bad("must not be empty")
    return value


def _name(value: Any) -> str:
    _str(value)
    if not _NAME_RE.fullmatch(value):
        raise _Bad(f"invalid name {value!r}: use 1-128 letters, digits, '.', '_', ':' or '-', "
                   "starting with a letter or digit")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_kind(value)}")
    return value


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def conv(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer, got {_kind(value)}")
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise _Bad(f"{value} is out of range; must be {bound}")
        return value
    return conv


def _enum(choices: Sequence[str]) -> Callable[[Any], str]:
    def conv(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            shown = repr(value) if isinstance(value, str) else _kind(value)
            suggestion = _suggest(value, choices) if isinstance(value, str) else ""
            raise _Bad(f"invalid value {shown}; expected one of: {', '.join(choices)}{suggestion}")
        return value
    return conv


def _duration(*, positive: bool = False) -> Callable[[Any], float]:
    def conv(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _Bad(str(exc)) from None
        if positive and seconds <= 0:
            raise _Bad("must be greater than zero")
        return seconds
    return conv


def _batch_window(value: Any) -> float:
    seconds = _duration()(value)
    if seconds > MAX_BATCH_WINDOW:
        raise _Bad(f"{seconds * 1e6:g}us is too long; at most 10ms (0 turns batching off)")
    return seconds


def _buffer_size(value: Any) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    if not 1 <= size <= MAX_BUFFER_LIMIT:
        raise _Bad(f"{size} bytes is out of range; must be between 1 and 1GiB")
    return size


def _listen_address(value: Any) -> str:
    """An IP literal or "localhost"; IPs are stored in canonical form."""
    _str(value)
    if value == "localhost":
        return value
    try:
        return str(ipaddress.ip_address(_strip_brackets(value)))
    except ValueError:
        raise _Bad(f"invalid address {value!r}: expected an IPv4 or IPv6 literal or 'localhost' "
                   "(hostnames are not allowed on listeners)") from None


def _endpoint_address(value: Any) -> str:
    """An IP literal (canonical form) or a DNS hostname (kept as written; resolved later)."""
    _str(value)
    try:
        return str(ipaddress.ip_address(_strip_brackets(value)))
    except ValueError:
        pass
    host = value[:-1] if value.endswith(".") else value
    if re.fullmatch(r"[0-9.]+", host):
        raise _Bad(f"invalid IPv4 address {value!r}")
    if not host or len(host) > 253 or not all(
        _HOST_LABEL_RE.fullmatch(label) for label in host.split(".")
    ):
        raise _Bad(f"invalid address {value!r}: expected an IP literal or a hostname")
    return value


def _strip_brackets(value: str) -> str:
    return value[1:-1] if value.startswith("[") and value.endswith("]") else value


def _header_name(value: Any) -> str:
    _str(value)
    if not _TOKEN_RE.fullmatch(value):
        raise _Bad(f"invalid header name {value!r}")
    return value.lower()


def _regex(value: Any) -> str:
    _str(value)
    try:
        re.compile(value)
    except re.error as exc:
        raise _Bad(f"invalid regex {value!r}: {exc}") from None
    return value


def _path_value(value: Any) -> str:
    _str(value)
    if not value.startswith("/"):
        raise _Bad(f"must start with '/', got {value!r}")
    return value


def _domain(value: Any) -> str:
    _nonempty_str(value)
    domain = value.lower()
    if domain == "*":
        return domain
    core = domain
    if core.startswith("*"):
        core = core[1:]
    elif core.endswith("*"):
        core = core[:-1]
    if not core or "*" in core or not _DOMAIN_RE.fullmatch(core):
        raise _Bad(f"invalid domain {value!r}: expected an exact host, '*.suffix', "
                   "'prefix.*' or '*' (one wildcard, at the start or the end)")
    return domain


def _import_path(value: Any) -> str:
    """``package.module:Attr``, checked for form only: nothing is imported here."""
    _nonempty_str(value)
    module, colon, attr = value.partition(":")
    why = None
    if not colon:
        why = "no ':' between the module and the attribute"
    elif ":" in attr:
        why = "more than one ':'"
    else:
        bad = [part for part in module.split(".")
               if not part.isidentifier() or keyword.iskeyword(part)]
        if bad:
            why = f"{bad[0]!r} is not a valid module name"
        elif not attr.isidentifier() or keyword.iskeyword(attr):
            why = f"{attr!r} is not a valid attribute name"
    if why is not None:
        raise _Bad(f"invalid import path {value!r}: {why}; expected 'package.module:Name'")
    return value


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


# Section parsers: (ctx, path, value) -> dataclass. They report their own errors.

_ROOT_KEYS = ("drain_timeout", "batch_window", "admin", "listeners", "clusters",
              "overload_manager", "user", "group")
_OVERLOAD_KEYS = ("global_downstream_max_connections", "file_descriptor_threshold")
_ADMIN_KEYS = ("address", "port", "allow_remote", "allow_remote_changes", "metrics")
_METRICS_KEYS = ("naming", "istio", "workload", "namespace", "reporter")
_LISTENER_COMMON = ("name", "address", "port", "protocol", "cluster", "idle_timeout",
                    "per_connection_buffer_limit", "max_connections", "tls", "tls_mode",
                    "network_filters", "use_original_dst", "bind_to_port",
                    "protocol_detection_timeout")
_LISTENER_HTTP = ("request_headers_timeout", "stream_idle_timeout", "max_request_headers_kb",
                  "max_headers_count", "xff_append", "generate_request_id", "virtual_hosts",
                  "http2", "http_filters", "first_byte_timeout", "max_stream_duration",
                  "trust_retry_headers", "forward_client_cert_details",
                  "set_current_client_cert_details", "tracing")
_HTTP2_KEYS = ("max_concurrent_streams", "initial_stream_window_size",
               "initial_connection_window_size")
_VHOST_KEYS = ("name", "domains", "routes", "typed_per_filter_config",
               "include_request_attempt_count")
_ROUTE_KEYS = ("name", "match") + ROUTE_ACTIONS + ("timeout", "retry_policy", "idle_timeout",
                                                   "max_stream_duration", "typed_per_filter_config",
                                                   "priority", "per_request_buffer_limit_bytes")
_MAX_STREAM_DURATION_KEYS = ("max_stream_duration", "grpc_timeout_header_max",
                             "grpc_timeout_header_offset")
_RETRY_KEYS = ("retry_on", "num_retries", "per_try_timeout", "retry_back_off",
               "retriable_status_codes")
_BACK_OFF_KEYS = ("base_interval", "max_interval")
# Envoy's other retry_on conditions: named so that a config using them gets
# "not supported yet" rather than "unknown".
_RETRY_ON_ENVOY = ("reset-before-request", "retriable-headers", "envoy-ratelimited",
                   "http3-post-connect-failure")
_MATCH_KEYS = ("prefix", "path", "regex", "case_sensitive", "headers")
_HEADER_KEYS = ("name", "exact", "prefix", "regex", "present", "invert")
_CLUSTER_KEYS = ("name", "lb", "hash_policy", "ring_hash", "maglev", "connect_timeout",
                 "idle_timeout", "per_connection_buffer_limit", "max_requests_per_connection",
                 "endpoints", "protocol", "health_checks", "common_lb_config",
                 "circuit_breakers", "outlier_detection", "tls")
_CB_KEYS = ("thresholds",)
_THRESHOLD_KEYS = ("priority", "max_connections", "max_pending_requests", "max_requests",
                   "max_retries", "max_connection_pools", "track_remaining", "retry_budget")
_RETRY_BUDGET_KEYS = ("budget_percent", "min_retry_concurrency")
_UINT32 = (1 << 32) - 1
_HEALTH_CHECK_KEYS = ("timeout", "interval", "interval_jitter", "unhealthy_threshold",
                      "healthy_threshold", "no_traffic_interval") + HC_KINDS
# Envoy's other HealthCheck fields: "not supported yet" rather than "unknown".
_HEALTH_CHECK_ENVOY = ("initial_jitter", "interval_jitter_percent", "reuse_connection",
                       "custom_health_check", "no_traffic_healthy_interval",
                       "unhealthy_interval", "unhealthy_edge_interval", "healthy_edge_interval",
                       "event_log_path", "event_logger", "always_log_health_check_failures",
                       "always_log_health_check_success", "tls_options",
                       "transport_socket_match_criteria")
# Envoy's OutlierDetection fields, each with its kind of value.
_OD_COUNTS = ("consecutive_5xx", "consecutive_gateway_failure",
              "consecutive_local_origin_failure", "success_rate_minimum_hosts",
              "success_rate_request_volume", "success_rate_stdev_factor",
              "failure_percentage_minimum_hosts", "failure_percentage_request_volume")
_OD_PERCENTS = ("max_ejection_percent", "enforcing_consecutive_5xx",
                "enforcing_consecutive_gateway_failure",
                "enforcing_consecutive_local_origin_failure", "enforcing_success_rate",
                "enforcing_local_origin_success_rate", "enforcing_failure_percentage",
                "enforcing_failure_percentage_local_origin", "failure_percentage_threshold")
_OD_DURATIONS = ("interval", "base_ejection_time", "max_ejection_time")
_OD_BOOLS = ("split_external_local_origin_errors", "always_eject_one_host")
_OD_KEYS = _OD_COUNTS + _OD_PERCENTS + _OD_DURATIONS + _OD_BOOLS + ("max_ejection_time_jitter",)
# Envoy's other fields: "not supported yet" rather than "unknown".
_OD_ENVOY = ("successful_active_health_check_uneject_host", "monitor_type")
_HTTP_HC_KEYS = ("path", "host", "expected_statuses", "request_headers_to_add")
_TCP_HC_KEYS = ("send", "receive")
_GRPC_HC_KEYS = ("service_name", "authority")
_ENDPOINT_KEYS = ("address", "port", "weight")
# Service discovery keys of a cluster (Envoy's names).
_DISCOVERY_KEYS = ("type", "dns_refresh_rate", "dns_failure_refresh_rate", "respect_dns_ttl",
                   "dns_lookup_family", "dns_resolution_config", "eds_config")
_CLUSTER_KEYS += _DISCOVERY_KEYS + ("cleanup_interval", "original_dst_lb_config")
_ODST_LB_KEYS = ("use_http_header", "http_header_name")
_DNS_KEYS = ("dns_refresh_rate", "dns_failure_refresh_rate", "respect_dns_ttl",
             "dns_lookup_family", "dns_resolution_config")
_HTTP_FILTER_KEYS = ("name", "import", "config", "typed_config")


def _parse_root(ctx: _Ctx, doc: Any) -> Config:
    m = _Map(ctx, (), doc, _ROOT_KEYS, "the config document")
    drain = m.get("drain_timeout", _duration(), DEFAULT_DRAIN_TIMEOUT)
    batch = m.get("batch_window", _batch_window, DEFAULT_BATCH_WINDOW)
    admin = m.section("admin", _parse_admin, None)
    overload = m.section("overload_manager", _parse_overload, OverloadConfig())
    listeners = m.section("listeners", lambda c, p, v: _list(
        c, p, v, _parse_listener, min_items=ctx.min_listeners, what="listeners"))
    clusters = m.section("clusters", lambda c, p, v: _list(
        c, p, v, _parse_cluster, min_items=0, what="clusters"), ())
    listeners = listeners or ()
    clusters = clusters or ()
    _check_unique(ctx, ("listeners",), listeners, "listener")
    _check_unique(ctx, ("clusters",), clusters, "cluster")
    _check_cluster_refs(ctx, clusters)
    _check_addresses(ctx, listeners, admin)
    user = m.get("user", _account, None)
    group = m.get("group", _account, None)
    if group is not None and user is None:
        ctx.error(("group",), "group is set without user (user is who the proxy runs as)")
    return Config(drain_timeout=drain, admin=admin, listeners=listeners, clusters=clusters,
                  source=ctx.source, batch_window=batch,
                  overload_manager=overload or OverloadConfig(), user=user, group=group)


def _account(value: Any) -> str:
    """A user or group: a name, or a numeric id (kept as its digits). Whether
    it exists is checked where the proxy runs, not here."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise _Bad(f"{value} is not a valid id")
        return str(value)
    name = _nonempty_str(value)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?", name):
        raise _Bad(f"invalid user or group name {name!r}")
    return name


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"expected a number between 0 and 1, got {_kind(value)}")
    if not 0 <= value <= 1:
        raise _Bad(f"{value} is out of range; must be between 0 and 1 (0 turns it off)")
    return float(value)


def _parse_overload(ctx: _Ctx, path: Path, value: Any) -> OverloadConfig:
    m = _Map(ctx, path, value, _OVERLOAD_KEYS, "overload_manager settings")
    return OverloadConfig(
        global_downstream_max_connections=m.get("global_downstream_max_connections",
                                                _int(1, 1 << 30), 0),
        file_descriptor_threshold=m.get("file_descriptor_threshold", _fraction,
                                        DEFAULT_FD_THRESHOLD),
    )


def _parse_admin(ctx: _Ctx, path: Path, value: Any) -> AdminConfig:
    m = _Map(ctx, path, value, _ADMIN_KEYS, "admin settings")
    address = m.get("address", _listen_address, DEFAULT_ADMIN_ADDRESS)
    allow_remote = m.get("allow_remote", _bool, False)
    if address is not None and not allow_remote and not _is_loopback(address):
        ctx.error(path + ("address",),
                  f"admin address {address} is reachable from the network, and the admin "
                  "shows the whole topology (/config_dump) and can drain the proxy; bind "
                  "127.0.0.1 (or ::1), or set admin.allow_remote: true if this is meant")
    return AdminConfig(address=address, port=m.get("port", _int(0, 65535), DEFAULT_ADMIN_PORT),
                       allow_remote=allow_remote,
                       allow_remote_changes=m.get("allow_remote_changes", _bool, False),
                       metrics=m.section("metrics", _parse_metrics, MetricsConfig()))


def _parse_metrics(ctx: _Ctx, path: Path, value: Any) -> MetricsConfig:
    m = _Map(ctx, path, value, _METRICS_KEYS, "metrics settings")
    return MetricsConfig(naming=m.get("naming", _enum(("fastmesh", "envoy")), "fastmesh"),
                         istio=m.get("istio", _bool, False),
                         workload=m.get("workload", _nonempty_str, ""),
                         namespace=m.get("namespace", _nonempty_str, ""),
                         reporter=m.get("reporter", _enum(("source", "destination")), "source"))


def _is_loopback(address: str) -> bool:
    return address == "localhost" or ipaddress.ip_address(address).is_loopback


def _parse_listener(ctx: _Ctx, path: Path, value: Any) -> ListenerConfig:
    m = _Map(ctx, path, value, _LISTENER_COMMON + _LISTENER_HTTP, "a listener")
    protocol = m.get("protocol", _enum(PROTOCOLS), "http")
    cluster = None
    virtual_hosts: tuple[VirtualHostConfig, ...] = ()
    if protocol == "tcp":
        cluster = m.get("cluster", _nonempty_str)
        if cluster is not None:
            ctx.cluster_refs.append((path + ("cluster",), cluster))
        for key in _LISTENER_HTTP:
            m.forbid(key, f"{key!r} is only allowed on http listeners (this one is tcp)")
    elif protocol in ("http", "auto"):
        if protocol == "auto":
            # The first bytes decide: HTTP goes through virtual_hosts, the
            # rest (opaque TCP, TLS, server-speaks-first) to `cluster`.
            cluster = m.get("cluster", _nonempty_str)
            if cluster is not None:
                ctx.cluster_refs.append((path + ("cluster",), cluster))
            m.forbid("tls", "'tls' is not supported on protocol: auto listeners (TLS from "
                     "the client is passed through to `cluster` untouched)")
        else:
            m.forbid("cluster", "'cluster' is only allowed on tcp listeners (and protocol: "
                     "auto ones); http listeners route to clusters through virtual_hosts")
        m.forbid("network_filters", "'network_filters' is only allowed on tcp listeners; "
                 "http listeners take envoy.filters.http.rbac in http_filters")
        virtual_hosts = m.section("virtual_hosts", lambda c, p, v: _list(
            c, p, v, _parse_vhost, min_items=1, what="virtual hosts")) or ()
        _check_unique(ctx, path + ("virtual_hosts",), virtual_hosts, "virtual host")
        _check_domains(ctx, path + ("virtual_hosts",), virtual_hosts)
    if protocol != "auto":
        m.forbid("protocol_detection_timeout", "'protocol_detection_timeout' is only allowed "
                 "on protocol: auto listeners")
    http = protocol in ("http", "auto")
    http_filters = m.section("http_filters", _parse_http_filters, ()) if http else ()
    if http:
        _check_per_filter_names(ctx, path, virtual_hosts, http_filters or ())
    return ListenerConfig(
        name=m.get("name", _name),
        address=m.get("address", _listen_address, DEFAULT_LISTENER_ADDRESS),
        port=m.get("port", _int(0, 65535)),
        protocol=protocol,
        cluster=cluster,
        idle_timeout=m.get("idle_timeout", _duration(), DEFAULT_LISTENER_IDLE_TIMEOUT),
        per_connection_buffer_limit=m.get("per_connection_buffer_limit", _buffer_size,
                                          DEFAULT_BUFFER_LIMIT),
        request_headers_timeout=(m.get("request_headers_timeout", _duration(),
                                       DEFAULT_REQUEST_HEADERS_TIMEOUT)
                                 if http else DEFAULT_REQUEST_HEADERS_TIMEOUT),
        stream_idle_timeout=(m.get("stream_idle_timeout", _duration(),
                                   DEFAULT_STREAM_IDLE_TIMEOUT)
                             if http else DEFAULT_STREAM_IDLE_TIMEOUT),
        max_request_headers_kb=(m.get("max_request_headers_kb", _int(1, 8192),
                                      DEFAULT_MAX_REQUEST_HEADERS_KB)
                                if http else DEFAULT_MAX_REQUEST_HEADERS_KB),
        max_headers_count=(m.get("max_headers_count", _int(1, 256), DEFAULT_MAX_HEADERS_COUNT)
                           if http else DEFAULT_MAX_HEADERS_COUNT),
        xff_append=m.get("xff_append", _bool, True) if http else True,
        generate_request_id=m.get("generate_request_id", _bool, True) if http else True,
        virtual_hosts=virtual_hosts,
        http2=m.section("http2", _parse_http2, Http2Config()) if http else Http2Config(),
        http_filters=http_filters or (),
        max_connections=m.get("max_connections", _int(1, 1 << 30), 0),
        first_byte_timeout=(m.get("first_byte_timeout", _duration(), DEFAULT_FIRST_BYTE_TIMEOUT)
                            if http else DEFAULT_FIRST_BYTE_TIMEOUT),
        max_stream_duration=m.get("max_stream_duration", _duration(), 0.0) if http else 0.0,
        trust_retry_headers=m.get("trust_retry_headers", _bool, False) if http else False,
        network_filters=_network_filters(ctx, path, m, http),
        use_original_dst=m.get("use_original_dst", _bool, False),
        bind_to_port=m.get("bind_to_port", _bool, True),
        protocol_detection_timeout=m.get("protocol_detection_timeout", _duration(positive=True),
                                         DEFAULT_PROTOCOL_DETECTION_TIMEOUT),
        tracing=_listener_tracing(ctx, path, m, http),
        **_listener_tls(ctx, path, m, http),
    )


def _network_filters(ctx: _Ctx, path: Path, m: _Map, http: bool) -> tuple[Any, ...]:
    # control/rbac.py parses them (imported here, as it uses this module).
    if http:
        return ()
    from fastmesh.control import rbac
    return m.section("network_filters", rbac.parse_network_filters, ()) or ()


def _listener_tracing(ctx: _Ctx, path: Path, m: _Map, http: bool) -> Any:
    # control/tracing.py parses it (imported here, as it uses this module).
    if not http or "tracing" not in m:
        return None
    from fastmesh.control import tracing
    return m.section("tracing", tracing.parse_tracing, None)


def _listener_tls(ctx: _Ctx, path: Path, m: _Map, http: bool) -> dict[str, Any]:
    # TLS keys (control/tls.py parses them; imported here, as it uses this module).
    from fastmesh.control import tls
    tls_cfg = m.section("tls", lambda c, p, v: tls.parse_downstream(c, p, v, http=http), None)
    mode = m.get("tls_mode", _enum(tls.TLS_MODES), "strict")
    if mode == "permissive" and "tls" not in m:
        ctx.error(path + ("tls_mode",), "tls_mode: permissive needs tls (the certificates "
                  "TLS clients are served with)", key=True)
    out: dict[str, Any] = {"tls": tls_cfg, "tls_mode": mode or "strict"}
    if http:
        out["forward_client_cert_details"] = m.section(
            "forward_client_cert_details", tls.parse_fcc, "SANITIZE") or "SANITIZE"
        out["set_current_client_cert_details"] = m.section(
            "set_current_client_cert_details", tls.parse_ccd, None)
    return out


def _check_per_filter_names(ctx: _Ctx, path: Path, vhosts: Sequence[VirtualHostConfig],
                            filters: Sequence[HttpFilterConfig]) -> None:
    # typed_per_filter_config names a built-in filter of this listener's chain:
    # settings for a filter the chain lacks would be silently unused.
    names = [f.name for f in filters if f.import_path is None and f.name is not None]
    where = [((i,), vh.typed_per_filter_config) for i, vh in enumerate(vhosts)]
    where += [((i, "routes", j), r.typed_per_filter_config)
              for i, vh in enumerate(vhosts) for j, r in enumerate(vh.routes)]
    for sub, per in where:
        for name in per:
            if name not in names:
                known = (f"its built-in filters: {', '.join(names)}" if names
                         else "it has no built-in filter")
                ctx.error(path + ("virtual_hosts",) + sub + ("typed_per_filter_config", name),
                          f"filter {name!r} is not in this listener's http_filters; {known}",
                          key=True)


def _parse_http2(ctx: _Ctx, path: Path, value: Any) -> Http2Config:
    m = _Map(ctx, path, value, _HTTP2_KEYS, "http2 settings")
    return Http2Config(
        max_concurrent_streams=m.get("max_concurrent_streams", _int(1, H2_MAX_WINDOW),
                                     DEFAULT_H2_MAX_CONCURRENT_STREAMS),
        initial_stream_window_size=m.get("initial_stream_window_size",
                                         _int(65535, H2_MAX_WINDOW),
                                         DEFAULT_H2_INITIAL_STREAM_WINDOW),
        initial_connection_window_size=m.get("initial_connection_window_size",
                                             _int(65535, H2_MAX_WINDOW),
                                             DEFAULT_H2_INITIAL_CONNECTION_WINDOW),
    )


def _parse_http_filters(ctx: _Ctx, path: Path, value: Any) -> tuple[HttpFilterConfig, ...]:
    filters = _list(ctx, path, value, _parse_http_filter, min_items=0, what="http filters")
    _check_unique(ctx, path, filters, "http filter")
    return filters


def _parse_http_filter(ctx: _Ctx, path: Path, value: Any) -> HttpFilterConfig:
    from fastmesh.control.builtin_filters import BUILTIN_FILTERS
    m = _Map(ctx, path, value, _HTTP_FILTER_KEYS, "an http filter")
    name = m.get("name", _name)
    if "import" not in m and name in BUILTIN_FILTERS:
        # A built-in filter: Envoy's name, its settings in typed_config.
        m.forbid("config", f"{name} takes its settings in 'typed_config'")
        raw = m.section("typed_config", _parse_filter_config, FrozenMap())
        if raw:
            BUILTIN_FILTERS[name].validate(ctx, path + ("typed_config",), raw)
        return HttpFilterConfig(name=name, import_path=None, config=raw or FrozenMap())
    m.forbid("typed_config", "'typed_config' is for built-in filters; a filter with "
             "'import' takes 'config'")
    return HttpFilterConfig(name=name,
                            import_path=m.get("import", _import_path),
                            config=m.section("config", _parse_filter_config, FrozenMap()))


def _parse_per_filter(ctx: _Ctx, path: Path, value: Any) -> FrozenMap:
    """typed_per_filter_config: {built-in filter name: its settings}."""
    from fastmesh.control.builtin_filters import BUILTIN_FILTERS
    if not isinstance(value, Mapping):
        ctx.error(path, f"expected a mapping of filter name to settings, got {_kind(value)}")
        return FrozenMap()
    out = {}
    for name, raw in value.items():
        if name not in BUILTIN_FILTERS:
            ctx.error(path + (name,), f"unknown filter {name!r}; per-route settings exist for: "
                      f"{', '.join(BUILTIN_FILTERS)}{_suggest(str(name), BUILTIN_FILTERS)}",
                      key=True)
            continue
        frozen = _parse_filter_config(ctx, path + (name,), raw)
        BUILTIN_FILTERS[name].per_route_validator()(ctx, path + (name,), frozen)
        out[name] = frozen
    return FrozenMap(out)


def _parse_filter_config(ctx: _Ctx, path: Path, value: Any) -> FrozenMap:
    if not isinstance(value, Mapping):
        ctx.error(path, f"expected the filter's config (a mapping), got {_kind(value)}")
        return FrozenMap()
    return _plain_data(ctx, path, value)


def _plain_data(ctx: _Ctx, path: Path, value: Any) -> Any:
    """``value`` frozen, if it holds only YAML scalars, lists and mappings with string keys.

    Anything else (a date, binary, a set, a Python object in dict input) is
    reported: a filter's config must survive ``config_to_dict`` and JSON.
    """
    if len(path) > _MAX_DEPTH:
        ctx.error(path, "nested too deeply")
        return None
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                ctx.error(path, f"keys must be strings, got {_kind(key)}")
                continue
            out[key] = _plain_data(ctx, path + (key,), item)
        return FrozenMap(out)
    if isinstance(value, (list, tuple)):
        return tuple(_plain_data(ctx, path + (i,), item) for i, item in enumerate(value))
    if isinstance(value, float) and not math.isfinite(value):
        ctx.error(path, f"{value} is not allowed; numbers must be finite")
        return None
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    hint = " (quote it)" if isinstance(value, datetime.date) else ""
    ctx.error(path, "expected a string, number, boolean, null, list or mapping, "
              f"got {_kind(value)}{hint}")
    return None


def _parse_vhost(ctx: _Ctx, path: Path, value: Any) -> VirtualHostConfig:
    m = _Map(ctx, path, value, _VHOST_KEYS, "a virtual host")
    domains = m.section("domains", lambda c, p, v: _list(
        c, p, v, _parse_domain, min_items=1, what="domains"))
    routes = m.section("routes", lambda c, p, v: _list(
        c, p, v, _parse_route, min_items=1, what="routes"))
    return VirtualHostConfig(name=m.get("name", _name), domains=domains or (),
                             routes=routes or (),
                             typed_per_filter_config=m.section(
                                 "typed_per_filter_config", _parse_per_filter, FrozenMap()),
                             include_request_attempt_count=m.get(
                                 "include_request_attempt_count", _bool, False))


def _parse_domain(ctx: _Ctx, path: Path, value: Any) -> str:
    try:
        return _domain(value)
    except _Bad as exc:
        ctx.error(path, exc.reason)
        return None  # type: ignore[return-value]


def _parse_route(ctx: _Ctx, path: Path, value: Any) -> RouteConfig:
    m = _Map(ctx, path, value, _ROUTE_KEYS, "a route")
    name = m.get("name", _name, None)
    match = m.section("match", _parse_match)
    action = m.one_of(ROUTE_ACTIONS, "route action")
    cluster = None
    weighted: tuple[WeightedClusterConfig, ...] = ()
    direct = None
    timeout = 0.0
    if action == "cluster":
        cluster = m.get("cluster", _nonempty_str)
        if cluster is not None:
            ctx.cluster_refs.append((path + ("cluster",), cluster))
    elif action == "weighted_clusters":
        weighted = m.section("weighted_clusters", _parse_weighted)
    elif action == "direct_response":
        direct = m.section("direct_response", _parse_direct)
    retry = None
    buffer_limit = None
    priority = "default"
    idle = None
    max_duration = None
    if action == "direct_response":
        m.forbid("priority", "'priority' is not allowed with direct_response "
                 "(no upstream request is made)")
        for key in ("idle_timeout", "max_stream_duration"):
            m.forbid(key, f"{key!r} is not allowed with direct_response "
                     "(no upstream request is made)")
        m.forbid("timeout", "'timeout' is not allowed with direct_response "
                 "(no upstream request is made)")
        m.forbid("retry_policy", "'retry_policy' is not allowed with direct_response "
                 "(no upstream request is made)")
        m.forbid("per_request_buffer_limit_bytes", "'per_request_buffer_limit_bytes' is not "
                 "allowed with direct_response (no upstream request is made)")
    else:
        timeout = m.get("timeout", _duration(), DEFAULT_ROUTE_TIMEOUT)
        retry = m.section("retry_policy", _parse_retry_policy, None)
        buffer_limit = m.get("per_request_buffer_limit_bytes", _buffer_size, None)
        priority = m.get("priority", _enum(ROUTING_PRIORITIES), "default")
        idle = m.get("idle_timeout", _duration(), None)
        max_duration = m.section("max_stream_duration", _parse_max_stream_duration, None)
    return RouteConfig(name=name, match=match, action=action, cluster=cluster,
                       weighted_clusters=weighted, direct_response=direct, timeout=timeout,
                       retry_policy=retry, priority=priority, idle_timeout=idle,
                       max_stream_duration=max_duration,
                       per_request_buffer_limit_bytes=buffer_limit,
                       typed_per_filter_config=m.section("typed_per_filter_config",
                                                         _parse_per_filter, FrozenMap()))


def _parse_max_stream_duration(ctx: _Ctx, path: Path, value: Any) -> MaxStreamDurationConfig:
    # Envoy's RouteAction.MaxStreamDuration: three optional durations.
    m = _Map(ctx, path, value, _MAX_STREAM_DURATION_KEYS, "max_stream_duration settings "
             "({max_stream_duration, grpc_timeout_header_max, grpc_timeout_header_offset})")
    return MaxStreamDurationConfig(
        max_stream_duration=m.get("max_stream_duration", _duration(), None),
        grpc_timeout_header_max=m.get("grpc_timeout_header_max", _duration(), None),
        grpc_timeout_header_offset=m.get("grpc_timeout_header_offset", _duration(), None))


def _retry_on(value: Any) -> tuple[str, ...]:
    # Envoy's form: one string, conditions separated by commas.
    conditions = tuple(c.strip() for c in _nonempty_str(value).split(","))
    for c in conditions:
        if c in _RETRY_ON_ENVOY:
            raise _Bad(f"retry_on {c!r} is not supported yet; supported: {', '.join(RETRY_ON)}")
        if c not in RETRY_ON:
            raise _Bad(f"unknown retry_on condition {c!r}; supported: {', '.join(RETRY_ON)}"
                       f"{_suggest(c, RETRY_ON)}")
    return conditions


def _parse_retry_policy(ctx: _Ctx, path: Path, value: Any) -> RetryPolicyConfig:
    m = _Map(ctx, path, value, _RETRY_KEYS, "a retry policy")
    base, cap = m.section("retry_back_off", _parse_back_off, (DEFAULT_RETRY_BASE_INTERVAL, 0.0))
    return RetryPolicyConfig(
        retry_on=m.get("retry_on", _retry_on),
        num_retries=m.get("num_retries", _int(0, 100), 1),
        per_try_timeout=m.get("per_try_timeout", _duration(), 0.0),
        base_interval=base, max_interval=cap,
        retriable_status_codes=m.section("retriable_status_codes", _parse_status_codes, ()))


def _parse_back_off(ctx: _Ctx, path: Path, value: Any) -> tuple[float, float]:
    # Envoy's retry_back_off: base_interval required and > 0, max_interval
    # >= base_interval (default 10 x base_interval, written as 0).
    m = _Map(ctx, path, value, _BACK_OFF_KEYS, "a retry back-off")
    base = m.get("base_interval", _duration(positive=True))
    cap = m.get("max_interval", _duration(positive=True), 0.0)
    if base is None:
        return (DEFAULT_RETRY_BASE_INTERVAL, 0.0)
    if cap and cap < base:
        ctx.error(path + ("max_interval",), f"max_interval ({cap:g}s) must be at least "
                  f"base_interval ({base:g}s)", key=True)
    return (base, cap or 0.0)


def _parse_status_codes(ctx: _Ctx, path: Path, value: Any) -> tuple[int, ...]:
    # Envoy's retriable_status_codes: HTTP statuses retried under
    # retry_on: retriable-status-codes.
    def item(c: _Ctx, p: Path, v: Any) -> int:
        try:
            return _int(100, 599)(v)
        except _Bad as exc:
            c.error(p, exc.reason)
            return 0
    return tuple(sorted(set(_list(ctx, path, value, item, min_items=1, what="HTTP status codes"))))


def _parse_match(ctx: _Ctx, path: Path, value: Any) -> RouteMatchConfig:
    m = _Map(ctx, path, value, _MATCH_KEYS, "a route match")
    case_sensitive = m.get("case_sensitive", _bool, True)
    kind = m.one_of(("prefix", "path", "regex"), "route match")
    values: dict[str, str | None] = {"prefix": None, "path": None, "regex": None}
    if kind == "regex":
        values["regex"] = m.get("regex", _regex)
        if case_sensitive is False:
            # As in Envoy, case_sensitive does not apply to regex; say so instead of ignoring it.
            ctx.error(path + ("case_sensitive",), "case_sensitive: false does not apply to "
                      "regex; write (?i) at the start of the pattern instead", key=True)
    elif kind is not None:
        values[kind] = m.get(kind, _path_value)
    headers = m.section("headers", lambda c, p, v: _list(
        c, p, v, _parse_header_match, min_items=0, what="header matchers"), ())
    return RouteMatchConfig(case_sensitive=case_sensitive, headers=headers or (), **values)


def _parse_header_match(ctx: _Ctx, path: Path, value: Any) -> HeaderMatchConfig:
    m = _Map(ctx, path, value, _HEADER_KEYS, "a header matcher")
    kind = m.one_of(("exact", "prefix", "regex", "present"), "header matcher")
    values: dict[str, Any] = {}
    if kind == "present":
        values["present"] = m.get("present", _bool)
    elif kind == "regex":
        values["regex"] = m.get("regex", _regex)
    elif kind is not None:
        values[kind] = m.get(kind, _str)
    return HeaderMatchConfig(name=m.get("name", _header_name),
                             invert=m.get("invert", _bool, False), **values)


def _parse_weighted(ctx: _Ctx, path: Path, value: Any) -> tuple[WeightedClusterConfig, ...]:
    items = _list(ctx, path, value, _parse_weighted_item, min_items=1, what="weighted clusters")
    _check_unique(ctx, path, items, "weighted cluster")
    total = sum(w.weight for w in items if w.weight is not None)
    if total > MAX_TOTAL_WEIGHT:
        ctx.error(path, f"total weight {total} is too large; must be at most {MAX_TOTAL_WEIGHT}")
    return items


def _parse_weighted_item(ctx: _Ctx, path: Path, value: Any) -> WeightedClusterConfig:
    m = _Map(ctx, path, value, ("name", "weight"), "a weighted cluster")
    name = m.get("name", _nonempty_str)
    if name is not None:
        ctx.cluster_refs.append((path + ("name",), name))
    return WeightedClusterConfig(name=name, weight=m.get("weight", _int(1, MAX_ROUTE_WEIGHT)))


def _parse_direct(ctx: _Ctx, path: Path, value: Any) -> DirectResponseConfig:
    m = _Map(ctx, path, value, ("status", "body"), "a direct response")
    return DirectResponseConfig(status=m.get("status", _int(100, 599)),
                                body=m.get("body", _str, ""))


def _parse_cluster(ctx: _Ctx, path: Path, value: Any) -> ClusterConfig:
    m = _Map(ctx, path, value, _CLUSTER_KEYS, "a cluster")
    odst = m.data.get("type") == "original_dst"
    if odst:
        # Envoy: an ORIGINAL_DST cluster's lb_policy is CLUSTER_PROVIDED (the
        # destination picks); nothing else to say about balancing.
        if m.data.get("lb", "cluster_provided") != "cluster_provided":
            ctx.error(path + ("lb",), "an original_dst cluster has no balancer: leave 'lb' "
                      "out (or say cluster_provided)")
        for key in ("endpoints", "health_checks", "outlier_detection", "hash_policy",
                    "ring_hash", "maglev", "eds_config"):
            m.forbid(key, f"{key!r} is not allowed on an original_dst cluster (its only "
                     "endpoint is where each client connected)")
        lb = "round_robin"
    else:
        for key in ("cleanup_interval", "original_dst_lb_config"):
            m.forbid(key, f"{key!r} is only allowed with type: original_dst")
        lb = m.get("lb", _enum(LB_POLICIES), "round_robin")
    hashing = lb in ("ring_hash", "maglev")
    hash_policy = None
    if hashing:
        hash_policy = m.section("hash_policy", _parse_hash_policy,
                                HashPolicyConfig(header=None, source_ip=True))
    elif lb is not None:
        m.forbid("hash_policy", f"'hash_policy' is only allowed with lb: ring_hash or maglev "
                 f"(this cluster uses {lb})")
    ring_min, ring_max = DEFAULT_RING_MIN, DEFAULT_RING_MAX
    if lb == "ring_hash":
        ring_min, ring_max = m.section("ring_hash", _parse_ring_hash, (ring_min, ring_max))
    elif lb is not None:
        m.forbid("ring_hash", f"'ring_hash' settings are only allowed with lb: ring_hash "
                 f"(this cluster uses {lb})")
    table_size = DEFAULT_MAGLEV_TABLE_SIZE
    if lb == "maglev":
        table_size = m.section("maglev", _parse_maglev, table_size)
    elif lb is not None:
        m.forbid("maglev", f"'maglev' settings are only allowed with lb: maglev "
                 f"(this cluster uses {lb})")
    discovery = _parse_discovery(ctx, path, m)
    if odst:
        endpoints = ()
    elif discovery.type == "eds":
        m.forbid("endpoints", "an eds cluster takes its endpoints from eds_config, not from "
                 "'endpoints'")
        endpoints = ()
    else:
        endpoints = m.section("endpoints", lambda c, p, v: _list(
            c, p, v, _parse_endpoint, min_items=1, what="endpoints")) or ()
        discovery = _discovery_type_from_endpoints(ctx, path, m, discovery, endpoints)
    seen: dict[tuple[str, int], int] = {}
    for i, ep in enumerate(endpoints):
        key = (ep.address, ep.port)
        if None in key:
            continue
        if key in seen:
            ctx.error(path + ("endpoints", i), f"duplicate endpoint {ep.address}:{ep.port} "
                      f"(same as endpoints[{seen[key]}]); use weight instead")
        seen.setdefault(key, i)
    if lb == "maglev" and table_size is not None and len(endpoints) > table_size:
        ctx.error(path + ("maglev", "table_size"), f"table_size {table_size} is smaller than "
                  f"the number of endpoints ({len(endpoints)})")
    return ClusterConfig(
        name=m.get("name", _name),
        lb=lb,
        hash_policy=hash_policy,
        ring_min=ring_min,
        ring_max=ring_max,
        maglev_table_size=table_size,
        connect_timeout=m.get("connect_timeout", _duration(positive=True),
                              DEFAULT_CONNECT_TIMEOUT),
        idle_timeout=m.get("idle_timeout", _duration(), DEFAULT_CLUSTER_IDLE_TIMEOUT),
        per_connection_buffer_limit=m.get("per_connection_buffer_limit", _buffer_size,
                                          DEFAULT_BUFFER_LIMIT),
        max_requests_per_connection=m.get("max_requests_per_connection",
                                          _int(0, (1 << 32) - 1), 0),
        endpoints=endpoints,
        protocol=m.get("protocol", _enum(UPSTREAM_PROTOCOLS), "http1"),
        health_checks=m.section("health_checks", _parse_health_checks, ()) or (),
        healthy_panic_threshold=m.section("common_lb_config", _parse_common_lb,
                                          DEFAULT_HEALTHY_PANIC_THRESHOLD),
        outlier_detection=m.section("outlier_detection", _parse_outlier_detection, None),
        tls=_cluster_tls(ctx, path, m),
        circuit_breakers=m.section("circuit_breakers", _parse_circuit_breakers, ()) or (),
        discovery=discovery,
        original_dst=_parse_original_dst(ctx, path, m) if odst else None,
    )


def _parse_original_dst(ctx: _Ctx, path: Path, m: _Map) -> OriginalDstConfig:
    lbc = m.data.get("original_dst_lb_config")
    use, header = False, "x-envoy-original-dst-host"
    if lbc is not None:
        lm = _Map(ctx, path + ("original_dst_lb_config",), lbc, _ODST_LB_KEYS,
                  "original_dst_lb_config")
        use = lm.get("use_http_header", _bool, False)
        header = lm.get("http_header_name", _header_name, header)
    return OriginalDstConfig(
        cleanup_interval=m.get("cleanup_interval", _duration(positive=True),
                               DEFAULT_ORIGINAL_DST_CLEANUP_INTERVAL),
        use_http_header=bool(use), http_header_name=header or "x-envoy-original-dst-host")


def _parse_circuit_breakers(ctx: _Ctx, path: Path, value: Any) -> tuple[ThresholdsConfig, ...]:
    """Envoy's CircuitBreakers: ``{thresholds: [...]}``, one entry per
    RoutingPriority at most (Envoy would silently use the first of two)."""
    m = _Map(ctx, path, value, _CB_KEYS, "circuit_breakers settings")
    items = m.section("thresholds", lambda c, p, v: _list(
        c, p, v, _parse_thresholds, min_items=0, what="thresholds"), ()) or ()
    seen: dict[str, int] = {}
    for i, t in enumerate(items):
        if t.priority in seen:
            ctx.error(path + ("thresholds", i, "priority"),
                      f"priority {t.priority!r} is given twice (also thresholds[{seen[t.priority]}]);"
                      " give each priority one entry", key=True)
        seen.setdefault(t.priority, i)
    return items


def _parse_thresholds(ctx: _Ctx, path: Path, value: Any) -> ThresholdsConfig:
    m = _Map(ctx, path, value, _THRESHOLD_KEYS, "circuit-breaker thresholds")
    return ThresholdsConfig(
        priority=m.get("priority", _enum(ROUTING_PRIORITIES), "default"),
        max_connections=m.get("max_connections", _int(0, _UINT32), DEFAULT_CB_MAX_CONNECTIONS),
        max_pending_requests=m.get("max_pending_requests", _int(0, _UINT32),
                                   DEFAULT_CB_MAX_PENDING_REQUESTS),
        max_requests=m.get("max_requests", _int(0, _UINT32), DEFAULT_CB_MAX_REQUESTS),
        max_retries=m.get("max_retries", _int(0, _UINT32), DEFAULT_CB_MAX_RETRIES),
        max_connection_pools=m.get("max_connection_pools", _int(0, _UINT32), None),
        track_remaining=m.get("track_remaining", _bool, False),
        retry_budget=m.section("retry_budget", _parse_retry_budget, None),
    )


def _parse_retry_budget(ctx: _Ctx, path: Path, value: Any) -> RetryBudgetConfig:
    # Envoy's RetryBudget: budget_percent is a type.v3.Percent ({value: N}).
    m = _Map(ctx, path, value, _RETRY_BUDGET_KEYS, "a retry budget")
    return RetryBudgetConfig(
        budget_percent=m.section("budget_percent", _parse_percent, DEFAULT_RETRY_BUDGET_PERCENT),
        min_retry_concurrency=m.get("min_retry_concurrency", _int(0, _UINT32),
                                    DEFAULT_MIN_RETRY_CONCURRENCY),
    )


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return False


def _parse_discovery(ctx: _Ctx, path: Path, m: _Map) -> DiscoveryConfig:
    # Envoy's Cluster.type and its DNS/EDS settings. The type may still be
    # decided by the endpoints (_discovery_type_from_endpoints).
    typ = m.get("type", _enum(DISCOVERY_TYPES), None)
    fail = m.section("dns_failure_refresh_rate", _parse_backoff, (None, None)) or (None, None)
    resolvers = m.section("dns_resolution_config", _parse_dns_resolution, ()) or ()
    eds_source = m.section("eds_config", _parse_eds_config, None)
    eds_path = eds_source if isinstance(eds_source, str) else None
    etcd = eds_source if isinstance(eds_source, EtcdSourceConfig) else None
    ads = eds_source is True
    if typ == "eds" and eds_source is None and "eds_config" not in m:
        ctx.error(path + ("eds_config",), "an eds cluster needs eds_config "
                  "({path_config_source: {path: <file>}} or {etcd: {endpoints, prefix}})")
    elif typ not in (None, "eds") and "eds_config" in m:
        ctx.error(path + ("eds_config",), "eds_config is only allowed with type: eds")
    if typ in ("static", "eds", "original_dst"):
        for key in _DNS_KEYS:
            m.forbid(key, f"{key!r} is only allowed with type: strict_dns or logical_dns")
    return DiscoveryConfig(
        type=typ or "",
        dns_refresh_rate=m.get("dns_refresh_rate", _duration(positive=True),
                               DEFAULT_DNS_REFRESH_RATE),
        dns_failure_base_interval=fail[0],
        dns_failure_max_interval=fail[1],
        respect_dns_ttl=m.get("respect_dns_ttl", _bool, False),
        dns_lookup_family=m.get("dns_lookup_family", _enum(DNS_LOOKUP_FAMILIES), "AUTO"),
        dns_resolvers=tuple(resolvers),
        eds_path=eds_path,
        etcd=etcd,
        ads=ads,
    )


def _discovery_type_from_endpoints(ctx: _Ctx, path: Path, m: _Map, d: DiscoveryConfig,
                                   endpoints: Sequence[EndpointConfig]) -> DiscoveryConfig:
    # Without a type, the endpoints decide: IP addresses only is static, a
    # hostname is strict_dns (fastmesh's default; Envoy's is static, which
    # refuses hostnames). An explicit static type refuses hostnames, as Envoy.
    names = [i for i, ep in enumerate(endpoints) if ep.address is not None
             and not _is_ip(ep.address)]
    if d.type == "":
        if names:
            return dataclasses.replace(d, type="strict_dns")
        for key in _DNS_KEYS:
            m.forbid(key, f"{key!r} needs type: strict_dns or logical_dns (these endpoints are "
                     "IP addresses: the cluster is static)")
        return dataclasses.replace(d, type="static")
    if d.type == "logical_dns" and len(endpoints) != 1:
        ctx.error(path + ("endpoints",), f"a logical_dns cluster has exactly one endpoint "
                  f"(its name), not {len(endpoints)}; use strict_dns for several")
    if d.type == "static" and names:
        ctx.error(path + ("endpoints", names[0], "address"),
                  f"a static cluster takes IP addresses, not {endpoints[names[0]].address!r}; "
                  "use type: strict_dns (or logical_dns) to resolve hostnames")
    return d


def _parse_backoff(ctx: _Ctx, path: Path, value: Any) -> tuple[float | None, float | None]:
    # Envoy's RefreshRate: {base_interval, max_interval}.
    m = _Map(ctx, path, value, ("base_interval", "max_interval"), "a refresh rate")
    base = m.get("base_interval", _duration(positive=True))
    cap = m.get("max_interval", _duration(positive=True), None)
    if base is not None and cap is not None and cap < base:
        ctx.error(path + ("max_interval",), "max_interval must be at least base_interval")
    return base, cap


def _parse_dns_resolution(ctx: _Ctx, path: Path, value: Any) -> tuple[DnsResolverConfig, ...]:
    # Envoy's DnsResolutionConfig: {resolvers: [address]}; fastmesh's address shape.
    m = _Map(ctx, path, value, ("resolvers",), "dns_resolution_config")
    return m.section("resolvers", lambda c, p, v: _list(
        c, p, v, _parse_resolver, min_items=1, what="resolvers")) or ()


def _parse_resolver(ctx: _Ctx, path: Path, value: Any) -> DnsResolverConfig:
    m = _Map(ctx, path, value, ("address", "port"), "a DNS resolver ({address, port})")
    addr = m.get("address", _str)
    if addr is not None and not _is_ip(_strip_brackets(addr)):
        ctx.error(path + ("address",), f"a resolver is an IP address, not {addr!r}")
    return DnsResolverConfig(address=_strip_brackets(addr or ""),
                             port=m.get("port", _int(1, 65535), 53))


def _parse_eds_config(ctx: _Ctx, path: Path, value: Any
                      ) -> str | EtcdSourceConfig | bool | None:
    # Envoy's ConfigSource, file form: {path_config_source: {path}} or the
    # older {path: ...}; or fastmesh's etcd source ({etcd: {...}}, no Envoy
    # equivalent); or {ads: {}}: the xDS client's ADS stream publishes the
    # endpoints (control/xds). The file or etcd itself is read when the
    # proxy runs.
    m = _Map(ctx, path, value, ("path_config_source", "path", "etcd", "ads",
                                "resource_api_version", "initial_fetch_timeout"),
             "eds_config (a ConfigSource)")
    if "ads" in m:
        for other in ("path_config_source", "path", "etcd"):
            m.forbid(other, f"give either ads or {other}, not both")
        return True
    if "etcd" in m:
        for other in ("path_config_source", "path"):
            m.forbid(other, f"give either etcd or {other}, not both")
        return m.section("etcd", _parse_etcd_source, None)
    if "path_config_source" in m:
        m.forbid("path", "give either path_config_source or path, not both")
        return m.section("path_config_source", lambda c, p, v: _Map(
            c, p, v, ("path", "watched_directory"), "path_config_source").get(
            "path", _nonempty_str))
    return m.get("path", _nonempty_str)


def _etcd_url(value: Any) -> str:
    # http://host:port only: aetcd speaks plaintext gRPC (TLS to etcd is not
    # supported yet, so refuse it rather than send in clear what was meant
    # to be encrypted).
    text = _nonempty_str(value)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise _Bad(f"{text!r} is not an etcd URL; expected http://host:port")
    if scheme == "https":
        raise _Bad("https (TLS to etcd) is not supported yet; use http://host:port")
    host, colon, port = rest.rstrip("/").rpartition(":")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535 \
            or "/" in host:
        raise _Bad(f"{text!r}: expected http://host:port (e.g. http://127.0.0.1:2379)")
    return f"http://{host}:{int(port)}"


def _parse_etcd_url(ctx: _Ctx, path: Path, value: Any) -> str:
    try:
        return _etcd_url(value)
    except _Bad as exc:
        ctx.error(path, exc.reason)
        return ""


def _parse_etcd_source(ctx: _Ctx, path: Path, value: Any) -> EtcdSourceConfig:
    m = _Map(ctx, path, value, ("endpoints", "prefix", "dial_timeout", "retry_backoff"),
             "an etcd source ({endpoints: [http://host:port], prefix: /key/prefix/})")
    endpoints = m.section("endpoints", lambda c, p, v: _list(
        c, p, v, _parse_etcd_url, min_items=1, what="etcd URLs"))
    base, cap = m.section("retry_backoff", _parse_backoff, (None, None)) or (None, None)
    # Envoy's BackoffStrategy: max_interval defaults to 10 x base_interval;
    # neither given: Envoy's xDS stream retry (500 ms to 30 s).
    if base is None:
        base, cap = DEFAULT_ETCD_BACKOFF_BASE, cap or DEFAULT_ETCD_BACKOFF_MAX
    cap = cap or base * 10                            # _parse_backoff checked cap >= base
    return EtcdSourceConfig(
        endpoints=tuple(endpoints or ()),
        prefix=m.get("prefix", _nonempty_str) or "",
        dial_timeout=m.get("dial_timeout", _duration(positive=True), DEFAULT_ETCD_DIAL_TIMEOUT),
        retry_base_interval=base, retry_max_interval=cap)


def _parse_outlier_detection(ctx: _Ctx, path: Path, value: Any) -> OutlierDetectionConfig | None:
    """Envoy's Cluster.outlier_detection: every field optional, Envoy's
    defaults (OutlierDetectionConfig); ``{}`` turns detection on with them."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        for key in value:
            if key in _OD_ENVOY:
                ctx.error(path + (key,), f"{key!r} is not supported yet", key=True)
        value = {k: v for k, v in value.items() if k not in _OD_ENVOY}
    m = _Map(ctx, path, value, _OD_KEYS, "outlier_detection")
    defaults = OutlierDetectionConfig()
    kw: dict[str, Any] = {}
    for key in _OD_COUNTS:
        kw[key] = m.get(key, _int(0, (1 << 32) - 1), getattr(defaults, key))
    for key in _OD_PERCENTS:
        kw[key] = m.get(key, _int(0, 100), getattr(defaults, key))
    for key in _OD_DURATIONS:
        kw[key] = m.get(key, _duration(positive=True), getattr(defaults, key))
    for key in _OD_BOOLS:
        kw[key] = m.get(key, _bool, getattr(defaults, key))
    kw["max_ejection_time_jitter"] = m.get("max_ejection_time_jitter", _duration(), 0.0)
    if any(v is None for v in kw.values()):
        return None
    base, top = kw["base_ejection_time"], kw["max_ejection_time"]
    if base > top:
        if "max_ejection_time" in m:
            ctx.error(path + ("max_ejection_time",),
                      f"max_ejection_time ({top:g}s) is shorter than base_ejection_time "
                      f"({base:g}s)")
            return None
        # Envoy: without max_ejection_time, the larger of 300s and the base.
        kw["max_ejection_time"] = base
    return OutlierDetectionConfig(**kw)
def _cluster_tls(ctx: _Ctx, path: Path, m: _Map) -> Any:
    from fastmesh.control import tls
    http2 = m.data.get("protocol") == "http2"
    return m.section("tls", lambda c, p, v: tls.parse_upstream(c, p, v, http2=http2), None)


def _parse_common_lb(ctx: _Ctx, path: Path, value: Any) -> float:
    # Envoy's Cluster.CommonLbConfig; only healthy_panic_threshold so far.
    m = _Map(ctx, path, value, ("healthy_panic_threshold",), "common_lb_config")
    return m.section("healthy_panic_threshold", _parse_percent, DEFAULT_HEALTHY_PANIC_THRESHOLD)


def _parse_percent(ctx: _Ctx, path: Path, value: Any) -> float:
    # Envoy's type.v3.Percent: {value: 0..100}.
    m = _Map(ctx, path, value, ("value",), "a percent ({value: 0-100})")
    return m.get("value", _number(0.0, 100.0))


def _number(lo: float, hi: float) -> Callable[[Any], float]:
    def conv(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise _Bad(f"expected a number, got {_kind(value)}")
        if not lo <= value <= hi:
            raise _Bad(f"{value} is out of range; must be between {lo:g} and {hi:g}")
        return float(value)
    return conv


def _parse_health_checks(ctx: _Ctx, path: Path, value: Any) -> tuple[HealthCheckConfig, ...]:
    checks = _list(ctx, path, value, _parse_health_check, min_items=0, what="health checks")
    if len(checks) > 1:
        # Envoy too refuses several (before named checkers): which one rules?
        ctx.error(path + (1,), "only one health check per cluster is supported")
    return checks


def _parse_health_check(ctx: _Ctx, path: Path, value: Any) -> HealthCheckConfig:
    if isinstance(value, Mapping):
        for key in value:
            if key in _HEALTH_CHECK_ENVOY:
                ctx.error(path + (key,), f"{key!r} is not supported yet", key=True)
        value = {k: v for k, v in value.items() if k not in _HEALTH_CHECK_ENVOY}
    m = _Map(ctx, path, value, _HEALTH_CHECK_KEYS, "a health check")
    kind = m.one_of(HC_KINDS, "health check")
    http = tcp = grpc = None
    if kind == "http_health_check":
        http = m.section(kind, _parse_http_hc)
    elif kind == "tcp_health_check":
        tcp = m.section(kind, _parse_tcp_hc)
    elif kind == "grpc_health_check":
        grpc = m.section(kind, _parse_grpc_hc)
    return HealthCheckConfig(
        timeout=m.get("timeout", _duration(positive=True)),
        interval=m.get("interval", _duration(positive=True)),
        unhealthy_threshold=m.get("unhealthy_threshold", _int(1, 1 << 31)),
        healthy_threshold=m.get("healthy_threshold", _int(1, 1 << 31)),
        kind=kind,
        interval_jitter=m.get("interval_jitter", _duration(), 0.0),
        no_traffic_interval=m.get("no_traffic_interval", _duration(positive=True),
                                  DEFAULT_HC_NO_TRAFFIC_INTERVAL),
        http=http, tcp=tcp, grpc=grpc)


def _parse_http_hc(ctx: _Ctx, path: Path, value: Any) -> HttpHealthCheckConfig:
    m = _Map(ctx, path, value, _HTTP_HC_KEYS, "an http_health_check")
    statuses = m.section("expected_statuses", lambda c, p, v: _list(
        c, p, v, _parse_status_range, min_items=1, what="status ranges"), None)
    headers = m.section("request_headers_to_add", lambda c, p, v: _list(
        c, p, v, _parse_header_value_option, min_items=0, what="headers"), ())
    return HttpHealthCheckConfig(
        path=m.get("path", _path_value),
        host=m.get("host", _nonempty_str, None),
        expected_statuses=statuses or DEFAULT_HC_EXPECTED_STATUSES,
        request_headers_to_add=tuple(h for h in headers or () if h is not None))


def _parse_status_range(ctx: _Ctx, path: Path, value: Any) -> tuple[int, int]:
    # Envoy's type.v3.Int64Range: start inclusive, end exclusive, within [100, 600).
    m = _Map(ctx, path, value, ("start", "end"), "a status range ({start, end})")
    start = m.get("start", _int(100, 599))
    end = m.get("end", _int(101, 600))
    if start is not None and end is not None and start >= end:
        ctx.error(path + ("end",), f"end {end} must be greater than start {start} "
                  "(the range is [start, end): end is exclusive)")
    return (start, end)


def _parse_header_value_option(ctx: _Ctx, path: Path, value: Any) -> tuple[str, str] | None:
    # Envoy's HeaderValueOption: {header: {key, value}}.
    m = _Map(ctx, path, value, ("header",), "a header to add ({header: {key, value}})")
    return m.section("header", _parse_header_value, None)


def _parse_header_value(ctx: _Ctx, path: Path, value: Any) -> tuple[str, str] | None:
    m = _Map(ctx, path, value, ("key", "value"), "a header ({key, value})")
    key, val = m.get("key", _header_name), m.get("value", _str, "")
    if val is not None and ("\r" in val or "\n" in val or "\0" in val):
        ctx.error(path + ("value",), "header values must not contain CR, LF or NUL")
        return None
    return None if key is None or val is None else (key, val)


def _hex_payload(ctx: _Ctx, path: Path, value: Any) -> bytes:
    # Envoy's HealthCheck.Payload: {text: "hex"} (binary is not supported).
    m = _Map(ctx, path, value, ("text",), "a payload ({text: HEX})")
    text = m.get("text", _nonempty_str)
    if text is None:
        return b""
    try:
        return bytes.fromhex(text)
    except ValueError:
        ctx.error(path + ("text",), f"{text!r} is not hex (two hex digits per byte)")
        return b""


def _parse_tcp_hc(ctx: _Ctx, path: Path, value: Any) -> TcpHealthCheckConfig:
    m = _Map(ctx, path, value or {}, _TCP_HC_KEYS, "a tcp_health_check")
    send = m.section("send", _hex_payload, b"")
    receive = m.section("receive", lambda c, p, v: _list(
        c, p, v, _hex_payload, min_items=0, what="payloads"), ())
    return TcpHealthCheckConfig(send=send or b"", receive=tuple(receive or ()))


def _parse_grpc_hc(ctx: _Ctx, path: Path, value: Any) -> GrpcHealthCheckConfig:
    m = _Map(ctx, path, value or {}, _GRPC_HC_KEYS, "a grpc_health_check")
    return GrpcHealthCheckConfig(service_name=m.get("service_name", _str, ""),
                                 authority=m.get("authority", _nonempty_str, None))


def _parse_hash_policy(ctx: _Ctx, path: Path, value: Any) -> HashPolicyConfig:
    m = _Map(ctx, path, value, ("header", "source_ip"), "a hash policy")
    kind = m.one_of(("header", "source_ip"), "hash_policy")
    if kind == "header":
        return HashPolicyConfig(header=m.get("header", _header_name), source_ip=False)
    if kind == "source_ip":
        if m.get("source_ip", _bool) is False:
            ctx.error(path + ("source_ip",), "source_ip: false hashes nothing; use "
                      "source_ip: true or header: NAME")
        return HashPolicyConfig(header=None, source_ip=True)
    return HashPolicyConfig(header=None, source_ip=True)


def _parse_ring_hash(ctx: _Ctx, path: Path, value: Any) -> tuple[int, int]:
    m = _Map(ctx, path, value, ("minimum_ring_size", "maximum_ring_size"), "ring_hash settings")
    lo = m.get("minimum_ring_size", _int(1, DEFAULT_RING_MAX), DEFAULT_RING_MIN)
    hi = m.get("maximum_ring_size", _int(1, DEFAULT_RING_MAX), DEFAULT_RING_MAX)
    if lo is not None and hi is not None and lo > hi:
        ctx.error(path + ("minimum_ring_size",),
                  f"minimum_ring_size {lo} is larger than maximum_ring_size {hi}")
    return lo, hi


def _parse_maglev(ctx: _Ctx, path: Path, value: Any) -> int:
    m = _Map(ctx, path, value, ("table_size",), "maglev settings")
    size = m.get("table_size", _int(2, MAX_MAGLEV_TABLE_SIZE), DEFAULT_MAGLEV_TABLE_SIZE)
    if size is not None and not _is_prime(size):
        ctx.error(path + ("table_size",), f"table_size {size} is not prime "
                  "(Maglev needs a prime table size, e.g. 65537 or 5000011)")
    return size


def _parse_endpoint(ctx: _Ctx, path: Path, value: Any) -> EndpointConfig:
    m = _Map(ctx, path, value, _ENDPOINT_KEYS, "an endpoint")
    return EndpointConfig(address=m.get("address", _endpoint_address),
                          port=m.get("port", _int(1, 65535)),
                          weight=m.get("weight", _int(1, 128), 1))


# ------------------------------------------------------------------- cross-checks


def _check_unique(ctx: _Ctx, path: Path, items: Sequence[Any], what: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        name = getattr(item, "name", None)
        if name is None:
            continue
        if name in seen:
            ctx.error(path + (i, "name"), f"duplicate {what} name {name!r} "
                      f"(first defined at index {seen[name]})")
        else:
            seen[name] = i


def _check_domains(ctx: _Ctx, path: Path, vhosts: Sequence[VirtualHostConfig]) -> None:
    seen: dict[str, str] = {}
    for i, vh in enumerate(vhosts):
        for j, domain in enumerate(vh.domains):
            if domain is None:
                continue
            if domain in seen:
                ctx.error(path + (i, "domains", j), f"duplicate domain {domain!r} in this "
                          f"listener (already in virtual host {seen[domain]!r})")
            else:
                seen[domain] = vh.name


def _check_cluster_refs(ctx: _Ctx, clusters: Sequence[ClusterConfig]) -> None:
    names = [c.name for c in clusters if c.name is not None]
    if len(names) < len(clusters):
        return  # a cluster name is invalid (already reported); references would only cascade
    for path, name in ctx.cluster_refs:
        if name not in names:
            known = f"defined clusters: {', '.join(names)}" if names else "no clusters are defined"
            ctx.error(path, f"unknown cluster {name!r}; {known}{_suggest(name, names)}")


def _address_overlap(a: str, b: str) -> bool:
    """True if binding both addresses on one port would clash (wildcards cover their family)."""
    def expand(addr: str) -> set[str]:
        return {"127.0.0.1", "::1"} if addr == "localhost" else {addr}
    for x in expand(a):
        for y in expand(b):
            if x == y:
                return True
            ix, iy = ipaddress.ip_address(x), ipaddress.ip_address(y)
            if ix.version == iy.version and (ix.is_unspecified or iy.is_unspecified):
                return True
    return False


def _check_addresses(ctx: _Ctx, listeners: Sequence[ListenerConfig],
                     admin: AdminConfig | None) -> None:
    bound: list[tuple[int, ListenerConfig]] = []
    for i, lst in enumerate(listeners):
        if lst.address is None or lst.port is None or lst.port == 0:
            continue
        for j, other in bound:
            if other.port == lst.port and _address_overlap(other.address, lst.address):
                ctx.error(("listeners", i, "port"), f"listener address {lst.address}:{lst.port} "
                          f"is already used by listener {other.name!r} "
                          f"({other.address}:{other.port})")
                break
        bound.append((i, lst))
    if admin is None or admin.port is None or admin.address is None or admin.port == 0:
        return
    for _, lst in bound:
        if lst.port == admin.port and _address_overlap(lst.address, admin.address):
            ctx.error(("admin", "port"), f"admin address {admin.address}:{admin.port} is "
                      f"already used by listener {lst.name!r} ({lst.address}:{lst.port})")
            break
