# cython: language_level=3
"""A compiled user filter, built outside fastmesh against its .pxd files
(tests/test_cython_filter.py builds it): lets a request through only if its
`x-gate` header is `open`; otherwise answers 403 from the proxy (and
raises for `boom`, to show that a failing compiled hook gets a 500). It also
counts what it saw, readable from Python."""
from fastmesh._core cimport HttpFilter, ProxyStream, FILTER_CONTINUE, FILTER_STOP, \
    FH_REQUEST_HEADERS
from libc.string cimport memcmp


cdef class HeaderGate(HttpFilter):
    cdef readonly long passed, refused

    def __cinit__(self, *args, **kwargs):
        self.hooks = FH_REQUEST_HEADERS

    cdef int request_headers(self, ProxyStream s) except -1:
        cdef Py_ssize_t n = 0
        cdef const char* v = s.rq_header("x-gate", 6, &n)
        if v != NULL and n == 4 and memcmp(v, b"open", 4) == 0:
            self.passed += 1
            return FILTER_CONTINUE
        if v != NULL and n == 4 and memcmp(v, b"boom", 4) == 0:
            raise ValueError("gate exploded")      # a compiled hook that fails
        self.refused += 1
        s.filter_reply(403, b"gate closed\n")
        return FILTER_STOP
