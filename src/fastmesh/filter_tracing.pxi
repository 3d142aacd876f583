# filter_tracing.pxi: distributed tracing of HTTP requests (Envoy's
# http_connection_manager `tracing` with the OpenTelemetry tracer).
#
# A listener with tracing reads the caller's trace context when a request
# head arrives (trace_start, before the filter chain): W3C traceparent /
# tracestate, B3 single or multi-header (trace_context.pxi). The sampling
# decision is the caller's when its context carries one; otherwise
# x-client-trace-id at client_sampling, then the configured random_sampling
# (keyed by x-request-id when the request has one, as Envoy does, so that
# hops without a context still agree), then overall_sampling on top.
#
# An unsampled request costs a header scan and nothing else: no object is
# made. Its caller's context goes upstream untouched; if it had none, a new
# one that says "not sampled" goes upstream (so the next hop does not start
# a trace of its own).
#
# A sampled request gets a TraceSpan (the server span). Each upstream
# attempt is a client span, a child of the server span
# (spawn_upstream_span), and the upstream gets the attempt's span id as its
# parent: the head is built once and kept for retries (core_head.pxi), so the
# span id's place in it is remembered and overwritten per attempt
# (trace_attempt). Finished spans are plain tuples handed to a TraceSink,
# a bounded list that the export thread (runtime/trace_export.py) empties:
# it builds the OpenTelemetry spans and exports them with OTLP, off the
# request path. A full sink drops the span and counts it.

from cpython.list cimport PyList_GET_SIZE

cdef extern from "<time.h>" nogil:
    int CLOCK_REALTIME


cdef inline int64_t wall_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline uint64_t new_id() noexcept nogil:
    cdef uint64_t v = rand64()
    return v if v else 1


cdef list _SINKS = []       # every sink of this process (stats: trace_stats)

TRACING_NAMES = ("random_sampling", "client_enabled", "parent_sampled", "not_sampled",
                 "spans_dropped", "spans_sent", "export_failed")
TRACING_KINDS = ("counter",) * len(TRACING_NAMES)


cdef class TraceSink:
    """Where finished spans wait for the export thread: a list of tuples,
    at most `cap` long (past that a span is dropped and counted). The
    exporter calls `take()`; `start()` runs once, at the first span."""

    def __init__(self, Py_ssize_t cap=2048, Py_ssize_t batch=512, start=None, wake=None):
        self.q = []
        self.cap = cap
        self.batch = batch
        self.start_cb = start
        self.wake = wake
        _SINKS.append(self)

    cdef void push(self, tuple rec):
        if PyList_GET_SIZE(self.q) >= self.cap:
            self.spans_dropped += 1
            return
        self.q.append(rec)
        try:
            if not self.started:
                self.started = True
                if self.start_cb is not None:
                    self.start_cb()
            elif PyList_GET_SIZE(self.q) == self.batch and self.wake is not None:
                self.wake()
        except Exception:
            pass    # (the exporter's trouble never reaches a request)

    def take(self) -> list:
        """The spans waiting, oldest first; the sink starts empty again."""
        q = self.q
        self.q = []
        return q

    def pending(self) -> int:
        return PyList_GET_SIZE(self.q)

    def close(self):
        """This sink is no longer used (its exporter stopped)."""
        if self in _SINKS:
            _SINKS.remove(self)


cdef uint32_t _ppm(double percent) except? 0:
    if not 0.0 <= percent <= 100.0:
        raise ValueError("sampling percentages are between 0 and 100")
    return <uint32_t>(percent * 10000.0 + 0.5)


cdef class TracingConf:
    """A listener's tracing settings (built by control/tracing.py)."""

    def __init__(self, double random_sampling=100.0, double client_sampling=100.0,
                 double overall_sampling=100.0, int extract=TC_TRACEPARENT | TC_B3 | TC_B3MULTI,
                 int inject=0, bint spawn_upstream_span=True, custom_tags=(),
                 TraceSink sink=None):
        self.random_sampling = _ppm(random_sampling)
        self.client_sampling = _ppm(client_sampling)
        self.overall_sampling = _ppm(overall_sampling)
        self.extract = extract
        self.inject = inject
        self.spawn_upstream_span = spawn_upstream_span
        self.custom_tags = tuple((str(k), str(v)) for k, v in custom_tags)
        self.sink = sink


@cython.final
@cython.freelist(32)
cdef class TraceSpan:
    pass


cdef inline bint _draw(uint32_t ppm) noexcept:
    return ppm >= 1000000 or (ppm and rand64() % 1000000 < ppm)


cdef inline bint _hname(const char* n, Py_ssize_t nl, const char* lit, Py_ssize_t ll) noexcept:
    return nl == ll and ci_equal(n, nl, lit, ll)


cdef bint is_trace_header(const char* n, Py_ssize_t nl) noexcept:
    # The fields our context replaces on the way upstream.
    if nl == 2:
        return _hname(n, nl, "b3", 2)
    if nl < 10 or nl > 17:
        return False
    if (n[0] | 32) == b't':
        return _hname(n, nl, "traceparent", 11) or _hname(n, nl, "tracestate", 10)
    return nl >= 10 and (n[0] | 32) == b'x' and n[1] == b'-' and (n[2] | 32) == b'b' \
        and n[3] == b'3' and n[4] == b'-'


cdef void trace_start(ProxyStream s):
    # The head has arrived: read the caller's context and decide.
    cdef TracingConf tc = s.conf.tracing
    cdef TraceSink sink = tc.sink
    cdef const char* base = s.rq_base
    cdef HeaderSlice* h
    cdef const char* n
    cdef const char* v
    cdef const char* tp = NULL
    cdef const char* ts = NULL
    cdef const char* b3 = NULL
    cdef const char* m[5]
    cdef Py_ssize_t ml[5]
    cdef Py_ssize_t tpl = 0, tsl = 0, b3l = 0, nl, vl, ridl = 0
    cdef const char* rid = NULL
    cdef int k, ntp = 0, nts = 0, fmt_in = 0, ex = tc.extract
    cdef bint have_multi = False, client = False, sampled, have_ctx = False
    cdef TraceCtx c
    cdef TraceSpan sp
    s.trace = None
    s.trace_st = TR_PASS
    for k in range(5):
        m[k] = NULL
        ml[k] = 0
    for k in range(s.rq_n):
        h = &s.rq_hs[k]
        n = base + h.name_off
        nl = h.name_len
        v = base + h.value_off
        vl = h.value_len
        if h.flags & HF_REQUEST_ID:
            rid = v
            ridl = vl
        elif nl == 2:
            if _hname(n, nl, "b3", 2):
                b3 = v
                b3l = vl
        elif nl < 10 or nl > 17:
            continue
        elif (n[0] | 32) == b't':
            if _hname(n, nl, "traceparent", 11):
                tp = v
                tpl = vl
                ntp += 1
            elif _hname(n, nl, "tracestate", 10):
                if nts == 0:
                    ts = v
                    tsl = vl
                nts += 1
        elif (n[0] | 32) == b'x' and n[1] == b'-':
            if (n[2] | 32) == b'b' and n[3] == b'3' and n[4] == b'-':
                if _hname(n, nl, "x-b3-traceid", 12):
                    m[0] = v; ml[0] = vl
                elif _hname(n, nl, "x-b3-spanid", 11):
                    m[1] = v; ml[1] = vl
                elif _hname(n, nl, "x-b3-parentspanid", 17):
                    m[2] = v; ml[2] = vl
                elif _hname(n, nl, "x-b3-sampled", 12):
                    m[3] = v; ml[3] = vl
                elif _hname(n, nl, "x-b3-flags", 10):
                    m[4] = v; ml[4] = vl
                else:
                    continue
                have_multi = True
            elif _hname(n, nl, "x-client-trace-id", 17):
                client = True
    # The first format that parses wins: W3C, then B3 single, then multi
    # (a single traceparent only: two are invalid, per the spec).
    if ex & TC_TRACEPARENT and ntp == 1 and parse_traceparent(tp, tpl, &c):
        have_ctx = True
        fmt_in = TC_TRACEPARENT
    elif ex & TC_B3 and b3 != NULL and parse_b3_single(b3, b3l, &c):
        have_ctx = True
        fmt_in = TC_B3
    elif ex & TC_B3MULTI and have_multi and parse_b3_multi(m[0], ml[0], m[1], ml[1], m[2],
                                                           ml[2], m[3], ml[3], m[4], ml[4], &c):
        have_ctx = True
        fmt_in = TC_B3MULTI
    if have_ctx and c.sampled != TS_DEFER:
        sampled = c.sampled == TS_YES
        if sink is not None:
            if sampled:
                sink.parent_sampled += 1
            else:
                sink.not_sampled += 1
    else:
        if client:
            sampled = _draw(tc.client_sampling)
            if sampled and sink is not None:
                sink.client_enabled += 1
        elif tc.random_sampling >= 1000000:
            sampled = True
        elif rid != NULL:
            # x-request-id based: every hop that sees this id decides alike.
            sampled = hash_bytes(rid, ridl, 0) % 1000000 < tc.random_sampling
        else:
            sampled = _draw(tc.random_sampling)
        if sampled and not client and sink is not None:
            sink.random_sampling += 1
        if sampled and tc.overall_sampling < 1000000:
            sampled = _draw(tc.overall_sampling)
        if not sampled and sink is not None:
            sink.not_sampled += 1
    if not sampled:
        # The caller's decision goes on as it came; without one (or with a
        # context that left it to us) the upstream learns ours.
        if not have_ctx or c.sampled == TS_DEFER:
            s.trace_st = TR_NEW_UNSAMPLED
        return
    sp = TraceSpan.__new__(TraceSpan)
    if have_ctx and (c.tid_hi or c.tid_lo):
        sp.tid_hi = c.tid_hi
        sp.tid_lo = c.tid_lo
        sp.parent_id = c.span_id
        sp.tid64 = c.tid64
        sp.debug = c.debug
    else:
        sp.tid_hi = new_id()        # (a sampling-only B3 value: a new trace, same format)
        sp.tid_lo = new_id()
    sp.span_id = new_id()
    sp.flags = ((c.flags & 0xfe) if fmt_in == TC_TRACEPARENT else 0) | 1
    sp.inject = tc.inject or fmt_in or TC_TRACEPARENT
    if fmt_in == TC_TRACEPARENT and ts != NULL and nts == 1 and tracestate_valid(ts, tsl):
        sp.tracestate = ts[:tsl]
    sp.sink = sink
    sp.start_ns = wall_ns()
    sp.method = s.rq_method[:s.rq_method_len]
    sp.path = s.rq_path[:s.rq_path_len + s.rq_query_len]
    sp.host = s.rq_host[:s.rq_host_len]
    s.trace = sp


cdef inline void _inj_field(OutBuf o, HeaderList hl, const char* name, Py_ssize_t nl,
                            const char* val, Py_ssize_t vl, Py_ssize_t sid_at,
                            TraceSpan sp):
    # One field; where its span id lands is remembered (sid_at >= 0).
    cdef Py_ssize_t at
    if o is not None:
        at = o.len + nl + 2 + sid_at
        o.add(name, nl)
        o.add(": ", 2)
        o.add(val, vl)
        o.add("\r\n", 2)
        if sid_at >= 0 and sp is not None and sp.h1_n < 3:
            sp.h1_off[sp.h1_n] = at
            sp.h1_n += 1
    else:
        hl.add(name, nl, val, vl, 0)
        if sid_at >= 0 and sp is not None and sp.h2_n < 3:
            sp.h2_off[sp.h2_n] = hl.hs[hl.n - 1].value_off + sid_at
            sp.h2_n += 1


cdef void trace_inject(ProxyStream s, OutBuf o, HeaderList hl):
    # Our context into the upstream head being built (core_head.pxi); the
    # caller's fields were left out.
    cdef TraceSpan sp = s.trace
    cdef char buf[64]
    cdef Py_ssize_t k
    cdef uint64_t hi, lo, sid, parent
    cdef int inj, sampled
    cdef bint tid64 = False, debug = False
    if sp is None:
        # Not sampled and no context came: a new one that says so.
        hi = new_id()
        lo = new_id()
        sid = new_id()
        parent = 0
        inj = s.conf.tracing.inject or TC_TRACEPARENT
        sampled = TS_NO
    else:
        hi = sp.tid_hi
        lo = sp.tid_lo
        tid64 = sp.tid64
        debug = sp.debug
        sampled = TS_YES
        inj = sp.inject
        if s.ur is not None and s.ur.trace is not None:
            sid = s.ur.span_id          # the attempt's client span
            parent = sp.span_id
        else:
            sid = sp.span_id
            parent = sp.parent_id
        if o is not None:
            sp.h1_n = 0
        else:
            sp.h2_n = 0
    if inj & TC_TRACEPARENT:
        k = fmt_traceparent(buf, hi, lo, sid, sp.flags if sp is not None else 0)
        _inj_field(o, hl, "traceparent", 11, buf, k, 36, sp)
        if sp is not None and sp.tracestate is not None:
            _inj_field(o, hl, "tracestate", 10, sp.tracestate, len(sp.tracestate), -1, None)
    if inj & TC_B3:
        if sp is None:
            _inj_field(o, hl, "b3", 2, "0", 1, -1, None)
        else:
            k = fmt_b3(buf, hi, lo, tid64, sid, sampled, debug)
            _inj_field(o, hl, "b3", 2, buf, k, (16 if tid64 else 32) + 1, sp)
    if inj & TC_B3MULTI:
        if sp is None:
            _inj_field(o, hl, "x-b3-sampled", 12, "0", 1, -1, None)
        else:
            if tid64:
                hex64(buf, lo)
                _inj_field(o, hl, "x-b3-traceid", 12, buf, 16, -1, None)
            else:
                hex64(buf, hi)
                hex64(buf + 16, lo)
                _inj_field(o, hl, "x-b3-traceid", 12, buf, 32, -1, None)
            hex64(buf, sid)
            _inj_field(o, hl, "x-b3-spanid", 11, buf, 16, 0, sp)
            if parent:
                hex64(buf, parent)
                _inj_field(o, hl, "x-b3-parentspanid", 17, buf, 16, -1, None)
            if debug:
                _inj_field(o, hl, "x-b3-flags", 10, "1", 1, -1, None)
            else:
                _inj_field(o, hl, "x-b3-sampled", 12, "1", 1, -1, None)


cdef void trace_attempt(ProxyStream s, UpstreamRequest ur):
    # A new attempt of a sampled request: its client span, and its id into
    # the head kept from an earlier attempt (a head built after this writes
    # it itself).
    cdef TraceSpan sp = s.trace
    cdef char sid[16]
    cdef bytes head
    cdef char* p
    cdef int k
    if not s.conf.tracing.spawn_upstream_span:
        return
    ur.trace = sp
    ur.span_id = new_id()
    ur.start_ns = wall_ns()
    hex64(sid, ur.span_id)
    if s.req_head is not None and sp.h1_n:
        # The bytes may still sit in a transport's buffer from the last
        # attempt: a copy, never a write into them.
        head = PyBytes_FromStringAndSize(PyBytes_AS_STRING(s.req_head), len(s.req_head))
        p = PyBytes_AS_STRING(head)
        for k in range(sp.h1_n):
            memcpy(p + sp.h1_off[k], sid, 16)
        s.req_head = head
    if s.up_hdrs is not None and sp.h2_n:
        # (the last attempt's HEADERS were encoded from it already)
        p = s.up_hdrs.buf.data
        for k in range(sp.h2_n):
            memcpy(p + sp.h2_off[k], sid, 16)


cdef void trace_attempt_end(UpstreamRequest ur):
    # The attempt is over: its client span goes to the sink.
    cdef TraceSpan sp = ur.trace
    ur.trace = None
    if sp.sink is None:
        return
    sp.sink.push((2, sp.tid_hi, sp.tid_lo, ur.span_id, sp.span_id, ur.start_ns, wall_ns(),
                  ur.outcome, sp.method, sp.path, ur.cluster.name, ur.ep.host,
                  ur.ep.port, ur.attempt))


cdef void trace_finish(ProxyStream s):
    # The exchange is over: the server span goes to the sink.
    cdef TraceSpan sp = s.trace
    s.trace = None
    s.trace_st = TR_PASS
    if sp is None or sp.sink is None:
        return
    sp.sink.push((1, sp.tid_hi, sp.tid_lo, sp.span_id, sp.parent_id, sp.start_ns, wall_ns(),
                  s.resp_status, sp.method, sp.path, sp.host, s.client_ip, s.from_h2,
                  s.conf.name, s.cluster.name if s.cluster is not None else None,
                  s.attempts, s.conf.tracing.custom_tags))


cdef void trace_stats(Worker w):
    # The sinks' counters into the worker's registry, when stats are read.
    cdef TraceSink k
    cdef StatsBlock b
    cdef int64_t tot[7]
    cdef int i
    if not _SINKS:
        return
    for i in range(7):
        tot[i] = 0
    for k in _SINKS:
        tot[0] += k.random_sampling
        tot[1] += k.client_enabled
        tot[2] += k.parent_sampled
        tot[3] += k.not_sampled
        tot[4] += k.spans_dropped
        tot[5] += k.spans_sent
        tot[6] += k.export_failed
    b = w.registry.block("tracing", TRACING_NAMES, TRACING_KINDS, None)
    for i in range(7):
        b.v[i] = tot[i]
