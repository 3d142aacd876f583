# core_connect.pxd: declarations of core_connect.pxi (see _core.pxd)

cdef class UpstreamBase(Conn):
    cdef ClusterState cluster    # owns the pool this connection belongs to
    cdef Endpoint ep
    cdef object connect_task
    cdef bint connected
    cdef bint cb_counted          # counted in its cluster's cb_cx (cluster_breaker.pxi)
    cdef ReadBuffer rbuf
    cdef bint tls_refused        # the server's certificate matched no SAN matcher
    cdef double cx_start         # connect started (upstream_cx_connect_time)

    cdef inline void cx_made(self)

    cdef void start_connect(self, Worker w, ClusterState c, Endpoint ep)
    cdef void connect_failed(self, bint timeout)
    cdef void on_deadline(self, int kind)
    cdef void close(self)
    cdef void abort(self)
    cdef inline void release_rbuf(self)
