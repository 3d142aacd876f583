"""Route matching: request (Host, path, headers) -> Route, over tables built once.

The control side compiles the route config into a Router once per config
version (as Envoy builds its RouteConfiguration on the main thread); the data
side calls the C method `Router.match()` once per request with pointers into
the parsed head, so matching copies nothing and, in the common case, makes no
Python object (one lowercased bytes for the exact-domain dict lookup, and the
subject string of a regex matcher, are the exceptions).

Matching follows Envoy:

1. Virtual host by Host (case-insensitive): exact domain, then the longest
   suffix wildcard ("*.example.com", "*-bar.example.com"), then the longest
   prefix wildcard ("api.*"), then "*". A wildcard never matches the empty
   string. If the Host has a port and no exact/wildcard domain matches it,
   the same lookup is done on the host without the port, before "*".
2. Routes of that virtual host in order; the first whose path matcher and
   all header matchers match wins. `prefix` is compared with path + query
   string (as Envoy does), `path` (exact) and `regex` (full match) with the
   path alone.

Building (Python side)::

    Router([
        ("api", ["api.example.com", "api.example.com:8080"], [
            (RouteMatch(prefix=b"/v1/", headers=[HeaderMatch(b"x-canary", exact=b"1")]),
             Route("v1-canary", "weighted", clusters=(c1, c2), weights=(90, 10))),
            (RouteMatch(prefix=b"/"), Route("default", "cluster", cluster=c1)),
        ]),
        ("fallback", ["*"], [(RouteMatch(), Route("nf", "direct", direct_status=404))]),
    ])
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.string cimport memcmp, memcpy

from fastmesh._headers cimport HeaderSlice

import re

ACTION_NAMES = {"cluster": ACTION_CLUSTER, "weighted": ACTION_WEIGHTED, "direct": ACTION_DIRECT}
# Python-visible copies of the enum, for the control side.
CLUSTER = ACTION_CLUSTER
WEIGHTED = ACTION_WEIGHTED
DIRECT = ACTION_DIRECT


# ------------------------------------------------------------- byte helpers

cdef inline unsigned char _lower(unsigned char c) noexcept nogil:
    # ASCII only: HTTP names, hosts and the paths we fold are ASCII.
    if c >= 65 and c <= 90:
        return c + 32
    return c


cdef inline bint _ieq_lower(const char* s, const char* lower_pat, Py_ssize_t n) noexcept nogil:
    # s (any case) equals lower_pat (already lowercased), n bytes each
    cdef Py_ssize_t i
    for i in range(n):
        if _lower(<unsigned char>s[i]) != <unsigned char>lower_pat[i]:
            return False
    return True


cdef inline bint _eq(const char* s, const char* pat, Py_ssize_t n, bint case_sensitive) noexcept nogil:
    if case_sensitive:
        return memcmp(s, pat, n) == 0
    return _ieq_lower(s, pat, n)


cdef Py_ssize_t _strip_port(const char* host, Py_ssize_t n) noexcept nogil:
    # Length of host without a trailing ":digits" port, n if there is none.
    # "[v6]:port" keeps the brackets; a bare IPv6 address (several ':') has
    # no port to strip.
    cdef Py_ssize_t i, colon = -1, ncolons = 0
    if n == 0:
        return 0
    if host[0] == b'[':
        for i in range(n):
            if host[i] == b']':
                if i + 1 < n and host[i + 1] == b':':
                    colon = i + 1
                break
    else:
        for i in range(n):
            if host[i] == b':':
                colon = i
                ncolons += 1
        if ncolons != 1:
            return n
    if colon < 0 or colon + 1 >= n:
        return n if colon < 0 else colon     # "host:" -> "host"
    for i in range(colon + 1, n):
        if host[i] < b'0' or host[i] > b'9':
            return n
    return colon


cdef bytes _as_bytes(object v, str what, str encoding="ascii"):
    # Names, domains and paths are ASCII on the wire (paths percent-encoded);
    # header values from the config may be any text and are sent as UTF-8.
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        try:
            return v.encode(encoding)
        except UnicodeEncodeError:
            raise ValueError(f"{what} must be {encoding.upper()}: {v!r}") from None
    raise TypeError(f"{what} must be bytes or str, got {type(v).__name__}")


cdef object _compile(object rx, int flags):
    # Regexes run on bytes (the request is bytes); compiled once per config.
    if isinstance(rx, str):
        rx = rx.encode("utf-8")
    if not isinstance(rx, bytes):
        raise TypeError(f"regex must be str or bytes, got {type(rx).__name__}")
    try:
        return re.compile(rx, flags)
    except re.error as exc:
        raise ValueError(f"bad regex {rx!r}: {exc}") from None


# ------------------------------------------------------------------- Route

cdef class Route:
    """Route(name, action, cluster=None, clusters=(), weights=(),
             direct_status=0, direct_body=b"", timeout=15.0, extra=None,
             priority=0, timeouts=None, per_filter=None, stats=None)

    What to do with a matched request.

    action: "cluster" (or ACTION_CLUSTER=0): forward to `cluster`;
            "weighted" (1): forward to one of `clusters`, chosen with
            probability weights[i] / sum(weights) via pick_weighted();
            "direct" (2): answer `direct_status` with `direct_body`.
    cluster / clusters: opaque objects from the builder (e.g. the Cluster
            snapshot); the router never looks inside them.
    timeout: seconds for the whole upstream exchange, 0 = none.
    extra:  reserved for later per-route policy (retries, rewrites, ...).
    priority: Envoy's RoutingPriority, 0 (default) or 1 (high): which of
            the cluster's circuit-breaker thresholds the request counts in.
    timeouts: the route's other timeouts (idle, max stream duration; an
            opaque object for _core), None when it has none.
    per_filter: {filter name: per-route config object} (Envoy's
            typed_per_filter_config, the virtual host's merged in), or None.
    stats:  an opaque object for _core's per-route counters, or None.
    Raises ValueError / TypeError on an inconsistent combination.
    """

    def __cinit__(self, *args, **kwargs):
        self.cum_weights = NULL
        self.total_weight = 0

    def __dealloc__(self):
        PyMem_Free(self.cum_weights)

    def __init__(self, str name not None, action, cluster=None, clusters=(), weights=(),
                 int direct_status=0, bytes direct_body=b"", double timeout=15.0, extra=None,
                 int priority=0, timeouts=None, per_filter=None, stats=None):
        if isinstance(action, str):
            if action not in ACTION_NAMES:
                raise ValueError(f"route {name!r}: unknown action {action!r}")
            action = ACTION_NAMES[action]
        if action not in (ACTION_CLUSTER, ACTION_WEIGHTED, ACTION_DIRECT):
            raise ValueError(f"route {name!r}: unknown action {action!r}")
        if timeout < 0:
            raise ValueError(f"route {name!r}: timeout must be >= 0")
        self.name = name
        self.action = action
        self.cluster = cluster
        self.clusters = tuple(clusters)
        self.direct_status = direct_status
        self.direct_body = direct_body if direct_body is not None else b""
        self.timeout = timeout
        self.extra = extra
        if priority not in (0, 1):
            raise ValueError(f"route {name!r}: priority must be 0 (default) or 1 (high)")
        self.priority = priority
        self.timeouts = timeouts
        self.per_filter = dict(per_filter) if per_filter else None
        self.stats = stats
        cdef Py_ssize_t i, n
        cdef unsigned long long acc = 0
        if action == ACTION_CLUSTER:
            if cluster is None:
                raise ValueError(f"route {name!r}: action 'cluster' needs cluster=")
        elif action == ACTION_WEIGHTED:
            ws = tuple(weights)
            n = len(self.clusters)
            if n == 0 or len(ws) != n:
                raise ValueError(f"route {name!r}: 'weighted' needs clusters and one weight each")
            for w in ws:
                if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
                    raise ValueError(f"route {name!r}: weights must be positive ints, got {w!r}")
                acc += <unsigned long long>w
                if acc > 0xFFFFFFFF:
                    raise ValueError(f"route {name!r}: total weight must be < 2**32")
            PyMem_Free(self.cum_weights)      # __init__ called twice
            self.cum_weights = <unsigned int*>PyMem_Malloc(n * sizeof(unsigned int))
            if self.cum_weights == NULL:
                raise MemoryError()
            acc = 0
            for i in range(n):
                acc += <unsigned long long>ws[i]
                self.cum_weights[i] = <unsigned int>acc
            self.total_weight = <unsigned int>acc
        else:
            if not 100 <= direct_status <= 599:
                raise ValueError(f"route {name!r}: direct_status must be 100..599")

    cdef object pick_weighted(self, unsigned int r):
        # First cluster whose cumulative weight exceeds r % total.
        cdef unsigned int x
        cdef Py_ssize_t lo = 0, hi, mid
        if self.total_weight == 0:
            return None
        x = r % self.total_weight
        hi = len(self.clusters) - 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.cum_weights[mid] > x:
                hi = mid
            else:
                lo = mid + 1
        return <object>PyTuple_GET_ITEM(self.clusters, lo)

    def pick_weighted_py(self, unsigned int r):
        """pick_weighted(r) from Python (tests)."""
        return self.pick_weighted(r)

    def __repr__(self):
        return f"<Route {self.name!r} action={self.action}>"


# ---------------------------------------------------------------- matchers

class HeaderMatch:
    """HeaderMatch(name, exact=None, prefix=None, regex=None, present=None, invert=False)

    One header condition. name: bytes or str, compared case-insensitively.
    Exactly one of: exact (bytes: value equals), prefix (bytes: value starts
    with), regex (str/bytes: full match of the value, compiled once as a
    bytes pattern; case-sensitive unless it says (?i)), present (True: header
    is present, False: header is absent). A header that occurs several times
    is matched as its values joined with "," (as Envoy does). invert=True
    negates the result, including for an absent header (unlike Envoy, which
    never matches an absent header with an inverted value matcher).
    """
    __slots__ = ("name", "exact", "prefix", "regex", "present", "invert")

    def __init__(self, name, exact=None, prefix=None, regex=None, present=None, invert=False):
        given = [x is not None for x in (exact, prefix, regex, present)]
        if sum(given) != 1:
            raise ValueError("HeaderMatch needs exactly one of exact, prefix, regex, present")
        self.name = _as_bytes(name, "header name").lower()
        if not self.name:
            raise ValueError("HeaderMatch name must not be empty")
        self.exact = None if exact is None else _as_bytes(exact, "header value", "utf-8")
        self.prefix = None if prefix is None else _as_bytes(prefix, "header prefix", "utf-8")
        self.regex = regex
        self.present = None if present is None else bool(present)
        self.invert = bool(invert)

    def __repr__(self):
        parts = [f"{k}={getattr(self, k)!r}" for k in self.__slots__
                 if getattr(self, k) not in (None, False)]
        return f"HeaderMatch({', '.join(parts)})"


class RouteMatch:
    """RouteMatch(prefix=None, path=None, regex=None, headers=(), case_sensitive=True)

    The condition of one route. At most one of prefix (bytes: path + query
    starts with it), path (bytes: path without query equals it), regex
    (str/bytes: full match of the path without query); none = every path.
    headers: HeaderMatch list, all must match. case_sensitive=False folds
    ASCII case for prefix and path and compiles the regex with re.IGNORECASE
    (Envoy ignores the flag for regexes; here it means what it says).
    Regexes (str or bytes) are compiled once, as bytes patterns.
    """
    __slots__ = ("prefix", "path", "regex", "headers", "case_sensitive")

    def __init__(self, prefix=None, path=None, regex=None, headers=(), case_sensitive=True):
        if sum(x is not None for x in (prefix, path, regex)) > 1:
            raise ValueError("RouteMatch takes at most one of prefix, path, regex")
        self.prefix = None if prefix is None else _as_bytes(prefix, "prefix")
        self.path = None if path is None else _as_bytes(path, "path")
        self.regex = regex
        self.headers = tuple(headers)
        for h in self.headers:
            if not isinstance(h, HeaderMatch):
                raise TypeError(f"RouteMatch headers must be HeaderMatch, got {h!r}")
        self.case_sensitive = bool(case_sensitive)

    def __repr__(self):
        parts = [f"{k}={getattr(self, k)!r}" for k in self.__slots__
                 if getattr(self, k) not in (None, (), True)]
        return f"RouteMatch({', '.join(parts)})"


# ------------------------------------------------------------------ matching

cdef int _find_domain(Router self, const char* host, Py_ssize_t n) except -2:
    # exact, longest suffix wildcard, longest prefix wildcard; -1 if none
    cdef bytes key
    cdef char* k
    cdef Py_ssize_t i
    cdef PyObject* v
    cdef DomainC* d
    if self._exact:
        key = PyBytes_FromStringAndSize(NULL, n)
        k = PyBytes_AS_STRING(key)
        for i in range(n):
            k[i] = <char>_lower(<unsigned char>host[i])
        v = PyDict_GetItem(self._exact, key)
        if v != NULL:
            return <int><object>v
    for i in range(self._nsuffix):
        d = &self._suffix[i]
        if n > d.len and _ieq_lower(host + n - d.len, d.pat, d.len):
            return d.vhost
    for i in range(self._nprefix):
        d = &self._prefix[i]
        if n > d.len and _ieq_lower(host, d.pat, d.len):
            return d.vhost
    return -1


cdef bint _path_ok(RouteC* rc, const char* path, Py_ssize_t path_len,
                   Py_ssize_t query_len) except -1:
    cdef Py_ssize_t full
    if rc.path_kind == PM_ANY:
        return True
    if rc.path_kind == PM_PREFIX:
        full = path_len + query_len
        return full >= rc.pat_len and _eq(path, rc.pat, rc.pat_len, rc.case_sensitive)
    if rc.path_kind == PM_PATH:
        return path_len == rc.pat_len and _eq(path, rc.pat, rc.pat_len, rc.case_sensitive)
    # PM_REGEX: `re` needs an object to match against
    return (<object>rc.regex).fullmatch(PyBytes_FromStringAndSize(path, path_len)) is not None


cdef bint _header_ok(HeaderMatcherC* m, const char* base, HeaderSlice* hs, int nh) except -1:
    cdef int j, first = -1, count = 0
    cdef const char* val
    cdef Py_ssize_t vlen
    cdef bint ok
    cdef bytes joined = None
    for j in range(nh):
        if hs[j].name_len == m.name_len and _ieq_lower(base + hs[j].name_off, m.name, m.name_len):
            if first < 0:
                first = j
            count += 1
    if first < 0:
        ok = m.kind == HM_PRESENT and not m.present
    elif m.kind == HM_PRESENT:
        ok = m.present
    else:
        if count == 1:
            val = base + hs[first].value_off
            vlen = hs[first].value_len
        else:
            # rare: a repeated header is matched as "v1,v2,..." like Envoy
            joined = b",".join([
                PyBytes_FromStringAndSize(base + hs[j].value_off, hs[j].value_len)
                for j in range(nh)
                if hs[j].name_len == m.name_len
                and _ieq_lower(base + hs[j].name_off, m.name, m.name_len)])
            val = PyBytes_AS_STRING(joined)
            vlen = len(joined)
        if m.kind == HM_EXACT:
            ok = vlen == m.value_len and memcmp(val, m.value, vlen) == 0
        elif m.kind == HM_PREFIX:
            ok = vlen >= m.value_len and memcmp(val, m.value, m.value_len) == 0
        else:
            ok = (<object>m.regex).fullmatch(
                joined if joined is not None else PyBytes_FromStringAndSize(val, vlen)) is not None
    return ok != m.invert


cdef DomainC* _domain_array(Router self, list entries) except? NULL:
    cdef DomainC* arr = <DomainC*>PyMem_Malloc(max(len(entries), 1) * sizeof(DomainC))
    cdef Py_ssize_t i
    if arr == NULL:
        raise MemoryError()
    for i, (pat, vi) in enumerate(entries):
        self._keep.append(pat)
        arr[i].pat = <const char*>(<bytes>pat)
        arr[i].len = len(pat)
        arr[i].vhost = vi
    return arr


cdef class _Request:
    # A request laid out the way the codec hands it to the router: one
    # buffer, header slices as offsets into it, path followed by its query.
    cdef bytes buf
    cdef bytes _host
    cdef bytes _target
    cdef const char* host
    cdef Py_ssize_t host_len
    cdef const char* path
    cdef Py_ssize_t path_len, query_len
    cdef const char* base
    cdef HeaderSlice* slices
    cdef int n

    def __cinit__(self, bytes host, bytes target, list headers):
        self.slices = NULL
        self._host = host
        self._target = target
        self.host = host
        self.host_len = len(host)
        self.path = target
        q = target.find(b"?")
        self.path_len = len(target) if q < 0 else q
        self.query_len = len(target) - self.path_len
        parts = []
        self.n = len(headers)
        self.slices = <HeaderSlice*>PyMem_Malloc(max(self.n, 1) * sizeof(HeaderSlice))
        if self.slices == NULL:
            raise MemoryError()
        cdef Py_ssize_t off = 0
        cdef int i
        for i, (name, value) in enumerate(headers):
            name = bytes(name)
            value = bytes(value)
            # "name: value\r\n" like the wire, so offsets are realistic
            self.slices[i].name_off = off
            self.slices[i].name_len = len(name)
            self.slices[i].value_off = off + len(name) + 2
            self.slices[i].value_len = len(value)
            self.slices[i].flags = 0
            parts.append(name + b": " + value + b"\r\n")
            off += len(name) + len(value) + 4
        self.buf = b"".join(parts)
        self.base = self.buf

    def __dealloc__(self):
        PyMem_Free(self.slices)


# ------------------------------------------------------------------- Router

cdef class Router:
    """Router(virtual_hosts)

    virtual_hosts: sequence of (name: str, domains: list[str], routes) where
    routes is a list of (RouteMatch, Route) tried in order. A domain is
    exact ("api.example.com", "api.example.com:8080"), a suffix wildcard
    ("*.example.com"), a prefix wildcard ("api.*") or "*" (default); '*'
    anywhere else is an error. Domains are case-insensitive and must be
    unique across all virtual hosts (ValueError otherwise).
    """

    def __cinit__(self, *args, **kwargs):
        self._suffix = NULL
        self._prefix = NULL
        self._vhosts = NULL
        self._routes = NULL
        self._hdrs = NULL
        self._nsuffix = self._nprefix = self._nvhosts = 0
        self._default = -1

    def __dealloc__(self):
        PyMem_Free(self._suffix)
        PyMem_Free(self._prefix)
        PyMem_Free(self._vhosts)
        PyMem_Free(self._routes)
        PyMem_Free(self._hdrs)

    def __init__(self, virtual_hosts):
        if self._vhosts != NULL:
            raise RuntimeError("Router already initialised")
        vhosts = [tuple(vh) for vh in virtual_hosts]
        self._keep = []
        self._exact = {}
        names = []
        seen = {}
        suffixes = []       # (pattern bytes, vhost)
        prefixes = []
        nroutes = 0
        nhdrs = 0
        for vi, vh in enumerate(vhosts):
            if len(vh) != 3:
                raise ValueError(f"virtual host must be (name, domains, routes), got {vh!r}")
            name, domains, routes = vh
            names.append(str(name))
            if isinstance(domains, (str, bytes)):
                raise TypeError(f"virtual host {name!r}: domains must be a list")
            for dom in domains:
                d = _as_bytes(dom, "domain").lower()
                if not d:
                    raise ValueError(f"virtual host {name!r}: empty domain")
                if d in seen:
                    raise ValueError(f"domain {d.decode()!r} is in virtual hosts "
                                     f"{seen[d]!r} and {name!r}")
                seen[d] = name
                if d == b"*":
                    self._default = vi
                elif d.startswith(b"*") and b"*" not in d[1:]:
                    suffixes.append((d[1:], vi))
                elif d.endswith(b"*") and b"*" not in d[:-1]:
                    prefixes.append((d[:-1], vi))
                elif b"*" in d:
                    raise ValueError(f"domain {d.decode()!r}: '*' only at the start or end")
                else:
                    self._exact[d] = vi
            for entry in routes:
                if (not isinstance(entry, tuple) or len(entry) != 2
                        or not isinstance(entry[0], RouteMatch) or not isinstance(entry[1], Route)):
                    raise TypeError(f"virtual host {name!r}: routes must be (RouteMatch, Route), "
                                    f"got {entry!r}")
                nroutes += 1
                nhdrs += len(entry[0].headers)
        self.vhost_names = tuple(names)
        # Longest wildcard first, so the first hit is the most specific
        # (stable sort: equal lengths keep config order).
        suffixes.sort(key=lambda e: -len(e[0]))
        prefixes.sort(key=lambda e: -len(e[0]))
        self._suffix = _domain_array(self, suffixes)
        self._nsuffix = len(suffixes)
        self._prefix = _domain_array(self, prefixes)
        self._nprefix = len(prefixes)

        self._vhosts = <VHostC*>PyMem_Malloc(max(len(vhosts), 1) * sizeof(VHostC))
        self._routes = <RouteC*>PyMem_Malloc(max(nroutes, 1) * sizeof(RouteC))
        self._hdrs = <HeaderMatcherC*>PyMem_Malloc(max(nhdrs, 1) * sizeof(HeaderMatcherC))
        if self._vhosts == NULL or self._routes == NULL or self._hdrs == NULL:
            raise MemoryError()
        cdef int ri = 0, hi = 0
        cdef RouteC* rc
        cdef HeaderMatcherC* hm
        for vi, vh in enumerate(vhosts):
            self._vhosts[vi].routes = &self._routes[ri]
            self._vhosts[vi].nroutes = len(vh[2])
            for m, route in vh[2]:
                rc = &self._routes[ri]
                ri += 1
                self._keep.append(route)
                rc.route = <PyObject*>route
                rc.case_sensitive = m.case_sensitive
                rc.pat = NULL
                rc.pat_len = 0
                rc.regex = NULL
                if m.prefix is not None or m.path is not None:
                    pat = m.prefix if m.prefix is not None else m.path
                    if not m.case_sensitive:
                        pat = pat.lower()
                    self._keep.append(pat)
                    rc.path_kind = PM_PREFIX if m.prefix is not None else PM_PATH
                    rc.pat = <const char*>(<bytes>pat)
                    rc.pat_len = len(pat)
                elif m.regex is not None:
                    rx = _compile(m.regex, 0 if m.case_sensitive else re.IGNORECASE)
                    self._keep.append(rx)
                    rc.path_kind = PM_REGEX
                    rc.regex = <PyObject*>rx
                else:
                    rc.path_kind = PM_ANY
                rc.headers = &self._hdrs[hi]
                rc.nheaders = len(m.headers)
                for h in m.headers:
                    hm = &self._hdrs[hi]
                    hi += 1
                    self._keep.append(h.name)
                    hm.name = <const char*>(<bytes>h.name)
                    hm.name_len = len(h.name)
                    hm.invert = h.invert
                    hm.value = NULL
                    hm.value_len = 0
                    hm.regex = NULL
                    hm.present = False
                    if h.exact is not None or h.prefix is not None:
                        val = h.exact if h.exact is not None else h.prefix
                        self._keep.append(val)
                        hm.kind = HM_EXACT if h.exact is not None else HM_PREFIX
                        hm.value = <const char*>(<bytes>val)
                        hm.value_len = len(val)
                    elif h.regex is not None:
                        rx = _compile(h.regex, 0)
                        self._keep.append(rx)
                        hm.kind = HM_REGEX
                        hm.regex = <PyObject*>rx
                    else:
                        hm.kind = HM_PRESENT
                        hm.present = h.present
        self._nvhosts = len(vhosts)

    cdef int find_vhost(self, const char* host, Py_ssize_t host_len):
        cdef int v
        cdef Py_ssize_t bare
        if self._nvhosts == 0:
            return -1
        v = _find_domain(self, host, host_len)
        if v >= 0:
            return v
        bare = _strip_port(host, host_len)
        if bare != host_len:
            v = _find_domain(self, host, bare)
            if v >= 0:
                return v
        return self._default

    cdef Route match(self, const char* host, Py_ssize_t host_len,
                     const char* path, Py_ssize_t path_len, Py_ssize_t query_len,
                     const char* base, HeaderSlice* headers, int nheaders):
        cdef int v, i, j
        cdef VHostC* vh
        cdef RouteC* rc
        cdef bint ok
        v = self.find_vhost(host, host_len)
        if v < 0:
            return None
        vh = &self._vhosts[v]
        for i in range(vh.nroutes):
            rc = &vh.routes[i]
            if not _path_ok(rc, path, path_len, query_len):
                continue
            ok = True
            for j in range(rc.nheaders):
                if not _header_ok(&rc.headers[j], base, headers, nheaders):
                    ok = False
                    break
            if ok:
                return <Route>rc.route
        return None

    # --- Python-visible helpers (tests, admin, benchmarks) ---

    def match_py(self, bytes host not None, bytes target not None, list headers=None):
        """match() from Python: headers is [(name, value), ...] of bytes.
        Returns the Route or None."""
        cdef _Request req = _Request(host, target, headers or [])
        return self.match(req.host, req.host_len, req.path, req.path_len, req.query_len,
                          req.base, req.slices, req.n)

    def vhost_py(self, bytes host not None):
        """Name of the virtual host chosen for this Host value, or None."""
        cdef int v = self.find_vhost(host, len(host))
        return None if v < 0 else self.vhost_names[v]

    def bench_match(self, bytes host not None, bytes target not None, list headers,
                    Py_ssize_t n):
        """Match the same request n times in a C loop; returns how many matched."""
        cdef _Request r = _Request(host, target, headers or [])
        cdef Py_ssize_t i, hits = 0
        for i in range(n):
            if self.match(r.host, r.host_len, r.path, r.path_len, r.query_len,
                          r.base, r.slices, r.n) is not None:
                hits += 1
        return hits
