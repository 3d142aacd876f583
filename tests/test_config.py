"""Tests for the config layer: schema, defaults, units, errors with file:line, immutability."""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import pickle
import re
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

try:
    import fastmesh  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))

from fastmesh.control.config import (  # noqa: E402
    AdminConfig,
    ClusterConfig,
    Config,
    ConfigError,
    DirectResponseConfig,
    EndpointConfig,
    HashPolicyConfig,
    HeaderMatchConfig,
    ListenerConfig,
    RouteConfig,
    WeightedClusterConfig,
    config_to_dict,
    default_config,
    load_config,
    parse_config,
)
from fastmesh.control.durations import (  # noqa: E402
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

# Line numbers matter in this file: BASE has one key per line, numbered below.
BASE = """\
listeners:
  - name: ingress
    port: 10000
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {prefix: /}
            cluster: backend
clusters:
  - name: backend
    endpoints:
      - {address: 127.0.0.1, port: 8081}
"""
#  1 listeners:            5 - name: all        9 cluster: backend   13 - {address...}
#  2 - name: ingress       6 domains            10 clusters:
#  3 port: 10000           7 routes:            11 - name: backend
#  4 virtual_hosts:        8 - match: ...       12 endpoints:


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once"
    return text.replace(old, new)


def parse_error(text: str, source: str = "test.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=source)
    return info.value


# ------------------------------------------------------------------ valid configs


def test_base_config_and_defaults() -> None:
    cfg = parse_config(BASE, source="base.yaml")
    assert cfg.source == "base.yaml"
    assert cfg.drain_timeout == 10.0
    assert cfg.batch_window == 0.0002
    assert cfg.admin is None

    (lst,) = cfg.listeners
    assert lst == cfg.listener("ingress")
    assert (lst.address, lst.port, lst.protocol, lst.cluster) == ("0.0.0.0", 10000, "http", None)
    assert lst.idle_timeout == 3600.0
    assert lst.per_connection_buffer_limit == 1 << 20
    assert lst.request_headers_timeout == 10.0
    assert lst.stream_idle_timeout == 300.0
    assert lst.max_request_headers_kb == 60
    assert lst.max_headers_count == 100
    assert lst.xff_append is True and lst.generate_request_id is True

    (vh,) = lst.virtual_hosts
    assert vh.name == "all" and vh.domains == ("*",)
    (route,) = vh.routes
    assert route.name is None
    assert route.action == "cluster" and route.cluster == "backend"
    assert route.weighted_clusters == () and route.direct_response is None
    assert route.timeout == 15.0
    assert route.match.prefix == "/" and route.match.path is None and route.match.regex is None
    assert route.match.case_sensitive is True and route.match.headers == ()

    cluster = cfg.cluster("backend")
    assert cluster == cfg.clusters[0]
    assert cluster.lb == "round_robin" and cluster.hash_policy is None
    assert cluster.connect_timeout == 5.0 and cluster.idle_timeout == 60.0
    assert cluster.per_connection_buffer_limit == 1 << 20
    assert cluster.max_requests_per_connection == 0
    assert (cluster.ring_min, cluster.ring_max, cluster.maglev_table_size) == (1024, 8388608, 65537)
    assert cluster.endpoints == (EndpointConfig("127.0.0.1", 8081, 1),)


def test_lookup_helpers_raise_keyerror() -> None:
    cfg = parse_config(BASE)
    with pytest.raises(KeyError):
        cfg.cluster("nope")
    with pytest.raises(KeyError):
        cfg.listener("nope")


def test_admin_defaults() -> None:
    cfg = parse_config("admin: {}\n" + BASE)
    assert cfg.admin == AdminConfig("127.0.0.1", 9901)


def test_hash_policy_defaults_and_lb_settings() -> None:
    text = BASE + """\
  - name: ring
    lb: ring_hash
    ring_hash: {minimum_ring_size: 16}
    endpoints: [{address: 10.0.0.1, port: 80}]
  - name: mag
    lb: maglev
    hash_policy: {header: X-User-Id}
    maglev: {table_size: 251}
    endpoints: [{address: backend.svc.local, port: 80, weight: 128}]
  - name: mag2
    lb: maglev
    endpoints: [{address: "[::1]", port: 80}]
"""
    cfg = parse_config(text)
    ring, mag, mag2 = cfg.cluster("ring"), cfg.cluster("mag"), cfg.cluster("mag2")
    assert ring.hash_policy == HashPolicyConfig(header=None, source_ip=True)
    assert (ring.ring_min, ring.ring_max) == (16, 8388608)
    assert mag.hash_policy == HashPolicyConfig(header="x-user-id", source_ip=False)
    assert mag.maglev_table_size == 251
    assert mag.endpoints[0] == EndpointConfig("backend.svc.local", 80, 128)
    assert mag2.maglev_table_size == 65537
    assert mag2.endpoints[0].address == "::1"


def test_http_features() -> None:
    text = edit(BASE, "          - match: {prefix: /}\n            cluster: backend\n", """\
          - name: health
            match: {path: /healthz}
            direct_response: {status: 204}
          - name: split
            match:
              regex: "(?i)/v[0-9]+/.*"
              headers:
                - {name: X-Canary, exact: "1"}
                - {name: x-debug, present: false}
                - {name: x-env, prefix: prod, invert: true}
                - {name: x-id, regex: "[a-f0-9]+"}
            weighted_clusters:
              - {name: backend, weight: 90}
              - {name: other, weight: 10}
            timeout: 0
""")
    text += "  - name: other\n    endpoints: [{address: 10.0.0.2, port: 80}]\n"
    text = edit(text, '        domains: ["*"]', '        domains: ["*", "API.example.com", "api.*"]')
    cfg = parse_config(text)
    vh = cfg.listeners[0].virtual_hosts[0]
    assert vh.domains == ("*", "api.example.com", "api.*")
    health, split = vh.routes
    assert health.action == "direct_response"
    assert health.direct_response == DirectResponseConfig(204, "")
    assert health.timeout == 0.0
    assert split.action == "weighted_clusters"
    assert split.weighted_clusters == (WeightedClusterConfig("backend", 90),
                                       WeightedClusterConfig("other", 10))
    assert split.timeout == 0.0 and split.cluster is None
    assert split.match.regex == "(?i)/v[0-9]+/.*" and split.match.case_sensitive is True
    assert split.match.headers == (
        HeaderMatchConfig(name="x-canary", exact="1"),
        HeaderMatchConfig(name="x-debug", present=False),
        HeaderMatchConfig(name="x-env", prefix="prod", invert=True),
        HeaderMatchConfig(name="x-id", regex="[a-f0-9]+"),
    )


def test_tcp_listener() -> None:
    text = edit(BASE, "clusters:\n", """\
  - name: db
    address: "::"
    port: 5432
    protocol: tcp
    cluster: backend
    idle_timeout: 0
    per_connection_buffer_limit: 16k
clusters:
""")
    lst = parse_config(text).listener("db")
    assert (lst.protocol, lst.cluster, lst.address, lst.virtual_hosts) == ("tcp", "backend", "::", ())
    assert lst.idle_timeout == 0.0
    assert lst.per_connection_buffer_limit == 16384


def test_ephemeral_ports_may_repeat() -> None:
    text = edit(BASE, "    port: 10000", "    port: 0")
    text = edit(text, "clusters:\n", "  - {name: two, port: 0, protocol: tcp, cluster: backend}\nclusters:\n")
    cfg = parse_config("admin: {port: 0}\n" + text)
    assert [lst.port for lst in cfg.listeners] == [0, 0]


def test_clusters_may_be_empty_without_references() -> None:
    text = """\
listeners:
  - name: l
    port: 1
    virtual_hosts:
      - name: v
        domains: ["*"]
        routes: [{match: {prefix: /}, direct_response: {status: 200, body: hi}}]
"""
    assert parse_config(text).clusters == ()


def test_dict_input_and_yaml_features() -> None:
    data = {
        "listeners": [{"name": "l", "port": 1, "protocol": "tcp", "cluster": "c"}],
        "clusters": [{"name": "c", "endpoints": [{"address": "10.0.0.1", "port": 9}]}],
    }
    cfg = parse_config(data)
    assert cfg.listeners[0].cluster == "c"
    # Anchors and merge keys work as in SafeLoader.
    text = """\
defaults: &ep {port: 80, weight: 3}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text + BASE)
    assert info.value.path == "defaults"  # unknown top-level key (anchors need a home)
    text = edit(BASE, "      - {address: 127.0.0.1, port: 8081}",
                "      - &ep {address: 127.0.0.1, port: 8081}\n      - {<<: *ep, port: 8082}")
    eps = parse_config(text).clusters[0].endpoints
    assert eps == (EndpointConfig("127.0.0.1", 8081), EndpointConfig("127.0.0.1", 8082))


def test_bytes_input() -> None:
    assert parse_config(BASE.encode()) == parse_config(BASE)


# ----------------------------------------------------------------- durations, sizes

@pytest.mark.parametrize(("value", "seconds"), [
    (0, 0.0), (15, 15.0), (0.25, 0.25), ("250ms", 0.25), ("15s", 15.0), ("1.5s", 1.5),
    ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), ("0ms", 0.0), (" 2s ", 2.0),
    ("1.1ms", 0.0011), (".5s", 0.5), ("1.s", 1.0), ("200us", 0.0002), ("1ms500us", 0.0015),
])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds
    text = edit(BASE, "    port: 10000", f"    port: 10000\n    idle_timeout: {json.dumps(value)}")
    assert parse_config(text).listeners[0].idle_timeout == seconds


@pytest.mark.parametrize(("value", "fact"), [
    (-1, "negative"), ("-5s", "negative"), ("15", "missing unit"), ("5x", "invalid duration"),
    ("s", "invalid duration"), ("", "invalid duration"), (True, "boolean"), (None, "null"),
    ([1], "list"), (float("inf"), "finite"), (float("nan"), "finite"),
])
def test_bad_durations(value: object, fact: str) -> None:
    with pytest.raises(ValueError, match=fact):
        parse_duration(value)


@pytest.mark.parametrize(("value", "nbytes"), [
    (1, 1), (65536, 65536), ("16k", 16384), ("16K", 16384), ("64KiB", 65536), ("64KB", 65536),
    ("1MiB", 1 << 20), ("1M", 1 << 20), ("1m", 1 << 20), ("1G", 1 << 30), ("1.5k", 1536),
    ("100", 100), ("2 MiB", 2 << 20),
])
def test_sizes(value: object, nbytes: int) -> None:
    assert parse_size(value) == nbytes
    text = edit(BASE, "    port: 10000",
                f"    port: 10000\n    per_connection_buffer_limit: {json.dumps(value)}")
    assert parse_config(text).listeners[0].per_connection_buffer_limit == nbytes


@pytest.mark.parametrize(("value", "fact"), [
    (-1, "negative"), ("-1k", "negative"), ("1.1k", "whole number"), ("12 parsecs", "invalid size"),
    ("1T", "invalid size"), (1.5, "float"), (True, "boolean"), ("", "invalid size"),
])
def test_bad_sizes(value: object, fact: str) -> None:
    with pytest.raises(ValueError, match=fact):
        parse_size(value)


def test_format_helpers() -> None:
    assert [format_duration(x) for x in (0, 0.25, 15, 300, 3600, 5400, 1.5, 1e-7, 0.0002)] == \
        ["0h", "250ms", "15s", "5m", "1h", "90m", "1500ms", "0.0000001s", "200us"]
    assert [format_size(x) for x in (0, 100, 16384, 1 << 20, 3 << 30, 1536)] == \
        ["0", "100", "16KiB", "1MiB", "3GiB", "1536"]


_UNITS = {"us": 0.000001, "ms": 0.001, "s": 1, "m": 60, "h": 3600}


@given(whole=st.integers(0, 10**6), frac=st.one_of(st.none(), st.integers(0, 999)),
       unit=st.sampled_from(sorted(_UNITS)))
def test_duration_strings_round_trip(whole: int, frac: int | None, unit: str) -> None:
    number = f"{whole}" if frac is None else f"{whole}.{frac:03d}"
    seconds = parse_duration(number + unit)
    assert math.isclose(seconds, float(number) * _UNITS[unit], rel_tol=1e-12, abs_tol=1e-12)
    canonical = format_duration(seconds)
    assert parse_duration(canonical) == seconds
    assert format_duration(parse_duration(canonical)) == canonical


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_format_duration_round_trips_any_float(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(0, 1 << 40))
def test_sizes_round_trip(nbytes: int) -> None:
    assert parse_size(format_size(nbytes)) == nbytes


# ------------------------------------------------------------------------ errors

# (id, yaml, path, line, reason substring). Each is BASE with one change.
ERROR_CASES = [
    ("unknown-key",
     edit(BASE, "    port: 10000", "    prot: 10000"),
     "listeners[0].prot", 3, "unknown key 'prot'; expected one of: name, address, port"),
    ("unknown-key-suggestion",
     edit(BASE, "    port: 10000", "    port: 10000\n    virtual_host: []"),
     "listeners[0].virtual_host", 4, "did you mean 'virtual_hosts'?"),
    ("unknown-top-level-key",
     "listenrs: []\n" + BASE,
     "listenrs", 1, "did you mean 'listeners'?"),
    ("wrong-type-int",
     edit(BASE, "    port: 10000", '    port: "10000"'),
     "listeners[0].port", 3, "expected an integer, got a string ('10000')"),
    ("wrong-type-list",
     edit(BASE, '        domains: ["*"]', '        domains: "*"'),
     "listeners[0].virtual_hosts[0].domains", 6, "expected a list of domains"),
    ("wrong-type-mapping",
     edit(BASE, "      - {address: 127.0.0.1, port: 8081}", "      - 127.0.0.1:8081"),
     "clusters[0].endpoints[0]", 13, "expected an endpoint (a mapping)"),
    ("wrong-type-bool",
     edit(BASE, "    port: 10000", "    port: 10000\n    xff_append: 1"),
     "listeners[0].xff_append", 4, "expected true or false"),
    ("wrong-type-header-value",
     edit(BASE, "{prefix: /}", "{prefix: /, headers: [{name: x-a, exact: 1}]}"),
     "listeners[0].virtual_hosts[0].routes[0].match.headers[0].exact", 8, "quote it"),
    ("null-value",
     edit(BASE, "    port: 10000", "    port:"),
     "listeners[0].port", 3, "got null"),
    ("out-of-range-port",
     edit(BASE, "port: 8081", "port: 65536"),
     "clusters[0].endpoints[0].port", 13, "65536 is out of range; must be between 1 and 65535"),
    ("out-of-range-endpoint-port-zero",
     edit(BASE, "port: 8081", "port: 0"),
     "clusters[0].endpoints[0].port", 13, "must be between 1 and 65535"),
    ("out-of-range-weight",
     edit(BASE, "port: 8081}", "port: 8081, weight: 129}"),
     "clusters[0].endpoints[0].weight", 13, "between 1 and 128"),
    ("out-of-range-headers-kb",
     edit(BASE, "    port: 10000", "    port: 10000\n    max_request_headers_kb: 9000"),
     "listeners[0].max_request_headers_kb", 4, "between 1 and 8192"),
    ("out-of-range-status",
     edit(BASE, "            cluster: backend", "            direct_response: {status: 99}"),
     "listeners[0].virtual_hosts[0].routes[0].direct_response.status", 9, "between 100 and 599"),
    ("negative-duration",
     "drain_timeout: -2s\n" + BASE,
     "drain_timeout", 1, "must not be negative"),
    ("batch-window-too-long",
     "batch_window: 50ms\n" + BASE,
     "batch_window", 1, "50000us is too long; at most 10ms"),
    ("bad-duration",
     edit(BASE, "    port: 10000", "    port: 10000\n    stream_idle_timeout: 5 minutes"),
     "listeners[0].stream_idle_timeout", 4, "invalid duration '5 minutes'"),
    ("zero-connect-timeout",
     edit(BASE, "  - name: backend", "  - name: backend\n    connect_timeout: 0s"),
     "clusters[0].connect_timeout", 12, "greater than zero"),
    ("bad-size",
     edit(BASE, "  - name: backend", "  - name: backend\n    per_connection_buffer_limit: 1TB"),
     "clusters[0].per_connection_buffer_limit", 12, "invalid size '1TB'"),
    ("bad-enum-protocol",
     edit(BASE, "    port: 10000", "    port: 10000\n    protocol: htp"),
     "listeners[0].protocol", 4, "invalid value 'htp'; expected one of: http, tcp, auto; did you mean 'http'?"),
    ("bad-enum-lb",
     edit(BASE, "  - name: backend", "  - name: backend\n    lb: roundrobin"),
     "clusters[0].lb", 12, "expected one of: round_robin, least_request, random, ring_hash, maglev"),
    ("missing-required-listeners",
     "drain_timeout: 1s\n",
     "listeners", 1, "missing required key"),
    ("missing-required-port",
     edit(BASE, "    port: 10000\n", ""),
     "listeners[0].port", 2, "missing required key"),
    ("missing-required-endpoints",
     edit(BASE, "    endpoints:\n      - {address: 127.0.0.1, port: 8081}\n", ""),
     "clusters[0].endpoints", 11, "missing required key"),
    ("missing-required-vhost-name",
     edit(BASE, "      - name: all\n        domains", "      - domains"),
     "listeners[0].virtual_hosts[0].name", 5, "missing required key"),
    ("empty-listeners",
     "listeners: []\n",
     "listeners", 1, "must not be empty"),
    ("empty-endpoints",
     edit(BASE, "    endpoints:\n      - {address: 127.0.0.1, port: 8081}", "    endpoints: []"),
     "clusters[0].endpoints", 12, "must not be empty"),
    ("http-without-virtual-hosts",
     "listeners: [{name: l, port: 1}]\n",
     "listeners[0].virtual_hosts", 1, "missing required key"),
    ("unknown-cluster-route",
     edit(BASE, "            cluster: backend", "            cluster: backnd"),
     "listeners[0].virtual_hosts[0].routes[0].cluster", 9,
     "unknown cluster 'backnd'; defined clusters: backend; did you mean 'backend'?"),
    ("unknown-cluster-weighted",
     edit(BASE, "            cluster: backend",
          "            weighted_clusters: [{name: backend, weight: 1}, {name: b2, weight: 1}]"),
     "listeners[0].virtual_hosts[0].routes[0].weighted_clusters[1].name", 9, "unknown cluster 'b2'"),
    ("unknown-cluster-tcp",
     edit(BASE, "clusters:\n", "  - {name: t, port: 2, protocol: tcp, cluster: db}\nclusters:\n"),
     "listeners[1].cluster", 10, "unknown cluster 'db'"),
    ("unknown-cluster-none-defined",
     "listeners: [{name: t, port: 2, protocol: tcp, cluster: db}]\n",
     "listeners[0].cluster", 1, "no clusters are defined"),
    ("duplicate-listener-name",
     edit(BASE, "clusters:\n", "  - {name: ingress, port: 2, protocol: tcp, cluster: backend}\nclusters:\n"),
     "listeners[1].name", 10, "duplicate listener name 'ingress'"),
    ("duplicate-cluster-name",
     BASE + "  - {name: backend, endpoints: [{address: 10.0.0.1, port: 1}]}\n",
     "clusters[1].name", 14, "duplicate cluster name 'backend'"),
    ("duplicate-vhost-name",
     edit(BASE, "clusters:\n",
          "      - {name: all, domains: [a.com], routes: [{match: {prefix: /}, cluster: backend}]}\n"
          "clusters:\n"),
     "listeners[0].virtual_hosts[1].name", 10, "duplicate virtual host name 'all'"),
    ("duplicate-domain",
     edit(BASE, "clusters:\n",
          "      - {name: other, domains: [a.com, '*'], routes: [{match: {prefix: /}, cluster: backend}]}\n"
          "clusters:\n"),
     "listeners[0].virtual_hosts[1].domains[1]", 10, "duplicate domain '*'"),
    ("duplicate-listener-address",
     edit(BASE, "clusters:\n", "  - {name: t, port: 10000, protocol: tcp, cluster: backend}\nclusters:\n"),
     "listeners[1].port", 10, "0.0.0.0:10000 is already used by listener 'ingress'"),
    ("duplicate-listener-address-wildcard",
     edit(BASE, "clusters:\n",
          "  - {name: t, address: 127.0.0.1, port: 10000, protocol: tcp, cluster: backend}\nclusters:\n"),
     "listeners[1].port", 10, "already used by listener 'ingress'"),
    ("admin-port-collision",
     "admin: {address: 0.0.0.0, port: 10000, allow_remote: true}\n" + BASE,
     "admin.port", 1, "admin address 0.0.0.0:10000 is already used by listener 'ingress'"),
    ("admin-remote-without-allow_remote",
     "admin: {address: 0.0.0.0, port: 9901}\n" + BASE,
     "admin.address", 1, "admin address 0.0.0.0 is reachable from the network"),
    ("admin-remote-ipv6",
     "admin: {address: '::', port: 9901}\n" + BASE,
     "admin.address", 1, "set admin.allow_remote: true if this is meant"),
    ("group-without-user",
     "group: nogroup\n" + BASE,
     "group", 1, "group is set without user"),
    ("bad-user-name",
     "user: 'no body'\n" + BASE,
     "user", 1, "invalid user or group name 'no body'"),
    ("duplicate-yaml-key",
     edit(BASE, "    port: 10000", "    port: 10000\n    port: 10001"),
     "listeners[0].port", 4, "duplicate key 'port'"),
    ("bad-regex",
     edit(BASE, "{prefix: /}", '{regex: "/v[0-9+"}'),
     "listeners[0].virtual_hosts[0].routes[0].match.regex", 8, "invalid regex '/v[0-9+'"),
    ("case-insensitive-regex",
     edit(BASE, "{prefix: /}", '{regex: "/v[0-9]+", case_sensitive: false}'),
     "listeners[0].virtual_hosts[0].routes[0].match.case_sensitive", 8, "write (?i)"),
    ("bad-header-regex",
     edit(BASE, "{prefix: /}", '{prefix: /, headers: [{name: x-a, regex: "(a"}]}'),
     "listeners[0].virtual_hosts[0].routes[0].match.headers[0].regex", 8, "invalid regex"),
    ("prefix-without-slash",
     edit(BASE, "{prefix: /}", "{prefix: api}"),
     "listeners[0].virtual_hosts[0].routes[0].match.prefix", 8, "must start with '/'"),
    ("match-two-kinds",
     edit(BASE, "{prefix: /}", "{prefix: /, path: /x}"),
     "listeners[0].virtual_hosts[0].routes[0].match.path", 8, "'prefix' and 'path' are mutually exclusive"),
    ("match-no-kind",
     edit(BASE, "{prefix: /}", "{case_sensitive: false}"),
     "listeners[0].virtual_hosts[0].routes[0].match", 8, "expected exactly one of: prefix, path, regex"),
    ("header-match-two-kinds",
     edit(BASE, "{prefix: /}", "{prefix: /, headers: [{name: x-a, exact: a, present: true}]}"),
     "listeners[0].virtual_hosts[0].routes[0].match.headers[0].present", 8, "mutually exclusive"),
    ("bad-domain",
     edit(BASE, '["*"]', '["a.*.com"]'),
     "listeners[0].virtual_hosts[0].domains[0]", 6, "invalid domain 'a.*.com'"),
    ("bad-listener-address",
     edit(BASE, "    port: 10000", "    port: 10000\n    address: example.com"),
     "listeners[0].address", 4, "hostnames are not allowed"),
    ("bad-endpoint-address",
     edit(BASE, "address: 127.0.0.1", "address: 127.0.0.256"),
     "clusters[0].endpoints[0].address", 13, "invalid IPv4 address"),
    ("duplicate-endpoint",
     BASE + "      - {address: 127.0.0.1, port: 8081}\n",
     "clusters[0].endpoints[1]", 14, "duplicate endpoint 127.0.0.1:8081"),
    ("maglev-not-prime",
     edit(BASE, "  - name: backend", "  - name: backend\n    lb: maglev\n    maglev: {table_size: 65536}"),
     "clusters[0].maglev.table_size", 13, "table_size 65536 is not prime"),
    ("maglev-table-too-small",
     edit(BASE, "  - name: backend", "  - name: backend\n    lb: maglev\n    maglev: {table_size: 2}")
     + "      - {address: 127.0.0.2, port: 8081}\n      - {address: 127.0.0.3, port: 8081}\n",
     "clusters[0].maglev.table_size", 13, "smaller than the number of endpoints (3)"),
    ("maglev-settings-on-round-robin",
     edit(BASE, "  - name: backend", "  - name: backend\n    maglev: {table_size: 65537}"),
     "clusters[0].maglev", 12, "only allowed with lb: maglev"),
    ("ring-hash-min-over-max",
     edit(BASE, "  - name: backend",
          "  - name: backend\n    lb: ring_hash\n    ring_hash: {minimum_ring_size: 10, maximum_ring_size: 5}"),
     "clusters[0].ring_hash.minimum_ring_size", 13, "larger than maximum_ring_size"),
    ("hash-policy-on-round-robin",
     edit(BASE, "  - name: backend", "  - name: backend\n    hash_policy: {header: x-user}"),
     "clusters[0].hash_policy", 12, "only allowed with lb: ring_hash or maglev (this cluster uses round_robin)"),
    ("hash-policy-both",
     edit(BASE, "  - name: backend",
          "  - name: backend\n    lb: ring_hash\n    hash_policy: {header: x-user, source_ip: true}"),
     "clusters[0].hash_policy.source_ip", 13, "mutually exclusive"),
    ("hash-policy-source-ip-false",
     edit(BASE, "  - name: backend",
          "  - name: backend\n    lb: maglev\n    hash_policy: {source_ip: false}"),
     "clusters[0].hash_policy.source_ip", 13, "hashes nothing"),
    ("timeout-with-direct-response",
     edit(BASE, "            cluster: backend",
          "            direct_response: {status: 200}\n            timeout: 5s"),
     "listeners[0].virtual_hosts[0].routes[0].timeout", 10, "'timeout' is not allowed with direct_response"),
    ("two-actions",
     edit(BASE, "            cluster: backend",
          "            cluster: backend\n            direct_response: {status: 200}"),
     "listeners[0].virtual_hosts[0].routes[0].direct_response", 10,
     "'cluster' and 'direct_response' are mutually exclusive; expected exactly one of: "
     "cluster, weighted_clusters, direct_response"),
    ("no-action",
     edit(BASE, "            cluster: backend", "            timeout: 1s"),
     "listeners[0].virtual_hosts[0].routes[0]", 8,
     "route action: expected exactly one of: cluster, weighted_clusters, direct_response"),
    ("empty-weighted-clusters",
     edit(BASE, "            cluster: backend", "            weighted_clusters: []"),
     "listeners[0].virtual_hosts[0].routes[0].weighted_clusters", 9, "must not be empty"),
    ("weight-out-of-range",
     edit(BASE, "            cluster: backend", "            weighted_clusters: [{name: backend, weight: 0}]"),
     "listeners[0].virtual_hosts[0].routes[0].weighted_clusters[0].weight", 9, "between 1 and 1000000"),
    ("tcp-with-virtual-hosts",
     edit(BASE, "    port: 10000", "    port: 10000\n    protocol: tcp\n    cluster: backend"),
     "listeners[0].virtual_hosts", 6, "'virtual_hosts' is only allowed on http listeners"),
    ("tcp-with-http-option",
     "listeners: [{name: t, port: 1, protocol: tcp, cluster: c, xff_append: false}]\n"
     "clusters: [{name: c, endpoints: [{address: 10.0.0.1, port: 1}]}]\n",
     "listeners[0].xff_append", 1, "only allowed on http listeners"),
    ("tcp-without-cluster",
     "listeners: [{name: t, port: 1, protocol: tcp}]\n",
     "listeners[0].cluster", 1, "missing required key"),
    ("http-with-cluster",
     edit(BASE, "    port: 10000", "    port: 10000\n    cluster: backend"),
     "listeners[0].cluster", 4, "only allowed on tcp listeners"),
    ("bad-name",
     edit(BASE, "  - name: backend", "  - name: back end"),
     "clusters[0].name", 11, "invalid name 'back end'"),
    ("top-level-not-mapping",
     "- just\n- a list\n",
     "", 1, "expected the config document (a mapping), got a list"),
    ("empty-document",
     "# nothing here\n",
     "", 1, "config is empty"),
    # the unclosed "[" is on line 6: the error points there, not where parsing gave up
    ("yaml-syntax-error",
     edit(BASE, '        domains: ["*"]', '        domains: ["*"'),
     "", 6, "invalid YAML"),
    ("yaml-bad-indentation",
     edit(BASE, "    port: 10000", "     port: 10000"),
     "", 3, "invalid YAML"),
]


@pytest.mark.parametrize(("text", "path", "line", "reason"),
                         [case[1:] for case in ERROR_CASES], ids=[case[0] for case in ERROR_CASES])
def test_error_table(text: str, path: str, line: int, reason: str) -> None:
    err = parse_error(text)
    assert (err.file, err.path, err.line) == ("test.yaml", path, line), str(err)
    assert reason in err.reason, str(err)
    column = f"{err.column}:" if err.column is not None else ""   # YAML syntax errors
    where = f"test.yaml:{line}:{column} " + (f"{path}: " if path else "")
    assert str(err) == f"{where}{err.reason}"
    assert err.errors[0] is err


def test_error_case_ids_unique() -> None:
    ids = [case[0] for case in ERROR_CASES]
    assert len(ids) == len(set(ids))


def test_all_errors_collected_in_file_order() -> None:
    text = edit(BASE, "    port: 10000", "    port: -1")
    text = edit(text, "port: 8081", "port: 99999")
    text = "drain_timeout: soon\n" + text
    err = parse_error(text)
    assert [(e.line, e.path) for e in err.errors] == [
        (1, "drain_timeout"),
        (4, "listeners[0].port"),
        (14, "clusters[0].endpoints[0].port"),
    ]
    assert err.path == "drain_timeout"


def test_dict_input_errors_have_no_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"listeners": [{"name": "l", "port": "x", "virtual_hosts": []}]},
                     source="api")
    err = info.value
    assert err.line is None and err.file == "api"
    assert {e.path for e in err.errors} == {"listeners[0].port", "listeners[0].virtual_hosts"}
    assert str(err) == f"api: {err.path}: {err.reason}"


def test_dict_with_non_string_key() -> None:
    with pytest.raises(ConfigError, match="keys must be strings"):
        parse_config({"listeners": [], 1: 2})


def test_parse_config_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        parse_config(42)  # type: ignore[arg-type]


def test_error_constructor_and_str() -> None:
    err = ConfigError("f.yaml", 3, "a.b", "boom")  # positional order is the message order
    assert (err.file, err.line, err.path, err.reason, err.errors) == ("f.yaml", 3, "a.b", "boom", [err])
    assert str(err) == "f.yaml:3: a.b: boom"
    assert str(ConfigError(reason="boom")) == "boom"
    assert str(ConfigError(path="a.b", reason="boom")) == "a.b: boom"
    assert str(ConfigError(None, None, "x", "boom")) == "x: boom"
    assert str(ConfigError("f.yaml", None, None, "boom")) == "f.yaml: boom"
    assert str(ConfigError("f.yaml", 7, "", "boom")) == "f.yaml:7: boom"
    assert isinstance(err, Exception)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.file, copy.line, copy.path, copy.reason, str(copy)) == ("f.yaml", 3, "a.b", "boom", str(err))


def test_load_config_reports_file(tmp_path: pathlib.Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    cfg = load_config(good)
    assert cfg.source == str(good) and cfg == parse_config(BASE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(BASE, "port: 8081", "port: http"))
    with pytest.raises(ConfigError) as info:
        load_config(str(bad))
    assert (info.value.file, info.value.line) == (str(bad), 13)
    assert str(info.value).startswith(f"{bad}:13: clusters[0].endpoints[0].port: ")
    broken = tmp_path / "broken.yaml"
    broken.write_text("listeners:\n  - name: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(broken)
    assert info.value.file == str(broken) and info.value.line == 3
    assert "invalid YAML" in info.value.reason
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_encoding_and_character_errors_have_lines() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.encode() + b"# caf\xe9\n", source="latin1.yaml")
    assert (info.value.line, info.value.path) == (14, "")
    assert "not valid UTF-8" in info.value.reason
    err = parse_error(edit(BASE, "ingress", "ing\x01ress"))
    assert err.line == 2 and "unacceptable character #x0001" in err.reason


def test_merge_key_errors() -> None:
    err = parse_error(edit(BASE, "    port: 10000", "    <<: 3\n    port: 10000"))
    assert (err.path, err.line) == ("listeners[0]", 3)
    assert "'<<' merge key needs a mapping" in err.reason


def test_recursive_alias_is_refused() -> None:
    err = parse_error("a: &a [*a]\n")
    assert err.line == 1 and "recursive" in err.reason


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    err = parse_error("\n".join(lines) + "\n")
    assert "too large" in err.reason


# ----------------------------------------------------------- immutability, dumping


def _walk(obj: object):
    yield obj
    if dataclasses.is_dataclass(obj):
        for field in dataclasses.fields(obj):
            yield from _walk(getattr(obj, field.name))
    elif isinstance(obj, tuple):
        for item in obj:
            yield from _walk(item)


def test_objects_are_immutable() -> None:
    cfg = load_config(ROOT / "examples" / "sidecar.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.drain_timeout = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.listeners[0].port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.clusters[0].endpoints[0].weight = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.listeners[0].virtual_hosts[0].routes[0] = None  # type: ignore[index]
    seen = list(_walk(cfg))
    assert not any(isinstance(obj, (list, dict, set)) for obj in seen)
    assert any(isinstance(obj, HeaderMatchConfig) for obj in seen)
    hash(cfg)  # frozen, all-tuple: hashable all the way down


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_config_to_dict_round_trips(path: pathlib.Path) -> None:
    cfg = load_config(path)
    dumped = config_to_dict(cfg)
    text = json.dumps(dumped)
    assert json.loads(text) == dumped
    assert parse_config(json.loads(text)) == cfg
    assert parse_config(text) == cfg  # JSON is YAML


def test_config_to_dict_shape() -> None:
    dumped = config_to_dict(default_config())
    assert dumped["admin"] == {"address": "127.0.0.1", "port": 9901, "allow_remote": False}
    lst = dumped["listeners"][0]
    assert lst["idle_timeout"] == 3600.0 and lst["per_connection_buffer_limit"] == 1 << 20
    routes = lst["virtual_hosts"][0]["routes"]
    assert routes[0]["direct_response"] == {"status": 200, "body": "ok\n"}
    assert "timeout" not in routes[0]


# ------------------------------------------------------- shipped configs validate


def test_default_config() -> None:
    cfg = default_config()
    assert cfg.admin == AdminConfig("127.0.0.1", 9901)
    (lst,) = cfg.listeners
    assert (lst.address, lst.port, lst.protocol) == ("127.0.0.1", 10000, "http")
    routes = {r.name: r for vh in lst.virtual_hosts for r in vh.routes}
    health = next(r for r in routes.values() if r.match.path == "/healthz")
    assert health.direct_response == DirectResponseConfig(200, "ok\n")
    catch_all = next(r for r in routes.values() if r.match.prefix == "/")
    assert catch_all.cluster == "demo-origin"
    assert list(routes.values()).index(health) < list(routes.values()).index(catch_all)
    assert cfg.cluster("demo-origin").endpoints == (EndpointConfig("127.0.0.1", 10001),)


def test_default_yaml_is_packaged_with_the_source() -> None:
    assert (ROOT / "src" / "fastmesh" / "default.yaml").is_file()


def test_examples_exist() -> None:
    assert {"sidecar.yaml"} <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate(path: pathlib.Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.listeners


def test_sidecar_example_covers_the_schema() -> None:
    cfg = load_config(ROOT / "examples" / "sidecar.yaml")
    protocols = {lst.protocol for lst in cfg.listeners}
    assert protocols == {"http", "tcp"}
    assert len(cfg.clusters) >= 2
    routes = [r for lst in cfg.listeners for vh in lst.virtual_hosts for r in vh.routes]
    assert any(r.action == "weighted_clusters" for r in routes)
    assert any(r.match.headers for r in routes)
    assert any(c.lb == "maglev" and c.hash_policy and c.hash_policy.header for c in cfg.clusters)


def test_docs_example_matches_sidecar_example() -> None:
    doc = (ROOT / "docs" / "config.md").read_text()
    full = doc.split("## Full example", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", full, re.S)
    assert block is not None
    assert parse_config(block.group(1), source="docs") == load_config(ROOT / "examples" / "sidecar.yaml")


def test_docs_mention_every_key() -> None:
    doc = (ROOT / "docs" / "config.md").read_text()
    from fastmesh.control import config as mod
    keys = set(mod._ROOT_KEYS + mod._ADMIN_KEYS + mod._LISTENER_COMMON + mod._LISTENER_HTTP
               + mod._HTTP2_KEYS + mod._VHOST_KEYS + mod._ROUTE_KEYS + mod._MATCH_KEYS + mod._HEADER_KEYS
               + mod._CLUSTER_KEYS + mod._ENDPOINT_KEYS + mod._DISCOVERY_KEYS
               + ("minimum_ring_size", "maximum_ring_size", "table_size", "status", "body",
                  "weight", "header", "source_ip"))
    missing = sorted(k for k in keys if f"`{k}" not in doc)
    assert not missing


def test_listener_and_cluster_field_names_are_the_contract() -> None:
    # The compile step is written against these names.
    assert [f.name for f in dataclasses.fields(ListenerConfig)] == [
        "name", "address", "port", "protocol", "cluster", "idle_timeout",
        "per_connection_buffer_limit", "request_headers_timeout", "stream_idle_timeout",
        "max_request_headers_kb", "max_headers_count", "xff_append", "generate_request_id",
        "virtual_hosts", "http2", "http_filters", "max_connections", "first_byte_timeout",
        "max_stream_duration", "trust_retry_headers", "tls", "tls_mode",
        "forward_client_cert_details", "set_current_client_cert_details", "network_filters",
        "use_original_dst", "bind_to_port", "protocol_detection_timeout",
        "tracing"]
    assert [f.name for f in dataclasses.fields(ClusterConfig)] == [
        "name", "lb", "hash_policy", "ring_min", "ring_max", "maglev_table_size",
        "connect_timeout", "idle_timeout", "per_connection_buffer_limit",
        "max_requests_per_connection", "endpoints", "protocol", "health_checks",
        "healthy_panic_threshold", "circuit_breakers", "outlier_detection", "tls", "discovery",
        "original_dst"]
    assert [f.name for f in dataclasses.fields(RouteConfig)] == [
        "name", "match", "action", "cluster", "weighted_clusters", "direct_response", "timeout",
        "retry_policy", "priority", "idle_timeout", "max_stream_duration",
        "typed_per_filter_config", "per_request_buffer_limit_bytes"]


# ------------------------------------------------------------------ HTTP/2 keys


def test_cluster_protocol_default_and_values() -> None:
    assert parse_config(BASE).clusters[0].protocol == "http1"
    for value in ("http1", "http2", "auto"):
        cfg = parse_config(edit(BASE, "  - name: backend\n", f"  - name: backend\n    protocol: {value}\n"))
        assert cfg.clusters[0].protocol == value
        assert parse_config(config_to_dict(cfg)) == cfg


def test_cluster_protocol_bad_value_names_choices() -> None:
    err = parse_error(edit(BASE, "  - name: backend\n", "  - name: backend\n    protocol: h2\n"))
    assert "clusters[0].protocol" in str(err) and "http1, http2, auto" in str(err)
    assert ":12:" in str(err)


def test_listener_http2_settings() -> None:
    from fastmesh.control.config import Http2Config
    assert parse_config(BASE).listeners[0].http2 == Http2Config(100, 65536, 1 << 20)
    cfg = parse_config(edit(BASE, "    port: 10000\n",
                            "    port: 10000\n    http2: {max_concurrent_streams: 7, "
                            "initial_stream_window_size: 131072, "
                            "initial_connection_window_size: 4194304}\n"))
    assert cfg.listeners[0].http2 == Http2Config(7, 131072, 4194304)
    assert parse_config(config_to_dict(cfg)) == cfg
    from fastmesh.control.compile import build_snapshot
    snap = build_snapshot(cfg)
    lc = snap.listeners["ingress"]
    assert (lc.h2_max_concurrent_streams, lc.h2_initial_stream_window,
            lc.h2_initial_connection_window) == (7, 131072, 4194304)


@pytest.mark.parametrize("bad", ["{max_concurrent_streams: 0}",
                                 "{initial_stream_window_size: 100}",
                                 "{initial_connection_window_size: 2147483648}",
                                 "{max_streams: 5}"])
def test_listener_http2_bad_values(bad: str) -> None:
    err = parse_error(edit(BASE, "    port: 10000\n", f"    port: 10000\n    http2: {bad}\n"))
    assert "listeners[0].http2" in str(err)


def test_http2_settings_forbidden_on_tcp_listener() -> None:
    text = """\
listeners:
  - name: t
    port: 1
    protocol: tcp
    cluster: backend
    http2: {max_concurrent_streams: 5}
clusters:
  - name: backend
    endpoints:
      - {address: 127.0.0.1, port: 8081}
"""
    err = parse_error(text)
    assert "http2" in str(err) and "tcp" in str(err)


def test_cluster_protocol_compiles() -> None:
    from fastmesh.control.compile import build_snapshot
    cfg = parse_config(edit(BASE, "  - name: backend\n", "  - name: backend\n    protocol: auto\n"))
    assert build_snapshot(cfg).clusters["backend"].protocol_name == "auto"


@pytest.mark.parametrize(("value", "seconds"), [(0, 0.0), ("0us", 0.0), ("500us", 0.0005),
                                                ("10ms", 0.01)])
def test_batch_window(value: object, seconds: float) -> None:
    cfg = parse_config(f"batch_window: {json.dumps(value)}\n" + BASE)
    assert cfg.batch_window == seconds
    assert parse_config(config_to_dict(cfg)) == cfg


# ------------------------------------------------------------------ overload and bad clients


def test_overload_keys_defaults_and_round_trip() -> None:
    cfg = parse_config(BASE)
    lst = cfg.listeners[0]
    assert lst.max_connections == 0 and lst.first_byte_timeout == 10.0
    assert cfg.overload_manager.global_downstream_max_connections == 0
    assert cfg.overload_manager.file_descriptor_threshold == 0.95
    text = edit(BASE, "    port: 10000\n",
                "    port: 10000\n    max_connections: 500\n    first_byte_timeout: 2s\n")
    text = "overload_manager:\n  global_downstream_max_connections: 1000\n" \
           "  file_descriptor_threshold: 0.9\n" + text
    cfg = parse_config(text)
    assert cfg.listeners[0].max_connections == 500
    assert cfg.listeners[0].first_byte_timeout == 2.0
    assert cfg.overload_manager.global_downstream_max_connections == 1000
    assert cfg.overload_manager.file_descriptor_threshold == 0.9
    assert parse_config(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("old,new,path,reason", [
    ("    port: 10000\n", "    port: 10000\n    max_connections: 0\n",
     "listeners[0].max_connections", "out of range"),
    ("    port: 10000\n", "    port: 10000\n    first_byte_timeout: soon\n",
     "listeners[0].first_byte_timeout", ""),
    ("listeners:\n", "overload_manager: {file_descriptor_threshold: 1.5}\nlisteners:\n",
     "overload_manager.file_descriptor_threshold", "between 0 and 1"),
    ("listeners:\n", "overload_manager: {global_downstream_max_connection: 5}\nlisteners:\n",
     "overload_manager.global_downstream_max_connection", "unknown key"),
])
def test_overload_key_errors_name_file_line_key(old, new, path, reason) -> None:
    text = edit(BASE, old, new)
    err = parse_error(text, source="over.yaml")
    assert err.file == "over.yaml" and err.path == path and reason in err.reason
    line = next(i for i, l in enumerate(text.splitlines(), 1) if path.split(".")[-1] in l)
    assert err.line == line


def test_first_byte_timeout_is_http_only() -> None:
    text = """\
listeners:
  - name: t
    port: 10001
    protocol: tcp
    cluster: backend
    first_byte_timeout: 1s
clusters:
  - name: backend
    endpoints: [{address: 127.0.0.1, port: 8080}]
"""
    err = parse_error(text)
    assert err.path == "listeners[0].first_byte_timeout" and "only allowed on http" in err.reason


# ------------------------------------------------------------------ retry policy keys

RETRY_ROUTE = """\
            per_request_buffer_limit_bytes: 64KiB
            retry_policy:
              retry_on: "reset,retriable-status-codes,unavailable"
              num_retries: 3
              per_try_timeout: 250ms
              retry_back_off: {base_interval: 10ms, max_interval: 1s}
              retriable_status_codes: [418, 409]
"""


def test_retry_policy_keys_parse_and_round_trip() -> None:
    cfg = parse_config(edit(BASE, "            cluster: backend\n",
                            "            cluster: backend\n" + RETRY_ROUTE))
    route = cfg.listeners[0].virtual_hosts[0].routes[0]
    rp = route.retry_policy
    assert rp.retry_on == ("reset", "retriable-status-codes", "unavailable")
    assert (rp.num_retries, rp.per_try_timeout, rp.base_interval, rp.max_interval) == \
        (3, 0.25, 0.01, 1.0)
    assert rp.retriable_status_codes == (409, 418)
    assert route.per_request_buffer_limit_bytes == 65536
    assert cfg.listeners[0].trust_retry_headers is False
    assert parse_config(config_to_dict(cfg)) == cfg


def test_retry_policy_defaults_are_envoys() -> None:
    cfg = parse_config(edit(BASE, "            cluster: backend\n",
                            "            cluster: backend\n            retry_policy: "
                            "{retry_on: 5xx}\n"))
    rp = cfg.listeners[0].virtual_hosts[0].routes[0].retry_policy
    assert (rp.num_retries, rp.per_try_timeout, rp.base_interval, rp.max_interval) == \
        (1, 0.0, 0.025, 0.0)       # max_interval 0: 10 x base_interval, as Envoy
    assert parse_config(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("line, text, where, reason", [
    (12, "              retry_back_off: {base_interval: 1s, max_interval: 10ms}\n",
     "retry_back_off.max_interval", "must be at least base_interval"),
    (12, "              retry_back_off: {max_interval: 10ms}\n",
     "retry_back_off.base_interval", "missing required key"),
    (12, "              retriable_status_codes: [700]\n",
     "retriable_status_codes[0]", "out of range"),
    (12, "              per_try_timeout: soon\n", "per_try_timeout", ""),
    (11, "              retry_on: \"5xx,reset-before-request\"\n", "retry_on",
     "not supported yet"),
])
def test_retry_policy_errors_name_file_line_and_key(line, text, where, reason) -> None:
    body = ("            retry_policy:\n              retry_on: 5xx\n"
            if "retry_on" not in text else "            retry_policy:\n")
    err = parse_error(edit(BASE, "            cluster: backend\n",
                           "            cluster: backend\n" + body + text))
    assert f"retry_policy.{where}" in err.path and reason in err.reason, str(err)
    assert err.file == "test.yaml" and err.line == line, str(err)


def test_trust_retry_headers_is_an_http_listener_bool() -> None:
    cfg = parse_config(edit(BASE, "    port: 10000\n", "    port: 10000\n    trust_retry_headers: true\n"))
    assert cfg.listeners[0].trust_retry_headers is True
    assert parse_config(config_to_dict(cfg)) == cfg
    err = parse_error(edit(BASE, "    port: 10000\n", "    port: 10000\n    trust_retry_headers: yes please\n"))
    assert "trust_retry_headers" in err.path and err.line == 4


def test_include_request_attempt_count_is_a_virtual_host_bool() -> None:
    cfg = parse_config(edit(BASE, "        domains: [\"*\"]\n",
                            "        domains: [\"*\"]\n        include_request_attempt_count: true\n"))
    assert cfg.listeners[0].virtual_hosts[0].include_request_attempt_count is True
    assert parse_config(config_to_dict(cfg)) == cfg
    err = parse_error(edit(BASE, "        domains: [\"*\"]\n",
                           "        domains: [\"*\"]\n        include_request_attempt_count: 2\n"))
    assert "include_request_attempt_count" in err.path and err.line == 7


def test_per_request_buffer_limit_needs_an_upstream() -> None:
    err = parse_error(edit(BASE, "            cluster: backend\n",
                           "            direct_response: {status: 200}\n"
                           "            per_request_buffer_limit_bytes: 1KiB\n"))
    assert "not allowed with direct_response" in err.reason


def test_readme_config_examples_are_valid() -> None:
    # Every yaml block of the README is a config a user may copy.
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        parse_config(block, source="README.md")
