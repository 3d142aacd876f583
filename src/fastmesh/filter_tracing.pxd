# filter_tracing.pxd: declarations of filter_tracing.pxi (see _core.pxd):
# a listener's tracing (the http_connection_manager's `tracing` in Envoy).

cdef enum:  # ProxyStream.trace_st for a request that is not sampled
    TR_PASS = 0                 # nothing to do (no tracing, or the caller's context goes on as is)
    TR_NEW_UNSAMPLED = 1        # inject a new context that says "not sampled"

cdef class TraceSink:
    cdef list q                 # finished span records (plain tuples), oldest first
    cdef Py_ssize_t cap         # at most this many waiting: the rest are dropped (counted)
    cdef Py_ssize_t batch       # the exporter is woken when this many wait
    cdef object wake            # the exporter's wake-up (threading.Event.set)
    cdef object start_cb        # starts the export thread, at the first span
    cdef bint started
    cdef public int64_t random_sampling   # sampled by the configured rate
    cdef public int64_t client_enabled    # sampled for x-client-trace-id
    cdef public int64_t parent_sampled    # sampled because the caller's context said so
    cdef public int64_t not_sampled
    cdef public int64_t spans_dropped     # the queue was full
    cdef public int64_t spans_sent        # exported (written by the export thread)
    cdef public int64_t export_failed     # spans in batches the collector did not take

    cdef void push(self, tuple rec)

cdef class TracingConf:
    cdef readonly uint32_t random_sampling   # millionths (Envoy: a percentage, 100 = all)
    cdef readonly uint32_t client_sampling
    cdef readonly uint32_t overall_sampling
    cdef readonly int extract                # TC_* formats read from requests
    cdef readonly int inject                 # TC_* formats written upstream (0: as received)
    cdef readonly bint spawn_upstream_span   # a client span per upstream attempt
    cdef readonly tuple custom_tags          # ((name, value), ...) literal tags
    cdef readonly TraceSink sink             # None: propagation only, nothing exported

@cython.final
cdef class TraceSpan:
    # A sampled request's server span, and what its client spans share.
    cdef uint64_t tid_hi, tid_lo
    cdef uint64_t span_id                    # ours (the server span)
    cdef uint64_t parent_id                  # the caller's span (0: we started the trace)
    cdef int flags                           # trace-flags written upstream
    cdef int inject                          # TC_* formats to write upstream
    cdef bint debug, tid64
    cdef int64_t start_ns
    cdef bytes tracestate                    # the caller's, valid, or None
    cdef bytes method, path, host
    cdef TraceSink sink                      # the listener's when the span began (None: no export)
    # where the span id of the head kept for retries sits (patched per attempt)
    cdef Py_ssize_t h1_off[3]
    cdef int h1_n
    cdef Py_ssize_t h2_off[3]
    cdef int h2_n

cdef void trace_start(ProxyStream s)
cdef bint is_trace_header(const char* n, Py_ssize_t nl) noexcept
cdef void trace_inject(ProxyStream s, OutBuf o, HeaderList hl)
cdef void trace_attempt(ProxyStream s, UpstreamRequest ur)
cdef void trace_attempt_end(UpstreamRequest ur)
cdef void trace_finish(ProxyStream s)
cdef void trace_stats(Worker w)
