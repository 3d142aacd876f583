# core_h1_downstream.pxd: declarations of core_h1_downstream.pxi (see _core.pxd)

cdef enum:  # HttpDownstream.alpn
    ALPN_NONE = 0       # plaintext, or TLS without ALPN: the first bytes decide
    ALPN_HTTP11 = 1     # TLS with "http/1.1": never HTTP/2
    ALPN_H2 = 2         # TLS with "h2": the HTTP/2 preface must come first

cdef class HttpDownstream(ProxyStream):
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
    cdef int alpn              # ALPN_*: what TLS negotiated (ALPN_NONE: plaintext or none)
    cdef bint pumping          # inside stream_body_h2 (no re-entry from up_body_sent)
    cdef int req_minor
    cdef bint req_keep_alive

    cdef void on_data(self)
    cdef void process(self)
    cdef void on_head(self, Py_ssize_t r)
    cdef void routed(self)
    cdef inline void arm_response_timer(self)
    cdef void upstream_ready(self, UpstreamRequest ur)
    cdef bint body_bytes_ok(self)
    cdef bint stream_body(self)
    cdef void write_interim(self, Http1Parser rp, const char* base)
    cdef void interim(self, int status, const char* reason, Py_ssize_t rlen,
                      const char* base, HeaderSlice* hs, int n)
    cdef void write_response_head(self, Http1Parser rp, const char* base)
    cdef void add_body(self, const char* data, Py_ssize_t n)
    cdef void end_body(self, const char* data, Http1Parser rp)
    cdef void response_complete(self)
    cdef void upstream_failed(self, int status, bytes body)
    cdef bint stream_body_h2(self)
    cdef void up_body_sent(self, Py_ssize_t n)
    cdef bint can_take(self)
    cdef void write_interim_h2(self, int status, const char* base, HeaderSlice* hs, int n)
    cdef void write_response_head_h2(self, int status, const char* base, HeaderSlice* hs,
                                     int n, bint end)
    cdef void end_body_h2(self, const char* base, HeaderSlice* hs, int n)
    cdef void local_reply(self, int status, bytes body)
    cdef void flush(self)
    cdef void start_tunnel(self)
    cdef void touch_tunnel(self)
    cdef void half_close_tunnel(self)
    cdef void on_deadline(self, int kind)
    cdef ListenerState listener_of(self)
    cdef void on_drain(self)
    cdef bint shed_idle(self)
    cdef void close(self)
    cdef void abort(self)
