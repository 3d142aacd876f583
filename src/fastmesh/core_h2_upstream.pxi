# core_h2_upstream.pxi: UpstreamH2, one multiplexed HTTP/2 connection to an
# endpoint (more when the peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached);
# each stream on it is an UpstreamRequest.

# ---------------------------------------------------------------------------
# Upstream: one multiplexed HTTP/2 connection to an endpoint

@cython.final
cdef class UpstreamH2(UpstreamBase):
    """A client-side HTTP/2 connection (h2c prior knowledge) carrying many
    requests. Lives in its endpoint's pool while it can take new streams.
    Each stream on it is one UpstreamRequest."""

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
        self.cx_made()
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
            u.down.retry(u, False, False)   # another connection to it will do

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
                self.fail_all(502, b"upstream connection error\n", FAILED_RESET, OUT_RESET)
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
                d.response_data(data + ev.off, ev.len)
                d.flush()
                if u.h2 is self and d.can_take():
                    h2.consumed(ev.stream_id, ev.len)
                else:
                    u.unacked += ev.len
                d.set_deadline(DL_STREAM_IDLE, d.idle_t)
            elif ev.type == EV_RESPONSE:
                u = self.streams.get(ev.stream_id)
                if u is not None:
                    d = u.down
                    u.outcome = ev.code
                    count_upstream_status(u.cluster.st, ev.code)
                    if d.rpol is not None and retry_on_response(
                            d, u, ev.code, h2.dec.out, &h2.dec.headers[ev.off], <int>ev.len):
                        # The route retries this answer: the stream is
                        # reset, the request goes to another endpoint.
                        self.cancel(u)
                        d.retry(u, False, True)
                        continue
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
                    if u.resp_state != 0:
                        u.response_complete()
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
                    if ev.code == H2_REFUSED_STREAM and not d.resp_started and (
                            u.attempt == 1 or retry_allowed(d, u, FAILED_REFUSED)):
                        # Not processed by the upstream (RFC 9113 8.7): safe to retry.
                        self.release(u)
                        d.retry(u, False, True)   # that endpoint refused: another one
                    elif u.resp_state == 0 and retry_allowed(d, u, FAILED_RESET):
                        # Reset before the response head (retry_on reset).
                        u.outcome = OUT_RESET
                        self.release(u)
                        d.retry(u, False, True)
                    else:
                        u.outcome = OUT_RESET
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
        if self.cluster.cb_waiting:
            cb_kick(self.cluster)             # room for a waiting attempt
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

    cdef void fail_all(self, int status, bytes body, int retry, int outcome):
        # The connection is gone: each attempt on it fails, or goes again
        # elsewhere when `retry` (FAILED_*, 0: none) is one its route retries.
        # `outcome` is what each attempt reports to outlier detection.
        cdef UpstreamRequest u
        self.dead = True
        self.leave_pool()
        for u in list(self.streams.values()) + list(self.waiting):
            u.outcome = outcome
            if retry and retry_allowed(u.down, u, retry):
                self.release(u)
                u.down.retry(u, False, True)
                continue
            self.cluster.st[UPSTREAM_CX_DESTROY_WITH_ACTIVE_RQ] += 1
            self.fail_stream(u, status, body)

    cdef void leave_pool(self):
        if self.ep is not None:
            try:
                self.ep.pool.h2conns.remove(self)
            except ValueError:
                pass

    cdef void connect_failed(self, bint timeout):
        if timeout:
            self.fail_all(504, b"upstream connect timeout\n", 0, OUT_TIMEOUT)
        else:
            # Nothing was sent: streams whose route retries connect failures
            # go to another endpoint.
            self.fail_all(503, b"upstream connect error or disconnect/reset before headers\n",
                          FAILED_CONNECT, OUT_CONNECT_FAILED)

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
            self.cluster.st[UPSTREAM_CX_ACTIVE] -= 1
        self.connected = False
        self.transport = None
        self.unlink()
        cb_cx_closed(self)
        if self.rbuf is not None:
            self.rbuf.start = self.rbuf.end = 0
            self.release_rbuf()
        self.fail_all(503, b"upstream connect error or disconnect/reset before headers\n",
                      FAILED_RESET, OUT_RESET)

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
