# core_retry.pxi: a route's retry policy (Envoy's retry_policy): which
# failures of an attempt go again, to another endpoint, how many times, how
# long each attempt may take and how long to wait between them.
#
# The upstream side asks retry_allowed() where an attempt fails before any
# of its response reached the client (connect failure, refused stream,
# reset or close before the response head, per-try timeout) and
# retry_on_response() when a final response head arrives; the answers are
# the policy's alone (the codecs and the upstream connections know nothing
# of retry_on). retry_allowed() is the one place a retry is decided (a
# circuit breaker's admission belongs there too). Retries go through
# ProxyStream.retry with the balancer's exclusion pick (core_stream.pxi),
# after a back-off on the worker's timer wheel (RetryTimer).
#
# A request body is kept as it is forwarded (ProxyStream.replay, up to
# per_request_buffer_limit_bytes); a body that outgrows it makes the request
# non-retriable from then on. A retry starts by rewinding the body: the next
# attempt sends the kept bytes first, then whatever the client still sends.
#
# A stream whose route has no policy has rpol None, and the hot path tests
# that one pointer (start_attempt, the response head, arm_response_timer).


@cython.final
cdef class RetryPolicy:
    """A route's compiled retry_policy (Route.extra)."""

    def __init__(self, retry_on, int num_retries=1, double per_try_timeout=0.0,
                 double base_interval=0.025, double max_interval=0.0,
                 retriable_status_codes=(), Py_ssize_t buffer_limit=0,
                 bint attempt_count=False):
        cdef int bits = 0
        cdef int code
        for name in retry_on:
            bits |= _retry_bit(name, True)
        if num_retries < 0:
            raise ValueError("num_retries must be >= 0")
        if base_interval <= 0:
            raise ValueError("retry_back_off.base_interval must be > 0")
        self.retry_on = bits
        self.num_retries = num_retries
        self.per_try_timeout = per_try_timeout
        self.base_interval = base_interval
        # Envoy: max_interval defaults to 10 x base_interval.
        self.max_interval = max_interval if max_interval > 0 else 10 * base_interval
        self.buffer_limit = buffer_limit
        self.attempt_count = attempt_count
        for code in retriable_status_codes:
            if not 100 <= code <= 599:
                raise ValueError(f"retriable status code {code} is not an HTTP status")
            self.codes[(code - 100) >> 6] |= (<uint64_t>1) << ((code - 100) & 63)

    cdef inline bint has_code(self, int status) noexcept:
        if status < 100 or status > 599:
            return False
        return (self.codes[(status - 100) >> 6] >> ((status - 100) & 63)) & 1

    @property
    def retriable_status_codes(self):
        return tuple([c for c in range(100, 600) if self.has_code(c)])

    cdef RetryPolicy copy(self):
        cdef RetryPolicy p = RetryPolicy.__new__(RetryPolicy)
        p.retry_on = self.retry_on
        p.num_retries = self.num_retries
        p.per_try_timeout = self.per_try_timeout
        p.base_interval = self.base_interval
        p.max_interval = self.max_interval
        p.buffer_limit = self.buffer_limit
        p.attempt_count = self.attempt_count
        memcpy(p.codes, self.codes, sizeof(self.codes))
        return p


def _retry_bit(str name, bint strict):
    # Envoy's retry_on (and retry_grpc_on) names. Unknown names: an error in
    # config, ignored in a request header (as Envoy ignores them).
    if name == "connect-failure":
        return RETRY_CONNECT_FAILURE
    if name == "refused-stream":
        return RETRY_REFUSED_STREAM
    if name == "5xx":
        return RETRY_5XX
    if name == "gateway-error":
        return RETRY_GATEWAY_ERROR
    if name == "reset":
        return RETRY_RESET
    if name == "retriable-4xx":
        return RETRY_RETRIABLE_4XX
    if name == "retriable-status-codes":
        return RETRY_STATUS_CODES
    if name == "cancelled":
        return RETRY_GRPC_CANCELLED
    if name == "deadline-exceeded":
        return RETRY_GRPC_DEADLINE_EXCEEDED
    if name == "resource-exhausted":
        return RETRY_GRPC_RESOURCE_EXHAUSTED
    if name == "internal":
        return RETRY_GRPC_INTERNAL
    if name == "unavailable":
        return RETRY_GRPC_UNAVAILABLE
    if strict:
        raise ValueError(f"retry_on {name!r} is not supported")
    return 0


@cython.final
cdef class RetryTimer(TimerEntry):
    """A stream's retry timer on its worker's wheel: the current attempt's
    per-try timeout, or the back-off before the next attempt (never both)."""

    cdef void on_timer(self, int kind):
        cdef ProxyStream s = self.s
        cdef UpstreamRequest ur
        if s is None or s.rtimer is not self:
            return
        if kind == RT_BACKOFF:
            if not s.retry_wait:
                return
            s.retry_wait = False
            if s.replied or s.resp_started or s.ur is not None:
                return
            if s.req_body != BODY_NONE and s.replay is None:
                # The body outgrew the replay buffer while we waited.
                s.upstream_failed(503, b"upstream retry abandoned: request body over "
                                       b"per_request_buffer_limit_bytes\n")
                return
            s.launch_attempt(self.fresh)
        elif kind == RT_PER_TRY:
            ur = self.ur
            self.ur = None
            if ur is None or ur is not s.ur or s.resp_started or s.replied:
                return
            per_try_expired(s, ur)


# --- per request ---------------------------------------------------------------

cdef void retry_setup(ProxyStream s):
    # The first attempt is about to start: this request's policy (the
    # route's, widened by trusted request headers) and its replay buffer.
    cdef object extra = s.route.extra
    cdef RetryPolicy p = <RetryPolicy>extra if type(extra) is RetryPolicy else None
    if p is not None and p.attempt_count:
        # x-envoy-attempt-count: each attempt's head is built anew, from a
        # copy of the request view (the codec's bytes do not live that long).
        s.attempt_hdr = True
        s.gen_rid = None
        if s.rq_frozen is None:
            s.freeze_head()
    if s.conf.trust_retry_headers:
        p = policy_from_headers(s, p)
    if p is None or p.retry_on == 0:
        return
    s.rpol = p
    s.backoff_n = 0
    s.pushback_ms = -1
    if s.req_body != BODY_NONE:
        # Envoy: the smaller of the route's per_request_buffer_limit_bytes
        # and the listener's per_connection_buffer_limit.
        s.replay_limit = s.conf.buffer_limit
        if 0 < p.buffer_limit < s.replay_limit:
            s.replay_limit = p.buffer_limit
        s.replay = OutBuf(4096)


cdef RetryPolicy policy_from_headers(ProxyStream s, RetryPolicy base):
    # Envoy's x-envoy-retry-on / x-envoy-retry-grpc-on (added to the
    # route's conditions), x-envoy-max-retries and
    # x-envoy-upstream-rq-per-try-timeout-ms (replacing the route's), read
    # only on a listener with trust_retry_headers.
    cdef Py_ssize_t n1 = 0, n2 = 0, n3 = 0, n4 = 0
    cdef const char* on = s.rq_header("x-envoy-retry-on", 16, &n1)
    cdef const char* gon = s.rq_header("x-envoy-retry-grpc-on", 21, &n2)
    cdef const char* mx = s.rq_header("x-envoy-max-retries", 19, &n3)
    cdef const char* pt = s.rq_header("x-envoy-upstream-rq-per-try-timeout-ms", 38, &n4)
    cdef RetryPolicy p
    cdef int64_t v
    if on == NULL and gon == NULL and mx == NULL and pt == NULL:
        return base
    p = base.copy() if base is not None else RetryPolicy(())
    if on != NULL:
        for name in on[:n1].decode("latin-1").split(","):
            p.retry_on |= _retry_bit(name.strip(), False)
    if gon != NULL:
        for name in gon[:n2].decode("latin-1").split(","):
            p.retry_on |= _retry_bit(name.strip(), False) & RETRY_GRPC_ANY
    if mx != NULL:
        v = parse_uint(mx, n3)
        if v >= 0:
            p.num_retries = <int>min(v, 100)
    if pt != NULL:
        v = parse_uint(pt, n4)
        if v >= 0:
            p.per_try_timeout = v / 1000.0
    return p


cdef int64_t parse_uint(const char* p, Py_ssize_t n) noexcept:
    # A decimal number (at most 12 digits), -1 if it is not one.
    cdef int64_t v = 0
    cdef Py_ssize_t i
    if n <= 0 or n > 12:
        return -1
    for i in range(n):
        if not (48 <= p[i] <= 57):
            return -1
        v = v * 10 + (p[i] - 48)
    return v


cdef inline bint is_retry_header(const char* n, Py_ssize_t nl) noexcept:
    # The request headers that steer retries (stripped before the upstream
    # unless the listener trusts its clients).
    return ((nl == 16 and ci_equal(n, nl, "x-envoy-retry-on", 16))
            or (nl == 21 and ci_equal(n, nl, "x-envoy-retry-grpc-on", 21))
            or (nl == 19 and ci_equal(n, nl, "x-envoy-max-retries", 19))
            or (nl == 38 and ci_equal(n, nl, "x-envoy-upstream-rq-per-try-timeout-ms", 38)))


cdef void retry_done(ProxyStream s):
    # The exchange is over (request_over): a timer still armed goes.
    cdef RetryTimer t = s.rtimer
    s.retry_wait = False
    if t is not None:
        t.ur = None
        t.s = None          # the wheel may keep the timer a while: not the stream
        release_timer(s, t)


cdef RetryTimer retry_timer(ProxyStream s):
    cdef RetryTimer t = s.rtimer
    if t is None:
        t = s.rtimer = RetryTimer.__new__(RetryTimer)
    t.s = s
    return t


# --- the body ------------------------------------------------------------------

cdef void keep_body(ProxyStream s, const char* p, Py_ssize_t n):
    # Request body bytes on their way to the current attempt (s.replay is
    # not None): kept for a retry while the whole body fits.
    cdef OutBuf r = s.replay
    if r.len + n > s.replay_limit:
        s.replay = None
        s.lst.st[RETRY_OR_SHADOW_ABANDONED] += 1
        return
    r.add(p, n)


cdef void drop_replay(ProxyStream s):
    # Something the replay cannot reproduce (request trailers toward an
    # HTTP/1.1 upstream): no retry with a body from here on.
    if s.replay is not None:
        s.replay = None
        s.lst.st[RETRY_OR_SHADOW_ABANDONED] += 1


cdef void rewind_body(ProxyStream s):
    # A new attempt: everything the client sent of the body is in s.replay.
    # An HTTP/2 upstream takes it from up_pending; an HTTP/1.1 one gets it
    # after its head: from the HTTP/2 client's h1buf (framed now: bytes that
    # arrive while it connects are queued behind it), from an HTTP/1.1
    # client's stream at upstream_ready (replay_h1: its later bytes wait in
    # the read buffer until then). Bytes still queued for the failed attempt
    # are in the replay too, and go.
    cdef OutBuf r = s.replay
    cdef H2ServerStream h
    cdef int64_t n
    if s.up_hdrs is not None:
        s.up_pending.len = 0
        s.up_pending.add(r.data, r.len)
    if type(s) is H2ServerStream:
        h = <H2ServerStream>s
        if h.h1buf is not None:
            h.h1buf.clear()
        n = h.h1buf_raw
        h.h1buf_raw = 0
        if n:
            h.ack(n)        # (held in the replay now, within its limit)
            h.conn.flush_later()
        if s.up_hdrs is None:
            if h.h1buf is None:
                h.h1buf = OutBuf(r.len + 32)
            frame_replay(s, h.h1buf)
    elif s.up_hdrs is None:
        s.replay_h1 = True


cdef void frame_replay(ProxyStream s, OutBuf o):
    # The kept body for an HTTP/1.1 upstream, in the framing
    # build_upstream_head announced (chunked unless the length is known),
    # and its end if the client has finished.
    cdef OutBuf r = s.replay
    if s.req_body == BODY_LENGTH:
        o.add(r.data, r.len)
        return
    if r.len:
        o.add_hex(r.len)
        o.add("\r\n", 2)
        o.add(r.data, r.len)
        o.add("\r\n", 2)
    if s.req_done:
        o.add("0\r\n\r\n", 5)


cdef void send_replay_h1(ProxyStream s, UpstreamHttp up):
    # After the head of a retried HTTP/1.1 attempt of an HTTP/1.1 client.
    cdef OutBuf o
    s.replay_h1 = False
    if s.replay is None:
        return
    o = OutBuf(s.replay.len + 32)
    frame_replay(s, o)
    if o.len:
        up.send(o.data, o.len)


# --- deciding ------------------------------------------------------------------

cdef bint retry_allowed(ProxyStream s, UpstreamRequest failed, int reason) noexcept:
    # May `failed` (which failed for `reason`, RETRY_* bits) go again? Only
    # while nothing of the response has reached the client, for a body the
    # replay buffer holds whole, and within num_retries (attempt 1 is the
    # first try). The one place a retry is decided.
    cdef RetryPolicy p = s.rpol
    if p is None or s.resp_started or s.replied:
        return False
    if (p.retry_on & reason) == 0:
        return False
    if s.req_body != BODY_NONE and s.replay is None:
        return False
    if failed.attempt > p.num_retries:
        failed.cluster.st[UPSTREAM_RQ_RETRY_LIMIT_EXCEEDED] += 1
        return False
    if not cb_retry_admit(s, failed):   # max_retries / retry_budget (cluster_breaker.pxi)
        return False
    s.retry_backoff = True      # a policy retry: ProxyStream.retry backs off first
    return True


cdef bint retry_on_response(ProxyStream s, UpstreamRequest ur, int status, const char* base,
                            HeaderSlice* hs, int n) noexcept:
    # A final response head arrived (nothing of it sent to the client yet;
    # s.rpol is not None): True if the attempt goes again instead. Its
    # status (5xx, gateway-error, 409, retriable_status_codes) and, for
    # gRPC, grpc-status in the headers (a trailers-only response).
    cdef RetryPolicy p = s.rpol
    cdef int reason = 0, k, code
    cdef int64_t pb = -1
    cdef bint has_pb = False
    cdef HeaderSlice* h
    if status >= 500:
        reason = RETRY_5XX
        if status == 502 or status == 503 or status == 504:
            reason |= RETRY_GATEWAY_ERROR
    elif status == 409:
        reason = RETRY_RETRIABLE_4XX
    if p.has_code(status):
        reason |= RETRY_STATUS_CODES
    if p.retry_on & RETRY_GRPC_ANY:
        for k in range(n):
            h = &hs[k]
            if ci_equal(base + h.name_off, h.name_len, "grpc-status", 11):
                code = <int>parse_uint(base + h.value_off, h.value_len)
                if code == 1:
                    reason |= RETRY_GRPC_CANCELLED
                elif code == 4:
                    reason |= RETRY_GRPC_DEADLINE_EXCEEDED
                elif code == 8:
                    reason |= RETRY_GRPC_RESOURCE_EXHAUSTED
                elif code == 13:
                    reason |= RETRY_GRPC_INTERNAL
                elif code == 14:
                    reason |= RETRY_GRPC_UNAVAILABLE
            elif ci_equal(base + h.name_off, h.name_len, "grpc-retry-pushback-ms", 22):
                has_pb = True
                # (a sign or anything else than digits: malformed)
                pb = parse_uint(base + h.value_off, h.value_len)
    retriable = (p.retry_on & reason) != 0 and not (has_pb and pb < 0)
    if retriable and retry_allowed(s, ur, reason):
        if has_pb:
            s.pushback_ms = pb
        return True
    # This answer stands: the per-try timer is done, and after a retry an
    # answer the policy does not retry is the retry's success (Envoy's
    # upstream_rq_retry_success; not one that only ran out of retries).
    if s.rtimer is not None:
        s.rtimer.ur = None
        if s.rtimer.t_wheel is not None and not s.retry_wait:
            (<TimerWheel>s.rtimer.t_wheel).cancel(s.rtimer)
    if ur.attempt > 1 and not retriable:
        ur.cluster.st[UPSTREAM_RQ_RETRY_SUCCESS] += 1
    return False


# --- timing --------------------------------------------------------------------

cdef void per_try_arm(ProxyStream s):
    # The current attempt's per-try timeout, from when the request is
    # complete (Envoy starts it there) or the attempt starts after that.
    cdef RetryPolicy p = s.rpol
    cdef RetryTimer t
    if p.per_try_timeout <= 0 or s.ur is None or not s.req_done or s.resp_started:
        return
    t = retry_timer(s)
    if t.ur is s.ur:
        return      # already running for this attempt
    t.ur = s.ur
    if not s.worker.wheel.arm_lazy(t, RT_PER_TRY, p.per_try_timeout):
        s.worker.wheel.arm(t, RT_PER_TRY, p.per_try_timeout)


cdef void per_try_expired(ProxyStream s, UpstreamRequest ur):
    # The attempt took longer than per_try_timeout: it is cancelled, and
    # goes again if the policy allows (a timeout counts as reset, 5xx and
    # gateway-error), else the client gets 504 (gRPC: DEADLINE_EXCEEDED).
    ur.cluster.st[UPSTREAM_RQ_PER_TRY_TIMEOUT] += 1
    ur.outcome = OUT_TIMEOUT        # (outlier detection: a local-origin timeout)
    ur.cancel()
    if s.ur is ur:
        s.ur = None
    if retry_allowed(s, ur, FAILED_TIMEOUT):
        s.retry(ur, False, True)
        return
    s.upstream_failed(504, b"upstream request timeout\n")


cdef bint retry_later(ProxyStream s, bint fresh):
    # A policy retry: wait before the next attempt, Envoy's jittered
    # exponential back-off (a random delay below base x (2^n - 1), at most
    # max_interval), or grpc-retry-pushback-ms when the response said so.
    # False: no wait (the next attempt starts now).
    cdef RetryPolicy p = s.rpol
    cdef RetryTimer t
    cdef double delay
    cdef uint64_t bound_ms, cap_ms
    cdef ClusterState c = s.cluster
    if s.pushback_ms >= 0:
        delay = s.pushback_ms / 1000.0
        s.pushback_ms = -1
        c.st[UPSTREAM_RQ_RETRY_BACKOFF_RATELIMITED] += 1
    else:
        s.backoff_n += 1
        cap_ms = <uint64_t>(p.max_interval * 1000)
        bound_ms = ((<uint64_t>1 << min(s.backoff_n, 30)) - 1) * <uint64_t>(p.base_interval * 1000)
        if bound_ms < 1:
            bound_ms = 1
        delay = min(rand64() % bound_ms, cap_ms) / 1000.0
        c.st[UPSTREAM_RQ_RETRY_BACKOFF_EXPONENTIAL] += 1
    if delay < 0.001:
        return False
    t = retry_timer(s)
    t.ur = None
    t.fresh = fresh
    s.retry_wait = True
    s.worker.wheel.arm(t, RT_BACKOFF, delay)
    return True
