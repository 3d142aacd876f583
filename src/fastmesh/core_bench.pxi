# core_bench.pxi: hooks for microbenchmarks of compiled paths that have no
# Python entry point of their own (perf/bench_filters.py). Not used by the
# proxy.

from time import perf_counter as _perf_counter


def bench_filter_chain(filters, Py_ssize_t n):
    """Run the request-headers stage of an HTTP listener whose chain is
    `filters` then the router, for `n` requests (GET / with 4 headers, routed
    to a one-endpoint cluster), in a C loop over one synthetic stream with no
    socket. Returns the elapsed seconds. Each request is reset, run through
    the chain and ended (done hooks, the Python view invalidated) as the
    codecs do."""
    import asyncio
    from fastmesh import _router
    route = _router.Route("r", "cluster", cluster="c")
    router = _router.Router([("all", ["*"], [(_router.RouteMatch(prefix="/"), route)])])
    conf = ListenerConf("bench", "http", router=router, filters=list(filters))
    cluster = ClusterConf("c", "round_robin", [("127.0.0.1", 9, 1)])
    loop = asyncio.new_event_loop()
    cdef Worker w = Worker(loop)
    cdef HeaderList hl = HeaderList()
    cdef HttpDownstream s
    cdef Py_ssize_t i
    cdef bytes line = b"GET/example.com"
    cdef const char* p = line
    for name, value in ((b"host", b"example.com"), (b"user-agent", b"bench/1.0"),
                        (b"accept", b"*/*"), (b"x-request-id", b"0123456789")):
        hl.add(name, len(name), value, len(value), 0)
    try:
        w.apply(Snapshot({"bench": conf}, {"c": cluster}, 1, 0.0))
        s = HttpDownstream.__new__(HttpDownstream, w.listener_state("bench"))
        s.worker = w
        s.conf = conf
        s.client_ip = b"127.0.0.1"
        t0 = _perf_counter()
        for i in range(n):
            s.reset_request()
            s.rq_base = hl.base()
            s.rq_hs = hl.hs
            s.rq_n = hl.n
            s.rq_method = p
            s.rq_method_len = 3
            s.rq_path = p + 3
            s.rq_path_len = 1
            s.rq_query_len = 0
            s.rq_host = p + 4
            s.rq_host_len = 11
            if s.run_request(0) != FILTER_CONTINUE:
                raise RuntimeError("the chain did not let the request through")
            s.request_over()
        return _perf_counter() - t0
    finally:
        w.close_all()
        loop.close()
