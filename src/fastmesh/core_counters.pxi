# core_counters.pxi: the worker-wide counters (Stats).

@cython.final
cdef class Stats:
    """Worker-wide counters (Envoy's names where there is one)."""

    cdef inline void count_status(self, int status) noexcept:
        if status < 200:
            self.downstream_rq_1xx += 1
        elif status < 300:
            self.downstream_rq_2xx += 1
        elif status < 400:
            self.downstream_rq_3xx += 1
        elif status < 500:
            self.downstream_rq_4xx += 1
        else:
            self.downstream_rq_5xx += 1

    def as_dict(self):
        return {name: getattr(self, name) for name in STAT_NAMES}

STAT_NAMES = (
    "downstream_cx_total", "downstream_cx_active", "downstream_cx_http",
    "downstream_cx_tcp", "downstream_rq_total", "downstream_rq_active",
    "downstream_rq_1xx", "downstream_rq_2xx", "downstream_rq_3xx",
    "downstream_rq_4xx", "downstream_rq_5xx", "downstream_rq_rx_reset",
    "downstream_cx_protocol_error", "downstream_cx_idle_timeout",
    "downstream_rq_header_timeout", "downstream_cx_upgrades_total",
    "downstream_cx_drain_close", "loop_batch_sleeps",
)
