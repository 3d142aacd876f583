# core_h2_common.pxd: declarations of core_h2_common.pxi (see _core.pxd)

cdef enum:
    H2_STREAM_BUFFER = 65536  # response bytes buffered per stream before the
                              # upstream is paused; request bytes per HTTP/1.1
                              # client before it is paused
    H2_CS_CLOSED = 3          # H2Connection.state after a connection error
