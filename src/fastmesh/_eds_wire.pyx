"""An EDS ClusterLoadAssignment read straight from its protobuf wire bytes.

Control side (control/xds/eds.py calls it; the data plane never does). A
10,000-endpoint push read through the generated protobuf classes costs an
attribute lookup and a wrapper object per field (a hundred milliseconds
and more); here it is one pass over the bytes in C. Only what the data
plane uses is read: per locality its region, zone, sub_zone and priority,
per endpoint its socket address, health status and weight. Anything the
data plane cannot honour (a pipe address, a named port, named endpoints,
LEDS) is refused, never silently dropped; ValueError says where.

Field numbers are those of envoy/config/endpoint/v3/endpoint.proto,
endpoint_components.proto and core/v3/address.proto.
"""
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, strcmp
from cpython.unicode cimport PyUnicode_DecodeUTF8

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char* src, void* dst)
    const char* inet_ntop(int af, const void* src, char* dst, unsigned int size)

cdef extern from "sys/socket.h" nogil:
    int AF_INET
    int AF_INET6

DEF MAX_WEIGHT = 128

_tuple_new = tuple.__new__
_STATUS = ("UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED")


cdef inline uint64_t _varint(Cur* c) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef unsigned char b
    while True:
        if c.p >= c.end:
            raise ValueError("truncated varint")
        b = c.p[0]
        c.p += 1
        v |= (<uint64_t>(b & 0x7f)) << shift
        if not (b & 0x80):
            return v
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


cdef inline int _next(Cur* c, uint64_t* num, Cur* sub, uint64_t* val) except -1:
    # The next field: its number; a length-delimited one's bytes in sub, a
    # varint's value in val (fixed32/64 are skipped, val 0).
    cdef uint64_t key = _varint(c)
    cdef int wt = key & 7
    cdef uint64_t n
    num[0] = key >> 3
    val[0] = 0
    sub.p = sub.end = NULL
    if wt == 0:
        val[0] = _varint(c)
    elif wt == 2:
        n = _varint(c)
        if n > <uint64_t>(c.end - c.p):
            raise ValueError("truncated field")
        sub.p = c.p
        sub.end = c.p + n
        c.p += n
    elif wt == 1:
        if c.end - c.p < 8:
            raise ValueError("truncated field")
        c.p += 8
    elif wt == 5:
        if c.end - c.p < 4:
            raise ValueError("truncated field")
        c.p += 4
    else:
        raise ValueError(f"wire type {wt} not supported")
    return 0


cdef inline str _str(Cur* s):
    return PyUnicode_DecodeUTF8(<const char*>s.p, s.end - s.p, NULL)


cdef bint _canonical_ip(Cur* s):
    # An IPv4 or IPv6 address written the canonical way (what inet_ntop gives).
    cdef char src[64]
    cdef char back[64]
    cdef unsigned char buf[16]
    cdef Py_ssize_t n = s.end - s.p
    cdef int af = AF_INET
    cdef Py_ssize_t i
    if n <= 0 or n >= 64:
        return False
    memcpy(src, s.p, n)
    src[n] = 0
    for i in range(n):
        if src[i] == b':':
            af = AF_INET6
            break
    if inet_pton(af, src, buf) != 1:
        return False
    if inet_ntop(af, buf, back, 64) == NULL:
        return False
    return strcmp(src, back) == 0


def parse(const unsigned char[:] data not None, make):
    """(cluster_name, [make(host, port, weight, healthy, status, region,
    zone, sub_zone, priority), ...]) of a serialized ClusterLoadAssignment
    (`make`: a tuple subclass, e.g. a named tuple of those fields).
    Hosts must be canonical IP addresses (the caller re-checks a refused
    one with ipaddress for its message)."""
    cdef Cur c, loc, sub, f, g, h
    cdef uint64_t num, val, num2, val2, num3, val3, port, weight, status, priority
    cdef int li = -1, ei
    cdef str name = ""
    cdef str region, zone, sub_zone, host
    cdef list out = []
    cdef set seen = set()
    cdef bint has_addr
    if data.shape[0] == 0:
        return name, out
    c.p = &data[0]
    c.end = c.p + data.shape[0]
    while c.p < c.end:
        _next(&c, &num, &loc, &val)
        if num == 1:
            name = _str(&loc)
        elif num == 5:
            raise ValueError("named_endpoints: not supported")
        elif num == 2:
            li += 1
            ei = -1
            region = zone = sub_zone = ""
            priority = 0
            # Locality fields first: a locality's endpoints carry them.
            f = loc
            while f.p < f.end:
                _next(&f, &num2, &sub, &val2)
                if num2 == 1:
                    g = sub
                    while g.p < g.end:
                        _next(&g, &num3, &h, &val3)
                        if num3 == 1:
                            region = _str(&h)
                        elif num3 == 2:
                            zone = _str(&h)
                        elif num3 == 3:
                            sub_zone = _str(&h)
                elif num2 == 5:
                    priority = val2
                elif num2 == 8:
                    raise ValueError(f"endpoints[{li}].leds_cluster_locality_config: "
                                     "not supported")
            f = loc
            while f.p < f.end:
                _next(&f, &num2, &sub, &val2)
                if num2 != 2:
                    continue
                ei += 1
                out.append(_lb_endpoint(&sub, li, ei, region, zone, sub_zone, priority,
                                        make, seen))
                if len(out) % 256 == 0:
                    # Called in a thread beside the event loop: let it run
                    # (a thread waiting for the GIL takes it now, not after
                    # the whole assignment).
                    with nogil:
                        pass
    return name, out


cdef object _lb_endpoint(Cur* lbe, int li, int ei, str region, str zone, str sub_zone,
                         uint64_t priority, make, set seen):
    cdef Cur f, sub, a, sa, h
    cdef uint64_t num, val, num2, val2, num3, val3
    cdef uint64_t port = 0, weight = 1, status = 0
    cdef object host = None
    cdef bint bad_ip = False
    while lbe.p < lbe.end:
        _next(lbe, &num, &sub, &val)
        if num == 1:                       # endpoint
            f = sub
            while f.p < f.end:
                _next(&f, &num2, &a, &val2)
                if num2 != 1:              # address (hostname, health_check_config: unused)
                    continue
                while a.p < a.end:
                    _next(&a, &num3, &sa, &val3)
                    if num3 != 1:
                        raise ValueError(f"endpoints[{li}].lb_endpoints[{ei}].endpoint.address: "
                                         "only socket_address is supported")
                    while sa.p < sa.end:
                        _next(&sa, &num3, &h, &val3)
                        if num3 == 2:
                            host = _str(&h)
                            bad_ip = not _canonical_ip(&h)
                        elif num3 == 3:
                            port = val3
                        elif num3 == 4:
                            raise ValueError(f"endpoints[{li}].lb_endpoints[{ei}].endpoint."
                                             "address.socket_address.named_port: not supported")
        elif num == 2:
            status = val
        elif num == 4:                     # load_balancing_weight (UInt32Value)
            weight = 0
            f = sub
            while f.p < f.end:
                _next(&f, &num2, &a, &val2)
                if num2 == 1:
                    weight = val2
        elif num == 5:
            raise ValueError(f"endpoints[{li}].lb_endpoints[{ei}].endpoint_name: not supported")
    if host is None or bad_ip or port < 1 or port > 65535 or weight < 1 or weight > MAX_WEIGHT:
        _refuse(li, ei, host, bad_ip, port, weight)
    key = (host, port)
    if key in seen:
        raise ValueError(f"endpoints[{li}].lb_endpoints[{ei}].endpoint.address: {host}:{port} "
                         "is listed twice")
    seen.add(key)
    # tuple.__new__ in C, not the named tuple's Python-level __new__.
    return _tuple_new(make, (host, port, weight, status < 2 or status > 4,
                             _STATUS[status] if status < 6 else "UNKNOWN", region, zone,
                             sub_zone, priority))


cdef int _refuse(int li, int ei, object host, bint bad_ip, uint64_t port,
                 uint64_t weight) except -1:
    # The reason an endpoint is refused (built only then: 10,000 f-strings
    # would cost more than the whole read).
    where = f"endpoints[{li}].lb_endpoints[{ei}]"
    if host is None:
        raise ValueError(f"{where}.endpoint.address.socket_address.address: missing")
    if bad_ip:
        raise ValueError(f"{where}.endpoint.address.socket_address.address: {host!r} is not "
                         "an IP address (written the canonical way)")
    if port < 1 or port > 65535:
        raise ValueError(f"{where}.endpoint.address.socket_address.port_value: {port} is not "
                         "a port")
    raise ValueError(f"{where}.load_balancing_weight: a weight is an integer from 1 to "
                     f"{MAX_WEIGHT}")
