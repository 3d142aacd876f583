# cython: language_level=3
"""The fastmesh data plane: listeners, connections, clusters, upstream pools.

Data flows one way: a listener accepts a downstream connection (this module);
its bytes go through the codec (_http1), the router (_router) picks a route,
the cluster's load balancer (_lb) picks an endpoint, the endpoint's pool gives
an upstream connection (this module), and the response flows back the same
way. TCP listeners splice bytes between the two sides without a codec.

The control side builds a ``Snapshot`` (immutable tables: routers, clusters,
listener settings) and hands it to ``Worker.apply``; connections read the
current snapshot once per request and never read config themselves. Nothing
here imports the control side.

Parts, included into one extension so that cdef calls between them are direct
C calls (as uvloop does with its handles/*.pyx):
  core_base.pxi     clock, ids, counters, the connection base class, Worker
  core_cluster.pxi  Cluster, Endpoint, per-endpoint upstream connection pools
  core_tcp.pxi      the TCP proxy (connection splicing)
  core_http.pxi     the HTTP/1.1 reverse proxy (downstream and upstream sides) and
                    ProxyStream, the per-request interface the upstream side talks to
  core_h2.pxi       HTTP/2: downstream connections/streams, multiplexed upstreams
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t, uint32_t, int64_t
from libc.string cimport memcpy, memcmp, memchr

from fastmesh._buffers cimport ReadBuffer, BufferPool, OutBuf
from fastmesh._headers cimport HeaderSlice, HF_HOP, HF_HOST, HF_CONTENT_LENGTH, \
    HF_TRANSFER_ENCODING, HF_XFF, HF_XFP, HF_REQUEST_ID, HF_EXPECT, HF_UPGRADE, \
    HF_CONNECTION, HF_TE, HF_KEEP_ALIVE
from fastmesh._http1 cimport Http1Parser, BODY_NONE, BODY_LENGTH, BODY_CHUNKED, \
    BODY_EOF, M_HEAD, M_CONNECT, M_GET
from fastmesh._lb cimport LoadBalancer, hash_bytes
from fastmesh._router cimport Router, Route, ACTION_CLUSTER, ACTION_WEIGHTED, ACTION_DIRECT

import socket as _socket
from time import sleep as _sleep

include "core_base.pxi"
include "core_cluster.pxi"
include "core_head.pxi"
include "core_filter.pxi"
include "core_stream.pxi"
include "core_upstream.pxi"
include "filter_router.pxi"
include "core_tcp.pxi"
include "core_http.pxi"
include "core_h2.pxi"
