# filter_router.pxi: the router, the last filter of every HTTP chain.
#
# It matches the route (virtual host by authority, then path and headers),
# answers what needs no upstream (no route: 404; direct_response), picks the
# cluster (weighted clusters by a random draw) and the endpoint (the
# cluster's balancer, with the request's hash key for ring_hash/maglev), and
# leaves them on the stream, which then starts the UpstreamRequest. One copy
# for HTTP/1.1 and HTTP/2 clients alike.


@cython.final
cdef class RouterFilter(HttpFilter):
    """Route, pick a cluster and an endpoint; 404 / 503 / direct responses."""

    def __cinit__(self, *args, **kwargs):
        self.name = "router"
        self.hooks = FH_REQUEST_HEADERS

    cdef int request_headers(self, ProxyStream s) except -1:
        cdef Route route = s.matched_route()
        cdef ClusterState c
        cdef object name
        cdef uint64_t h
        cdef int idx
        if route is None:
            s.local_reply(404, b"")
            return FILTER_STOP
        if route.action == ACTION_DIRECT:
            s.local_reply(route.direct_status, route.direct_body)
            return FILTER_STOP
        if route.action == ACTION_WEIGHTED:
            name = route.pick_weighted(<unsigned int>(rand64() >> 32))
        else:
            name = route.cluster
        c = s.worker.clusters.get(name)
        if c is None:
            # The snapshot names it, so this is a cluster being removed.
            s.local_reply(503, b"no healthy upstream\n")
            return FILTER_STOP
        if c.conf.hash_kind == HASH_HEADER:
            h = s.header_hash(c.conf.hash_header)
        elif c.conf.hash_kind == HASH_SOURCE_IP:
            h = hash_bytes(s.client_ip, len(s.client_ip), 0)
        else:
            h = 0
        if c.odst is not None:
            # ORIGINAL_DST: the destination, not a balancer, picks; the
            # endpoint is found per attempt (start_attempt).
            s.up_dst = odst_for_stream(s, c.conf.odst)
            if s.up_dst is None:
                c.st[UPSTREAM_CX_NONE_HEALTHY] += 1
                s.local_reply(503, b"no original destination\n")
                return FILTER_STOP
            idx = 0
        else:
            idx = c.pick(h, -1)
            if idx < 0:
                c.st[UPSTREAM_CX_NONE_HEALTHY] += 1
                s.local_reply(503, b"no healthy upstream\n")
                return FILTER_STOP
        s.route = route
        s.cluster = c
        if route.timeouts is not None or s.conf.max_stream_duration > 0:
            route_timeouts(s, route)
        s.pick_hash = h
        s.pick_idx = idx
        return FILTER_CONTINUE
