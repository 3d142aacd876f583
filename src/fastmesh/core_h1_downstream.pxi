# core_h1_downstream.pxi: the HTTP/1.1 reverse proxy.
#
# HttpDownstream owns a client connection: it parses request heads with the
# codec, routes, picks a cluster endpoint, takes an upstream connection from
# the endpoint's pool (or connects one) and streams the request body to it.
# UpstreamHttp parses the response and writes it back through the
# downstream's output buffer. Everything one socket read produces leaves in
# one transport.write().
#
# Framing is always regenerated, never copied: the proxy drops the incoming
# Content-Length / Transfer-Encoding and writes the framing it used itself, so
# the upstream can never see a different message boundary than we did.

@cython.final
cdef class HttpDownstream(ProxyStream):
    """A client connection on an HTTP listener (HTTP/1.1: the connection is
    the stream; a connection that opens with the HTTP/2 preface is handed to
    an H2Downstream)."""

    def __cinit__(self, ListenerState lst):
        self.lst = lst

    def connection_made(self, transport):
        cdef Worker w = self.lst.worker
        cdef ListenerConf conf = self.lst.conf
        cdef int64_t* st
        self.set_transport(transport)
        self.conf = conf
        self.link(w)
        st = self.lst.st
        st[DOWNSTREAM_CX_TOTAL] += 1
        st[DOWNSTREAM_CX_ACTIVE] += 1
        st[DOWNSTREAM_CX_HTTP] += 1
        self.parser = Http1Parser(True, conf.max_head_bytes, conf.max_headers)
        self.out = OutBuf(4096)
        self.upout = OutBuf(4096)
        self.headbuf = self.upout
        self.scheme = _HTTP
        self.alpn = ALPN_NONE
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            # A TLS transport (the transport layer decides, not the codec):
            # ALPN picks the protocol, as Envoy's and Linkerd's listeners do.
            self.scheme = b"https"
            proto = ssl_object.selected_alpn_protocol()
            self.alpn = ALPN_H2 if proto == "h2" else ALPN_HTTP11 if proto else ALPN_NONE
        transport.set_write_buffer_limits(conf.buffer_limit)
        peer = transport.get_extra_info("peername")
        self.client_ip = (peer[0] if peer else "").encode()
        # Until its first byte first_byte_timeout applies (idle_timeout if
        # that is shorter): a silent connection must not hold a descriptor
        # for the idle timeout.
        if conf.first_byte_timeout > 0 and (conf.idle_timeout <= 0
                                            or conf.first_byte_timeout < conf.idle_timeout):
            self.set_deadline(DL_FIRST_BYTE, conf.first_byte_timeout)
        else:
            self.set_deadline(DL_IDLE, conf.idle_timeout)
        if w.draining:
            self.close_after = True
        admit_downstream(self, self.lst)

    # --- reading ---------------------------------------------------------

    def get_buffer(self, Py_ssize_t sizehint):
        cdef ReadBuffer b = self.rbuf
        if b is None:
            b = self.rbuf = self.worker.bufpool.acquire()
        elif b.cap - b.end < MIN_READ_ROOM:
            b.compact()
            if b.cap - b.end < MIN_READ_ROOM:
                b.reserve(16384, self.conf.max_head_bytes + 16384)
        return b

    def buffer_updated(self, Py_ssize_t n):
        self.rbuf.end += n
        self.on_data()

    def data_received(self, data):
        # Loops without BufferedProtocol support (stdlib asyncio) land here.
        self.get_buffer(len(data))
        self.rbuf.feed(data)
        self.on_data()

    cdef void on_data(self):
        self.process()
        self.flush()
        if self.rbuf is not None:
            if self.rbuf.end == self.rbuf.start:
                self.worker.bufpool.release(self.rbuf)
                self.rbuf = None
            elif self.rbuf.end - self.rbuf.start >= self.rbuf.cap - MIN_READ_ROOM \
                    and self.state != DS_IDLE:
                # Bytes we cannot process yet (body while connecting, a
                # pipelined request): stop reading until they are taken.
                self.pause_read(PAUSE_BUFFER)

    cdef void process(self):
        cdef ReadBuffer b
        cdef Py_ssize_t r
        cdef H2Downstream h2d
        while not self.closed:
            b = self.rbuf
            if b is None or b.end == b.start:
                return
            if self.state == DS_IDLE:
                if self.in_request or self.write_blocked:
                    return   # pipelined: waits until the current response is done
                             # and the client has taken what we wrote
                if not self.seen_head and (self.alpn == ALPN_H2 or (
                        self.alpn == ALPN_NONE and b.data[b.start] == b'P')):
                    # HTTP/2: ALPN "h2", or prior knowledge (h2c): the client
                    # preface decides.
                    r = b.end - b.start
                    if memcmp(b.data + b.start, PyBytes_AS_STRING(H2_PREFACE), r if r < 24 else 24) == 0:
                        if r < 24:
                            return
                        h2d = H2Downstream.__new__(H2Downstream)
                        h2d.take_over(self)
                        return
                    if self.alpn == ALPN_H2:
                        # h2 was agreed but this is not its preface
                        self.lst.st[DOWNSTREAM_CX_PROTOCOL_ERROR] += 1
                        self.abort()
                        return
                self.seen_head = True
                r = self.parser.parse_head(b.data + b.start, b.end - b.start)
                if r == 0:
                    if self.deadline_kind() != DL_HEADERS:
                        self.set_deadline(DL_HEADERS, self.conf.headers_timeout)
                    return
                if r < 0:
                    self.lst.st[DOWNSTREAM_CX_PROTOCOL_ERROR] += 1
                    self.reset_request()
                    # (the method of this request, not of the previous one: no body for HEAD)
                    self.req_method = self.parser.method
                    self.in_request = True
                    request_started(self)
                    self.close_after = True
                    self.local_reply(self.parser.error_status,
                                     (self.parser.error_reason or "bad request").encode() + b"\n")
                    return
                self.on_head(r)
            elif self.state == DS_BODY:
                if self.ur is None:
                    return      # paused by a filter, or between attempts
                if self.ur.h2 is not None:
                    if not self.stream_body_h2():
                        return
                    continue
                if self.ur.h1 is None or not self.ur.h1.connected:
                    return
                if not self.stream_body():
                    return
            elif self.state == DS_TUNNEL:
                if self.ur is None or self.ur.h1 is None or self.ur.h1.transport is None:
                    return
                self.ur.h1.send(b.data + b.start, b.end - b.start)
                b.start = b.end
                self.touch_tunnel()
                return
            else:
                return

    # --- a request head ----------------------------------------------------

    cdef void on_head(self, Py_ssize_t r):
        cdef Worker w = self.worker
        cdef Http1Parser p = self.parser
        cdef ReadBuffer b = self.rbuf
        cdef const char* base = b.data + b.start
        cdef const char* path = base + p.target_off
        cdef Py_ssize_t path_len = p.path_len
        cdef Py_ssize_t i
        cdef int k
        cdef ListenerConf conf = self.lst.conf

        self.conf = conf
        self.reset_request()
        self.in_request = True
        self.chunked_out = False
        self.req_method = p.method
        self.req_minor = p.minor
        self.req_body = p.body
        self.req_cl = p.content_length
        self.req_keep_alive = p.keep_alive
        if not p.keep_alive or w.draining:
            self.close_after = True
        request_started(self)
        self.set_deadline(DL_NONE, 0)
        # The head is consumed now (its bytes stay where they are until the
        # next read): a local reply may at once start a pipelined request.
        b.start += r
        if p.body == BODY_NONE:
            self.req_done = True
            self.state = DS_WAIT
        else:
            self.state = DS_BODY

        if p.method == M_CONNECT:
            # Close after refusing (as HAProxy does): the client may already
            # have sent tunnel bytes, which must not be read as a request.
            self.close_after = True
            self.local_reply(405, b"CONNECT is not supported\n")
            return
        if p.body == BODY_CHUNKED and b.end > b.start and not self.body_bytes_ok():
            return
        # the neutral request view (core_stream.pxi)
        self.rq_base = base
        self.rq_hs = p.headers
        self.rq_n = p.nheaders
        self.rq_method = base + p.method_off
        self.rq_method_len = p.method_len
        self.rq_query_len = p.target_len - p.path_len
        self.rq_host_len = 0
        if path_len > 0 and path[0] != b'/':
            if path_len == 1 and path[0] == b'*':
                pass  # OPTIONS *
            elif (path_len > 7 and (memcmp(path, b"http://", 7) == 0
                                    or (path_len > 8 and memcmp(path, b"https://", 8) == 0))):
                # absolute-form: the authority in the target is the host
                # (RFC 9112 3.2.2) and the origin-form path is forwarded.
                self.rq_absolute = True
                i = 7 if path[4] == b':' else 8
                self.rq_host = path + i
                while i < path_len and path[i] != b'/':
                    i += 1
                self.rq_host_len = (path + i) - self.rq_host
                path_len = p.path_len - i
                path = path + i
            else:
                self.close_after = True
                self.local_reply(400, b"invalid request target\n")
                return
        self.rq_path = path
        self.rq_path_len = path_len
        if not self.rq_absolute and p.host_idx >= 0:
            self.rq_host = base + p.headers[p.host_idx].value_off
            self.rq_host_len = p.headers[p.host_idx].value_len
        self.expect_continue = p.expect_continue
        if p.upgrade:
            for k in range(p.nheaders):
                if p.headers[k].flags & HF_UPGRADE:
                    self.rq_upgrade = base + p.headers[k].value_off
                    self.rq_upgrade_len = p.headers[k].value_len
                    break
        if self.run_request(0) == FILTER_CONTINUE:
            self.routed()
        elif self.paused:
            # Body bytes wait in the buffer until the filter lets go.
            self.pause_read(PAUSE_BUFFER)

    cdef void routed(self):
        if self.expect_continue:
            # Answer Expect ourselves (as Envoy does by default) and strip it:
            # the body starts flowing while the upstream connection is made.
            self.out.add_bytes(CONTINUE_100)
        if self.req_done:
            self.arm_response_timer()
        else:
            # While the body uploads only the stream idle timeout applies.
            self.set_deadline(DL_STREAM_IDLE, self.idle_t)
        self.start_attempt(False)
        if self.resumed:
            # Resumed after a filter paused: the body may be waiting.
            self.resume_read(PAUSE_BUFFER)
            self.process()
            self.flush()

    cdef inline void arm_response_timer(self):
        # The route timeout runs from the end of the request until the
        # response head arrives (then the stream idle timeout takes over).
        if self.route is not None and self.route.timeout > 0:
            self.set_deadline(DL_RESPONSE, self.route.timeout)
        else:
            self.set_deadline(DL_STREAM_IDLE, self.idle_t)
        if self.rpol is not None:
            per_try_arm(self)       # the request is complete: the per-try timeout runs

    cdef void upstream_ready(self, UpstreamRequest ur):
        # The attempt has a connection: the head, then whatever body we have.
        # Body bytes that came while it connected are checked first, so that
        # nothing of a request refused for them reaches the upstream.
        if (self.state == DS_BODY and self.req_body == BODY_CHUNKED and self.rbuf is not None
                and self.rbuf.end > self.rbuf.start and not self.body_bytes_ok()):
            return
        ur.h1.send(PyBytes_AS_STRING(self.req_head), PyBytes_GET_SIZE(self.req_head))
        if self.replay_h1:
            send_replay_h1(self, ur.h1)     # a retry: the body so far (core_retry.pxi)
        self.resume_read(PAUSE_BUFFER)
        self.process()
        self.flush()

    cdef bint body_bytes_ok(self):
        # Chunked body bytes that arrived with the head (or while the upstream
        # connected) are parsed before any of the request is forwarded: a
        # framing error among them gets its 400 with nothing sent upstream.
        # Only chunked bodies can hold such an error; a Content-Length body
        # cannot. Cold: at most once per read, for chunked requests only.
        cdef ReadBuffer b = self.rbuf
        cdef Http1Parser p = self.parser
        if p.scan_body(b.data + b.start, b.end - b.start) == 0:
            return True
        self.lst.st[DOWNSTREAM_CX_PROTOCOL_ERROR] += 1
        self.close_after = True
        self.cancel_upstream()
        self.local_reply(p.error_status, (p.error_reason or "bad request").encode() + b"\n")
        return False

    cdef bint stream_body(self):
        # Request body toward the upstream, re-framed as we parsed it.
        cdef ReadBuffer b = self.rbuf
        cdef Http1Parser p = self.parser
        cdef OutBuf o = self.upout
        cdef Py_ssize_t r, off = 0, seg = 0
        cdef const char* data
        cdef bint more = True
        o.clear()
        while b.end > b.start:
            data = b.data + b.start
            r = p.parse_body(data, b.end - b.start, &off, &seg)
            if r < 0:
                self.lst.st[DOWNSTREAM_CX_PROTOCOL_ERROR] += 1
                self.close_after = True
                self.cancel_upstream()
                if self.resp_started:
                    self.abort()
                else:
                    self.local_reply(p.error_status, (p.error_reason or "bad request").encode() + b"\n")
                return False
            if seg > 0:
                if (self.conf.hooks & FH_REQUEST_BODY
                        and self.request_data(data + off, seg) != FILTER_CONTINUE):
                    self.close_after = True     # the rest of the body is not read
                    self.body_stopped()
                    return False
                self.set_deadline(DL_STREAM_IDLE, self.idle_t)   # progress
                if self.replay is not None:
                    keep_body(self, data + off, seg)
                if self.req_body == BODY_CHUNKED:
                    o.add_hex(seg)
                    o.add("\r\n", 2)
                    o.add(data + off, seg)
                    o.add("\r\n", 2)
                else:
                    o.add(data + off, seg)
            b.start += r
            if p.message_done:
                if self.req_body == BODY_CHUNKED:
                    o.add("0\r\n", 3)
                    if p.trailer_len:
                        drop_replay(self)   # (a replay does not carry trailers)
                        o.add(data + p.trailer_off, p.trailer_len)
                    o.add("\r\n", 2)
                self.req_done = True
                self.state = DS_WAIT
                if not self.resp_started:
                    self.arm_response_timer()
                break
            if r == 0:
                more = False
                break
        if o.len and self.ur is not None and self.ur.h1 is not None \
                and self.ur.h1.transport is not None:
            self.ur.h1.send(o.data, o.len)
        o.clear()
        return more and self.state == DS_BODY

    # --- the response ----------------------------------------------------

    cdef void write_interim(self, Http1Parser rp, const char* base):
        self.interim(rp.status, base + rp.reason_off, rp.reason_len, base, rp.headers,
                     rp.nheaders)

    cdef void interim(self, int status, const char* reason, Py_ssize_t rlen,
                      const char* base, HeaderSlice* hs, int n):
        # A 1xx status line and its fields (no hop-by-hop, no length; no
        # pseudo-header of an HTTP/2 upstream's head).
        cdef OutBuf o = self.out
        cdef int i
        if self.req_minor == 0:
            return   # HTTP/1.0 clients do not expect 1xx
        o.add("HTTP/1.1 ", 9)
        o.add_uint(status)
        o.add(" ", 1)
        o.add(reason, rlen)
        o.add("\r\n", 2)
        for i in range(n):
            if hs[i].flags & (HF_HOP | HF_CONTENT_LENGTH) or (
                    hs[i].name_len and base[hs[i].name_off] == b':'):
                continue
            o.add(base + hs[i].name_off, hs[i].name_len)
            o.add(": ", 2)
            o.add(base + hs[i].value_off, hs[i].value_len)
            o.add("\r\n", 2)
        o.add("\r\n", 2)

    cdef void write_response_head(self, Http1Parser rp, const char* base):
        cdef OutBuf o = self.out
        cdef int i, f
        cdef int status = rp.status
        cdef HeaderSlice* hs
        cdef bint keep_cl = rp.body == BODY_NONE and status != 204 and status >= 200
        self.response_filters(status)
        self.resp_started = True
        count_downstream_status(self.lst.st, status)
        # The head arrived: the route timeout is over; the body may take as
        # long as it makes progress.
        self.set_deadline(DL_STREAM_IDLE, self.idle_t)
        if not self.req_done:
            # Answered before the whole request arrived: the rest of the
            # request cannot be told apart from a next request; close after.
            self.close_after = True
        if rp.body == BODY_CHUNKED or rp.body == BODY_EOF:
            if self.req_minor == 1:
                self.chunked_out = True
            else:
                self.close_after = True   # HTTP/1.0: the close delimits the body
        o.add("HTTP/1.1 ", 9)
        o.add_uint(status)
        o.add(" ", 1)
        o.add(base + rp.reason_off, rp.reason_len)
        o.add("\r\n", 2)
        for i in range(rp.nheaders):
            hs = &rp.headers[i]
            f = hs.flags
            if f & (HF_HOP | HF_TRANSFER_ENCODING):
                continue
            if f & HF_CONTENT_LENGTH and not keep_cl:
                continue
            o.add(base + hs.name_off, hs.name_len)
            o.add(": ", 2)
            o.add(base + hs.value_off, hs.value_len)
            o.add("\r\n", 2)
        if rp.body == BODY_LENGTH:
            o.add("content-length: ", 16)
            o.add_uint(rp.content_length)
            o.add("\r\n", 2)
        elif self.chunked_out:
            o.add("transfer-encoding: chunked\r\n", 28)
        add_extra_h1(o, self.rs_add)
        if rp.upgrade and status == 101:
            for i in range(rp.nheaders):
                hs = &rp.headers[i]
                if hs.flags & HF_UPGRADE:
                    o.add("connection: upgrade\r\nupgrade: ", 30)
                    o.add(base + hs.value_off, hs.value_len)
                    o.add("\r\n", 2)
                    break
        else:
            if self.rq_upgrade_len and status >= 200:
                # The upgrade was refused: bytes the client sent after its
                # request belong to the protocol it asked for, not to HTTP.
                self.close_after = True
            if self.close_after:
                o.add("connection: close\r\n", 19)
            elif self.req_minor == 0:
                o.add("connection: keep-alive\r\n", 24)
        o.add("\r\n", 2)

    cdef void add_body(self, const char* data, Py_ssize_t n):
        cdef OutBuf o = self.out
        if self.chunked_out:
            o.add_hex(n)
            o.add("\r\n", 2)
            o.add(data, n)
            o.add("\r\n", 2)
        else:
            o.add(data, n)

    cdef void end_body(self, const char* data, Http1Parser rp):
        if self.chunked_out:
            self.out.add("0\r\n", 3)
            if rp is not None and rp.trailer_len:
                self.out.add(data + rp.trailer_off, rp.trailer_len)
            self.out.add("\r\n", 2)

    cdef void response_complete(self):
        cdef Worker w = self.worker
        self.flush()
        self.in_request = False
        request_ended(self, True)
        self.request_over()
        self.route = None
        self.cluster = None
        self.ur = None
        self.req_head = None
        self.up_hdrs = None
        if self.close_after or not self.req_done:
            self.close()
            return
        self.state = DS_IDLE
        self.parser.reset()
        self.set_deadline(DL_IDLE, self.conf.idle_timeout)
        self.resume_read(PAUSE_BUFFER)
        # A pipelined request may already be waiting in the buffer.
        self.process()
        self.flush()
        if self.rbuf is not None and self.rbuf.end == self.rbuf.start and not self.closed:
            w.bufpool.release(self.rbuf)
            self.rbuf = None

    cdef void upstream_failed(self, int status, bytes body):
        if self.closed:
            return
        if self.resp_started:
            self.abort()
            return
        if not self.req_done:
            self.close_after = True
        self.local_reply(status, body)

    # --- HTTP/2 upstream (core_h2_upstream.pxi) ------------------------------------------

    cdef bint stream_body_h2(self):
        # Request body toward an HTTP/2 upstream: unframed, into up_pending
        # (its flow control takes it from there); the client is paused while
        # more than H2_STREAM_BUFFER bytes wait.
        cdef ReadBuffer b = self.rbuf
        cdef Http1Parser p = self.parser
        cdef Py_ssize_t r, off = 0, seg = 0
        cdef const char* data
        cdef bint more = True
        self.pumping = True
        while b.end > b.start:
            if self.up_pending.len >= H2_STREAM_BUFFER:
                if self.ur is not None and self.ur.h2 is not None:
                    self.ur.h2.pump_later(self.ur)
                if self.up_pending.len >= H2_STREAM_BUFFER:
                    # up_body_sent() resumes once the upstream took half of it
                    self.pause_read(PAUSE_PEER)
                    more = False
                    break
            data = b.data + b.start
            r = p.parse_body(data, b.end - b.start, &off, &seg)
            if r < 0:
                self.pumping = False
                self.lst.st[DOWNSTREAM_CX_PROTOCOL_ERROR] += 1
                self.close_after = True
                self.cancel_upstream()
                if self.resp_started:
                    self.abort()
                else:
                    self.local_reply(p.error_status, (p.error_reason or "bad request").encode() + b"\n")
                return False
            if seg > 0:
                if (self.conf.hooks & FH_REQUEST_BODY
                        and self.request_data(data + off, seg) != FILTER_CONTINUE):
                    self.pumping = False
                    self.close_after = True
                    self.body_stopped()
                    return False
                self.set_deadline(DL_STREAM_IDLE, self.idle_t)
                if self.replay is not None:
                    keep_body(self, data + off, seg)
                self.up_pending.add(data + off, seg)
            b.start += r
            if p.message_done:
                if p.trailer_len:
                    self.up_trl = HeaderList()
                    self.up_trl.add_h1_lines(data + p.trailer_off, p.trailer_len)
                self.up_end = True
                self.req_done = True
                self.state = DS_WAIT
                if not self.resp_started:
                    self.arm_response_timer()
                break
            if r == 0:
                more = False
                break
        if self.ur is not None and self.ur.h2 is not None:
            self.ur.h2.pump_later(self.ur)
        self.pumping = False
        return more and self.state == DS_BODY

    cdef void up_body_sent(self, Py_ssize_t n):
        if (self.read_paused & (PAUSE_PEER | PAUSE_BUFFER) and not self.pumping
                and self.up_pending.len < H2_STREAM_BUFFER // 2):
            self.resume_read(PAUSE_PEER | PAUSE_BUFFER)
            self.process()
            self.flush()

    cdef bint can_take(self):
        return not self.write_blocked

    cdef void write_interim_h2(self, int status, const char* base, HeaderSlice* hs, int n):
        cdef bytes reason
        if self.resp_started:
            return
        reason = REASONS.get(status, b"Informational")
        self.interim(status, reason, len(reason), base, hs, n)
        self.flush()

    cdef void write_response_head_h2(self, int status, const char* base, HeaderSlice* hs,
                                     int n, bint end):
        cdef OutBuf o = self.out
        cdef int i
        cdef bint have_cl = False
        cdef bytes reason = REASONS.get(status, b"Unknown")
        self.response_filters(status)
        self.resp_started = True
        count_downstream_status(self.lst.st, status)
        self.set_deadline(DL_STREAM_IDLE, self.idle_t)
        if not self.req_done:
            self.close_after = True
        o.add("HTTP/1.1 ", 9)
        o.add_uint(status)
        o.add(" ", 1)
        o.add_bytes(reason)
        o.add("\r\n", 2)
        for i in range(n):
            if hs[i].name_len and base[hs[i].name_off] == b':':
                continue
            if hs[i].flags & (HF_HOP | HF_TRANSFER_ENCODING):
                continue
            if hs[i].flags & HF_CONTENT_LENGTH:
                have_cl = True
            o.add(base + hs[i].name_off, hs[i].name_len)
            o.add(": ", 2)
            o.add(base + hs[i].value_off, hs[i].value_len)
            o.add("\r\n", 2)
        if end:
            if (not have_cl and status >= 200 and status != 204 and status != 304
                    and self.req_method != M_HEAD):
                o.add("content-length: 0\r\n", 19)
        elif not have_cl or self.req_method == M_HEAD:
            if self.req_minor == 1:
                self.chunked_out = True
                o.add("transfer-encoding: chunked\r\n", 28)
            else:
                self.close_after = True
        add_extra_h1(o, self.rs_add)
        if self.rq_upgrade_len:
            self.close_after = True     # an HTTP/2 upstream never upgrades
        if self.close_after:
            o.add("connection: close\r\n", 19)
        elif self.req_minor == 0:
            o.add("connection: keep-alive\r\n", 24)
        o.add("\r\n", 2)
        self.flush()

    cdef void end_body_h2(self, const char* base, HeaderSlice* hs, int n):
        cdef int i
        cdef OutBuf o = self.out
        if self.chunked_out:
            o.add("0\r\n", 3)
            for i in range(n):
                o.add(base + hs[i].name_off, hs[i].name_len)
                o.add(": ", 2)
                o.add(base + hs[i].value_off, hs[i].value_len)
                o.add("\r\n", 2)
            o.add("\r\n", 2)
        self.flush()

    # --- responses the proxy makes ---------------------------------------------

    cdef void local_reply(self, int status, bytes body):
        # A response without (or instead of) the upstream's. A request body
        # we did not read would be taken for the next request: close after.
        cdef OutBuf o = self.out
        cdef bytes reason = REASONS.get(status, b"Unknown")
        if self.closed:
            return
        if not self.req_done or self.rq_upgrade_len:
            # (an Upgrade answered locally is refused: close, as above)
            self.close_after = True
        self.replied = True
        self.response_filters(status)
        self.resp_started = True
        count_downstream_status(self.lst.st, status)
        o.add("HTTP/1.1 ", 9)
        o.add_uint(status)
        o.add(" ", 1)
        o.add_bytes(reason)
        o.add("\r\ncontent-length: ", 18)
        o.add_uint(len(body))
        if body:
            o.add("\r\ncontent-type: text/plain", 26)
        if self.rs_add is not None:
            o.add("\r\n", 2)
            add_extra_h1(o, self.rs_add)
            o.len -= 2
        if self.close_after or not self.req_keep_alive:
            self.close_after = True
            o.add("\r\nconnection: close", 19)
        elif self.req_minor == 0:
            o.add("\r\nconnection: keep-alive", 24)
        o.add("\r\n\r\n", 4)
        if self.req_method != M_HEAD:
            o.add_bytes(body)
        self.response_complete()

    # --- writing ----------------------------------------------------------

    cdef void flush(self):
        if self.out.len and self.transport is not None:
            self.send(self.out.data, self.out.len)
            self.out.clear()

    def pause_writing(self):
        # The client reads slower than we write: slow the upstream down and
        # stop taking new (pipelined) requests whose answers would pile up.
        self.write_blocked = True
        self.pause_read(PAUSE_WRITE)
        if self.ur is not None and self.ur.h1 is not None:
            self.ur.h1.pause_read(PAUSE_PEER)

    def resume_writing(self):
        self.write_blocked = False
        if self.ur is not None:
            if self.ur.h1 is not None:
                self.ur.h1.resume_read(PAUSE_PEER)
            elif self.ur.h2 is not None:
                self.ur.h2.ack(self.ur)
        self.resume_read(PAUSE_WRITE)
        if not self.closed and not self.in_request:
            self.process()
            self.flush()

    # --- upgrade tunnels ------------------------------------------------------

    cdef void start_tunnel(self):
        self.lst.st[DOWNSTREAM_CX_UPGRADES_TOTAL] += 1
        self.flush()
        self.state = DS_TUNNEL
        self.ur.h1.tunnel = True
        self.close_after = True
        self.set_deadline(DL_IDLE, self.conf.idle_timeout)
        self.resume_read(PAUSE_BUFFER)
        # Bytes the client sent after its upgrade request belong to the tunnel.
        self.process()

    cdef void touch_tunnel(self):
        self.set_deadline(DL_IDLE, self.conf.idle_timeout)

    cdef void half_close_tunnel(self):
        if self.closed or self.transport is None:
            return
        if self.tunnel_eof_in:
            self.close()
        else:
            self.tunnel_eof_out = True
            self.transport.write_eof()

    def eof_received(self):
        cdef UpstreamHttp up = self.ur.h1 if self.ur is not None else None
        if self.state == DS_TUNNEL and up is not None and up.transport is not None:
            self.tunnel_eof_in = True
            if up.transport.can_write_eof():
                up.transport.write_eof()
            if self.tunnel_eof_out:
                # Both directions have ended: close the pair (our
                # connection_lost closes the upstream side).
                self.close()
                return False
            return True
        if self.in_request and self.req_done:
            # The client half-closed after its request: still answer it.
            self.close_after = True
            return True
        return False

    # --- timers, drain, teardown -----------------------------------------------

    cdef void on_deadline(self, int kind):
        if kind == DL_HEADERS:
            self.lst.st[DOWNSTREAM_RQ_HEADER_TIMEOUT] += 1
            self.reset_request()
            self.req_method = self.parser.method
            self.in_request = True
            request_started(self)
            self.close_after = True
            self.local_reply(408, b"request header timeout\n")
        elif kind == DL_FIRST_BYTE:
            self.lst.st[DOWNSTREAM_CX_FIRST_BYTE_TIMEOUT] += 1
            overload_log(self.worker, OV_LOG_FIRST_BYTE,
                         f"listener {self.lst.name}: connection closed, nothing received "
                         f"within first_byte_timeout ({self.conf.first_byte_timeout:g}s)")
            self.close()
        elif kind == DL_IDLE:
            self.lst.st[DOWNSTREAM_CX_IDLE_TIMEOUT] += 1
            if self.in_request and self.state != DS_TUNNEL:
                return
            self.close()
        elif kind == DL_RESPONSE or kind == DL_STREAM_IDLE or kind == DL_MAX_DURATION:
            count_timeout(self, kind)
            self.timeout_upstream()
            if self.resp_started:
                self.abort()
            else:
                self.close_after = True
                self.local_reply(504, b"upstream request timeout\n")

    cdef ListenerState listener_of(self):
        return self.lst

    cdef bint shed_idle(self):
        # Between requests (or silent since accept), nothing buffered.
        if (self.closed or self.in_request or self.state != DS_IDLE
                or (self.rbuf is not None and self.rbuf.end > self.rbuf.start)):
            return False
        self.lst.st[DOWNSTREAM_CX_OVERLOAD_IDLE_CLOSE] += 1
        self.close()
        return True

    cdef void on_drain(self):
        self.close_after = True
        if not self.in_request:
            self.lst.st[DOWNSTREAM_CX_DRAIN_CLOSE] += 1
            self.close()

    cdef void close(self):
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.flush()
            self.transport.close()

    cdef void abort(self):
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc):
        cdef Worker w = self.worker
        cdef UpstreamRequest ur = self.ur
        cdef UpstreamHttp up
        cdef int64_t* st = self.lst.st
        self.closed = True
        self.transport = None
        st[DOWNSTREAM_CX_ACTIVE] -= 1
        if self.in_request:
            self.in_request = False
            request_ended(self, False)
            st[DOWNSTREAM_RQ_RX_RESET] += 1
            self.request_over()
        release_stream_timers(self)
        self.unlink()
        if ur is not None:
            up = ur.h1
            if up is not None and up.tunnel:
                up.detach()
                up.close()
            else:
                self.cancel_upstream()
        if self.rbuf is not None:
            self.rbuf.start = self.rbuf.end = 0
            w.bufpool.release(self.rbuf)
            self.rbuf = None
