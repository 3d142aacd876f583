# filter_local_ratelimit.pxd: declarations of filter_local_ratelimit.pxi (see _core.pxd)

cdef enum:  # RateLimitSettings.desc_kind: what a descriptor bucket is keyed by
    RL_DESC_NONE = 0
    RL_DESC_HEADER = 1       # a request header's value
    RL_DESC_REMOTE = 2       # the client address

@cython.final
cdef class TokenBucket:
    cdef double tokens
    cdef double last         # the time the last fill was due (refills count from it)

@cython.final
cdef class RateLimitSettings:
    cdef readonly str stat_prefix
    cdef double max_tokens
    cdef double per_fill
    cdef double interval
    cdef int status                  # the reply's status (Envoy's `status`, 429)
    cdef uint32_t enabled_ppm        # filter_enabled, per million requests
    cdef uint32_t enforced_ppm       # filter_enforced, per million requests
    cdef bint xrl_headers            # enable_x_ratelimit_headers: DRAFT_VERSION_03
    cdef bint resource_exhausted     # rate_limited_as_resource_exhausted
    cdef int desc_kind               # RL_DESC_*
    cdef bytes desc_header           # RL_DESC_HEADER: lower-case name
    cdef Py_ssize_t max_buckets      # max_dynamic_descriptors
    cdef TokenBucket bucket          # requests without a descriptor value
    cdef dict buckets                # descriptor value -> TokenBucket, least recent first
    cdef StatsBlock stats            # made on first use, from the stream's worker
    cdef int64_t* st

    cdef TokenBucket bucket_for(self, ProxyStream s)

cdef class LocalRateLimitFilter(HttpFilter):
    cdef readonly RateLimitSettings conf     # the listener's (None: only per-route)
    cdef int request_headers(self, ProxyStream s) except -1
