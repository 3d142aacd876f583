# cluster_breaker.pxi: circuit breakers, per cluster and priority (Envoy's
# circuit_breakers.thresholds), a cluster-state hook.
#
# The limits live in the ClusterConf (BreakerLimits, Envoy's defaults when
# not configured: every cluster has them, as in Envoy); what they limit is
# counted on the ClusterState, per worker. The pipeline asks here, in one
# protocol-neutral place each:
#
#   cb_admit        ProxyStream.start_attempt: max_requests (the priority's
#                   active requests to the cluster)
#   cb_wait         UpstreamRequest.attach, only when the attempt needs a new
#                   connection: max_connection_pools (a first connection to
#                   an endpoint), max_connections (then the attempt waits in
#                   the cluster's FIFO pending queue, bounded by
#                   max_pending_requests)
#   cb_serve        when a connection may have freed (one closed, an
#                   HTTP/1.1 one went back to its pool, an HTTP/2 stream
#                   ended): the queue's head goes on, in order
#   cb_retry_admit  retry_allowed() (core_retry.pxi): max_retries, or the
#                   retry_budget when configured
#
# Over a limit the client gets a fast 503 with x-envoy-overloaded: true
# (gRPC: the stream's local reply makes it grpc-status 14 UNAVAILABLE) and
# the overflow is counted. The gauges (circuit_breakers.<priority>.*_open,
# remaining_*) are computed when the stats are read (cb_refresh), never on
# the request path. Unconfigured costs integer compares on counters the
# cluster keeps anyway.

DEF CB_UNLIMITED = 1 << 62            # max_connection_pools unset: no limit

# Envoy's defaults (config.cluster.v3.CircuitBreakers.Thresholds).
CB_DEFAULTS = {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024,
               "max_retries": 3, "max_connection_pools": None, "track_remaining": False,
               "retry_budget": None}
CB_PRIORITIES = ("default", "high")

# circuit_breakers.<priority>.* gauges: slot = CB_GAUGES_BASE + priority * 10 + k
cdef enum:
    CB_K_CX_OPEN = 0
    CB_K_RQ_PENDING_OPEN = 1
    CB_K_RQ_OPEN = 2
    CB_K_RQ_RETRY_OPEN = 3
    CB_K_CX_POOL_OPEN = 4
    CB_K_REMAINING = 5                # remaining_cx, _pending, _rq, _retries, _cx_pools
    CB_K_N = 10

CB_REMAINING_NAMES = frozenset(
    f"circuit_breakers.{p}.{n}" for p in CB_PRIORITIES
    for n in ("remaining_cx", "remaining_pending", "remaining_rq", "remaining_retries",
              "remaining_cx_pools"))

cdef bytes OVERLOADED_NAME = b"x-envoy-overloaded"


@cython.final
cdef class BreakerLimits:
    """A cluster's circuit-breaker thresholds: ``BreakerLimits({"default":
    {...}, "high": {...}})`` with Envoy's keys (missing ones: Envoy's
    defaults); ``retry_budget`` is ``{"budget_percent": 20.0,
    "min_retry_concurrency": 3}`` or None."""

    def __init__(self, thresholds=None):
        cdef int p
        thresholds = thresholds or {}
        for p, name in enumerate(CB_PRIORITIES):
            t = dict(CB_DEFAULTS)
            t.update(thresholds.get(name) or {})
            self.max_cx[p] = t["max_connections"]
            self.max_pending[p] = t["max_pending_requests"]
            self.max_rq[p] = t["max_requests"]
            self.max_retries[p] = t["max_retries"]
            pools = t["max_connection_pools"]
            self.max_pools[p] = CB_UNLIMITED if pools is None else pools
            self.track_remaining[p] = t["track_remaining"]
            budget = t["retry_budget"]
            if budget is None:
                self.budget_pct[p] = -1.0
                self.min_retry_conc[p] = 0
            else:
                self.budget_pct[p] = budget.get("budget_percent", 20.0)
                self.min_retry_conc[p] = budget.get("min_retry_concurrency", 3)

    def limits(self, str priority="default"):
        """The thresholds of one priority as a dict (tests, admin)."""
        cdef int p = CB_PRIORITIES.index(priority)
        return {"max_connections": self.max_cx[p], "max_pending_requests": self.max_pending[p],
                "max_requests": self.max_rq[p], "max_retries": self.max_retries[p],
                "max_connection_pools": (None if self.max_pools[p] == CB_UNLIMITED
                                         else self.max_pools[p]),
                "track_remaining": self.track_remaining[p],
                "retry_budget": (None if self.budget_pct[p] < 0 else
                                 {"budget_percent": self.budget_pct[p],
                                  "min_retry_concurrency": self.min_retry_conc[p]})}

    def __eq__(self, other):
        return isinstance(other, BreakerLimits) and all(
            self.limits(p) == other.limits(p) for p in CB_PRIORITIES)

    def __hash__(self):
        return hash(tuple(str(self.limits(p)) for p in CB_PRIORITIES))


cdef inline int64_t cb_retry_limit(ClusterState c, int p) noexcept:
    # Envoy: with a retry_budget, the concurrent retries allowed are
    # budget_percent of the priority's active plus pending requests, never
    # below min_retry_concurrency; without one, max_retries.
    cdef BreakerLimits b = c.cb
    cdef int64_t n
    if b.budget_pct[p] < 0:
        return b.max_retries[p]
    n = <int64_t>(b.budget_pct[p] * (c.cb_rq[p] + c.cb_npending[p]) / 100.0)
    return n if n > b.min_retry_conc[p] else b.min_retry_conc[p]


cdef void cb_overflow(ProxyStream s, int slot):
    # A limit said no: count it and answer at once, as Envoy's router does
    # for a pool overflow (503, x-envoy-overloaded; gRPC UNAVAILABLE).
    s.cluster.st[slot] += 1
    if s.rs_add is None:
        s.rs_add = HeaderList()
    s.rs_add.add(OVERLOADED_NAME, 18, b"true", 4, 0)
    s.upstream_failed(503, b"upstream overflow\n")


cdef bint cb_admit(ProxyStream s, ClusterState c) noexcept:
    # max_requests, before an attempt begins (first try or retry). Envoy
    # counts this overflow as upstream_rq_pending_overflow.
    cdef int p = s.route.priority
    if c.cb_rq[p] < c.cb.max_rq[p]:
        return True
    cb_overflow(s, UPSTREAM_RQ_PENDING_OVERFLOW)
    return False


cdef bint cb_wait(UpstreamRequest ur, bint h2) noexcept:
    # The attempt needs a new connection. True: go ahead. False: it was
    # queued (max_connections reached), or refused and answered.
    cdef ClusterState c = ur.cluster
    cdef int p = ur.prio
    cdef ProxyStream s
    if ur.ep.ncx == 0 and c.cb_pools >= c.cb.max_pools[p]:
        s = ur.down
        cb_drop(ur)
        cb_overflow(s, UPSTREAM_CX_POOL_OVERFLOW)
        return False
    if c.cb_cx < c.cb.max_cx[p] and (c.cb_waiting == 0 or c.cb_serving):
        return True
    # Over max_connections (or others wait already: first come, first
    # served): wait for a connection to free, if the queue has room.
    c.st[UPSTREAM_CX_OVERFLOW] += 1
    if c.cb_npending[p] >= c.cb.max_pending[p]:
        s = ur.down
        cb_drop(ur)
        cb_overflow(s, UPSTREAM_RQ_PENDING_OVERFLOW)
        return False
    if c.cb_queue is None:
        c.cb_queue = []
    c.cb_queue.append(ur)
    ur.cb_pending = True
    c.cb_waiting += 1
    c.cb_npending[p] += 1
    c.st[UPSTREAM_RQ_PENDING_TOTAL] += 1
    c.st[UPSTREAM_RQ_PENDING_ACTIVE] += 1
    # A connection may already be idle elsewhere in the cluster: closing it
    # makes room (cb_serve does that).
    cb_kick(c)
    return False


cdef inline void cb_drop(UpstreamRequest ur) noexcept:
    # The attempt goes before it had a connection.
    cdef ProxyStream s = ur.down
    ur.end()
    if s.ur is ur:
        s.ur = None


cdef void cb_unqueue(UpstreamRequest ur) noexcept:
    # Leave the pending queue (served, cancelled, or the cluster went).
    cdef ClusterState c = ur.cluster
    if not ur.cb_pending:
        return
    ur.cb_pending = False
    c.cb_queue.remove(ur)
    c.cb_waiting -= 1
    c.cb_npending[ur.prio] -= 1
    c.st[UPSTREAM_RQ_PENDING_ACTIVE] -= 1


cdef void cb_kick(ClusterState c) noexcept:
    # Serve the queue soon: from the loop, not from inside the connection
    # callback that freed the room (which may still be using its state).
    if c.cb_waiting == 0 or c.cb_kicked:
        return
    c.cb_kicked = True
    c.worker.loop.call_soon(c._cb_serve)


cdef void cb_serve(ClusterState c):
    # Start the waiting attempts, in order, while there is room; when the
    # head cannot go, close an idle connection of the cluster to make room
    # (its close calls back here).
    cdef UpstreamRequest ur
    c.cb_kicked = False
    while c.cb_waiting > 0:
        ur = <UpstreamRequest>c.cb_queue[0]
        if ur.down.ur is not ur:
            cb_unqueue(ur)         # (the stream moved on; cannot happen, but never hang)
            ur.end()
            continue
        if not cb_has_room(c, ur):
            cb_close_idle(c, ur.ep)
            return
        cb_unqueue(ur)
        # (its turn: cb_wait must not send it behind the others again)
        c.cb_serving = True
        ur.attach(False)
        c.cb_serving = False


cdef inline bint cb_has_room(ClusterState c, UpstreamRequest ur) noexcept:
    # An idle connection of its endpoint, or room for a new one.
    cdef EndpointPool pool = ur.ep.pool
    if c.conf.protocol == PROTO_HTTP2 or (c.conf.protocol == PROTO_AUTO and ur.down.from_h2):
        if pool.get_h2() is not None:
            return True
    elif pool.idle:
        return True
    return c.cb_cx < c.cb.max_cx[ur.prio]


cdef void cb_close_idle(ClusterState c, Endpoint keep):
    # One idle connection of another endpoint goes, so that `keep` can have
    # one: HTTP/1.1 from a pool, HTTP/2 without a stream.
    cdef Endpoint ep
    cdef UpstreamHttp h
    cdef UpstreamH2 h2
    for ep in c.endpoints:
        if ep is keep:
            continue
        while ep.pool.idle:
            h = <UpstreamHttp>ep.pool.idle.pop()
            h.in_pool = False
            if not h.closed:
                h.close()
                return
        for h2 in list(ep.pool.h2conns):
            if not h2.streams and not h2.waiting:
                h2.leave_pool()
                h2.close()
                return


cdef void cb_fail_queue(ClusterState c):
    # The cluster left the config: nothing will serve its queue.
    cdef UpstreamRequest ur
    cdef ProxyStream s
    while c.cb_waiting > 0:
        ur = <UpstreamRequest>c.cb_queue[0]
        cb_unqueue(ur)
        s = ur.down
        cb_drop(ur)
        s.upstream_failed(503, b"no healthy upstream\n")


cdef bint cb_retry_admit(ProxyStream s, UpstreamRequest failed) noexcept:
    # May the stream take (or keep) a retry slot? Envoy holds it from the
    # retry decision until the next decision or the end of the request, so
    # a slot the stream holds is given back before counting.
    cdef ClusterState c = failed.cluster
    cdef int p = failed.prio
    cdef bint held = s.cb_retry_in is c
    if c.cb_retries[p] - held >= cb_retry_limit(c, p):
        if held:
            cb_retry_release(s)
        c.st[UPSTREAM_RQ_RETRY_OVERFLOW] += 1
        return False
    if not held:
        if s.cb_retry_in is not None:
            cb_retry_release(s)
        c.cb_retries[p] += 1
        s.cb_retry_in = c
        s.cb_retry_prio = p
    return True


cdef void cb_retry_release(ProxyStream s) noexcept:
    cdef ClusterState c = s.cb_retry_in
    if c is not None:
        c.cb_retries[s.cb_retry_prio] -= 1
        s.cb_retry_in = None


cdef void cb_cx_opened(UpstreamBase u) noexcept:
    # A connection starts (counted until it is gone, connecting included).
    cdef ClusterState c = u.cluster
    u.cb_counted = True
    c.cb_cx += 1
    if u.ep.ncx == 0:
        c.cb_pools += 1
    u.ep.ncx += 1


cdef void cb_cx_closed(UpstreamBase u) noexcept:
    cdef ClusterState c = u.cluster
    if not u.cb_counted:
        return
    u.cb_counted = False
    c.cb_cx -= 1
    u.ep.ncx -= 1
    if u.ep.ncx == 0:
        c.cb_pools -= 1
    if c.cb_waiting:
        cb_kick(c)


cdef void cb_refresh(ClusterState c):
    # The gauges, when the stats are read: open = the breaker is at its
    # limit (Envoy's *_open), remaining = room left (track_remaining only).
    cdef BreakerLimits b = c.cb
    cdef int p
    cdef int64_t* g
    cdef int64_t lim
    for p in range(NPRIO):
        g = c.st + CIRCUIT_BREAKERS_DEFAULT_CX_OPEN + p * CB_K_N
        lim = cb_retry_limit(c, p)
        g[CB_K_CX_OPEN] = c.cb_cx >= b.max_cx[p]
        g[CB_K_RQ_PENDING_OPEN] = c.cb_npending[p] >= b.max_pending[p]
        g[CB_K_RQ_OPEN] = c.cb_rq[p] >= b.max_rq[p]
        g[CB_K_RQ_RETRY_OPEN] = c.cb_retries[p] >= lim
        g[CB_K_CX_POOL_OPEN] = c.cb_pools >= b.max_pools[p]
        if b.track_remaining[p]:
            g[CB_K_REMAINING + 0] = max(0, b.max_cx[p] - c.cb_cx)
            g[CB_K_REMAINING + 1] = max(0, b.max_pending[p] - c.cb_npending[p])
            g[CB_K_REMAINING + 2] = max(0, b.max_rq[p] - c.cb_rq[p])
            g[CB_K_REMAINING + 3] = max(0, lim - c.cb_retries[p])
            g[CB_K_REMAINING + 4] = max(0, b.max_pools[p] - c.cb_pools)
