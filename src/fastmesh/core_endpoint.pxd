# core_endpoint.pxd: declarations of core_endpoint.pxi (see _core.pxd)

cdef enum:  # Endpoint.health_flags: why an endpoint is not picked (Envoy's
            # Host::HealthFlag); any bit set = excluded
    EP_FAILED_ACTIVE_HC = 1       # active health checking (control/health.py)
    EP_FAILED_OUTLIER_CHECK = 2   # outlier detection ejected it
    EP_FAILED_EDS_HEALTH = 4      # the discovery source says unhealthy
    EP_PENDING_DYNAMIC_REMOVAL = 8  # draining: the source is removing it
    EP_EXCLUDED_MANUAL = 16       # set_excluded() (tests, embedding API)

cdef class EndpointPool:
    cdef list idle
    cdef list h2conns
    cdef uint32_t h2_max_streams  # the endpoint's last SETTINGS_MAX_CONCURRENT_STREAMS

    cdef UpstreamH2 get_h2(self)
    cdef UpstreamHttp get(self)
    cdef void put(self, UpstreamHttp c)
    cdef void close_all(self)

cdef class Endpoint:
    cdef readonly str host
    cdef readonly int port
    cdef readonly int index       # position in the cluster's current endpoint list
    cdef readonly int weight
    cdef readonly bint removed    # left the endpoint set: its pool drains
    cdef readonly unsigned int health_flags  # EP_* bits; 0 = healthy
    cdef EndpointPool pool
    cdef int ncx                  # its connections open or opening (cluster_breaker.pxi)
    cdef readonly OutlierHost outlier   # its outlier monitor (cluster_outlier.pxi), None: none yet
    cdef bytes lb_key             # b"host:port", the hash balancers' key (made once)
    cdef bint odst_used           # ORIGINAL_DST: used since the last cleanup sweep
    # admin /clusters (Envoy's per-host stats): two increments per attempt
    cdef readonly int64_t rq_total    # attempts started at it
    cdef readonly int64_t rq_active   # attempts not over
