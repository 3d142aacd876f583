"""The config schema: frozen dataclasses, their defaults and limits, the enums.

This is the shape a validated config takes: a tree of frozen dataclasses
holding tuples (never lists), so one ``Config`` can be shared by every
worker without copying or locking. The constants here are the defaults
and limits docs/config.md lists. Nothing here reads YAML or checks values;
``validation`` does that and ``dump`` writes a ``Config`` back out.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:   # the TLS dataclasses live with their parser (control/tls.py)
    from fastmesh.control.tls import ClientCertDetails, DownstreamTlsConfig, UpstreamTlsConfig

# "auto": the first bytes decide between http and tcp (docs/interception.md)
PROTOCOLS: tuple[str, ...] = ("http", "tcp", "auto")
LB_POLICIES: tuple[str, ...] = ("round_robin", "least_request", "random", "ring_hash", "maglev")
UPSTREAM_PROTOCOLS: tuple[str, ...] = ("http1", "http2", "auto")
ROUTE_ACTIONS: tuple[str, ...] = ("cluster", "weighted_clusters", "direct_response")

# Defaults (seconds for durations, bytes for sizes). docs/config.md lists the same values.
DEFAULT_DRAIN_TIMEOUT = 10.0
# Under load a worker sleeps this long between event-loop polls instead of
# being woken by every arriving packet (docs/design.md, "Batching under load").
DEFAULT_BATCH_WINDOW = 0.0002
MAX_BATCH_WINDOW = 0.01
DEFAULT_ADMIN_ADDRESS = "127.0.0.1"
DEFAULT_ADMIN_PORT = 9901
DEFAULT_LISTENER_ADDRESS = "0.0.0.0"
DEFAULT_LISTENER_IDLE_TIMEOUT = 3600.0
DEFAULT_BUFFER_LIMIT = 1 << 20
DEFAULT_REQUEST_HEADERS_TIMEOUT = 10.0
# A connection that sends nothing this long after accept is closed (fastmesh's
# key: Envoy's timeouts all start later, at the first byte or a stream).
DEFAULT_FIRST_BYTE_TIMEOUT = 10.0
# Overload manager: act once this fraction of RLIMIT_NOFILE is in use.
DEFAULT_FD_THRESHOLD = 0.95
DEFAULT_STREAM_IDLE_TIMEOUT = 300.0
DEFAULT_MAX_REQUEST_HEADERS_KB = 60
DEFAULT_MAX_HEADERS_COUNT = 100
DEFAULT_ROUTE_TIMEOUT = 15.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_CLUSTER_IDLE_TIMEOUT = 60.0
DEFAULT_RING_MIN = 1024
DEFAULT_RING_MAX = 8388608          # Envoy's default and upper bound (8M entries)
DEFAULT_MAGLEV_TABLE_SIZE = 65537   # Envoy's default; a prime
DEFAULT_H2_MAX_CONCURRENT_STREAMS = 100
DEFAULT_H2_INITIAL_STREAM_WINDOW = 65536
DEFAULT_H2_INITIAL_CONNECTION_WINDOW = 1 << 20
H2_MAX_WINDOW = (1 << 31) - 1
MAX_MAGLEV_TABLE_SIZE = 5000011     # Envoy's upper bound; a prime
MAX_BUFFER_LIMIT = 1 << 30
MAX_ROUTE_WEIGHT = 1_000_000
MAX_TOTAL_WEIGHT = (1 << 32) - 1    # the data plane sums weights in an unsigned int


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable mapping: free-form settings (a filter's ``config``) in a Config.

    Values are frozen all the way down (lists become tuples, mappings
    FrozenMaps), so the Config holding one stays immutable, hashable and
    comparable. Key order is kept (a dump writes keys as they were given) but
    does not count in comparisons, as for dicts. ``thaw()`` gives back plain
    dicts and lists.
    """

    __slots__ = ("_data", "_hash")
    _data: dict[str, Any]
    _hash: int | None

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        object.__setattr__(self, "_data", {k: freeze(v) for k, v in dict(data).items()})
        object.__setattr__(self, "_hash", None)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        return isinstance(other, Mapping) and self._data == dict(other.items())

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(frozenset(self._data.items())))
        assert self._hash is not None
        return self._hash

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"FrozenMap is read-only (cannot set {name!r})")

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, Any]]]:
        return (FrozenMap, (self._data,))

    def thaw(self) -> dict[str, Any]:
        """A plain, mutable copy: dicts and lists all the way down."""
        return {key: thaw(value) for key, value in self._data.items()}


def freeze(value: Any) -> Any:
    """``value`` with every mapping made a FrozenMap and every list a tuple."""
    if isinstance(value, Mapping):
        return value if isinstance(value, FrozenMap) else FrozenMap(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of ``freeze``: FrozenMaps become dicts and tuples lists."""
    if isinstance(value, FrozenMap):
        return value.thaw()
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class OverloadConfig:
    """Worker-wide connection limits (docs/config.md, overload_manager)."""

    global_downstream_max_connections: int = 0     # per worker; 0 = no limit
    file_descriptor_threshold: float = DEFAULT_FD_THRESHOLD   # of RLIMIT_NOFILE; 0 = off


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """admin.metrics: how /stats/prometheus names things (docs/observability.md)."""

    naming: str = "fastmesh"             # "fastmesh" | "envoy" (drop-in Envoy dashboards)
    istio: bool = False                  # also Istio's standard metrics (istio_requests_total...)
    workload: str = ""                   # source_workload ("": $ISTIO_META_WORKLOAD_NAME or the host name)
    namespace: str = ""                  # source_workload_namespace ("": $POD_NAMESPACE or "default")
    reporter: str = "source"             # Istio's reporter label: source | destination


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin listener (stats, /config_dump). Plain HTTP; keep it on loopback."""

    address: str = DEFAULT_ADMIN_ADDRESS
    port: int = DEFAULT_ADMIN_PORT
    # The admin shows the whole topology (/config_dump) and can drain the
    # proxy: a non-loopback address is refused unless this says it is meant.
    allow_remote: bool = False
    # Even with allow_remote, the POST endpoints (drain, reset, log levels,
    # health check failing) answer loopback clients only unless this is true.
    allow_remote_changes: bool = False
    metrics: MetricsConfig = MetricsConfig()


@dataclass(frozen=True, slots=True)
class HeaderMatchConfig:
    """One request-header condition of a route. Exactly one of exact/prefix/regex/present is set."""

    name: str                   # lowercased
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None    # full match of the header value
    present: bool | None = None
    invert: bool = False


@dataclass(frozen=True, slots=True)
class RouteMatchConfig:
    """The path condition (exactly one of prefix/path/regex) plus header conditions."""

    prefix: str | None = None
    path: str | None = None
    regex: str | None = None    # full match of the path, query string excluded
    # prefix is compared with path + query string (as Envoy), path and regex with the path.
    # case_sensitive applies to prefix and path only (regex: use "(?i)").
    case_sensitive: bool = True
    headers: tuple[HeaderMatchConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class WeightedClusterConfig:
    """One target of a ``weighted_clusters`` action."""

    name: str
    weight: int


@dataclass(frozen=True, slots=True)
class DirectResponseConfig:
    """A response the proxy sends itself, without an upstream."""

    status: int
    body: str = ""


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One route. ``action`` says which of cluster/weighted_clusters/direct_response is set."""

    name: str | None
    match: RouteMatchConfig
    action: str                 # "cluster" | "weighted_clusters" | "direct_response"
    cluster: str | None = None
    weighted_clusters: tuple[WeightedClusterConfig, ...] = ()
    direct_response: DirectResponseConfig | None = None
    timeout: float = DEFAULT_ROUTE_TIMEOUT   # seconds, 0 = none (always 0 for direct_response)
    retry_policy: RetryPolicyConfig | None = None
    priority: str = "default"   # Envoy's RoutingPriority: which circuit-breaker thresholds count it
    idle_timeout: float | None = None        # None: the listener's stream_idle_timeout; 0 = off
    max_stream_duration: MaxStreamDurationConfig | None = None
    # filter name -> that built-in filter's settings for this route (raw, validated)
    typed_per_filter_config: FrozenMap = FrozenMap()
    # Envoy's route per_request_buffer_limit_bytes: how much of a request
    # body is kept for a retry (None: the listener's
    # per_connection_buffer_limit).
    per_request_buffer_limit_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class MaxStreamDurationConfig:
    """A route's max_stream_duration (Envoy's RouteAction.MaxStreamDuration;
    seconds, None = not set)."""

    max_stream_duration: float | None = None          # 0 = none (overrides the listener's)
    grpc_timeout_header_max: float | None = None      # set: grpc-timeout is honoured; 0 = no cap
    grpc_timeout_header_offset: float | None = None


# Envoy's retry_on conditions fastmesh honours (the rest of Envoy's list is
# refused by name, not ignored). The last five are Envoy's gRPC conditions
# (retry_on takes them too), read from grpc-status in a response's headers.
RETRY_ON = ("connect-failure", "refused-stream", "reset", "5xx", "gateway-error",
            "retriable-4xx", "retriable-status-codes", "cancelled", "deadline-exceeded",
            "resource-exhausted", "unavailable", "internal")
# Envoy's retry_back_off default: base_interval 25ms, max_interval 10 x base.
DEFAULT_RETRY_BASE_INTERVAL = 0.025


@dataclass(frozen=True, slots=True)
class RetryPolicyConfig:
    """A route's retry_policy (Envoy's names and meaning): which failures of
    an attempt are tried again, at another endpoint, and how many times."""

    retry_on: tuple[str, ...]
    num_retries: int = 1
    per_try_timeout: float = 0.0            # seconds, 0 = none (the route timeout only)
    base_interval: float = DEFAULT_RETRY_BASE_INTERVAL   # retry_back_off, seconds
    max_interval: float = 0.0               # 0 = 10 x base_interval (Envoy's default)
    retriable_status_codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualHostConfig:
    """A set of domains (matched against Host) and their routes, first match wins."""

    name: str
    domains: tuple[str, ...]    # lowercased
    routes: tuple[RouteConfig, ...]
    typed_per_filter_config: FrozenMap = FrozenMap()   # as RouteConfig's; routes override it
    # Envoy's: x-envoy-attempt-count (1 for the first try) on requests upstream
    include_request_attempt_count: bool = False


@dataclass(frozen=True, slots=True)
class Http2Config:
    """HTTP/2 settings a listener announces to its h2 clients (Envoy's
    http2_protocol_options names)."""

    max_concurrent_streams: int = DEFAULT_H2_MAX_CONCURRENT_STREAMS
    initial_stream_window_size: int = DEFAULT_H2_INITIAL_STREAM_WINDOW
    initial_connection_window_size: int = DEFAULT_H2_INITIAL_CONNECTION_WINDOW


@dataclass(frozen=True, slots=True)
class HttpFilterConfig:
    """One user filter in an http listener's chain, named by its import path.

    ``import_path`` is ``"package.module:Attr"``; it is checked for form only,
    never imported while validating. ``config`` is the filter's own settings
    (YAML scalars, lists and mappings), always stored as a FrozenMap; a plain
    dict given to the constructor is frozen.
    """

    name: str
    import_path: str | None     # None: a built-in filter (control/builtin_filters.py) by name
    config: Mapping[str, Any] = FrozenMap()   # built-ins: their typed_config

    def __post_init__(self) -> None:
        if not isinstance(self.config, FrozenMap):
            object.__setattr__(self, "config", FrozenMap(self.config))


@dataclass(frozen=True, slots=True)
class NetworkFilterConfig:
    """One network filter of a tcp listener by its Envoy name (today
    envoy.filters.network.rbac), its settings as given in typed_config."""

    name: str
    config: Mapping[str, Any] = FrozenMap()


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """A listening socket. HTTP-only fields keep their defaults on tcp listeners."""

    name: str
    address: str
    port: int
    protocol: str               # "http" | "tcp"
    cluster: str | None         # tcp only
    idle_timeout: float
    per_connection_buffer_limit: int
    request_headers_timeout: float
    stream_idle_timeout: float
    max_request_headers_kb: int
    max_headers_count: int
    xff_append: bool
    generate_request_id: bool
    virtual_hosts: tuple[VirtualHostConfig, ...]   # http only; () for tcp
    http2: Http2Config = Http2Config()             # http only
    http_filters: tuple[HttpFilterConfig, ...] = ()  # http only, in chain order
    max_connections: int = 0                       # 0 = no limit
    first_byte_timeout: float = DEFAULT_FIRST_BYTE_TIMEOUT   # http only; 0 = off
    max_stream_duration: float = 0.0              # http only; 0 = none
    # http only: honour x-envoy-retry-on & co. from clients (Envoy honours
    # them only from internal callers); untrusted, they are stripped.
    trust_retry_headers: bool = False
    tls: DownstreamTlsConfig | None = None         # control/tls.py; None = plaintext
    tls_mode: str = "strict"                       # "permissive": TLS and plaintext on one port
    forward_client_cert_details: str = "SANITIZE"  # http only (x-forwarded-client-cert)
    set_current_client_cert_details: ClientCertDetails | None = None   # http only
    network_filters: tuple[NetworkFilterConfig, ...] = ()   # tcp only (control/rbac.py)
    # Transparent interception (docs/interception.md): read the original
    # destination and hand the connection to the listener for it; a
    # bind_to_port: false listener only takes such hand-offs.
    use_original_dst: bool = False
    bind_to_port: bool = True
    protocol_detection_timeout: float = 0.1        # protocol auto: then it is TCP
    tracing: Any = None                            # http only: control/tracing.TracingConfig



@dataclass(frozen=True, slots=True)
class HashPolicyConfig:
    """What ring_hash / maglev hash: a request header, or the client address."""

    header: str | None = None   # lowercased
    source_ip: bool = False


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """One upstream host. ``address`` is an IP literal or a hostname (resolved by the compile step)."""

    address: str
    port: int
    weight: int = 1


# Active health checking (Envoy's config.core.v3.HealthCheck names).
DEFAULT_HC_NO_TRAFFIC_INTERVAL = 60.0
DEFAULT_HC_EXPECTED_STATUSES: tuple[tuple[int, int], ...] = ((200, 201),)  # [start, end)
HC_KINDS: tuple[str, ...] = ("http_health_check", "tcp_health_check", "grpc_health_check")
DEFAULT_HEALTHY_PANIC_THRESHOLD = 50.0


@dataclass(frozen=True, slots=True)
class HttpHealthCheckConfig:
    """GET ``path`` with Host ``host`` (None: the cluster's name, as Envoy);
    healthy when the status is in one of ``expected_statuses``, half-open
    ``[start, end)`` ranges (Envoy's default: 200 only)."""

    path: str
    host: str | None = None
    expected_statuses: tuple[tuple[int, int], ...] = DEFAULT_HC_EXPECTED_STATUSES
    request_headers_to_add: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TcpHealthCheckConfig:
    """Connect; then send ``send`` (if any) and expect each ``receive`` block
    in order (Envoy's fuzzy match). Neither: a connect-only check."""

    send: bytes = b""
    receive: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class GrpcHealthCheckConfig:
    """grpc.health.v1.Health/Check for ``service_name`` ("" = the server as
    a whole); ``authority`` None means the cluster's name (Envoy)."""

    service_name: str = ""
    authority: str | None = None


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """One active health check of a cluster's endpoints (Envoy's HealthCheck).
    ``kind`` says which of ``http``/``tcp``/``grpc`` is set."""

    timeout: float
    interval: float
    unhealthy_threshold: int
    healthy_threshold: int
    kind: str                      # one of HC_KINDS
    interval_jitter: float = 0.0
    no_traffic_interval: float = DEFAULT_HC_NO_TRAFFIC_INTERVAL
    http: HttpHealthCheckConfig | None = None
    tcp: TcpHealthCheckConfig | None = None
    grpc: GrpcHealthCheckConfig | None = None


# Circuit breakers (Envoy's config.cluster.v3.CircuitBreakers and its defaults).
ROUTING_PRIORITIES: tuple[str, ...] = ("default", "high")
DEFAULT_CB_MAX_CONNECTIONS = 1024
DEFAULT_CB_MAX_PENDING_REQUESTS = 1024
DEFAULT_CB_MAX_REQUESTS = 1024
DEFAULT_CB_MAX_RETRIES = 3
DEFAULT_RETRY_BUDGET_PERCENT = 20.0
DEFAULT_MIN_RETRY_CONCURRENCY = 3


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    """Envoy's retry_budget: concurrent retries are capped at
    ``budget_percent`` of the active and pending requests, never below
    ``min_retry_concurrency`` (replaces max_retries when set)."""

    budget_percent: float = DEFAULT_RETRY_BUDGET_PERCENT
    min_retry_concurrency: int = DEFAULT_MIN_RETRY_CONCURRENCY


@dataclass(frozen=True, slots=True)
class ThresholdsConfig:
    """One priority's circuit-breaker thresholds (Envoy's names and
    defaults). ``max_connection_pools`` None means unlimited."""

    priority: str = "default"
    max_connections: int = DEFAULT_CB_MAX_CONNECTIONS
    max_pending_requests: int = DEFAULT_CB_MAX_PENDING_REQUESTS
    max_requests: int = DEFAULT_CB_MAX_REQUESTS
    max_retries: int = DEFAULT_CB_MAX_RETRIES
    max_connection_pools: int | None = None
    track_remaining: bool = False
    retry_budget: RetryBudgetConfig | None = None


# Service discovery (Envoy's Cluster.type and its DNS / EDS settings; docs/discovery.md).
# original_dst: no endpoints; each request goes where the client dialled
# (Envoy's ORIGINAL_DST; docs/interception.md)
DISCOVERY_TYPES: tuple[str, ...] = ("static", "strict_dns", "logical_dns", "eds", "original_dst")
DEFAULT_ORIGINAL_DST_CLEANUP_INTERVAL = 5.0   # Envoy's cleanup_interval
# Istio's protocol_detection_timeout was 100 ms when it was meant for
# server-speaks-first protocols (now 0 s: none); Linkerd's is 10 s.
DEFAULT_PROTOCOL_DETECTION_TIMEOUT = 0.1
DNS_LOOKUP_FAMILIES: tuple[str, ...] = ("AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL")
DEFAULT_DNS_REFRESH_RATE = 5.0      # Envoy's default


@dataclass(frozen=True, slots=True)
class DnsResolverConfig:
    """A DNS server to ask (Envoy's dns_resolution_config.resolvers)."""

    address: str
    port: int = 53


# etcd as an eds source (docs/discovery.md "etcd"). Backoff defaults are
# Envoy's for a broken xDS gRPC stream (500 ms doubling to 30 s, jittered).
DEFAULT_ETCD_DIAL_TIMEOUT = 2.0          # etcdctl's --dial-timeout default
DEFAULT_ETCD_BACKOFF_BASE = 0.5
DEFAULT_ETCD_BACKOFF_MAX = 30.0


@dataclass(frozen=True, slots=True)
class EtcdSourceConfig:
    """An etcd v3 key prefix holding one JSON endpoint per key
    (``eds_config: {etcd: {...}}``); watched, resumed at the last revision."""

    endpoints: tuple[str, ...]          # http://host:port, tried in turn
    prefix: str
    dial_timeout: float = DEFAULT_ETCD_DIAL_TIMEOUT
    retry_base_interval: float = DEFAULT_ETCD_BACKOFF_BASE
    retry_max_interval: float = DEFAULT_ETCD_BACKOFF_MAX


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """Where a cluster's endpoints come from (Envoy's names and meaning).

    ``static``: the config's endpoints (IP addresses). ``strict_dns``: every
    address of every endpoint hostname, re-resolved at ``dns_refresh_rate``
    (or at the records' TTL with ``respect_dns_ttl``), the last good answer
    kept on failure, retried with backoff. ``logical_dns``: the first
    address only, for new connections. ``eds``: a ClusterLoadAssignment
    file (``eds_path``) watched for changes, or an etcd prefix (``etcd``).
    """

    type: str = "static"
    dns_refresh_rate: float = DEFAULT_DNS_REFRESH_RATE
    dns_failure_base_interval: float | None = None     # None: dns_refresh_rate
    dns_failure_max_interval: float | None = None      # None: 10 x the base
    respect_dns_ttl: bool = False
    dns_lookup_family: str = "AUTO"
    dns_resolvers: tuple[DnsResolverConfig, ...] = ()  # () = the system's resolver
    eds_path: str | None = None
    etcd: EtcdSourceConfig | None = None
    ads: bool = False                   # eds_config {ads: {}}: fed by the xDS client

    @property
    def dynamic(self) -> bool:
        """Endpoints come from a discovery source, not from the config
        (an original_dst cluster has none: each client's destination is one)."""
        return self.type not in ("static", "original_dst")


@dataclass(frozen=True, slots=True)
class OutlierDetectionConfig:
    """Passive outlier detection of a cluster's endpoints: Envoy's
    config.cluster.v3.OutlierDetection, names and defaults (durations in
    seconds, percentages 0-100; stdev factor in thousandths)."""

    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    consecutive_local_origin_failure: int = 5
    split_external_local_origin_errors: bool = False
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_time_jitter: float = 0.0
    max_ejection_percent: int = 10
    enforcing_consecutive_5xx: int = 100
    enforcing_consecutive_gateway_failure: int = 0
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_success_rate: int = 100
    enforcing_local_origin_success_rate: int = 100
    enforcing_failure_percentage: int = 0
    enforcing_failure_percentage_local_origin: int = 0
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900
    failure_percentage_threshold: int = 85
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    always_eject_one_host: bool = False


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """An upstream service: endpoints plus how to balance and pool connections to them.

    ``hash_policy`` is set (defaulting to source_ip) only for ring_hash and
    maglev. ``ring_min``/``ring_max`` matter only for ring_hash and
    ``maglev_table_size`` only for maglev; they always hold their defaults otherwise.
    """

    name: str
    lb: str
    hash_policy: HashPolicyConfig | None
    ring_min: int
    ring_max: int
    maglev_table_size: int
    connect_timeout: float
    idle_timeout: float
    per_connection_buffer_limit: int
    max_requests_per_connection: int   # 0 = unlimited
    endpoints: tuple[EndpointConfig, ...]
    protocol: str = "http1"            # "http1" | "http2" (h2c) | "auto" (the client's)
    health_checks: tuple[HealthCheckConfig, ...] = ()   # at most one (as Envoy)
    healthy_panic_threshold: float = DEFAULT_HEALTHY_PANIC_THRESHOLD   # percent
    circuit_breakers: tuple[ThresholdsConfig, ...] = ()   # at most one per priority; the
                                                          # rest have Envoy's defaults
    outlier_detection: OutlierDetectionConfig | None = None   # None: off
    tls: UpstreamTlsConfig | None = None   # control/tls.py; None = plaintext upstream
    discovery: DiscoveryConfig = DiscoveryConfig()
    original_dst: OriginalDstConfig | None = None   # type original_dst only


@dataclass(frozen=True, slots=True)
class OriginalDstConfig:
    """An original_dst cluster's settings (Envoy's cleanup_interval and
    original_dst_lb_config)."""

    cleanup_interval: float = 5.0
    use_http_header: bool = False
    http_header_name: str = "x-envoy-original-dst-host"


@dataclass(frozen=True, slots=True)
class Config:
    """A whole validated config. ``source`` names where it came from (not compared)."""

    drain_timeout: float
    admin: AdminConfig | None
    listeners: tuple[ListenerConfig, ...]
    clusters: tuple[ClusterConfig, ...]
    source: str = dataclasses.field(default="<config>", compare=False)
    batch_window: float = DEFAULT_BATCH_WINDOW     # seconds, 0 = off
    overload_manager: OverloadConfig = OverloadConfig()
    # Drop root after binding (runtime/privileges.py): a user name or uid,
    # a group name or gid (default: the user's primary group).
    user: str | None = None
    group: str | None = None

    def cluster(self, name: str) -> ClusterConfig:
        """The cluster called ``name``; ``KeyError`` if there is none."""
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)

    def listener(self, name: str) -> ListenerConfig:
        """The listener called ``name``; ``KeyError`` if there is none."""
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)
