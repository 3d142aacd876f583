# core_h2_upstream.pxd: declarations of core_h2_upstream.pxi (see _core.pxd)

cdef class UpstreamH2(UpstreamBase):
    cdef H2Connection h2
    cdef dict streams            # sid -> UpstreamRequest
    cdef list waiting            # UpstreamRequests not opened yet (connecting / at the limit)
    cdef bint got_settings
    cdef bint write_blocked
    cdef bint draining
    cdef bint dead               # failing its streams: open nothing more
    cdef list dirty              # attempts with request body/end to pump at the flush

    cdef void setup(self)
    cdef inline uint32_t limit(self)
    cdef bint has_room(self)
    cdef void attach(self, UpstreamRequest u)
    cdef void open_waiting(self)
    cdef void retry_waiting(self)
    cdef void pump(self, UpstreamRequest u)
    cdef inline void flush(self)
    cdef void pump_later(self, UpstreamRequest u)
    cdef void flush_deferred(self)
    cdef void ack(self, UpstreamRequest u)
    cdef void on_data(self)
    cdef void handle_events(self, const char* data)
    cdef void release(self, UpstreamRequest u)
    cdef void cancel(self, UpstreamRequest u)
    cdef void fail_stream(self, UpstreamRequest u, int status, bytes body)
    cdef void fail_all(self, int status, bytes body, int retry, int outcome)
    cdef void leave_pool(self)
    cdef void connect_failed(self, bint timeout)
    cdef void on_deadline(self, int kind)
    cdef void drain(self)
