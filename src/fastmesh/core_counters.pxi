# core_counters.pxi: what the data plane counts, as blocks of the worker's
# StatsRegistry (_stats.pyx, docs/stats.md). Three blocks:
#
#   prefix ""          the worker: batching sleeps, buffers
#   prefix "listener"  labels {listener: name}: downstream connections and
#                      requests (owner: ListenerState), histogram downstream_rq_time
#   prefix "cluster"   labels {cluster: name}: upstream requests and
#                      connections (owner: ClusterState), histogram upstream_rq_time
#
# The owner keeps the block and its slot array `st`; the hot path writes
# `lst.st[DOWNSTREAM_RQ_TOTAL] += 1`: a C array index, no lookup. Each enum
# member is its stat's name in upper case, in the order of the table below it
# (tests/test_stats_wiring.py checks both against each other; a cluster slot
# named like a listener slot is suffixed _UP in its enum). Names are Envoy's
# where Envoy has one (dotted as Envoy's: ssl.handshake is SSL_HANDSHAKE).

cdef enum:  # WORKER_STATS
    LOOP_BATCH_SLEEPS
    BUFFERS_ALLOCATED
    BUFFERS_REUSED
    OVERLOAD_STOP_ACCEPTING
    WORKER_NSTATS

WORKER_STATS = (
    ("loop_batch_sleeps", "counter"),     # set_batch_window: sleeps taken
    ("buffers_allocated", "counter"),     # read buffers made (copied from the pool)
    ("buffers_reused", "counter"),        # ... and taken again from it
    ("overload_stop_accepting", "gauge"), # 1 while the listeners do not accept (core_overload.pxi)
)

cdef enum:  # LISTENER_STATS
    DOWNSTREAM_CX_TOTAL
    DOWNSTREAM_CX_ACTIVE
    DOWNSTREAM_CX_HTTP
    DOWNSTREAM_CX_TCP
    DOWNSTREAM_RQ_TOTAL
    DOWNSTREAM_RQ_ACTIVE
    DOWNSTREAM_RQ_1XX                     # 1xx..5xx consecutive: count_downstream_status
    DOWNSTREAM_RQ_2XX
    DOWNSTREAM_RQ_3XX
    DOWNSTREAM_RQ_4XX
    DOWNSTREAM_RQ_5XX
    DOWNSTREAM_RQ_RX_RESET
    DOWNSTREAM_CX_PROTOCOL_ERROR
    DOWNSTREAM_CX_IDLE_TIMEOUT
    DOWNSTREAM_RQ_HEADER_TIMEOUT
    DOWNSTREAM_CX_UPGRADES_TOTAL
    DOWNSTREAM_CX_DRAIN_CLOSE
    DOWNSTREAM_CX_OVERFLOW
    DOWNSTREAM_GLOBAL_CX_OVERFLOW
    DOWNSTREAM_CX_OVERLOAD_REJECT
    DOWNSTREAM_CX_OVERLOAD_IDLE_CLOSE
    DOWNSTREAM_CX_FIRST_BYTE_TIMEOUT
    SSL_HANDSHAKE                         # ssl.*: TLS listeners (core_tls.pxi); the
    SSL_CONNECTION_ERROR                  # four failure reasons are consecutive, in
    SSL_FAIL_VERIFY_NO_CERT               # security.peer's FAIL_* order
    SSL_FAIL_VERIFY_ERROR
    SSL_FAIL_VERIFY_SAN
    SSL_SESSION_REUSED
    RETRY_OR_SHADOW_ABANDONED             # core_retry.pxi
    DOWNSTREAM_RQ_IDLE_TIMEOUT
    DOWNSTREAM_RQ_MAX_DURATION_REACHED
    LISTENER_NSTATS

LISTENER_STATS = (
    ("downstream_cx_total", "counter"),
    ("downstream_cx_active", "gauge"),
    ("downstream_cx_http", "counter"),
    ("downstream_cx_tcp", "counter"),
    ("downstream_rq_total", "counter"),
    ("downstream_rq_active", "gauge"),
    ("downstream_rq_1xx", "counter"),
    ("downstream_rq_2xx", "counter"),
    ("downstream_rq_3xx", "counter"),
    ("downstream_rq_4xx", "counter"),
    ("downstream_rq_5xx", "counter"),
    ("downstream_rq_rx_reset", "counter"),
    ("downstream_cx_protocol_error", "counter"),
    ("downstream_cx_idle_timeout", "counter"),
    ("downstream_rq_header_timeout", "counter"),
    ("downstream_cx_upgrades_total", "counter"),
    ("downstream_cx_drain_close", "counter"),
    ("downstream_cx_overflow", "counter"),         # listener max_connections (core_overload.pxi)
    ("downstream_global_cx_overflow", "counter"),  # overload_manager global_downstream_max_connections
    ("downstream_cx_overload_reject", "counter"),  # refused near the descriptor limit
    ("downstream_cx_overload_idle_close", "counter"),  # idle ones closed near it (fastmesh's)
    ("downstream_cx_first_byte_timeout", "counter"),   # silent from accept (fastmesh's)
    ("ssl.handshake", "counter"),         # handshakes completed
    ("ssl.connection_error", "counter"),  # ssl.connection_error: failed, other reasons
    ("ssl.fail_verify_no_cert", "counter"),   # no client certificate, one required
    ("ssl.fail_verify_error", "counter"),     # certificate not trusted (expired, unknown CA...)
    ("ssl.fail_verify_san", "counter"),       # trusted, but no SAN matcher matched
    ("ssl.session_reused", "counter"),        # resumed handshakes (tickets)
    ("retry_or_shadow_abandoned", "counter"),  # a request body outgrew its replay buffer
    ("downstream_rq_idle_timeout", "counter"),         # stream idle timeout (core_timeouts.pxi)
    ("downstream_rq_max_duration_reached", "counter"), # max_stream_duration / grpc-timeout
)

# The outlier_detection.* slots (cluster_outlier.pxi): ENFORCED_* and
# DETECTED_* follow the order of the OD_* ejection types (slot = first + type).
cdef enum:  # CLUSTER_STATS
    UPSTREAM_RQ_TOTAL
    UPSTREAM_RQ_ACTIVE
    UPSTREAM_RQ_2XX                       # 2xx..5xx consecutive: count_upstream_status
    UPSTREAM_RQ_3XX
    UPSTREAM_RQ_4XX
    UPSTREAM_RQ_5XX
    UPSTREAM_RQ_TIMEOUT
    UPSTREAM_RQ_RETRY
    UPSTREAM_CX_TOTAL
    UPSTREAM_CX_ACTIVE
    UPSTREAM_CX_CONNECT_FAIL
    UPSTREAM_CX_CONNECT_TIMEOUT
    UPSTREAM_CX_DESTROY_WITH_ACTIVE_RQ
    UPSTREAM_CX_REUSED
    UPSTREAM_CX_NONE_HEALTHY
    LB_HEALTHY_PANIC
    SSL_HANDSHAKE_UP                      # cluster ssl.*: TLS origination (core_tls.pxi),
    SSL_CONNECTION_ERROR_UP               # same order as the listener's
    SSL_FAIL_VERIFY_NO_CERT_UP
    SSL_FAIL_VERIFY_ERROR_UP
    SSL_FAIL_VERIFY_SAN_UP
    SSL_SESSION_REUSED_UP
    UPSTREAM_RQ_RETRY_SUCCESS             # retries (core_retry.pxi)
    UPSTREAM_RQ_RETRY_LIMIT_EXCEEDED
    UPSTREAM_RQ_RETRY_BACKOFF_EXPONENTIAL
    UPSTREAM_RQ_RETRY_BACKOFF_RATELIMITED
    UPSTREAM_RQ_PER_TRY_TIMEOUT
    UPSTREAM_RQ_PENDING_TOTAL             # circuit breakers (cluster_breaker.pxi) from here
    UPSTREAM_RQ_PENDING_ACTIVE
    UPSTREAM_RQ_PENDING_OVERFLOW
    UPSTREAM_CX_OVERFLOW
    UPSTREAM_CX_POOL_OVERFLOW
    UPSTREAM_RQ_RETRY_OVERFLOW
    CIRCUIT_BREAKERS_DEFAULT_CX_OPEN
    CIRCUIT_BREAKERS_DEFAULT_RQ_PENDING_OPEN
    CIRCUIT_BREAKERS_DEFAULT_RQ_OPEN
    CIRCUIT_BREAKERS_DEFAULT_RQ_RETRY_OPEN
    CIRCUIT_BREAKERS_DEFAULT_CX_POOL_OPEN
    CIRCUIT_BREAKERS_DEFAULT_REMAINING_CX
    CIRCUIT_BREAKERS_DEFAULT_REMAINING_PENDING
    CIRCUIT_BREAKERS_DEFAULT_REMAINING_RQ
    CIRCUIT_BREAKERS_DEFAULT_REMAINING_RETRIES
    CIRCUIT_BREAKERS_DEFAULT_REMAINING_CX_POOLS
    CIRCUIT_BREAKERS_HIGH_CX_OPEN
    CIRCUIT_BREAKERS_HIGH_RQ_PENDING_OPEN
    CIRCUIT_BREAKERS_HIGH_RQ_OPEN
    CIRCUIT_BREAKERS_HIGH_RQ_RETRY_OPEN
    CIRCUIT_BREAKERS_HIGH_CX_POOL_OPEN
    CIRCUIT_BREAKERS_HIGH_REMAINING_CX
    CIRCUIT_BREAKERS_HIGH_REMAINING_PENDING
    CIRCUIT_BREAKERS_HIGH_REMAINING_RQ
    CIRCUIT_BREAKERS_HIGH_REMAINING_RETRIES
    CIRCUIT_BREAKERS_HIGH_REMAINING_CX_POOLS
    OUTLIER_DETECTION_EJECTIONS_ENFORCED_TOTAL
    OUTLIER_DETECTION_EJECTIONS_ACTIVE
    OUTLIER_DETECTION_EJECTIONS_OVERFLOW
    OUTLIER_DETECTION_EJECTIONS_TOTAL
    OUTLIER_DETECTION_EJECTIONS_ENFORCED_CONSECUTIVE_5XX
    OUTLIER_DETECTION_EJECTIONS_ENFORCED_CONSECUTIVE_GATEWAY_FAILURE
    OUTLIER_DETECTION_EJECTIONS_ENFORCED_CONSECUTIVE_LOCAL_ORIGIN_FAILURE
    OUTLIER_DETECTION_EJECTIONS_ENFORCED_SUCCESS_RATE
    OUTLIER_DETECTION_EJECTIONS_ENFORCED_LOCAL_ORIGIN_SUCCESS_RATE
    OUTLIER_DETECTION_EJECTIONS_ENFORCED_FAILURE_PERCENTAGE
    OUTLIER_DETECTION_EJECTIONS_ENFORCED_LOCAL_ORIGIN_FAILURE_PERCENTAGE
    OUTLIER_DETECTION_EJECTIONS_DETECTED_CONSECUTIVE_5XX
    OUTLIER_DETECTION_EJECTIONS_DETECTED_CONSECUTIVE_GATEWAY_FAILURE
    OUTLIER_DETECTION_EJECTIONS_DETECTED_CONSECUTIVE_LOCAL_ORIGIN_FAILURE
    OUTLIER_DETECTION_EJECTIONS_DETECTED_SUCCESS_RATE
    OUTLIER_DETECTION_EJECTIONS_DETECTED_LOCAL_ORIGIN_SUCCESS_RATE
    OUTLIER_DETECTION_EJECTIONS_DETECTED_FAILURE_PERCENTAGE
    OUTLIER_DETECTION_EJECTIONS_DETECTED_LOCAL_ORIGIN_FAILURE_PERCENTAGE
    CLUSTER_NSTATS

CLUSTER_STATS = (
    ("upstream_rq_total", "counter"),
    ("upstream_rq_active", "gauge"),
    ("upstream_rq_2xx", "counter"),
    ("upstream_rq_3xx", "counter"),
    ("upstream_rq_4xx", "counter"),
    ("upstream_rq_5xx", "counter"),
    ("upstream_rq_timeout", "counter"),
    ("upstream_rq_retry", "counter"),
    ("upstream_cx_total", "counter"),
    ("upstream_cx_active", "gauge"),
    ("upstream_cx_connect_fail", "counter"),
    ("upstream_cx_connect_timeout", "counter"),
    ("upstream_cx_destroy_with_active_rq", "counter"),
    ("upstream_cx_reused", "counter"),
    ("upstream_cx_none_healthy", "counter"),
    ("lb_healthy_panic", "counter"),      # picks made in panic (healthy share < threshold)
    ("ssl.handshake", "counter"),
    ("ssl.connection_error", "counter"),
    ("ssl.fail_verify_no_cert", "counter"),
    ("ssl.fail_verify_error", "counter"),
    ("ssl.fail_verify_san", "counter"),
    ("ssl.session_reused", "counter"),
    ("upstream_rq_retry_success", "counter"),
    ("upstream_rq_retry_limit_exceeded", "counter"),
    ("upstream_rq_retry_backoff_exponential", "counter"),
    ("upstream_rq_retry_backoff_ratelimited", "counter"),   # delayed by grpc-retry-pushback-ms
    ("upstream_rq_per_try_timeout", "counter"),
    # circuit breakers (cluster_breaker.pxi); the circuit_breakers.* gauges
    # are written when the stats are read (cb_refresh), remaining_* shown
    # only with track_remaining
    ("upstream_rq_pending_total", "counter"),     # requests that waited for a connection
    ("upstream_rq_pending_active", "gauge"),      # ... waiting now
    ("upstream_rq_pending_overflow", "counter"),  # refused: max_pending_requests or max_requests
    ("upstream_cx_overflow", "counter"),          # max_connections reached (the request waits)
    ("upstream_cx_pool_overflow", "counter"),     # refused: max_connection_pools
    ("upstream_rq_retry_overflow", "counter"),    # retries refused: max_retries / retry_budget
    ("circuit_breakers.default.cx_open", "gauge"),
    ("circuit_breakers.default.rq_pending_open", "gauge"),
    ("circuit_breakers.default.rq_open", "gauge"),
    ("circuit_breakers.default.rq_retry_open", "gauge"),
    ("circuit_breakers.default.cx_pool_open", "gauge"),
    ("circuit_breakers.default.remaining_cx", "gauge"),
    ("circuit_breakers.default.remaining_pending", "gauge"),
    ("circuit_breakers.default.remaining_rq", "gauge"),
    ("circuit_breakers.default.remaining_retries", "gauge"),
    ("circuit_breakers.default.remaining_cx_pools", "gauge"),
    ("circuit_breakers.high.cx_open", "gauge"),
    ("circuit_breakers.high.rq_pending_open", "gauge"),
    ("circuit_breakers.high.rq_open", "gauge"),
    ("circuit_breakers.high.rq_retry_open", "gauge"),
    ("circuit_breakers.high.cx_pool_open", "gauge"),
    ("circuit_breakers.high.remaining_cx", "gauge"),
    ("circuit_breakers.high.remaining_pending", "gauge"),
    ("circuit_breakers.high.remaining_rq", "gauge"),
    ("circuit_breakers.high.remaining_retries", "gauge"),
    ("circuit_breakers.high.remaining_cx_pools", "gauge"),
    # Envoy's cluster.<name>.outlier_detection.* (cluster_outlier.pxi)
    ("outlier_detection.ejections_enforced_total", "counter"),
    ("outlier_detection.ejections_active", "gauge"),
    ("outlier_detection.ejections_overflow", "counter"),   # not ejected: max_ejection_percent
    ("outlier_detection.ejections_total", "counter"),      # detected, enforced or not
    ("outlier_detection.ejections_enforced_consecutive_5xx", "counter"),
    ("outlier_detection.ejections_enforced_consecutive_gateway_failure", "counter"),
    ("outlier_detection.ejections_enforced_consecutive_local_origin_failure", "counter"),
    ("outlier_detection.ejections_enforced_success_rate", "counter"),
    ("outlier_detection.ejections_enforced_local_origin_success_rate", "counter"),
    ("outlier_detection.ejections_enforced_failure_percentage", "counter"),
    ("outlier_detection.ejections_enforced_local_origin_failure_percentage", "counter"),
    ("outlier_detection.ejections_detected_consecutive_5xx", "counter"),
    ("outlier_detection.ejections_detected_consecutive_gateway_failure", "counter"),
    ("outlier_detection.ejections_detected_consecutive_local_origin_failure", "counter"),
    ("outlier_detection.ejections_detected_success_rate", "counter"),
    ("outlier_detection.ejections_detected_local_origin_success_rate", "counter"),
    ("outlier_detection.ejections_detected_failure_percentage", "counter"),
    ("outlier_detection.ejections_detected_local_origin_failure_percentage", "counter"),
)

# Latency histograms (seconds in the registry; Envoy's /stats shows ms).
LISTENER_RQ_TIME = "downstream_rq_time"   # request head in -> response handed to the socket
CLUSTER_RQ_TIME = "upstream_rq_time"      # attempt start -> upstream response complete
CLUSTER_CX_CONNECT_TIME = "upstream_cx_connect_time"   # connect started -> connected (TLS included)


def _columns(tuple table, Py_ssize_t n):
    if len(table) != n:
        raise ImportError(f"fastmesh._core: {len(table)} stat names for {n} slots")
    return tuple([name for name, _ in table]), tuple([kind for _, kind in table])

WORKER_NAMES, WORKER_KINDS = _columns(WORKER_STATS, WORKER_NSTATS)
LISTENER_NAMES, LISTENER_KINDS = _columns(LISTENER_STATS, LISTENER_NSTATS)
CLUSTER_NAMES, CLUSTER_KINDS = _columns(CLUSTER_STATS, CLUSTER_NSTATS)


cdef inline void count_downstream_status(int64_t* st, int status) noexcept:
    # The response's class; as before the registry, below 200 is 1xx and
    # anything from 500 up is 5xx.
    cdef int c = status // 100
    if c < 1:
        c = 1
    elif c > 5:
        c = 5
    st[DOWNSTREAM_RQ_1XX + c - 1] += 1


cdef inline void count_upstream_status(int64_t* st, int status) noexcept:
    # Envoy's cluster classes start at 2xx: a final 1xx (101) counts there.
    cdef int c = status // 100
    if c < 2:
        c = 2
    elif c > 5:
        c = 5
    st[UPSTREAM_RQ_2XX + c - 2] += 1
