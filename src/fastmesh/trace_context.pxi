# trace_context.pxi: trace context propagation formats, sans-IO.
#
# W3C Trace Context (https://www.w3.org/TR/trace-context/): traceparent is
# "{version}-{trace-id}-{parent-id}-{trace-flags}", lower-case hex only;
# version ff is invalid, version 00 is exactly 55 characters, a later version
# may be longer (what follows the flags starts with "-" and is ignored: the
# spec's forward compatibility); an all-zero trace-id or parent-id is
# invalid. tracestate is passed on as received when it is well formed (at
# most 32 list members, keys unique), dropped otherwise, and never passed on
# without a valid traceparent (the spec: no tracestate without its parent).
#
# B3 (https://github.com/openzipkin/b3-propagation): the single header
# "b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]" or just "{sampled}"
# (0, 1 or d), and the multi-header form x-b3-traceid / -spanid /
# -parentspanid / -sampled / -flags. Trace ids are 16 or 32 lower-hex
# digits (a 16-digit id is echoed as 16 digits, so that a 64-bit Zipkin
# deployment keeps its ids); span ids 16.
#
# The C functions fill a TraceCtx; the def functions below are the same
# parsers for tests (tests/test_tracing.py).

cdef const char* _HEXD = "0123456789abcdef"


cdef inline int _hexval(char c) noexcept:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef bint _hex(const char* p, Py_ssize_t n, uint64_t* out) noexcept:
    # n <= 16 lower-case hex digits -> out; False on anything else.
    cdef uint64_t v = 0
    cdef Py_ssize_t i
    cdef int d
    for i in range(n):
        d = _hexval(p[i])
        if d < 0:
            return False
        v = (v << 4) | <uint64_t>d
    out[0] = v
    return True


cdef inline uint64_t _hex8(uint32_t x) noexcept nogil:
    # 8 lower-case hex digits of x in one word, the last digit in the top
    # byte: the nibbles spread one per byte, then '0'..'9' / 'a'..'f' added
    # to all eight at once (no loop, no table: this runs for every request
    # a traced listener sends upstream).
    cdef uint64_t w = x
    w = (w | (w << 16)) & 0x0000FFFF0000FFFFULL
    w = (w | (w << 8)) & 0x00FF00FF00FF00FFULL
    w = (w | (w << 4)) & 0x0F0F0F0F0F0F0F0FULL
    return w + 0x3030303030303030ULL + (((w + 0x0606060606060606ULL) >> 4)
                                        & 0x0101010101010101ULL) * 0x27


cdef void hex64(char* out, uint64_t v) noexcept:
    cdef uint64_t a = _hex8(<uint32_t>(v >> 32)), b = _hex8(<uint32_t>v)
    cdef int i
    for i in range(8):
        out[i] = <char>(a >> (56 - 8 * i))
        out[8 + i] = <char>(b >> (56 - 8 * i))


cdef bint parse_traceparent(const char* p, Py_ssize_t n, TraceCtx* c) noexcept:
    cdef uint64_t ver, fl
    if n < 55:
        return False
    if not _hex(p, 2, &ver) or ver == 0xff:
        return False
    if ver == 0 and n != 55:
        return False
    if n > 55 and p[55] != b'-':
        return False
    if p[2] != b'-' or p[35] != b'-' or p[52] != b'-':
        return False
    if not (_hex(p + 3, 16, &c.tid_hi) and _hex(p + 19, 16, &c.tid_lo)
            and _hex(p + 36, 16, &c.span_id) and _hex(p + 53, 2, &fl)):
        return False
    if (c.tid_hi == 0 and c.tid_lo == 0) or c.span_id == 0:
        return False
    c.flags = <int>fl
    c.sampled = TS_YES if fl & 1 else TS_NO
    c.parent_id = 0
    c.debug = False
    c.tid64 = False
    return True


cdef Py_ssize_t fmt_traceparent(char* out, uint64_t hi, uint64_t lo, uint64_t sid,
                                int flags) noexcept:
    # 55 bytes, version 00.
    out[0] = b'0'
    out[1] = b'0'
    out[2] = b'-'
    hex64(out + 3, hi)
    hex64(out + 19, lo)
    out[35] = b'-'
    hex64(out + 36, sid)
    out[52] = b'-'
    out[53] = _HEXD[(flags >> 4) & 15]
    out[54] = _HEXD[flags & 15]
    return 55


cdef bint _b3_trace_id(const char* p, Py_ssize_t n, TraceCtx* c) noexcept:
    if n == 32:
        if not (_hex(p, 16, &c.tid_hi) and _hex(p + 16, 16, &c.tid_lo)):
            return False
        c.tid64 = False
    elif n == 16:
        c.tid_hi = 0
        if not _hex(p, 16, &c.tid_lo):
            return False
        c.tid64 = True
    else:
        return False
    return c.tid_hi != 0 or c.tid_lo != 0


cdef inline bint _b3_span_id(const char* p, Py_ssize_t n, uint64_t* out) noexcept:
    return n == 16 and _hex(p, 16, out) and out[0] != 0


cdef bint _b3_sampling(const char* p, Py_ssize_t n, TraceCtx* c) noexcept:
    if n != 1:
        return False
    if p[0] == b'1':
        c.sampled = TS_YES
    elif p[0] == b'0':
        c.sampled = TS_NO
    elif p[0] == b'd':
        c.sampled = TS_YES
        c.debug = True
    else:
        return False
    return True


cdef bint parse_b3_single(const char* p, Py_ssize_t n, TraceCtx* c) noexcept:
    # True for a well-formed value; a sampling-only value ("0", "1", "d")
    # leaves the ids 0 (a decision without a trace to continue).
    cdef Py_ssize_t d1, d2, d3
    c.tid_hi = c.tid_lo = c.span_id = c.parent_id = 0
    c.sampled = TS_DEFER
    c.debug = False
    c.tid64 = False
    c.flags = 0
    if n == 1:
        return _b3_sampling(p, 1, c)
    d1 = 0
    while d1 < n and p[d1] != b'-':
        d1 += 1
    if d1 == n or not _b3_trace_id(p, d1, c):
        return False
    d2 = d1 + 1
    while d2 < n and p[d2] != b'-':
        d2 += 1
    if not _b3_span_id(p + d1 + 1, d2 - d1 - 1, &c.span_id):
        return False
    if d2 == n:
        return True
    d3 = d2 + 1
    while d3 < n and p[d3] != b'-':
        d3 += 1
    if not _b3_sampling(p + d2 + 1, d3 - d2 - 1, c):
        return False
    if d3 == n:
        return True
    return _b3_span_id(p + d3 + 1, n - d3 - 1, &c.parent_id)


cdef bint parse_b3_multi(const char* tid, Py_ssize_t tidn, const char* sid, Py_ssize_t sidn,
                         const char* pid, Py_ssize_t pidn, const char* smp, Py_ssize_t smpn,
                         const char* flg, Py_ssize_t flgn, TraceCtx* c) noexcept:
    # The x-b3-* values (NULL: absent). X-B3-Flags: 1 is debug, which
    # implies sampled; X-B3-Sampled is 1 or 0 (also "true"/"false", which
    # older Zipkin clients send). Without a trace id only a decision.
    c.tid_hi = c.tid_lo = c.span_id = c.parent_id = 0
    c.sampled = TS_DEFER
    c.debug = False
    c.tid64 = False
    c.flags = 0
    if smp != NULL:
        if smpn == 1 and (smp[0] == b'1' or smp[0] == b'0'):
            c.sampled = TS_YES if smp[0] == b'1' else TS_NO
        elif smpn == 4 and memcmp(smp, b"true", 4) == 0:
            c.sampled = TS_YES
        elif smpn == 5 and memcmp(smp, b"false", 5) == 0:
            c.sampled = TS_NO
        else:
            return False
    if flg != NULL and flgn == 1 and flg[0] == b'1':
        c.debug = True
        c.sampled = TS_YES
    if tid == NULL:
        return sid == NULL and c.sampled != TS_DEFER
    if sid == NULL or not _b3_trace_id(tid, tidn, c) or not _b3_span_id(sid, sidn, &c.span_id):
        return False
    if pid != NULL and not _b3_span_id(pid, pidn, &c.parent_id):
        return False
    return True


cdef Py_ssize_t fmt_b3(char* out, uint64_t hi, uint64_t lo, bint tid64, uint64_t sid,
                       int sampled, bint debug) noexcept:
    # "{traceid}-{spanid}-{1|0|d}": at most 51 bytes.
    cdef Py_ssize_t k = 0
    if not tid64:
        hex64(out, hi)
        k = 16
    hex64(out + k, lo)
    k += 16
    out[k] = b'-'
    hex64(out + k + 1, sid)
    k += 17
    out[k] = b'-'
    out[k + 1] = b'd' if debug else (b'1' if sampled == TS_YES else b'0')
    return k + 2


cdef inline bint _ts_key_char(char c) noexcept:
    return (97 <= c <= 122 or 48 <= c <= 57 or c == b'_' or c == b'-' or c == b'*'
            or c == b'/')


cdef bint _ts_key(const char* p, Py_ssize_t n) noexcept:
    # simple-key = lcalpha 0*255(keychar); multi-tenant-key = tenant-id "@"
    # system-id, tenant-id = (lcalpha / DIGIT) 0*240(keychar), system-id =
    # lcalpha 0*13(keychar)
    cdef Py_ssize_t at = -1, i
    for i in range(n):
        if p[i] == b'@':
            if at >= 0:
                return False
            at = i
        elif not _ts_key_char(p[i]):
            return False
    if at < 0:
        return 1 <= n <= 256 and 97 <= p[0] <= 122
    if not 1 <= at <= 241 or not 1 <= n - at - 1 <= 14:
        return False
    if not (97 <= p[0] <= 122 or 48 <= p[0] <= 57):
        return False
    return 97 <= p[at + 1] <= 122


cdef bint _ts_value(const char* p, Py_ssize_t n) noexcept:
    # value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr;
    # nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
    cdef Py_ssize_t i
    cdef unsigned char c
    if not 1 <= n <= 256:
        return False
    for i in range(n):
        c = <unsigned char>p[i]
        if c < 0x20 or c > 0x7e or c == 0x2c or c == 0x3d:
            return False
    return p[n - 1] != b' '


cdef bint tracestate_valid(const char* p, Py_ssize_t n) noexcept:
    # list = list-member 0*31(OWS "," OWS list-member); empty members (",,")
    # are allowed and do not count; keys unique.
    cdef Py_ssize_t i = 0, s, e, eq, k, members = 0
    cdef Py_ssize_t koff[32]
    cdef Py_ssize_t klen[32]
    while i <= n:
        s = i
        while i < n and p[i] != b',':
            i += 1
        e = i
        i += 1
        while s < e and (p[s] == b' ' or p[s] == b'\t'):
            s += 1
        while e > s and (p[e - 1] == b' ' or p[e - 1] == b'\t'):
            e -= 1
        if s == e:
            continue
        eq = s
        while eq < e and p[eq] != b'=':
            eq += 1
        if eq == e or not _ts_key(p + s, eq - s) or not _ts_value(p + eq + 1, e - eq - 1):
            return False
        if members == 32:
            return False
        for k in range(members):
            if klen[k] == eq - s and memcmp(p + koff[k], p + s, eq - s) == 0:
                return False
        koff[members] = s
        klen[members] = eq - s
        members += 1
    return True


# --- the same, for tests and tools ------------------------------------------

def tc_parse_traceparent(bytes value):
    """(trace_id, span_id, flags) of a valid traceparent value, else None."""
    cdef TraceCtx c
    if not parse_traceparent(value, len(value), &c):
        return None
    return ((<object>c.tid_hi << 64) | c.tid_lo, c.span_id, c.flags)


def tc_format_traceparent(trace_id: int, span_id: int, int flags) -> bytes:
    cdef char out[55]
    fmt_traceparent(out, <uint64_t>(trace_id >> 64), <uint64_t>(trace_id & 0xFFFFFFFFFFFFFFFF),
                    <uint64_t>span_id, flags)
    return out[:55]


def tc_parse_b3(bytes value):
    """(trace_id, span_id, sampled, parent_id, debug) of a valid b3 value
    (sampled: 1, 0, or -1 when left out; ids 0 for a sampling-only value),
    else None."""
    cdef TraceCtx c
    if not parse_b3_single(value, len(value), &c):
        return None
    return ((<object>c.tid_hi << 64) | c.tid_lo, c.span_id, c.sampled, c.parent_id, c.debug)


def tc_parse_b3_multi(traceid=None, spanid=None, parentspanid=None, sampled=None, flags=None):
    """The x-b3-* values (bytes or None) as tc_parse_b3 answers, else None."""
    cdef TraceCtx c
    cdef const char* v[5]
    cdef Py_ssize_t ln[5]
    vals = (traceid, spanid, parentspanid, sampled, flags)
    for i in range(5):
        if vals[i] is None:
            v[i] = NULL
            ln[i] = 0
        else:
            v[i] = <bytes>vals[i]
            ln[i] = len(vals[i])
    if not parse_b3_multi(v[0], ln[0], v[1], ln[1], v[2], ln[2], v[3], ln[3], v[4], ln[4], &c):
        return None
    return ((<object>c.tid_hi << 64) | c.tid_lo, c.span_id, c.sampled, c.parent_id, c.debug)


def tc_format_b3(trace_id: int, span_id: int, int sampled, bint debug=False,
                 bint tid64=False) -> bytes:
    cdef char out[64]
    cdef Py_ssize_t n = fmt_b3(out, <uint64_t>(trace_id >> 64),
                               <uint64_t>(trace_id & 0xFFFFFFFFFFFFFFFF), tid64,
                               <uint64_t>span_id, sampled, debug)
    return out[:n]


def tc_tracestate_valid(bytes value) -> bool:
    return tracestate_valid(value, len(value))
