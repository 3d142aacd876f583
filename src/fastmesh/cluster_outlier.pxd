# cluster_outlier.pxd: declarations of cluster_outlier.pxi (see _core.pxd)

cdef enum:  # UpstreamRequest.outcome: an HTTP status (> 0), or a local-origin result
    OUT_NONE = 0                  # nothing to report (abandoned before an answer)
    OUT_CONNECT_FAILED = -1       # connect refused or failed (Envoy: LocalOriginConnectFailed)
    OUT_TIMEOUT = -2              # connect or request timeout (LocalOriginTimeout)
    OUT_RESET = -3                # the connection or stream went before the answer ended
    OUT_CONNECT_OK = -4           # TCP proxy: connected, all it can know (ConnectSuccessFinal)

cdef enum:  # ejection types: the order of the detected/enforced counter slots
    OD_CONSECUTIVE_5XX = 0
    OD_CONSECUTIVE_GATEWAY_FAILURE = 1
    OD_CONSECUTIVE_LOCAL_ORIGIN_FAILURE = 2
    OD_SUCCESS_RATE = 3
    OD_LOCAL_ORIGIN_SUCCESS_RATE = 4
    OD_FAILURE_PERCENTAGE = 5
    OD_LOCAL_ORIGIN_FAILURE_PERCENTAGE = 6
    OD_NTYPES = 7

cdef class OutlierConf:
    cdef readonly long consecutive_5xx
    cdef readonly long consecutive_gateway_failure
    cdef readonly long consecutive_local_origin_failure
    cdef readonly bint split_external_local_origin_errors
    cdef readonly double interval
    cdef readonly double base_ejection_time
    cdef readonly double max_ejection_time
    cdef readonly double max_ejection_time_jitter
    cdef readonly long max_ejection_percent
    cdef long enforcing[OD_NTYPES]        # percent per OD_* type
    cdef readonly long success_rate_minimum_hosts
    cdef readonly long success_rate_request_volume
    cdef readonly long success_rate_stdev_factor
    cdef readonly long failure_percentage_threshold
    cdef readonly long failure_percentage_minimum_hosts
    cdef readonly long failure_percentage_request_volume
    cdef readonly bint always_eject_one_host

cdef class OutlierHost:
    # One endpoint's monitor; lives on its Endpoint, so it goes with it.
    cdef long c5xx, cgw, clo              # consecutive counts
    cdef long ext_total, ext_ok           # this interval (external origin)
    cdef long lo_total, lo_ok             # this interval (local origin, split only)
    cdef readonly bint ejected
    cdef readonly long backoff            # ejection time = base * backoff (capped)
    cdef readonly long num_ejections
    cdef double ejected_at
    cdef double unejected_at              # -1: never returned
    cdef double jitter

cdef class OutlierDetector:
    cdef ClusterState cluster
    cdef readonly OutlierConf conf
    cdef int active                       # endpoints ejected now
    cdef object timer                     # the interval sweep's loop handle
    cdef readonly long sweeps             # interval sweeps run (tests)

    cdef void report(self, Endpoint ep, int outcome)
    cdef void put_http(self, Endpoint ep, OutlierHost h, int status)
    cdef void local_failure(self, Endpoint ep, OutlierHost h)
    cdef void consecutive(self, Endpoint ep, OutlierHost h, int kind)
    cdef void eject(self, Endpoint ep, OutlierHost h, int kind, str why)
    cdef void uneject(self, Endpoint ep, OutlierHost h, double now)
    cdef void recount(self)
    cdef void stop(self)
    cdef void arm(self)
