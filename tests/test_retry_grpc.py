"""Retries of gRPC calls (issue 9): Envoy's gRPC retry_on conditions
(cancelled, deadline-exceeded, resource-exhausted, unavailable, internal),
read from grpc-status in a trailers-only answer, and grpc-retry-pushback-ms
(a delay instead of the back-off; negative or malformed: no retry). Real
grpcio servers and clients, h2 downstream -> fastmesh -> h2 upstream; each
server records the calls it got (request id, arrival time)."""
from __future__ import annotations

import collections
import importlib
import sys
import threading
import time
from concurrent import futures

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")

from support.harness import cluster, http_config  # noqa: E402

PROTO = """
syntax = "proto3";
package fmretry;
message Req { string tag = 1; }
message Resp { string served_by = 1; }
service Retry { rpc Call(Req) returns (Resp); }
"""

# retry_on name -> grpc.StatusCode
CODES = {
    "cancelled": "CANCELLED",
    "deadline-exceeded": "DEADLINE_EXCEEDED",
    "resource-exhausted": "RESOURCE_EXHAUSTED",
    "unavailable": "UNAVAILABLE",
    "internal": "INTERNAL",
}


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    from grpc_tools import protoc
    d = tmp_path_factory.mktemp("grpc_retry_stubs")
    (d / "fmretry.proto").write_text(PROTO)
    rc = protoc.main(["protoc", f"-I{d}", f"--python_out={d}", f"--grpc_python_out={d}",
                      str(d / "fmretry.proto")])
    assert rc == 0
    sys.path.insert(0, str(d))
    try:
        return importlib.import_module("fmretry_pb2"), importlib.import_module("fmretry_pb2_grpc")
    finally:
        sys.path.remove(str(d))


class Server:
    """A grpcio server answering every call with `behave`: ("ok",),
    ("fail", StatusCode name[, pushback]) (aborts before any message: a
    trailers-only answer) or ("hang",). Records (time, request id) per call."""

    def __init__(self, pb, name, behave=("ok",)):
        m, g = pb
        self.name, self.behave = name, behave
        self.calls: list = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        outer = self

        class Service(g.RetryServicer):
            def Call(self, req, context):
                md = dict(context.invocation_metadata())
                with outer.lock:
                    outer.calls.append((time.monotonic(), md.get("x-request-id")))
                b = outer.behave
                if b[0] == "hang":
                    outer.stopped.wait(10)
                    context.abort(grpc.StatusCode.ABORTED, "stopped")
                if b[0] == "fail":
                    if len(b) > 2:
                        context.set_trailing_metadata((("grpc-retry-pushback-ms", b[2]),))
                    context.abort(getattr(grpc.StatusCode, b[1]), f"{outer.name} failed")
                return m.Resp(served_by=outer.name)

        self.srv = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        g.add_RetryServicer_to_server(Service(), self.srv)
        self.port = self.srv.add_insecure_port("127.0.0.1:0")
        self.address = ("127.0.0.1", self.port)
        self.srv.start()

    def ids(self):
        with self.lock:
            return [i for _, i in self.calls]

    def stop(self):
        self.stopped.set()
        self.srv.stop(0)


@pytest.fixture
def servers(pb):
    made = []

    def make(name, behave=("ok",)):
        s = Server(pb, name, behave)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


def proxy_for(start_proxy, *servers, retry=None, listener=None, timeout="10s"):
    route = {"match": {"prefix": "/"}, "cluster": "grpc", "timeout": timeout}
    if retry is not None:
        route["retry_policy"] = retry
    return start_proxy(http_config(
        clusters=[cluster("grpc", *[s.address for s in servers], protocol="http2")],
        routes=[route], listener=listener))


def calls(pb, p, n, metadata=(), timeout=10):
    """n unary calls through the proxy: [(StatusCode, served_by or None)]."""
    m, g = pb
    host, port = p.address("web")
    out = []
    with grpc.insecure_channel(f"{host}:{port}") as ch:
        stub = g.RetryStub(ch)
        for i in range(n):
            try:
                r = stub.Call(m.Req(tag=str(i)), timeout=timeout, metadata=metadata)
                out.append((grpc.StatusCode.OK, r.served_by))
            except grpc.RpcError as e:
                out.append((e.code(), None))
    return out


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not-listed"])
@pytest.mark.parametrize("cond", list(CODES))
def test_grpc_condition_retries_only_when_listed(cond, listed, pb, servers, start_proxy):
    bad = servers("bad", ("fail", CODES[cond]))
    good = servers("good")
    other = "internal" if cond != "internal" else "unavailable"
    p = proxy_for(start_proxy, bad, good, retry={
        "retry_on": cond if listed else other, "num_retries": 1,
        "retry_back_off": {"base_interval": "1ms"}})
    got = calls(pb, p, 8)
    nbad = len(bad.ids())
    assert nbad >= 1
    st = p.cluster_stats("grpc")
    if listed:
        assert got == [(grpc.StatusCode.OK, "good")] * 8
        assert st["upstream_rq_retry"] == nbad
        assert sorted(good.ids()) == sorted(set(good.ids())) and set(bad.ids()) <= set(good.ids())
    else:
        codes = collections.Counter(c for c, _ in got)
        assert codes[getattr(grpc.StatusCode, CODES[cond])] == nbad
        assert st["upstream_rq_retry"] == 0
        assert not set(bad.ids()) & set(good.ids())
        assert len(bad.ids()) + len(good.ids()) == 8


def test_pushback_delays_the_retry(pb, servers, start_proxy):
    # grpc-retry-pushback-ms: 300 replaces the 1 ms back-off: the retry
    # reaches the other server no sooner than 300 ms after the first try.
    bad = servers("bad", ("fail", "UNAVAILABLE", "300"))
    good = servers("good")
    p = proxy_for(start_proxy, bad, good, retry={
        "retry_on": "unavailable", "retry_back_off": {"base_interval": "1ms"}})
    got = calls(pb, p, 4)
    assert got == [(grpc.StatusCode.OK, "good")] * 4
    first = {i: t for t, i in bad.calls}
    assert first
    for t, i in good.calls:
        if i in first:
            assert t - first[i] >= 0.3
    st = p.cluster_stats("grpc")
    assert st["upstream_rq_retry_backoff_ratelimited"] == len(first)
    assert st["upstream_rq_retry_backoff_exponential"] == 0


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_negative_or_malformed_pushback_stops_retries(value, pb, servers, start_proxy):
    bad = servers("bad", ("fail", "UNAVAILABLE", value))
    good = servers("good")
    p = proxy_for(start_proxy, bad, good, retry={"retry_on": "unavailable", "num_retries": 3})
    got = calls(pb, p, 4)
    assert sorted(c.name for c, _ in got) == ["OK", "OK", "UNAVAILABLE", "UNAVAILABLE"]
    assert p.cluster_stats("grpc")["upstream_rq_retry"] == 0
    assert len(bad.ids()) == 2


def test_per_try_timeout_of_a_grpc_call(pb, servers, start_proxy):
    # A server that never answers: its attempt ends after the per-try
    # timeout and the call succeeds at the other one; with no retry left the
    # caller gets DEADLINE_EXCEEDED from the proxy.
    slow = servers("slow", ("hang",))
    good = servers("good")
    p = proxy_for(start_proxy, slow, good, retry={
        "retry_on": "reset", "num_retries": 1, "per_try_timeout": "0.2s",
        "retry_back_off": {"base_interval": "1ms"}})
    assert calls(pb, p, 4) == [(grpc.StatusCode.OK, "good")] * 4
    assert p.cluster_stats("grpc")["upstream_rq_per_try_timeout"] == len(slow.ids())
    only = servers("only-slow", ("hang",))
    p2 = proxy_for(start_proxy, only, retry={"retry_on": "cancelled", "per_try_timeout": "0.2s"})
    assert calls(pb, p2, 1) == [(grpc.StatusCode.DEADLINE_EXCEEDED, None)]


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_retry_grpc_on_header(trusted, pb, servers, start_proxy):
    bad = servers("bad", ("fail", "RESOURCE_EXHAUSTED"))
    good = servers("good")
    p = proxy_for(start_proxy, bad, good, listener={"trust_retry_headers": trusted})
    got = calls(pb, p, 6, metadata=(("x-envoy-retry-grpc-on", "resource-exhausted"),))
    if trusted:
        assert got == [(grpc.StatusCode.OK, "good")] * 6
    else:
        assert sorted(c.name for c, _ in got) == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 3
