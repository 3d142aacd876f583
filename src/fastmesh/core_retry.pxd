# core_retry.pxd: declarations of core_retry.pxi (see _core.pxd)

cdef enum:  # retry_on conditions, as bits (Envoy's names in RetryPolicy.__init__)
    RETRY_CONNECT_FAILURE = 1
    RETRY_REFUSED_STREAM = 2
    RETRY_5XX = 4               # a 5xx response, or none (connect failure, refused stream, reset)
    RETRY_GATEWAY_ERROR = 8     # a 502, 503 or 504 response, or none
    RETRY_RESET = 16            # no response: reset, closed, per-try timeout
    RETRY_RETRIABLE_4XX = 32    # 409
    RETRY_STATUS_CODES = 64     # retriable_status_codes
    RETRY_GRPC_CANCELLED = 128  # grpc-status in the response headers: 1
    RETRY_GRPC_DEADLINE_EXCEEDED = 256      # 4
    RETRY_GRPC_RESOURCE_EXHAUSTED = 512     # 8
    RETRY_GRPC_INTERNAL = 1024              # 13
    RETRY_GRPC_UNAVAILABLE = 2048           # 14
    RETRY_GRPC_ANY = 3968

cdef enum:  # what failed, as the conditions that cover it (Envoy's meaning)
    FAILED_CONNECT = RETRY_CONNECT_FAILURE | RETRY_5XX | RETRY_GATEWAY_ERROR
    FAILED_REFUSED = RETRY_REFUSED_STREAM | RETRY_5XX | RETRY_GATEWAY_ERROR
    FAILED_RESET = RETRY_RESET | RETRY_5XX | RETRY_GATEWAY_ERROR
    FAILED_TIMEOUT = RETRY_RESET | RETRY_5XX | RETRY_GATEWAY_ERROR   # per-try timeout (a 504)

cdef enum:  # RetryTimer kinds
    RT_BACKOFF = 1
    RT_PER_TRY = 2

cdef class RetryPolicy:
    cdef readonly int retry_on        # RETRY_* bits
    cdef readonly int num_retries
    cdef readonly double per_try_timeout     # seconds, 0: none
    cdef readonly double base_interval       # retry_back_off, seconds
    cdef readonly double max_interval
    cdef readonly Py_ssize_t buffer_limit    # per_request_buffer_limit_bytes (0: the listener's)
    cdef uint64_t codes[8]                   # retriable_status_codes: bit (status - 100)
    cdef inline bint has_code(self, int status) noexcept
    cdef RetryPolicy copy(self)

cdef class RetryTimer(TimerEntry):
    cdef ProxyStream s
    cdef UpstreamRequest ur          # RT_PER_TRY: the attempt it times
    cdef bint fresh                  # RT_BACKOFF: the next attempt wants a fresh connection
