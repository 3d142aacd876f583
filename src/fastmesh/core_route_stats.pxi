# core_route_stats.pxi: per-route request counters and latency histogram.
#
# The control side compiles routes off the loop, without the worker's
# registry, so each Route carries an unbound RouteStats (Route.stats) made by
# control/compile.py with its label. The worker binds it at the route's first
# request: block "route" with labels {listener, route} from its registry
# (get-or-create, so a reload's new Route objects find the same counters).
# Per request afterwards: one pointer test, two slot adds, one record().

cdef enum:  # ROUTE_STATS
    ROUTE_RQ_TOTAL
    ROUTE_RQ_1XX                          # 1xx..5xx consecutive
    ROUTE_RQ_2XX
    ROUTE_RQ_3XX
    ROUTE_RQ_4XX
    ROUTE_RQ_5XX
    ROUTE_NSTATS

# Envoy's names for the same things at the listener (its vhost/route stats,
# with a route stat_prefix, are upstream_rq_*: these count the proxy's own
# replies too, as the listener's do).
ROUTE_STATS = (
    ("downstream_rq_total", "counter"),
    ("downstream_rq_1xx", "counter"),
    ("downstream_rq_2xx", "counter"),
    ("downstream_rq_3xx", "counter"),
    ("downstream_rq_4xx", "counter"),
    ("downstream_rq_5xx", "counter"),
)
ROUTE_RQ_TIME = "downstream_rq_time"


@cython.final
cdef class RouteStats:
    """A route's stats: made unbound by the control side, bound by the
    worker that serves the route's first request."""

    def __init__(self, str label not None):
        self.label = label
        self.st = NULL

    def __repr__(self):
        return f"RouteStats({self.label!r}, bound={self.stats is not None})"


cdef void route_stats_bind(RouteStats rs, ListenerState lst):
    labels = (("listener", lst.name), ("route", rs.label))
    names, kinds = _columns(ROUTE_STATS, ROUTE_NSTATS)
    rs.stats = lst.worker.registry.block("route", names, kinds, labels)
    rs.rq_time = lst.worker.registry.histogram("route", ROUTE_RQ_TIME, labels)
    rs.st = rs.stats.v


cdef inline void route_request_ended(ProxyStream s, bint complete, double elapsed) noexcept:
    # s.route is not None. A route built without stats (tests, embedders
    # making Routes by hand) counts nothing.
    cdef object o = s.route.stats
    cdef RouteStats rs
    cdef int c
    if o is None:
        return
    rs = <RouteStats>o
    if rs.st == NULL:
        route_stats_bind(rs, s.lst)
    rs.st[ROUTE_RQ_TOTAL] += 1
    if s.resp_status > 0:
        c = s.resp_status // 100
        if c < 1:
            c = 1
        elif c > 5:
            c = 5
        rs.st[ROUTE_RQ_1XX + c - 1] += 1
    if complete:
        rs.rq_time.record(elapsed)
