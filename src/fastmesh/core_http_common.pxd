# core_http_common.pxd: declarations of core_http_common.pxi (see _core.pxd)

cdef enum:
    DS_IDLE = 0        # ready for the next request head (maybe partly received)
    DS_BODY = 1        # head handled; request body streams upstream
    DS_WAIT = 2        # request complete; response still coming
    DS_TUNNEL = 3      # after 101 Switching Protocols: raw bytes both ways

# Room kept free in a read buffer before reading into it.
cdef enum:
    MIN_READ_ROOM = 2048
