# core_retry.pxi: a route's retry policy (Envoy's retry_policy): which
# failures of an attempt go again, to another endpoint, and how many times.
#
# The upstream side asks retry_allowed() where an attempt fails before any
# of its response reached the client; the answer is the policy's alone (the
# codecs and the upstream connections know nothing of retry_on). So far:
# connect-failure, refused-stream, 5xx and gateway-error (Envoy's meaning:
# the last two also cover an attempt that got no response at all). Retries
# go through ProxyStream.retry with the balancer's exclusion pick
# (core_stream.pxi). A response status is retried only for a request
# without a body: its body went upstream as it came, and no replay buffer
# keeps it yet.


@cython.final
cdef class RetryPolicy:
    """A route's compiled retry_policy (Route.extra)."""

    def __init__(self, retry_on, int num_retries=1):
        cdef int bits = 0
        for name in retry_on:
            if name == "connect-failure":
                bits |= RETRY_CONNECT_FAILURE
            elif name == "refused-stream":
                bits |= RETRY_REFUSED_STREAM
            elif name == "5xx":
                bits |= RETRY_5XX
            elif name == "gateway-error":
                bits |= RETRY_GATEWAY_ERROR
            else:
                raise ValueError(f"retry_on {name!r} is not supported")
        if num_retries < 0:
            raise ValueError("num_retries must be >= 0")
        self.retry_on = bits
        self.num_retries = num_retries


cdef bint retry_allowed(ProxyStream s, UpstreamRequest failed, int reason) noexcept:
    # May `failed` (which failed for `reason`, RETRY_*) go again? Only while
    # nothing of the response has reached the client, and within the
    # route's num_retries (attempt 1 is the first try).
    cdef object extra
    cdef RetryPolicy p
    if s.route is None or s.resp_started or s.replied:
        return False
    extra = s.route.extra
    if type(extra) is not RetryPolicy:
        return False
    p = <RetryPolicy>extra
    return ((p.retry_on & reason) != 0 and failed.attempt <= p.num_retries
            and cb_retry_admit(s, failed))     # max_retries / retry_budget (cluster_breaker.pxi)


cdef bint retry_on_status(ProxyStream s, UpstreamRequest failed, int status) noexcept:
    # An upstream answered `status` (a final response head, nothing of it
    # sent to the client yet): should the attempt go again instead?
    cdef int reason
    if status < 500 or s.req_body != BODY_NONE:
        return False
    reason = RETRY_5XX
    if status == 502 or status == 503 or status == 504:
        reason |= RETRY_GATEWAY_ERROR
    return retry_allowed(s, failed, reason)
