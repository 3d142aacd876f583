# core_original_dst.pxi: the original destination of an intercepted
# connection, and the ORIGINAL_DST cluster that sends to it.
#
# iptables REDIRECT (fastmesh iptables) rewrites the destination of a
# connection to our listener; the kernel keeps the one the client dialled in
# conntrack, and getsockopt(SO_ORIGINAL_DST) reads it back (IPv4: SOL_IP;
# IPv6: SOL_IPV6, IP6T_SO_ORIGINAL_DST, the same option number). Only
# listeners with use_original_dst ask (ListenerInspector, core_detect.pxi):
# others pay nothing.
#
# An ORIGINAL_DST cluster (Envoy's) has no configured endpoints: each
# destination becomes an Endpoint the first time a request or connection
# goes to it, so it gets its own connection pool, stats per host and
# breaker accounting like any other; hosts not used for cleanup_interval
# are removed by a timer (their idle connections close, busy ones finish).
# The endpoint is looked up again for every attempt (start_attempt), never
# kept as an index across a cleanup.

from libc.string cimport memset

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    int c_getsockopt "getsockopt" (int fd, int level, int optname, void* optval,
                                   socklen_t* optlen)

cdef extern from "<arpa/inet.h>" nogil:
    const char* inet_ntop(int af, const void* src, char* dst, socklen_t size)

cdef enum:
    SOL_IP_ = 0
    SOL_IPV6_ = 41
    SO_ORIGINAL_DST_ = 80        # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST is 80 too
    AF_INET_ = 2
    AF_INET6_ = 10

DEFAULT_ODST_CLEANUP_INTERVAL = 5.0     # Envoy's cleanup_interval default
DEFAULT_ODST_HEADER = "x-envoy-original-dst-host"


cdef object _sockaddr_to_tuple(const unsigned char* sa):
    # struct sockaddr_in / sockaddr_in6 -> (ip, port); None for other families.
    cdef char text[64]
    cdef unsigned short family = (<const unsigned short*>sa)[0]
    cdef int port = (sa[2] << 8) | sa[3]
    if family == AF_INET_:
        if inet_ntop(AF_INET_, sa + 4, text, 64) == NULL:
            return None
    elif family == AF_INET6_:
        if inet_ntop(AF_INET6_, sa + 8, text, 64) == NULL:
            return None
    else:
        return None
    return ((<bytes>text).decode("ascii"), port)


cdef object read_original_dst(object transport):
    """(ip, port) the client dialled before the NAT redirect, or None when
    the connection was not redirected (no conntrack NAT entry, or the
    original destination is this very socket: a client that dialled the
    listener itself must not loop back into it)."""
    cdef unsigned char buf[128]
    cdef socklen_t n = sizeof(buf)
    cdef int fd, r
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    fd = sock.fileno()
    memset(buf, 0, sizeof(buf))
    if sock.family == AF_INET6_:
        r = c_getsockopt(fd, SOL_IPV6_, SO_ORIGINAL_DST_, buf, &n)
        if r != 0:
            # An IPv4 client on a dual-stack socket: the IPv4 table has it.
            n = sizeof(buf)
            r = c_getsockopt(fd, SOL_IP_, SO_ORIGINAL_DST_, buf, &n)
    else:
        r = c_getsockopt(fd, SOL_IP_, SO_ORIGINAL_DST_, buf, &n)
    if r != 0:
        return None
    dst = _sockaddr_to_tuple(buf)
    if dst is None:
        return None
    local = transport.get_extra_info("sockname")
    if local is not None and local[1] == dst[1] and (
            local[0] == dst[0] or local[0].endswith(":" + dst[0])):
        return None
    return dst


def original_dst_of(sock):
    """read_original_dst for a plain socket object (tests, tools)."""
    class _T:
        def get_extra_info(self, name):
            return sock if name == "socket" else sock.getsockname() if name == "sockname" else None
    return read_original_dst(_T())


@cython.final
cdef class OriginalDstConf:
    """An ORIGINAL_DST cluster's settings (Envoy's cleanup_interval and
    original_dst_lb_config)."""

    def __init__(self, double cleanup_interval=DEFAULT_ODST_CLEANUP_INTERVAL,
                 bint use_http_header=False, str http_header_name=None):
        if cleanup_interval <= 0:
            raise ValueError("cleanup_interval must be positive")
        self.cleanup_interval = cleanup_interval
        self.use_http_header = use_http_header
        self.header = (http_header_name or DEFAULT_ODST_HEADER).lower().encode("latin-1")


@cython.final
cdef class OriginalDstState:
    """The live side of an ORIGINAL_DST cluster in one worker: the cleanup
    timer and what it did."""

    def __init__(self, ClusterState c, OriginalDstConf conf):
        self.c = c
        self.conf = conf
        self.timer = c.worker.loop.call_later(conf.cleanup_interval, self._cleanup)

    def set_conf(self, OriginalDstConf conf):
        self.conf = conf

    cdef void stop(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _cleanup(self):
        # Envoy's: a host no request or connection used since the last sweep
        # goes; its idle pooled connections close, busy ones finish.
        cdef ClusterState c = self.c
        cdef Endpoint ep
        cdef list keep = []
        cdef int i = 0
        self.timer = None
        if c.removed:
            return
        for ep in c.endpoints:
            if ep.odst_used or ep.rq_active > 0:
                ep.odst_used = False
                keep.append(ep)
            else:
                ep.removed = True
                ep.pool.close_all()
                self.hosts_removed += 1
        if len(keep) != len(c.endpoints):
            by_key = {}
            for ep in keep:
                ep.index = i
                by_key[(ep.host, ep.port)] = ep
                i += 1
            c.endpoints = keep
            c.by_key = by_key
            c.mask = bytearray(len(keep))
            c._recount()
        self.timer = c.worker.loop.call_later(self.conf.cleanup_interval, self._cleanup)


cdef int odst_index(ClusterState c, object dst):
    # The endpoint for `dst` ((ip, port)): made the first time it is seen.
    cdef Endpoint ep = c.by_key.get(dst)
    if ep is None:
        ep = Endpoint(dst[0], dst[1], len(c.endpoints), 1)
        c.endpoints.append(ep)
        c.by_key[dst] = ep
        c.mask.append(0)
        if c.odst is not None:
            c.odst.hosts_added += 1
    ep.odst_used = True
    return ep.index


cdef object _parse_host_port(const char* v, Py_ssize_t n):
    # "10.0.0.1:8080" or "[fd00::1]:8080" -> (ip, port); None if not that.
    s = v[:n].decode("latin-1").strip()
    if s.startswith("["):
        end = s.find("]:")
        if end < 0:
            return None
        host, port = s[1:end], s[end + 2:]
    else:
        host, _, port = s.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    try:
        _ipaddress.ip_address(host)
    except ValueError:
        return None          # Envoy's too: an IP, not a name (nothing resolves here)
    return (host, int(port))


import ipaddress as _ipaddress


cdef object odst_for_stream(ProxyStream s, OriginalDstConf conf):
    # Where an HTTP request to an ORIGINAL_DST cluster goes: the header if
    # the cluster trusts it and the request has it, else the connection's
    # original destination.
    cdef const char* v
    cdef Py_ssize_t vlen = 0
    if conf.use_http_header:
        v = s.rq_header(PyBytes_AS_STRING(conf.header), PyBytes_GET_SIZE(conf.header), &vlen)
        if v != NULL:
            return _parse_host_port(v, vlen)
    return s.orig_dst
