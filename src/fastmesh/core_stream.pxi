# core_stream.pxi: ProxyStream, one request as it goes through the proxy,
# whatever protocol the client speaks.
#
# Both downstreams fill the same neutral request view (rq_*: method, path,
# query, authority and the header slices, pointing into the codec's bytes)
# and call run_request(); from there everything is shared: the listener's
# filter chain (core_filter.pxi; the router is its last filter), then
# start_attempt(), which makes an UpstreamRequest (core_upstream.pxi) with
# the request head built once by build_upstream_head() (core_head.pxi).
#
# The upstream side (UpstreamHttp for HTTP/1.1, UpstreamH2 for HTTP/2) talks
# back only through the cdef methods below, so it does not care whether the
# client came over HTTP/1.1 (HttpDownstream: the connection is the stream) or
# HTTP/2 (H2ServerStream: one per stream). Virtual cdef calls: a C vtable
# lookup, no Python call.

cdef class ProxyStream(Conn):
    """One request/response exchange (base of HttpDownstream and H2ServerStream)."""

    # --- the pipeline -------------------------------------------------------

    cdef void reset_request(self):
        # Per-request state (an HTTP/1.1 connection serves many requests).
        self.route = None
        self.route_done = False
        self.reply_grpc = 0
        self.cluster = None
        self.ur = None
        self.attempts = 0
        self.rq_add = None
        self.rq_remove = None
        self.rs_add = None
        self.rq_frozen = None
        self.rq_frozen_line = None
        self.paused = False
        self.resumed = False
        self.replied = False
        self.chain_pos = 0
        # An empty view until a codec fills it: hooks that run for a request
        # refused before its head was parsed (400, 408) must not read the
        # previous request's bytes (freed with rq_frozen above).
        self.rq_base = b""
        self.rq_hs = NULL
        self.rq_n = 0
        self.rq_method = b""
        self.rq_method_len = 0
        self.rq_path = b""
        self.rq_path_len = 0
        self.rq_query_len = 0
        self.rq_host = b""
        self.rq_host_len = 0
        self.resp_status = 0
        self.rq_upgrade_len = 0
        self.rq_absolute = False
        self.expect_continue = False
        self.req_done = False
        self.resp_started = False
        self.req_head = None
        self.up_hdrs = None
        self.up_end = False
        self.up_trl = None
        if self.up_pending is not None:
            self.up_pending.len = 0
        self.rpol = None
        self.attempt_hdr = False
        self.replay = None
        self.replay_h1 = False
        self.retry_backoff = False

    cdef int run_request(self, int start) except -1:
        # The request-headers hooks from `start`; the router is last.
        cdef tuple chain = self.conf.filters
        cdef HttpFilter f
        cdef int i, r
        if start == 0 and self.conf.tracing is not None:
            trace_start(self)       # sampling and the caller's context (filter_tracing.pxi)
        for i in range(start, len(chain)):
            f = <HttpFilter>chain[i]
            self.chain_pos = i + 1
            if f.hooks & FH_REQUEST_HEADERS:
                try:
                    r = f.request_headers(self)
                except Exception as exc:
                    # (a compiled hook that raised: no hook may leave the
                    # request unanswered)
                    self.filter_error(f, exc)
                    return FILTER_STOP
                if r != FILTER_CONTINUE:
                    if r == FILTER_PAUSE:
                        if not self.paused:
                            self.paused = True
                            self.freeze_head()
                            # A filter that never resumes must not hold the
                            # request forever: the stream idle timeout (504).
                            self.set_deadline(DL_STREAM_IDLE, self.idle_t)
                        self.filter_next = i + 1
                        return r
                    if r != FILTER_STOP:
                        self.filter_error(f, ValueError(f"request_headers returned {r}"))
                    elif not self.replied and not self.resp_started:
                        self.filter_error(f, RuntimeError("filter stopped without a response"))
                    return FILTER_STOP
        if (self.conf.hooks & (FH_REQUEST_BODY | FH_RESPONSE_HEADERS | FH_RESPONSE_BODY | FH_DONE)
                and self.rq_frozen is None):
            # Later hooks may read the request: the codec's bytes behind the
            # view do not live that long.
            self.freeze_head()
        return FILTER_CONTINUE

    cdef void resume_filters(self):
        cdef int r
        self.paused = False
        self.resumed = True
        r = self.run_request(self.filter_next)
        if r == FILTER_CONTINUE:
            self.routed()

    cdef void routed(self):
        # The chain let the request through and the router chose: go upstream.
        pass

    cdef void start_attempt(self, bint fresh):
        # A new UpstreamRequest at the router's endpoint. The head is built
        # for the first attempt of each upstream protocol and kept.
        cdef UpstreamRequest ur = UpstreamRequest.__new__(UpstreamRequest)
        cdef ClusterState c = self.cluster
        cdef bint to_h2 = c.conf.protocol == PROTO_HTTP2 or (c.conf.protocol == PROTO_AUTO
                                                            and self.from_h2)
        if self.attempts == 0 and (self.route.extra is not None
                                   or self.conf.trust_retry_headers):
            retry_setup(self)       # core_retry.pxi (no policy: not even called)
        if not cb_admit(self, c):         # max_requests (cluster_breaker.pxi)
            return
        self.attempts += 1
        if c.odst is not None:
            self.pick_idx = odst_index(c, self.up_dst)     # core_original_dst.pxi
        ur.begin(self, c, self.pick_idx, self.attempts)
        self.ur = ur
        if self.trace is not None:
            trace_attempt(self, ur)       # its client span (filter_tracing.pxi)
        if self.rpol is not None:
            per_try_arm(self)
        if to_h2:
            if self.up_hdrs is None:
                self.up_hdrs = <HeaderList>build_upstream_head(self, True, ur.ep)
                if self.up_pending is None:
                    self.up_pending = OutBuf(4096)
            self.up_end = self.req_done
        elif self.req_head is None:
            self.req_head = <bytes>build_upstream_head(self, False, ur.ep)
        ur.attach(fresh)

    cdef void retry(self, UpstreamRequest failed, bint fresh, bint elsewhere):
        # The attempt failed before anything of the response arrived and the
        # request can go again (nothing was processed upstream): on a fresh
        # connection (`fresh`), and to another endpoint when the failure was
        # the endpoint's (`elsewhere`: the balancer's exclusion pick; the
        # same one if it is the only one left).
        cdef int idx
        failed.end()
        self.cluster.st[UPSTREAM_RQ_RETRY] += 1
        if self.ur is failed:
            self.ur = None
        if elsewhere:
            idx = self.cluster.pick(self.pick_hash, failed.lb_idx)
            if idx >= 0:
                self.pick_idx = idx
        if self.retry_backoff:
            # The route's policy allowed it (retry_allowed): back off first,
            # on the worker's timer wheel (core_retry.pxi).
            self.retry_backoff = False
            if retry_later(self, fresh):
                return
        self.launch_attempt(fresh)

    cdef void launch_attempt(self, bint fresh):
        # The next attempt: the body kept so far goes again first.
        if self.replay is not None:
            rewind_body(self)
        if self.attempt_hdr:
            # The head carries the attempt number: built again for this one.
            self.req_head = None
            if self.up_hdrs is not None:
                self.up_hdrs = None
        self.start_attempt(fresh)

    cdef bint upstream_is_h2(self):
        return self.ur is not None and self.ur.h2 is not None

    cdef void freeze_head(self):
        # A filter paused: the codec's bytes behind the view will be reused,
        # so the view moves to copies the stream owns.
        cdef HeaderList hl = HeaderList()
        cdef int k
        cdef HeaderSlice* h
        cdef bytes line
        for k in range(self.rq_n):
            h = &self.rq_hs[k]
            hl.add(self.rq_base + h.name_off, h.name_len, self.rq_base + h.value_off,
                   h.value_len, h.flags)
        line = (self.rq_method[:self.rq_method_len] + self.rq_path[:self.rq_path_len + self.rq_query_len]
                + (self.rq_host[:self.rq_host_len] if self.rq_host_len else b"")
                + (self.rq_upgrade[:self.rq_upgrade_len] if self.rq_upgrade_len else b""))
        self.rq_frozen = hl
        self.rq_frozen_line = line
        self.rq_base = hl.base()
        self.rq_hs = hl.hs
        self.rq_method = line
        self.rq_path = self.rq_method + self.rq_method_len
        self.rq_host = self.rq_path + self.rq_path_len + self.rq_query_len
        self.rq_upgrade = self.rq_host + self.rq_host_len

    cdef const char* rq_header(self, const char* name, Py_ssize_t n, Py_ssize_t* vlen):
        # The first value of a request header as the client sent it (any
        # case; filters' own additions not included), NULL if absent. For
        # compiled filters: no Python object made.
        cdef int i
        cdef HeaderSlice* hs
        for i in range(self.rq_n):
            hs = &self.rq_hs[i]
            if ci_equal(self.rq_base + hs.name_off, hs.name_len, name, n):
                vlen[0] = hs.value_len
                return self.rq_base + hs.value_off
        return NULL

    cdef Route matched_route(self):
        # The request's route, matched once: a filter before the router may
        # ask (for its per-route config), and the router reuses the answer.
        if not self.route_done:
            self.route_done = True
            self.route = self.conf.router.match(self.rq_host, self.rq_host_len, self.rq_path,
                                                self.rq_path_len, self.rq_query_len,
                                                self.rq_base, self.rq_hs, self.rq_n)
        return self.route

    cdef object filter_config(self, HttpFilter f):
        # The matched route's config for filter f (typed_per_filter_config,
        # by the filter's name; the virtual host's merged in), or None.
        cdef Route r = self.matched_route()
        if r is None or r.per_filter is None:
            return None
        return r.per_filter.get(f.name)

    cdef uint64_t header_hash(self, bytes name):
        cdef Py_ssize_t vlen = 0
        cdef const char* v = self.rq_header(name, len(name), &vlen)
        if v == NULL:
            return rand64()   # no key: spread like random (Envoy does the same)
        return hash_bytes(v, vlen, 0)

    cdef Request request_view(self):
        if self.view is None:
            self.view = Request.__new__(Request)
            self.view.s = self
        return self.view

    cdef void filter_reply(self, int status, bytes body):
        # A filter answers. During the body an attempt may be in flight: it
        # goes first (a local reply ends the exchange and forgets it).
        self.cancel_upstream()
        self.local_reply(status, body)

    cdef void filter_error(self, HttpFilter f, object exc):
        self.worker.loop.call_exception_handler(
            {"message": f"fastmesh: filter {f.name} failed", "exception": exc})
        if not self.replied and not self.resp_started:
            self.filter_reply(500, b"filter error\n")   # (ends an attempt in flight first)

    cdef void response_filters(self, int status):
        # Response-headers hooks, before the head is written: in reverse
        # order, and only for the filters that saw the request (as Envoy's
        # encoder filters after a local reply).
        cdef HttpFilter f
        cdef int i
        self.resp_status = status
        if self.conf.hooks & FH_RESPONSE_HEADERS:
            for i in range(self.chain_pos - 1, -1, -1):
                f = <HttpFilter>self.conf.filters[i]
                if f.hooks & FH_RESPONSE_HEADERS:
                    f.response_headers(self, status)

    cdef int request_data(self, const char* p, Py_ssize_t n) except -1:
        # A chunk of the request body on its way upstream: the body hooks of
        # the filters that let the head through. FILTER_STOP: a filter ended
        # the request (the codec stops forwarding and calls body_stopped).
        cdef HttpFilter f
        cdef int i
        if not self.conf.hooks & FH_REQUEST_BODY or n == 0:
            return FILTER_CONTINUE
        for i in range(self.chain_pos):
            f = <HttpFilter>self.conf.filters[i]
            if f.hooks & FH_REQUEST_BODY:
                try:
                    if f.request_body(self, p, n) != FILTER_CONTINUE:
                        return FILTER_STOP
                except Exception as exc:
                    self.filter_error(f, exc)
                    return FILTER_STOP
        return FILTER_CONTINUE

    cdef void body_stopped(self):
        # A request-body hook stopped the request: the attempt goes, and the
        # client gets the filter's answer (500 if it gave none and the
        # response had not started; a reset otherwise).
        self.cancel_upstream()
        if not self.replied:
            if self.resp_started:
                self.abort()
            else:
                self.local_reply(500, b"filter error\n")

    cdef void response_data(self, const char* p, Py_ssize_t n):
        # A chunk of the response body toward the client: body hooks in
        # reverse order, then the downstream writes it.
        cdef HttpFilter f
        cdef int i
        if self.conf.hooks & FH_RESPONSE_BODY and n:
            for i in range(self.chain_pos - 1, -1, -1):
                f = <HttpFilter>self.conf.filters[i]
                if f.hooks & FH_RESPONSE_BODY:
                    f.response_body(self, p, n)
        self.add_body(p, n)

    cdef void request_over(self):
        # The exchange is finished (or abandoned): done hooks, the view dies.
        cdef HttpFilter f
        if self.cb_retry_in is not None:
            cb_retry_release(self)        # the retry slot is held until the request ends
        if self.conf is not None and self.conf.hooks & FH_DONE:
            for f in self.conf.filters:
                if f.hooks & FH_DONE:
                    f.done(self)
        if self.view is not None:
            self.view.invalidate()
            self.view = None
        if self.dur_armed:
            timeouts_over(self)
        if self.fault_timer is not None:
            fault_over(self)
        self.paused = False
        if self.rtimer is not None:
            retry_done(self)        # a per-try or back-off timer still armed
        if self.trace is not None or self.trace_st:
            trace_finish(self)      # the server span (filter_tracing.pxi)

    cdef void cancel_upstream(self):
        # The client side gave up on this request.
        if self.ur is not None:
            self.ur.cancel()
            self.ur = None

    cdef void timeout_upstream(self):
        # The request timed out waiting for the upstream: for outlier
        # detection a local-origin timeout unless the answer had begun.
        if self.ur is not None and self.ur.outcome == OUT_NONE:
            self.ur.outcome = OUT_TIMEOUT
        self.cancel_upstream()

    # --- called by the upstream side (overridden) ---
    cdef void upstream_ready(self, UpstreamRequest ur):
        pass
    cdef void write_interim(self, Http1Parser rp, const char* base):
        pass
    cdef void write_interim_h2(self, int status, const char* base, HeaderSlice* hs, int n):
        # A 1xx (not 100) from an HTTP/2 upstream.
        pass
    cdef void write_response_head(self, Http1Parser rp, const char* base):
        pass
    cdef void write_response_head_h2(self, int status, const char* base, HeaderSlice* hs,
                                     int n, bint end):
        pass
    cdef void add_body(self, const char* data, Py_ssize_t n):
        pass
    cdef void end_body(self, const char* data, Http1Parser rp):
        pass
    cdef void end_body_h2(self, const char* base, HeaderSlice* hs, int n):
        pass
    cdef void response_complete(self):
        pass
    cdef void upstream_failed(self, int status, bytes body):
        pass
    cdef void local_reply(self, int status, bytes body):
        pass
    cdef void start_tunnel(self):
        pass
    cdef void touch_tunnel(self):
        pass
    cdef void half_close_tunnel(self):
        pass
    cdef void flush(self):
        pass
    cdef void close(self):
        pass
    cdef void abort(self):
        pass
    cdef void peer_paused(self):
        # The upstream's write buffer is full: stop feeding it request bytes.
        self.pause_read(PAUSE_PEER)
    cdef void peer_resumed(self):
        self.resume_read(PAUSE_PEER)
    cdef bint can_take(self):
        # May the HTTP/2 upstream acknowledge response DATA it just handed us?
        return True
    cdef void up_body_sent(self, Py_ssize_t n):
        # The HTTP/2 upstream's flow control took n more bytes of up_pending.
        pass


# Slot writes go through a local pointer: `s.lst.st[X] += 1` would take and
# drop a reference to lst around each write.

cdef inline void request_started(ProxyStream s) noexcept:
    # Every request the listener takes counts once, whatever becomes of it.
    cdef int64_t* st = s.lst.st
    st[DOWNSTREAM_RQ_TOTAL] += 1
    st[DOWNSTREAM_RQ_ACTIVE] += 1
    s.idle_t = s.conf.stream_idle_timeout
    s.rq_start = mono_now()
    s.rs_end = 0


cdef inline void request_ended(ProxyStream s, bint complete) noexcept:
    # Only a complete response has a meaningful time; a reset does not.
    cdef int64_t* st = s.lst.st
    cdef double elapsed = 0.0
    st[DOWNSTREAM_RQ_ACTIVE] -= 1
    if complete:
        elapsed = (s.rs_end if s.rs_end else mono_now()) - s.rq_start
        s.lst.rq_time.record(elapsed)
    if s.route is not None:
        route_request_ended(s, complete, elapsed)     # core_route_stats.pxi
    if s.worker.istio:
        istio_request_ended(s, elapsed if complete else mono_now() - s.rq_start)


cdef inline void add_extra_h1(OutBuf o, HeaderList extra):
    # Response fields filters added, as HTTP/1.1 lines.
    cdef int k
    cdef HeaderSlice* h
    if extra is None:
        return
    for k in range(extra.n):
        h = &extra.hs[k]
        o.add(extra.base() + h.name_off, h.name_len)
        o.add(": ", 2)
        o.add(extra.base() + h.value_off, h.value_len)
        o.add("\r\n", 2)


cdef inline void add_extra_h2(HeaderList hl, HeaderList extra):
    cdef int k
    cdef HeaderSlice* h
    if extra is None:
        return
    for k in range(extra.n):
        h = &extra.hs[k]
        hl.add(extra.base() + h.name_off, h.name_len, extra.base() + h.value_off,
               h.value_len, 0)


cdef void release_timer(ProxyStream s, TimerEntry t) noexcept:
    # A request's own timer (max_stream_duration, per-try / back-off) at the
    # end of the request. An HTTP/1.1 stream is its connection and serves the
    # next request too: the timer is disarmed lazily, left in its slot and
    # re-armed by the next request with a few field writes (the wheel's lazy
    # arm). An HTTP/2 stream is done for good: its timer leaves the wheel now,
    # rather than sit there (with its memory) until its slot comes up.
    cdef TimerWheel w = <TimerWheel>t.t_wheel
    if w is None:
        return
    if s.from_h2:
        w.cancel(t)
    else:
        w.disarm_lazy(t)


cdef void release_stream_timers(ProxyStream s) noexcept:
    # The connection is gone: its kept timers leave the wheel.
    if s.dur_timer is not None and s.dur_timer.t_wheel is not None:
        (<TimerWheel>s.dur_timer.t_wheel).cancel(s.dur_timer)
    if s.rtimer is not None and s.rtimer.t_wheel is not None:
        (<TimerWheel>s.rtimer.t_wheel).cancel(s.rtimer)
