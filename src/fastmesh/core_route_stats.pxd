# core_route_stats.pxd: declarations of core_route_stats.pxi (see _core.pxd)

cdef class RouteStats:
    cdef readonly str label           # the route's `route` label (its name, or vhost/index)
    cdef readonly StatsBlock stats    # None until the first request in this worker
    cdef int64_t* st                  # stats.v: ROUTE_STATS slots
    cdef Histogram rq_time            # downstream_rq_time of the requests it routed
