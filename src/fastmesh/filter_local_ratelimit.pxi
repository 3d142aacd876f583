# filter_local_ratelimit.pxi: envoy.filters.http.local_ratelimit, token
# buckets in the data plane.
#
# A request takes a token from its bucket or is refused with a local reply
# (429 by default; for gRPC UNAVAILABLE, or RESOURCE_EXHAUSTED with
# rate_limited_as_resource_exhausted). The bucket is the listener's, or the
# route's or virtual host's when typed_per_filter_config names this filter
# (the control side merges the virtual host's into each route), and within
# that one bucket per descriptor value (a request header's value or the
# client address), at most max_dynamic_descriptors of them, the least
# recently used dropped first. Buckets refill by the time elapsed when they
# are used: no timer per bucket. Buckets belong to the worker process's
# compiled config (a reload starts them full again).

import math as _math


cdef enum:  # the stats block's slots (Envoy's http_local_rate_limit.*)
    RL_ENABLED
    RL_ENFORCED
    RL_RATE_LIMITED
    RL_OK
    RL_NSTATS

RL_STAT_NAMES = ("enabled", "enforced", "rate_limited", "ok")
RL_STAT_KINDS = ("counter", "counter", "counter", "counter")


@cython.final
cdef class TokenBucket:
    pass


cdef inline TokenBucket new_bucket(RateLimitSettings c, double now):
    cdef TokenBucket b = TokenBucket.__new__(TokenBucket)
    b.tokens = c.max_tokens          # a bucket starts full (Envoy)
    b.last = now
    return b


cdef inline bint take_token(TokenBucket b, RateLimitSettings c, double now) noexcept:
    # Whole fill intervals since the last one add tokens_per_fill each.
    cdef double n
    if now - b.last >= c.interval:
        n = _floor((now - b.last) / c.interval)
        b.tokens = b.tokens + n * c.per_fill
        if b.tokens > c.max_tokens:
            b.tokens = c.max_tokens
        b.last += n * c.interval
    if b.tokens >= 1:
        b.tokens -= 1
        return True
    return False


cdef inline double _floor(double x) noexcept:
    return <double>(<long long>x)


cdef inline bint roll(uint32_t ppm) noexcept:
    # True for ppm in a million requests.
    return ppm >= 1000000 or (ppm and <uint32_t>(rand64() % 1000000) < ppm)


@cython.final
cdef class RateLimitSettings:
    """A local rate limit's compiled settings and its buckets (durations in
    seconds, fractions per million)."""

    def __init__(self, str stat_prefix, max_tokens, tokens_per_fill, double fill_interval, *,
                 int status=429, uint32_t filter_enabled_ppm=0,
                 uint32_t filter_enforced_ppm=0, bint x_ratelimit_headers=False,
                 bint rate_limited_as_resource_exhausted=False, descriptor_header=None,
                 bint descriptor_remote_address=False, Py_ssize_t max_dynamic_descriptors=20):
        if fill_interval <= 0 or max_tokens < 1 or tokens_per_fill < 1:
            raise ValueError("token_bucket: max_tokens and tokens_per_fill must be >= 1 "
                             "and fill_interval > 0")
        self.stat_prefix = stat_prefix
        self.max_tokens = max_tokens
        self.per_fill = tokens_per_fill
        self.interval = fill_interval
        self.status = status
        self.enabled_ppm = filter_enabled_ppm
        self.enforced_ppm = filter_enforced_ppm
        self.xrl_headers = x_ratelimit_headers
        self.resource_exhausted = rate_limited_as_resource_exhausted
        self.desc_kind = RL_DESC_NONE
        if descriptor_header is not None:
            self.desc_kind = RL_DESC_HEADER
            self.desc_header = descriptor_header.lower().encode("latin-1")
        elif descriptor_remote_address:
            self.desc_kind = RL_DESC_REMOTE
        self.max_buckets = max(max_dynamic_descriptors, 1)
        self.buckets = {}
        self.bucket = new_bucket(self, mono_now())

    cdef TokenBucket bucket_for(self, ProxyStream s):
        # The descriptor's bucket (made full on first sight), else the default.
        cdef const char* v
        cdef Py_ssize_t n = 0
        cdef object key
        cdef TokenBucket b
        if self.desc_kind == RL_DESC_NONE:
            return self.bucket
        if self.desc_kind == RL_DESC_HEADER:
            v = s.rq_header(PyBytes_AS_STRING(self.desc_header),
                            PyBytes_GET_SIZE(self.desc_header), &n)
            if v == NULL:
                return self.bucket       # no descriptor: the default bucket (Envoy)
            key = v[:n]
        else:
            key = s.client_ip
        b = self.buckets.pop(key, None)
        if b is None:
            if len(self.buckets) >= self.max_buckets:
                del self.buckets[next(iter(self.buckets))]     # least recently used
            b = new_bucket(self, mono_now())
        self.buckets[key] = b            # most recently used last
        return b

    def tokens_py(self, key=None):
        """The tokens left in a bucket (tests): the default one, or a descriptor's."""
        cdef TokenBucket b = self.bucket if key is None else self.buckets.get(key)
        return None if b is None else b.tokens


cdef void add_ratelimit_headers(ProxyStream s, RateLimitSettings c, TokenBucket b, double now):
    # draft-polli-ratelimit-headers-03, as Envoy's DRAFT_VERSION_03 writes them.
    cdef bytes limit = str(<long long>c.max_tokens).encode()
    cdef bytes left = str(<long long>b.tokens).encode()
    cdef double wait = b.last + c.interval - now
    cdef bytes reset = str(<long long>_math.ceil(wait if wait > 0 else 0)).encode()
    if s.rs_add is None:
        s.rs_add = HeaderList()
    s.rs_add.add("x-ratelimit-limit", 17, limit, len(limit), 0)
    s.rs_add.add("x-ratelimit-remaining", 21, left, len(left), 0)
    s.rs_add.add("x-ratelimit-reset", 17, reset, len(reset), 0)


@cython.final
cdef class LocalRateLimitFilter(HttpFilter):
    """envoy.filters.http.local_ratelimit (made by control/builtin_filters.py)."""

    def __cinit__(self, *args, **kwargs):
        self.name = "envoy.filters.http.local_ratelimit"
        self.hooks = FH_REQUEST_HEADERS

    def __init__(self, RateLimitSettings conf=None, str name=None):
        self.conf = conf
        if name is not None:
            self.name = name

    cdef int request_headers(self, ProxyStream s) except -1:
        cdef RateLimitSettings c = self.conf
        cdef object per_route = s.filter_config(self)
        cdef TokenBucket b
        cdef double now
        if per_route is not None:
            c = <RateLimitSettings>per_route
        if c is None or not roll(c.enabled_ppm):
            return FILTER_CONTINUE
        if c.st == NULL:
            c.stats = s.worker.registry.block("http_local_rate_limit", RL_STAT_NAMES,
                                              RL_STAT_KINDS, {"stat_prefix": c.stat_prefix})
            c.st = c.stats.v
        c.st[RL_ENABLED] += 1
        b = c.bucket_for(s)
        now = mono_now()
        if take_token(b, c, now):
            c.st[RL_OK] += 1
            if c.xrl_headers:
                add_ratelimit_headers(s, c, b, now)
            return FILTER_CONTINUE
        c.st[RL_RATE_LIMITED] += 1
        if not roll(c.enforced_ppm):
            return FILTER_CONTINUE
        c.st[RL_ENFORCED] += 1
        if c.xrl_headers:
            add_ratelimit_headers(s, c, b, now)
        s.reply_grpc = 8 if c.resource_exhausted else 14     # RESOURCE_EXHAUSTED / UNAVAILABLE
        s.filter_reply(c.status, b"local_rate_limited")
        return FILTER_STOP
