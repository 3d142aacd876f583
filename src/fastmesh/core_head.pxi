# core_head.pxi: header lists and the one request-head builder.
#
# Every translation of a request head toward an upstream (HTTP/1.1 or
# HTTP/2 client, HTTP/1.1 or HTTP/2 upstream) goes through
# build_upstream_head(): one pass over the neutral request view a
# ProxyStream holds (core_stream.pxi), writing either HTTP/1.1 field lines or
# an HTTP/2 header list. What it does: hop-by-hop fields and the framing
# headers go (the framing is regenerated), Host becomes :authority or back,
# split cookies are joined for HTTP/1.1 (RFC 9113 8.2.3), TE survives only as
# "trailers" on HTTP/2, X-Forwarded-For / -Proto and x-request-id are set as
# the listener says, and the filters' header mutations are applied.

from fastmesh._hpack cimport HPACK_NEVER_INDEX


@cython.final
@cython.freelist(64)
cdef class HeaderList:
    """A header list with its own bytes: names and values copied into one
    buffer, HeaderSlice offsets into it (what the HPACK encoder takes)."""

    def __cinit__(self):
        self.buf = OutBuf(1024)
        self.cap = 32
        self.hs = <HeaderSlice*>malloc(self.cap * sizeof(HeaderSlice))
        self.n = 0
        if self.hs == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.hs)

    cdef inline void clear(self) noexcept:
        self.n = 0
        self.buf.len = 0

    cdef int add(self, const char* name, Py_ssize_t nl, const char* value, Py_ssize_t vl,
                 int flags) except -1:
        cdef HeaderSlice* h
        if self.n == self.cap:
            h = <HeaderSlice*>realloc(self.hs, 2 * self.cap * sizeof(HeaderSlice))
            if h == NULL:
                raise MemoryError()
            self.hs = h
            self.cap *= 2
        h = &self.hs[self.n]
        h.name_off = self.buf.len
        h.name_len = nl
        self.buf.add(name, nl)
        h.value_off = self.buf.len
        h.value_len = vl
        self.buf.add(value, vl)
        h.flags = flags
        self.n += 1
        return 0

    cdef int add_fields(self, const char* base, HeaderSlice* hs, int n, int skip) except -1:
        # The regular fields of a decoded head (pseudo-headers and fields with a
        # `skip` flag left out), keeping HPACK's never-index mark.
        cdef int i
        for i in range(n):
            if hs[i].flags & skip or (hs[i].name_len and base[hs[i].name_off] == b':'):
                continue
            self.add(base + hs[i].name_off, hs[i].name_len, base + hs[i].value_off,
                     hs[i].value_len, hs[i].flags & HPACK_NEVER_INDEX)
        return 0

    cdef int add_uint(self, const char* name, Py_ssize_t nl, unsigned long long v) except -1:
        cdef char tmp[24]
        cdef int i = 24
        if v == 0:
            return self.add(name, nl, "0", 1, 0)
        while v:
            i -= 1
            tmp[i] = <char>(48 + v % 10)
            v //= 10
        return self.add(name, nl, tmp + i, 24 - i, 0)

    cdef int add_h1_lines(self, const char* p, Py_ssize_t n) except -1:
        # HTTP/1.1 trailer lines ("Name: value\r\n", validated by the parser)
        # -> fields with lower-case names (HTTP/2 wants them lower-case).
        cdef Py_ssize_t i = 0, ls, colon, vs, ve, k
        cdef char lname[256]
        while i < n:
            ls = i
            while i < n and p[i] != b'\n':
                i += 1
            ve = i
            i += 1
            if ve > ls and p[ve - 1] == b'\r':
                ve -= 1
            colon = ls
            while colon < ve and p[colon] != b':':
                colon += 1
            if colon >= ve or colon == ls or colon - ls > 255:
                continue
            for k in range(colon - ls):
                lname[k] = p[ls + k] + 32 if 65 <= p[ls + k] <= 90 else p[ls + k]
            vs = colon + 1
            while vs < ve and (p[vs] == b' ' or p[vs] == b'\t'):
                vs += 1
            while ve > vs and (p[ve - 1] == b' ' or p[ve - 1] == b'\t'):
                ve -= 1
            self.add(lname, colon - ls, p + vs, ve - vs, 0)
        return 0

    cdef inline const char* base(self) noexcept:
        return self.buf.data



cdef inline bint name_is(const char* base, HeaderSlice* h, const char* lit, Py_ssize_t n) noexcept:
    return h.name_len == n and memcmp(base + h.name_off, lit, n) == 0


cdef inline bint ci_equal(const char* a, Py_ssize_t alen, const char* b, Py_ssize_t blen) noexcept:
    # b is lower-case ASCII
    cdef Py_ssize_t i
    cdef char c
    if alen != blen:
        return False
    for i in range(alen):
        c = a[i]
        if 65 <= c <= 90:
            c += 32
        if c != b[i]:
            return False
    return True


cdef inline void _field(OutBuf o, HeaderList hl, const char* n, Py_ssize_t nl,
                        const char* v, Py_ssize_t vl, int flags):
    # One field into whichever form is being built.
    if o is not None:
        o.add(n, nl)
        o.add(": ", 2)
        o.add(v, vl)
        o.add("\r\n", 2)
    else:
        hl.add(n, nl, v, vl, flags & HPACK_NEVER_INDEX)


cdef bint _removed(list names, const char* n, Py_ssize_t nl):
    cdef bytes name
    for name in names:
        if ci_equal(n, nl, name, len(name)):
            return True
    return False


cdef bytes _HTTP = b"http"      # the downstreams' scheme for plaintext (identity checked)


cdef object build_upstream_head(ProxyStream s, bint to_h2, Endpoint ep):
    """The request head for one upstream attempt: bytes (HTTP/1.1) or a
    HeaderList (HTTP/2)."""
    cdef ListenerConf conf = s.conf
    cdef const char* base = s.rq_base
    cdef HeaderSlice* hs = s.rq_hs
    cdef int n = s.rq_n
    cdef OutBuf o = None
    cdef HeaderList hl = None
    cdef HeaderList add = s.rq_add
    cdef list removed = s.rq_remove
    cdef int k, f, last_xff = -1, ncookie = 0, xfcc_at = -1
    cdef int xmode = s.xfcc_mode
    cdef bint have_host = False, have_rid = False
    cdef bint join_cookies = s.from_h2 and not to_h2
    cdef bint trace = s.trace is not None or s.trace_st != 0     # we write the trace context
    cdef int skip = HF_HOP | HF_CONTENT_LENGTH | HF_TRANSFER_ENCODING | HF_XFP
    cdef HeaderSlice* h
    cdef OutBuf tmp
    cdef bytes auth = None
    if s.from_h2 or s.rq_absolute or to_h2:
        skip |= HF_HOST            # the authority is written from rq_host
    if to_h2 or s.expect_continue:
        skip |= HF_EXPECT
    if s.rq_host_len == 0:
        auth = f"{ep.host}:{ep.port}".encode()
    if to_h2:
        hl = HeaderList()
        hl.add(":method", 7, s.rq_method, s.rq_method_len, 0)
        hl.add(":scheme", 7, "http", 4, 0)
        if auth is None:
            hl.add(":authority", 10, s.rq_host, s.rq_host_len, 0)
        else:
            hl.add(":authority", 10, auth, len(auth), 0)
        hl.add(":path", 5, s.rq_path, s.rq_path_len + s.rq_query_len, 0)
    else:
        o = s.headbuf
        if o is None:
            o = s.headbuf = OutBuf(1024)
        o.clear()
        o.add(s.rq_method, s.rq_method_len)
        o.add(" ", 1)
        o.add(s.rq_path, s.rq_path_len + s.rq_query_len)
        o.add(" HTTP/1.1\r\n", 11)
    for k in range(n):
        if hs[k].flags & HF_XFF:
            last_xff = k
    for k in range(n):
        h = &hs[k]
        f = h.flags
        if f & HF_TE and to_h2:
            if h.value_len == 8 and memcmp(base + h.value_off, b"trailers", 8) == 0:
                hl.add("te", 2, "trailers", 8, 0)
            continue
        if f & skip or (h.name_len and base[h.name_off] == b':'):
            continue
        if removed is not None and _removed(removed, base + h.name_off, h.name_len):
            continue
        if h.name_len >= 16 and (base[h.name_off] | 32) == b'x':
            if not conf.trust_retry_headers and is_retry_header(base + h.name_off, h.name_len):
                continue    # x-envoy-retry-on & co. steer only a trusting listener (core_retry.pxi)
            if s.attempt_hdr and ci_equal(base + h.name_off, h.name_len,
                                          "x-envoy-attempt-count", 21):
                continue    # ours replaces the client's
        if trace and is_trace_header(base + h.name_off, h.name_len):
            continue    # ours replaces the caller's (filter_tracing.pxi)
        if join_cookies and name_is(base, h, "cookie", 6):
            ncookie += 1
            continue
        if f & HF_HOST:
            have_host = True
        if f & HF_REQUEST_ID:
            have_rid = True
        if xmode and name_is(base, h, "x-forwarded-client-cert", 23):
            # TLS listeners only (core_tls.pxi, set once per connection).
            if xmode != XFCC_APPEND or xfcc_at >= 0:
                continue
            xfcc_at = k
            tmp = OutBuf(h.value_len + len(s.xfcc) + 2)
            tmp.add(base + h.value_off, h.value_len)
            tmp.add(",", 1)
            tmp.add_bytes(s.xfcc)
            _field(o, hl, base + h.name_off, h.name_len, tmp.data, tmp.len, f)
            continue
        if k == last_xff and conf.xff_append:
            tmp = OutBuf(h.value_len + 48)
            tmp.add(base + h.value_off, h.value_len)
            if h.value_len:
                tmp.add(", ", 2)
            tmp.add_bytes(s.client_ip)
            _field(o, hl, base + h.name_off, h.name_len, tmp.data, tmp.len, f)
            continue
        _field(o, hl, base + h.name_off, h.name_len, base + h.value_off, h.value_len, f)
    if ncookie:
        # RFC 9113 8.2.3: split cookie fields are joined with "; " for HTTP/1.1.
        o.add("cookie: ", 8)
        for k in range(n):
            h = &hs[k]
            if name_is(base, h, "cookie", 6):
                o.add(base + h.value_off, h.value_len)
                ncookie -= 1
                if ncookie:
                    o.add("; ", 2)
        o.add("\r\n", 2)
    if not to_h2 and not have_host:
        if auth is None:
            _field(o, hl, "host", 4, s.rq_host, s.rq_host_len, 0)
        else:
            _field(o, hl, "host", 4, auth, len(auth), 0)
    if xfcc_at < 0 and (xmode == XFCC_SET or xmode == XFCC_APPEND):
        _field(o, hl, "x-forwarded-client-cert", 23, s.xfcc, len(s.xfcc), 0)
    if last_xff < 0 and conf.xff_append:
        _field(o, hl, "x-forwarded-for", 15, s.client_ip, len(s.client_ip), 0)
    if o is not None and s.scheme is _HTTP:
        o.add("x-forwarded-proto: http\r\n", 25)     # (the common case in one copy)
    else:
        _field(o, hl, "x-forwarded-proto", 17, s.scheme, len(s.scheme), 0)
    if not have_rid and conf.gen_request_id:
        if s.attempt_hdr:
            # The head is built again for each attempt: one request, one id.
            if s.gen_rid is None:
                tmp = OutBuf(64)
                add_request_id(tmp)
                s.gen_rid = tmp.data[14:50]
            _field(o, hl, "x-request-id", 12, s.gen_rid, 36, 0)
        elif o is not None:
            add_request_id(o)
        else:
            tmp = OutBuf(64)
            add_request_id(tmp)
            hl.add("x-request-id", 12, tmp.data + 14, 36, 0)
    if s.attempt_hdr:
        if o is not None:
            o.add("x-envoy-attempt-count: ", 23)
            o.add_uint(s.attempts)
            o.add("\r\n", 2)
        else:
            hl.add_uint("x-envoy-attempt-count", 21, s.attempts)
    if trace:
        trace_inject(s, o, hl)
    if add is not None:
        for k in range(add.n):
            h = &add.hs[k]
            _field(o, hl, add.base() + h.name_off, h.name_len, add.base() + h.value_off,
                   h.value_len, 0)
    # Framing: what we parsed, never what the client's fields claimed.
    if s.req_body == BODY_LENGTH:
        if to_h2:
            hl.add_uint("content-length", 14, s.req_cl)
        else:
            o.add("content-length: ", 16)
            o.add_uint(s.req_cl)
            o.add("\r\n", 2)
    elif s.req_body != BODY_NONE and not to_h2:
        o.add("transfer-encoding: chunked\r\n", 28)
    if to_h2:
        return hl
    if s.rq_upgrade_len:
        o.add("connection: upgrade\r\nupgrade: ", 30)
        o.add(s.rq_upgrade, s.rq_upgrade_len)
        o.add("\r\n", 2)
    o.add("\r\n", 2)
    return o.take()
