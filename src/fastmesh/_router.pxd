# Route matching over tables built once per config: virtual host by Host,
# then routes in order (path prefix / exact / regex + header matchers).

from fastmesh._headers cimport HeaderSlice

cdef enum RouteAction:
    ACTION_CLUSTER = 0
    ACTION_WEIGHTED = 1
    ACTION_DIRECT = 2

cdef class Route:
    cdef readonly str name
    cdef readonly int action             # RouteAction
    cdef readonly object cluster         # ACTION_CLUSTER: opaque object from the builder
    cdef readonly tuple clusters         # ACTION_WEIGHTED: opaque objects
    cdef unsigned int* cum_weights       # ACTION_WEIGHTED: cumulative weights
    cdef readonly unsigned int total_weight
    cdef readonly int direct_status      # ACTION_DIRECT
    cdef readonly bytes direct_body      # ACTION_DIRECT
    cdef readonly double timeout         # seconds; 0 = none
    cdef readonly object extra           # reserved for later per-route policy (retries, ...)

    cdef object pick_weighted(self, unsigned int r)   # r: any random 32-bit number

cdef class Router:
    cdef Route match(self, const char* host, Py_ssize_t host_len,
                     const char* path, Py_ssize_t path_len, Py_ssize_t query_len,
                     const char* base, HeaderSlice* headers, int nheaders)
        # host: the Host (or :authority) value, any case, maybe with :port.
        # path: the request target's path; the query string (starting with
        # '?', query_len bytes, may be 0) follows the path in memory.
        # base + headers: the request headers, for header matchers.
        # Returns the first matching Route, or None (-> 404).
