# core_retry.pxd: declarations of core_retry.pxi (see _core.pxd)

cdef enum:  # retry_on conditions, as bits
    RETRY_CONNECT_FAILURE = 1
    RETRY_REFUSED_STREAM = 2
    RETRY_5XX = 4               # a 5xx response, or none (connect failure, refused stream)
    RETRY_GATEWAY_ERROR = 8     # a 502, 503 or 504 response, or none

cdef enum:  # what failed, as the conditions that cover it (Envoy's meaning)
    FAILED_CONNECT = RETRY_CONNECT_FAILURE | RETRY_5XX | RETRY_GATEWAY_ERROR
    FAILED_REFUSED = RETRY_REFUSED_STREAM | RETRY_5XX | RETRY_GATEWAY_ERROR

cdef class RetryPolicy:
    cdef readonly int retry_on        # RETRY_* bits
    cdef readonly int num_retries
