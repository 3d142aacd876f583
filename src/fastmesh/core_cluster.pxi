# core_cluster.pxi: clusters as the data plane lives them.
#
# Two halves, as Envoy splits a cluster's config from its per-worker state:
#
#  ClusterConf   immutable, part of a Snapshot (built by the control side):
#                the cluster's settings and its configured endpoint list.
#  ClusterState  live, one per cluster name per worker, kept across snapshots
#                (like ListenerState): the endpoint set (swappable on its own,
#                without recompiling routes), the load balancer over it (kept
#                while the endpoints stay the same, so least-request counters
#                and round-robin positions survive a reload), a health/ejection
#                mask the pick honours, its stats (core_counters.pxi), and the connection pools
#                (owned by the cluster, keyed by endpoint and transport
#                identity), pruned when an endpoint or the cluster goes away.
#
# Requests never touch a pool of another cluster: each attempt is an
# UpstreamRequest (core_upstream.pxi) bound to one ClusterState, which it
# charges from start to finish.

from fastmesh._lb import make_lb as _make_lb




@cython.final
cdef class ClusterConf:
    """A cluster's settings in a snapshot (immutable; built by the control
    side). The endpoints are (host, port, weight) tuples with IP hosts."""

    def __init__(self, str name, str lb_policy="round_robin", endpoints=(),
                 dict lb_options=None, str hash_header=None, bint hash_source_ip=False,
                 double connect_timeout=5.0, double idle_timeout=60.0,
                 Py_ssize_t buffer_limit=1048576, long max_requests_per_connection=0,
                 str protocol="http1", double healthy_panic_threshold=50.0,
                 circuit_breakers=None, OutlierConf outlier=None, TlsClientConf tls=None,
                 OriginalDstConf original_dst=None):
        self.name = name
        self.lb_policy = lb_policy
        self.lb_options = dict(lb_options or {})
        self.endpoints = tuple((str(h), int(p), int(w)) for h, p, w in endpoints)
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
        self.healthy_panic_threshold = healthy_panic_threshold
        self.tls = tls
        # {priority: thresholds}; Envoy's defaults for what is not given
        self.breakers = BreakerLimits(circuit_breakers)
        self.outlier = outlier
        self.odst = original_dst
        if protocol == "http1":
            self.protocol = PROTO_HTTP1
        elif protocol == "http2":
            self.protocol = PROTO_HTTP2
        elif protocol == "auto":
            self.protocol = PROTO_AUTO
        else:
            raise ValueError(f"cluster {name}: protocol must be http1, http2 or auto")

    @property
    def protocol_name(self):
        return ("http1", "http2", "auto")[self.protocol]

    cdef bint same_balancing(self, ClusterConf o):
        # Whether a load balancer built for `o` serves this config unchanged.
        return (o is not None and o.lb_policy == self.lb_policy
                and o.lb_options == self.lb_options)

    def __repr__(self):
        return f"ClusterConf({self.name!r}, {self.lb_policy}, {list(self.endpoints)})"


@cython.final
cdef class ClusterState:
    """A cluster inside one worker: survives snapshots; `conf` is swapped,
    the endpoint set can be swapped on its own (set_endpoints)."""

    def __init__(self, Worker worker, ClusterConf conf):
        self.worker = worker
        self.name = conf.name
        self.endpoints = []
        self.by_key = {}
        labels = (("cluster", conf.name),)
        self.stats = worker.registry.block("cluster", CLUSTER_NAMES, CLUSTER_KINDS, labels)
        self.st = self.stats.v
        self.rq_time = worker.registry.histogram("cluster", CLUSTER_RQ_TIME, labels)
        self.cx_connect_time = worker.registry.histogram("cluster", CLUSTER_CX_CONNECT_TIME, labels)
        self.istio = {}
        self.mask = bytearray()
        self.update(conf)

    # --- control (called by Worker.apply / the discovery side) ----------------

    def update(self, ClusterConf conf):
        """Take a new snapshot's settings. The balancer and pools are kept
        when the endpoints and balancing settings are unchanged."""
        cdef ClusterConf old = self.conf
        self.conf = conf
        self.cb = conf.breakers           # new limits apply to the next admission
        if self.cb_waiting:
            cb_kick(self)                 # (a raised max_connections frees waiters)
        if old is None or not conf.same_balancing(old) or conf.endpoints != old.endpoints:
            self._set_endpoints(conf.endpoints, old is None or not conf.same_balancing(old))
        else:
            self._recount()         # the panic threshold may have changed
        # Outlier detection: kept with its endpoints' state across reloads,
        # made when configured, gone (every ejection ended) when not.
        if conf.outlier is None:
            if self.outlier is not None:
                self.outlier.clear()
                self.outlier = None
        elif self.outlier is None:
            self.outlier = OutlierDetector(self, conf.outlier)
        else:
            self.outlier.set_conf(conf.outlier)
        if conf.odst is None:
            if self.odst is not None:
                self.odst.stop()
                self.odst = None
        elif self.odst is None:
            self.odst = OriginalDstState(self, conf.odst)
        else:
            self.odst.set_conf(conf.odst)

    def set_endpoints(self, endpoints):
        """Swap the endpoint set without a new snapshot: (host, port, weight)
        or (host, port, weight, healthy) items (a discovery source's, where
        healthy False sets EP_FAILED_EDS_HEALTH). Routes are untouched, the
        balancer is rebuilt only if the set changed, pools of endpoints that
        left drain. One pass in C: 10,000 endpoints must not stall the loop."""
        self._set_endpoints(tuple(endpoints), False)
        self.endpoint_updates += 1

    def clear_health_flag(self, unsigned int flag):
        """Clear one EP_* flag on every endpoint (one pass; for the sources
        that do not apply to this cluster any more)."""
        cdef Endpoint ep
        cdef Py_ssize_t i = 0
        cdef bint changed = False
        for ep in self.endpoints:
            if ep.health_flags & flag:
                ep.health_flags &= ~flag
                self.mask[i] = ep.health_flags != 0
                changed = True
            i += 1
        if changed:
            self._recount()

    cdef _set_endpoints(self, tuple eps, bint force_lb):
        # Per endpoint: one tuple, one dict lookup, no Python call; an
        # endpoint that stays keeps its object (pool, flags, counters).
        cdef Endpoint ep
        cdef list new = []
        cdef dict by_key = {}
        cdef list weights = [], keys = []
        cdef dict old = self.by_key
        cdef bint same = not force_lb and len(eps) == len(self.endpoints)
        cdef Py_ssize_t n = len(eps)
        cdef int i = 0
        cdef int port, weight
        cdef bytearray mask = bytearray(n)
        cdef unsigned char* m = mask
        cdef tuple t
        for e in eps:
            t = <tuple>e if isinstance(e, tuple) else tuple(e)
            host = t[0]
            if type(host) is not str:
                host = str(host)
            port = t[1]
            weight = t[2]
            key = (host, port)
            ep = old.get(key)
            if ep is None or key in by_key:
                ep = Endpoint(host, port, i, weight)
                same = False
            else:
                if ep.weight != weight or ep.index != i:
                    same = False
                ep.weight = weight
                ep.index = i
            if len(t) > 3:
                if t[3]:
                    ep.health_flags &= ~EP_FAILED_EDS_HEALTH
                else:
                    ep.health_flags |= EP_FAILED_EDS_HEALTH
            m[i] = ep.health_flags != 0
            new.append(ep)
            weights.append(weight)
            keys.append(ep.lb_key)
            by_key[key] = ep
            i += 1
        for key, ep in old.items():
            if key not in by_key:
                # Make-before-break: no new picks from now on (it is not in
                # the balancer), requests in flight finish, idle connections
                # close, busy ones are not pooled again.
                ep.removed = True
                ep.pool.close_all()
        self.endpoints = new
        self.by_key = by_key
        if not same or self.lb is None:
            self.lb = _make_lb(self.conf.lb_policy, weights or [1], keys or [b"-"],
                               self.conf.lb_options)
            self.lb_builds += 1
        # The mask follows the endpoints' new positions; exclusion belongs to
        # the endpoint, so it survives any change of the set.
        self.mask = mask
        self._recount()
        if self.outlier is not None:
            self.outlier.recount()

    cdef void _recount(self):
        # The panic decision follows every change of the set or of a flag
        # (no membership gauges here: workers' blocks are summed, and every
        # worker has the same membership). Envoy's panic: when the healthy share falls below
        # healthy_panic_threshold percent, balance across every endpoint (a
        # mostly-failed check is likelier wrong than a mostly-dead cluster).
        cdef int n = len(self.endpoints)
        self.nmasked = sum(self.mask)
        self.panic = n > 0 and self.nmasked > 0 and (
            (n - self.nmasked) * 100.0 < self.conf.healthy_panic_threshold * n)

    cdef bint set_health_flag(self, int index, unsigned int flag, bint on):
        # The hook for health checking, outlier detection and discovery: each
        # owns one EP_* bit, and an endpoint with any bit set is not picked
        # (outside panic). Returns whether the endpoint's exclusion changed.
        cdef Endpoint ep = <Endpoint>self.endpoints[index]
        cdef bint was = ep.health_flags != 0
        if on:
            ep.health_flags |= flag
        else:
            ep.health_flags &= ~flag
        if (ep.health_flags != 0) == was:
            return False
        self.mask[index] = not was
        self._recount()
        return True

    def set_health(self, int index, unsigned int flag, bint on):
        """Set or clear one EP_* health flag of endpoint `index` (Python side:
        control/health.py through the worker, tests). True if the endpoint's
        exclusion changed."""
        if not 0 <= index < len(self.endpoints):
            raise IndexError(index)
        return self.set_health_flag(index, flag, on)

    def set_excluded(self, int index, bint excluded):
        """Exclude an endpoint by hand (EP_EXCLUDED_MANUAL): not picked while
        the cluster is not in panic."""
        return self.set_health(index, EP_EXCLUDED_MANUAL, excluded)

    @property
    def in_panic(self):
        return self.panic

    cdef void remove(self):
        # The cluster left the snapshot: requests in flight finish, pools drain.
        # Its stats leave the output now (they keep counting, unseen, until
        # the last request lets go); if it comes back it counts from zero.
        cdef Endpoint ep
        self.removed = True
        if self.outlier is not None:
            self.outlier.stop()
        if self.odst is not None:
            self.odst.stop()
        self.worker.registry.forget("cluster", self.stats.labels)
        cb_fail_queue(self)                 # nothing will free a connection for them
        for ep in self.endpoints:
            ep.removed = True
            ep.pool.close_all()

    cdef void drain_pools(self):
        cdef Endpoint ep
        for ep in self.endpoints:
            ep.pool.close_all()

    # --- data side --------------------------------------------------------

    cdef int pick(self, uint64_t h, int exclude):
        # The balancer's choice, honouring the exclusion mask; an empty
        # endpoint set, or every endpoint excluded outside panic, gives -1
        # (only `exclude` left gives exclude).
        cdef int idx, i, n = len(self.endpoints)
        cdef const unsigned char* m
        if n == 0:
            return -1
        if exclude >= 0:
            idx = self.lb.pick_excluding(h, exclude)
        else:
            idx = self.lb.pick(h)
        if self.nmasked == 0 or idx < 0:
            return idx
        m = self.mask
        if not m[idx]:
            return idx
        if self.panic:
            self.st[LB_HEALTHY_PANIC] += 1
            return idx            # Envoy's panic mode: every endpoint takes traffic
        if self.nmasked >= n:
            # Every endpoint excluded and panic off (threshold 0): Envoy's
            # no_healthy_upstream, a 503 now rather than a doomed connect.
            return -1
        for i in range(4):
            idx = self.lb.pick(h ^ rand64())
            if not m[idx] and idx != exclude:
                return idx
        for i in range(n):
            if not m[(idx + i) % n] and (idx + i) % n != exclude:
                return (idx + i) % n
        return idx

    def _cb_serve(self):
        # (loop.call_soon target: cb_kick)
        cb_serve(self)

    @property
    def breaker_counts(self):
        """What the circuit breakers count, per priority (tests, admin)."""
        return {name: {"requests": self.cb_rq[p], "pending": self.cb_npending[p],
                       "retries": self.cb_retries[p]}
                for p, name in enumerate(CB_PRIORITIES)} | {
            "connections": self.cb_cx, "pools": self.cb_pools}

    def pool_sizes(self):
        """{(host, port): (idle HTTP/1.1, HTTP/2) connections} (tests, admin)."""
        cdef Endpoint ep
        return {(ep.host, ep.port): (len(ep.pool.idle), len(ep.pool.h2conns))
                for ep in self.endpoints}

    @property
    def protocol_name(self):
        return self.conf.protocol_name

    def __repr__(self):
        return f"ClusterState({self.name!r}, {self.endpoints})"

