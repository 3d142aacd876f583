# core_cluster.pxi: clusters, endpoints and their upstream connection pools.
#
# A Cluster is built by the control side once per config (endpoints plus a
# load balancer over C arrays). The pool of idle upstream connections belongs
# to the worker, keyed by endpoint address, so a reload keeps warm
# connections.

cdef enum:  # Cluster.protocol: how requests go to the endpoints
    PROTO_HTTP1 = 0
    PROTO_HTTP2 = 1           # h2c prior knowledge, multiplexed (core_h2.pxi)
    PROTO_AUTO = 2            # the client's protocol (Envoy's USE_DOWNSTREAM_PROTOCOL)

cdef enum:
    HASH_NONE = 0
    HASH_HEADER = 1
    HASH_SOURCE_IP = 2


@cython.final
cdef class EndpointPool:
    """Idle keep-alive HTTP/1.1 connections to one endpoint (LIFO: the most
    recently used connection is the least likely to have been closed by the
    upstream), and the HTTP/2 connections that can still open streams."""
    cdef list idle
    cdef list h2conns
    cdef uint32_t h2_max_streams  # the endpoint's last SETTINGS_MAX_CONCURRENT_STREAMS

    def __cinit__(self):
        self.idle = []
        self.h2conns = []
        self.h2_max_streams = 100

    cdef UpstreamH2 get_h2(self):
        cdef UpstreamH2 c
        for c in self.h2conns:
            if c.has_room():
                return c
        return None

    cdef UpstreamHttp get(self):
        cdef UpstreamHttp c
        while self.idle:
            c = <UpstreamHttp>self.idle.pop()
            c.in_pool = False
            if not c.closed:
                return c
        return None

    cdef void put(self, UpstreamHttp c):
        c.in_pool = True
        self.idle.append(c)

    cdef void close_all(self):
        cdef UpstreamHttp c
        cdef UpstreamH2 h
        idle, self.idle = self.idle, []
        for c in idle:
            c.in_pool = False
            c.close()
        for h in list(self.h2conns):
            h.drain()

    def __len__(self):
        return len(self.idle)


@cython.final
cdef class Endpoint:
    cdef readonly str host
    cdef readonly int port
    cdef readonly int index
    cdef readonly int weight
    cdef EndpointPool pool

    def __init__(self, str host, int port, int index, int weight=1):
        self.host = host
        self.port = port
        self.index = index
        self.weight = weight
        self.pool = EndpointPool()

    def __repr__(self):
        return f"Endpoint({self.host}:{self.port})"


@cython.final
cdef class ClusterStats:
    """A cluster's counters (Envoy's cluster stat names). One object per
    cluster name per worker, handed from snapshot to snapshot on reload so
    counters survive config changes and requests in flight on the old tables
    still update the same gauges."""
    cdef public long long upstream_rq_total
    cdef public long long upstream_rq_active
    cdef public long long upstream_rq_2xx
    cdef public long long upstream_rq_3xx
    cdef public long long upstream_rq_4xx
    cdef public long long upstream_rq_5xx
    cdef public long long upstream_rq_timeout
    cdef public long long upstream_rq_retry
    cdef public long long upstream_cx_total
    cdef public long long upstream_cx_active
    cdef public long long upstream_cx_connect_fail
    cdef public long long upstream_cx_connect_timeout
    cdef public long long upstream_cx_destroy_with_active_rq
    cdef public long long upstream_cx_reused
    cdef public long long upstream_cx_none_healthy

    cdef inline void count_status(self, int status) noexcept:
        if status < 300:
            self.upstream_rq_2xx += 1
        elif status < 400:
            self.upstream_rq_3xx += 1
        elif status < 500:
            self.upstream_rq_4xx += 1
        else:
            self.upstream_rq_5xx += 1

    def as_dict(self):
        return {name: getattr(self, name) for name in CLUSTER_STAT_NAMES}


@cython.final
cdef class Cluster:
    """A named group of endpoints with a load balancer and upstream settings."""
    cdef readonly str name
    cdef readonly LoadBalancer lb
    cdef readonly list endpoints
    cdef int hash_kind
    cdef bytes hash_header               # lower-case header name for HASH_HEADER
    cdef readonly double connect_timeout
    cdef readonly double idle_timeout
    cdef readonly Py_ssize_t buffer_limit
    cdef readonly long max_requests_per_connection
    cdef readonly int protocol            # PROTO_HTTP1 | PROTO_HTTP2 | PROTO_AUTO
    cdef public ClusterStats st           # counters; kept by the worker across reloads

    def __init__(self, str name, LoadBalancer lb, list endpoints, str hash_header=None,
                 bint hash_source_ip=False, double connect_timeout=5.0,
                 double idle_timeout=60.0, Py_ssize_t buffer_limit=1048576,
                 long max_requests_per_connection=0, str protocol="http1"):
        if lb.n != len(endpoints):
            raise ValueError(f"cluster {name}: load balancer has {lb.n} endpoints, "
                             f"cluster has {len(endpoints)}")
        self.name = name
        self.lb = lb
        self.endpoints = list(endpoints)
        if hash_header:
            self.hash_kind = HASH_HEADER
            self.hash_header = hash_header.lower().encode("latin-1")
        elif hash_source_ip:
            self.hash_kind = HASH_SOURCE_IP
        else:
            self.hash_kind = HASH_NONE
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.buffer_limit = buffer_limit
        self.max_requests_per_connection = max_requests_per_connection
        if protocol == "http1":
            self.protocol = PROTO_HTTP1
        elif protocol == "http2":
            self.protocol = PROTO_HTTP2
        elif protocol == "auto":
            self.protocol = PROTO_AUTO
        else:
            raise ValueError(f"cluster {name}: protocol must be http1, http2 or auto")
        self.st = ClusterStats()

    @property
    def protocol_name(self):
        return ("http1", "http2", "auto")[self.protocol]

    def stats_dict(self):
        return self.st.as_dict()

    def __repr__(self):
        return f"Cluster({self.name!r}, {self.lb.policy}, {self.endpoints})"

CLUSTER_STAT_NAMES = (
    "upstream_rq_total", "upstream_rq_active", "upstream_rq_2xx", "upstream_rq_3xx",
    "upstream_rq_4xx", "upstream_rq_5xx", "upstream_rq_timeout", "upstream_rq_retry",
    "upstream_cx_total", "upstream_cx_active", "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout", "upstream_cx_destroy_with_active_rq",
    "upstream_cx_reused", "upstream_cx_none_healthy",
)


