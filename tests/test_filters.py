"""The HTTP filter API (issue 8): Python filters on a listener's chain,
loaded from config by import path, through a live proxy with real HTTP/1.1
and HTTP/2 clients and a real origin. Each behaviour is checked on both
client protocols: the chain is one, protocol-neutral."""
from __future__ import annotations

import pytest

import fastmesh
from support.harness import http_config
from support.h2util import H2Client

AUTH = {"name": "auth", "import": "filters_demo:HeaderAuth",
        "config": {"header": "x-api-key", "keys": ["k1", "k2"]}}


def with_filters(origin, *filters):
    return http_config(origin, listener={"http_filters": list(filters)})


@pytest.fixture
def h2clients():
    made = []

    def make(address):
        c = H2Client(address)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def get(proto, p, clients, h2clients, path, headers=()):
    """(status, {lower name: value}, body) over HTTP/1.1 or HTTP/2."""
    if proto == "h1":
        r = clients(p.address("web")).request("GET", path, headers=list(headers))
        return r.status, {k.decode().lower(): v for k, v in r.headers}, r.body
    r = h2clients(p.address("web")).get(path, headers=[(k.lower(), v) for k, v in headers])
    return r.status, {k.decode(): v for k, v in r.headers}, bytes(r.body)


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_auth_filter_refuses_before_the_upstream(proto, start_proxy, origin, clients, h2clients):
    p = start_proxy(with_filters(origin, AUTH))
    status, hdrs, body = get(proto, p, clients, h2clients, "/secret")
    assert status == 401 and body == b"missing or bad API key\n"
    assert hdrs["www-authenticate"] in (b"ApiKey", "ApiKey")
    status, _, _ = get(proto, p, clients, h2clients, "/secret", [("x-api-key", "wrong")])
    assert status == 401
    assert origin.received() == []          # nothing reached the upstream
    assert p.cluster_stats()["upstream_rq_total"] == 0


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_auth_filter_passes_and_rewrites_headers(proto, start_proxy, origin, clients, h2clients):
    p = start_proxy(with_filters(origin, AUTH))
    status, hdrs, body = get(proto, p, clients, h2clients, "/ok?q=1",
                             [("X-Api-Key", "k2"), ("x-authenticated", "forged")])
    assert status == 200 and body == b"hello /ok?q=1\n"
    assert hdrs["x-auth"] in (b"ok", "ok")
    [rec] = origin.received()
    assert rec.header("x-api-key") is None                 # removed
    assert rec.header_values("x-authenticated") == [b"yes"]  # set, the forged one gone
    assert rec.header("x-forwarded-proto") == b"http"


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_async_filter_pauses_then_continues_or_denies(proto, start_proxy, origin, clients,
                                                      h2clients):
    p = start_proxy(with_filters(origin, {"name": "lookup", "import": "filters_demo:AsyncLookup"}))
    status, _, body = get(proto, p, clients, h2clients, "/a?b=c")
    assert status == 200 and body == b"hello /a?b=c\n"
    [rec] = origin.received()
    assert rec.header("x-looked-up") == b"/a?b=c"
    status, _, body = get(proto, p, clients, h2clients, "/d", [("x-deny", "1")])
    assert status == 403 and body == b"denied\n"
    assert len(origin.received()) == 1


def test_async_filter_holds_the_request_body_until_it_continues(start_proxy, origin, clients):
    p = start_proxy(with_filters(origin, {"name": "lookup", "import": "filters_demo:AsyncLookup",
                                          "config": {"delay": 0.05}}))
    c = clients(p.address("web"))
    body = b"x" * 200_000
    r = c.request("POST", "/upload", body=body)
    assert r.status == 200
    [rec] = origin.received()
    assert rec.body == body and rec.header("x-looked-up") == b"/upload"


def test_async_filter_holds_h2_request_data(start_proxy, origin, h2clients):
    p = start_proxy(with_filters(origin, {"name": "lookup", "import": "filters_demo:AsyncLookup",
                                          "config": {"delay": 0.05}}))
    c = h2clients(p.address("web"))
    body = b"y" * 30_000
    sid = c.request("POST", "/h2up", body=body, trailers=None)
    r = c.wait(sid)
    assert r.status == 200
    [rec] = origin.received()
    assert rec.body == body and rec.header("x-looked-up") == b"/h2up"


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_response_and_done_hooks(proto, start_proxy, origin, clients, h2clients):
    p = start_proxy(with_filters(origin, {"name": "rec", "import": "filters_demo:Recorder"}))
    status, hdrs, _ = get(proto, p, clients, h2clients, "/seen")
    assert status == 200 and hdrs["x-seen-status"] in (b"200", "200")
    status, hdrs, _ = get(proto, p, clients, h2clients, "/seen-local", [("host", "x")])
    flt = p._in_loop(lambda: p.proxy._dataplane.worker.listeners["web"].conf.filters[0])
    p.wait_for(lambda s: ("done", "/seen-local") in flt.seen)
    assert ("done", "/seen-local") in flt.seen
    assert ("response", "/seen", 200) in flt.seen and ("done", "/seen") in flt.seen


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_filter_exception_answers_500_and_the_proxy_keeps_serving(proto, start_proxy, origin,
                                                                   clients, h2clients):
    p = start_proxy(with_filters(origin, {"name": "broken", "import": "filters_demo:Broken"}))
    for _ in range(3):
        status, _, body = get(proto, p, clients, h2clients, "/x")
        assert status == 500 and body == b"filter error\n"
    assert origin.received() == []
    assert any("boom" in repr(e.get("exception")) for e in p.loop_errors)
    p.loop_errors.clear()


def test_filters_run_in_order_and_a_stop_ends_the_chain(start_proxy, origin, clients):
    p = start_proxy(with_filters(origin, AUTH, {"name": "rec", "import": "filters_demo:Recorder"}))
    c = clients(p.address("web"))
    assert c.request("GET", "/no-key").status == 401
    assert c.request("GET", "/key", headers=[("x-api-key", "k1")]).status == 200
    flt = p._in_loop(lambda: p.proxy._dataplane.worker.listeners["web"].conf.filters[1])
    p.wait_for(lambda s: ("done", "/key") in flt.seen)
    assert ("done", "/key") in flt.seen
    # the recorder never saw the refused request (auth stopped first), but its
    # done hook ran for it (as an access log's would)
    assert not any(e[1] == "/no-key" for e in flt.seen if e[0] == "response")
    assert ("done", "/no-key") in flt.seen
    assert ("response", "/key", 200) in flt.seen


def test_bad_filter_import_is_a_config_error_and_the_old_config_keeps_serving(
        start_proxy, origin, clients):
    p = start_proxy(http_config(origin))
    bad = [{"name": "x", "import": "filters_demo:Nope"},
           {"name": "x", "import": "no_such_module_xyz:F"},
           {"name": "x", "import": "filters_demo:NotAFilter"}]
    for f in bad:
        with pytest.raises(fastmesh.ConfigError) as ei:
            p.reload(with_filters(origin, f))
        assert "http_filters" in str(ei.value)
    assert clients(p.address("web")).request("GET", "/still").status == 200


def test_embedding_api_accepts_filter_objects(start_proxy, origin, clients):
    class Tag(fastmesh.HttpFilter):
        def on_request_headers(self, request):
            request.add_header("x-tag", request.method)

    p = start_proxy(http_config(origin))
    p.call(p.proxy.add_filter("web", Tag()))
    assert clients(p.address("web")).request("GET", "/t").status == 200
    [rec] = origin.received()
    assert rec.header("x-tag") == b"GET"


def test_request_view_is_dead_after_the_request(start_proxy, origin, clients):
    kept = []

    class Keep(fastmesh.HttpFilter):
        def on_request_headers(self, request):
            kept.append(request)

    p = start_proxy(http_config(origin))
    p.call(p.proxy.add_filter("web", Keep()))
    assert clients(p.address("web")).request("GET", "/k").status == 200
    p.wait_requests_done()
    with pytest.raises(RuntimeError):
        kept[0].path


def post(proto, p, clients, h2clients, path, body):
    """(status, body) of a POST over HTTP/1.1 or HTTP/2."""
    if proto == "h1":
        r = clients(p.address("web")).request("POST", path, body=body)
        return r.status, r.body
    c = h2clients(p.address("web"))
    r = c.wait(c.request("POST", path, body=body))
    return r.status, bytes(r.body)


def chain_filter(p, i=0):
    return p._in_loop(lambda: p.proxy._dataplane.worker.listeners["web"].conf.filters[i])


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_body_hooks_see_every_byte_both_ways(proto, start_proxy, origin, clients, h2clients):
    from support.origin import body_bytes, sha256
    p = start_proxy(with_filters(origin, {"name": "dig", "import": "filters_demo:BodyDigest"}))
    up = body_bytes(150_000)
    status, body = post(proto, p, clients, h2clients, "/echo", up)
    assert status == 200 and body == up
    status, body = get(proto, p, clients, h2clients, "/chunked/30/1000")[::2]
    assert status == 200 and body == body_bytes(30_000)
    flt = chain_filter(p)
    p.wait_for(lambda s: len(flt.seen) == 2)
    assert flt.seen[0] == ("/echo", sha256(up), sha256(up))
    assert flt.seen[1] == ("/chunked/30/1000", sha256(b""), sha256(body_bytes(30_000)))


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_request_body_hook_can_stop_the_request(proto, start_proxy, origin, clients, h2clients):
    p = start_proxy(with_filters(origin, {"name": "limit", "import": "filters_demo:BodyLimit",
                                          "config": {"limit": 1000}}))
    status, body = post(proto, p, clients, h2clients, "/echo", b"x" * 900)
    assert status == 200 and body == b"x" * 900
    # Over the limit: the filter's 413, the attempt cancelled (the origin may
    # have seen the head and part of the body, never a complete request).
    status, body = post(proto, p, clients, h2clients, "/echo", b"y" * 200_000)
    assert status == 413 and body == b"body too large\n"
    assert [r.body for r in origin.received()] == [b"x" * 900]
    # the proxy keeps serving
    assert get(proto, p, clients, h2clients, "/after")[0] == 200


def flt_spec(name, **config):
    return {"name": name.lower(), "import": f"filters_demo:{name}", "config": config}


def test_body_hooks_read_the_head_of_their_own_request(start_proxy, origin, clients):
    # Only a body hook on the chain: the head must still be readable from it,
    # on a keep-alive connection whose read buffer is reused between requests.
    p = start_proxy(with_filters(origin, flt_spec("BodyHeadReader")))
    c = clients(p.address("web"))
    for i in range(3):
        r = c.request("POST", f"/b{i}?q={i}", headers=[("x-n", str(i))], body=b"z" * (i + 1) * 5000)
        assert r.status == 200
    flt = chain_filter(p)
    assert {e for e in flt.seen} == {("POST", f"/b{i}?q={i}", str(i)) for i in range(3)}


def test_done_hook_of_a_refused_request_does_not_see_the_previous_one(start_proxy, origin,
                                                                       clients):
    p = start_proxy(with_filters(origin, flt_spec("Recorder")))
    c = clients(p.address("web"))
    assert c.request("GET", "/good").status == 200
    c.send(b"GET /bad HTTP/1.1\r\nHost: example.com\r\nContent-Length: x\r\n\r\n")
    assert c.read_response().status == 400
    flt = chain_filter(p)
    p.wait_for(lambda s: len([e for e in flt.seen if e[0] == "done"]) == 2)
    assert [e for e in flt.seen if e[0] == "done"] == [("done", "/good"), ("done", "")]


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_respond_from_the_response_phase_is_an_error_not_a_second_response(
        proto, start_proxy, origin, clients, h2clients):
    p = start_proxy(with_filters(origin, flt_spec("LateRespond")))
    status, _, body = get(proto, p, clients, h2clients, "/late")
    assert status == 200 and body == b"hello /late\n"
    # the same connection / a new one still serves exactly one response each
    status, _, body = get(proto, p, clients, h2clients, "/late2")
    assert status == 200 and body == b"hello /late2\n"
    p.wait_for(lambda s: len(p.loop_errors) >= 2)
    assert len(p.loop_errors) >= 2
    assert all("response is under way" in repr(e.get("exception")) for e in p.loop_errors)
    p.loop_errors.clear()


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_request_body_stop_ends_the_upstream_attempt(proto, start_proxy, origin, clients,
                                                     h2clients):
    p = start_proxy(with_filters(origin, flt_spec("BodyLimit", limit=1000)))
    status, _ = post(proto, p, clients, h2clients, "/echo", b"y" * 300_000)
    assert status == 413
    st = p.wait_for(lambda s: s["clusters"]["origin"]["upstream_rq_active"] == 0
                    and s["clusters"]["origin"]["upstream_cx_active"] == 0)
    assert st["clusters"]["origin"]["upstream_rq_active"] == 0
    assert st["clusters"]["origin"]["upstream_cx_active"] == 0


def test_open_http2_connections_get_filters_added_later(start_proxy, origin, h2clients):
    p = start_proxy(http_config(origin))
    c = h2clients(p.address("web"))
    assert c.get("/before").status == 200
    p.call(p.proxy.add_filter("web", __import__("filters_demo").HeaderAuth(keys=["k"])))
    assert c.get("/after").status == 401           # same connection
    assert c.get("/after", headers=[("x-api-key", "k")]).status == 200


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_a_filter_that_never_resumes_times_out(proto, start_proxy, origin, clients, h2clients):
    p = start_proxy(http_config(origin, listener={"http_filters": [flt_spec("Forever")],
                                                  "stream_idle_timeout": "200ms"}))
    status, _, _ = get(proto, p, clients, h2clients, "/forever")
    assert status == 504
    assert origin.received() == []


@pytest.mark.parametrize("bad", ["code", "framing"])
def test_bad_filter_answers_are_500(bad, start_proxy, origin, clients):
    p = start_proxy(with_filters(origin, flt_spec("BadAnswers")))
    c = clients(p.address("web"))
    r = c.request("GET", "/x", headers=[("x-bad", bad)])
    assert r.status == 500 and r.body == b"filter error\n"
    assert c.request("GET", "/y").status == 200
    assert [r.target for r in origin.received()] == [b"/y"]
    assert len(p.loop_errors) == 1
    p.loop_errors.clear()


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_a_body_hook_that_raises_answers_500_and_ends_the_attempt(proto, start_proxy, origin,
                                                                  clients, h2clients):
    p = start_proxy(with_filters(origin, flt_spec("BodyBoom")))
    status, body = post(proto, p, clients, h2clients, "/echo", b"z" * 300_000)
    assert status == 500 and body == b"filter error\n"
    st = p.wait_for(lambda s: s["clusters"]["origin"]["upstream_rq_active"] == 0
                    and s["clusters"]["origin"]["upstream_cx_active"] == 0)
    assert st["clusters"]["origin"]["upstream_rq_active"] == 0
    assert st["clusters"]["origin"]["upstream_cx_active"] == 0
    assert any("body boom" in repr(e.get("exception")) for e in p.loop_errors)
    p.loop_errors.clear()
