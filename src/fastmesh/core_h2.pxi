# core_h2.pxi: HTTP/2 on both sides of the proxy.
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

from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memmove
from fastmesh._h2 cimport H2Connection, H2Event, EV_REQUEST, EV_RESPONSE, \
    EV_INFORMATIONAL, EV_TRAILERS, EV_DATA, EV_STREAM_ENDED, EV_STREAM_RESET, \
    EV_WINDOW_UPDATED, EV_SETTINGS_CHANGED, EV_PING_ACK, EV_GOAWAY, EV_CONNECTION_ERROR, \
    EVF_LOCAL, EVF_END_STREAM, SEND_OK, SEND_E_LIMIT, H2_NO_ERROR, H2_PROTOCOL_ERROR, H2_CANCEL, \
    H2_REFUSED_STREAM, H2_INTERNAL_ERROR, S_MAX_CONCURRENT_STREAMS

cdef enum:
    H2_STREAM_BUFFER = 65536  # response bytes buffered per stream before the
                              # upstream is paused; request bytes per HTTP/1.1
                              # client before it is paused
    H2_CS_CLOSED = 3          # H2Connection.state after a connection error

cdef bytes H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


cdef int grpc_code_for_http(int status) noexcept:
    # https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md
    if status == 400:
        return 13     # INTERNAL
    if status == 401:
        return 16     # UNAUTHENTICATED
    if status == 403:
        return 7      # PERMISSION_DENIED
    if status == 404:
        return 12     # UNIMPLEMENTED
    if status == 429 or status == 502 or status == 503:
        return 14     # UNAVAILABLE
    if status == 504:
        return 14
    return 2          # UNKNOWN


cdef double parse_grpc_timeout(const char* v, Py_ssize_t n) noexcept:
    # "TimeoutValue TimeoutUnit": at most 8 digits, then H M S m u n. 0: none/bad.
    cdef Py_ssize_t i
    cdef double x = 0
    if n < 2 or n > 9:
        return 0
    for i in range(n - 1):
        if not (48 <= v[i] <= 57):
            return 0
        x = x * 10 + (v[i] - 48)
    if v[n - 1] == b'H':
        return x * 3600
    if v[n - 1] == b'M':
        return x * 60
    if v[n - 1] == b'S':
        return x
    if v[n - 1] == b'm':
        return x * 1e-3
    if v[n - 1] == b'u':
        return x * 1e-6
    if v[n - 1] == b'n':
        return x * 1e-9
    return 0


# ---------------------------------------------------------------------------
# Upstream: one multiplexed HTTP/2 connection to an endpoint

@cython.final
cdef class UpstreamH2(UpstreamBase):
    """A client-side HTTP/2 connection (h2c prior knowledge) carrying many
    requests. Lives in its endpoint's pool while it can take new streams.
    Each stream on it is one UpstreamRequest."""
    cdef H2Connection h2
    cdef dict streams            # sid -> UpstreamRequest
    cdef list waiting            # UpstreamRequests not opened yet (connecting / at the limit)
    cdef bint got_settings
    cdef bint write_blocked
    cdef bint draining
    cdef bint dead               # failing its streams: open nothing more
    cdef list dirty              # attempts with request body/end to pump at the flush

    cdef void setup(self):
        self.h2 = H2Connection(True)
        self.streams = {}
        self.waiting = []

    cdef inline uint32_t limit(self):
        # Before its SETTINGS arrive, assume what this endpoint said last time.
        return self.h2.remote_max_concurrent if self.got_settings else self.ep.pool.h2_max_streams

    cdef bint has_room(self):
        cdef uint32_t lim = self.limit()
        if (self.closed or self.dead or self.draining or self.h2.goaway_received
                or self.h2.state == H2_CS_CLOSED):
            return False
        return <uint32_t>(len(self.streams) + len(self.waiting)) < lim

    cdef void attach(self, UpstreamRequest u):
        u.h2 = self
        u.sid = 0
        u.done = False
        u.resp_state = 0
        u.unacked = 0
        self.waiting.append(u)
        if self.connected:
            self.set_deadline(DL_NONE, 0)
            self.open_waiting()
            self.flush_later()

    def connection_made(self, transport):
        self.set_transport(transport)
        self.connected = True
        self.cluster.st.upstream_cx_active += 1
        transport.set_write_buffer_limits(self.cluster.conf.buffer_limit)
        self.set_deadline(DL_NONE, 0)
        if self.closed:
            transport.close()
            return
        self.h2.initiate()
        self.open_waiting()
        self.flush()

    cdef void open_waiting(self):
        cdef UpstreamRequest u
        cdef ProxyStream d
        cdef uint32_t sid
        cdef int r
        cdef bint end
        while (self.waiting and not self.closed and not self.dead
               and <uint32_t>len(self.streams) < self.limit()):
            u = <UpstreamRequest>self.waiting[0]
            d = u.down
            sid = self.h2.next_stream_id()
            if sid == 0:
                break
            end = d.up_end and (d.up_pending is None or d.up_pending.len == 0) and d.up_trl is None
            r = self.h2.send_headers(sid, d.up_hdrs.base(), d.up_hdrs.hs, d.up_hdrs.n, end)
            if r == SEND_E_LIMIT:
                break
            del self.waiting[0]
            if r != SEND_OK:
                self.fail_stream(u, 502, b"upstream connect error or disconnect/reset before headers\n")
                continue
            self.streams[sid] = u
            u.sid = sid
            u.done = end
            if not end:
                self.pump(u)
        if self.waiting and (self.h2.goaway_received or self.h2.state == H2_CS_CLOSED):
            self.retry_waiting()

    cdef void retry_waiting(self):
        # This connection cannot open them (GOAWAY): another connection can.
        cdef UpstreamRequest u
        waiting, self.waiting = self.waiting, []
        for u in waiting:
            self.release(u)
            u.down.retry(u, False)

    cdef void pump(self, UpstreamRequest u):
        # Request body and end of stream, as far as flow control allows.
        cdef ProxyStream d = u.down
        cdef OutBuf pb = d.up_pending
        cdef bint fin = d.up_end and d.up_trl is None
        cdef Py_ssize_t sent
        if u.sid == 0 or u.done:
            return
        if pb is not None and pb.len:
            sent = self.h2.send_data(u.sid, pb.data, pb.len, fin)
            if sent < 0:
                return
            if sent:
                memmove(pb.data, pb.data + sent, pb.len - sent)
                pb.len -= sent
                d.up_body_sent(sent)
            if pb.len:
                return
            if fin:
                u.done = True
                return
        if d.up_end:
            if d.up_trl is not None:
                self.h2.send_headers(u.sid, d.up_trl.base(), d.up_trl.hs, d.up_trl.n, True)
            else:
                self.h2.send_data(u.sid, NULL, 0, True)
            u.done = True

    cdef inline void flush(self):
        if self.transport is not None and self.h2.out.len:
            self.send(self.h2.out.data, self.h2.out.len)
            self.h2.out.clear()
            if not self.write_blocked:
                self.h2.flushed()

    cdef void pump_later(self, UpstreamRequest u):
        # Request DATA and END_STREAM wait for the end of the loop iteration:
        # a body and its end that arrived in one client read go out as one
        # DATA frame with END_STREAM, and all streams' frames in one write.
        if not u.pump_queued:
            u.pump_queued = True
            if self.dirty is None:
                self.dirty = []
            self.dirty.append(u)
        self.flush_later()

    cdef void flush_deferred(self):
        cdef UpstreamRequest u
        self.flush_pending = False
        if self.dirty:
            dirty, self.dirty = self.dirty, None
            for u in dirty:
                u.pump_queued = False
                if u.h2 is self:
                    self.pump(u)
        self.flush()

    cdef void ack(self, UpstreamRequest u):
        # The client side drained what this upstream stream sent us.
        if u.unacked and u.sid:
            self.h2.consumed(u.sid, u.unacked)
            u.unacked = 0
            self.flush_later()

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
        cdef bint first_settings
        if self.closed:
            b.start = b.end
        else:
            h2.now = mono_now()
            r = h2.receive(b.data + b.start, b.end - b.start)
            first_settings = not self.got_settings and h2.remote_settings_received
            if first_settings:
                # The endpoint's limit (unlimited when its SETTINGS leave it
                # out), remembered for the next connection's first moments.
                self.got_settings = True
                self.ep.pool.h2_max_streams = h2.remote_max_concurrent
            self.handle_events(b.data + b.start)
            if first_settings and self.waiting:
                self.open_waiting()     # streams held back by the assumed limit
            b.start += r
            self.flush()
            if h2.state == H2_CS_CLOSED:
                self.fail_all(502, b"upstream connection error\n")
                self.close()
        if self.rbuf is not None:
            self.rbuf.compact()
            self.release_rbuf()

    cdef void handle_events(self, const char* data):
        cdef H2Connection h2 = self.h2
        cdef H2Event* ev
        cdef int i
        cdef UpstreamRequest u
        cdef ProxyStream d
        for i in range(h2.nevents):
            ev = &h2.events[i]
            if ev.type == EV_DATA:
                u = self.streams.get(ev.stream_id)
                if u is None:
                    h2.consumed(ev.stream_id, ev.len)
                    continue
                d = u.down
                d.add_body(data + ev.off, ev.len)
                d.flush()
                if u.h2 is self and d.can_take():
                    h2.consumed(ev.stream_id, ev.len)
                else:
                    u.unacked += ev.len
                d.set_deadline(DL_RESPONSE, d.conf.stream_idle_timeout)
            elif ev.type == EV_RESPONSE:
                u = self.streams.get(ev.stream_id)
                if u is not None:
                    d = u.down
                    u.cluster.st.count_status(ev.code)
                    u.resp_state = 1
                    d.write_response_head_h2(ev.code, h2.dec.out, &h2.dec.headers[ev.off],
                                             <int>ev.len, ev.flags & EVF_END_STREAM)
                    if ev.flags & EVF_END_STREAM:
                        u.resp_state = 2
                    d.flush()
            elif ev.type == EV_INFORMATIONAL:
                # 100 Continue was ours to send (or not needed); others go on.
                u = self.streams.get(ev.stream_id)
                if u is not None and ev.code != 100 and u.resp_state == 0:
                    u.down.write_interim_h2(ev.code, h2.dec.out, &h2.dec.headers[ev.off],
                                            <int>ev.len)
            elif ev.type == EV_TRAILERS:
                u = self.streams.get(ev.stream_id)
                if u is not None and u.resp_state == 1:
                    u.resp_state = 2
                    u.down.end_body_h2(h2.dec.out, &h2.dec.headers[ev.off], <int>ev.len)
                    u.down.flush()
            elif ev.type == EV_STREAM_ENDED:
                u = self.streams.get(ev.stream_id)
                if u is not None:
                    d = u.down
                    if u.resp_state == 1:
                        d.end_body_h2(NULL, NULL, 0)
                    if not u.done:
                        h2.reset_stream(ev.stream_id, H2_CANCEL)
                    self.release(u)
                    d.response_complete()
            elif ev.type == EV_STREAM_RESET:
                u = self.streams.get(ev.stream_id)
                if u is not None:
                    d = u.down
                    if ev.code == H2_REFUSED_STREAM and not d.resp_started and u.attempt == 1:
                        # Not processed by the upstream (RFC 9113 8.7): safe to retry.
                        self.release(u)
                        d.retry(u, False)
                    else:
                        self.fail_stream(u, 502, b"upstream reset the stream\n")
            elif ev.type == EV_WINDOW_UPDATED:
                if ev.stream_id == 0:
                    for u in list(self.streams.values()):
                        self.pump(u)
                else:
                    u = self.streams.get(ev.stream_id)
                    if u is not None:
                        self.pump(u)
            elif ev.type == EV_SETTINGS_CHANGED:
                if ev.code == S_MAX_CONCURRENT_STREAMS:     # a later change
                    self.ep.pool.h2_max_streams = <uint32_t>ev.value
                    self.open_waiting()
            elif ev.type == EV_GOAWAY:
                # No new streams here; the codec reset ours above last id
                # (EV_STREAM_RESET REFUSED_STREAM: retried above).
                self.leave_pool()
                self.retry_waiting()

    cdef void release(self, UpstreamRequest u):
        # End this connection's part in the attempt u.
        if u.h2 is not self:
            return
        if u.sid:
            self.streams.pop(u.sid, None)
        else:
            try:
                self.waiting.remove(u)
            except ValueError:
                pass
        u.h2 = None
        u.sid = 0
        u.end()
        if u.down.ur is u:
            u.down.ur = None
        if not self.streams and not self.waiting:
            if self.draining or self.h2.goaway_received or self.worker.draining or self.ep.removed:
                self.leave_pool()
                self.close()
            else:
                self.set_deadline(DL_POOL_IDLE, self.cluster.conf.idle_timeout)
        elif self.waiting:
            self.open_waiting()

    cdef void cancel(self, UpstreamRequest u):
        # The client side gave up on u (reset, timeout, disconnect).
        cdef uint32_t sid = u.sid
        self.release(u)
        if sid and not self.closed:
            self.h2.reset_stream(sid, H2_CANCEL)
            self.flush()

    cdef void fail_stream(self, UpstreamRequest u, int status, bytes body):
        cdef ProxyStream d = u.down
        self.release(u)
        if d.resp_started:
            d.abort()
        else:
            d.upstream_failed(status, body)

    cdef void fail_all(self, int status, bytes body):
        cdef UpstreamRequest u
        self.dead = True
        self.leave_pool()
        for u in list(self.streams.values()) + list(self.waiting):
            self.cluster.st.upstream_cx_destroy_with_active_rq += 1
            self.fail_stream(u, status, body)

    cdef void leave_pool(self):
        if self.ep is not None:
            try:
                self.ep.pool.h2conns.remove(self)
            except ValueError:
                pass

    cdef void connect_failed(self, bint timeout):
        if timeout:
            self.fail_all(504, b"upstream connect timeout\n")
        else:
            self.fail_all(503, b"upstream connect error or disconnect/reset before headers\n")

    def pause_writing(self):
        cdef UpstreamRequest u
        self.write_blocked = True
        for u in list(self.streams.values()):
            u.down.peer_paused()

    def resume_writing(self):
        cdef UpstreamRequest u
        self.write_blocked = False
        self.h2.flushed()
        for u in list(self.streams.values()):
            u.down.peer_resumed()

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.closed = True
        if self.connected:
            self.cluster.st.upstream_cx_active -= 1
        self.connected = False
        self.transport = None
        self.unlink()
        if self.rbuf is not None:
            self.rbuf.start = self.rbuf.end = 0
            self.release_rbuf()
        self.fail_all(503, b"upstream connect error or disconnect/reset before headers\n")

    cdef void on_deadline(self, int kind):
        if kind == DL_CONNECT:
            if self.connect_task is not None and not self.connected:
                self.connect_task.cancel()
        elif kind == DL_POOL_IDLE:
            if not self.streams and not self.waiting:
                self.leave_pool()
                self.close()

    cdef void drain(self):
        self.draining = True
        self.leave_pool()
        if not self.streams and not self.waiting:
            self.close()


# ---------------------------------------------------------------------------
# Downstream: a client connection speaking HTTP/2

@cython.final
cdef class H2Downstream(Conn):
    """A client connection that opened with the HTTP/2 preface."""
    cdef ListenerState lst
    cdef ListenerConf conf
    cdef H2Connection h2
    cdef ReadBuffer rbuf
    cdef dict streams            # sid -> H2ServerStream
    cdef bytes client_ip
    cdef bint write_blocked
    cdef bint draining
    cdef HeaderList hl           # scratch: response heads

    cdef void take_over(self, HttpDownstream h1):
        cdef ListenerConf conf = h1.conf
        self.lst = h1.lst
        self.conf = conf
        self.set_transport(h1.transport)
        self.rbuf = h1.rbuf
        self.client_ip = h1.client_ip
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
                        self.worker.stats.downstream_rq_rx_reset += 1
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
                self.worker.stats.downstream_cx_protocol_error += 1

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
                self.worker.stats.downstream_cx_drain_close += 1
                self.close()

    cdef void on_deadline(self, int kind):
        if kind == DL_IDLE:
            if self.streams:
                return
            self.worker.stats.downstream_cx_idle_timeout += 1
            self.h2.goaway(H2_NO_ERROR, NULL, 0)
            self.close()

    cdef ListenerState listener_of(self):
        return self.lst

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
        w.stats.downstream_cx_active -= 1
        self.unlink()
        for s in list(self.streams.values()):
            w.stats.downstream_rq_rx_reset += 1
            s.on_reset()
        self.streams.clear()
        if self.rbuf is not None:
            self.rbuf.start = self.rbuf.end = 0
            w.bufpool.release(self.rbuf)
            self.rbuf = None


@cython.final
cdef class H2ServerStream(ProxyStream):
    """One request stream of an H2Downstream."""
    cdef H2Downstream conn
    cdef uint32_t sid
    cdef bint grpc
    cdef double grpc_timeout
    cdef bint finished
    cdef bint reset            # the stream is gone toward the client
    cdef bint resp_end         # the upstream response is complete (trailers in trl)
    cdef bint resp_end_sent    # END_STREAM went to the client
    cdef bint discard          # drop the upstream body (replaced by a gRPC status)
    cdef bint throttled        # the upstream is paused because of us
    cdef bint peer_blocked     # the upstream's write buffer is full
    cdef bint chunked_up       # HTTP/1.1 upstream: request body chunk-encoded
    cdef bint has_cl
    cdef uint64_t req_seen
    cdef int64_t owed          # request DATA forwarded, not yet acknowledged
    cdef OutBuf pending        # response bytes the client's window has not taken
    cdef HeaderList trl        # response trailers waiting for pending
    cdef OutBuf h1buf          # HTTP/1.1 upstream still connecting: framed body
    cdef int64_t h1buf_raw     # ... and how many DATA bytes it holds
    cdef OutBuf early          # request DATA that came while a filter paused
    cdef HeaderList early_trl  # ... trailers likewise
    cdef bint early_end        # ... and the end of the request likewise

    cdef void start(self, H2Downstream conn, uint32_t sid):
        cdef Worker w = conn.worker
        self.conn = conn
        self.sid = sid
        self.conf = conn.conf
        self.client_ip = conn.client_ip
        self.scheme = b"http"
        self.from_h2 = True
        conn.streams[sid] = self
        self.link(w)
        conn.set_deadline(DL_NONE, 0)
        w.stats.downstream_rq_total += 1
        w.stats.downstream_rq_active += 1

    # --- the request ----------------------------------------------------------

    cdef void on_request(self, const char* base, HeaderSlice* hs, int n, bint end):
        cdef const char* method = NULL
        cdef const char* path = NULL
        cdef Py_ssize_t method_len = 0, path_len = 0, i
        cdef int k
        cdef HeaderSlice* h
        cdef const char* v
        self.rq_host = NULL
        self.rq_host_len = 0
        for k in range(n):
            h = &hs[k]
            v = base + h.value_off
            if h.name_len and base[h.name_off] == b':':
                if name_is(base, h, ":method", 7):
                    method = v
                    method_len = h.value_len
                elif name_is(base, h, ":path", 5):
                    path = v
                    path_len = h.value_len
                elif name_is(base, h, ":authority", 10):
                    self.rq_host = v
                    self.rq_host_len = h.value_len
            elif h.flags & HF_HOST:
                if self.rq_host == NULL:
                    self.rq_host = v
                    self.rq_host_len = h.value_len
            elif h.flags & HF_CONTENT_LENGTH:
                self.has_cl = True
                self.req_cl = 0
                for i in range(h.value_len):
                    if not (48 <= v[i] <= 57) or i > 18:
                        self.stream_error(H2_PROTOCOL_ERROR)
                        return
                    self.req_cl = self.req_cl * 10 + (v[i] - 48)
            elif name_is(base, h, "content-type", 12):
                if h.value_len >= 16 and memcmp(v, b"application/grpc", 16) == 0:
                    self.grpc = True
            elif name_is(base, h, "grpc-timeout", 12):
                self.grpc_timeout = parse_grpc_timeout(v, h.value_len)
        self.req_done = end
        self.req_body = BODY_NONE if end else (BODY_LENGTH if self.has_cl else BODY_CHUNKED)
        if end and self.has_cl and self.req_cl != 0:
            self.stream_error(H2_PROTOCOL_ERROR)
            return
        self.req_method = M_HEAD if (method_len == 4 and memcmp(method, b"HEAD", 4) == 0) else M_GET
        if method_len == 7 and memcmp(method, b"CONNECT", 7) == 0:
            self.local_reply(405, b"CONNECT is not supported\n")
            return
        if path == NULL:
            self.stream_error(H2_PROTOCOL_ERROR)
            return
        # the neutral request view (core_stream.pxi)
        self.rq_base = base
        self.rq_hs = hs
        self.rq_n = n
        self.rq_method = method
        self.rq_method_len = method_len
        self.rq_path = path
        self.rq_path_len = path_len
        self.rq_query_len = 0
        for i in range(path_len):
            if path[i] == b'?':
                self.rq_query_len = path_len - i
                self.rq_path_len = i
                break
        if self.run_request(0) == FILTER_CONTINUE:
            self.routed()

    cdef void routed(self):
        cdef OutBuf early = self.early
        if self.req_done:
            self.arm_response_timer()
        else:
            self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)
        self.chunked_up = self.req_body == BODY_CHUNKED and not (
            self.cluster.conf.protocol != PROTO_HTTP1)
        self.start_attempt(False)
        if early is not None or self.early_end:
            # What came while a filter held the request.
            self.early = None
            if early is not None and early.len:
                self.on_req_data(early.data, early.len)
            if self.early_trl is not None:
                self.pass_trailers(self.early_trl)
            elif self.early_end:
                self.on_req_end()

    cdef void arm_response_timer(self):
        cdef double t = 0
        if self.route is not None and self.route.timeout > 0:
            t = self.route.timeout
        if self.grpc_timeout > 0 and (t == 0 or self.grpc_timeout < t):
            t = self.grpc_timeout
        if t <= 0:
            t = self.conf.stream_idle_timeout
        self.set_deadline(DL_RESPONSE, t)

    cdef void upstream_ready(self, UpstreamRequest ur):
        cdef int64_t n
        ur.h1.send(PyBytes_AS_STRING(self.req_head), PyBytes_GET_SIZE(self.req_head))
        if self.h1buf is not None and self.h1buf.len:
            ur.h1.send(self.h1buf.data, self.h1buf.len)
            self.h1buf.clear()
            n = self.h1buf_raw
            self.h1buf_raw = 0
            self.ack(n)
            self.conn.flush_later()

    cdef void on_req_data(self, const char* p, Py_ssize_t n):
        cdef OutBuf o
        cdef UpstreamHttp up
        if self.finished or self.reset:
            self.conn.h2.consumed(self.sid, n)
            return
        if self.paused:
            # Held, unacknowledged: the client's window bounds it.
            if self.early is None:
                self.early = OutBuf(n + 16)
            self.early.add(p, n)
            return
        self.req_seen += n
        if self.has_cl and self.req_seen > self.req_cl:
            self.stream_error(H2_PROTOCOL_ERROR)
            return
        if self.up_hdrs is not None:
            # HTTP/2 upstream: its flow control takes it from up_pending.
            self.up_pending.add(p, n)
            if self.ur is not None and self.ur.h2 is not None:
                self.ur.h2.pump_later(self.ur)
            return
        if self.ur is None or self.ur.h1 is None:
            # Answered already (no upstream): the rest of the body is dropped.
            self.conn.h2.consumed(self.sid, n)
            return
        up = self.ur.h1
        if up.transport is not None and (self.h1buf is None or self.h1buf.len == 0):
            if self.chunked_up:
                o = OutBuf(n + 16)
                o.add_hex(n)
                o.add("\r\n", 2)
                o.add(p, n)
                o.add("\r\n", 2)
                up.send(o.data, o.len)
            else:
                up.send(p, n)
            self.ack(n)
        else:
            if self.h1buf is None:
                self.h1buf = OutBuf(n + 16)
            if self.chunked_up:
                self.h1buf.add_hex(n)
                self.h1buf.add("\r\n", 2)
                self.h1buf.add(p, n)
                self.h1buf.add("\r\n", 2)
            else:
                self.h1buf.add(p, n)
            self.h1buf_raw += n
        if not self.resp_started:
            self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)

    cdef void on_req_trailers(self, const char* base, HeaderSlice* hs, int n):
        cdef HeaderList t = HeaderList()
        cdef int k
        for k in range(n):
            if not (hs[k].flags & HF_HOP):
                t.add(base + hs[k].name_off, hs[k].name_len, base + hs[k].value_off,
                      hs[k].value_len, 0)
        if self.paused:
            self.early_trl = t
            self.early_end = True
            return
        self.pass_trailers(t)

    cdef void pass_trailers(self, HeaderList t):
        cdef OutBuf o
        cdef int k
        cdef UpstreamHttp up = self.ur.h1 if self.ur is not None else None
        if self.up_hdrs is not None:
            self.up_trl = t if t.n else None
        elif self.chunked_up and up is not None:
            o = self.h1buf if up.transport is None else OutBuf(256)
            if o is None:
                o = self.h1buf = OutBuf(256)
            o.add("0\r\n", 3)
            for k in range(t.n):
                o.add(t.base() + t.hs[k].name_off, t.hs[k].name_len)
                o.add(": ", 2)
                o.add(t.base() + t.hs[k].value_off, t.hs[k].value_len)
                o.add("\r\n", 2)
            o.add("\r\n", 2)
            self.chunked_up = False      # the last chunk is written
            if up.transport is not None and o is not self.h1buf:
                up.send(o.data, o.len)
                o.clear()
        self.on_req_end()

    cdef void on_req_end(self):
        cdef UpstreamHttp up
        if self.req_done or self.finished:
            return
        if self.paused:
            self.early_end = True
            return
        if self.has_cl and self.req_seen != self.req_cl:
            self.stream_error(H2_PROTOCOL_ERROR)
            return
        self.req_done = True
        if self.up_hdrs is not None:
            self.up_end = True
            if self.ur is not None and self.ur.h2 is not None:
                self.ur.h2.pump_later(self.ur)
        elif self.chunked_up and self.ur is not None and self.ur.h1 is not None:
            up = self.ur.h1
            self.chunked_up = False      # the last chunk is written
            if up.transport is not None and (self.h1buf is None or self.h1buf.len == 0):
                up.send("0\r\n\r\n", 5)
            else:
                if self.h1buf is None:
                    self.h1buf = OutBuf(64)
                self.h1buf.add("0\r\n\r\n", 5)
        if not self.resp_started:
            self.arm_response_timer()

    cdef void ack(self, int64_t n):
        # Request bytes went on to the upstream: let the client send more,
        # unless the upstream is not taking our writes.
        if self.peer_blocked:
            self.owed += n
        elif n:
            self.conn.h2.consumed(self.sid, n)

    cdef void up_body_sent(self, Py_ssize_t n):
        self.ack(n)
        self.conn.flush_later()

    cdef void peer_paused(self):
        self.peer_blocked = True

    cdef void peer_resumed(self):
        cdef int64_t n = self.owed
        self.peer_blocked = False
        if n and not self.finished:
            self.owed = 0
            self.conn.h2.consumed(self.sid, n)
            self.conn.flush_later()

    # --- the response -----------------------------------------------------------

    cdef void write_interim(self, Http1Parser rp, const char* base):
        self.interim(rp.status, base, rp.headers, rp.nheaders, HF_HOP | HF_CONTENT_LENGTH)

    cdef void write_interim_h2(self, int status, const char* base, HeaderSlice* hs, int n):
        self.interim(status, base, hs, n, 0)

    cdef void interim(self, int status, const char* base, HeaderSlice* hs, int n, int skip):
        # A 1xx (103 Early Hints, 102...) from either kind of upstream: a
        # HEADERS frame without END_STREAM before the final one (RFC 9113 8.1).
        cdef HeaderList hl = self.conn.hl
        if self.reset or self.resp_started:
            return
        hl.clear()
        hl.add_uint(":status", 7, status)
        hl.add_fields(base, hs, n, skip)
        self.conn.h2.send_headers(self.sid, hl.base(), hl.hs, hl.n, False)
        self.conn.flush_later()

    cdef void write_response_head(self, Http1Parser rp, const char* base):
        cdef HeaderList hl = self.conn.hl
        cdef int i, f
        cdef HeaderSlice* hs
        cdef bint keep_cl = rp.body == BODY_NONE and rp.status != 204 and rp.status >= 200
        cdef bint has_grpc_status = False
        if self.reset:
            return
        self.response_filters(rp.status)
        self.resp_started = True
        self.worker.stats.count_status(rp.status)
        self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)
        if self.grpc and rp.status != 200:
            for i in range(rp.nheaders):
                if ci_equal(base + rp.headers[i].name_off, rp.headers[i].name_len, "grpc-status", 11):
                    has_grpc_status = True
            if not has_grpc_status:
                self.grpc_reply(grpc_code_for_http(rp.status), b"upstream returned HTTP status")
                self.discard = True
                self.resp_end_sent = True
                return
        hl.clear()
        hl.add_uint(":status", 7, rp.status)
        for i in range(rp.nheaders):
            hs = &rp.headers[i]
            f = hs.flags
            if f & (HF_HOP | HF_TRANSFER_ENCODING):
                continue
            if f & HF_CONTENT_LENGTH and not keep_cl:
                continue
            hl.add(base + hs.name_off, hs.name_len, base + hs.value_off, hs.value_len, 0)
        if rp.body == BODY_LENGTH:
            hl.add_uint("content-length", 14, rp.content_length)
        add_extra_h2(hl, self.rs_add)
        self.conn.h2.send_headers(self.sid, hl.base(), hl.hs, hl.n, rp.body == BODY_NONE)
        if rp.body == BODY_NONE:
            self.resp_end = self.resp_end_sent = True

    cdef void write_response_head_h2(self, int status, const char* base, HeaderSlice* hs,
                                     int n, bint end):
        cdef HeaderList hl = self.conn.hl
        cdef int i
        cdef bint has_grpc_status = False
        if self.reset:
            return
        self.response_filters(status)
        self.resp_started = True
        self.worker.stats.count_status(status)
        self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)
        if self.grpc and status != 200:
            for i in range(n):
                if name_is(base, &hs[i], "grpc-status", 11):
                    has_grpc_status = True
            if not has_grpc_status:
                self.grpc_reply(grpc_code_for_http(status), b"upstream returned HTTP status")
                self.discard = True
                self.resp_end_sent = True
                return
        hl.clear()
        hl.add_uint(":status", 7, status)
        hl.add_fields(base, hs, n, 0)
        add_extra_h2(hl, self.rs_add)
        self.conn.h2.send_headers(self.sid, hl.base(), hl.hs, hl.n, end)
        if end:
            self.resp_end = self.resp_end_sent = True

    cdef void add_body(self, const char* data, Py_ssize_t n):
        cdef Py_ssize_t sent = 0
        if self.discard or self.reset or n == 0:
            return
        if self.pending is None:
            self.pending = OutBuf(4096)
        if self.pending.len == 0:
            sent = self.conn.h2.send_data(self.sid, data, n, False)
            if sent < 0:
                return
            if sent:
                self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)
        if sent < n:
            self.pending.add(data + sent, n - sent)
            if self.pending.len >= H2_STREAM_BUFFER:
                self.throttle()
        if self.conn.write_blocked:
            self.throttle()

    cdef void end_body(self, const char* data, Http1Parser rp):
        if rp is not None and rp.trailer_len:
            self.trl = HeaderList()
            self.trl.add_h1_lines(data + rp.trailer_off, rp.trailer_len)
        self.resp_end = True
        self.pump()

    cdef void end_body_h2(self, const char* base, HeaderSlice* hs, int n):
        cdef int i
        if n:
            self.trl = HeaderList()
            for i in range(n):
                self.trl.add(base + hs[i].name_off, hs[i].name_len, base + hs[i].value_off,
                             hs[i].value_len, 0)
        self.resp_end = True
        self.pump()

    cdef void pump(self):
        # Pending response bytes (and the end of the stream) as far as the
        # client's windows allow.
        cdef OutBuf pb = self.pending
        cdef bint fin = self.resp_end and self.trl is None
        cdef Py_ssize_t sent
        if self.resp_end_sent or self.reset or self.finished:
            return
        if pb is not None and pb.len:
            sent = self.conn.h2.send_data(self.sid, pb.data, pb.len, fin)
            if sent < 0:
                return
            if sent:
                memmove(pb.data, pb.data + sent, pb.len - sent)
                pb.len -= sent
                self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)
            if pb.len:
                self.check_unblock()
                return
            if fin:
                self.resp_end_sent = True
        if self.resp_end and not self.resp_end_sent:
            if self.trl is not None:
                self.conn.h2.send_headers(self.sid, self.trl.base(), self.trl.hs, self.trl.n, True)
            else:
                self.conn.h2.send_data(self.sid, NULL, 0, True)
            self.resp_end_sent = True
        self.check_unblock()
        self.maybe_finish()

    cdef void throttle(self):
        if self.throttled:
            return
        self.throttled = True
        if self.ur is not None and self.ur.h1 is not None:
            self.ur.h1.pause_read(PAUSE_PEER)

    cdef void check_unblock(self):
        if not self.throttled or self.conn.write_blocked:
            return
        if self.pending is not None and self.pending.len > H2_STREAM_BUFFER // 2:
            return
        self.throttled = False
        if self.ur is not None:
            if self.ur.h1 is not None:
                self.ur.h1.resume_read(PAUSE_PEER)
            elif self.ur.h2 is not None:
                self.ur.h2.ack(self.ur)

    cdef bint can_take(self):
        return not self.throttled

    cdef void response_complete(self):
        # The upstream is done (its part was released).
        self.resp_end = True
        self.ur = None
        self.pump()
        self.maybe_finish()

    cdef void maybe_finish(self):
        if self.finished or not self.resp_end_sent:
            return
        if self.ur is not None:
            return
        self.finish()

    cdef void finish(self):
        cdef Worker w = self.worker
        if self.finished:
            return
        self.finished = True
        if not self.req_done and not self.reset:
            # Answered before the request ended: the rest is not wanted.
            self.conn.h2.reset_stream(self.sid, H2_NO_ERROR)
        if self.owed:
            self.conn.h2.consumed(self.sid, self.owed)
            self.owed = 0
        w.stats.downstream_rq_active -= 1
        self.set_deadline(DL_NONE, 0)
        self.unlink()
        self.request_over()
        self.route = None
        self.cluster = None
        self.conn.stream_done(self)
        self.conn.flush_later()

    cdef void upstream_failed(self, int status, bytes body):
        if self.reset or self.finished:
            return
        self.ur = None
        if self.resp_started:
            self.abort()
            return
        self.local_reply(status, body)

    cdef void local_reply(self, int status, bytes body):
        cdef HeaderList hl = self.conn.hl
        if self.reset or self.finished:
            return
        self.replied = True
        self.response_filters(status)
        if self.grpc:
            if status == 504:
                self.grpc_reply(4, b"upstream request timeout")
            else:
                self.grpc_reply(grpc_code_for_http(status), body.strip())
        else:
            self.resp_started = True
            self.worker.stats.count_status(status)
            hl.clear()
            hl.add_uint(":status", 7, status)
            hl.add_uint("content-length", 14, len(body) if self.req_method != M_HEAD else 0)
            if body:
                hl.add("content-type", 12, "text/plain", 10, 0)
            add_extra_h2(hl, self.rs_add)
            if body and self.req_method != M_HEAD:
                self.conn.h2.send_headers(self.sid, hl.base(), hl.hs, hl.n, False)
                self.resp_end = True
                self.add_body(body, len(body))
                self.pump()
            else:
                self.conn.h2.send_headers(self.sid, hl.base(), hl.hs, hl.n, True)
                self.resp_end = self.resp_end_sent = True
        self.maybe_finish()
        self.conn.flush_later()

    cdef void grpc_reply(self, int code, bytes message):
        # A trailers-only response (gRPC over HTTP/2: HEADERS + END_STREAM).
        cdef HeaderList hl = self.conn.hl
        self.resp_started = True
        self.worker.stats.count_status(200)
        hl.clear()
        hl.add(":status", 7, "200", 3, 0)
        hl.add("content-type", 12, "application/grpc", 16, 0)
        hl.add_uint("grpc-status", 11, code)
        if message:
            hl.add("grpc-message", 12, message, len(message), 0)
        add_extra_h2(hl, self.rs_add)
        self.conn.h2.send_headers(self.sid, hl.base(), hl.hs, hl.n, True)
        self.resp_end = self.resp_end_sent = True

    cdef void stream_error(self, uint32_t code):
        self.conn.h2.reset_stream(self.sid, code)
        self.on_reset()

    cdef void abort(self):
        if not self.reset and not self.finished:
            self.conn.h2.reset_stream(self.sid, H2_INTERNAL_ERROR)
            self.conn.flush_later()
        self.on_reset()

    cdef void close(self):
        self.abort()

    cdef void flush(self):
        # Called by the upstream side after each event: the writes of all
        # streams of this connection in one loop iteration leave together.
        self.conn.flush_later()

    cdef void on_reset(self):
        # The stream is gone toward the client: abandon the upstream request.
        self.reset = True
        self.cancel_upstream()
        self.finish()

    cdef void on_deadline(self, int kind):
        if kind != DL_RESPONSE or self.finished:
            return
        if self.cluster is not None:
            self.cluster.st.upstream_rq_timeout += 1
        self.cancel_upstream()
        if self.resp_started:
            if self.grpc and not self.resp_end_sent and self.pending is not None \
                    and self.pending.len == 0:
                self.trl = HeaderList()
                self.trl.add("grpc-status", 11, "4", 1, 0)
                self.trl.add("grpc-message", 12, "upstream request timeout", 24, 0)
                self.resp_end = True
                self.pump()
                self.conn.flush_later()
            else:
                self.abort()
        else:
            self.local_reply(504, b"upstream request timeout\n")
