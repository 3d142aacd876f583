# core_h2_common.pxi: HTTP/2 constants both sides share (cimports in _core.pxd), and
# the gRPC helpers (status mapping, grpc-timeout).

cdef bytes H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

cdef int grpc_code_for_http(int status) noexcept:
    # https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md
    if status == 400:
        return 13     # INTERNAL
    if status == 401:
        return 16     # UNAUTHENTICATED
    if status == 403:
        return 7      # PERMISSION_DENIED
    if status == 404:
        return 12     # UNIMPLEMENTED
    if status == 429 or status == 502 or status == 503:
        return 14     # UNAVAILABLE
    if status == 504:
        return 14
    return 2          # UNKNOWN


cdef double parse_grpc_timeout(const char* v, Py_ssize_t n) noexcept:
    # "TimeoutValue TimeoutUnit": at most 8 digits, then H M S m u n. 0: none/bad.
    cdef Py_ssize_t i
    cdef double x = 0
    if n < 2 or n > 9:
        return 0
    for i in range(n - 1):
        if not (48 <= v[i] <= 57):
            return 0
        x = x * 10 + (v[i] - 48)
    if v[n - 1] == b'H':
        return x * 3600
    if v[n - 1] == b'M':
        return x * 60
    if v[n - 1] == b'S':
        return x
    if v[n - 1] == b'm':
        return x * 1e-3
    if v[n - 1] == b'u':
        return x * 1e-6
    if v[n - 1] == b'n':
        return x * 1e-9
    return 0
