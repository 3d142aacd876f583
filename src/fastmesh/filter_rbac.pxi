# filter_rbac.pxi: Envoy's RBAC filters, envoy.filters.http.rbac (an HTTP
# filter on request headers) and envoy.filters.network.rbac (a TCP
# listener's check when a connection is accepted).
#
# The control side (control/rbac.py) compiles a policy set once per config
# into immutable trees of RbacNode; here they are evaluated per request (per
# connection for TCP) by a switch on the node kind, reading the stream's
# request view, the connection's verified peer (core_tls.pxi) and its
# address, with no dict lookups. Semantics are Envoy's: policies are tried in
# name order and the first whose permissions and principals both match
# decides; ALLOW denies what no policy matches (so a policy set with no
# policies denies everything), DENY denies what one matches, LOG lets
# everything through and only counts. Shadow rules are evaluated the same
# way and only counted. A route's RBACPerRoute replaces the listener's
# settings, or with no `rbac` disables the filter for the route.
#
# Values only some matchers need (the SNI, which TlsServerConf's servername
# callback keeps on the SSLObject, the local port) are read from the
# transport when such a matcher is evaluated, so a policy without them pays
# nothing for them.

cdef enum:  # RbacEngine.action (Envoy's RBAC.Action)
    RBAC_ALLOW = 0
    RBAC_DENY = 1
    RBAC_LOG = 2

cdef enum:  # RbacString.kind
    RS_EXACT = 0
    RS_PREFIX = 1
    RS_SUFFIX = 2
    RS_CONTAINS = 3
    RS_REGEX = 4

cdef enum:  # RbacNode.kind
    RN_ANY = 0
    RN_AND = 1
    RN_OR = 2
    RN_NOT = 3
    RN_HEADER = 4
    RN_PATH = 5              # url_path: the path without the query
    RN_PORT = 6              # destination_port / destination_port_range
    RN_SNI = 7               # requested_server_name
    RN_AUTHENTICATED = 8     # a verified peer certificate (principal_name: sm)
    RN_CIDR = 9              # source_ip / direct_remote_ip / remote_ip
    RN_NONE = 10             # matches nothing (an empty or_rules / or_ids)

cdef enum:  # RbacNode.pseudo: HTTP/2 pseudo-headers, for either protocol
    PS_NONE = 0
    PS_METHOD = 1
    PS_AUTHORITY = 2
    PS_PATH = 3
    PS_SCHEME = 4

cdef enum:  # RbacNode.hkind (Envoy's HeaderMatcher)
    HK_STRING = 0
    HK_PRESENT = 1

cdef enum:  # the rbac block's slots (Envoy's <stat_prefix>.rbac.*)
    RBAC_ALLOWED
    RBAC_DENIED
    RBAC_SHADOW_ALLOWED
    RBAC_SHADOW_DENIED
    RBAC_LOGGED
    RBAC_NSTATS

RBAC_STAT_NAMES = ("allowed", "denied", "shadow_allowed", "shadow_denied", "logged")
RBAC_STAT_KINDS = ("counter",) * 5

_RS_KINDS = {"exact": RS_EXACT, "prefix": RS_PREFIX, "suffix": RS_SUFFIX,
             "contains": RS_CONTAINS, "safe_regex": RS_REGEX}
_PSEUDO = {":method": PS_METHOD, ":authority": PS_AUTHORITY, "host": PS_AUTHORITY,
           ":path": PS_PATH, ":scheme": PS_SCHEME}
_RN_KINDS = {"any": RN_ANY, "and": RN_AND, "or": RN_OR, "not": RN_NOT, "header": RN_HEADER,
             "url_path": RN_PATH, "port": RN_PORT, "sni": RN_SNI,
             "authenticated": RN_AUTHENTICATED, "cidr": RN_CIDR, "none": RN_NONE}
_ACTIONS = {"ALLOW": RBAC_ALLOW, "DENY": RBAC_DENY, "LOG": RBAC_LOG}

import re as _re
import ipaddress as _ipaddress


@cython.final
cdef class RbacString:
    """Envoy's StringMatcher on bytes: exact | prefix | suffix | contains |
    safe_regex (a full match), ignore_case for all but the regex."""

    def __init__(self, str kind, str value, bint ignore_case=False):
        self.kind = _RS_KINDS[kind]
        self.ignore_case = ignore_case and self.kind != RS_REGEX
        v = value.encode("utf-8")
        self.value = v.lower() if self.ignore_case else v
        if self.kind == RS_REGEX:
            self.rx = _re.compile(v)

    cdef bint match(self, const char* p, Py_ssize_t n):
        cdef Py_ssize_t m = PyBytes_GET_SIZE(self.value)
        cdef const char* v = PyBytes_AS_STRING(self.value)
        cdef bytes low
        if self.kind == RS_REGEX:
            return self.rx.fullmatch(p[:n]) is not None
        if self.ignore_case:
            low = p[:n].lower()
            p = PyBytes_AS_STRING(low)
        if self.kind == RS_EXACT:
            return n == m and memcmp(p, v, m) == 0
        if self.kind == RS_PREFIX:
            return n >= m and memcmp(p, v, m) == 0
        if self.kind == RS_SUFFIX:
            return n >= m and memcmp(p + n - m, v, m) == 0
        return self.value in p[:n]

    cdef bint match_str(self, str s):
        cdef bytes b = s.encode("utf-8")
        return self.match(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))


@cython.final
cdef class RbacNode:
    """One permission or principal, compiled (control/rbac.py builds them):
    RbacNode(kind, **fields) with kind one of any, and, or, not, header,
    url_path, port, sni, authenticated, cidr, none."""

    def __init__(self, str kind, *, kids=(), RbacString sm=None, str name=None,
                 present=None, bint invert=False, lo=0, hi=0, str cidr=None):
        self.kind = _RN_KINDS[kind]
        self.kids = tuple(kids)
        self.sm = sm
        self.invert = invert
        if self.kind in (RN_AND, RN_OR, RN_NOT) and not all(
                isinstance(k, RbacNode) for k in self.kids):
            raise TypeError("RbacNode: kids must be RbacNodes")
        if self.kind == RN_NOT and len(self.kids) != 1:
            raise ValueError("RbacNode: not takes one node")
        if self.kind == RN_HEADER:
            lname = name.lower()
            self.name = lname.encode("latin-1")
            self.pseudo = _PSEUDO.get(lname, PS_NONE)
            self.hkind = HK_PRESENT if present is not None else HK_STRING
            self.present = bool(present)
            if self.hkind == HK_STRING and sm is None:
                raise ValueError("RbacNode: a header matcher needs a string matcher or present")
        elif self.kind == RN_PORT:
            self.lo = lo
            self.hi = hi
        elif self.kind == RN_CIDR:
            net = _ipaddress.ip_network(cidr, strict=False)
            self.family = net.version
            self.plen = net.prefixlen
            packed = net.network_address.packed
            memcpy(self.net, <const char*>packed, len(packed))


cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char* src, void* dst)

cdef extern from "sys/socket.h" nogil:
    int AF_INET
    int AF_INET6


cdef bint cidr_has(RbacNode n, const char* ip, Py_ssize_t len_) noexcept:
    # The address text (IPv4, IPv6, IPv4-mapped IPv6, maybe with a %scope)
    # parsed and compared in C: this runs per request.
    cdef char buf[64]
    cdef unsigned char a[16]
    cdef const unsigned char* p = a
    cdef Py_ssize_t i
    cdef int full, rest
    cdef bint v6 = False
    if len_ <= 0 or len_ >= 64:
        return False
    for i in range(len_):
        if ip[i] == 37:          # '%': the scope ends the address
            break
        if ip[i] == 58:          # ':'
            v6 = True
        buf[i] = ip[i]
    else:
        i = len_
    buf[i] = 0
    if v6:
        if inet_pton(AF_INET6, buf, a) != 1:
            return False
        if n.family == 4:
            # ::ffff:a.b.c.d is the IPv4 client of a dual-stack socket
            for i in range(10):
                if a[i] != 0:
                    return False
            if a[10] != 0xff or a[11] != 0xff:
                return False
            p = a + 12
    else:
        if n.family != 4 or inet_pton(AF_INET, buf, a) != 1:
            return False
    full = n.plen >> 3
    rest = n.plen & 7
    if full and memcmp(p, n.net, full) != 0:
        return False
    return rest == 0 or ((p[full] ^ n.net[full]) & (0xff << (8 - rest)) & 0xff) == 0


cdef object rbac_transport(ProxyStream s, TcpDownstream t):
    # The client connection's transport (an HTTP/2 stream has none of its own).
    if t is not None:
        return t.transport
    if isinstance(s, H2ServerStream):
        return (<H2ServerStream>s).conn.transport
    return s.transport


cdef bint rbac_header(RbacNode n, ProxyStream s) except -1:
    # Envoy's HeaderMatcher on the request (first value of a repeated field).
    cdef const char* v = NULL
    cdef Py_ssize_t len_ = 0
    cdef bint ok
    if n.pseudo == PS_METHOD:
        v, len_ = s.rq_method, s.rq_method_len
    elif n.pseudo == PS_AUTHORITY:
        v, len_ = s.rq_host, s.rq_host_len
        if len_ == 0:
            v = NULL
    elif n.pseudo == PS_PATH:
        v, len_ = s.rq_path, s.rq_path_len + s.rq_query_len
    elif n.pseudo == PS_SCHEME:
        return rbac_scheme(n, s)
    else:
        v = s.rq_header(PyBytes_AS_STRING(n.name), PyBytes_GET_SIZE(n.name), &len_)
    if n.hkind == HK_PRESENT:
        return ((v != NULL) == n.present) != n.invert
    if v == NULL:
        return n.invert          # Envoy: an absent header matches only an inverted matcher
    return n.sm.match(v, len_) != n.invert


cdef bint rbac_scheme(RbacNode n, ProxyStream s) except -1:
    # :scheme as the client spoke it: https on a TLS connection.
    cdef bytes sch = b"https" if rbac_transport(s, None).get_extra_info("ssl_object") \
        is not None else b"http"
    if n.hkind == HK_PRESENT:
        return n.present != n.invert
    return n.sm.match(PyBytes_AS_STRING(sch), PyBytes_GET_SIZE(sch)) != n.invert


cdef bint rbac_authenticated(RbacNode n, object peer) except -1:
    # Envoy: any URI SAN, then any DNS SAN, then (no SAN at all) the subject
    # matches principal_name; without principal_name any verified peer does.
    if peer is None:
        return False
    if n.sm is None:
        return True
    for san in peer.uris:
        if n.sm.match_str(san):
            return True
    for san in peer.dns:
        if n.sm.match_str(san):
            return True
    if not peer.uris and not peer.dns:
        return n.sm.match_str(peer.subject)
    return False


cdef bint rbac_cidr(RbacNode n, ProxyStream s, TcpDownstream t) except -1:
    # The connection's peer address against address_prefix/prefix_len.
    cdef bytes ip
    if t is not None:
        pn = t.transport.get_extra_info("peername")      # once per connection
        ip = (pn[0] if pn else "").encode("latin-1")
    else:
        ip = s.client_ip
    return cidr_has(n, PyBytes_AS_STRING(ip), PyBytes_GET_SIZE(ip))


cdef bint rbac_match(RbacNode n, ProxyStream s, TcpDownstream t) except -1:
    # s: the request (HTTP), t: the connection (TCP); exactly one is not None.
    cdef RbacNode k
    cdef int kind = n.kind
    if kind == RN_ANY:
        return True
    if kind == RN_AND:
        for k in n.kids:
            if not rbac_match(k, s, t):
                return False
        return True
    if kind == RN_OR:
        for k in n.kids:
            if rbac_match(k, s, t):
                return True
        return False
    if kind == RN_NOT:
        return not rbac_match(<RbacNode>n.kids[0], s, t)
    if kind == RN_AUTHENTICATED:
        return rbac_authenticated(n, t.peer if t is not None else s.peer)
    if kind == RN_CIDR:
        return rbac_cidr(n, s, t)
    if kind == RN_PORT:
        sn = rbac_transport(s, t).get_extra_info("sockname")
        return sn is not None and n.lo <= <uint32_t>sn[1] <= n.hi
    if kind == RN_SNI:
        so = rbac_transport(s, t).get_extra_info("ssl_object")
        name = getattr(so, "fastmesh_sni", None)      # core_tls.pxi keeps it
        return n.sm.match_str(name or "")        # Envoy: no SNI is the empty name
    if kind == RN_NONE:
        return False
    if s is None:
        return False             # request properties never match on a TCP connection (Envoy)
    if kind == RN_HEADER:
        return rbac_header(n, s)
    if kind == RN_PATH:
        return n.sm.match(s.rq_path, s.rq_path_len)
    return False


@cython.final
cdef class RbacPolicy:
    """One named policy: it matches when one of its permissions and one of
    its principals do."""

    def __init__(self, str name, RbacNode permissions, RbacNode principals):
        self.name = name
        self.permissions = permissions
        self.principals = principals


@cython.final
cdef class RbacEngine:
    """A policy set (Envoy's RBAC message): an action and named policies."""

    def __init__(self, str action, policies):
        self.action = _ACTIONS[action]
        self.policies = tuple(sorted(policies, key=lambda p: p.name))


@cython.final
cdef class RbacSettings:
    """An RBAC filter's compiled settings: the enforced rules (None: the
    filter enforces nothing, e.g. a route's RBACPerRoute without rbac) and
    the shadow rules (None: no dry run)."""

    def __init__(self, RbacEngine rules=None, RbacEngine shadow=None):
        self.rules = rules
        self.shadow = shadow


cdef RbacPolicy rbac_first_match(RbacEngine e, ProxyStream s, TcpDownstream t):
    cdef RbacPolicy p
    for p in e.policies:
        if rbac_match(p.permissions, s, t) and rbac_match(p.principals, s, t):
            return p
    return None


cdef inline void count_policy(RbacPolicy p, Worker w, str prefix, int slot):
    # Per policy: the decisions it made (a block per stat_prefix and policy).
    if p.st == NULL:
        p.stats = w.registry.block("rbac_policy", RBAC_STAT_NAMES, RBAC_STAT_KINDS,
                                   {"stat_prefix": prefix, "policy": p.name})
        p.st = p.stats.v
    p.st[slot] += 1


cdef bint rbac_decide(RbacSettings c, int64_t* st, Worker w, str prefix,
                      ProxyStream s, TcpDownstream t) except -1:
    # Counts the shadow and the enforced decision; True when denied.
    cdef RbacPolicy p
    cdef bint deny = False
    cdef int slot
    if c.shadow is not None:
        p = rbac_first_match(c.shadow, s, t)
        if c.shadow.action == RBAC_LOG:
            pass                 # a shadow LOG decides nothing
        else:
            # ALLOW: allowed iff matched; DENY: denied iff matched.
            slot = RBAC_SHADOW_ALLOWED if ((p is not None) == (c.shadow.action == RBAC_ALLOW)) \
                else RBAC_SHADOW_DENIED
            st[slot] += 1
            if p is not None:
                count_policy(p, w, prefix, slot)
    if c.rules is not None:
        p = rbac_first_match(c.rules, s, t)
        if c.rules.action == RBAC_LOG:
            st[RBAC_ALLOWED] += 1
            if p is not None:
                st[RBAC_LOGGED] += 1
                count_policy(p, w, prefix, RBAC_LOGGED)
        else:
            deny = (p is not None) != (c.rules.action == RBAC_ALLOW)
            slot = RBAC_DENIED if deny else RBAC_ALLOWED
            st[slot] += 1
            if p is not None:
                count_policy(p, w, prefix, slot)
    return deny


@cython.final
cdef class RbacFilter(HttpFilter):
    """envoy.filters.http.rbac (made by control/builtin_filters.py)."""

    def __cinit__(self, *args, **kwargs):
        self.name = "envoy.filters.http.rbac"
        self.hooks = FH_REQUEST_HEADERS

    def __init__(self, RbacSettings conf=None, str name=None):
        self.conf = conf
        if name is not None:
            self.name = name

    cdef int request_headers(self, ProxyStream s) except -1:
        cdef RbacSettings c = self.conf
        cdef object per_route = s.filter_config(self)
        if per_route is not None:
            c = <RbacSettings>per_route
        if c is None or (c.rules is None and c.shadow is None):
            return FILTER_CONTINUE
        if self.st == NULL:
            # Envoy: http.<stat_prefix>.rbac.*, the connection manager's
            # prefix; here the listener's name.
            self.stats = s.worker.registry.block("rbac", RBAC_STAT_NAMES, RBAC_STAT_KINDS,
                                                 {"stat_prefix": s.lst.name})
            self.st = self.stats.v
        if not rbac_decide(c, self.st, s.worker, s.lst.name, s, None):
            return FILTER_CONTINUE
        s.reply_grpc = 7         # PERMISSION_DENIED
        s.filter_reply(403, b"RBAC: access denied")
        return FILTER_STOP


@cython.final
cdef class NetworkRbac:
    """envoy.filters.network.rbac on a TCP listener: checked once, when a
    connection is accepted (after its TLS handshake), before any upstream
    connection is opened."""

    def __init__(self, str stat_prefix, RbacSettings conf):
        self.stat_prefix = stat_prefix
        self.conf = conf


cdef bint network_rbac_denies(NetworkRbac r, TcpDownstream t) except -1:
    if r.st == NULL:
        r.stats = t.worker.registry.block("rbac", RBAC_STAT_NAMES, RBAC_STAT_KINDS,
                                          {"stat_prefix": r.stat_prefix})
        r.st = r.stats.v
    return rbac_decide(r.conf, r.st, t.worker, r.stat_prefix, None, t)
