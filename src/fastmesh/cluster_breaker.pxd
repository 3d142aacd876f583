# cluster_breaker.pxd: declarations of cluster_breaker.pxi (see _core.pxd)

cdef enum:  # Envoy's RoutingPriority (a route's `priority`)
    PRIO_DEFAULT = 0
    PRIO_HIGH = 1
    NPRIO = 2

cdef class BreakerLimits:
    # One cluster's thresholds, per priority (immutable, in its ClusterConf).
    cdef int64_t max_cx[NPRIO]
    cdef int64_t max_pending[NPRIO]
    cdef int64_t max_rq[NPRIO]
    cdef int64_t max_retries[NPRIO]
    cdef int64_t max_pools[NPRIO]
    cdef double budget_pct[NPRIO]       # < 0: no retry_budget (max_retries rules)
    cdef int64_t min_retry_conc[NPRIO]
    cdef bint track_remaining[NPRIO]

cdef bint cb_admit(ProxyStream s, ClusterState c) noexcept
cdef bint cb_wait(UpstreamRequest ur, bint h2) noexcept
cdef void cb_unqueue(UpstreamRequest ur) noexcept
cdef void cb_kick(ClusterState c) noexcept
cdef void cb_serve(ClusterState c)
cdef void cb_fail_queue(ClusterState c)
cdef bint cb_retry_admit(ProxyStream s, UpstreamRequest failed) noexcept
cdef void cb_retry_release(ProxyStream s) noexcept
cdef void cb_cx_opened(UpstreamBase u) noexcept
cdef void cb_cx_closed(UpstreamBase u) noexcept
cdef void cb_overflow(ProxyStream s, int slot)
cdef void cb_refresh(ClusterState c)
