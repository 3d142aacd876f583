"""gRPC through the proxy, live: grpcio clients and a grpcio server (stubs
generated with grpcio-tools at test time from a small proto modelled on the
interop TestService), h2 downstream -> fastmesh -> h2 upstream.

The interop cases: empty unary, large unary (271828 B request / 314159 B
response), client streaming, server streaming, ping-pong, empty stream,
cancel after begin, cancel after first response, timeout on a sleeping
server, status code and message, custom metadata (text and -bin), an
unimplemented method. Plus the statuses the proxy itself makes: no route
(UNIMPLEMENTED), upstream down (UNAVAILABLE), grpc-timeout (DEADLINE_EXCEEDED).
"""
import importlib
import os
import sys
import time
from concurrent import futures

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")

from support.h2util import H2Client  # noqa: E402
from support.harness import cluster, http_config  # noqa: E402
from support.origin import closed_port  # noqa: E402

PROTO = """
syntax = "proto3";
package fmtest;
message Payload { bytes body = 1; }
message Request {
  int32 response_size = 1;
  Payload payload = 2;
  repeated int32 response_sizes = 3;
  double sleep = 4;
  int32 status_code = 5;
  string status_message = 6;
}
message Response { Payload payload = 1; int32 aggregated_size = 2; }
service TestService {
  rpc UnaryCall(Request) returns (Response);
  rpc StreamingOutputCall(Request) returns (stream Response);
  rpc StreamingInputCall(stream Request) returns (Response);
  rpc FullDuplexCall(stream Request) returns (stream Response);
}
"""

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    from grpc_tools import protoc
    d = tmp_path_factory.mktemp("grpc_stubs")
    (d / "fmtest.proto").write_text(PROTO)
    rc = protoc.main(["protoc", f"-I{d}", f"--python_out={d}", f"--grpc_python_out={d}",
                      str(d / "fmtest.proto")])
    assert rc == 0
    sys.path.insert(0, str(d))
    try:
        m = importlib.import_module("fmtest_pb2")
        g = importlib.import_module("fmtest_pb2_grpc")
    finally:
        sys.path.remove(str(d))
    return m, g


def _echo_metadata(context):
    md = dict(context.invocation_metadata())
    if ECHO_INITIAL in md:
        context.send_initial_metadata(((ECHO_INITIAL, md[ECHO_INITIAL]),))
    if ECHO_TRAILING in md:
        context.set_trailing_metadata(((ECHO_TRAILING, md[ECHO_TRAILING]),))


@pytest.fixture(scope="module")
def server(pb):
    m, g = pb

    class Service(g.TestServiceServicer):
        def UnaryCall(self, req, context):
            _echo_metadata(context)
            if req.sleep:
                time.sleep(req.sleep)
            if req.status_code:
                context.abort(grpc.StatusCode(_code(req.status_code)), req.status_message)
            if not req.response_size:
                return m.Response()
            return m.Response(payload=m.Payload(body=b"\0" * req.response_size))

        def StreamingOutputCall(self, req, context):
            _echo_metadata(context)
            for n in req.response_sizes:
                if req.sleep:
                    time.sleep(req.sleep)
                yield m.Response(payload=m.Payload(body=b"\0" * n))

        def StreamingInputCall(self, it, context):
            total = sum(len(r.payload.body) for r in it)
            return m.Response(aggregated_size=total)

        def FullDuplexCall(self, it, context):
            _echo_metadata(context)
            for r in it:
                if r.status_code:
                    context.abort(grpc.StatusCode(_code(r.status_code)), r.status_message)
                for n in r.response_sizes:
                    yield m.Response(payload=m.Payload(body=b"\0" * n))

    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    g.add_TestServiceServicer_to_server(Service(), srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield ("127.0.0.1", port)
    srv.stop(0)


def _code(n):
    return {s.value[0]: s for s in grpc.StatusCode}[n].value


@pytest.fixture
def proxy(start_proxy, server):
    cfg = http_config(clusters=[cluster("grpc", server, protocol="http2"),
                                cluster("down", ("127.0.0.1", closed_port()), protocol="http2")],
                      routes=[{"match": {"prefix": "/fmtest.TestService/"}, "cluster": "grpc"},
                              {"match": {"prefix": "/down."}, "cluster": "down"}])
    return start_proxy(cfg)


@pytest.fixture
def stub(pb, proxy):
    m, g = pb
    host, port = proxy.address("web")
    ch = grpc.insecure_channel(f"{host}:{port}")
    yield g.TestServiceStub(ch)
    ch.close()


@pytest.fixture
def channel(proxy):
    host, port = proxy.address("web")
    ch = grpc.insecure_channel(f"{host}:{port}")
    yield ch
    ch.close()


def test_empty_unary(pb, stub):
    m, _ = pb
    assert stub.UnaryCall(m.Request(), timeout=5) == m.Response()


def test_large_unary(pb, stub):
    m, _ = pb
    r = stub.UnaryCall(m.Request(response_size=314159, payload=m.Payload(body=b"\0" * 271828)),
                       timeout=10)
    assert len(r.payload.body) == 314159


def test_client_streaming(pb, stub):
    m, _ = pb
    sizes = [27182, 8, 1828, 45904]
    r = stub.StreamingInputCall(iter([m.Request(payload=m.Payload(body=b"\0" * n)) for n in sizes]),
                                timeout=10)
    assert r.aggregated_size == 74922


def test_server_streaming(pb, stub):
    m, _ = pb
    sizes = [31415, 9, 2653, 58979]
    rs = list(stub.StreamingOutputCall(m.Request(response_sizes=sizes), timeout=10))
    assert [len(r.payload.body) for r in rs] == sizes


def test_ping_pong(pb, stub):
    m, _ = pb
    import queue
    q = queue.Queue()
    call = stub.FullDuplexCall(iter(q.get, None), timeout=10)
    for req, resp in [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]:
        q.put(m.Request(response_sizes=[resp], payload=m.Payload(body=b"\0" * req)))
        assert len(next(call).payload.body) == resp
    q.put(None)
    assert list(call) == []


def test_empty_stream(pb, stub):
    assert list(stub.FullDuplexCall(iter([]), timeout=5)) == []


def test_cancel_after_begin(pb, stub, proxy):
    m, _ = pb
    import queue
    q = queue.Queue()
    fut = stub.StreamingInputCall.future(iter(q.get, None), timeout=10)
    time.sleep(0.2)
    fut.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        fut.result()
    q.put(None)
    proxy.wait_for(lambda st: st["downstream_rq_active"] == 0)


def test_cancel_after_first_response(pb, stub, proxy):
    m, _ = pb
    import queue
    q = queue.Queue()
    call = stub.FullDuplexCall(iter(q.get, None), timeout=10)
    q.put(m.Request(response_sizes=[31415], payload=m.Payload(body=b"\0" * 27182)))
    assert len(next(call).payload.body) == 31415
    call.cancel()
    with pytest.raises(grpc.RpcError) as ei:
        next(call)
    assert ei.value.code() == grpc.StatusCode.CANCELLED
    q.put(None)
    proxy.wait_for(lambda st: st["downstream_rq_active"] == 0)


def test_timeout_on_sleeping_server(pb, stub):
    m, _ = pb
    with pytest.raises(grpc.RpcError) as ei:
        stub.UnaryCall(m.Request(sleep=2.0), timeout=0.5)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_status_code_and_message(pb, stub):
    m, _ = pb
    msg = "test status message"
    with pytest.raises(grpc.RpcError) as ei:
        stub.UnaryCall(m.Request(status_code=2, status_message=msg), timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNKNOWN and ei.value.details() == msg
    with pytest.raises(grpc.RpcError) as ei:
        list(stub.FullDuplexCall(iter([m.Request(status_code=2, status_message=msg)]), timeout=5))
    assert ei.value.code() == grpc.StatusCode.UNKNOWN and ei.value.details() == msg


def test_custom_metadata(pb, stub):
    m, _ = pb
    md = ((ECHO_INITIAL, "test_initial_metadata_value"),
          (ECHO_TRAILING, b"\x0a\x0b\x0a\x0b\x0a\x0b"))
    r, call = stub.UnaryCall.with_call(m.Request(response_size=314159,
                                                 payload=m.Payload(body=b"\0" * 271828)),
                                       metadata=md, timeout=5)
    assert len(r.payload.body) == 314159
    assert (ECHO_INITIAL, "test_initial_metadata_value") in call.initial_metadata()
    assert (ECHO_TRAILING, b"\x0a\x0b\x0a\x0b\x0a\x0b") in call.trailing_metadata()
    call = stub.FullDuplexCall(iter([m.Request(response_sizes=[314159])]), metadata=md, timeout=5)
    assert len(next(call).payload.body) == 314159
    assert (ECHO_INITIAL, "test_initial_metadata_value") in call.initial_metadata()
    assert list(call) == []
    assert (ECHO_TRAILING, b"\x0a\x0b\x0a\x0b\x0a\x0b") in call.trailing_metadata()


def test_unimplemented_method(channel):
    call = channel.unary_unary("/fmtest.TestService/UnimplementedCall")
    with pytest.raises(grpc.RpcError) as ei:
        call(b"", timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_no_route_is_unimplemented_from_proxy(channel):
    call = channel.unary_unary("/other.Service/Method")
    with pytest.raises(grpc.RpcError) as ei:
        call(b"", timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_upstream_down_is_unavailable(channel):
    call = channel.unary_unary("/down.Service/Method")
    with pytest.raises(grpc.RpcError) as ei:
        call(b"", timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_timeout_enforced_by_proxy(start_proxy):
    # An upstream that ignores grpc-timeout and a raw h2 client that does not
    # enforce the deadline itself: the proxy answers DEADLINE_EXCEEDED as a
    # trailers-only response (HTTP 200) and resets the upstream stream.
    from support.h2util import H2Origin
    o = H2Origin("slow")
    try:
        # (Envoy honours grpc-timeout only with the route's
        # max_stream_duration.grpc_timeout_header_max; docs/config.md)
        p = start_proxy(http_config(clusters=[cluster("slow", o.address, protocol="http2")],
                                    routes=[{"match": {"prefix": "/"}, "cluster": "slow",
                                             "max_stream_duration":
                                                 {"grpc_timeout_header_max": 0}}]))
        c = H2Client(p.address("web"))
        t0 = time.monotonic()
        sid = c.request("POST", "/sleep/2", body=b"\0\0\0\0\0",
                        headers=[("content-type", "application/grpc"), ("te", "trailers"),
                                 ("grpc-timeout", "300m")])
        r = c.wait(sid)
        assert time.monotonic() - t0 < 1.5
        assert r.status == 200 and r.header(b"grpc-status") == b"4"
        assert r.header(b"content-type") == b"application/grpc"
        assert r.body == b"" and r.trailers == []
        assert p.stats()["downstream_rq_max_duration_reached"] == 1
        c.close()
    finally:
        o.stop()


def test_many_concurrent_unary(pb, stub):
    m, _ = pb
    futs = [stub.UnaryCall.future(m.Request(response_size=i * 100), timeout=10) for i in range(200)]
    for i, f in enumerate(futs):
        assert len(f.result().payload.body) == i * 100
