# core_counters.pxd: declarations of core_counters.pxi (see _core.pxd)

cdef class Stats:
    cdef public long long downstream_cx_total
    cdef public long long downstream_cx_active
    cdef public long long downstream_cx_http
    cdef public long long downstream_cx_tcp
    cdef public long long downstream_rq_total
    cdef public long long downstream_rq_active
    cdef public long long downstream_rq_1xx
    cdef public long long downstream_rq_2xx
    cdef public long long downstream_rq_3xx
    cdef public long long downstream_rq_4xx
    cdef public long long downstream_rq_5xx
    cdef public long long downstream_rq_rx_reset
    cdef public long long downstream_cx_protocol_error
    cdef public long long downstream_cx_idle_timeout
    cdef public long long downstream_rq_header_timeout
    cdef public long long downstream_cx_upgrades_total
    cdef public long long downstream_cx_drain_close
    cdef public long long loop_batch_sleeps      # set_batch_window: sleeps taken

    cdef inline void count_status(self, int status) noexcept
