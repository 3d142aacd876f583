"""envoy.filters.http.local_ratelimit through a live proxy
(filter_local_ratelimit.pxi): token buckets per listener, virtual host,
route and descriptor; 429 with x-ratelimit-* headers; gRPC statuses;
Envoy's filter_enabled / filter_enforced fractions; validation.
"""
import time

import pytest

from support.h2util import H2Client
from support.harness import http_config

from fastmesh.control.config import ConfigError, parse_config
from fastmesh.control.dump import config_to_dict

RL = "envoy.filters.http.local_ratelimit"
ALL = {"default_value": {"numerator": 100}}


def rl(max_tokens=2, fill="1h", per_fill=1, prefix="rl", **kw):
    c = {"stat_prefix": prefix,
         "token_bucket": {"max_tokens": max_tokens, "tokens_per_fill": per_fill,
                          "fill_interval": fill},
         "filter_enabled": ALL, "filter_enforced": ALL}
    c.update(kw)
    return c


def proxy_cfg(origin, listener_rl=None, routes=None, vhost_extra=None):
    cfg = http_config(origin, routes=routes, listener={
        "http_filters": [{"name": RL, **({"typed_config": listener_rl} if listener_rl else {})}]})
    if vhost_extra:
        cfg["listeners"][0]["virtual_hosts"][0].update(vhost_extra)
    return cfg


def rl_stats(p, prefix="rl"):
    for b in p._in_loop(p.proxy.stats_snapshot)["blocks"]:
        if b["prefix"] == "http_local_rate_limit" and dict(b["labels"]).get("stat_prefix") == prefix:
            return b["values"]
    return {}


def statuses(c, n, path="/echo", headers=None):
    return [c.request("GET", path, headers=headers).status for _ in range(n)]


def test_bucket_runs_out_429(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=2)))
    c = clients(p.address("web"))
    assert statuses(c, 2) == [200, 200]
    r = c.request("GET", "/echo")
    assert r.status == 429 and r.body == b"local_rate_limited"
    assert len(origin.received()) == 2        # the refused one never went upstream
    assert rl_stats(p) == {"enabled": 3, "enforced": 1, "rate_limited": 1, "ok": 2}


def test_h2_client_is_limited_too(start_proxy, origin):
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=1)))
    c = H2Client(p.address("web"))
    try:
        assert c.wait(c.request("GET", "/echo")).status == 200
        r = c.wait(c.request("GET", "/echo"))
        assert r.status == 429 and bytes(r.body) == b"local_rate_limited"
    finally:
        c.close()


def test_x_ratelimit_headers(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=2, fill="1h",
                                          enable_x_ratelimit_headers="DRAFT_VERSION_03")))
    c = clients(p.address("web"))
    r = c.request("GET", "/echo")
    assert r.status == 200
    assert (r.header("x-ratelimit-limit"), r.header("x-ratelimit-remaining")) == (b"2", b"1")
    c.request("GET", "/echo")
    r = c.request("GET", "/echo")
    assert r.status == 429
    assert r.header("x-ratelimit-remaining") == b"0"
    assert 3500 <= int(r.header("x-ratelimit-reset")) <= 3600


def test_no_headers_unless_asked(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=1)))
    c = clients(p.address("web"))
    assert c.request("GET", "/echo").header("x-ratelimit-limit") is None


def test_bucket_refills_by_elapsed_time(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=1, fill="200ms")))
    c = clients(p.address("web"))
    assert statuses(c, 2) == [200, 429]
    t0 = time.monotonic()
    deadline = t0 + 5
    while c.request("GET", "/echo").status == 429:
        assert time.monotonic() < deadline, "the bucket never refilled"
        time.sleep(0.02)


def test_filter_enabled_defaults_to_off(start_proxy, origin, clients):
    # Envoy: filter_enabled unset means 0% of requests are even looked at.
    conf = rl(max_tokens=1)
    del conf["filter_enabled"], conf["filter_enforced"]
    p = start_proxy(proxy_cfg(origin, conf))
    c = clients(p.address("web"))
    assert statuses(c, 3) == [200, 200, 200]
    assert rl_stats(p) == {}


def test_enabled_but_not_enforced_only_counts(start_proxy, origin, clients):
    conf = rl(max_tokens=1)
    del conf["filter_enforced"]
    p = start_proxy(proxy_cfg(origin, conf))
    c = clients(p.address("web"))
    assert statuses(c, 3) == [200, 200, 200]
    assert rl_stats(p) == {"enabled": 3, "enforced": 0, "rate_limited": 2, "ok": 1}


def test_route_and_virtual_host_override(start_proxy, origin, clients):
    routes = [
        {"match": {"prefix": "/route"}, "cluster": "origin",
         "typed_per_filter_config": {RL: rl(max_tokens=1, prefix="route")}},
        {"match": {"prefix": "/"}, "cluster": "origin"},
    ]
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=100, prefix="listener"), routes=routes,
                              vhost_extra={"typed_per_filter_config":
                                           {RL: rl(max_tokens=2, prefix="vhost")}}))
    c = clients(p.address("web"))
    assert statuses(c, 2, "/route/x") == [200, 429]          # the route's bucket: 1
    assert statuses(c, 3, "/other") == [200, 200, 429]       # the virtual host's: 2
    assert rl_stats(p, "route")["rate_limited"] == 1
    assert rl_stats(p, "vhost")["rate_limited"] == 1
    assert rl_stats(p, "listener") == {}                     # overridden everywhere


def test_per_route_only_without_listener_settings(start_proxy, origin, clients):
    routes = [{"match": {"prefix": "/limited"}, "cluster": "origin",
               "typed_per_filter_config": {RL: rl(max_tokens=1)}},
              {"match": {"prefix": "/"}, "cluster": "origin"}]
    p = start_proxy(proxy_cfg(origin, None, routes=routes))
    c = clients(p.address("web"))
    assert statuses(c, 3, "/free") == [200, 200, 200]
    assert statuses(c, 2, "/limited") == [200, 429]


def test_descriptor_per_header_value(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=1, descriptor={
        "request_headers": {"header_name": "x-user"}})))
    c = clients(p.address("web"))
    assert statuses(c, 2, headers=[("x-user", "alice")]) == [200, 429]
    assert statuses(c, 2, headers=[("x-user", "bob")]) == [200, 429]
    # no header: the filter's own bucket
    assert statuses(c, 2) == [200, 429]


def test_descriptor_buckets_are_bounded(start_proxy, origin, clients):
    # At most 2 descriptor buckets: a third value drops the least recently used.
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=1, max_dynamic_descriptors=2, descriptor={
        "request_headers": {"header_name": "x-user"}})))
    c = clients(p.address("web"))
    for u in ("a", "b"):
        assert statuses(c, 2, headers=[("x-user", u)]) == [200, 429]
    assert statuses(c, 1, headers=[("x-user", "c")]) == [200]     # evicts a
    assert statuses(c, 1, headers=[("x-user", "b")]) == [429]     # b was kept
    assert statuses(c, 1, headers=[("x-user", "a")]) == [200]     # a is new again


def test_descriptor_per_client_address(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=1, descriptor={"remote_address": {}})))
    c = clients(p.address("web"))
    c2 = clients(p.address("web"))
    assert c.request("GET", "/echo").status == 200
    assert c2.request("GET", "/echo").status == 429      # same address, same bucket


@pytest.mark.parametrize("exhausted, code", [(True, "RESOURCE_EXHAUSTED"),
                                             (False, "UNAVAILABLE")])
def test_grpc_status(start_proxy, origin, exhausted, code):
    grpc = pytest.importorskip("grpc")
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=1, fill="1h",
                                          rate_limited_as_resource_exhausted=exhausted)))
    c = H2Client(p.address("web"))
    try:   # take the one token
        assert c.wait(c.request("GET", "/echo")).status == 200
    finally:
        c.close()
    host, port = p.address("web")
    with grpc.insecure_channel(f"{host}:{port}") as ch:
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/t.S/M")(b"", timeout=5)
        assert ei.value.code() == getattr(grpc.StatusCode, code)


def test_status_code_setting(start_proxy, origin, clients):
    p = start_proxy(proxy_cfg(origin, rl(max_tokens=1, status={"code": 503})))
    c = clients(p.address("web"))
    assert statuses(c, 2) == [200, 503]


# ------------------------------------------------------------ config

def _yaml(filter_cfg: str, route_extra: str = "") -> str:
    return f"""
listeners:
- name: web
  port: 8080
  http_filters:
  - name: {RL}
{filter_cfg}
  virtual_hosts:
  - name: a
    domains: ["*"]
    routes:
    - match: {{prefix: /}}
      cluster: c
{route_extra}
clusters:
- name: c
  endpoints: [{{address: 127.0.0.1, port: 1}}]
"""


GOOD = """    typed_config:
      stat_prefix: rl
      token_bucket: {max_tokens: 5, fill_interval: 1s}"""


@pytest.mark.parametrize("filter_cfg, route_extra, needle", [
    ("    typed_config:\n      token_bucket: {max_tokens: 5, fill_interval: 1s}", "",
     "typed_config.stat_prefix: missing required key"),
    ("    typed_config:\n      stat_prefix: x\n      token_bucket: {max_tokens: 5, "
     "fill_interval: 10ms}", "", "at least 50ms"),
    ("    typed_config:\n      stat_prefix: x\n      token_bucket: {max_tokens: 0, "
     "fill_interval: 1s}", "", "max_tokens: 0 is out of range"),
    ("    typed_config:\n      stat_prefix: x\n      token_bucket: {max_tokens: 1, "
     "fill_interval: 1s}\n      enable_x_ratelimit_headers: DRAFT_VERSION_04", "",
     "expected one of: OFF, DRAFT_VERSION_03"),
    ("    typed_config:\n      stat_prefix: x\n      token_buckets: {}", "",
     "did you mean 'token_bucket'"),
    ("    config: {}", "", "takes its settings in 'typed_config'"),
    (GOOD, "      typed_per_filter_config:\n        envoy.filters.http.fault: {}",
     "is not in this listener's http_filters"),
    (GOOD, "      typed_per_filter_config:\n        envoy.filters.http.local_ratelimt: {}",
     "did you mean 'envoy.filters.http.local_ratelimit'"),
    (GOOD, "      typed_per_filter_config:\n        envoy.filters.http.local_ratelimit:\n"
           "          stat_prefix: r", "token_bucket: missing required key"),
])
def test_validation_errors(filter_cfg, route_extra, needle):
    with pytest.raises(ConfigError) as ei:
        parse_config(_yaml(filter_cfg, route_extra), source="rl.yaml")
    assert needle in str(ei.value) and "rl.yaml:" in str(ei.value)


def test_unknown_builtin_name_without_import():
    # Not a built-in name: a user filter, which needs its import path.
    with pytest.raises(ConfigError) as ei:
        parse_config(_yaml(GOOD).replace(RL, "envoy.filters.http.local_rate_limit"))
    assert "http_filters[0].import: missing required key" in str(ei.value)


def test_config_round_trips_through_dump():
    cfg = parse_config(_yaml(GOOD, "      typed_per_filter_config:\n"
                                   f"        {RL}: {{stat_prefix: r, token_bucket: "
                                   "{max_tokens: 1, fill_interval: 1s}}"))
    assert parse_config(config_to_dict(cfg)) == cfg
