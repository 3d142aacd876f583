# filter_noop.pxd: declarations of filter_noop.pxi (see _core.pxd)

cdef class NoopFilter(HttpFilter):
    cdef int request_headers(self, ProxyStream s) except -1
