# core_endpoint.pxd: declarations of core_endpoint.pxi (see _core.pxd)

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
    cdef readonly bint excluded   # health/ejection: not picked while others can be
    cdef EndpointPool pool
