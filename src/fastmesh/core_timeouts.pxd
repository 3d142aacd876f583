# core_timeouts.pxd: declarations of core_timeouts.pxi (see _core.pxd)

@cython.final
cdef class RouteTimeouts:
    cdef readonly double idle_timeout          # < 0: not set (stream_idle_timeout); 0: off
    cdef readonly double max_stream_duration   # < 0: not set (the listener's); 0: off
    cdef readonly double grpc_max              # < 0: grpc-timeout ignored; 0: no cap
    cdef readonly double grpc_offset

@cython.final
cdef class StreamTimer(TimerEntry):
    cdef ProxyStream s

cdef void route_timeouts(ProxyStream s, Route route)
cdef void timeouts_over(ProxyStream s)
cdef void count_timeout(ProxyStream s, int kind)
