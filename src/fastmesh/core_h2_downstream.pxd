# core_h2_downstream.pxd: declarations of core_h2_downstream.pxi (see _core.pxd)

cdef class H2Downstream(Conn):
    cdef ListenerState lst
    cdef ListenerConf conf
    cdef H2Connection h2
    cdef ReadBuffer rbuf
    cdef dict streams            # sid -> H2ServerStream
    cdef bytes client_ip
    cdef object peer              # TLS: as HttpDownstream's, for its streams
    cdef int xfcc_mode
    cdef bytes xfcc
    cdef bytes scheme             # "https" over TLS: x-forwarded-proto for its streams
    cdef bint write_blocked
    cdef bint draining
    cdef HeaderList hl           # scratch: response heads

    cdef void take_over(self, HttpDownstream h1)
    cdef void on_data(self)
    cdef void handle_events(self, const char* data)
    cdef inline void flush(self)
    cdef void flush_deferred(self)
    cdef void stream_done(self, H2ServerStream s)
    cdef void check_drained(self)
    cdef void on_deadline(self, int kind)
    cdef ListenerState listener_of(self)
    cdef void on_drain(self)
    cdef bint shed_idle(self)
    cdef void close(self)
