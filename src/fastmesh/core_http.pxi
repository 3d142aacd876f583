# core_http.pxi: the HTTP/1.1 reverse proxy.
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

cdef enum:
    DS_IDLE = 0        # ready for the next request head (maybe partly received)
    DS_BODY = 1        # head handled; request body streams upstream
    DS_WAIT = 2        # request complete; response still coming
    DS_TUNNEL = 3      # after 101 Switching Protocols: raw bytes both ways

# Room kept free in a read buffer before reading into it.
cdef enum:
    MIN_READ_ROOM = 2048

cdef dict REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 102: b"Processing",
    103: b"Early Hints", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 301: b"Moved Permanently", 302: b"Found",
    304: b"Not Modified", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 408: b"Request Timeout",
    413: b"Payload Too Large", 414: b"URI Too Long",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}

cdef bytes CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


cdef inline bint ci_equal(const char* a, Py_ssize_t alen, const char* b, Py_ssize_t blen) noexcept:
    # b is lower-case ASCII
    cdef Py_ssize_t i
    cdef char c
    if alen != blen:
        return False
    for i in range(alen):
        c = a[i]
        if 65 <= c <= 90:
            c += 32
        if c != b[i]:
            return False
    return True



cdef class ProxyStream(Conn):
    """One request/response exchange, as an upstream connection sees it.

    The upstream side (UpstreamHttp for HTTP/1.1, UpstreamH2 for HTTP/2)
    talks to the request it serves only through these cdef methods, so it
    does not care whether the client came over HTTP/1.1 (HttpDownstream: the
    connection is the stream) or HTTP/2 (H2ServerStream: one per stream of an
    H2Downstream). Virtual cdef calls: a C vtable lookup, no Python call.
    """
    cdef ListenerConf conf
    cdef UpstreamHttp up         # HTTP/1.1 upstream serving this request, or
    cdef UpstreamH2 up2          # the HTTP/2 upstream connection and our
    cdef uint32_t up_sid         # stream on it (0 while not yet opened)
    cdef Route route
    cdef Cluster cluster
    cdef int lb_idx
    cdef int req_method
    cdef int req_body            # BODY_* (BODY_NONE: bodiless, safe to retry)
    cdef bint req_done           # the request, body included, was fully received
    cdef bint resp_started       # response head written to the client
    cdef bint retried
    cdef bytes req_head          # HTTP/1.1 upstream: the request head (kept for a retry)
    # HTTP/2 upstream: the request header list, request body bytes its flow
    # control has not taken yet (bounded by the client's window or by pausing
    # an HTTP/1.1 client) and response DATA not yet acknowledged upstream
    cdef HeaderList up_hdrs
    cdef OutBuf up_pending
    cdef bint up_end             # END_STREAM goes after up_pending
    cdef HeaderList up_trl       # ... with these trailers (when not None)
    cdef bint up_done            # END_STREAM went upstream
    cdef bint pump_queued        # waiting in its UpstreamH2's `dirty` list
    cdef int up_state            # HTTP/2 upstream response: 0 none, 1 head, 2 ended
    cdef int64_t up_unacked

    cdef void attach_h2(self, Endpoint ep):
        # Open this request on an HTTP/2 connection to ep: one with room from
        # the endpoint's pool, or a new one (streams wait until it connects).
        cdef UpstreamH2 c = ep.pool.get_h2()
        self.cluster.lb.request_started(self.lb_idx)
        self.cluster.st.upstream_rq_active += 1
        if c is None:
            c = UpstreamH2.__new__(UpstreamH2)
            c.setup()
            ep.pool.h2conns.append(c)
            c.start_connect(self.worker, self.cluster, ep)
        else:
            self.cluster.st.upstream_cx_reused += 1
        c.attach(self)

    cdef void cancel_upstream(self):
        # The client side gave up on this request.
        if self.up is not None:
            self.up.detach_and_abort()
        if self.up2 is not None:
            self.up2.cancel(self)

    # --- called by the upstream side (overridden) ---
    cdef void upstream_ready(self, UpstreamHttp up):
        pass
    cdef void write_interim(self, Http1Parser rp, const char* base):
        pass
    cdef void write_interim_h2(self, int status, const char* base, HeaderSlice* hs, int n):
        # A 1xx (not 100) from an HTTP/2 upstream.
        pass
    cdef void write_response_head(self, Http1Parser rp, const char* base):
        pass
    cdef void write_response_head_h2(self, int status, const char* base, HeaderSlice* hs,
                                     int n, bint end):
        pass
    cdef void add_body(self, const char* data, Py_ssize_t n):
        pass
    cdef void end_body(self, const char* data, Http1Parser rp):
        pass
    cdef void end_body_h2(self, const char* base, HeaderSlice* hs, int n):
        pass
    cdef void response_complete(self):
        pass
    cdef void upstream_failed(self, int status, bytes body):
        pass
    cdef void retry(self):
        pass
    cdef void start_tunnel(self):
        pass
    cdef void touch_tunnel(self):
        pass
    cdef void half_close_tunnel(self):
        pass
    cdef void flush(self):
        pass
    cdef void close(self):
        pass
    cdef void abort(self):
        pass
    cdef void peer_paused(self):
        # The upstream's write buffer is full: stop feeding it request bytes.
        self.pause_read(PAUSE_PEER)
    cdef void peer_resumed(self):
        self.resume_read(PAUSE_PEER)
    cdef bint can_take(self):
        # May the HTTP/2 upstream acknowledge response DATA it just handed us?
        return True
    cdef void up_body_sent(self, Py_ssize_t n):
        # The HTTP/2 upstream's flow control took n more bytes of up_pending.
        pass


@cython.final
cdef class UpstreamHttp(UpstreamBase):
    """One HTTP/1.1 connection to an endpoint; pooled between requests."""
    cdef ProxyStream down
    cdef Http1Parser parser
    cdef bint head_done
    cdef bint in_pool
    cdef bint tunnel
    cdef bint got_bytes        # any response byte for the current request
    cdef long requests         # requests sent on this connection
    cdef int lb_idx

    cdef void begin(self, ProxyStream down, int lb_idx, int method):
        self.down = down
        self.lb_idx = lb_idx
        self.head_done = False
        self.got_bytes = False
        self.requests += 1
        if self.parser is None:
            self.parser = Http1Parser(False, 65536, 256)
        else:
            self.parser.reset()
        self.parser.expect_response_to(method)
        self.set_deadline(DL_NONE, 0)

    def connection_made(self, transport):
        self.set_transport(transport)
        self.connected = True
        self.cluster.st.upstream_cx_active += 1
        transport.set_write_buffer_limits(self.cluster.buffer_limit)
        self.set_deadline(DL_NONE, 0)
        if self.closed or self.down is None:
            self.closed = True
            transport.close()
            return
        self.down.upstream_ready(self)

    cdef void connect_failed(self, bint timeout):
        cdef ProxyStream d = self.down
        if d is None:
            return
        self.detach()
        if timeout:
            d.upstream_failed(504, b"upstream connect timeout\n")
        else:
            d.upstream_failed(502, b"upstream connect error or disconnect/reset before headers\n")

    cdef void detach(self):
        # End this connection's part in the current request.
        cdef ProxyStream d = self.down
        if d is None:
            return
        self.down = None
        d.up = None
        self.cluster.lb.request_finished(self.lb_idx)
        self.cluster.st.upstream_rq_active -= 1
        # Undo pauses either side put on the other.
        self.resume_read(PAUSE_PEER)
        d.peer_resumed()

    def buffer_updated(self, Py_ssize_t n):
        self.rbuf.end += n
        self.on_data()

    def data_received(self, data):
        self.get_buffer(len(data))
        self.rbuf.feed(data)
        self.on_data()

    cdef void on_data(self):
        cdef ReadBuffer b = self.rbuf
        cdef ProxyStream d = self.down
        if d is None:
            # Bytes on an idle pooled connection: the upstream broke the
            # protocol (or is closing); it cannot be reused.
            self.abort()
            return
        self.got_bytes = True
        if self.tunnel:
            d.send(b.data + b.start, b.end - b.start)
            b.start = b.end
            d.touch_tunnel()
        else:
            self.process_response(d)
        if self.rbuf is not None:
            self.rbuf.compact()
            self.release_rbuf()

    cdef void process_response(self, ProxyStream d):
        cdef ReadBuffer b = self.rbuf
        cdef Http1Parser p = self.parser
        cdef Py_ssize_t r, off = 0, seg = 0
        cdef const char* data
        cdef int status
        while not self.closed and self.down is d:
            data = b.data + b.start
            if b.end == b.start:
                break
            if not self.head_done:
                r = p.parse_head(data, b.end - b.start)
                if r == 0:
                    break
                if r < 0:
                    self.fail(502, b"upstream sent an invalid response\n")
                    return
                status = p.status
                if status < 200 and status != 101:
                    # Interim response: pass it on (our own 100 Continue was
                    # already sent for Expect), then wait for the final one.
                    if status != 100:
                        d.write_interim(p, data)
                    b.start += r
                    p.reset()
                    p.expect_response_to(d.req_method)
                    continue
                d.write_response_head(p, data)
                b.start += r
                self.head_done = True
                if p.upgrade:
                    d.start_tunnel()
                    if b.end > b.start:
                        d.send(b.data + b.start, b.end - b.start)
                        b.start = b.end
                    break
                if p.body == BODY_NONE:
                    self.finish(d)
                    return
            else:
                r = p.parse_body(data, b.end - b.start, &off, &seg)
                if r < 0:
                    self.fail(502, b"upstream sent an invalid body\n")
                    return
                if seg > 0:
                    d.add_body(data + off, seg)
                    d.set_deadline(DL_RESPONSE, d.conf.stream_idle_timeout)   # progress
                b.start += r
                if p.message_done:
                    d.end_body(data, p)
                    self.finish(d)
                    return
                if r == 0:
                    break
        d.flush()

    cdef void finish(self, ProxyStream d):
        # The response is complete. Decide whether this connection can serve
        # another request before handing control back to the downstream (which
        # may at once start its next, pipelined request).
        cdef bint reusable = (self.parser.keep_alive and d.req_done
                              and self.rbuf.end == self.rbuf.start
                              and not self.closed and not self.worker.draining
                              and (self.cluster.max_requests_per_connection == 0
                                   or self.requests < self.cluster.max_requests_per_connection))
        self.cluster.st.count_status(self.parser.status)
        self.detach()
        if reusable:
            self.release_rbuf()
            self.set_deadline(DL_POOL_IDLE, self.cluster.idle_timeout)
            self.ep.pool.put(self)
        else:
            self.close()
        d.response_complete()

    cdef void detach_and_abort(self):
        # The request this connection serves is abandoned: the connection's
        # state is unknown, so it cannot be reused.
        self.detach()
        self.abort()

    cdef void fail(self, int status, bytes body):
        cdef ProxyStream d = self.down
        self.detach()
        self.abort()
        if d is not None:
            d.upstream_failed(status, body)

    def eof_received(self):
        cdef ProxyStream d = self.down
        if d is None:
            return False
        if self.tunnel:
            d.half_close_tunnel()
            return True
        if self.head_done and self.parser.body == BODY_EOF:
            # A close-delimited body ends here.
            d.end_body(NULL, None)
            self.parser.keep_alive = False
            self.finish(d)
        return False

    def pause_writing(self):
        if self.down is not None:
            self.down.peer_paused()

    def resume_writing(self):
        if self.down is not None:
            self.down.peer_resumed()

    def connection_lost(self, exc):
        cdef ProxyStream d = self.down
        self.closed = True
        if self.connected:
            self.cluster.st.upstream_cx_active -= 1
        self.connected = False
        self.transport = None
        self.unlink()
        if self.rbuf is not None:
            self.rbuf.start = self.rbuf.end = 0
            self.release_rbuf()
        if d is None:
            return
        self.cluster.st.upstream_cx_destroy_with_active_rq += 1
        self.detach()
        if self.tunnel:
            d.close()
        elif not self.head_done:
            # A pooled connection the upstream closed just as we reused it:
            # nothing was answered, and a bodiless request can safely go again
            # on a fresh connection.
            if (self.requests > 1 and not self.got_bytes and d.req_body == BODY_NONE
                    and not d.retried):
                self.cluster.st.upstream_rq_retry += 1
                d.retry()
            else:
                d.upstream_failed(502, b"upstream connect error or disconnect/reset before headers\n")
        else:
            # Mid-body: the client must not mistake a cut response for a whole one.
            d.abort()

    cdef void on_deadline(self, int kind):
        if kind == DL_CONNECT:
            if self.connect_task is not None and not self.connected:
                self.connect_task.cancel()
        elif kind == DL_POOL_IDLE:
            self.close()


@cython.final
cdef class HttpDownstream(ProxyStream):
    """A client connection on an HTTP listener (HTTP/1.1: the connection is
    the stream; a connection that opens with the HTTP/2 preface is handed to
    an H2Downstream)."""
    cdef ListenerState lst
    cdef Http1Parser parser
    cdef ReadBuffer rbuf
    cdef OutBuf out            # toward the client
    cdef OutBuf upout          # toward the upstream
    cdef int state
    cdef bint in_request       # a request is being served (head seen, response not complete)
    cdef bint close_after      # close once the current response is written
    cdef bint chunked_out      # response body is chunk-encoded toward the client
    cdef bint tunnel_eof_in
    cdef bint write_blocked    # transport above its high watermark (pause_writing)
    cdef bint tunnel_eof_out   # the upstream ended its direction; EOF was passed to the client
    cdef bint seen_head        # a request head was seen (no HTTP/2 preface after that)
    cdef bint pumping          # inside stream_body_h2 (no re-entry from up_body_sent)
    cdef bytes client_ip
    cdef int req_minor
    cdef bint req_keep_alive

    def __cinit__(self, ListenerState lst):
        self.lst = lst

    def connection_made(self, transport):
        cdef Worker w = self.lst.worker
        cdef ListenerConf conf = self.lst.conf
        self.set_transport(transport)
        self.conf = conf
        self.link(w)
        w.stats.downstream_cx_total += 1
        w.stats.downstream_cx_active += 1
        w.stats.downstream_cx_http += 1
        self.parser = Http1Parser(True, conf.max_head_bytes, conf.max_headers)
        self.out = OutBuf(4096)
        self.upout = OutBuf(4096)
        transport.set_write_buffer_limits(conf.buffer_limit)
        peer = transport.get_extra_info("peername")
        self.client_ip = (peer[0] if peer else "").encode()
        self.set_deadline(DL_IDLE, conf.idle_timeout)
        if w.draining:
            self.close_after = True

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
                if not self.seen_head and b.data[b.start] == b'P':
                    # HTTP/2 with prior knowledge: the client preface decides.
                    r = b.end - b.start
                    if memcmp(b.data + b.start, PyBytes_AS_STRING(H2_PREFACE), r if r < 24 else 24) == 0:
                        if r < 24:
                            return
                        h2d = H2Downstream.__new__(H2Downstream)
                        h2d.take_over(self)
                        return
                self.seen_head = True
                r = self.parser.parse_head(b.data + b.start, b.end - b.start)
                if r == 0:
                    if self.deadline_kind != DL_HEADERS:
                        self.set_deadline(DL_HEADERS, self.conf.headers_timeout)
                    return
                if r < 0:
                    self.worker.stats.downstream_cx_protocol_error += 1
                    # (the method of this request, not of the previous one: no body for HEAD)
                    self.req_method = self.parser.method
                    self.in_request = True
                    self.worker.stats.downstream_rq_total += 1
                    self.worker.stats.downstream_rq_active += 1
                    self.close_after = True
                    self.local_reply(self.parser.error_status,
                                     (self.parser.error_reason or "bad request").encode() + b"\n")
                    return
                self.on_head(r)
            elif self.state == DS_BODY:
                if self.up2 is not None:
                    if not self.stream_body_h2():
                        return
                    continue
                if self.up is None or not self.up.connected:
                    return
                if not self.stream_body():
                    return
            elif self.state == DS_TUNNEL:
                if self.up is None or self.up.transport is None:
                    return
                self.up.send(b.data + b.start, b.end - b.start)
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
        cdef const char* host = NULL
        cdef Py_ssize_t host_len = 0
        cdef const char* path = base + p.target_off
        cdef Py_ssize_t path_len = p.path_len
        cdef Py_ssize_t query_len = p.target_len - p.path_len
        cdef Py_ssize_t i
        cdef Route route
        cdef Cluster c
        cdef ListenerConf conf = self.lst.conf
        cdef uint64_t h
        cdef int idx
        cdef bint absolute = False

        self.conf = conf
        self.in_request = True
        self.req_done = False
        self.resp_started = False
        self.retried = False
        self.chunked_out = False
        self.up_end = False
        self.up_done = False
        self.up_trl = None
        self.up_state = 0
        self.up_unacked = 0
        self.req_method = p.method
        self.req_minor = p.minor
        self.req_body = p.body
        self.req_keep_alive = p.keep_alive
        if not p.keep_alive or w.draining:
            self.close_after = True
        w.stats.downstream_rq_total += 1
        w.stats.downstream_rq_active += 1
        self.set_deadline(DL_NONE, 0)

        if p.method == M_CONNECT:
            self.consume_head_reply(r, 405, b"CONNECT is not supported\n")
            return
        if path_len > 0 and path[0] != b'/':
            if path_len == 1 and path[0] == b'*':
                pass  # OPTIONS *
            elif (path_len > 7 and (memcmp(path, b"http://", 7) == 0
                                    or (path_len > 8 and memcmp(path, b"https://", 8) == 0))):
                # absolute-form: the authority in the target is the host
                # (RFC 9112 3.2.2) and the origin-form path is forwarded.
                absolute = True
                i = 7 if path[4] == b':' else 8
                host = path + i
                while i < path_len and path[i] != b'/':
                    i += 1
                host_len = (path + i) - host
                query_len = p.target_len - p.path_len
                path_len = p.path_len - i
                path = path + i
            else:
                self.close_after = True
                self.consume_head_reply(r, 400, b"invalid request target\n")
                return
        if not absolute and p.host_idx >= 0:
            host = base + p.headers[p.host_idx].value_off
            host_len = p.headers[p.host_idx].value_len

        route = conf.router.match(host, host_len, path, path_len, query_len,
                                  base, p.headers, p.nheaders)
        if route is None:
            self.consume_head_reply(r, 404, b"")
            return
        if route.action == ACTION_DIRECT:
            self.consume_head_reply(r, route.direct_status, route.direct_body)
            return
        if route.action == ACTION_WEIGHTED:
            c = <Cluster>route.pick_weighted(<unsigned int>(rand64() >> 32))
        else:
            c = <Cluster>route.cluster
        if c.hash_kind == HASH_HEADER:
            h = self.header_hash(base, c.hash_header)
        elif c.hash_kind == HASH_SOURCE_IP:
            h = hash_bytes(self.client_ip, len(self.client_ip), 0)
        else:
            h = 0
        idx = c.lb.pick(h)
        if idx < 0:
            c.st.upstream_cx_none_healthy += 1
            self.consume_head_reply(r, 503, b"no healthy upstream\n")
            return
        self.route = route
        self.cluster = c
        self.lb_idx = idx
        if c.protocol == PROTO_HTTP2:
            self.build_h2_request(base, path, path_len + query_len, host, host_len, absolute,
                                  <Endpoint>c.endpoints[idx])
        else:
            self.build_request_head(base, path, path_len + query_len, host, host_len, absolute,
                                    <Endpoint>c.endpoints[idx])
        if p.expect_continue:
            # Answer Expect ourselves (as Envoy does by default) and strip it:
            # the body starts flowing while the upstream connection is made.
            self.out.add_bytes(CONTINUE_100)
        b.start += r
        if p.body == BODY_NONE:
            self.req_done = True
            self.state = DS_WAIT
        else:
            self.state = DS_BODY
        c.st.upstream_rq_total += 1
        if self.req_done:
            self.arm_response_timer()
        else:
            # While the body uploads only the stream idle timeout applies.
            self.set_deadline(DL_RESPONSE, conf.stream_idle_timeout)
        self.attach_upstream(False)

    cdef inline void arm_response_timer(self):
        # The route timeout runs from the end of the request until the
        # response head arrives (then the stream idle timeout takes over).
        if self.route is not None and self.route.timeout > 0:
            self.set_deadline(DL_RESPONSE, self.route.timeout)
        else:
            self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)

    cdef uint64_t header_hash(self, const char* base, bytes name):
        cdef Http1Parser p = self.parser
        cdef int i
        cdef HeaderSlice* hs
        for i in range(p.nheaders):
            hs = &p.headers[i]
            if ci_equal(base + hs.name_off, hs.name_len, name, len(name)):
                return hash_bytes(base + hs.value_off, hs.value_len, 0)
        return rand64()   # no key: spread like random (Envoy does the same)

    cdef void build_request_head(self, const char* base, const char* target,
                                 Py_ssize_t target_len, const char* host,
                                 Py_ssize_t host_len, bint absolute, Endpoint ep):
        cdef Http1Parser p = self.parser
        cdef OutBuf o = self.upout
        cdef ListenerConf conf = self.conf
        cdef int i, f
        cdef int last_xff = -1
        cdef bint have_host = False, have_rid = False
        cdef HeaderSlice* hs
        o.clear()
        o.add(base + p.method_off, p.method_len)
        o.add(" ", 1)
        o.add(target, target_len)
        o.add(" HTTP/1.1\r\n", 11)
        for i in range(p.nheaders):
            if p.headers[i].flags & HF_XFF:
                last_xff = i
        for i in range(p.nheaders):
            hs = &p.headers[i]
            f = hs.flags
            if f & (HF_HOP | HF_CONTENT_LENGTH | HF_TRANSFER_ENCODING | HF_XFP):
                continue
            if f & HF_EXPECT and p.expect_continue:
                continue
            if f & HF_HOST:
                if absolute:
                    continue
                have_host = True
            if f & HF_REQUEST_ID:
                have_rid = True
            o.add(base + hs.name_off, hs.name_len)
            o.add(": ", 2)
            o.add(base + hs.value_off, hs.value_len)
            if i == last_xff and conf.xff_append:
                if hs.value_len:
                    o.add(", ", 2)
                o.add_bytes(self.client_ip)
            o.add("\r\n", 2)
        if not have_host:
            o.add("host: ", 6)
            if host_len:
                o.add(host, host_len)
            else:
                o.add_bytes(ep.host.encode())
                o.add(":", 1)
                o.add_uint(ep.port)
            o.add("\r\n", 2)
        if last_xff < 0 and conf.xff_append:
            o.add("x-forwarded-for: ", 17)
            o.add_bytes(self.client_ip)
            o.add("\r\n", 2)
        o.add("x-forwarded-proto: http\r\n", 25)
        if not have_rid and conf.gen_request_id:
            add_request_id(o)
        if p.body == BODY_LENGTH:
            o.add("content-length: ", 16)
            o.add_uint(p.content_length)
            o.add("\r\n", 2)
        elif p.body == BODY_CHUNKED:
            o.add("transfer-encoding: chunked\r\n", 28)
        if p.upgrade:
            for i in range(p.nheaders):
                hs = &p.headers[i]
                if hs.flags & HF_UPGRADE:
                    o.add("connection: upgrade\r\nupgrade: ", 30)
                    o.add(base + hs.value_off, hs.value_len)
                    o.add("\r\n", 2)
                    break
        o.add("\r\n", 2)
        self.req_head = o.take()

    cdef void attach_upstream(self, bint fresh):
        cdef Endpoint ep = <Endpoint>self.cluster.endpoints[self.lb_idx]
        cdef UpstreamHttp up = None
        if self.cluster.protocol == PROTO_HTTP2:
            self.attach_h2(ep)
            return
        self.cluster.lb.request_started(self.lb_idx)
        self.cluster.st.upstream_rq_active += 1
        if not fresh:
            up = ep.pool.get()
        if up is not None:
            self.cluster.st.upstream_cx_reused += 1
            self.up = up
            up.begin(self, self.lb_idx, self.req_method)
            up.send(PyBytes_AS_STRING(self.req_head), PyBytes_GET_SIZE(self.req_head))
            self.process()
        else:
            up = UpstreamHttp.__new__(UpstreamHttp)
            self.up = up
            up.begin(self, self.lb_idx, self.req_method)
            up.start_connect(self.worker, self.cluster, ep)

    cdef void upstream_ready(self, UpstreamHttp up):
        up.send(PyBytes_AS_STRING(self.req_head), PyBytes_GET_SIZE(self.req_head))
        self.resume_read(PAUSE_BUFFER)
        self.process()
        self.flush()

    cdef void retry(self):
        self.retried = True
        self.attach_upstream(True)

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
                self.worker.stats.downstream_cx_protocol_error += 1
                self.close_after = True
                if self.up is not None:
                    self.up.detach_and_abort()
                if self.resp_started:
                    self.abort()
                else:
                    self.local_reply(p.error_status, (p.error_reason or "bad request").encode() + b"\n")
                return False
            if seg > 0:
                self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)   # progress
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
        if o.len and self.up is not None and self.up.transport is not None:
            self.up.send(o.data, o.len)
            o.clear()
        o.clear()
        if self.req_done and not self.in_request:
            pass
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
        self.resp_started = True
        self.worker.stats.count_status(status)
        # The head arrived: the route timeout is over; the body may take as
        # long as it makes progress.
        self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)
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
        if rp.upgrade and status == 101:
            for i in range(rp.nheaders):
                hs = &rp.headers[i]
                if hs.flags & HF_UPGRADE:
                    o.add("connection: upgrade\r\nupgrade: ", 30)
                    o.add(base + hs.value_off, hs.value_len)
                    o.add("\r\n", 2)
                    break
        elif self.close_after:
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
        w.stats.downstream_rq_active -= 1
        self.route = None
        self.cluster = None
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

    # --- HTTP/2 upstream (core_h2.pxi) ------------------------------------------

    cdef void build_h2_request(self, const char* base, const char* target,
                               Py_ssize_t target_len, const char* host,
                               Py_ssize_t host_len, bint absolute, Endpoint ep):
        # The HTTP/1.1 request as an HTTP/2 header list: Host becomes
        # :authority; hop-by-hop fields, Expect and the framing headers go
        # (content-length stays when the length is known; TE only as trailers).
        cdef Http1Parser p = self.parser
        cdef HeaderList hl = HeaderList()
        cdef HeaderList rest
        cdef int i, f
        cdef HeaderSlice* hs
        cdef bytes auth
        hl.add(":method", 7, base + p.method_off, p.method_len, 0)
        hl.add(":scheme", 7, "http", 4, 0)
        if host_len:
            hl.add(":authority", 10, host, host_len, 0)
        else:
            auth = f"{ep.host}:{ep.port}".encode()
            hl.add(":authority", 10, auth, len(auth), 0)
        hl.add(":path", 5, target, target_len, 0)
        rest = build_h2_request(base, p.headers, p.nheaders, self.client_ip, self.conf, False)
        for i in range(rest.n):
            hs = &rest.hs[i]
            f = hs.flags
            if f & HF_EXPECT or f & HF_CONTENT_LENGTH:
                continue
            hl.add(rest.base() + hs.name_off, hs.name_len, rest.base() + hs.value_off,
                   hs.value_len, f)
        if p.body == BODY_LENGTH:
            hl.add_uint("content-length", 14, p.content_length)
        self.up_hdrs = hl
        if self.up_pending is None:
            self.up_pending = OutBuf(4096)
        self.up_pending.len = 0
        self.up_end = p.body == BODY_NONE

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
                if self.up2 is not None:
                    self.up2.pump_later(self)
                if self.up_pending.len >= H2_STREAM_BUFFER:
                    # up_body_sent() resumes once the upstream took half of it
                    self.pause_read(PAUSE_PEER)
                    more = False
                    break
            data = b.data + b.start
            r = p.parse_body(data, b.end - b.start, &off, &seg)
            if r < 0:
                self.pumping = False
                self.worker.stats.downstream_cx_protocol_error += 1
                self.close_after = True
                self.cancel_upstream()
                if self.resp_started:
                    self.abort()
                else:
                    self.local_reply(p.error_status, (p.error_reason or "bad request").encode() + b"\n")
                return False
            if seg > 0:
                self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)
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
        if self.up2 is not None:
            self.up2.pump_later(self)
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
        self.resp_started = True
        self.worker.stats.count_status(status)
        self.set_deadline(DL_RESPONSE, self.conf.stream_idle_timeout)
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

    cdef void consume_head_reply(self, Py_ssize_t r, int status, bytes body):
        # Reply without an upstream. A request body we did not read would be
        # taken for the next request: close instead of skipping it.
        self.rbuf.start += r
        if self.parser.body != BODY_NONE:
            self.close_after = True
        else:
            self.req_done = True
        self.local_reply(status, body)

    cdef void local_reply(self, int status, bytes body):
        cdef OutBuf o = self.out
        cdef bytes reason = REASONS.get(status, b"Unknown")
        if self.closed:
            return
        self.resp_started = True
        self.worker.stats.count_status(status)
        o.add("HTTP/1.1 ", 9)
        o.add_uint(status)
        o.add(" ", 1)
        o.add_bytes(reason)
        o.add("\r\ncontent-length: ", 18)
        o.add_uint(len(body))
        if body:
            o.add("\r\ncontent-type: text/plain", 26)
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
        if self.up is not None:
            self.up.pause_read(PAUSE_PEER)

    def resume_writing(self):
        self.write_blocked = False
        if self.up is not None:
            self.up.resume_read(PAUSE_PEER)
        if self.up2 is not None:
            self.up2.ack(self)
        self.resume_read(PAUSE_WRITE)
        if not self.closed and not self.in_request:
            self.process()
            self.flush()

    # --- upgrade tunnels ------------------------------------------------------

    cdef void start_tunnel(self):
        self.worker.stats.downstream_cx_upgrades_total += 1
        self.flush()
        self.state = DS_TUNNEL
        self.up.tunnel = True
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
        if self.state == DS_TUNNEL and self.up is not None and self.up.transport is not None:
            self.tunnel_eof_in = True
            if self.up.transport.can_write_eof():
                self.up.transport.write_eof()
            if self.tunnel_eof_out:
                # Both directions have ended: close the pair (our
                # connection_lost closes the upstream side).
                self.close()
                return False
            return True
        if self.in_request and not self.req_done and self.req_body == BODY_NONE:
            pass
        if self.in_request and self.req_done:
            # The client half-closed after its request: still answer it.
            self.close_after = True
            return True
        return False

    # --- timers, drain, teardown -----------------------------------------------

    cdef void on_deadline(self, int kind):
        cdef Worker w = self.worker
        if kind == DL_HEADERS:
            w.stats.downstream_rq_header_timeout += 1
            self.req_method = self.parser.method
            self.in_request = True
            w.stats.downstream_rq_total += 1
            w.stats.downstream_rq_active += 1
            self.close_after = True
            self.local_reply(408, b"request header timeout\n")
        elif kind == DL_IDLE:
            w.stats.downstream_cx_idle_timeout += 1
            if self.in_request and self.state != DS_TUNNEL:
                return
            self.close()
        elif kind == DL_RESPONSE:
            if self.cluster is not None:
                self.cluster.st.upstream_rq_timeout += 1
            self.cancel_upstream()
            if self.resp_started:
                self.abort()
            else:
                self.close_after = True
                self.local_reply(504, b"upstream request timeout\n")

    cdef ListenerState listener_of(self):
        return self.lst

    cdef void on_drain(self):
        self.close_after = True
        if not self.in_request:
            self.worker.stats.downstream_cx_drain_close += 1
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
        cdef UpstreamHttp up = self.up
        self.closed = True
        self.transport = None
        w.stats.downstream_cx_active -= 1
        if self.in_request:
            self.in_request = False
            w.stats.downstream_rq_active -= 1
            w.stats.downstream_rq_rx_reset += 1
        self.unlink()
        if self.up2 is not None:
            self.up2.cancel(self)
        if up is not None:
            if up.tunnel:
                up.down = None
                self.up = None
                up.close()
            else:
                up.detach_and_abort()
        if self.rbuf is not None:
            self.rbuf.start = self.rbuf.end = 0
            w.bufpool.release(self.rbuf)
            self.rbuf = None
