# filter_rbac.pxd: declarations of filter_rbac.pxi (see _core.pxd)

@cython.final
cdef class RbacString:
    cdef int kind                    # RS_* (Envoy's StringMatcher kinds)
    cdef bytes value                 # lower-cased when ignore_case
    cdef bint ignore_case
    cdef object rx                   # safe_regex: a compiled bytes pattern

    cdef bint match(self, const char* p, Py_ssize_t n)
    cdef bint match_str(self, str v)

@cython.final
cdef class RbacNode:
    cdef int kind                    # RN_*
    cdef tuple kids                  # RN_AND / RN_OR: nodes; RN_NOT: one node
    cdef RbacString sm               # header / path / SNI / principal name (None: any)
    cdef bytes name                  # RN_HEADER: lower-case field name
    cdef int pseudo                  # RN_HEADER: PS_* for :method, :authority, :path, :scheme
    cdef int hkind                   # RN_HEADER: HK_*
    cdef bint present                # HK_PRESENT: present_match's value
    cdef bint invert                 # invert_match
    cdef uint32_t lo, hi             # RN_PORT: [lo, hi] inclusive
    cdef int family                  # RN_CIDR: 4 or 6
    cdef unsigned char net[16]       # RN_CIDR: the network's address bytes (host bits zero)
    cdef int plen                    # RN_CIDR: prefix length in bits

@cython.final
cdef class RbacPolicy:
    cdef readonly str name
    cdef RbacNode permissions        # an OR of the policy's permissions
    cdef RbacNode principals         # an OR of the policy's principals
    cdef StatsBlock stats            # rbac_policy {stat_prefix, policy}: made on first match
    cdef int64_t* st

@cython.final
cdef class RbacEngine:
    cdef readonly int action         # RBAC_ALLOW | RBAC_DENY | RBAC_LOG
    cdef readonly tuple policies     # RbacPolicy, by name (Envoy's map order)

@cython.final
cdef class RbacSettings:
    cdef readonly RbacEngine rules   # None: nothing enforced
    cdef readonly RbacEngine shadow  # None: no dry run

cdef class RbacFilter(HttpFilter):
    cdef readonly RbacSettings conf  # the listener's (None: only per-route)
    cdef StatsBlock stats            # rbac {stat_prefix: the listener}: made on first use
    cdef int64_t* st
    cdef int request_headers(self, ProxyStream s) except -1

@cython.final
cdef class NetworkRbac:
    cdef readonly str stat_prefix
    cdef readonly RbacSettings conf
    cdef StatsBlock stats
    cdef int64_t* st

cdef bint network_rbac_denies(NetworkRbac r, TcpDownstream t) except -1
