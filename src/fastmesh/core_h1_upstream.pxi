# core_h1_upstream.pxi: UpstreamHttp, one HTTP/1.1 connection to an
# endpoint. It writes the request an UpstreamRequest hands it, parses the
# response with the codec and passes it back to the stream (ProxyStream's
# cdef interface), whatever protocol the client speaks.

@cython.final
cdef class UpstreamHttp(UpstreamBase):
    """One HTTP/1.1 connection to an endpoint, in its cluster's pool between
    requests. Serves one UpstreamRequest at a time."""

    cdef void begin(self, UpstreamRequest ur):
        self.ur = ur
        self.head_done = False
        self.got_bytes = False
        self.requests += 1
        if self.parser is None:
            self.parser = Http1Parser(False, 65536, 256)
        else:
            self.parser.reset()
        self.parser.expect_response_to(ur.down.req_method)
        self.set_deadline(DL_NONE, 0)

    def connection_made(self, transport):
        self.set_transport(transport)
        self.connected = True
        self.cx_made()
        transport.set_write_buffer_limits(self.cluster.conf.buffer_limit)
        self.set_deadline(DL_NONE, 0)
        if self.closed or self.ur is None:
            self.closed = True
            transport.close()
            return
        self.ur.down.upstream_ready(self.ur)

    cdef void connect_failed(self, bint timeout):
        cdef ProxyStream d
        cdef UpstreamRequest ur = self.ur
        if ur is None:
            return
        d = ur.down
        ur.outcome = OUT_TIMEOUT if timeout else OUT_CONNECT_FAILED
        self.detach()
        if not timeout and retry_allowed(d, ur, FAILED_CONNECT):
            # Nothing was sent: the request goes to another endpoint, on a
            # pooled connection if it has one (a fresh one for every retry
            # grew that pool by one connection per retry: the fault
            # scenarios' leak check).
            d.retry(ur, False, True)
            return
        if timeout:
            d.upstream_failed(504, b"upstream connect timeout\n")
        else:
            d.upstream_failed(502, b"upstream connect error or disconnect/reset before headers\n")

    cdef void detach(self):
        # End this connection's part in the current attempt.
        cdef UpstreamRequest ur = self.ur
        cdef ProxyStream d
        if ur is None:
            return
        self.ur = None
        ur.h1 = None
        ur.end()
        d = ur.down
        if d.ur is ur:
            d.ur = None
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
        cdef ProxyStream d
        if self.ur is None:
            # Bytes on an idle pooled connection: the upstream broke the
            # protocol (or is closing); it cannot be reused.
            self.abort()
            return
        d = self.ur.down
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
        cdef UpstreamRequest ur = self.ur
        cdef Py_ssize_t r, off = 0, seg = 0
        cdef const char* data
        cdef int status
        while not self.closed and self.ur is ur:
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
                ur.outcome = status
                if d.rpol is not None and retry_on_response(d, ur, status, data, p.headers,
                                                            p.nheaders):
                    # The route retries this answer: the connection goes (the
                    # rest of this response is not wanted), the request goes
                    # to another endpoint, pooled connection or new.
                    count_upstream_status(ur.cluster.st, status)
                    self.detach()
                    self.close()
                    d.retry(ur, False, True)
                    return
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
                    d.response_data(data + off, seg)
                    d.set_deadline(DL_STREAM_IDLE, d.idle_t)   # progress
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
        cdef ClusterConf cf = self.cluster.conf
        cdef bint reusable = (self.parser.keep_alive and d.req_done
                              and self.rbuf.end == self.rbuf.start
                              and not self.closed and not self.worker.draining
                              and not self.ep.removed
                              and (cf.max_requests_per_connection == 0
                                   or self.requests < cf.max_requests_per_connection))
        count_upstream_status(self.ur.cluster.st, self.parser.status)
        self.ur.response_complete()
        self.detach()
        if reusable:
            self.release_rbuf()
            self.set_deadline(DL_POOL_IDLE, cf.idle_timeout)
            self.ep.pool.put(self)
            if self.cluster.cb_waiting:
                cb_kick(self.cluster)         # an attempt waits for a connection
        else:
            self.close()
        d.response_complete()

    cdef void detach_and_abort(self):
        # The request this connection serves is abandoned: the connection's
        # state is unknown, so it cannot be reused.
        self.detach()
        self.abort()

    cdef void fail(self, int status, bytes body):
        cdef ProxyStream d = self.ur.down if self.ur is not None else None
        if d is not None:
            self.ur.outcome = OUT_RESET       # the upstream broke the protocol
        self.detach()
        self.abort()
        if d is not None:
            d.upstream_failed(status, body)

    def eof_received(self):
        cdef ProxyStream d
        if self.ur is None:
            return False
        d = self.ur.down
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
        if self.ur is not None:
            self.ur.down.peer_paused()

    def resume_writing(self):
        if self.ur is not None:
            self.ur.down.peer_resumed()

    def connection_lost(self, exc):
        cdef UpstreamRequest ur = self.ur
        cdef ProxyStream d
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
        if ur is None:
            return
        d = ur.down
        self.cluster.st[UPSTREAM_CX_DESTROY_WITH_ACTIVE_RQ] += 1
        if self.tunnel:
            self.detach()
            d.close()
        elif not self.head_done:
            # A pooled connection the upstream closed just as we reused it:
            # nothing was answered, and a bodiless request can safely go
            # again, on a fresh connection to the same endpoint.
            if (self.requests > 1 and not self.got_bytes and d.req_body == BODY_NONE
                    and ur.attempt == 1):
                self.detach()
                d.retry(ur, True, False)    # the connection was stale, not the endpoint
            elif retry_allowed(d, ur, FAILED_RESET):
                # Closed before a whole response head (retry_on reset, 5xx,
                # gateway-error): another endpoint.
                ur.outcome = OUT_RESET
                self.detach()
                d.retry(ur, False, True)
            else:
                ur.outcome = OUT_RESET
                self.detach()
                d.upstream_failed(502, b"upstream connect error or disconnect/reset before headers\n")
        else:
            # Mid-body: the client must not mistake a cut response for a whole one.
            ur.outcome = OUT_RESET
            self.detach()
            d.abort()

    cdef void on_deadline(self, int kind):
        if kind == DL_CONNECT:
            if self.connect_task is not None and not self.connected:
                self.connect_task.cancel()
        elif kind == DL_POOL_IDLE:
            self.close()
