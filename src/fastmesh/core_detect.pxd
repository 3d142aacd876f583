# core_detect.pxd: declarations of core_detect.pxi (see _core.pxd)

cdef enum:  # detect_protocol(): what the first bytes of a connection say
    DETECT_NEED_MORE = 0     # not decided yet: wait for more bytes (or the timeout)
    DETECT_HTTP1 = 1         # an HTTP/1.x request line (method token, space)
    DETECT_HTTP2 = 2         # the HTTP/2 client preface (h2c prior knowledge)
    DETECT_TLS = 3           # a TLS handshake record (ClientHello)
    DETECT_TCP = 4           # none of these: opaque

cdef int detect_protocol(const unsigned char* p, Py_ssize_t n) noexcept

cdef class ListenerInspector:
    cdef ListenerState lst       # the listener that accepted
    cdef ListenerState target    # the one that serves it (original destination's)
    cdef object transport
    cdef object timer            # protocol detection timeout
    cdef object dst              # (ip, port) before the redirect, or None
    cdef bytes first             # bytes read while detecting
    cdef bint done

    cdef void hand(self, object p, object first)
    cdef void decide(self, int kind)

cdef object listener_protocol(ListenerState lst)
cdef ListenerState listener_for_dst(ListenerState lst, object dst)
