# filter_router.pxd: declarations of filter_router.pxi (see _core.pxd)

cdef class RouterFilter(HttpFilter):
    cdef int request_headers(self, ProxyStream s) except -1
