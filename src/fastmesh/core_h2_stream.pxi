# core_h2_stream.pxi: H2ServerStream, one request stream of an HTTP/2 client
# (a ProxyStream: the pipeline and the upstream side are shared with
# HTTP/1.1).

@cython.final
cdef class H2ServerStream(ProxyStream):
    """One request stream of an H2Downstream."""

    cdef void start(self, H2Downstream conn, uint32_t sid):
        cdef Worker w = conn.worker
        self.conn = conn
        self.lst = conn.lst
        self.sid = sid
        # The listener's current settings (filters, routes), not the ones
        # the connection started with: a reload or add_filter reaches open
        # HTTP/2 connections too, as it reaches HTTP/1.1 keep-alive ones.
        self.conf = conn.lst.conf
        self.client_ip = conn.client_ip
        self.orig_dst = conn.orig_dst
        self.scheme = conn.scheme
        self.peer = conn.peer
        self.xfcc_mode = conn.xfcc_mode
        self.xfcc = conn.xfcc
        self.from_h2 = True
        conn.streams[sid] = self
        self.link(w)
        conn.set_deadline(DL_NONE, 0)
        request_started(self)

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
            self.set_deadline(DL_STREAM_IDLE, self.idle_t)
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
        if t <= 0:
            self.set_deadline(DL_STREAM_IDLE, self.idle_t)
        else:
            self.set_deadline(DL_RESPONSE, t)
        if self.rpol is not None:
            per_try_arm(self)       # the request is complete: the per-try timeout runs

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
        if self.replied:
            self.conn.h2.consumed(self.sid, n)
            return
        if self.conf.hooks & FH_REQUEST_BODY and self.request_data(p, n) != FILTER_CONTINUE:
            self.conn.h2.consumed(self.sid, n)
            self.body_stopped()
            return
        if self.replay is not None:
            keep_body(self, p, n)       # for a retry (core_retry.pxi)
        if self.up_hdrs is not None:
            # HTTP/2 upstream: its flow control takes it from up_pending.
            self.up_pending.add(p, n)
            if self.ur is not None and self.ur.h2 is not None:
                self.ur.h2.pump_later(self.ur)
            return
        if self.ur is None or self.ur.h1 is None:
            if self.retry_wait:
                # Between attempts: the replay holds it, acknowledged when
                # the next attempt takes the replay (rewind_body).
                self.h1buf_raw += n
                return
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
            self.set_deadline(DL_STREAM_IDLE, self.idle_t)

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
        elif t.n:
            drop_replay(self)       # (a replay toward HTTP/1.1 does not carry trailers)
        if self.up_hdrs is not None:
            pass
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
        count_downstream_status(self.lst.st, rp.status)
        self.set_deadline(DL_STREAM_IDLE, self.idle_t)
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
        count_downstream_status(self.lst.st, status)
        self.set_deadline(DL_STREAM_IDLE, self.idle_t)
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
                self.set_deadline(DL_STREAM_IDLE, self.idle_t)
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
                self.set_deadline(DL_STREAM_IDLE, self.idle_t)
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
        if self.finished:
            return
        self.finished = True
        if not self.req_done and not self.reset:
            # Answered before the request ended: the rest is not wanted.
            self.conn.h2.reset_stream(self.sid, H2_NO_ERROR)
        if self.owed:
            self.conn.h2.consumed(self.sid, self.owed)
            self.owed = 0
        request_ended(self, not self.reset)
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
            if self.reply_grpc:
                # A filter chose the gRPC status (rate limit, fault abort).
                self.grpc_reply(self.reply_grpc, body.strip())
            elif status == 504:
                self.grpc_reply(4, b"upstream request timeout")
            else:
                self.grpc_reply(grpc_code_for_http(status), body.strip())
        else:
            self.resp_started = True
            count_downstream_status(self.lst.st, status)
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
        count_downstream_status(self.lst.st, 200)
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
        if (kind != DL_RESPONSE and kind != DL_STREAM_IDLE and kind != DL_MAX_DURATION) \
                or self.finished:
            return
        count_timeout(self, kind)
        self.timeout_upstream()
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
