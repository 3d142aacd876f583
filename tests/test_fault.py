"""envoy.filters.http.fault through a live proxy (filter_fault.pxi): fixed
delays (the chain paused, resumed by a timer), aborts with an HTTP or a gRPC
status, percentages, header matchers, per-route settings,
max_active_faults, a client leaving during a delay; validation.
"""
import socket
import struct
import time

import pytest

from support.h2util import H2Client
from support.harness import build_request, http_config

from fastmesh.control.config import ConfigError, parse_config
from fastmesh.control.dump import config_to_dict

FAULT = "envoy.filters.http.fault"


def pct(n, den="HUNDRED"):
    return {"numerator": n, "denominator": den}


def abort(status=503, n=100, **kw):
    return {"abort": {"http_status": status, "percentage": pct(n)}, **kw}


def delay(d="300ms", n=100, **kw):
    return {"delay": {"fixed_delay": d, "percentage": pct(n)}, **kw}


def proxy_cfg(origin, fault=None, routes=None):
    f = {"name": FAULT}
    if fault is not None:
        f["typed_config"] = fault
    return http_config(origin, routes=routes, listener={"http_filters": [f]})


def fstats(p):
    for b in p._in_loop(p.proxy.stats_snapshot)["blocks"]:
        if b["prefix"] == "fault":
            return b["values"]
    return {}


def test_abort_http_status(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, abort(503)))
    c = clients(p.address("web"))
    r = c.request("GET", "/echo")
    assert r.status == 503 and r.body == b"fault filter abort"
    assert origin.received() == []
    assert fstats(p)["aborts_injected"] == 1


def test_abort_h2_client(start_proxy, origin):
    p = start_proxy(proxy_cfg(origin, abort(418)))
    c = H2Client(p.address("web"))
    try:
        r = c.wait(c.request("GET", "/echo"))
        assert r.status == 418 and bytes(r.body) == b"fault filter abort"
    finally:
        c.close()


def test_zero_percent_never_aborts(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, abort(503, n=0)))
    c = clients(p.address("web"))
    assert [c.request("GET", "/echo").status for _ in range(20)] == [200] * 20
    assert fstats(p) == {}


def test_percentage_aborts_some(start_proxy, origin, clients):
    # 50 of 100 (denominator TEN_THOUSAND: 5000/10000): both outcomes occur
    # in 200 requests (each missing has probability 2**-200).
    p = start_proxy(proxy_cfg(origin, {"abort": {"http_status": 503,
                                                 "percentage": pct(5000, "TEN_THOUSAND")}}))
    c = clients(p.address("web"))
    got = [c.request("GET", "/echo").status for _ in range(200)]
    assert got.count(503) > 0 and got.count(200) > 0
    assert fstats(p)["aborts_injected"] == got.count(503)


def test_fixed_delay_h1(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, delay("300ms")))
    c = clients(p.address("web"))
    t0 = time.monotonic()
    r = c.request("GET", "/echo")
    assert time.monotonic() - t0 >= 0.3
    assert r.status == 200
    assert len(origin.received()) == 1
    st = fstats(p)
    assert st["delays_injected"] == 1 and st["active_faults"] == 0


def test_fixed_delay_h2_with_body(start_proxy, origin):
    # The body that arrives while the request is held goes upstream after the delay.
    p = start_proxy(proxy_cfg(origin, delay("300ms")))
    c = H2Client(p.address("web"))
    try:
        t0 = time.monotonic()
        r = c.wait(c.request("POST", "/echo", body=b"x" * 5000))
        assert time.monotonic() - t0 >= 0.3
        assert r.status == 200 and bytes(r.body) == b"x" * 5000
    finally:
        c.close()


def test_fixed_delay_h1_with_body(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, delay("300ms")))
    c = clients(p.address("web"))
    t0 = time.monotonic()
    r = c.request("POST", "/echo", body=b"y" * 20000)
    assert time.monotonic() - t0 >= 0.3
    assert r.status == 200 and r.body == b"y" * 20000
    assert fstats(p)["delays_injected"] == 1


def test_delay_then_abort(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, {**delay("300ms"), **abort(502)}))
    c = clients(p.address("web"))
    t0 = time.monotonic()
    r = c.request("GET", "/echo")
    assert time.monotonic() - t0 >= 0.3
    assert r.status == 502
    assert origin.received() == []
    st = fstats(p)
    assert st["delays_injected"] == 1 and st["aborts_injected"] == 1


def test_header_matchers_select_requests(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, abort(503, headers=[{"name": "x-fault", "exact": "yes"}])))
    c = clients(p.address("web"))
    assert c.request("GET", "/echo").status == 200
    assert c.request("GET", "/echo", headers=[("x-fault", "no")]).status == 200
    assert c.request("GET", "/echo", headers=[("X-Fault", "yes")]).status == 503


def test_per_route_settings(start_proxy, origin, clients):
    routes = [{"match": {"prefix": "/faulty"}, "cluster": "origin",
               "typed_per_filter_config": {FAULT: abort(504)}},
              {"match": {"prefix": "/"}, "cluster": "origin"}]
    p = start_proxy(proxy_cfg(origin, None, routes=routes))
    c = clients(p.address("web"))
    assert c.request("GET", "/faulty/x").status == 504
    assert c.request("GET", "/fine").status == 200


def test_route_settings_replace_the_listeners(start_proxy, origin, clients):
    routes = [{"match": {"prefix": "/calm"}, "cluster": "origin",
               "typed_per_filter_config": {FAULT: abort(503, n=0)}},
              {"match": {"prefix": "/"}, "cluster": "origin"}]
    p = start_proxy(proxy_cfg(origin, abort(503), routes=routes))
    c = clients(p.address("web"))
    assert c.request("GET", "/calm").status == 200
    assert c.request("GET", "/other").status == 503


def test_max_active_faults(start_proxy, origin):
    # One delay at a time: a second request while the first is held goes through.
    p = start_proxy(proxy_cfg(origin, delay("1s", max_active_faults=1)))
    c = H2Client(p.address("web"))
    try:
        t0 = time.monotonic()
        s1 = c.request("GET", "/echo")
        p.wait_for(lambda st: fstats(p).get("active_faults") == 1)
        s2 = c.request("GET", "/echo")
        r2 = c.wait(s2)
        assert r2.status == 200
        r1 = c.wait(s1)
        assert r1.status == 200 and time.monotonic() - t0 >= 1.0
        st = fstats(p)
        assert st["delays_injected"] == 1 and st["faults_overflow"] == 1
    finally:
        c.close()


def test_client_leaving_during_a_delay_frees_it(start_proxy, origin):
    # The HTTP/2 connection goes away while a stream is held: its timer goes,
    # nothing reaches the upstream. (An HTTP/1.1 client is not read while
    # its request is held, so its leaving is noticed when the delay ends.)
    p = start_proxy(proxy_cfg(origin, delay("10s")))
    c = H2Client(p.address("web"))
    c.request("GET", "/echo")
    p.wait_for(lambda s: fstats(p).get("active_faults") == 1)
    assert fstats(p)["active_faults"] == 1
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    p.wait_for(lambda s: fstats(p).get("active_faults") == 0 and s["downstream_rq_active"] == 0)
    assert fstats(p)["active_faults"] == 0
    assert p.stats()["downstream_rq_active"] == 0
    assert origin.received() == []


def test_h2_stream_reset_during_a_delay(start_proxy, origin):
    p = start_proxy(proxy_cfg(origin, delay("10s")))
    c = H2Client(p.address("web"))
    try:
        sid = c.request("GET", "/echo")
        p.wait_for(lambda s: fstats(p).get("active_faults") == 1)
        c.reset(sid)
        p.wait_for(lambda s: fstats(p).get("active_faults") == 0)
        assert fstats(p)["active_faults"] == 0
        assert origin.received() == []          # the reset request never went upstream
    finally:
        c.close()


def test_grpc_abort_status(start_proxy, origin):
    grpc = pytest.importorskip("grpc")
    p = start_proxy(proxy_cfg(origin, {"abort": {"grpc_status": 7, "percentage": pct(100)}}))
    host, port = p.address("web")
    with grpc.insecure_channel(f"{host}:{port}") as ch:
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/t.S/M")(b"", timeout=5)
        assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert origin.received() == []


def test_grpc_status_abort_for_plain_http_is_503(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, {"abort": {"grpc_status": 14, "percentage": pct(100)}}))
    c = clients(p.address("web"))
    assert c.request("GET", "/echo").status == 503


# ------------------------------------------------------------ config

def _yaml(typed: str) -> str:
    return f"""
listeners:
- name: web
  port: 8080
  http_filters:
  - name: {FAULT}
    typed_config:
{typed}
  virtual_hosts:
  - name: a
    domains: ["*"]
    routes:
    - match: {{prefix: /}}
      cluster: c
clusters:
- name: c
  endpoints: [{{address: 127.0.0.1, port: 1}}]
"""


@pytest.mark.parametrize("typed, needle", [
    ("      abort: {http_status: 503, grpc_status: 14}", "mutually exclusive"),
    ("      abort: {http_status: 100}", "http_status: 100 is out of range"),
    ("      abort: {grpc_status: 17}", "grpc_status: 17 is out of range"),
    ("      delay: {percentage: {numerator: 10}}", "delay.fixed_delay: missing required key"),
    ("      delay: {fixed_delay: 1s, percentage: {numerator: 10, denominator: THOUSAND}}",
     "expected one of: HUNDRED, TEN_THOUSAND, MILLION"),
    ("      delay: {fixed_delay: 1s, percentage: {numerator: 101}}",
     "more than the denominator"),
    ("      abort: {http_status: 503}\n      max_active: 3", "did you mean 'max_active_faults'"),
    ("      '@type': type.googleapis.com/envoy.extensions.filters.http.fault.v3.Other",
     "is not the type of"),
])
def test_validation_errors(typed, needle):
    with pytest.raises(ConfigError) as ei:
        parse_config(_yaml(typed), source="fault.yaml")
    assert needle in str(ei.value) and "fault.yaml:" in str(ei.value)


def test_config_round_trips_through_dump():
    cfg = parse_config(_yaml("      delay: {fixed_delay: 1s, percentage: {numerator: 5}}\n"
                             "      abort: {grpc_status: 14, percentage: {numerator: 1}}\n"
                             "      headers: [{name: x-fault, present: true}]\n"
                             "      max_active_faults: 10"))
    assert parse_config(config_to_dict(cfg)) == cfg
