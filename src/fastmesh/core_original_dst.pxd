# core_original_dst.pxd: declarations of core_original_dst.pxi (see _core.pxd)

cdef class OriginalDstConf:
    cdef readonly double cleanup_interval   # unused hosts go after this long
    cdef readonly bint use_http_header      # original_dst_lb_config.use_http_header
    cdef readonly bytes header              # lower-case name (x-envoy-original-dst-host)

cdef class OriginalDstState:
    cdef ClusterState c
    cdef OriginalDstConf conf
    cdef object timer
    cdef readonly int64_t hosts_added
    cdef readonly int64_t hosts_removed

    cdef void stop(self)

cdef object read_original_dst(object transport)
cdef int odst_index(ClusterState c, object dst)
cdef object odst_for_stream(ProxyStream s, OriginalDstConf conf)
