# core_retry.pxd: declarations of core_retry.pxi (see _core.pxd)

cdef enum:  # retry_on conditions, as bits
    RETRY_CONNECT_FAILURE = 1
    RETRY_REFUSED_STREAM = 2

cdef class RetryPolicy:
    cdef readonly int retry_on        # RETRY_* bits
    cdef readonly int num_retries
