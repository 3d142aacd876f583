"""The HTTP/1.1 proxy, live: real client sockets -> fastmesh (uvloop thread)
-> a real origin (h11, own thread). Each test asserts on the exact response
the client gets and on what reached the origin."""
import json
import re
import socket
import threading
import time

import pytest

from support.harness import (ResponseError, build_request, chunk_body, cluster, http_config)
from support.origin import body_bytes, closed_port, sha256

UUID4 = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MiB = 1 << 20


@pytest.fixture
def proxy(start_proxy, origin):
    return start_proxy(http_config(origin))


def addr(p):
    return p.address("web")


# ---------------------------------------------------------------- basics

def test_simple_get(proxy, origin, clients):
    c = clients(addr(proxy))
    r = c.request("GET", "/hello?x=1")
    assert r.status == 200
    assert r.body == b"hello /hello?x=1\n"
    assert r.header("x-origin") == b"origin"
    assert r.header("content-length") == b"17"
    assert r.version == b"HTTP/1.1"
    [rec] = origin.received()
    assert rec.method == b"GET" and rec.target == b"/hello?x=1" and rec.http_version == b"1.1"
    assert rec.header("host") == b"example.com"
    assert rec.body == b""
    # a bodiless request is forwarded without any framing header
    assert rec.header("content-length") is None and rec.header("transfer-encoding") is None


def test_keepalive_reuses_one_upstream_connection(proxy, origin, clients):
    c = clients(addr(proxy))
    for i in range(5):
        r = c.request("GET", f"/k{i}")
        assert r.status == 200 and r.body == f"hello /k{i}\n".encode()
        assert not r.connection_close
    st = proxy.cluster_stats()
    assert st["upstream_cx_total"] == 1
    assert st["upstream_cx_reused"] == 4
    assert st["upstream_rq_total"] == 5 and st["upstream_rq_2xx"] == 5
    assert origin.connections == 1
    assert [r.target for r in origin.received()] == [f"/k{i}".encode() for i in range(5)]
    assert len({r.conn_id for r in origin.received()}) == 1
    s = proxy.stats()
    assert s["downstream_cx_total"] == 1 and s["downstream_rq_total"] == 5


def test_pipelined_requests_answered_in_order(proxy, origin, clients):
    c = clients(addr(proxy))
    c.send(build_request("GET", "/p1") + build_request("POST", "/echo", body=b"second")
           + build_request("GET", "/p3"))
    r1 = c.read_response("GET")
    r2 = c.read_response("POST")
    r3 = c.read_response("GET")
    assert (r1.status, r1.body) == (200, b"hello /p1\n")
    assert (r2.status, r2.body) == (200, b"second")
    assert (r3.status, r3.body) == (200, b"hello /p3\n")
    assert [r.target for r in origin.received()] == [b"/p1", b"/echo", b"/p3"]
    assert origin.received()[1].body == b"second"


def test_post_content_length_body(proxy, origin, clients):
    c = clients(addr(proxy))
    data = body_bytes(3000)
    r = c.request("POST", "/echo", [("Content-Type", "application/x-test")], body=data)
    assert r.status == 200 and r.body == data
    [rec] = origin.received()
    assert rec.body == data
    assert rec.header("content-length") == b"3000"
    assert rec.header("transfer-encoding") is None
    assert rec.header("content-type") == b"application/x-test"


def test_chunked_request_body_is_reframed(proxy, origin, clients):
    c = clients(addr(proxy))
    data = body_bytes(10000)
    raw = chunk_body(data, 777, trailers=b"X-Req-Trailer: yes\r\n")
    head = (b"POST /echo HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
    # split the body across several sends, cutting inside chunk-size lines
    c.send(head + raw[:5])
    time.sleep(0.05)
    c.send(raw[5:1003])
    time.sleep(0.05)
    c.send(raw[1003:])
    r = c.read_response("POST")
    assert r.status == 200 and r.body == data
    [rec] = origin.received()
    assert rec.body == data
    assert rec.header_values("transfer-encoding") == [b"chunked"]
    assert rec.header("content-length") is None
    assert rec.trailers == [(b"x-req-trailer", b"yes")]


def test_chunked_response_with_trailers_passes_through(proxy, origin, clients):
    c = clients(addr(proxy))
    r = c.request("GET", "/chunked/10/100?trailers=1")
    assert r.status == 200
    assert r.framing == "chunked"
    assert r.body == body_bytes(1000)
    assert dict(r.trailers) == {b"x-trailer-a": b"alpha", b"x-body-sha256": sha256(r.body).encode()}
    assert r.header("content-length") is None
    # the connection is still usable
    assert c.request("GET", "/after").body == b"hello /after\n"


def test_large_upload_and_download(proxy, origin, clients):
    c = clients(addr(proxy), timeout=10)
    data = body_bytes(8 * MiB)
    r = c.request("POST", "/echo", body=data)
    assert r.status == 200
    assert sha256(r.body) == sha256(data)
    [rec] = origin.received()
    assert sha256(rec.body) == sha256(data)
    r = c.request("GET", f"/bytes/{8 * MiB}")
    assert r.status == 200 and r.header("content-length") == str(8 * MiB).encode()
    assert sha256(r.body) == sha256(body_bytes(8 * MiB))


def test_large_chunked_download(proxy, origin, clients):
    c = clients(addr(proxy), timeout=10)
    r = c.request("GET", "/chunked/512/16384")
    assert r.status == 200 and r.framing == "chunked"
    assert sha256(r.body) == sha256(body_bytes(512 * 16384))


def test_slow_client_small_rcvbuf(start_proxy, origin, clients):
    # A small buffer limit on both sides: the proxy must apply backpressure
    # (pause reading the origin) rather than buffer, and still deliver every byte.
    p = start_proxy(http_config(origin, listener={"per_connection_buffer_limit": "64KiB"},
                                cluster_opts={"per_connection_buffer_limit": "64KiB"}))
    c = clients(addr(p), timeout=10, rcvbuf=16384)
    n = 8 * MiB
    c.send(build_request("GET", f"/bytes/{n}"))
    time.sleep(0.3)           # nothing read yet
    got = bytearray()
    head_end = -1
    while head_end < 0:
        got += c.sock.recv(4096)
        head_end = got.find(b"\r\n\r\n")
    head, body = bytes(got[:head_end]), got[head_end + 4:]
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"content-length: {n}".encode() in head.lower()
    reads = 0
    while len(body) < n:
        chunk = c.sock.recv(65536)
        assert chunk, f"EOF after {len(body)} body bytes"
        body += chunk
        reads += 1
        if reads % 32 == 0:
            time.sleep(0.002)
    assert len(body) == n
    assert sha256(bytes(body)) == sha256(body_bytes(n))
    # and the connection is still in a sane state
    assert c.request("GET", "/x").body == b"hello /x\n"


def test_slow_upstream_body(proxy, origin, clients):
    c = clients(addr(proxy))
    r = c.request("GET", "/slow-body")
    assert r.status == 200 and r.body == body_bytes(20000)


def test_upstream_dies_mid_body_client_sees_truncation(proxy, origin, clients):
    c = clients(addr(proxy))
    c.send(build_request("GET", "/die-mid-body"))
    raw = c.read_until_close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: 100000" in head.lower()
    # the cut response must never look complete
    assert 0 < len(body) < 100000
    assert body == body_bytes(1000)[:len(body)]


def test_upstream_reset_before_response_gives_502(proxy, origin, clients):
    c = clients(addr(proxy))
    r = c.request("GET", "/reset-before-response")
    assert r.status == 502
    assert r.body.startswith(b"upstream connect error or disconnect/reset before headers")
    assert len(origin.received()) == 1
    # the client connection remains usable
    assert c.request("GET", "/ok").body == b"hello /ok\n"


def test_connect_refused_gives_502(start_proxy, clients):
    p = start_proxy(http_config(("127.0.0.1", closed_port())))
    c = clients(addr(p))
    r = c.request("GET", "/")
    assert r.status == 502
    st = p.cluster_stats()
    assert st["upstream_cx_connect_fail"] == 1
    assert p.stats()["downstream_rq_5xx"] == 1


def test_no_route_404(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, routes=[{"match": {"prefix": "/api"}, "cluster": "origin"}]))
    c = clients(addr(p))
    r = c.request("GET", "/other")
    assert r.status == 404 and r.body == b""
    r = c.request("GET", "/api/x")
    assert r.status == 200 and r.body == b"hello /api/x\n"
    assert [r.target for r in origin.received()] == [b"/api/x"]


def test_no_route_with_body_closes(start_proxy, origin, clients):
    # The unread body must not be taken for the next request.
    p = start_proxy(http_config(origin, routes=[{"match": {"prefix": "/api"}, "cluster": "origin"}]))
    c = clients(addr(p))
    c.send(build_request("POST", "/other", body=b"GET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"))
    r = c.read_response("POST")
    assert r.status == 404 and r.connection_close
    assert c.is_closed_by_peer()
    assert origin.received() == []


def test_direct_response(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, routes=[
        {"match": {"path": "/healthz"}, "direct_response": {"status": 200, "body": "ok\n"}},
        {"match": {"prefix": "/"}, "cluster": "origin"}]))
    c = clients(addr(p))
    r = c.request("GET", "/healthz")
    assert (r.status, r.body) == (200, b"ok\n")
    assert r.header("content-length") == b"3"
    r = c.request("HEAD", "/healthz")
    assert (r.status, r.body, r.header("content-length")) == (200, b"", b"3")
    assert c.request("GET", "/x").status == 200
    assert [r.target for r in origin.received()] == [b"/x"]


def test_weighted_clusters_distribution(start_proxy, make_origin, clients):
    a, b = make_origin("A"), make_origin("B")
    cfg = http_config(routes=[{"match": {"prefix": "/"}, "weighted_clusters": [
        {"name": "ca", "weight": 3}, {"name": "cb", "weight": 1}]}],
        clusters=[cluster("ca", a), cluster("cb", b)])
    p = start_proxy(cfg)
    c = clients(addr(p))
    counts = {b"A": 0, b"B": 0}
    n = 400
    for i in range(n):
        r = c.request("GET", f"/w{i}")
        assert r.status == 200
        counts[r.header("x-origin")] += 1
    assert counts[b"A"] + counts[b"B"] == n
    assert len(a.received()) == counts[b"A"] and len(b.received()) == counts[b"B"]
    # 3:1 -> 75 % to A; 0.6..0.9 is > 6 standard deviations wide
    assert 0.6 * n < counts[b"A"] < 0.9 * n, counts


def test_header_match_routing(start_proxy, make_origin, clients):
    a, b = make_origin("stable"), make_origin("canary")
    cfg = http_config(routes=[
        {"match": {"prefix": "/", "headers": [{"name": "x-canary", "exact": "1"}]}, "cluster": "canary"},
        {"match": {"prefix": "/"}, "cluster": "stable"}],
        clusters=[cluster("stable", a), cluster("canary", b)])
    p = start_proxy(cfg)
    c = clients(addr(p))
    assert c.request("GET", "/a", [("X-Canary", "1")]).header("x-origin") == b"canary"
    assert c.request("GET", "/b", [("X-Canary", "2")]).header("x-origin") == b"stable"
    assert c.request("GET", "/c").header("x-origin") == b"stable"
    assert [r.target for r in a.received()] == [b"/b", b"/c"]
    assert [r.target for r in b.received()] == [b"/a"]


def test_head_response_keeps_content_length_no_body(proxy, origin, clients):
    c = clients(addr(proxy))
    r = c.request("HEAD", "/head-cl")
    assert r.status == 200 and r.body == b""
    assert r.header("content-length") == b"1234"
    # no stray body bytes: the next response parses cleanly
    r = c.request("GET", "/head-cl")
    assert r.body == body_bytes(1234)
    assert [r.method for r in origin.received()] == [b"HEAD", b"GET"]


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(proxy, origin, clients, status):
    c = clients(addr(proxy))
    r = c.request("GET", f"/status/{status}")
    assert r.status == status and r.body == b""
    assert r.header("transfer-encoding") is None
    if status == 204:
        assert r.header("content-length") is None
    assert c.request("GET", "/next").body == b"hello /next\n"


def test_http10_client_connection_closes(proxy, origin, clients):
    c = clients(addr(proxy))
    c.send(b"GET /bytes/100 HTTP/1.0\r\n\r\n")
    r = c.read_response()
    assert r.status == 200 and r.body == body_bytes(100)
    assert r.connection_close
    assert c.is_closed_by_peer()
    [rec] = origin.received()
    assert rec.http_version == b"1.1"          # upstream always speaks 1.1
    assert rec.header("host") is not None      # and always gets a Host


def test_http10_keepalive(proxy, origin, clients):
    c = clients(addr(proxy))
    c.send(b"GET /bytes/10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = c.read_response()
    assert r.status == 200 and r.body == body_bytes(10)
    assert r.header("connection").lower() == b"keep-alive"
    c.send(b"GET /bytes/20 HTTP/1.0\r\n\r\n")
    r = c.read_response()
    assert r.body == body_bytes(20)
    assert c.is_closed_by_peer()


@pytest.mark.parametrize("path,expected", [
    ("/close-delimited?n=5000", body_bytes(5000)),
    ("/chunked/5/100", body_bytes(500)),
])
def test_http10_client_gets_close_delimited(proxy, origin, clients, path, expected):
    c = clients(addr(proxy))
    c.send(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    r = c.read_response()
    assert r.status == 200
    assert r.framing == "close"
    assert r.header("transfer-encoding") is None and r.header("content-length") is None
    assert r.body == expected


def test_upstream_close_delimited_becomes_chunked_for_http11(proxy, origin, clients):
    c = clients(addr(proxy))
    r = c.request("GET", "/close-delimited?n=5000")
    assert r.status == 200
    assert r.framing == "chunked"
    assert r.body == body_bytes(5000)
    assert not r.connection_close
    assert c.request("GET", "/again").body == b"hello /again\n"
    assert origin.connections == 2


def test_interim_responses_passed_on(proxy, origin, clients):
    # 102 and 103 Early Hints reach an HTTP/1.1 client before the final response.
    c = clients(addr(proxy))
    r = c.request("GET", "/early-hints")
    assert r.status == 200 and r.body == b"after hints\n"
    assert [st for st, _ in r.interim] == [102, 103]
    assert (b"link", b"</style.css>; rel=preload; as=style") in r.interim[1][1]
    r10 = c.request("GET", "/early-hints")        # the connection stays in sync
    assert r10.status == 200 and len(r10.interim) == 2


def test_expect_100_continue(proxy, origin, clients):
    c = clients(addr(proxy))
    c.send(b"POST /echo HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n"
           b"Content-Length: 11\r\n\r\n")
    version, status, reason, headers, raw = c._head()
    assert status == 100, raw
    c.send(b"hello world")
    r = c.read_response("POST")
    assert r.status == 200 and r.body == b"hello world"
    [rec] = origin.received()
    assert rec.header("expect") is None
    assert rec.body == b"hello world"


def test_hop_by_hop_headers_removed(proxy, origin, clients):
    c = clients(addr(proxy))
    r = c.request("GET", "/echo", [
        ("Connection", "foo, keep-alive"), ("Foo", "bar"), ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("X-Keep", "1")])
    assert r.status == 200
    [rec] = origin.received()
    names = [n for n, _ in rec.headers]
    for hop in (b"connection", b"foo", b"keep-alive", b"proxy-connection", b"te"):
        assert hop not in names, (hop, rec.headers)
    assert rec.header("x-keep") == b"1"
    seen = json.loads(r.header("x-seen-headers"))
    assert ["x-keep", "1"] in seen


def test_x_forwarded_for_added(proxy, origin, clients):
    c = clients(addr(proxy))
    c.request("GET", "/")
    [rec] = origin.received()
    assert rec.header_values("x-forwarded-for") == [b"127.0.0.1"]


def test_x_forwarded_for_appended(proxy, origin, clients):
    c = clients(addr(proxy))
    c.request("GET", "/", [("X-Forwarded-For", "203.0.113.7")])
    [rec] = origin.received()
    assert rec.header_values("x-forwarded-for") == [b"203.0.113.7, 127.0.0.1"]


def test_x_forwarded_proto_set(proxy, origin, clients):
    c = clients(addr(proxy))
    c.request("GET", "/a")
    c.request("GET", "/b", [("X-Forwarded-Proto", "https")])
    r1, r2 = origin.received()
    assert r1.header_values("x-forwarded-proto") == [b"http"]
    assert r2.header_values("x-forwarded-proto") == [b"http"]


def test_request_id_generated_and_preserved(proxy, origin, clients):
    c = clients(addr(proxy))
    c.request("GET", "/a")
    c.request("GET", "/b")
    c.request("GET", "/c", [("X-Request-Id", "my-id-123")])
    r1, r2, r3 = origin.received()
    id1, id2 = r1.header("x-request-id"), r2.header("x-request-id")
    assert UUID4.match(id1), id1
    assert UUID4.match(id2), id2
    assert id1 != id2
    assert r3.header_values("x-request-id") == [b"my-id-123"]


def test_host_preserved(proxy, origin, clients):
    c = clients(addr(proxy))
    c.request("GET", "/", host="Example.COM:8080")
    [rec] = origin.received()
    assert rec.header_values("host") == [b"Example.COM:8080"]


def test_absolute_form_target(proxy, origin, clients):
    c = clients(addr(proxy))
    c.send(b"GET http://abs.example:81/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    r = c.read_response()
    assert r.status == 200
    [rec] = origin.received()
    assert rec.target == b"/p?q=1"
    assert rec.header_values("host") == [b"abs.example:81"]


def test_websocket_upgrade_tunnel(proxy, origin, clients):
    c = clients(addr(proxy))
    c.send(b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
           b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
    r = c.read_response(validate=False)
    assert r.status == 101
    assert r.header("upgrade") == b"websocket"
    assert r.header("connection").lower() == b"upgrade"
    c.send(b"ping-1")
    assert c.recv_exactly(6) == b"ping-1"
    big = body_bytes(300000)
    t = threading.Thread(target=c.send, args=(big,))
    t.start()
    got = c.recv_exactly(len(big))
    t.join(5)
    assert got == big
    [rec] = origin.received()
    assert rec.header("upgrade") == b"websocket"
    assert rec.header("connection").lower() == b"upgrade"
    assert rec.header("sec-websocket-version") == b"13"
    assert proxy.stats()["downstream_cx_upgrades_total"] == 1


def test_route_timeout_504(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, routes=[
        {"match": {"prefix": "/"}, "cluster": "origin", "timeout": 0.5}]))
    c = clients(addr(p))
    r = c.request("GET", "/slow-headers/3")
    assert r.status == 504
    assert r.body == b"upstream request timeout\n"
    assert r.connection_close
    assert c.is_closed_by_peer()
    assert p.cluster_stats()["upstream_rq_timeout"] == 1
    # a new connection works (the timed-out upstream connection is not reused)
    c2 = clients(addr(p))
    assert c2.request("GET", "/fine").body == b"hello /fine\n"


def test_stale_pooled_connection_is_not_used(start_proxy, make_origin, clients):
    o = make_origin("idle", idle_close_ms=150)
    p = start_proxy(http_config(o))
    c = clients(addr(p))
    assert c.request("GET", "/one").status == 200
    deadline = time.monotonic() + 3
    while o.idle_closed < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert o.idle_closed == 1
    time.sleep(0.1)
    r = c.request("GET", "/two")
    assert r.status == 200 and r.body == b"hello /two\n"
    assert o.connections == 2


def test_pooled_connection_closed_on_reuse_is_retried(proxy, origin, clients):
    # The origin closes the (reused) connection without answering: a bodiless
    # request is retried once on a fresh connection (which is reset too -> 502).
    c = clients(addr(proxy))
    assert c.request("GET", "/warm").status == 200
    r = c.request("GET", "/reset-before-response")
    assert r.status == 502
    st = proxy.cluster_stats()
    assert st["upstream_rq_retry"] == 1
    assert [r.target for r in origin.received()] == [b"/warm", b"/reset-before-response",
                                                      b"/reset-before-response"]
    assert origin.connections == 2


def test_reload_under_keepalive(start_proxy, origin, clients):
    cfg = http_config(origin)
    p = start_proxy(cfg)
    c = clients(addr(p))
    assert c.request("GET", "/new").body == b"hello /new\n"
    cfg2 = http_config(origin, routes=[
        {"match": {"path": "/new"}, "direct_response": {"status": 200, "body": "from reload\n"}},
        {"match": {"prefix": "/"}, "cluster": "origin"}])
    p.reload(cfg2)
    # the existing connection keeps working and sees the new routes
    r = c.request("GET", "/new")
    assert (r.status, r.body) == (200, b"from reload\n")
    assert c.request("GET", "/old").body == b"hello /old\n"
    c2 = clients(addr(p))
    assert c2.request("GET", "/new").body == b"from reload\n"
    assert [r.target for r in origin.received()] == [b"/new", b"/old"]


def test_reload_that_removes_the_listener_closes_its_keepalive_connections(
        start_proxy, origin, clients):
    cfg = http_config(origin)
    p = start_proxy(cfg)
    idle = clients(addr(p))
    assert idle.request("GET", "/a").status == 200       # now idle, keep-alive
    renamed = http_config(origin, listener={"name": "web2"})
    p.reload(renamed)
    assert idle.is_closed_by_peer()                       # drained like on SIGTERM
    fresh = clients(p.address("web2"))
    assert fresh.request("GET", "/b").body == b"hello /b\n"


def test_stats_by_response_class(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, routes=[
        {"match": {"path": "/direct"}, "direct_response": {"status": 302, "body": ""}},
        {"match": {"prefix": "/"}, "cluster": "origin"}]))
    c = clients(addr(p))
    assert c.request("GET", "/status/200").status == 200
    assert c.request("GET", "/status/201").status == 201
    assert c.request("GET", "/status/404").status == 404
    assert c.request("GET", "/status/503").status == 503
    assert c.request("GET", "/direct").status == 302
    s = p.stats()
    assert (s["downstream_rq_2xx"], s["downstream_rq_3xx"], s["downstream_rq_4xx"],
            s["downstream_rq_5xx"]) == (2, 1, 1, 1)
    assert s["downstream_rq_total"] == 5
    cs = p.cluster_stats()
    assert (cs["upstream_rq_2xx"], cs["upstream_rq_3xx"], cs["upstream_rq_4xx"],
            cs["upstream_rq_5xx"]) == (2, 0, 1, 1)
    assert cs["upstream_rq_total"] == 4


def test_keepalive_close_from_upstream(proxy, origin, clients):
    c = clients(addr(proxy))
    r = c.request("GET", "/keepalive-close")
    assert r.status == 200 and r.body == b"bye\n"
    # the upstream's Connection: close is hop-by-hop: the client connection stays
    assert not r.connection_close
    assert c.request("GET", "/x").body == b"hello /x\n"
    assert origin.connections == 2
    assert proxy.cluster_stats()["upstream_cx_reused"] == 0


def test_client_half_close_after_request_still_answered(proxy, origin, clients):
    c = clients(addr(proxy))
    c.send(build_request("GET", "/half"))
    c.shutdown_write()
    r = c.read_response()
    assert r.status == 200 and r.body == b"hello /half\n"
    assert c.is_closed_by_peer()


def test_websocket_server_half_closes_first(proxy, origin, clients):
    # The upstream ends its direction first, then the client ends its own:
    # both connections must then be closed (not left half-open forever).
    c = clients(addr(proxy))
    c.send(b"GET /ws?server_eof=1 HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
           b"Upgrade: websocket\r\n\r\n")
    r = c.read_response(validate=False)
    assert r.status == 101
    c.send(b"hi QUIT")
    assert c.recv_exactly(7) == b"hi QUIT"
    assert c.read_until_close() == b"BYE"      # EOF from the upstream reached us
    c.shutdown_write()
    st = proxy.wait_for(lambda s: s["downstream_cx_active"] == 0
                        and s["clusters"]["origin"]["upstream_cx_active"] == 0)
    assert st["downstream_cx_active"] == 0
    assert st["clusters"]["origin"]["upstream_cx_active"] == 0
    # The origin runs in its own thread: give it a moment to read the EOF.
    deadline = time.monotonic() + 3
    while origin.ws_client_eof == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert origin.ws_client_eof == 1


def test_route_timeout_does_not_cut_a_streaming_response(start_proxy, origin, clients):
    # The route timeout ends when the response head has arrived (docs/config.md:
    # "from the end of the request until the response head has arrived"): a
    # body that takes longer than it must still arrive whole.
    p = start_proxy(http_config(origin, routes=[
        {"match": {"prefix": "/"}, "cluster": "origin", "timeout": 0.5}]))
    c = clients(addr(p))
    r = c.request("GET", "/slow-body?pause=1.2")
    assert r.status == 200 and r.body == body_bytes(20000)
    assert p.cluster_stats()["upstream_rq_timeout"] == 0


def test_route_timeout_starts_after_the_request_body(start_proxy, origin, clients):
    # An upload that takes longer than the route timeout is not a timeout:
    # the timer starts at the end of the request.
    p = start_proxy(http_config(origin, routes=[
        {"match": {"prefix": "/"}, "cluster": "origin", "timeout": 0.5}]))
    c = clients(addr(p))
    data = body_bytes(3000)
    c.send(build_request("POST", "/echo", body=data)[:-2000])
    time.sleep(1.0)
    c.send(data[-2000:])
    r = c.read_response("POST")
    assert r.status == 200 and r.body == data
    assert p.cluster_stats()["upstream_rq_timeout"] == 0


def test_stream_idle_timeout_is_reset_by_progress(start_proxy, origin, clients):
    # 6 pieces 0.2 s apart (1.2 s in all) with a 0.5 s stream idle timeout
    # and no route timeout: progress keeps the stream alive.
    p = start_proxy(http_config(origin, listener={"stream_idle_timeout": 0.5}, routes=[
        {"match": {"prefix": "/"}, "cluster": "origin", "timeout": 0}]))
    c = clients(addr(p))
    r = c.request("GET", "/drip?n=6&interval=0.2")
    assert r.status == 200 and r.body == body_bytes(600)


def test_stream_idle_timeout_cuts_a_stalled_response(start_proxy, origin, clients):
    p = start_proxy(http_config(origin, listener={"stream_idle_timeout": 0.5}, routes=[
        {"match": {"prefix": "/"}, "cluster": "origin", "timeout": 0}]))
    c = clients(addr(p))
    c.send(build_request("GET", "/slow-body?pause=3"))
    raw = c.read_until_close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 20000" in head.lower()
    assert len(body) == 1000        # cut: never a complete-looking response
