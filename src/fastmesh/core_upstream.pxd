# core_upstream.pxd: declarations of core_upstream.pxi (see _core.pxd)

cdef class UpstreamRequest:
    cdef ProxyStream down
    cdef ClusterState cluster
    cdef LoadBalancer lb          # the balancer that picked (counters go back to it)
    cdef Endpoint ep
    cdef int lb_idx
    cdef int attempt              # 1 for the first try
    cdef bint active              # counted in the cluster's active requests
    cdef UpstreamHttp h1          # HTTP/1.1: the connection serving this attempt
    cdef UpstreamH2 h2            # HTTP/2: the connection, and
    cdef uint32_t sid             # our stream on it (0 while not opened yet)
    cdef bint done                # HTTP/2: END_STREAM went upstream
    cdef bint pump_queued         # waiting in its UpstreamH2's `dirty` list
    cdef int resp_state           # HTTP/2 response: 0 none, 1 head, 2 ended
    cdef int64_t unacked          # HTTP/2 response DATA not yet acknowledged upstream
    cdef double started           # for upstream_rq_time
    cdef int prio                 # the route's priority (cluster_breaker.pxi)
    cdef bint cb_pending          # in its cluster's pending queue
    cdef int outcome              # for outlier detection: status or OUT_* (cluster_outlier.pxd)
    cdef TraceSpan trace          # a sampled request's: this attempt is a client span
    cdef uint64_t span_id         # ... with this id
    cdef int64_t start_ns

    cdef void begin(self, ProxyStream d, ClusterState c, int idx, int attempt)
    cdef void end(self)
    cdef inline void response_complete(self) noexcept
    cdef void attach(self, bint fresh)
    cdef inline bint is_h2(self)
    cdef void cancel(self)
