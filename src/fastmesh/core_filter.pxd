# core_filter.pxd: declarations of core_filter.pxi (see _core.pxd): the
# filter API. A compiled filter subclasses HttpFilter, sets `hooks` in its
# __cinit__ and overrides the cdef hooks it has; it reads the request through
# the ProxyStream's rq_* view (core_stream.pxd) and answers FILTER_*.
# docs/filters.md has a worked example.

cdef enum:
    FILTER_CONTINUE = 0
    FILTER_STOP = 1
    FILTER_PAUSE = 2

cdef enum:  # HttpFilter.hooks: which hooks a filter has
    FH_REQUEST_HEADERS = 1
    FH_REQUEST_BODY = 2
    FH_RESPONSE_HEADERS = 4
    FH_RESPONSE_BODY = 8
    FH_DONE = 16

cdef class HttpFilter:
    cdef public str name         # the config name (errors name it)
    cdef public int hooks
    cdef object py_req, py_resp, py_done     # bound Python hooks (Python subclasses)
    cdef object py_reqb, py_respb

    cdef int request_headers(self, ProxyStream s) except -1
    cdef int request_body(self, ProxyStream s, const char* data, Py_ssize_t n) except -1
    cdef void response_headers(self, ProxyStream s, int status)
    cdef void response_body(self, ProxyStream s, const char* data, Py_ssize_t n)
    cdef void done(self, ProxyStream s)

cdef class Request:
    cdef ProxyStream s
    cdef object _state
    cdef object task

    cdef inline ProxyStream live(self)
    cdef void await_filter(self, HttpFilter f, object aw)
    cdef void invalidate(self)
