# filter_fault.pxd: declarations of filter_fault.pxi (see _core.pxd)

@cython.final
cdef class FaultSettings:
    cdef double delay                # fixed_delay, seconds
    cdef uint32_t delay_ppm          # delay.percentage, per million requests
    cdef int abort_status            # abort.http_status (0: none)
    cdef int abort_grpc              # abort.grpc_status (-1: none)
    cdef uint32_t abort_ppm
    cdef tuple headers               # ((name, kind, value, invert), ...): all must match
    cdef long max_active             # max_active_faults (-1: no limit)

    cdef bint matches(self, ProxyStream s)

cdef class FaultFilter(HttpFilter):
    cdef readonly FaultSettings conf         # the listener's (None: only per-route)
    cdef long active                         # faults in progress (delays), this worker
    cdef StatsBlock stats
    cdef int64_t* st
    cdef int request_headers(self, ProxyStream s) except -1
    cdef void abort_request(self, ProxyStream s, FaultSettings c)

@cython.final
cdef class FaultTimer(TimerEntry):
    cdef ProxyStream s
    cdef FaultFilter f
    cdef FaultSettings c
    cdef bint abort                  # an abort follows the delay

cdef void fault_over(ProxyStream s)
