# core_listener.pxd: declarations of core_listener.pxi (see _core.pxd)

cdef class ListenerConf:
    cdef readonly str name
    cdef readonly str protocol          # "http" | "tcp"
    cdef readonly bint is_http
    cdef readonly Router router         # http
    cdef readonly tuple filters         # http: the filter chain, the router last
    cdef readonly int hooks             # http: union of the filters' hooks
    cdef readonly str cluster           # tcp: the cluster's name
    cdef readonly double idle_timeout
    cdef readonly double headers_timeout
    cdef readonly double stream_idle_timeout
    cdef readonly Py_ssize_t buffer_limit
    cdef readonly Py_ssize_t max_head_bytes
    cdef readonly int max_headers
    cdef readonly bint xff_append
    cdef readonly bint gen_request_id
    cdef readonly int h2_max_concurrent_streams     # HTTP/2 clients (core_h2_downstream.pxi)
    cdef readonly int h2_initial_stream_window
    cdef readonly int h2_initial_connection_window
    cdef readonly Py_ssize_t max_connections    # 0: no limit (core_overload.pxi)
    cdef readonly double first_byte_timeout     # http: silent from accept, then closed (0: off)
    cdef readonly TlsServerConf tls             # None: plaintext (core_tls.pxi)
    cdef readonly bint trust_retry_headers      # http: honour x-envoy-retry-on & co. (core_retry.pxi)
    cdef readonly double max_stream_duration    # http: per request, from its start (0: none)
    cdef readonly object network_rbac           # tcp: a NetworkRbac (filter_rbac.pxi) or None
    cdef readonly str address
    cdef readonly int port
    cdef readonly bint bind_to_port             # False: only reached by a use_original_dst hand-off
    cdef readonly bint use_original_dst         # read SO_ORIGINAL_DST, hand off (core_detect.pxi)
    cdef readonly bint detect                   # protocol auto: the first bytes decide
    cdef readonly double detect_timeout         # protocol_detection_timeout: then TCP
    cdef readonly bint inspect                  # use_original_dst or detect: ListenerInspector
    cdef readonly TracingConf tracing           # http: None = no tracing (filter_tracing.pxi)

cdef class Snapshot:
    cdef readonly dict listeners        # name -> ListenerConf
    cdef readonly dict clusters         # name -> ClusterConf
    cdef readonly long version
    cdef readonly double drain_timeout
    cdef readonly dict virtual          # (address, port) -> name: bind_to_port False listeners

cdef class ListenerState:
    cdef readonly str name
    cdef readonly ListenerConf conf
    cdef readonly Worker worker
    cdef readonly StatsBlock stats
    cdef int64_t* st                    # stats.v: LISTENER_STATS slots
    cdef Histogram rq_time              # downstream_rq_time
