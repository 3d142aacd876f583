# trace_otlp.pxi: finished span records -> an OTLP ExportTraceServiceRequest
# (opentelemetry/proto/collector/trace/v1/trace_service.proto), serialized.
#
# The export thread (runtime/trace_export.py) calls otlp_encode() with a
# batch of the tuples filter_tracing.pxi made and hands the bytes to the
# OpenTelemetry SDK's OTLP exporter (its transport, retries and headers).
# Encoding here rather than through the SDK's ReadableSpan and its Python
# encoder costs a few thousand instructions a span instead of a few hundred
# thousand (docs/observability.md#what-it-costs): at 1 % sampling that is the
# difference between a rounding error and half a request's cost. The
# attributes are those of OpenTelemetry's HTTP semantic conventions; the
# resource and the instrumentation scope come encoded by the caller (made
# with opentelemetry-proto's classes, once). tests/test_tracing.py checks the
# result against the SDK's own encoding of the same spans.

cdef enum:  # protobuf wire types
    WT_VARINT = 0
    WT_I64 = 1
    WT_LEN = 2
    WT_I32 = 5


cdef inline void pb_varint(OutBuf o, uint64_t v):
    cdef char tmp[10]
    cdef int n = 0
    while v >= 0x80:
        tmp[n] = <char>((v & 0x7f) | 0x80)
        v >>= 7
        n += 1
    tmp[n] = <char>v
    o.add(tmp, n + 1)


cdef inline int varint_len(uint64_t v) noexcept:
    cdef int n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline void pb_tag(OutBuf o, int field, int wt):
    pb_varint(o, <uint64_t>((field << 3) | wt))


cdef inline void pb_len(OutBuf o, int field, const char* p, Py_ssize_t n):
    pb_tag(o, field, WT_LEN)
    pb_varint(o, <uint64_t>n)
    o.add(p, n)


cdef inline void pb_fixed64(OutBuf o, int field, uint64_t v):
    cdef char tmp[8]
    cdef int i
    for i in range(8):
        tmp[i] = <char>((v >> (8 * i)) & 0xff)
    pb_tag(o, field, WT_I64)
    o.add(tmp, 8)


cdef inline void pb_id(OutBuf o, int field, uint64_t hi, uint64_t lo, bint wide):
    # trace ids (16 bytes) and span ids (8), big-endian as OTLP has them
    cdef char tmp[16]
    cdef int i, k = 0
    if wide:
        for i in range(8):
            tmp[i] = <char>((hi >> (56 - 8 * i)) & 0xff)
        k = 8
    for i in range(8):
        tmp[k + i] = <char>((lo >> (56 - 8 * i)) & 0xff)
    pb_len(o, field, tmp, k + 8)


cdef void kv_str(OutBuf o, const char* key, Py_ssize_t kl, const char* v, Py_ssize_t vl):
    # Span.attributes (9): KeyValue{key = 1, value = 2: AnyValue{string_value = 1}}
    cdef Py_ssize_t av = 1 + varint_len(vl) + vl
    pb_tag(o, 9, WT_LEN)
    pb_varint(o, 1 + varint_len(kl) + kl + 1 + varint_len(av) + av)
    pb_len(o, 1, key, kl)
    pb_tag(o, 2, WT_LEN)
    pb_varint(o, av)
    pb_len(o, 1, v, vl)


cdef void kv_int(OutBuf o, const char* key, Py_ssize_t kl, int64_t v):
    # ... AnyValue{int_value = 3}
    cdef Py_ssize_t av = 1 + varint_len(<uint64_t>v)
    pb_tag(o, 9, WT_LEN)
    pb_varint(o, 1 + varint_len(kl) + kl + 1 + varint_len(av) + av)
    pb_len(o, 1, key, kl)
    pb_tag(o, 2, WT_LEN)
    pb_varint(o, av)
    pb_tag(o, 3, WT_VARINT)
    pb_varint(o, <uint64_t>v)


cdef inline void kv_obj(OutBuf o, const char* key, Py_ssize_t kl, object v):
    cdef bytes b = v if type(v) is bytes else str(v).encode()
    kv_str(o, key, kl, b, len(b))


cdef void _authority(OutBuf o, bytes host):
    # server.address / server.port from the authority ("h", "h:p", "[v6]:p")
    cdef const char* p = host
    cdef Py_ssize_t n = len(host), i, colon = -1, ncolon = 0
    cdef int64_t port = 0
    for i in range(n):
        if p[i] == b':':
            ncolon += 1
            colon = i
    if n and p[0] == b'[':
        i = 1
        while i < n and p[i] != b']':
            i += 1
        colon = i + 1 if i + 1 < n and p[i + 1] == b':' else -1
        kv_str(o, "server.address", 14, p + 1, (i - 1) if i < n else n - 1)
    elif ncolon == 1:
        kv_str(o, "server.address", 14, p, colon)
    else:
        colon = -1
        kv_str(o, "server.address", 14, p, n)
    if colon > 0 and colon + 1 < n:
        for i in range(colon + 1, n):
            if not 48 <= p[i] <= 57:
                return
            port = port * 10 + (p[i] - 48)
        kv_int(o, "server.port", 11, port)


cdef const char* _outcome_name(int outcome, Py_ssize_t* n) noexcept:
    # UpstreamRequest.outcome below 1 (cluster_outlier.pxd)
    if outcome == OUT_CONNECT_FAILED:
        n[0] = 15
        return "connect_failure"
    if outcome == OUT_TIMEOUT:
        n[0] = 7
        return "timeout"
    if outcome == OUT_RESET:
        n[0] = 5
        return "reset"
    n[0] = 9
    return "cancelled"


cdef void _span(OutBuf o, tuple r):
    cdef int kind = r[0]
    cdef uint64_t hi = r[1], lo = r[2], sid = r[3], parent = r[4]
    cdef int status = r[7]
    cdef bytes method = r[8], target = r[9], b
    cdef const char* t = target
    cdef Py_ssize_t tn = len(target), q = 0, en = 0
    cdef const char* err = NULL
    cdef char num[12]
    cdef int k
    pb_id(o, 1, hi, lo, True)
    pb_id(o, 2, 0, sid, False)
    if parent:
        pb_id(o, 4, 0, parent, False)
    pb_len(o, 5, method, len(method))
    pb_tag(o, 6, WT_VARINT)
    pb_varint(o, 2 if kind == 1 else 3)          # SPAN_KIND_SERVER / _CLIENT
    pb_fixed64(o, 7, <uint64_t>r[5])
    pb_fixed64(o, 8, <uint64_t>r[6])
    kv_str(o, "http.request.method", 19, method, len(method))
    while q < tn and t[q] != b'?':
        q += 1
    kv_str(o, "url.path", 8, t, q)
    if q + 1 < tn:
        kv_str(o, "url.query", 9, t + q + 1, tn - q - 1)
    if status > 0:
        kv_int(o, "http.response.status_code", 25, status)
    if kind == 1:
        # (1, hi, lo, sid, parent, start, end, status, method, target, host,
        #  client_ip, h2, listener, cluster, attempts, custom_tags)
        _authority(o, r[10])
        kv_str(o, "url.scheme", 10, "http", 4)
        kv_obj(o, "client.address", 14, r[11])
        if r[12]:
            kv_str(o, "network.protocol.version", 24, "2", 1)
        else:
            kv_str(o, "network.protocol.version", 24, "1.1", 3)
        kv_obj(o, "fastmesh.listener", 17, r[13])
        if r[14] is not None:
            kv_obj(o, "upstream_cluster", 16, r[14])
        for tag in r[16]:
            b = tag[0].encode()
            kv_obj(o, b, len(b), tag[1])
        if status == 0:
            err = "downstream_reset"
            en = 16
    else:
        # (2, hi, lo, sid, parent, start, end, outcome, method, target,
        #  cluster, ep_host, ep_port, attempt)
        kv_obj(o, "server.address", 14, r[11])
        kv_int(o, "server.port", 11, r[12])
        b = f"http://{r[11]}:{r[12]}".encode() + target
        kv_str(o, "url.full", 8, b, len(b))
        kv_obj(o, "upstream_cluster", 16, r[10])
        b = f"{r[11]}:{r[12]}".encode()
        kv_str(o, "upstream_address", 16, b, len(b))
        if r[13] > 1:
            kv_int(o, "http.request.resend_count", 25, r[13] - 1)
        if status <= 0:
            err = _outcome_name(status, &en)
    if err == NULL and status >= 500:
        k = 0
        while status and k < 3:
            num[2 - k] = <char>(48 + status % 10)
            status //= 10
            k += 1
        err = num
        en = 3
    if err != NULL:
        kv_str(o, "error.type", 10, err, en)
        # Status{message = 2, code = 3: STATUS_CODE_ERROR}
        pb_tag(o, 15, WT_LEN)
        pb_varint(o, 1 + varint_len(en) + en + 2)
        pb_len(o, 2, err, en)
        pb_tag(o, 3, WT_VARINT)
        pb_varint(o, 2)
    else:
        pb_len(o, 15, "", 0)        # Status{}: unset (the SDK writes it too)
    # Span.flags (16, fixed32): the SDK's: HAS_IS_REMOTE, and IS_REMOTE for
    # a parent from another process (the caller of a server span)
    pb_tag(o, 16, WT_I32)
    k = 0x300 if kind == 1 and parent else 0x100
    num[0] = <char>(k & 0xff)
    num[1] = <char>((k >> 8) & 0xff)
    num[2] = 0
    num[3] = 0
    o.add(num, 4)


def otlp_encode(list records, bytes resource, bytes scope) -> bytes:
    """An ExportTraceServiceRequest holding `records` (span tuples from
    filter_tracing.pxi), serialized; `resource` and `scope` are an encoded
    Resource and InstrumentationScope."""
    cdef OutBuf spans = OutBuf(256 * len(records) + 64)
    cdef OutBuf one = OutBuf(512)
    cdef OutBuf out
    cdef Py_ssize_t ss, rs
    for r in records:
        one.clear()
        _span(one, <tuple>r)
        pb_len(spans, 2, one.data, one.len)               # ScopeSpans.spans
    ss = 1 + varint_len(len(scope)) + len(scope) + spans.len
    rs = 1 + varint_len(len(resource)) + len(resource) + 1 + varint_len(ss) + ss
    out = OutBuf(rs + 16)
    pb_tag(out, 1, WT_LEN)                                # ExportTraceServiceRequest.resource_spans
    pb_varint(out, rs)
    pb_len(out, 1, resource, len(resource))              # ResourceSpans.resource
    pb_tag(out, 2, WT_LEN)                                # ResourceSpans.scope_spans
    pb_varint(out, ss)
    pb_len(out, 1, scope, len(scope))                    # ScopeSpans.scope
    out.add(spans.data, spans.len)
    return out.take()
