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
C calls (as uvloop does with its handles/*.pyx), one concern each:
  core_clock.pxi          monotonic clock, random numbers, request ids
  core_counters.pxi       what it counts: stats slots, names and kinds (docs/stats.md)
  core_conn.pxi           Conn: the base of every connection (pauses, its deadline
                          on the worker's timer wheel, _timers)
  core_listener.pxi       ListenerConf, Snapshot, ListenerState
  core_worker.pxi         Worker: applies snapshots, keeps live state by name
  core_endpoint.pxi       Endpoint and its connection pool
  core_cluster.pxi        ClusterConf (snapshot) and ClusterState (live, per worker)
  cluster_outlier.pxi     outlier detection: ejects endpoints by their attempts' outcomes
  core_head.pxi           the one upstream request-head builder (all translations)
  core_filter.pxi         HttpFilter, the chain's results, the Python Request view
  core_stream.pxi         ProxyStream: one request through the pipeline, any protocol
  core_upstream.pxi       UpstreamRequest: one attempt toward one endpoint
  core_retry.pxi          a route's retry policy: which failed attempts go again
  core_timeouts.pxi       route idle timeout, max stream duration, grpc-timeout
  filter_router.pxi       the router, the last filter of every HTTP chain
  filter_noop.pxi         NoopFilter: the smallest compiled filter (reference, benches)
  filter_local_ratelimit.pxi  envoy.filters.http.local_ratelimit: token buckets, 429
  filter_fault.pxi        envoy.filters.http.fault: injected delays and aborts
  filter_rbac.pxi         envoy.filters.http.rbac / network.rbac: authorization policy
  trace_context.pxi       W3C traceparent/tracestate and B3 parsing and formatting
  filter_tracing.pxi      tracing: sampling, propagation, server and client spans
  trace_otlp.pxi          span records -> OTLP protobuf (for the export thread)
  core_connect.pxi        UpstreamBase: connecting upstream
  core_tls.pxi            TLS: the handshake acceptor, SAN checks, protocol detection
  core_tcp.pxi            the TCP proxy (connection splicing)
  core_http_common.pxi    HTTP/1.1 states and reason phrases
  core_h1_upstream.pxi    UpstreamHttp: an HTTP/1.1 upstream connection
  core_h1_downstream.pxi  HttpDownstream: an HTTP/1.1 client connection
  core_h2_common.pxi      HTTP/2 constants, gRPC status and timeout helpers
  core_h2_upstream.pxi    UpstreamH2: a multiplexed HTTP/2 upstream connection
  core_h2_downstream.pxi  H2Downstream: an HTTP/2 client connection
  core_h2_stream.pxi      H2ServerStream: one stream of an HTTP/2 client
  core_original_dst.pxi   SO_ORIGINAL_DST, and the ORIGINAL_DST cluster's hosts
  core_detect.pxi         listener inspection: original-destination hand-off, protocol detection
  core_bench.pxi          entry points for microbenchmarks of compiled paths
"""
# The cimports are in _core.pxd (a .pyx sees its .pxd's).
cimport cython

import resource
import socket as _socket
from time import sleep as _sleep

include "core_clock.pxi"
include "core_counters.pxi"
include "core_conn.pxi"
include "core_listener.pxi"
include "core_worker.pxi"
include "core_overload.pxi"
include "core_endpoint.pxi"
include "core_cluster.pxi"
include "cluster_outlier.pxi"
include "core_head.pxi"
include "core_filter.pxi"
include "core_route_stats.pxi"
include "core_istio.pxi"
include "core_stream.pxi"
include "core_upstream.pxi"
include "core_retry.pxi"
include "cluster_breaker.pxi"
include "core_timeouts.pxi"
include "filter_router.pxi"
include "filter_noop.pxi"
include "filter_local_ratelimit.pxi"
include "filter_fault.pxi"
include "filter_rbac.pxi"
include "trace_context.pxi"
include "filter_tracing.pxi"
include "trace_otlp.pxi"
include "core_connect.pxi"
include "core_tls.pxi"
include "core_tcp.pxi"
include "core_http_common.pxi"
include "core_h1_upstream.pxi"
include "core_h1_downstream.pxi"
include "core_h2_common.pxi"
include "core_h2_upstream.pxi"
include "core_h2_downstream.pxi"
include "core_h2_stream.pxi"
include "core_original_dst.pxi"
include "core_detect.pxi"
include "core_bench.pxi"
