# Route matching over tables built once per config: virtual host by Host,
# then routes in order (path prefix / exact / regex + header matchers).

from fastmesh._headers cimport HeaderSlice

from cpython.object cimport PyObject

# ---- Addition: compiled matching tables (router internals). Every pointer in
# these structs points into a bytes / pattern / Route object that Router._keep
# keeps alive; the arrays themselves are owned (malloc'ed) by the Router.

cdef enum PathKind:
    PM_ANY = 0          # no path specifier: every path
    PM_PREFIX = 1       # compared with path + query (as Envoy does)
    PM_PATH = 2         # exact, path without query
    PM_REGEX = 3        # re fullmatch, path without query

cdef enum HeaderKind:
    HM_EXACT = 0
    HM_PREFIX = 1
    HM_REGEX = 2
    HM_PRESENT = 3

cdef struct HeaderMatcherC:
    const char* name            # lowercased
    Py_ssize_t name_len
    int kind                    # HeaderKind
    const char* value           # HM_EXACT / HM_PREFIX
    Py_ssize_t value_len
    PyObject* regex             # HM_REGEX: compiled bytes pattern (borrowed)
    bint present                # HM_PRESENT: True = must be present, False = absent
    bint invert

cdef struct RouteC:
    int path_kind               # PathKind
    const char* pat             # PM_PREFIX / PM_PATH (lowercased when not case_sensitive)
    Py_ssize_t pat_len
    PyObject* regex             # PM_REGEX (borrowed)
    bint case_sensitive
    HeaderMatcherC* headers     # slice of Router._hdrs
    int nheaders
    PyObject* route             # the Route (borrowed)

cdef struct VHostC:
    RouteC* routes              # slice of Router._routes
    int nroutes

cdef struct DomainC:
    const char* pat             # suffix ("*" removed) or prefix, lowercased
    Py_ssize_t len
    int vhost

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
    cdef readonly int priority           # Envoy's RoutingPriority: 0 default, 1 high
    cdef readonly object timeouts        # _core.RouteTimeouts (idle, max stream duration) or None
    cdef readonly dict per_filter        # filter name -> its per-route config (typed_per_filter_config), or None
    cdef readonly object stats           # _core.RouteStats (per-route counters), or None

    cdef object pick_weighted(self, unsigned int r)   # r: any random 32-bit number

cdef class Router:
    # ---- Addition: fields (filled once by __init__, then read-only) ----
    cdef readonly tuple vhost_names
    cdef list _keep             # owners of every borrowed pointer in the tables
    cdef dict _exact            # lowercased domain bytes -> vhost index
    cdef DomainC* _suffix       # "*.x.com" entries, longest first
    cdef int _nsuffix
    cdef DomainC* _prefix       # "api.*" entries, longest first
    cdef int _nprefix
    cdef int _default           # "*" vhost index, -1 if none
    cdef VHostC* _vhosts
    cdef int _nvhosts
    cdef RouteC* _routes
    cdef HeaderMatcherC* _hdrs

    cdef int find_vhost(self, const char* host, Py_ssize_t host_len)
        # Addition: index of the virtual host for this Host value, -1 if none.

    cdef Route match(self, const char* host, Py_ssize_t host_len,
                     const char* path, Py_ssize_t path_len, Py_ssize_t query_len,
                     const char* base, HeaderSlice* headers, int nheaders)
        # host: the Host (or :authority) value, any case, maybe with :port.
        # path: the request target's path; the query string (starting with
        # '?', query_len bytes, may be 0) follows the path in memory.
        # base + headers: the request headers, for header matchers.
        # Returns the first matching Route, or None (-> 404).
