"""Distributed tracing (issue 13): W3C traceparent/tracestate and B3
propagation (parsers tested sans-IO), sampling, server and client spans,
OTLP export over gRPC and HTTP to small real receivers (grpcio's server with
opentelemetry-proto's TraceService; an http.server for OTLP/HTTP), through
two real `fastmesh run` processes."""
from __future__ import annotations

import http.client
import json
import os
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from fastmesh import _core
from fastmesh.control.config import ConfigError, parse_config
from support.h2util import H2Client, H2Origin
from support.meshproc import Proc, fastmesh_argv
from support.origin import Origin, closed_port
from support.served import poll

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TID = 0x4bf92f3577b34da6a3ce929d0e0e4736


# --- traceparent (W3C Trace Context, section 3.2) -----------------------------

@pytest.mark.parametrize("value, want", [
    (TP, (TID, 0x00f067aa0ba902b7, 1)),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", (TID, 0x00f067aa0ba902b7, 0)),
    # a later version may carry more after the flags, after a "-"
    ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds",
     (TID, 0x00f067aa0ba902b7, 9)),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", (TID, 0x00f067aa0ba902b7, 1)),
])
def test_traceparent_valid(value, want):
    assert _core.tc_parse_traceparent(value.encode()) == want


@pytest.mark.parametrize("value", [
    "",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      # version ff
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",      # zero trace-id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",      # zero parent-id
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",      # upper case
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",     # v00 longer than 55
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",       # short trace-id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",       # short parent-id
    "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",      # separators
    "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",      # not hex
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.xx",   # future: not "-"
    "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
])
def test_traceparent_invalid(value):
    assert _core.tc_parse_traceparent(value.encode()) is None


ids128 = st.integers(1, (1 << 128) - 1)
ids64 = st.integers(1, (1 << 64) - 1)


@given(ids128, ids64, st.integers(0, 255))
def test_traceparent_round_trip(tid, sid, flags):
    v = _core.tc_format_traceparent(tid, sid, flags)
    assert len(v) == 55 and v == v.lower()
    assert _core.tc_parse_traceparent(v) == (tid, sid, flags)


# --- B3 ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, want", [
    ("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
     (0x80f198ee56343ba864fe8b2a57d3eff7, 0xe457b5a2e4d86bd1, 1, 0x05e3ac9a4f6e3b90, False)),
    ("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0",
     (0x80f198ee56343ba864fe8b2a57d3eff7, 0xe457b5a2e4d86bd1, 0, 0, False)),
    ("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
     (0x80f198ee56343ba864fe8b2a57d3eff7, 0xe457b5a2e4d86bd1, 1, 0, True)),
    ("80f198ee56343ba8-e457b5a2e4d86bd1",            # 64-bit trace id, decision deferred
     (0x80f198ee56343ba8, 0xe457b5a2e4d86bd1, -1, 0, False)),
    ("0", (0, 0, 0, 0, False)),                       # a decision only
    ("1", (0, 0, 1, 0, False)),
    ("d", (0, 0, 1, 0, True)),
])
def test_b3_single_valid(value, want):
    assert _core.tc_parse_b3(value.encode()) == want


@pytest.mark.parametrize("value", [
    "", "2", "true",
    "80f198ee56343ba864fe8b2a57d3eff7",                                  # no span id
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x",               # bad sampling
    "80f198ee56343ba864fe8b2a57d3eff-e457b5a2e4d86bd1-1",                # 31 digits
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd-1",                # 15 digits
    "00000000000000000000000000000000-e457b5a2e4d86bd1-1",               # zero trace id
    "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",               # zero span id
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b9",   # short parent
    "80F198EE56343BA864FE8B2A57D3EFF7-E457B5A2E4D86BD1-1",               # upper case
])
def test_b3_single_invalid(value):
    assert _core.tc_parse_b3(value.encode()) is None


def test_b3_multi():
    p = _core.tc_parse_b3_multi
    assert p(b"463ac35c9f6413ad48485a3953bb6124", b"a2fb4a1d1a96d312", b"0020000000000001",
             b"1") == (0x463ac35c9f6413ad48485a3953bb6124, 0xa2fb4a1d1a96d312, 1,
                       0x0020000000000001, False)
    assert p(b"463ac35c9f6413ad", b"a2fb4a1d1a96d312") == (
        0x463ac35c9f6413ad, 0xa2fb4a1d1a96d312, -1, 0, False)
    assert p(b"463ac35c9f6413ad", b"a2fb4a1d1a96d312", flags=b"1")[2:] == (1, 0, True)
    assert p(b"463ac35c9f6413ad", b"a2fb4a1d1a96d312", sampled=b"true")[2] == 1
    assert p(sampled=b"0") == (0, 0, 0, 0, False)            # a decision without a trace
    assert p(b"463ac35c9f6413ad") is None                    # no span id
    assert p(spanid=b"a2fb4a1d1a96d312") is None             # no trace id
    assert p(b"463ac35c9f6413ad", b"a2fb4a1d1a96d312", sampled=b"yes") is None
    assert p(b"463ac35c9f6413ad", b"a2fb4a1d1a96d312", b"xyz") is None
    assert p() is None


@given(ids128, ids64, st.sampled_from([0, 1]), st.booleans())
def test_b3_round_trip(tid, sid, sampled, debug):
    v = _core.tc_format_b3(tid, sid, sampled, debug)
    assert _core.tc_parse_b3(v) == (tid, sid, 1 if debug else sampled, 0, debug)


@given(ids64, ids64, st.sampled_from([0, 1]))
def test_b3_round_trip_64bit(tid, sid, sampled):
    v = _core.tc_format_b3(tid, sid, sampled, False, True)
    assert len(v.split(b"-")[0]) == 16
    assert _core.tc_parse_b3(v) == (tid, sid, sampled, 0, False)


# --- tracestate (W3C Trace Context, section 3.3) -----------------------------------

@pytest.mark.parametrize("value", [
    "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    "rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE",
    "a=1,,b=2",                                      # empty members are allowed
    "tenant@vendor=x", "a1_-*/=v", "0tenant@sys=v",
    ",".join(f"k{i}=v" for i in range(32)),
])
def test_tracestate_valid(value):
    assert _core.tc_tracestate_valid(value.encode())


@pytest.mark.parametrize("value", [
    "a=1,a=2",                                       # duplicate key
    ",".join(f"k{i}=v" for i in range(33)),          # 33 members
    "A=1", "1a=1", "a", "a=", "a=b=c", "a=x,y",
    "t@=1", "@s=1", "t@S=1", "t@abcdefghijklmno=1",  # bad multi-tenant keys
    "a=" + "x" * 257, "a=tab\there", "a=in side\x7f",
])
def test_tracestate_invalid(value):
    assert not _core.tc_tracestate_valid(value.encode())


@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_\-*/]{0,20}", fullmatch=True),
                          st.from_regex(r"[!-+\--<>-~]{1,20}", fullmatch=True)),
                max_size=32, unique_by=lambda kv: kv[0]))
def test_tracestate_generated(members):
    assert _core.tc_tracestate_valid(",".join(f"{k}={v}" for k, v in members).encode())


# --- OTLP encoding (trace_otlp.pxi) against the SDK's encoder -----------------------

_OUTCOMES = {0: "cancelled", -1: "connect_failure", -2: "timeout", -3: "reset"}


class SdkSpans:
    """The oracle: span records (tuples) -> OpenTelemetry SDK ReadableSpans
    with the attributes of the HTTP semantic conventions, for the SDK's own
    encoder (what trace_otlp.pxi must match)."""

    def __init__(self, service_name: str) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        self._ReadableSpan = ReadableSpan
        self._SpanContext = SpanContext
        self._Status = Status
        self._StatusCode = StatusCode
        self._kinds = {1: SpanKind.SERVER, 2: SpanKind.CLIENT}
        self._flags = TraceFlags(TraceFlags.SAMPLED)
        self._resource = Resource.create({"service.name": service_name})
        self._scope = InstrumentationScope("fastmesh", "")

    def span(self, rec: tuple) -> Any:
        kind, hi, lo, sid, parent, start, end, status = rec[:8]
        tid = (hi << 64) | lo
        ctx = self._SpanContext(tid, sid, is_remote=False, trace_flags=self._flags)
        method = rec[8].decode("latin-1")
        target = rec[9].decode("latin-1")
        path, _, query = target.partition("?")
        attrs: dict[str, Any] = {"http.request.method": method, "url.path": path}
        if query:
            attrs["url.query"] = query
        error = None
        if kind == 1:
            host, client_ip, h2, listener, cluster, attempts, tags = rec[10:17]
            # The caller's span is remote; none: we started the trace (a root).
            pctx = (self._SpanContext(tid, parent, is_remote=True, trace_flags=self._flags)
                    if parent else None)
            authority = host.decode("latin-1")
            if authority.startswith("["):
                name, _, rest = authority[1:].partition("]")
                port = rest[1:] if rest.startswith(":") else ""
            elif authority.count(":") == 1:
                name, port = authority.split(":")
            else:
                name, port = authority, ""
            attrs["server.address"] = name
            if port.isdigit():
                attrs["server.port"] = int(port)
            attrs["url.scheme"] = "http"
            attrs["client.address"] = client_ip.decode("latin-1")
            attrs["network.protocol.version"] = "2" if h2 else "1.1"
            attrs["fastmesh.listener"] = listener
            if cluster is not None:
                attrs["upstream_cluster"] = cluster     # Envoy's tag
            for k, v in tags:
                attrs[k] = v
            if status:
                attrs["http.response.status_code"] = status
            if status == 0:
                error = "downstream_reset"              # no response went out
            elif status >= 500:
                error = str(status)
        else:
            cluster, host, port, attempt = rec[10:14]
            pctx = self._SpanContext(tid, parent, is_remote=False, trace_flags=self._flags)
            attrs["server.address"] = host
            attrs["server.port"] = port
            attrs["url.full"] = f"http://{host}:{port}{target}"
            attrs["upstream_cluster"] = cluster
            attrs["upstream_address"] = f"{host}:{port}"     # Envoy's tag
            if attempt > 1:
                attrs["http.request.resend_count"] = attempt - 1
            if status > 0:
                attrs["http.response.status_code"] = status
                if status >= 500:
                    error = str(status)
            else:
                error = _OUTCOMES.get(status, "error")
        if error is not None:
            attrs["error.type"] = error
            st = self._Status(self._StatusCode.ERROR, error)
        else:
            st = self._Status(self._StatusCode.UNSET)
        return self._ReadableSpan(
            name=method, context=ctx, parent=pctx, resource=self._resource,
            attributes=attrs, kind=self._kinds[kind], status=st, start_time=start,
            end_time=end, instrumentation_scope=self._scope)



RECORDS = [
    # server: (1, hi, lo, sid, parent, start, end, status, method, target, host,
    #          client_ip, h2, listener, cluster, attempts, custom_tags)
    (1, 0x4bf92f3577b34da6, 0xa3ce929d0e0e4736, 0x1111, 0x2222, 1_700_000_000_000_000_000,
     1_700_000_000_123_456_789, 200, b"GET", b"/a/b?x=1&y=2", b"example.com:8080",
     b"10.0.0.1", False, "web", "backend", 1, (("env", "prod"), ("team", "edge"))),
    (1, 1, 2, 3, 0, 5, 6, 503, b"POST", b"/", b"[::1]:443", b"::1", True, "web", "b", 2, ()),
    (1, 1, 2, 4, 9, 5, 6, 0, b"GET", b"/reset", b"svc", b"127.0.0.1", False, "l", None, 0, ()),
    (1, 1, 2, 4, 9, 5, 6, 404, b"DELETE", b"/q?", b"h:x", b"127.0.0.1", False, "l", None, 0, ()),
    # client: (2, hi, lo, sid, parent, start, end, outcome, method, target,
    #          cluster, ep_host, ep_port, attempt)
    (2, 7, 8, 0xfffffffffffffff0, 0x1111, 10, 20, 200, b"GET", b"/a?x", "backend",
     "10.1.2.3", 8080, 1),
    (2, 7, 8, 0x55, 0x1111, 10, 20, 502, b"GET", b"/a", "backend", "10.1.2.3", 8080, 2),
    (2, 7, 8, 0x56, 0x1111, 10, 20, -1, b"GET", b"/a", "backend", "10.1.2.3", 80, 3),
    (2, 7, 8, 0x57, 0x1111, 10, 20, -2, b"GET", b"/a", "backend", "h", 80, 1),
    (2, 7, 8, 0x58, 0x1111, 10, 20, -3, b"GET", b"/a", "backend", "h", 80, 1),
    (2, 7, 8, 0x59, 0x1111, 10, 20, 0, b"GET", b"/a", "backend", "h", 80, 1),
]


def _spans_of(req) -> list[dict]:
    from google.protobuf.json_format import MessageToDict
    out = []
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                d = MessageToDict(sp)
                d["attributes"] = sorted(d.get("attributes", []), key=lambda a: a["key"])
                out.append(d)
    return out


def test_otlp_encoding_matches_the_sdk():
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from fastmesh.runtime.trace_export import _resource_and_scope

    sdk = encode_spans([SdkSpans("svc").span(r) for r in RECORDS])
    resource, scope = _resource_and_scope("svc")
    ours = trace_service_pb2.ExportTraceServiceRequest.FromString(
        _core.otlp_encode(RECORDS, resource, scope))
    assert _spans_of(ours) == _spans_of(sdk)
    assert ours.resource_spans[0].resource == sdk.resource_spans[0].resource
    assert ours.resource_spans[0].scope_spans[0].scope.name == "fastmesh"


# --- config -------------------------------------------------------------------------

def _cfg_text(tracing: dict, port: int = 18080) -> str:
    return json.dumps({
        "listeners": [{"name": "web", "address": "127.0.0.1", "port": port,
                       "tracing": tracing,
                       "virtual_hosts": [{"name": "all", "domains": ["*"],
                                          "routes": [{"match": {"prefix": "/"},
                                                      "cluster": "origin"}]}]}],
        "clusters": [{"name": "origin", "endpoints": [{"address": "127.0.0.1", "port": 1}]},
                     {"name": "otel", "endpoints": [{"address": "127.0.0.1", "port": 2}]}]},
        indent=1)


def _otel(service: dict) -> dict:
    return {"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        **service, "service_name": "edge"}}


def test_config_accepts_envoy_shape():
    cfg = parse_config(_cfg_text({
        "random_sampling": {"value": 1}, "overall_sampling": {"value": 50},
        "custom_tags": [{"tag": "env", "literal": {"value": "prod"}}],
        "provider": _otel({"grpc_service": {"envoy_grpc": {"cluster_name": "otel"},
                                            "timeout": "2s"}}),
        "propagation": {"inject": ["tracecontext", "b3multi"]}}))
    t = cfg.listeners[0].tracing
    assert (t.random_sampling, t.overall_sampling, t.client_sampling) == (1.0, 50.0, 100.0)
    assert (t.protocol, t.cluster, t.timeout, t.service_name) == ("grpc", "otel", 2.0, "edge")
    assert t.custom_tags == (("env", "prod"),) and t.inject == ("tracecontext", "b3multi")


@pytest.mark.parametrize("service", [
    {"grpc_service": {"envoy_grpc": {"cluster_name": "otel"}, "timeout": "2s",
                      "initial_metadata": [{"key": "x-k", "value": "v"}]}},
    {"grpc_service": {"google_grpc": {"target_uri": "collector:4317"}}},
    {"http_service": {"http_uri": {"uri": "http://c:4318/v1/traces", "cluster": "otel"},
                      "request_headers_to_add": [{"header": {"key": "x-k", "value": "v"}}]}},
])
def test_config_dump_round_trip(service, monkeypatch):
    from fastmesh.control.dump import config_to_dict
    monkeypatch.setenv("POD", "pod-7")
    cfg = parse_config(_cfg_text({
        "random_sampling": 0.5, "spawn_upstream_span": False, "provider": _otel(service),
        "custom_tags": [{"tag": "pod", "environment": {"name": "POD"}}],
        "propagation": {"extract": ["b3"], "inject": ["b3multi"]}}))
    assert cfg.listeners[0].tracing.custom_tags == (("pod", "pod-7"),)
    assert parse_config(json.dumps(config_to_dict(cfg))) == cfg


@pytest.mark.parametrize("tracing, where, says", [
    ({"random_sampling": {"value": 101}}, "tracing.random_sampling.value", "out of range"),
    ({"random_sampling": "1%"}, "tracing.random_sampling", "percentage"),
    ({"provider": {"name": "envoy.tracers.zipkin"}}, "tracing.provider.name", "not supported"),
    ({"provider": _otel({"grpc_service": {"envoy_grpc": {"cluster_name": "nope"}}})},
     "cluster_name", "unknown cluster 'nope'"),
    ({"propagation": {"inject": ["jaeger"]}}, "tracing.propagation.inject", "unknown propagator"),
    ({"sampling": 1}, "tracing.sampling", "unknown key"),
])
def test_config_errors(tracing, where, says):
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg_text(tracing))
    msg = str(e.value)
    assert where in msg and says in msg, msg


# --- OTLP receivers -------------------------------------------------------------------

class Collector:
    """Spans received over OTLP, flattened: dicts with trace/span/parent ids
    (ints), name, kind, attributes, status code and the service name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[dict] = []

    def add(self, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        out = []
        for rs in req.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes
                            if a.key == "service.name"), None)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {}
                    for a in s.attributes:
                        v = a.value
                        attrs[a.key] = (v.string_value if v.HasField("string_value")
                                        else v.int_value if v.HasField("int_value")
                                        else v.bool_value)
                    out.append({"trace": int.from_bytes(s.trace_id, "big"),
                                "span": int.from_bytes(s.span_id, "big"),
                                "parent": int.from_bytes(s.parent_span_id, "big"),
                                "name": s.name, "kind": s.kind, "attrs": attrs,
                                "status": s.status.code, "service": service,
                                "start": s.start_time_unix_nano, "end": s.end_time_unix_nano})
        with self.lock:
            self.spans.extend(out)

    def get(self) -> list[dict]:
        with self.lock:
            return list(self.spans)


class GrpcCollector(Collector, trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        super().__init__()
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # noqa: N802 (the service's name)
        self.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def stop(self) -> None:
        self.server.stop(0)


class HttpCollector(Collector):
    def __init__(self) -> None:
        super().__init__()
        coll = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path == "/v1/traces":
                    coll.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                    out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                    self.send_response(200)
                    self.send_header("content-type", "application/x-protobuf")
                else:
                    out = b""
                    self.send_response(404)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grpc_collector():
    c = GrpcCollector()
    yield c
    c.stop()


@pytest.fixture
def http_collector():
    c = HttpCollector()
    yield c
    c.stop()


@pytest.fixture
def origin():
    o = Origin("origin")
    o.start()
    yield o
    o.stop()


# --- fastmesh processes ------------------------------------------------------------------

class Traced(Proc):
    """`fastmesh run --single-process` with one http listener routed to
    (host, port) `upstream` and the listener's `tracing`."""

    def __init__(self, tmp: Path, name: str, upstream, tracing: dict, collector_port: int,
                 route_extra: dict | None = None, cluster_extra: dict | None = None) -> None:
        self.name = name
        super().__init__(tmp)
        cfg = {"drain_timeout": 1, "admin": {"address": "127.0.0.1", "port": self.admin},
               "listeners": [{"name": "web", "address": "127.0.0.1", "port": self.port,
                              "tracing": tracing,
                              "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                  {"match": {"prefix": "/"}, "cluster": "up",
                                   **(route_extra or {})}]}]}],
               "clusters": [{"name": "up", "endpoints": [
                   {"address": upstream[0], "port": upstream[1]}], **(cluster_extra or {})},
                   {"name": "otel", "endpoints": [
                       {"address": "127.0.0.1", "port": collector_port}]}]}
        path = self.tmp / f"{name}.yaml"
        path.write_text(json.dumps(cfg, indent=1))
        env = dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="50")
        self.spawn(fastmesh_argv(path, "--single-process", "--log-level", "warning"), env=env)

    def get(self, path: str, headers: dict | None = None) -> int:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def tracing_stats(self) -> dict:
        return {k[8:]: v for k, v in self.stats().items() if k.startswith("tracing.")}


def grpc_tracing(collector_port_cluster: str = "otel", sampling: float = 100, **kw) -> dict:
    return {"random_sampling": {"value": sampling},
            "provider": _otel({"grpc_service": {"envoy_grpc": {
                "cluster_name": collector_port_cluster}, "timeout": "1s"}}), **kw}


def http_tracing(sampling: float = 100, **kw) -> dict:
    return {"random_sampling": {"value": sampling},
            "provider": _otel({"http_service": {"http_uri": {
                "uri": "http://collector.example:4318/v1/traces", "cluster": "otel",
                "timeout": "1s"}}}), **kw}


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def _hdr(rec, name: bytes):
    return [v for n, v in rec.headers if n.lower() == name]


def test_two_hops_grpc_and_http_exporters(tmp_path, origin, grpc_collector, http_collector,
                                          procs):
    # client -> A (exports over gRPC) -> B (exports over OTLP/HTTP) -> origin
    b = Traced(tmp_path, "b", origin.address, http_tracing(), http_collector.port)
    procs.append(b)
    a = Traced(tmp_path, "a", b.address, grpc_tracing(), grpc_collector.port)
    procs.append(a)
    caller = 0x1122334455667788
    tp = f"00-{TID:032x}-{caller:016x}-01"
    assert a.get("/hop?x=1", {"traceparent": tp, "tracestate": "vendor=abc"}) == 200

    assert poll(lambda: len(grpc_collector.get()) >= 2 and len(http_collector.get()) >= 2)
    time.sleep(0.2)          # (nothing more may come: checked below)
    sa = {s["kind"]: s for s in grpc_collector.get()}
    sb = {s["kind"]: s for s in http_collector.get()}
    assert len(grpc_collector.get()) == 2 and len(http_collector.get()) == 2
    SERVER, CLIENT = 2, 3          # opentelemetry.proto.trace.v1.Span.SpanKind
    a_srv, a_cli, b_srv, b_cli = sa[SERVER], sa[CLIENT], sb[SERVER], sb[CLIENT]
    for s in (a_srv, a_cli, b_srv, b_cli):
        assert s["trace"] == TID, s
    assert a_srv["parent"] == caller
    assert a_cli["parent"] == a_srv["span"]
    assert b_srv["parent"] == a_cli["span"]
    assert b_cli["parent"] == b_srv["span"]
    assert len({a_srv["span"], a_cli["span"], b_srv["span"], b_cli["span"]}) == 4
    # the origin's parent is B's client span; tracestate went along
    rec = origin.received()[-1]
    assert _hdr(rec, b"traceparent") == [f"00-{TID:032x}-{b_cli['span']:016x}-01".encode()]
    assert _hdr(rec, b"tracestate") == [b"vendor=abc"]
    # OpenTelemetry's HTTP conventions
    assert a_srv["service"] == "edge" and a_srv["name"] == "GET"
    assert a_srv["attrs"]["http.request.method"] == "GET"
    assert a_srv["attrs"]["url.path"] == "/hop" and a_srv["attrs"]["url.query"] == "x=1"
    assert a_srv["attrs"]["http.response.status_code"] == 200
    assert a_srv["attrs"]["server.address"] == "127.0.0.1"
    assert a_srv["attrs"]["upstream_cluster"] == "up"
    assert a_cli["attrs"]["server.port"] == b.port
    assert b_cli["attrs"]["server.port"] == origin.address[1]
    assert a_srv["start"] <= a_cli["start"] <= a_cli["end"] <= a_srv["end"]
    assert all(s["status"] != 2 for s in (a_srv, a_cli, b_srv, b_cli))   # not ERROR
    assert a.tracing_stats().get("spans_sent", 0) >= 2


def test_sampling_rate_and_incoming_flag(tmp_path, origin, grpc_collector, procs):
    off = Traced(tmp_path, "off", origin.address, grpc_tracing(sampling=0),
                 grpc_collector.port)
    procs.append(off)
    on = Traced(tmp_path, "on", origin.address, grpc_tracing(sampling=100),
                grpc_collector.port)
    procs.append(on)
    # 0 %: no context -> not sampled; the origin is told so (flags 00)
    for _ in range(20):
        assert off.get("/none") == 200
    tps = [_hdr(r, b"traceparent") for r in origin.received()]
    assert all(len(t) == 1 and t[0].endswith(b"-00") for t in tps), tps
    assert len({t[0][3:35] for t in tps}) == 20            # a new trace each
    # 100 %, but the caller says "not sampled": passed on as it came
    unsampled = f"00-{TID:032x}-{0x99:016x}-00"
    assert on.get("/no", {"traceparent": unsampled}) == 200
    assert _hdr(origin.received()[-1], b"traceparent") == [unsampled.encode()]
    # 0 %, but the caller says "sampled": traced
    assert off.get("/yes", {"traceparent": f"00-{TID:032x}-{0x98:016x}-01"}) == 200
    assert poll(lambda: len(grpc_collector.get()) >= 2)
    # the sampled one, and nothing else (the 21 unsampled made no span)
    assert on.get("/flush") == 200       # a sampled request after the others
    assert poll(lambda: len(grpc_collector.get()) >= 4)
    time.sleep(0.2)
    spans = grpc_collector.get()
    paths = sorted(s["attrs"]["url.path"] for s in spans)
    assert paths == ["/flush", "/flush", "/yes", "/yes"], paths
    assert off.tracing_stats()["parent_sampled"] == 1
    assert off.tracing_stats()["not_sampled"] == 20
    assert on.tracing_stats()["not_sampled"] == 1


def test_random_sampling_rate(tmp_path, origin, grpc_collector, procs):
    # 50 %: some of 200 requests traced, and about half (well inside 5 sigma)
    p = Traced(tmp_path, "half", origin.address, grpc_tracing(sampling=50),
               grpc_collector.port)
    procs.append(p)
    for _ in range(200):
        assert p.get("/r") == 200
    st = p.tracing_stats()
    assert st["random_sampling"] + st["not_sampled"] == 200
    assert 60 <= st["random_sampling"] <= 140, st
    sampled = [r for r in origin.received() if _hdr(r, b"traceparent")[0].endswith(b"-01")]
    assert len(sampled) == st["random_sampling"]
    assert poll(lambda: len(grpc_collector.get()) == 2 * st["random_sampling"])


def test_retries_make_client_spans(tmp_path, origin, grpc_collector, procs):
    origin.fixed_status = 503
    p = Traced(tmp_path, "retry", origin.address, grpc_tracing(), grpc_collector.port,
               route_extra={"retry_policy": {"retry_on": "5xx", "num_retries": 1,
                                             "retry_back_off": {"base_interval": "0.01s"}}})
    procs.append(p)
    assert p.get("/retried") == 503
    assert poll(lambda: len(grpc_collector.get()) >= 3)
    time.sleep(0.2)
    spans = grpc_collector.get()
    assert len(spans) == 3, spans
    srv = [s for s in spans if s["kind"] == 2][0]
    clients = sorted((s for s in spans if s["kind"] == 3),
                     key=lambda s: s["attrs"].get("http.request.resend_count", 0))
    assert [c["parent"] for c in clients] == [srv["span"]] * 2
    assert clients[1]["attrs"]["http.request.resend_count"] == 1
    assert all(s["status"] == 2 for s in spans)             # ERROR: 503
    # each attempt told the origin its own client span
    got = [_hdr(r, b"traceparent")[0] for r in origin.received()]
    assert got == [f"00-{srv['trace']:032x}-{c['span']:016x}-01".encode() for c in clients]


def test_b3_in_b3_out(tmp_path, origin, grpc_collector, procs):
    p = Traced(tmp_path, "b3", origin.address, grpc_tracing(), grpc_collector.port)
    procs.append(p)
    assert p.get("/single", {"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}) == 200
    assert p.get("/multi", {"x-b3-traceid": "463ac35c9f6413ad", "x-b3-spanid": "a2fb4a1d1a96d312",
                            "x-b3-sampled": "1"}) == 200
    assert poll(lambda: len(grpc_collector.get()) >= 4)
    spans = grpc_collector.get()
    cli = {s["attrs"]["url.path"]: s for s in spans if s["kind"] == 3}
    srv = {s["attrs"]["url.path"]: s for s in spans if s["kind"] == 2}
    single, multi = origin.received()
    assert _hdr(single, b"b3") == [
        f"80f198ee56343ba864fe8b2a57d3eff7-{cli['/single']['span']:016x}-1".encode()]
    assert not _hdr(single, b"traceparent")
    assert srv["/single"]["parent"] == 0xe457b5a2e4d86bd1
    assert _hdr(multi, b"x-b3-traceid") == [b"463ac35c9f6413ad"]       # 64-bit id kept
    assert _hdr(multi, b"x-b3-spanid") == [f"{cli['/multi']['span']:016x}".encode()]
    assert _hdr(multi, b"x-b3-parentspanid") == [f"{srv['/multi']['span']:016x}".encode()]
    assert _hdr(multi, b"x-b3-sampled") == [b"1"]
    assert srv["/multi"]["trace"] == 0x463ac35c9f6413ad


def test_configured_injection(tmp_path, origin, grpc_collector, procs):
    p = Traced(tmp_path, "inj", origin.address,
               grpc_tracing(propagation={"inject": ["tracecontext", "b3"]}),
               grpc_collector.port)
    procs.append(p)
    assert p.get("/x", {"x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124",
                        "x-b3-spanid": "a2fb4a1d1a96d312", "x-b3-sampled": "1"}) == 200
    rec = origin.received()[0]
    tp = _hdr(rec, b"traceparent")[0].decode()
    b3 = _hdr(rec, b"b3")[0].decode()
    assert tp.startswith("00-463ac35c9f6413ad48485a3953bb6124-") and tp.endswith("-01")
    assert b3 == f"463ac35c9f6413ad48485a3953bb6124-{tp[36:52]}-1"
    assert not _hdr(rec, b"x-b3-traceid")           # the caller's fields were replaced


def test_exporter_down_traffic_unaffected(tmp_path, origin, procs):
    p = Traced(tmp_path, "down", origin.address, grpc_tracing(), closed_port())
    procs.append(p)
    for _ in range(50):
        assert p.get("/ok") == 200
    assert len(origin.received()) == 50
    assert p.wait(lambda: p.tracing_stats().get("export_failed", 0) >= 1, timeout=20)
    for _ in range(10):
        assert p.get("/still") == 200


def test_h2_client_h2_upstream_retries(tmp_path, grpc_collector, procs):
    # HTTP/2 both sides: the upstream header list kept for the retry gets
    # each attempt's span id (and the B3 multi-header form).
    with H2Origin() as h2o:
        h2o.fixed_status = 503
        p = Traced(tmp_path, "h2", h2o.address,
                   grpc_tracing(propagation={"inject": ["tracecontext", "b3multi"]}),
                   grpc_collector.port, cluster_extra={"protocol": "http2"},
                   route_extra={"retry_policy": {"retry_on": "5xx", "num_retries": 2,
                                                 "retry_back_off": {"base_interval": "0.01s"}}})
        procs.append(p)
        c = H2Client(p.address)
        try:
            sid = c.request("GET", "/h2x", headers=[("traceparent", TP)])
            c.wait(sid)
            assert c.responses[sid].status == 503
        finally:
            c.close()
        assert poll(lambda: len(grpc_collector.get()) >= 4)
        spans = grpc_collector.get()
        srv = [s for s in spans if s["kind"] == 2]
        clients = sorted((s for s in spans if s["kind"] == 3),
                         key=lambda s: s["attrs"].get("http.request.resend_count", 0))
        assert len(srv) == 1 and len(clients) == 3
        assert srv[0]["parent"] == 0x00f067aa0ba902b7 and srv[0]["trace"] == TID
        assert srv[0]["attrs"]["network.protocol.version"] == "2"
        got = [(r.header(b"traceparent"), r.header(b"x-b3-spanid"), r.header(b"x-b3-parentspanid"))
               for r in h2o.received()]
        assert got == [(f"00-{TID:032x}-{cl['span']:016x}-01".encode(), f"{cl['span']:016x}".encode(),
                        f"{srv[0]['span']:016x}".encode()) for cl in clients]
