# trace_context.pxd: declarations of trace_context.pxi (see _core.pxd): the
# trace context a request carries (W3C traceparent/tracestate, B3 single and
# multi-header), parsed and formatted without Python objects.

cdef enum:  # propagation formats (bits: a request may carry, and we may inject, several)
    TC_TRACEPARENT = 1          # W3C traceparent (+ tracestate)
    TC_B3 = 2                   # b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]
    TC_B3MULTI = 4              # x-b3-traceid, x-b3-spanid, x-b3-parentspanid, x-b3-sampled, x-b3-flags

cdef enum:  # TraceCtx.sampled
    TS_DEFER = -1               # no decision came with the context (B3 may leave it out)
    TS_NO = 0
    TS_YES = 1

cdef struct TraceCtx:
    uint64_t tid_hi             # trace id, high and low 64 bits (never both 0 when valid)
    uint64_t tid_lo
    uint64_t span_id            # the caller's span: our server span's parent (0: none)
    uint64_t parent_id          # B3's parent span id (0: none)
    int sampled                 # TS_*
    bint debug                  # B3 "d" / x-b3-flags: 1 (implies sampled)
    bint tid64                  # B3 trace id came as 16 hex digits (echoed as such)
    int flags                   # traceparent trace-flags (0 for B3)

cdef bint parse_traceparent(const char* p, Py_ssize_t n, TraceCtx* c) noexcept
cdef bint parse_b3_single(const char* p, Py_ssize_t n, TraceCtx* c) noexcept
cdef bint tracestate_valid(const char* p, Py_ssize_t n) noexcept
cdef void hex64(char* out, uint64_t v) noexcept
cdef Py_ssize_t fmt_traceparent(char* out, uint64_t hi, uint64_t lo, uint64_t sid,
                                int flags) noexcept
cdef Py_ssize_t fmt_b3(char* out, uint64_t hi, uint64_t lo, bint tid64, uint64_t sid,
                       int sampled, bint debug) noexcept
cdef bint parse_b3_multi(const char* tid, Py_ssize_t tidn, const char* sid, Py_ssize_t sidn,
                         const char* pid, Py_ssize_t pidn, const char* smp, Py_ssize_t smpn,
                         const char* flg, Py_ssize_t flgn, TraceCtx* c) noexcept
