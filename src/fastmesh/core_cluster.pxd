# core_cluster.pxd: declarations of core_cluster.pxi (see _core.pxd)

cdef enum:  # ClusterConf.protocol: how requests go to the endpoints
    PROTO_HTTP1 = 0
    PROTO_HTTP2 = 1           # h2c prior knowledge, multiplexed (core_h2_upstream.pxi)
    PROTO_AUTO = 2            # the client's protocol (Envoy's USE_DOWNSTREAM_PROTOCOL)

cdef enum:
    HASH_NONE = 0
    HASH_HEADER = 1
    HASH_SOURCE_IP = 2

cdef class ClusterConf:
    cdef readonly str name
    cdef readonly str lb_policy
    cdef readonly dict lb_options
    cdef readonly tuple endpoints
    cdef int hash_kind
    cdef bytes hash_header               # lower-case header name for HASH_HEADER
    cdef readonly double connect_timeout
    cdef readonly double idle_timeout
    cdef readonly Py_ssize_t buffer_limit
    cdef readonly long max_requests_per_connection
    cdef readonly int protocol            # PROTO_HTTP1 | PROTO_HTTP2 | PROTO_AUTO
    cdef readonly double healthy_panic_threshold  # percent (Envoy common_lb_config)
    cdef readonly TlsClientConf tls       # None: plaintext upstream (core_tls.pxi)
    cdef readonly BreakerLimits breakers  # circuit_breakers thresholds (cluster_breaker.pxi)
    cdef readonly OutlierConf outlier     # outlier_detection, None: off
    cdef readonly OriginalDstConf odst    # type ORIGINAL_DST, None: not (core_original_dst.pxi)

    cdef bint same_balancing(self, ClusterConf o)

cdef class ClusterState:
    cdef readonly str name
    cdef readonly ClusterConf conf
    cdef readonly list endpoints          # Endpoint, index i = balancer index i
    cdef dict by_key                      # (host, port) -> Endpoint
    cdef readonly LoadBalancer lb
    cdef readonly StatsBlock stats        # labels {cluster: name}
    cdef int64_t* st                      # stats.v: CLUSTER_STATS slots
    cdef Histogram rq_time                # upstream_rq_time
    cdef Histogram cx_connect_time        # upstream_cx_connect_time (Envoy: upstream_cx_connect_ms)
    cdef dict istio                       # response code -> Histogram (core_istio.pxi)
    cdef readonly Worker worker
    cdef readonly bint removed            # gone from the snapshot: draining
    cdef bytearray mask                   # 1 = excluded: Endpoint.health_flags != 0
    cdef int nmasked
    cdef bint panic                       # healthy share < healthy_panic_threshold
    cdef readonly long lb_builds          # balancers built (tests: state kept?)
    cdef readonly long endpoint_updates
    # circuit breakers (cluster_breaker.pxi): the limits, and what they limit
    cdef BreakerLimits cb                 # conf.breakers
    cdef int64_t cb_rq[2]                 # active requests, per priority
    cdef int64_t cb_retries[2]            # retries admitted and not over, per priority
    cdef int64_t cb_npending[2]           # queued for a connection, per priority
    cdef int64_t cb_cx                    # connections open or opening
    cdef int64_t cb_pools                 # endpoints with a connection
    cdef int cb_waiting                   # len(cb_queue)
    cdef bint cb_kicked                   # a cb_serve is scheduled
    cdef bint cb_serving                  # cb_serve is starting the queue's head
    cdef list cb_queue                    # UpstreamRequests waiting, FIFO
    cdef readonly OutlierDetector outlier # None unless configured: end() tests only this
    cdef readonly OriginalDstState odst   # ORIGINAL_DST: endpoints made per destination

    cdef _set_endpoints(self, tuple eps, bint force_lb)
    cdef void _recount(self)
    cdef bint set_health_flag(self, int index, unsigned int flag, bint on)
    cdef void remove(self)
    cdef void drain_pools(self)
    cdef int pick(self, uint64_t h, int exclude)
