# core_h1_upstream.pxd: declarations of core_h1_upstream.pxi (see _core.pxd)

cdef class UpstreamHttp(UpstreamBase):
    cdef UpstreamRequest ur    # the attempt it serves (None: idle)
    cdef Http1Parser parser
    cdef bint head_done
    cdef bint in_pool
    cdef bint tunnel
    cdef bint got_bytes        # any response byte for the current request
    cdef long requests         # requests sent on this connection

    cdef void begin(self, UpstreamRequest ur)
    cdef void connect_failed(self, bint timeout)
    cdef void detach(self)
    cdef void on_data(self)
    cdef void process_response(self, ProxyStream d)
    cdef void finish(self, ProxyStream d)
    cdef void detach_and_abort(self)
    cdef void fail(self, int status, bytes body)
    cdef void on_deadline(self, int kind)
