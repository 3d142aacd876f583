# cython: language_level=3
"""Declarations of the data plane's compiled core (_core.pyx), one .pxd per
part as the .pxi parts are split (uvloop's loop.pxd does the same).

Other Cython modules cimport from here, e.g. a compiled HTTP filter::

    from fastmesh._core cimport HttpFilter, ProxyStream, FILTER_CONTINUE

(see docs/filters.md). Everything declared here is internal except the
filter API (core_filter.pxd) and the stream's request view (rq_* fields of
ProxyStream, core_stream.pxd), which filters may read.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t, uint32_t, int64_t
from libc.limits cimport INT_MAX
from libc.string cimport memcpy, memcmp, memchr

from fastmesh._buffers cimport ReadBuffer, BufferPool, OutBuf
from fastmesh._headers cimport HeaderSlice, HF_HOP, HF_HOST, HF_CONTENT_LENGTH, \
    HF_TRANSFER_ENCODING, HF_XFF, HF_XFP, HF_REQUEST_ID, HF_EXPECT, HF_UPGRADE, \
    HF_CONNECTION, HF_TE, HF_KEEP_ALIVE
from fastmesh._http1 cimport Http1Parser, BODY_NONE, BODY_LENGTH, BODY_CHUNKED, \
    BODY_EOF, M_HEAD, M_CONNECT, M_GET
from fastmesh._lb cimport LoadBalancer, hash_bytes
from fastmesh._timers cimport TimerEntry, TimerWheel
from fastmesh._stats cimport StatsBlock, StatsRegistry, Histogram
from fastmesh._router cimport Router, Route, ACTION_CLUSTER, ACTION_WEIGHTED, ACTION_DIRECT
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memmove
from fastmesh._h2 cimport H2Connection, H2Event, EV_REQUEST, EV_RESPONSE, \
    EV_INFORMATIONAL, EV_TRAILERS, EV_DATA, EV_STREAM_ENDED, EV_STREAM_RESET, \
    EV_WINDOW_UPDATED, EV_SETTINGS_CHANGED, EV_PING_ACK, EV_GOAWAY, EV_CONNECTION_ERROR, \
    EVF_LOCAL, EVF_END_STREAM, SEND_OK, SEND_E_LIMIT, H2_NO_ERROR, H2_PROTOCOL_ERROR, H2_CANCEL, \
    H2_REFUSED_STREAM, H2_INTERNAL_ERROR, S_MAX_CONCURRENT_STREAMS

# Forward declarations: the parts refer to each other's classes.
cdef class Conn
cdef class ListenerConf
cdef class Snapshot
cdef class ListenerState
cdef class Worker
cdef class EndpointPool
cdef class Endpoint
cdef class ClusterConf
cdef class ClusterState
cdef class BreakerLimits
cdef class OutlierConf
cdef class OutlierHost
cdef class OutlierDetector
cdef class HeaderList
cdef class HttpFilter
cdef class Request
cdef class ProxyStream
cdef class UpstreamRequest
cdef class RetryPolicy
cdef class RetryTimer
cdef class RouteTimeouts
cdef class RouteStats
cdef class StreamTimer
cdef class LocalRateLimitFilter
cdef class FaultFilter
cdef class FaultTimer
cdef class RouterFilter
cdef class NoopFilter
cdef class UpstreamBase
cdef class TlsServerConf
cdef class TlsClientConf
cdef class TcpUpstream
cdef class TcpDownstream
cdef class UpstreamHttp
cdef class HttpDownstream
cdef class UpstreamH2
cdef class H2Downstream
cdef class H2ServerStream
cdef class OriginalDstConf
cdef class OriginalDstState
cdef class ListenerInspector
cdef class TraceSink
cdef class TracingConf
cdef class TraceSpan

include "core_conn.pxd"
include "core_listener.pxd"
include "core_worker.pxd"
include "core_overload.pxd"
include "core_endpoint.pxd"
include "core_cluster.pxd"
include "cluster_outlier.pxd"
include "core_head.pxd"
include "core_filter.pxd"
include "core_stream.pxd"
include "core_upstream.pxd"
include "core_retry.pxd"
include "core_timeouts.pxd"
include "core_route_stats.pxd"
include "core_istio.pxd"
include "filter_router.pxd"
include "filter_noop.pxd"
include "filter_local_ratelimit.pxd"
include "filter_fault.pxd"
include "filter_rbac.pxd"
include "core_connect.pxd"
include "core_tls.pxd"
include "core_tcp.pxd"
include "core_http_common.pxd"
include "core_h1_upstream.pxd"
include "core_h1_downstream.pxd"
include "core_h2_common.pxd"
include "core_h2_upstream.pxd"
include "core_h2_downstream.pxd"
include "core_h2_stream.pxd"
include "core_original_dst.pxd"
include "core_detect.pxd"
include "cluster_breaker.pxd"
include "trace_context.pxd"
include "filter_tracing.pxd"
