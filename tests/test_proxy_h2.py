"""HTTP/2 through the proxy, live: h2 (the library) as the client over a raw
socket and as an h2c origin; HTTP/1.1 origins from support.origin. Covers the
translations h2->h1, h1->h2, h2->h2, header mapping, trailers, flow control
with large bodies, resets, slow readers, errors as h2 responses, h2load."""
import json
import shutil
import socket
import subprocess
import time

import pytest

from support.h2util import H2Client, H2Origin
from support.harness import cluster, http_config
from support.origin import body_bytes, closed_port

MiB = 1 << 20


@pytest.fixture
def h2origin():
    o = H2Origin("h2o")
    yield o
    o.stop()


def config(origin, h2origin, listener=None, **kw):
    """/h2/... -> the h2 origin (cluster protocol http2), the rest -> the
    HTTP/1.1 origin."""
    return http_config(origin, clusters=[cluster("h2", h2origin.address, protocol="http2"),
                                         cluster("dead", ("127.0.0.1", closed_port()))],
                       routes=[{"match": {"prefix": "/h2/"}, "cluster": "h2"},
                               {"match": {"prefix": "/gone"}, "direct_response":
                                   {"status": 410, "body": "gone\n"}},
                               {"match": {"prefix": "/nothere"}, "cluster": "dead"},
                               {"match": {"prefix": "/"}, "cluster": "origin"}],
                       listener=listener, **kw) | {}


@pytest.fixture
def proxy(start_proxy, origin, h2origin):
    return start_proxy(config(origin, h2origin))


@pytest.fixture
def client(proxy):
    cs = []

    def make(**kw):
        c = H2Client(proxy.address("web"), **kw)
        cs.append(c)
        return c
    yield make
    for c in cs:
        c.close()


# ---------------------------------------------------------------- h2 -> h1

def test_h2_get_to_h1_origin(proxy, origin, client):
    c = client()
    r = c.get("/hello?x=1", headers=[("user-agent", "t/1"), ("cookie", "a=1"), ("cookie", "b=2"),
                                     ("te", "trailers")])
    assert r.status == 200 and bytes(r.body) == b"hello /hello?x=1\n"
    assert r.header(b"x-origin") == b"origin"
    assert r.header(b"content-length") == b"17"
    # no connection-specific field toward an h2 client
    assert r.header(b"connection") is None and r.header(b"keep-alive") is None
    [rec] = origin.received()
    assert rec.method == b"GET" and rec.target == b"/hello?x=1" and rec.http_version == b"1.1"
    assert rec.header("host") == b"example.com"            # :authority -> Host
    assert rec.header("cookie") == b"a=1; b=2"              # split cookies joined
    assert rec.header("user-agent") == b"t/1"
    assert rec.header("te") is None                         # hop-by-hop in HTTP/1.1
    assert rec.header("x-forwarded-proto") == b"http"
    assert rec.header("x-forwarded-for") == b"127.0.0.1"
    assert len(rec.header("x-request-id")) == 36
    assert rec.header("content-length") is None and rec.header("transfer-encoding") is None


def test_h2_client_gets_interim_responses_from_h1_origin(proxy, origin, client):
    # Each 1xx becomes a HEADERS frame without END_STREAM before the final one.
    c = client()
    r = c.get("/early-hints")
    assert r.status == 200 and bytes(r.body) == b"after hints\n"
    assert [dict(h)[b":status"] for h in r.interim] == [b"102", b"103"]
    assert dict(r.interim[1])[b"link"] == b"</style.css>; rel=preload; as=style"
    assert b"connection" not in dict(r.interim[1])


def test_h2_post_body_to_h1_origin_with_and_without_length(proxy, origin, client):
    c = client()
    body = body_bytes(300000)
    r = c.wait(c.request("POST", "/echo", body=body, headers=[("content-length", str(len(body)))]))
    assert r.status == 200 and bytes(r.body) == body
    r2 = c.wait(c.request("POST", "/echo", body=b"abc"))
    assert r2.status == 200 and bytes(r2.body) == b"abc"
    recs = origin.received()
    assert recs[0].header("content-length") == str(len(body)).encode()
    assert recs[0].header("transfer-encoding") is None and recs[0].body == body
    # no length known: chunked toward HTTP/1.1
    assert recs[1].header("transfer-encoding") == b"chunked" and recs[1].body == b"abc"


def test_h2_large_bodies_both_ways_h1_origin(proxy, origin, client):
    c = client()
    body = body_bytes(4 * MiB)
    r = c.wait(c.request("POST", "/echo", body=body), timeout=30)
    assert r.status == 200 and len(r.body) == len(body) and bytes(r.body) == body


def test_h2_request_trailers_to_h1_chunked(proxy, origin, client):
    c = client()
    sid = c.request("POST", "/echo", body=b"data", trailers=[(b"x-sum", b"42")])
    r = c.wait(sid)
    assert r.status == 200
    [rec] = origin.received()
    assert rec.body == b"data"
    assert (b"x-sum", b"42") in [(k.lower(), v) for k, v in rec.trailers]


def test_h1_chunked_trailers_to_h2_client(proxy, origin, client):
    c = client()
    r = c.get("/chunked/3/100?trailers=1")
    assert r.status == 200 and len(r.body) == 300
    assert r.header(b"transfer-encoding") is None and r.header(b"content-length") is None
    assert dict(r.trailers).get(b"x-trailer-a") == b"alpha"


def test_many_concurrent_streams(proxy, origin, client):
    c = client()
    sids = [c.request("GET", f"/c{i}") for i in range(60)]
    rs = c.wait(*sids)
    for i, r in enumerate(rs):
        assert r.status == 200 and bytes(r.body) == f"hello /c{i}\n".encode()
    assert len(origin.received()) == 60


def test_errors_as_h2_responses(proxy, client):
    c = client()
    r = c.get("/gone")
    assert r.status == 410 and bytes(r.body) == b"gone\n"
    r = c.get("/nothere")
    assert r.status in (502, 503)
    # the connection keeps serving
    assert c.get("/ok").status == 200


def test_404_as_h2(start_proxy, origin, client):
    p = start_proxy(http_config(origin, domains=("only.example",)))
    c = H2Client(p.address("web"))
    try:
        r = c.get("/x")
        assert r.status == 404
        r = c.get("/x", authority="only.example")
        assert r.status == 200
    finally:
        c.close()


def test_connection_specific_header_is_stream_error(proxy, client):
    c = client()
    sid = c.request("GET", "/x", headers=[("connection", "keep-alive")])
    r = c.wait(sid)
    assert r.reset == 1            # PROTOCOL_ERROR, stream only
    assert c.get("/after").status == 200


def test_content_length_mismatch_is_stream_error(proxy, origin, client):
    c = client()
    sid = c.request("POST", "/echo", body=b"abc", headers=[("content-length", "10")])
    r = c.wait(sid)
    assert r.reset == 1
    assert c.get("/after").status == 200


def test_client_reset_mid_body_aborts_upstream(proxy, origin, client):
    c = client()
    sid = c.request("POST", "/echo", body=b"x" * 1000, end=False)
    time.sleep(0.2)
    c.reset(sid)
    time.sleep(0.2)
    assert c.get("/after").status == 200
    proxy.wait_for(lambda st: st["downstream_rq_active"] == 0)
    assert proxy.stats()["downstream_rq_rx_reset"] >= 1


def test_slow_h2_reader_is_bounded(start_proxy, origin, h2origin):
    # The client never acknowledges DATA: the proxy sends one window (64 KiB)
    # and buffers at most a bounded amount; the upstream is paused.
    p = start_proxy(config(origin, h2origin))
    c = H2Client(p.address("web"), auto_ack=False)
    try:
        sid = c.request("GET", "/h2/big/8388608")
        t0 = time.monotonic()
        got = 0
        while time.monotonic() - t0 < 1.5:
            try:
                c.read_some(0.3)
            except (TimeoutError, socket.timeout):
                pass
            got = len(c.responses[sid].body)
        assert got <= 65535
        assert not c.responses[sid].done
        # then read it all
        c.auto_ack = True
        c.conn.acknowledge_received_data(got, sid) if got else None
        c.conn.increment_flow_control_window(8 * MiB)
        c.conn.increment_flow_control_window(8 * MiB, sid)
        c.flush()
        r = c.wait(sid, timeout=30)
        assert len(r.body) == 8388608
    finally:
        c.close()


# ---------------------------------------------------------------- h2 -> h2

def test_h2_to_h2_origin(proxy, h2origin, client):
    c = client()
    r = c.get("/h2/x", headers=[("cookie", "a=1"), ("cookie", "b=2"), ("te", "trailers")])
    assert r.status == 200 and bytes(r.body) == b"hello /h2/x\n"
    [rec] = h2origin.received()
    assert rec.header(b":authority") == b"example.com"
    assert rec.header(b":path") == b"/h2/x" and rec.header(b":method") == b"GET"
    assert rec.header(b"te") == b"trailers"
    assert rec.header_values(b"cookie") == [b"a=1", b"b=2"]
    assert rec.header(b"x-forwarded-for") == b"127.0.0.1"
    assert rec.header(b"x-forwarded-proto") == b"http"


def test_h2_to_h2_interim_response(proxy, h2origin, client):
    c = client()
    r = c.get("/h2/early-hints")
    assert r.status == 200 and bytes(r.body) == b"after hints\n"
    assert [dict(h)[b":status"] for h in r.interim] == [b"103"]
    assert dict(r.interim[0])[b"link"] == b"</style.css>; rel=preload; as=style"


def test_h2_to_h2_large_and_trailers(proxy, h2origin, client):
    c = client()
    body = body_bytes(4 * MiB)
    r = c.wait(c.request("POST", "/h2/echo", body=body,
                         trailers=[(b"x-req-trailer", b"t1")]), timeout=30)
    assert r.status == 200 and bytes(r.body) == body
    assert dict(r.trailers).get(b"x-echo-x-req-trailer") == b"t1"
    r = c.get("/h2/trailers")
    assert dict(r.trailers) == {b"x-checksum": b"abc", b"x-final": b"yes"}


def test_h2_to_h2_many_streams_multiplexed(proxy, h2origin, client):
    c = client()
    sids = [c.request("GET", f"/h2/m{i}") for i in range(80)]
    for i, r in enumerate(c.wait(*sids)):
        assert r.status == 200 and bytes(r.body) == f"hello /h2/m{i}\n".encode()
    assert h2origin.connections == 1


def test_upstream_max_concurrent_opens_more_connections(start_proxy, origin):
    o = H2Origin("small", max_concurrent_streams=5)
    try:
        p = start_proxy(config(origin, o))
        c = H2Client(p.address("web"))
        c.get("/h2/warm")            # learn the peer's SETTINGS
        sids = [c.request("GET", "/h2/sleep/0.3") for i in range(12)]
        for r in c.wait(*sids):
            assert r.status == 200
        assert o.connections >= 3
        c.close()
    finally:
        o.stop()


def test_upstream_without_stream_limit_keeps_one_connection(start_proxy, origin):
    # SETTINGS without MAX_CONCURRENT_STREAMS means no limit: once the pool has
    # seen them, 150 concurrent streams share the one connection instead of
    # the 100 assumed before the peer's first SETTINGS.
    o = H2Origin("unlimited", max_concurrent_streams=0)
    try:
        p = start_proxy(config(origin, o))
        clients = [H2Client(p.address("web")) for _ in range(2)]   # 100 streams each at most
        assert clients[0].get("/h2/warm").status == 200
        sids = [[c.request("GET", "/h2/sleep/0.3") for _ in range(75)] for c in clients]
        for c, ids in zip(clients, sids):
            for r in c.wait(*ids, timeout=30):
                assert r.status == 200
        assert len(o.received()) == 151
        assert o.connections == 1
        for c in clients:
            c.close()
    finally:
        o.stop()


def test_goaway_with_first_settings_retries_every_stream(start_proxy, origin):
    # 150 streams toward a new endpoint: 100 on one connection (the limit
    # assumed before its SETTINGS), 50 on a second. The first connection's
    # first bytes are SETTINGS and GOAWAY (last stream 0): its 100 streams are
    # refused and must be retried elsewhere, not fail.
    o = H2Origin("goaway", goaway_first=True)
    try:
        p = start_proxy(config(origin, o))
        clients = [H2Client(p.address("web")) for _ in range(2)]
        sids = [[c.request("GET", "/h2/x") for _ in range(75)] for c in clients]
        for c, ids in zip(clients, sids):
            for r in c.wait(*ids, timeout=30):
                assert r.status == 200 and bytes(r.body) == b"hello /h2/x\n"
        assert o.connections >= 2
        for c in clients:
            c.close()
    finally:
        o.stop()


def _closed_loop(p, seconds=1.0, streams=32, conns=2):
    # conns clients keep `streams` requests each in flight (64 > BATCH_MIN_ACTIVE
    # = 32), a new one as each completes, for `seconds`.
    clients = [H2Client(p.address("web")) for _ in range(conns)]
    live = [{c.request("GET", "/h2/x") for _ in range(streams)} for c in clients]
    done = 0
    deadline = time.monotonic() + seconds
    give_up = deadline + 30
    while any(live):
        assert time.monotonic() < give_up, "streams never completed"
        for c, ids in zip(clients, live):
            if not ids:
                continue
            try:
                c.read_some(0.05)
            except TimeoutError:
                continue         # nothing for this client yet: serve the other
            for sid in [s for s in ids if c.responses[s].done]:
                r = c.responses[sid]
                assert r.status == 200 and bytes(r.body) == b"hello /h2/x\n"
                ids.discard(sid)
                done += 1
                if time.monotonic() < deadline:
                    ids.add(c.request("GET", "/h2/x"))
    for c in clients:
        c.close()
    return done


@pytest.mark.parametrize("owns_loop,window,batches", [
    (True, "10ms", True),      # a worker process's own loop: batches under load
    (True, 0, False),          # batch_window: 0 turns it off
    (False, "10ms", False),    # embedded in someone else's loop: never sleeps
])
def test_batching_under_load(start_proxy, origin, h2origin, owns_loop, window, batches):
    p = start_proxy(config(origin, h2origin) | {"batch_window": window}, owns_loop=owns_loop)
    assert _closed_loop(p) > 64
    sleeps = p.stats()["loop_batch_sleeps"]
    assert (sleeps > 0) if batches else (sleeps == 0), sleeps
    # quiet again: single requests are served (no batching without load)
    c = H2Client(p.address("web"))
    assert c.get("/h2/after").status == 200
    c.close()


def test_h2_upstream_connect_failure(start_proxy, origin):
    dead = type("D", (), {"address": ("127.0.0.1", closed_port())})()
    p = start_proxy(config(origin, dead))
    c = H2Client(p.address("web"))
    try:
        r = c.get("/h2/x")
        assert r.status in (502, 503)
    finally:
        c.close()


# ---------------------------------------------------------------- h1 -> h2

def test_h1_client_to_h2_origin(proxy, h2origin, clients):
    c = clients(proxy.address("web"))
    r = c.request("GET", "/h2/hello", headers=[("Cookie", "a=1"), ("TE", "trailers"),
                                               ("Connection", "keep-alive, x-drop"),
                                               ("X-Drop", "1")])
    assert r.status == 200 and r.body == b"hello /h2/hello\n"
    body = body_bytes(2 * MiB)
    r2 = c.request("POST", "/h2/echo", body=body)
    assert r2.status == 200 and r2.body == body
    r3 = c.request("GET", "/h2/trailers")
    assert r3.status == 200 and r3.body == b"with trailers\n"
    assert (b"x-checksum", b"abc") in [(k.lower(), v) for k, v in r3.trailers]
    recs = h2origin.received()
    assert recs[0].header(b":authority") == b"example.com"
    assert recs[0].header(b"host") is None and recs[0].header(b"connection") is None
    assert recs[0].header(b"x-drop") is None
    assert recs[0].header(b"te") == b"trailers"
    assert recs[1].header(b"content-length") == str(len(body)).encode()
    assert bytes(recs[1].body) == body


def test_h1_client_gets_interim_response_from_h2_origin(proxy, h2origin, clients):
    c = clients(proxy.address("web"))
    r = c.request("GET", "/h2/early-hints")
    assert r.status == 200 and r.body == b"after hints\n"
    assert [st for st, _ in r.interim] == [103]
    assert (b"link", b"</style.css>; rel=preload; as=style") in r.interim[0][1]


def test_h1_chunked_with_trailers_to_h2_origin(proxy, h2origin, clients):
    c = clients(proxy.address("web"))
    c.send(b"POST /h2/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n0\r\nX-Trail: yes\r\n\r\n")
    r = c.read_response()
    assert r.status == 200 and r.body == b"hello"
    [rec] = h2origin.received()
    assert bytes(rec.body) == b"hello" and (b"x-trail", b"yes") in rec.trailers


# ---------------------------------------------------------------- drain

def test_drain_finishes_in_flight_streams(start_proxy, origin, h2origin):
    # The h2 library closes its state machine on the first GOAWAY and cannot
    # take the PING of the two-phase shutdown: the client here is our own
    # codec's h2-like wrapper (tested against h2 in test_h2_codec.py).
    from fastmesh import _h2
    p = start_proxy(config(origin, h2origin))
    sock = socket.create_connection(p.address("web"), timeout=5)
    conn = _h2.Connection(client_side=True)
    conn.initiate_connection()
    sids = list(range(1, 11, 2))
    for sid in sids:
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                                (":authority", "a"), (":path", "/h2/sleep/0.5")], end_stream=True)
    sock.sendall(conn.data_to_send())
    time.sleep(0.1)
    p.call(_start_drain(p))
    status, ended, goaways = _serve_until_closed(sock, conn)
    assert status == {sid: b"200" for sid in sids}
    assert ended == set(sids)
    # two-phase: GOAWAY(2^31-1) then GOAWAY(last stream id), then the close
    assert goaways and goaways[-1].error_code == 0 and goaways[-1].last_stream_id == 9


def test_reload_that_removes_the_listener_drains_its_h2_connections(start_proxy, origin, h2origin):
    # A reload that renames the listener removes "web": its HTTP/2 connection
    # gets the two-phase GOAWAY and still finishes the streams in flight.
    from fastmesh import _h2
    cfg = config(origin, h2origin)
    p = start_proxy(cfg)
    sock = socket.create_connection(p.address("web"), timeout=5)
    conn = _h2.Connection(client_side=True)
    conn.initiate_connection()
    sids = [1, 3, 5]
    for sid in sids:
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                                (":authority", "a"), (":path", "/h2/sleep/0.5")], end_stream=True)
    sock.sendall(conn.data_to_send())
    time.sleep(0.1)
    renamed = json.loads(json.dumps(cfg))
    renamed["listeners"][0]["name"] = "web2"
    p.reload(renamed)
    status, ended, goaways = _serve_until_closed(sock, conn)
    assert status == {sid: b"200" for sid in sids}
    assert ended == set(sids)
    assert goaways and goaways[-1].error_code == 0 and goaways[-1].last_stream_id == 5
    # the renamed listener serves new connections
    c = H2Client(p.address("web2"))
    try:
        assert c.get("/gone").status == 410
    finally:
        c.close()


def _serve_until_closed(sock, conn):
    """Drive our codec's client until the proxy closes the connection (at
    most 5 s): statuses and ended streams by id, and the GOAWAYs received."""
    from fastmesh import _h2
    status, ended, goaways = {}, set(), []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, _h2.ResponseReceived):
                status[ev.stream_id] = dict(ev.headers)[b":status"]
            elif isinstance(ev, _h2.StreamEnded):
                ended.add(ev.stream_id)
            elif isinstance(ev, _h2.ConnectionTerminated):
                goaways.append(ev)
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except OSError:
                pass
    sock.close()
    return status, ended, goaways


def _start_drain(p):
    async def go():
        p.proxy._dataplane.worker.start_drain()
    return go()


# ---------------------------------------------------------------- h2load

@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load not installed")
def test_h2load_smoke(proxy, origin):
    host, port = proxy.address("web")
    out = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "10",
                          f"http://{host}:{port}/"], capture_output=True, text=True, timeout=60)
    assert "400 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout
    assert "status codes: 400 2xx" in out.stdout


def test_cluster_protocol_auto_follows_the_client(start_proxy, origin, h2origin, clients):
    # auto = the client's protocol: h2 clients reach the h2 origin over h2,
    # HTTP/1.1 clients reach the HTTP/1.1 origin over HTTP/1.1.
    cfg = http_config(clusters=[cluster("a2", h2origin.address, protocol="auto"),
                                cluster("a1", origin.address, protocol="auto")],
                      routes=[{"match": {"prefix": "/two"}, "cluster": "a2"},
                              {"match": {"prefix": "/"}, "cluster": "a1"}])
    p = start_proxy(cfg)
    c = H2Client(p.address("web"))
    try:
        assert c.get("/two").status == 200
        assert h2origin.received()[0].header(b":path") == b"/two"
    finally:
        c.close()
    r = clients(p.address("web")).request("GET", "/one")
    assert r.status == 200 and origin.received()[0].http_version == b"1.1"


def test_refused_stream_is_retried_on_another_endpoint(start_proxy, origin):
    # Two h2 endpoints, one refusing every stream (REFUSED_STREAM: not
    # processed, safe to retry). Each refused request goes again, to the
    # other endpoint (the balancer's exclusion pick), never back to the
    # refusing one: every request succeeds.
    bad = H2Origin("refuser", refuse_streams=True)
    good = H2Origin("good")
    try:
        p = start_proxy(http_config(origin, clusters=[cluster("h2", bad.address, good.address,
                                                              protocol="http2")],
                                    routes=[{"match": {"prefix": "/"}, "cluster": "h2"}]))
        c = H2Client(p.address("web"))
        for r in c.wait(*[c.request("GET", f"/r{i}") for i in range(20)], timeout=30):
            assert r.status == 200
        assert len(good.received()) == 20
        refused = len(bad.received())
        assert refused >= 1
        assert p.cluster_stats("h2")["upstream_rq_retry"] == refused
        c.close()
    finally:
        bad.stop()
        good.stop()
