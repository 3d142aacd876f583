# core_stream.pxd: declarations of core_stream.pxi (see _core.pxd)

cdef class ProxyStream(Conn):
    cdef ListenerState lst       # counts in its stats
    cdef ListenerConf conf
    cdef double rq_start         # the request head arrived (downstream_rq_time)
    cdef double rs_end           # the upstream response ended (0: not yet); one clock
                                 # read serves both latency histograms
    cdef Route route
    cdef bint route_done         # route matched (maybe None): matched_route() caches it
    cdef double idle_t           # the stream idle timeout in force (core_timeouts.pxi)
    cdef StreamTimer dur_timer   # max_stream_duration deadline, None when none (kept
                                 # across a keep-alive connection's requests)
    cdef bint dur_armed          # dur_timer belongs to the current request
    cdef FaultTimer fault_timer  # a fault filter's delay in progress (filter_fault.pxi)
    cdef int reply_grpc          # gRPC status of a local reply (0: from the HTTP status)
    cdef ClusterState cluster
    cdef UpstreamRequest ur      # the current attempt (None between attempts)
    cdef int attempts
    cdef ClusterState cb_retry_in # holds a retry slot of this cluster (cluster_breaker.pxi)
    cdef int cb_retry_prio
    cdef uint64_t pick_hash      # the router's hash key and endpoint choice
    cdef int pick_idx
    cdef object up_dst           # ORIGINAL_DST cluster: (ip, port) this request goes to
    # the neutral request view, valid while the head is handled (and after a
    # filter paused: then it points into frozen copies)
    cdef const char* rq_base
    cdef HeaderSlice* rq_hs
    cdef int rq_n
    cdef const char* rq_method
    cdef Py_ssize_t rq_method_len
    cdef const char* rq_path     # the query (rq_query_len bytes, from '?') follows
    cdef Py_ssize_t rq_path_len
    cdef Py_ssize_t rq_query_len
    cdef const char* rq_host     # Host / :authority / absolute-form authority
    cdef Py_ssize_t rq_host_len
    cdef const char* rq_upgrade  # HTTP/1.1 Upgrade value (0 length: none)
    cdef Py_ssize_t rq_upgrade_len
    cdef bint rq_absolute
    cdef bint from_h2
    cdef bint expect_continue    # we answer 100-continue ourselves; Expect is dropped
    cdef HeaderList rq_frozen    # owns the view's bytes while paused
    cdef bytes rq_frozen_line
    # filter state
    cdef HeaderList rq_add       # request fields filters added
    cdef list rq_remove          # lower-case names filters removed
    cdef HeaderList rs_add       # response fields filters added
    cdef Request view            # the Python filters' view, made on first use
    cdef int filter_next         # where a paused chain goes on
    cdef int chain_pos           # filters that saw the request head (they see the response)
    cdef bint paused
    cdef bint resumed            # the chain went on after a pause (not in the codec's callback)
    cdef bint replied            # a filter or the router answered locally
    cdef int resp_status
    # the request
    cdef int req_method
    cdef int req_body            # BODY_* (BODY_NONE: bodiless, safe to retry)
    cdef uint64_t req_cl         # BODY_LENGTH: the length
    cdef bint req_done           # the request, body included, was fully received
    cdef bint resp_started       # response head written to the client
    cdef bytes client_ip
    cdef bytes scheme            # x-forwarded-proto toward the upstream
    cdef object peer             # TLS: the verified peer (security.peer.PeerIdentity) or None
    cdef int xfcc_mode           # XFCC_*: what to do with x-forwarded-client-cert (core_tls.pxi)
    cdef bytes xfcc              # XFCC_SET / XFCC_APPEND: our element, made once per connection
    cdef OutBuf headbuf          # scratch for HTTP/1.1 request heads
    cdef bytes req_head          # HTTP/1.1 upstream: the request head (kept for a retry)
    # HTTP/2 upstream: the request header list, request body bytes its flow
    # control has not taken yet (bounded by the client's window or by pausing
    # an HTTP/1.1 client)
    cdef HeaderList up_hdrs
    cdef OutBuf up_pending
    cdef bint up_end             # END_STREAM goes after up_pending
    cdef HeaderList up_trl       # ... with these trailers (when not None)
    # retries (core_retry.pxi): all None/0 for a route without a policy
    cdef RetryPolicy rpol        # this request's policy (the route's, or with trusted headers)
    cdef RetryTimer rtimer       # per-try timeout, back-off between attempts (made on first use)
    cdef OutBuf replay           # the request body as forwarded, kept for a retry (None:
                                 # no policy, no body, or over replay_limit)
    cdef Py_ssize_t replay_limit
    cdef bint replay_h1          # the next HTTP/1.1 attempt sends `replay` after its head
    cdef bint retry_wait         # between attempts (back-off armed)
    cdef bint retry_backoff      # retry_allowed() said yes: the next retry() backs off
    cdef int backoff_n           # back-offs so far (Envoy's exponent)
    cdef int64_t pushback_ms     # grpc-retry-pushback-ms of the retried response (-1: none)
    cdef bint attempt_hdr        # x-envoy-attempt-count goes upstream (include_request_attempt_count)
    cdef bytes gen_rid           # ... and the x-request-id we made, for every attempt's head
    # tracing (filter_tracing.pxi): a sampled request's server span, else None
    cdef TraceSpan trace
    cdef int trace_st            # TR_*: what an unsampled request sends upstream

    cdef void reset_request(self)
    cdef int run_request(self, int start) except -1
    cdef void resume_filters(self)
    cdef void routed(self)
    cdef void start_attempt(self, bint fresh)
    cdef void retry(self, UpstreamRequest failed, bint fresh, bint elsewhere)
    cdef void launch_attempt(self, bint fresh)
    cdef bint upstream_is_h2(self)
    cdef void freeze_head(self)
    cdef Route matched_route(self)
    cdef object filter_config(self, HttpFilter f)
    cdef uint64_t header_hash(self, bytes name)
    cdef const char* rq_header(self, const char* name, Py_ssize_t n, Py_ssize_t* vlen)
    cdef Request request_view(self)
    cdef void filter_reply(self, int status, bytes body)
    cdef void filter_error(self, HttpFilter f, object exc)
    cdef void response_filters(self, int status)
    cdef int request_data(self, const char* p, Py_ssize_t n) except -1
    cdef void response_data(self, const char* p, Py_ssize_t n)
    cdef void body_stopped(self)
    cdef void request_over(self)
    cdef void cancel_upstream(self)
    cdef void timeout_upstream(self)
    cdef void upstream_ready(self, UpstreamRequest ur)
    cdef void write_interim(self, Http1Parser rp, const char* base)
    cdef void write_interim_h2(self, int status, const char* base, HeaderSlice* hs, int n)
    cdef void write_response_head(self, Http1Parser rp, const char* base)
    cdef void write_response_head_h2(self, int status, const char* base, HeaderSlice* hs,
                                     int n, bint end)
    cdef void add_body(self, const char* data, Py_ssize_t n)
    cdef void end_body(self, const char* data, Http1Parser rp)
    cdef void end_body_h2(self, const char* base, HeaderSlice* hs, int n)
    cdef void response_complete(self)
    cdef void upstream_failed(self, int status, bytes body)
    cdef void local_reply(self, int status, bytes body)
    cdef void start_tunnel(self)
    cdef void touch_tunnel(self)
    cdef void half_close_tunnel(self)
    cdef void flush(self)
    cdef void close(self)
    cdef void abort(self)
    cdef void peer_paused(self)
    cdef void peer_resumed(self)
    cdef bint can_take(self)
    cdef void up_body_sent(self, Py_ssize_t n)

cdef void release_timer(ProxyStream s, TimerEntry t) noexcept
cdef void release_stream_timers(ProxyStream s) noexcept
