# core_h2_stream.pxd: declarations of core_h2_stream.pxi (see _core.pxd)

cdef class H2ServerStream(ProxyStream):
    cdef H2Downstream conn
    cdef uint32_t sid
    cdef bint grpc
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

    cdef void start(self, H2Downstream conn, uint32_t sid)
    cdef void on_request(self, const char* base, HeaderSlice* hs, int n, bint end)
    cdef void routed(self)
    cdef void arm_response_timer(self)
    cdef void upstream_ready(self, UpstreamRequest ur)
    cdef void on_req_data(self, const char* p, Py_ssize_t n)
    cdef void on_req_trailers(self, const char* base, HeaderSlice* hs, int n)
    cdef void pass_trailers(self, HeaderList t)
    cdef void on_req_end(self)
    cdef void ack(self, int64_t n)
    cdef void up_body_sent(self, Py_ssize_t n)
    cdef void peer_paused(self)
    cdef void peer_resumed(self)
    cdef void write_interim(self, Http1Parser rp, const char* base)
    cdef void write_interim_h2(self, int status, const char* base, HeaderSlice* hs, int n)
    cdef void interim(self, int status, const char* base, HeaderSlice* hs, int n, int skip)
    cdef void write_response_head(self, Http1Parser rp, const char* base)
    cdef void write_response_head_h2(self, int status, const char* base, HeaderSlice* hs,
                                     int n, bint end)
    cdef void add_body(self, const char* data, Py_ssize_t n)
    cdef void end_body(self, const char* data, Http1Parser rp)
    cdef void end_body_h2(self, const char* base, HeaderSlice* hs, int n)
    cdef void pump(self)
    cdef void throttle(self)
    cdef void check_unblock(self)
    cdef bint can_take(self)
    cdef void response_complete(self)
    cdef void maybe_finish(self)
    cdef void finish(self)
    cdef void upstream_failed(self, int status, bytes body)
    cdef void local_reply(self, int status, bytes body)
    cdef void grpc_reply(self, int code, bytes message)
    cdef void stream_error(self, uint32_t code)
    cdef void abort(self)
    cdef void close(self)
    cdef void flush(self)
    cdef void on_reset(self)
    cdef void on_deadline(self, int kind)
