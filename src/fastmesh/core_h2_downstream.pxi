# core_h2_downstream.pxi: a client connection speaking HTTP/2.
#
# H2Downstream is a client connection that opened with the HTTP/2 preface
# (h2c prior knowledge; an http listener serves both protocols: the first
# bytes decide). It owns a server-side H2Connection (_h2) and one
# H2ServerStream per request stream. A stream is a ProxyStream, so the
# upstream side is the same as for HTTP/1.1: an UpstreamHttp (HTTP/1.1
# upstream, the request is translated) or an UpstreamH2 (HTTP/2 upstream:
# one multiplexed connection per endpoint, more when the peer's
# SETTINGS_MAX_CONCURRENT_STREAMS is reached).
#
# Flow control follows the slow side (docs/http2.md): request DATA from the
# client is acknowledged (H2Connection.consumed) only once it was written to
# the upstream and the upstream is not above its high watermark; response
# bytes the client's window cannot take wait in a bounded per-stream buffer,
# and above H2_STREAM_BUFFER the upstream is paused (HTTP/1.1: reading
# stops; HTTP/2: its DATA is not acknowledged).
#
# gRPC (content-type application/grpc*): errors the proxy makes are
# trailers-only responses (HTTP 200, grpc-status, grpc-message), and
# grpc-timeout bounds the request like a route timeout.

# ---------------------------------------------------------------------------
# Downstream: a client connection speaking HTTP/2

@cython.final
cdef class H2Downstream(Conn):
    """A client connection that opened with the HTTP/2 preface."""

    cdef void take_over(self, HttpDownstream h1):
        cdef ListenerConf conf = h1.conf
        self.lst = h1.lst
        self.conf = conf
        self.set_transport(h1.transport)
        self.rbuf = h1.rbuf
        self.client_ip = h1.client_ip
        self.orig_dst = h1.orig_dst
        self.scheme = h1.scheme
        self.peer = h1.peer
        self.xfcc_mode = h1.xfcc_mode
        self.xfcc = h1.xfcc
        self.streams = {}
        self.hl = HeaderList()
        self.h2 = H2Connection(False)
        self.h2.local_max_concurrent = conf.h2_max_concurrent_streams
        self.h2.local_initial_window = conf.h2_initial_stream_window
        self.h2.local_connection_window = conf.h2_initial_connection_window
        self.h2.dec.max_headers = conf.max_headers
        self.link(h1.worker)
        self.h2.initiate()
        self.set_deadline(DL_IDLE, conf.idle_timeout)
        h1.rbuf = None
        h1.closed = True
        h1.transport = None
        h1.unlink()
        self.transport.set_protocol(self)
        if self.worker.draining:
            self.on_drain()
        self.on_data()      # what came with the preface

    def get_buffer(self, Py_ssize_t sizehint):
        cdef ReadBuffer b = self.rbuf
        if b is None:
            b = self.rbuf = self.worker.bufpool.acquire()
        elif b.cap - b.end < MIN_READ_ROOM:
            b.compact()
            if b.cap - b.end < MIN_READ_ROOM:
                b.reserve(16384, 65536 + 16384)
        return b

    def buffer_updated(self, Py_ssize_t n):
        self.rbuf.end += n
        self.on_data()

    def data_received(self, data):
        self.get_buffer(len(data))
        self.rbuf.feed(data)
        self.on_data()

    cdef void on_data(self):
        cdef ReadBuffer b = self.rbuf
        cdef H2Connection h2 = self.h2
        cdef Py_ssize_t r
        if b is None:
            return
        if self.closed:
            b.start = b.end
        else:
            h2.now = mono_now()
            r = h2.receive(b.data + b.start, b.end - b.start)
            self.handle_events(b.data + b.start)
            b.start += r
            self.flush()
            if h2.state == H2_CS_CLOSED:
                self.close()
        if self.rbuf is not None:
            if self.rbuf.end == self.rbuf.start:
                self.worker.bufpool.release(self.rbuf)
                self.rbuf = None
            else:
                self.rbuf.compact()

    cdef void handle_events(self, const char* data):
        cdef H2Connection h2 = self.h2
        cdef H2Event* ev
        cdef int i
        cdef H2ServerStream s
        for i in range(h2.nevents):
            ev = &h2.events[i]
            if ev.type == EV_DATA:
                s = self.streams.get(ev.stream_id)
                if s is None:
                    h2.consumed(ev.stream_id, ev.len)
                else:
                    s.on_req_data(data + ev.off, ev.len)
            elif ev.type == EV_REQUEST:
                if self.closed:
                    continue
                s = H2ServerStream.__new__(H2ServerStream)
                s.start(self, ev.stream_id)
                s.on_request(h2.dec.out, &h2.dec.headers[ev.off], <int>ev.len,
                             ev.flags & EVF_END_STREAM)
            elif ev.type == EV_TRAILERS:
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.on_req_trailers(h2.dec.out, &h2.dec.headers[ev.off], <int>ev.len)
            elif ev.type == EV_STREAM_ENDED:
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    s.on_req_end()
            elif ev.type == EV_STREAM_RESET:
                s = self.streams.get(ev.stream_id)
                if s is not None:
                    if not (ev.flags & EVF_LOCAL):
                        self.lst.st[DOWNSTREAM_RQ_RX_RESET] += 1
                    s.on_reset()
            elif ev.type == EV_WINDOW_UPDATED:
                if ev.stream_id == 0:
                    for s in list(self.streams.values()):
                        s.pump()
                else:
                    s = self.streams.get(ev.stream_id)
                    if s is not None:
                        s.pump()
            elif ev.type == EV_PING_ACK:
                self.check_drained()
            elif ev.type == EV_CONNECTION_ERROR:
                self.lst.st[DOWNSTREAM_CX_PROTOCOL_ERROR] += 1

    cdef inline void flush(self):
        if self.transport is not None and self.h2.out.len:
            self.send(self.h2.out.data, self.h2.out.len)
            self.h2.out.clear()
            if not self.write_blocked:
                self.h2.flushed()

    cdef void flush_deferred(self):
        self.flush_pending = False
        self.flush()

    def pause_writing(self):
        cdef H2ServerStream s
        self.write_blocked = True
        for s in list(self.streams.values()):
            s.throttle()

    def resume_writing(self):
        cdef H2ServerStream s
        self.write_blocked = False
        self.h2.flushed()
        for s in list(self.streams.values()):
            s.check_unblock()
        self.flush()

    def eof_received(self):
        return False

    cdef void stream_done(self, H2ServerStream s):
        self.streams.pop(s.sid, None)
        if not self.streams:
            self.set_deadline(DL_IDLE, self.conf.idle_timeout)
        self.check_drained()

    cdef void check_drained(self):
        if self.draining and not self.streams and not self.closed:
            # The final GOAWAY (after the PING ACK) names the last stream we
            # took; once those are answered nothing is lost by closing.
            if self.h2.goaway_last_sent != 0x7fffffff or self.h2.state == H2_CS_CLOSED:
                self.lst.st[DOWNSTREAM_CX_DRAIN_CLOSE] += 1
                self.close()

    cdef void on_deadline(self, int kind):
        if kind == DL_IDLE:
            if self.streams:
                return
            self.lst.st[DOWNSTREAM_CX_IDLE_TIMEOUT] += 1
            self.h2.goaway(H2_NO_ERROR, NULL, 0)
            self.close()

    cdef ListenerState listener_of(self):
        return self.lst

    cdef bint shed_idle(self):
        # Overload (core_overload.pxi): no stream open, so closing loses
        # nothing; GOAWAY names the last stream taken, so a request the
        # client sent meanwhile is known unprocessed and may be retried.
        if self.closed or self.streams:
            return False
        self.lst.st[DOWNSTREAM_CX_OVERLOAD_IDLE_CLOSE] += 1
        self.h2.goaway(H2_NO_ERROR, NULL, 0)
        self.close()
        return True

    cdef void on_drain(self):
        if self.draining or self.closed:
            return
        self.draining = True
        self.h2.start_graceful_shutdown()
        self.flush()

    cdef void close(self):
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.flush()
            self.transport.close()

    def connection_lost(self, exc):
        cdef Worker w = self.worker
        cdef H2ServerStream s
        self.closed = True
        self.transport = None
        self.lst.st[DOWNSTREAM_CX_ACTIVE] -= 1
        self.unlink()
        for s in list(self.streams.values()):
            self.lst.st[DOWNSTREAM_RQ_RX_RESET] += 1
            s.on_reset()
        self.streams.clear()
        if self.rbuf is not None:
            self.rbuf.start = self.rbuf.end = 0
            w.bufpool.release(self.rbuf)
            self.rbuf = None
