# core_tcp.pxd: declarations of core_tcp.pxi (see _core.pxd)

cdef class TcpUpstream(UpstreamBase):
    cdef TcpDownstream down
    cdef bint eof_in

    cdef void connect_failed(self, bint timeout)

cdef class TcpDownstream(Conn):
    cdef ListenerState lst
    cdef ListenerConf conf
    cdef TcpUpstream up
    cdef ReadBuffer rbuf
    cdef bint eof_in
    cdef object peer             # TLS: the verified peer (security.peer.PeerIdentity) or None

    cdef void upstream_ready(self)
    cdef inline void touch(self)
    cdef void forward(self)
    cdef void half_close_from_upstream(self)
    cdef void on_deadline(self, int kind)
    cdef ListenerState listener_of(self)
    cdef void on_drain(self)
    cdef void close(self)
