# cython: language_level=3
"""HTTP/1.1 codec of the data plane: a strict, sans-IO pull parser.

`Http1Parser` parses request heads (server side) or response heads (client
side) and then the message body, straight from a contiguous buffer owned by
the caller. Results are offsets into that buffer (`HeaderSlice`, see
`_headers.pxd`); no Python object is created per header and nothing is copied.
Header names the proxy cares about are recognised once, here, and marked with
HF_* flags so later stages never compare names again.

Framing is strict on purpose: a proxy that frames a message differently from
the server behind it can be made to smuggle requests. So anything whose body
length is not unambiguous (several Content-Length headers, Content-Length with
Transfer-Encoding, any transfer coding but a single `chunked`, bare CR, lone LF,
obs-fold, whitespace before the colon, control characters ...) is rejected,
never "repaired".

`Http1Stream` is a small h11-like wrapper (bytes in, events out) for tests
and for Python users; the proxy core drives `Http1Parser` directly from C.
"""

from collections import namedtuple

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp

from fastmesh._headers cimport (
    HeaderSlice, HF_HOP, HF_HOST, HF_CONTENT_LENGTH, HF_TRANSFER_ENCODING, HF_XFF,
    HF_XFP, HF_REQUEST_ID, HF_EXPECT, HF_UPGRADE, HF_CONNECTION, HF_TE, HF_KEEP_ALIVE,
)


# ---------------------------------------------------------------------------
# Character classes (RFC 9110 5.6.2 / 5.5), one byte lookup each.

cdef unsigned char TCHAR[256]      # token characters (method, field names)
cdef unsigned char VALUE_OK[256]   # field value: HTAB, SP, VCHAR, obs-text
cdef unsigned char TARGET_OK[256]  # request-target: VCHAR only (no SP, CTL or obs-text)
cdef unsigned char LOWER[256]      # ASCII lower-casing
cdef signed char HEXVAL[256]       # hex digit value or -1


cdef void _init_tables() noexcept:
    cdef int c
    for c in range(256):
        TCHAR[c] = 0
        VALUE_OK[c] = 1 if (c == 9 or (0x20 <= c <= 0x7E) or c >= 0x80) else 0
        # RFC 3986 wants non-ASCII percent-encoded; h11 and llhttp agree.
        TARGET_OK[c] = 1 if (0x21 <= c <= 0x7E) else 0
        LOWER[c] = c + 32 if (0x41 <= c <= 0x5A) else c
        HEXVAL[c] = -1
        if 0x30 <= c <= 0x39:
            HEXVAL[c] = c - 0x30
        elif 0x61 <= c <= 0x66:
            HEXVAL[c] = c - 0x61 + 10
        elif 0x41 <= c <= 0x46:
            HEXVAL[c] = c - 0x41 + 10
    for c in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        TCHAR[c] = 1


_init_tables()


# ---------------------------------------------------------------------------
# Internal states and error codes. Errors are small ints on the hot path; the
# reason string is only looked up when one happens.

cdef enum:
    CS_SIZE = 0         # chunked: a chunk-size line comes next
    CS_DATA = 1         # chunked: `remaining` bytes of chunk data
    CS_DATA_CRLF = 2    # chunked: the CRLF that ends chunk data
    CS_TRAILERS = 3     # chunked: trailer section up to the empty line
    CS_DONE = 4

cdef enum:
    HS_START = 0        # head: start line next
    HS_FIELDS = 1       # head: field lines next

cdef enum:
    CHUNK_LINE_MAX = 4096   # a chunk-size line (with extensions) longer than
                            # this is an attack, not a client

cdef enum:
    E_OK = 0
    E_REQ_LINE
    E_METHOD
    E_TARGET
    E_VERSION
    E_VERSION_UNSUPPORTED
    E_STATUS_LINE
    E_REASON
    E_LONE_LF
    E_BARE_CR
    E_OBS_FOLD
    E_NAME
    E_EMPTY_NAME
    E_WS_COLON
    E_NO_COLON
    E_VALUE
    E_TOO_LARGE
    E_TOO_MANY
    E_MULTI_CL
    E_CL
    E_TE_CL
    E_TE_UNSUPPORTED
    E_TE_INVALID
    E_TE_HTTP10
    E_NO_HOST
    E_MULTI_HOST
    E_CHUNK_SIZE
    E_CHUNK_EXT
    E_CHUNK_LINE
    E_CHUNK_CRLF
    E_TRAILERS_TOO_LARGE
    E_NO_BODY
    E_HOST

_REASONS = (
    None,
    "Invalid request line",
    "Invalid method",
    "Invalid request target",
    "Invalid HTTP version",
    "HTTP version not supported",
    "Invalid status line",
    "Invalid character in reason phrase",
    "Lone LF line ending (CRLF required)",
    "Bare CR in line",
    "Obsolete line folding",
    "Invalid header name",
    "Invalid header name (empty)",
    "Whitespace before colon",
    "Invalid header line (missing colon)",
    "Invalid character in header value",
    "Request header fields too large",
    "Too many header fields",
    "Multiple Content-Length headers",
    "Invalid Content-Length",
    "Both Transfer-Encoding and Content-Length",
    "Unsupported Transfer-Encoding",
    "Invalid Transfer-Encoding",
    "Transfer-Encoding in an HTTP/1.0 message",
    "Missing Host header",
    "Multiple Host headers",
    "Invalid chunk size",
    "Invalid chunk extension",
    "Chunk size line too long",
    "Missing CRLF after chunk data",
    "Trailer section too large",
    "No message body to parse",
    "Invalid Host header",
)

cdef enum:
    SP = 0x20
    HTAB = 0x09
    CR = 0x0D
    LF = 0x0A

# Connection option tokens seen in the head (bits of a local int).
cdef enum:
    CONN_CLOSE = 1
    CONN_KEEP_ALIVE = 2
    CONN_UPGRADE = 4
    CONN_OTHER = 8

# scan_body()'s scratch parser, made on first use (one per process: the scan
# runs to completion under the GIL, so it is never shared mid-use).
cdef Http1Parser _scratch = None

cdef uint64_t CL_MAX = 0x7FFFFFFFFFFFFFFF   # fits a Py_ssize_t for every caller


# ---------------------------------------------------------------------------
# Small C helpers.

cdef inline bint _ieq(const unsigned char* p, const char* lit, Py_ssize_t n) noexcept nogil:
    # Case-insensitive compare against a lower-case literal of length n.
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[p[i]] != <unsigned char>lit[i]:
            return False
    return True


cdef inline bint _ieq_ci(const unsigned char* a, const unsigned char* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[a[i]] != LOWER[b[i]]:
            return False
    return True


cdef inline int _header_flags(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    # Dispatch on length first: at most two compares per header name.
    if n == 4:
        if _ieq(p, b"host", 4): return HF_HOST
    elif n == 14:
        if _ieq(p, b"content-length", 14): return HF_CONTENT_LENGTH
    elif n == 10:
        if _ieq(p, b"connection", 10): return HF_CONNECTION | HF_HOP
        if _ieq(p, b"keep-alive", 10): return HF_KEEP_ALIVE | HF_HOP
    elif n == 17:
        if _ieq(p, b"transfer-encoding", 17): return HF_TRANSFER_ENCODING | HF_HOP
        if _ieq(p, b"x-forwarded-proto", 17): return HF_XFP
    elif n == 15:
        if _ieq(p, b"x-forwarded-for", 15): return HF_XFF
    elif n == 12:
        if _ieq(p, b"x-request-id", 12): return HF_REQUEST_ID
    elif n == 7:
        if _ieq(p, b"upgrade", 7): return HF_UPGRADE | HF_HOP
    elif n == 6:
        if _ieq(p, b"expect", 6): return HF_EXPECT
    elif n == 2:
        if _ieq(p, b"te", 2): return HF_TE | HF_HOP
    elif n == 16:
        if _ieq(p, b"proxy-connection", 16): return HF_HOP
    return 0


cdef inline int _method_id(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    # Methods are case-sensitive (RFC 9110 9.1).
    if n == 3:
        if memcmp(p, b"GET", 3) == 0: return M_GET
        if memcmp(p, b"PUT", 3) == 0: return M_PUT
    elif n == 4:
        if memcmp(p, b"POST", 4) == 0: return M_POST
        if memcmp(p, b"HEAD", 4) == 0: return M_HEAD
    elif n == 6:
        if memcmp(p, b"DELETE", 6) == 0: return M_DELETE
    elif n == 7:
        if memcmp(p, b"CONNECT", 7) == 0: return M_CONNECT
        if memcmp(p, b"OPTIONS", 7) == 0: return M_OPTIONS
    elif n == 5:
        if memcmp(p, b"TRACE", 5) == 0: return M_TRACE
        if memcmp(p, b"PATCH", 5) == 0: return M_PATCH
    return M_OTHER


cdef inline int _version(const unsigned char* p, Py_ssize_t n, int* minor) noexcept nogil:
    # "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 2.3). A well-formed
    # version other than 1.0/1.1 is "not supported" (505); anything else is
    # malformed (400): "http/1.1", "HTTP/1.10", "HTTP/1".
    if n != 8 or memcmp(p, b"HTTP/", 5) != 0 or p[6] != b'.':
        return E_VERSION
    if not (0x30 <= p[5] <= 0x39 and 0x30 <= p[7] <= 0x39):
        return E_VERSION
    if p[5] != b'1' or (p[7] != b'0' and p[7] != b'1'):
        return E_VERSION_UNSUPPORTED
    minor[0] = p[7] - 0x30
    return E_OK


cdef inline int _field_line(const unsigned char* p, Py_ssize_t s, Py_ssize_t e,
                            HeaderSlice* h) noexcept nogil:
    # Parse the field line p[s:e] (p[e] is the CR of its CRLF, which also
    # stops both scanning loops: CR is neither a tchar nor a value char).
    cdef Py_ssize_t i = s, vs, ve
    cdef unsigned char c = p[s]
    if c == SP or c == HTAB:
        return E_OBS_FOLD
    while TCHAR[p[i]]:
        i += 1
    c = p[i]
    if c != b':':
        if i == e:
            return E_NO_COLON
        if c == SP or c == HTAB:
            while p[i] == SP or p[i] == HTAB:
                i += 1
            return E_WS_COLON if p[i] == b':' else E_NAME
        if c == CR:
            return E_BARE_CR
        return E_NAME
    if i == s:
        return E_EMPTY_NAME
    h.name_off = s
    h.name_len = i - s
    i += 1
    while p[i] == SP or p[i] == HTAB:
        i += 1
    vs = i
    while VALUE_OK[p[i]]:
        i += 1
    if i != e:
        return E_BARE_CR if p[i] == CR else E_VALUE
    ve = e
    while ve > vs and (p[ve - 1] == SP or p[ve - 1] == HTAB):
        ve -= 1
    h.value_off = vs
    h.value_len = ve - vs
    return E_OK


cdef inline int _content_length(const unsigned char* p, Py_ssize_t n, uint64_t* out) noexcept nogil:
    # 1*DIGIT and nothing else: no sign, no inner space, no list, no overflow.
    cdef uint64_t v = 0
    cdef Py_ssize_t i
    cdef unsigned char c
    if n == 0:
        return E_CL
    for i in range(n):
        c = p[i] - 0x30
        if c > 9:
            return E_CL
        if v > (CL_MAX - c) // 10:
            return E_CL
        v = v * 10 + c
    out[0] = v
    return E_OK


cdef inline int _transfer_encoding(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    # Only a single `chunked` is accepted. A syntactically fine list of other
    # codings is "unsupported", anything else malformed; both get 400 (not
    # RFC 9112's optional 501): a proxy cannot tell an unknown coding from a
    # smuggling attempt, and the request must never be taken as valid.
    cdef Py_ssize_t i
    cdef unsigned char c
    if n == 7 and _ieq(p, b"chunked", 7):
        return E_OK
    if n == 0:
        return E_TE_INVALID
    for i in range(n):
        c = p[i]
        if not (TCHAR[c] or c == b',' or c == b';' or c == b'=' or c == SP or c == HTAB):
            return E_TE_INVALID
    return E_TE_UNSUPPORTED


cdef inline int _find_line(const unsigned char* p, Py_ssize_t start, Py_ssize_t limit,
                           Py_ssize_t* lf) noexcept nogil:
    # Find the LF ending the line at `start`; 1 when found (and it is preceded
    # by CR inside the line), 0 if no LF before `limit`, -1 for a lone LF.
    cdef const unsigned char* q
    if limit <= start:
        return 0
    q = <const unsigned char*>memchr(p + start, LF, <size_t>(limit - start))
    if q == NULL:
        return 0
    lf[0] = q - p
    if q == p or (q - 1)[0] != CR:
        return -1
    return 1


# ---------------------------------------------------------------------------

# Helpers of Http1Parser (module functions: the .pxd fixes the class's C methods).

cdef Py_ssize_t _fail(Http1Parser self, int code) except -2:
    # Only place where the error path touches Python objects.
    if not self.is_request:
        self.error_status = 502
    elif code == E_TOO_LARGE or code == E_TOO_MANY:
        self.error_status = 431
    elif code == E_VERSION_UNSUPPORTED:
        self.error_status = 505
    else:
        self.error_status = 400
    reason = _REASONS[code]
    if not self.is_request and code == E_TOO_LARGE:
        reason = "Response header fields too large"
    self.error_reason = reason
    return -1



cdef inline int _request_line(Http1Parser self, const unsigned char* p, Py_ssize_t s, Py_ssize_t e) noexcept:
    # method SP request-target SP HTTP-version, single spaces only.
    cdef Py_ssize_t i = s, j
    cdef const unsigned char* q
    while TCHAR[p[i]]:
        i += 1
    if i == e:
        return E_REQ_LINE
    if i == s or p[i] != SP:
        return E_BARE_CR if p[i] == CR else E_METHOD
    self.method_off = s
    self.method_len = i - s
    self.method = _method_id(p + s, i - s)
    i += 1
    j = i
    while TARGET_OK[p[j]]:
        j += 1
    if j == e:
        return E_REQ_LINE                # no version (or HTTP/0.9)
    if j == i or p[j] != SP:
        return E_BARE_CR if p[j] == CR else E_TARGET
    self.target_off = i
    self.target_len = j - i
    q = <const unsigned char*>memchr(p + i, b'?', <size_t>(j - i))
    self.path_len = (q - (p + i)) if q != NULL else (j - i)
    if memchr(p + j + 1, CR, <size_t>(e - j - 1)) != NULL:
        return E_BARE_CR
    return _version(p + j + 1, e - j - 1, &self.minor)



cdef inline int _status_line(Http1Parser self, const unsigned char* p, Py_ssize_t s, Py_ssize_t e) noexcept:
    # HTTP-version SP 3DIGIT SP [reason]; "HTTP/1.1 200" without the
    # second SP is tolerated (seen in the wild, unambiguous).
    cdef Py_ssize_t i
    cdef int r
    if e - s < 12 or p[s + 8] != SP:
        return E_STATUS_LINE
    r = _version(p + s, 8, &self.minor)
    if r != E_OK:
        return r
    for i in range(s + 9, s + 12):
        if not (0x30 <= p[i] <= 0x39):
            return E_STATUS_LINE
    self.status = (p[s + 9] - 0x30) * 100 + (p[s + 10] - 0x30) * 10 + (p[s + 11] - 0x30)
    if self.status < 100:
        return E_STATUS_LINE
    i = s + 12
    if i == e:
        self.reason_off = i
        self.reason_len = 0
        return E_OK
    if p[i] != SP:
        return E_STATUS_LINE
    i += 1
    self.reason_off = i
    while VALUE_OK[p[i]]:
        i += 1
    if i != e:
        return E_BARE_CR if p[i] == CR else E_REASON
    self.reason_len = e - self.reason_off
    return E_OK



cdef bint _host_ok(const unsigned char* v, Py_ssize_t n) noexcept:
    # RFC 9110 7.2: Host = uri-host [ ":" port ], port = *DIGIT, and RFC 9112
    # 3.2 wants 400 for an invalid value. Only the port is checked here (the
    # host part is matched against the routes' domains anyway): digits only,
    # and at most 65535, since a longer number names no TCP port and an
    # upstream could read it differently (truncated, wrapped). An empty port
    # ("example.com:") is in the grammar (RFC 3986 3.2.3 asks producers to
    # omit it, not receivers to refuse it).
    cdef Py_ssize_t i = 0
    cdef uint64_t port = 0
    if n > 0 and v[0] == b'[':
        # IP-literal: the port can only follow the closing bracket.
        while i < n and v[i] != b']':
            i += 1
        if i == n:
            return False
        i += 1
        if i == n:
            return True
        if v[i] != b':':
            return False
    else:
        while i < n and v[i] != b':':
            i += 1
        if i == n:
            return True
    i += 1
    while i < n:
        if v[i] < 0x30 or v[i] > 0x39:      # not a digit
            return False
        port = port * 10 + (v[i] - 0x30)
        if port > 65535:
            return False
        i += 1
    return True


cdef bint _target_authority_ok(Http1Parser self, const unsigned char* p) noexcept:
    # absolute-form (RFC 9112 3.2.2): the target's authority takes the place
    # of Host, so its port is held to the same rule. The authority runs to
    # the first '/' (or the query, or the end), as the proxy reads it.
    cdef const unsigned char* t = p + self.target_off
    cdef Py_ssize_t i, j
    if self.target_len > 7 and memcmp(t, b"http://", 7) == 0:
        i = 7
    elif self.target_len > 8 and memcmp(t, b"https://", 8) == 0:
        i = 8
    else:
        return True
    j = i
    while j < self.path_len and t[j] != b'/':
        j += 1
    return _host_ok(t + i, j - i)


cdef int _finish_head(Http1Parser self, const unsigned char* p) noexcept:
    # Decide the framing once every field is known (RFC 9112 6.3).
    cdef int i, r, conn = 0, ncl = 0, nte = 0, nhost = 0, te_err = E_OK
    cdef int seen = self._seen
    cdef HeaderSlice* h
    cdef uint64_t cl = 0
    cdef bint has_upgrade = False
    if seen & (HF_HOST | HF_CONTENT_LENGTH | HF_TRANSFER_ENCODING | HF_CONNECTION
               | HF_EXPECT | HF_UPGRADE):
        for i in range(self.nheaders):
            h = &self.headers[i]
            if h.flags == 0:
                continue
            if h.flags & HF_CONTENT_LENGTH:
                ncl += 1
                if ncl > 1:
                    return E_MULTI_CL     # even identical values: never merge
                r = _content_length(p + h.value_off, h.value_len, &cl)
                if r != E_OK:
                    return r
            elif h.flags & HF_TRANSFER_ENCODING:
                nte += 1
                if te_err == E_OK:
                    te_err = _transfer_encoding(p + h.value_off, h.value_len)
            elif h.flags & HF_HOST:
                nhost += 1
                self.host_idx = i
                if self.is_request and not _host_ok(p + h.value_off, h.value_len):
                    return E_HOST
            elif h.flags & HF_CONNECTION:
                conn |= _connection_tokens(self, p, h)
            elif h.flags & HF_UPGRADE:
                has_upgrade = True
            elif h.flags & HF_EXPECT:
                if (self.is_request and self.minor == 1 and h.value_len == 12
                        and _ieq(p + h.value_off, b"100-continue", 12)):
                    self.expect_continue = True
    if nte:
        if ncl:
            return E_TE_CL
        if te_err != E_OK:
            return te_err
        if nte > 1:
            return E_TE_UNSUPPORTED       # "chunked" twice = chunked applied twice
        if self.minor == 0:
            return E_TE_HTTP10            # 1.0 peers cannot mean chunked (RFC 9112 6.1)
    if self.is_request and self.minor == 1:
        if nhost == 0:
            return E_NO_HOST
    if self.is_request and nhost > 1:
        return E_MULTI_HOST
    if self.is_request and not _target_authority_ok(self, p):
        return E_HOST
    if conn & CONN_OTHER:
        _mark_connection_options(self, p)
    for i in range(self.nheaders):
        if self.headers[i].flags & HF_HOP:
            self.hop_count += 1

    if self.minor == 1:
        self.keep_alive = not (conn & CONN_CLOSE)
    else:
        self.keep_alive = (conn & (CONN_KEEP_ALIVE | CONN_CLOSE)) == CONN_KEEP_ALIVE

    if self.is_request:
        self.upgrade = (conn & CONN_UPGRADE) != 0 and has_upgrade
        if nte:
            self.body = BODY_CHUNKED
        elif cl > 0:
            self.body = BODY_LENGTH
    else:
        if 100 <= self.status < 200:
            # 1xx: no body; 101 hands the connection to another protocol.
            if self.status == 101:
                self.upgrade = True
                self.keep_alive = False
            self.body = BODY_NONE
        elif self.req_method == M_CONNECT and 200 <= self.status < 300:
            self.upgrade = True           # tunnel established
            self.keep_alive = False
            self.body = BODY_NONE
        elif (self.req_method == M_HEAD or self.status == 204 or self.status == 304):
            self.body = BODY_NONE
        elif nte:
            self.body = BODY_CHUNKED
        elif ncl:
            if cl > 0:
                self.body = BODY_LENGTH
        else:
            self.body = BODY_EOF
            self.keep_alive = False       # only the close ends the body
    if self.body == BODY_LENGTH:
        self.content_length = cl
        self.remaining = cl
    elif self.body == BODY_NONE:
        self.message_done = True
    self.chunk_state = CS_SIZE
    return E_OK



cdef inline Py_ssize_t _next_list_item(const unsigned char* p, Py_ssize_t i, Py_ssize_t end,
                                       Py_ssize_t* s, Py_ssize_t* t) noexcept:
    # One element of a comma-separated header list (RFC 9110 5.6.1) starting
    # at i: *s/*t bound it without OWS (*s == *t for an empty element).
    # Returns where the next element starts.
    cdef Py_ssize_t b, e
    while i < end and (p[i] == SP or p[i] == HTAB or p[i] == b','):
        i += 1
    b = i
    while i < end and p[i] != b',':
        i += 1
    e = i
    while e > b and (p[e - 1] == SP or p[e - 1] == HTAB):
        e -= 1
    s[0] = b
    t[0] = e
    return i


cdef inline int _connection_tokens(Http1Parser self, const unsigned char* p, HeaderSlice* h) noexcept:
    # Connection = #connection-option; returns CONN_* bits.
    cdef Py_ssize_t i = h.value_off, end = h.value_off + h.value_len, s, t
    cdef int bits = 0
    while i < end:
        i = _next_list_item(p, i, end, &s, &t)
        if t == s:
            continue
        if t - s == 5 and _ieq(p + s, b"close", 5):
            bits |= CONN_CLOSE
        elif t - s == 10 and _ieq(p + s, b"keep-alive", 10):
            bits |= CONN_KEEP_ALIVE
        elif t - s == 7 and _ieq(p + s, b"upgrade", 7):
            bits |= CONN_UPGRADE
        else:
            bits |= CONN_OTHER
    return bits



cdef void _mark_connection_options(Http1Parser self, const unsigned char* p) noexcept:
    # Headers named in Connection are hop-by-hop (RFC 9110 7.6.1). Host and
    # the framing headers are exempt: the proxy rewrites framing itself, and
    # letting a client strip Host by naming it would be an attack vector.
    cdef int i, k
    cdef Py_ssize_t j, end, s, t
    cdef HeaderSlice* h
    cdef HeaderSlice* o
    for i in range(self.nheaders):
        h = &self.headers[i]
        if not (h.flags & HF_CONNECTION):
            continue
        j = h.value_off
        end = h.value_off + h.value_len
        while j < end:
            j = _next_list_item(p, j, end, &s, &t)
            if t == s:
                continue
            for k in range(self.nheaders):
                o = &self.headers[k]
                if (o.name_len == t - s
                        and not (o.flags & (HF_HOST | HF_CONTENT_LENGTH | HF_TRANSFER_ENCODING))
                        and _ieq_ci(p + o.name_off, p + s, t - s)):
                    o.flags |= HF_HOP



cdef inline int _chunk_size_line(Http1Parser self, const unsigned char* p, Py_ssize_t s, Py_ssize_t e) noexcept:
    # chunk-size [ ";" chunk-ext ] CRLF  (RFC 9112 7.1). Extensions are
    # skipped but must not carry CTLs.
    cdef Py_ssize_t i = s
    cdef uint64_t v = 0
    cdef signed char d
    while True:
        d = HEXVAL[p[i]]
        if d < 0:
            break
        if v > (CL_MAX >> 4):
            return E_CHUNK_SIZE           # overflow
        v = (v << 4) | <uint64_t>d
        i += 1
    if i == s:
        return E_CHUNK_SIZE
    if i != e:
        # RFC 9112 allows BWS before ';', but llhttp and h11 do not: a space
        # after the size is where parsers disagree, so refuse it.
        if p[i] != b';':
            return E_BARE_CR if (p[i] == CR and i != e) else E_CHUNK_SIZE
        i += 1
        while VALUE_OK[p[i]]:
            i += 1
        if i != e:
            return E_BARE_CR if p[i] == CR else E_CHUNK_EXT
    self.remaining = v
    return E_OK



cdef inline int _trailers(Http1Parser self, const unsigned char* p, Py_ssize_t start, Py_ssize_t n,
                          Py_ssize_t* end) except -2:
    # 1: complete (end = offset after the final CRLF); 0: need more; -1: error.
    cdef Py_ssize_t pos = start, lf = 0, limit
    cdef int r, count = 0
    cdef HeaderSlice h
    limit = n if n - start < self.max_head_bytes else start + self.max_head_bytes
    while True:
        r = _find_line(p, pos, limit, &lf)
        if r == 0:
            if n - start >= self.max_head_bytes:
                _fail(self, E_TRAILERS_TOO_LARGE)
                return -1
            return 0
        if r < 0:
            _fail(self, E_LONE_LF)
            return -1
        if lf - 1 == pos:
            self.trailer_off = start
            self.trailer_len = pos - start
            end[0] = lf + 1
            return 1
        count += 1
        if count > self.max_headers:
            _fail(self, E_TOO_MANY)
            return -1
        r = _field_line(p, pos, lf - 1, &h)
        if r != E_OK:
            _fail(self, r)
            return -1
        pos = lf + 1



cdef class Http1Parser:
    """Strict HTTP/1.1 head and body parser over a caller-owned buffer.

    The C API (parse_head / parse_body, see _http1.pxd) is what the proxy
    uses. The def methods below are thin wrappers for tests and benchmarks.
    """

    def __cinit__(self):
        self.max_head_bytes = 61440
        self.max_headers = 100
        self.req_method = M_OTHER
        self.error_status = 0
        self.error_reason = None

    def __init__(self, bint is_request, Py_ssize_t max_head_bytes=61440, int max_headers=100):
        self.is_request = is_request
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers if max_headers < H1_MAX_HEADERS_HARD else H1_MAX_HEADERS_HARD
        self.reset()

    # -- C API ---------------------------------------------------------------

    cdef void reset(self) noexcept:
        # req_method is kept: after a 1xx the final response answers the same request.
        self.method = M_OTHER
        self.method_off = self.method_len = 0
        self.target_off = self.target_len = self.path_len = 0
        self.minor = 1
        self.status = 0
        self.reason_off = self.reason_len = 0
        self.nheaders = 0
        self.host_idx = -1
        self.body = BODY_NONE
        self.content_length = 0
        self.keep_alive = False
        self.upgrade = False
        self.expect_continue = False
        self.hop_count = 0
        self.error_status = 0
        self.remaining = 0
        self.chunk_state = CS_SIZE
        self.message_done = False
        self.trailer_off = self.trailer_len = 0
        self._pos = 0
        self._scan = 0
        self._hstate = HS_START
        self._seen = 0

    cdef void expect_response_to(self, int method) noexcept:
        self.req_method = method

    cdef Py_ssize_t parse_head(self, const char* data, Py_ssize_t n) except -2:
        cdef const unsigned char* p = <const unsigned char*>data
        cdef Py_ssize_t limit = n if n < self.max_head_bytes else self.max_head_bytes
        cdef Py_ssize_t pos = self._pos, lf = 0, e
        cdef int r, maxh = self.max_headers
        cdef HeaderSlice* h
        if maxh > H1_MAX_HEADERS_HARD:
            maxh = H1_MAX_HEADERS_HARD
        # Resumable at line granularity: complete lines were validated and
        # recorded by earlier calls; only the search for the next LF resumes
        # from where it stopped, so a slow drip of bytes costs O(n) overall.
        while True:
            r = _find_line(p, self._scan if self._scan > pos else pos, limit, &lf)
            if r == 0:
                self._pos = pos
                self._scan = limit
                if n >= self.max_head_bytes:
                    return _fail(self, E_TOO_LARGE)
                return 0
            if r < 0:
                return _fail(self, E_LONE_LF)
            e = lf - 1                       # the CR
            if self._hstate == HS_START:
                r = _request_line(self, p, pos, e) if self.is_request else _status_line(self, p, pos, e)
                if r != E_OK:
                    return _fail(self, r)
                self._hstate = HS_FIELDS
            elif e == pos:                   # the empty line: end of the head
                r = _finish_head(self, p)
                if r != E_OK:
                    return _fail(self, r)
                self._pos = self._scan = lf + 1
                return lf + 1
            else:
                if self.nheaders >= maxh:
                    return _fail(self, E_TOO_MANY)
                h = &self.headers[self.nheaders]
                r = _field_line(p, pos, e, h)
                if r != E_OK:
                    return _fail(self, r)
                h.flags = _header_flags(p + h.name_off, h.name_len)
                self._seen |= h.flags
                self.nheaders += 1
            pos = lf + 1

    cdef Py_ssize_t parse_body(self, const char* data, Py_ssize_t n,
                               Py_ssize_t* seg_off, Py_ssize_t* seg_len) except -2:
        cdef const unsigned char* p = <const unsigned char*>data
        cdef Py_ssize_t pos = 0, take, lf = 0
        cdef int r
        cdef bint have_seg = False
        seg_off[0] = 0
        seg_len[0] = 0
        if self.message_done:
            return 0
        if self.body == BODY_LENGTH:
            take = n if <uint64_t>n < self.remaining else <Py_ssize_t>self.remaining
            seg_len[0] = take
            self.remaining -= <uint64_t>take
            if self.remaining == 0:
                self.message_done = True
            return take
        if self.body == BODY_EOF:
            seg_len[0] = n
            return n
        if self.body != BODY_CHUNKED:
            return _fail(self, E_NO_BODY)
        # Chunked: run framing states until a data run was taken (then stop
        # before the next one) or more bytes are needed.
        while True:
            if self.chunk_state == CS_DATA:
                if have_seg or pos == n:
                    return pos
                take = n - pos
                if <uint64_t>take > self.remaining:
                    take = <Py_ssize_t>self.remaining
                seg_off[0] = pos
                seg_len[0] = take
                have_seg = True
                pos += take
                self.remaining -= <uint64_t>take
                if self.remaining == 0:
                    self.chunk_state = CS_DATA_CRLF
            elif self.chunk_state == CS_DATA_CRLF:
                if pos == n:
                    return pos
                if p[pos] != CR:
                    return _fail(self, E_CHUNK_CRLF)
                if pos + 1 == n:
                    return pos                # wait for the LF, consume both at once
                if p[pos + 1] != LF:
                    return _fail(self, E_CHUNK_CRLF)
                pos += 2
                self.chunk_state = CS_SIZE
            elif self.chunk_state == CS_SIZE:
                take = n if n - pos < CHUNK_LINE_MAX else pos + CHUNK_LINE_MAX
                r = _find_line(p, pos, take, &lf)
                if r == 0:
                    if n - pos >= CHUNK_LINE_MAX:
                        return _fail(self, E_CHUNK_LINE)
                    return pos
                if r < 0:
                    return _fail(self, E_LONE_LF)
                r = _chunk_size_line(self, p, pos, lf - 1)
                if r != E_OK:
                    return _fail(self, r)
                pos = lf + 1
                self.chunk_state = CS_TRAILERS if self.remaining == 0 else CS_DATA
            elif self.chunk_state == CS_TRAILERS:
                r = _trailers(self, p, pos, n, &lf)
                if r < 0:
                    return -1
                if r == 0:
                    return pos                # never consume part of the trailers
                pos = lf
                self.chunk_state = CS_DONE
                self.message_done = True
                return pos
            else:
                return pos

    cdef int scan_body(self, const char* data, Py_ssize_t n) except -2:
        # Parse body bytes on a scratch copy of the body state, consuming
        # nothing: 0 if they hold no framing error (yet), -1 if they do
        # (error_status/error_reason set here). Lets the proxy refuse a
        # request for bytes it already has before any of it is forwarded.
        global _scratch
        cdef Http1Parser s = _scratch
        cdef Py_ssize_t r, off = 0, seg = 0
        if s is None:
            s = _scratch = Http1Parser(True, self.max_head_bytes, self.max_headers)
        s.max_head_bytes = self.max_head_bytes
        s.max_headers = self.max_headers
        s.body = self.body
        s.remaining = self.remaining
        s.chunk_state = self.chunk_state
        s.message_done = self.message_done
        s.trailer_off = s.trailer_len = 0
        while n > 0 and not s.message_done:
            r = s.parse_body(data, n, &off, &seg)
            if r < 0:
                self.error_status = s.error_status
                self.error_reason = s.error_reason
                return -1
            if r == 0:
                break
            data += r
            n -= r
        return 0

    def py_scan_body(self, data):
        """scan_body() for tests: 0, or -1 with error_status/error_reason set."""
        cdef const unsigned char[:] mv = data
        if mv.shape[0] == 0:
            return 0
        return self.scan_body(<const char*>&mv[0], mv.shape[0])

    # -- Python helpers (tests, benchmarks) ---------------------------------

    def py_reset(self):
        self.reset()

    def py_expect_response_to(self, method):
        """Set the request method a response answers (bytes like b"HEAD" or an H1Method int)."""
        self.expect_response_to(method_id(method) if isinstance(method, (bytes, str)) else method)

    def py_parse_head(self, bytes data):
        """parse_head() over `data`; returns consumed / 0 / -1."""
        return self.parse_head(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    def py_parse_body(self, bytes data):
        """parse_body() over `data`; returns (consumed, seg_off, seg_len)."""
        cdef Py_ssize_t off = 0, ln = 0, r
        r = self.parse_body(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &off, &ln)
        return r, off, ln

    def py_headers(self):
        """The parsed header slices: [(name_off, name_len, value_off, value_len, flags)]."""
        cdef int i
        return [(self.headers[i].name_off, self.headers[i].name_len,
                 self.headers[i].value_off, self.headers[i].value_len,
                 self.headers[i].flags) for i in range(self.nheaders)]

    def parse_bytes_once(self, bytes data):
        """Parse one whole message from `data` in C and reset; returns bytes consumed.

        For benchmarks: the per-message cost of parse_head + parse_body.
        """
        cdef const char* p = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), pos, r, off = 0, ln = 0
        self.reset()
        pos = self.parse_head(p, n)
        if pos <= 0:
            return pos
        while not self.message_done:
            r = self.parse_body(p + pos, n - pos, &off, &ln)
            if r < 0:
                return -1
            if r == 0:
                break
            pos += r
        return pos


_METHODS = {b"GET": M_GET, b"HEAD": M_HEAD, b"POST": M_POST, b"PUT": M_PUT,
            b"DELETE": M_DELETE, b"CONNECT": M_CONNECT, b"OPTIONS": M_OPTIONS,
            b"TRACE": M_TRACE, b"PATCH": M_PATCH}


def method_id(method):
    """The H1Method int for a method name (bytes or str); M_OTHER (0) if unknown."""
    if isinstance(method, str):
        method = method.encode("latin-1")
    return _METHODS.get(method, M_OTHER)


# Body kinds, for Python users.
BODY_KIND_NONE = BODY_NONE
BODY_KIND_LENGTH = BODY_LENGTH
BODY_KIND_CHUNKED = BODY_CHUNKED
BODY_KIND_EOF = BODY_EOF


# ---------------------------------------------------------------------------
# Sans-IO Python wrapper: bytes in, events out (h11-like).

Request = namedtuple("Request", "method target http_version headers keep_alive upgrade expect_continue")
Response = namedtuple("Response", "status_code reason http_version headers keep_alive upgrade")
Data = namedtuple("Data", "data")
EndOfMessage = namedtuple("EndOfMessage", "trailers")
Error = namedtuple("Error", "status reason")

cdef enum:
    ST_HEAD = 0
    ST_BODY = 1
    ST_PAUSED = 2       # after an upgrade / a non-keep-alive message: no more HTTP
    ST_ERROR = 3


cdef list _split_fields(bytes block):
    # Trailer block "name: value\r\n"*: already validated by the parser.
    cdef list out = []
    for line in block.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            out.append((name, value.strip(b" \t")))
    return out


cdef class Http1Stream:
    """Bytes in, events out, over one connection (one direction).

    Events: Request / Response (headers as [(name, value)] with the original
    name case), Data(bytes), EndOfMessage(trailers), Error(status, reason).
    Responses need the method of each request answered: call
    expect_response_to(b"HEAD") etc. once per request, in order (defaults to
    GET). After an upgrade or a message that closes the connection, further
    bytes are kept in `trailing_data` and no more events are produced.
    """

    cdef readonly Http1Parser parser
    cdef bytearray _buf
    cdef Py_ssize_t _start
    cdef int _state
    cdef object _methods

    def __init__(self, bint is_request, Py_ssize_t max_head_bytes=61440, int max_headers=100):
        self.parser = Http1Parser(is_request, max_head_bytes, max_headers)
        self._buf = bytearray()
        self._start = 0
        self._state = ST_HEAD
        self._methods = []

    def expect_response_to(self, method):
        self._methods.append(method_id(method))

    @property
    def trailing_data(self):
        return bytes(self._buf[self._start:])

    @property
    def state(self):
        return ("HEAD", "BODY", "PAUSED", "ERROR")[self._state]

    def feed_eof(self):
        """The peer closed: ends a BODY_EOF response, else errors if mid-message."""
        if self._state == ST_BODY and self.parser.body == BODY_EOF:
            self._state = ST_PAUSED
            return [EndOfMessage([])]
        if (self._state == ST_BODY or
                (self._state == ST_HEAD and len(self._buf) > self._start)):
            self._state = ST_ERROR
            return [Error(400 if self.parser.is_request else 502, "Incomplete message")]
        return []

    def feed(self, data):
        cdef list events = []
        cdef Http1Parser pr = self.parser
        cdef Py_ssize_t r, avail, off = 0, ln = 0
        cdef const char* base
        if self._start and self._start * 2 >= len(self._buf):
            del self._buf[:self._start]       # compact; offsets are relative
            self._start = 0
        self._buf += data
        while self._state == ST_HEAD or self._state == ST_BODY:
            base = PyByteArray_AS_STRING(self._buf) + self._start
            avail = PyByteArray_GET_SIZE(self._buf) - self._start
            if self._state == ST_HEAD:
                if avail == 0:
                    break
                if not pr.is_request:
                    pr.expect_response_to(self._methods[0] if self._methods else M_GET)
                r = pr.parse_head(base, avail)
                if r == 0:
                    break
                if r < 0:
                    events.append(Error(pr.error_status, pr.error_reason))
                    self._state = ST_ERROR
                    break
                events.append(self._head_event(self._start))
                self._start += r
                if not pr.is_request and 100 <= pr.status < 200 and pr.status != 101:
                    pr.reset()                # interim response; final one follows
                    continue
                if not pr.is_request and self._methods:
                    self._methods.pop(0)
                self._state = ST_BODY
            else:
                r = pr.parse_body(base, avail, &off, &ln)
                if r < 0:
                    events.append(Error(pr.error_status, pr.error_reason))
                    self._state = ST_ERROR
                    break
                if ln:
                    events.append(Data(bytes(base[off:off + ln])))
                if pr.message_done:
                    trailers = []
                    if pr.trailer_len:
                        trailers = _split_fields(base[pr.trailer_off:pr.trailer_off + pr.trailer_len])
                    events.append(EndOfMessage(trailers))
                    self._start += r
                    if pr.upgrade or not pr.keep_alive or (pr.is_request and pr.method == M_CONNECT):
                        self._state = ST_PAUSED
                    else:
                        self._state = ST_HEAD
                        pr.reset()
                    continue
                self._start += r
                if r == 0:
                    break
        return events

    cdef object _head_event(self, Py_ssize_t start):
        cdef Http1Parser pr = self.parser
        cdef const char* b = PyByteArray_AS_STRING(self._buf) + start
        cdef int i
        cdef HeaderSlice* h
        headers = []
        for i in range(pr.nheaders):
            h = &pr.headers[i]
            headers.append((b[h.name_off:h.name_off + h.name_len],
                            b[h.value_off:h.value_off + h.value_len]))
        version = b"1.1" if pr.minor == 1 else b"1.0"
        if pr.is_request:
            return Request(b[pr.method_off:pr.method_off + pr.method_len],
                           b[pr.target_off:pr.target_off + pr.target_len],
                           version, headers, pr.keep_alive, pr.upgrade, pr.expect_continue)
        return Response(pr.status, b[pr.reason_off:pr.reason_off + pr.reason_len],
                        version, headers, pr.keep_alive, pr.upgrade)
