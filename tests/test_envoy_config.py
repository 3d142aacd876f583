"""Envoy v3 bootstrap files run by fastmesh (control/envoy/).

Fixtures are under tests/data/envoy/: full.yaml (most supported fields),
tcp.yaml, optional.yaml, side_by_side.yaml (given to a real Envoy and to
fastmesh), base.yaml with rejections (every refused field, placed by
locations.yaml) and errors.yaml. `@DIR@` and `@PORT_*@` placeholders are
rendered per test; every good fixture also passes `envoy --mode validate`.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastmesh.control.config import ConfigError, load_config, parse_config
from fastmesh.control.envoy import (
    is_envoy_bootstrap,
    translate_bootstrap,
    translate_resources,
)
from fastmesh.control.envoy import engine, tables
from fastmesh.control.loader import _format_path
from support.meshproc import Proc, fastmesh_argv
from support.origin_proc import free_port

DATA = Path(__file__).parent / "data" / "envoy"
ROOT = Path(__file__).resolve().parent.parent
GOOD = ("full.yaml", "tcp.yaml", "optional.yaml", "side_by_side.yaml", "base.yaml")
ENVOY = shutil.which("envoy")
needs_envoy = pytest.mark.skipif(ENVOY is None, reason="envoy is not installed")


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The files fixtures name through @DIR@: a certificate, a body, an EDS file."""
    from fastmesh.bench import tlscerts

    d = tmp_path_factory.mktemp("envoy-files")
    t = tlscerts.files(str(d))
    out = Path(os.path.dirname(t.cert))
    (out / "body.txt").write_text("from a file\n")
    shutil.copy(DATA / "eds.yaml", out / "eds.yaml")
    return out


def render(name: str, files: Path, tmp: Path, **ports: int) -> Path:
    """The fixture with @DIR@ and @PORT_X@ filled in (unnamed ports get free ones)."""
    text = (DATA / name).read_text().replace("@DIR@", str(files))
    for key in set(re.findall(r"@PORT_([A-Z]+)@", text)):
        text = text.replace(f"@PORT_{key}@", str(ports.get(key.lower()) or free_port()))
    out = tmp / name
    out.write_text(text)
    return out


def parse_path(text: str) -> tuple:
    """'a.b[0]["x.y"].c' -> ('a', 'b', 0, 'x.y', 'c')."""
    out: list = []
    for m in re.finditer(r'\["([^"]+)"\]|\[(\d+)\]|([^.\[\]]+)', text):
        out.append(m.group(1) if m.group(1) else int(m.group(2)) if m.group(2) else m.group(3))
    return tuple(out)


def node_at(doc, path: tuple):
    for p in path:
        doc = doc[p]
    return doc


def parent_set(doc, path: tuple, value) -> None:
    node_at(doc, path[:-1])[path[-1]] = value


def base_doc(files: Path, tmp: Path) -> dict:
    return yaml.safe_load(render("base.yaml", files, tmp).read_text())


def envoy_error(doc: dict, tmp: Path) -> ConfigError:
    """The ConfigError of `doc` written as YAML and loaded as fastmesh does."""
    f = tmp / "case.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_config(f)
    return info.value


def load(name: str, files: Path, tmp: Path, **ports: int):
    return load_config(render(name, files, tmp, **ports))


# ---------------------------------------------------------------- detection, bootstrap

def test_shape_detection():
    assert is_envoy_bootstrap({"static_resources": {}})
    assert is_envoy_bootstrap({"dynamic_resources": {}})
    assert is_envoy_bootstrap({"node": {"id": "x"}})
    assert is_envoy_bootstrap({"admin": {"address": {"socket_address": {"port_value": 1}}}})
    assert not is_envoy_bootstrap({"admin": {"address": "127.0.0.1", "port": 9901},
                                   "listeners": []})
    assert not is_envoy_bootstrap({"listeners": []})


def test_bootstrap_translated(files, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="fastmesh.envoy"):
        cfg = load("full.yaml", files, tmp_path, admin=19901)
    assert (cfg.admin.address, cfg.admin.port, cfg.admin.allow_remote) == ("127.0.0.1", 19901,
                                                                           False)
    warnings = [r.getMessage() for r in caplog.records]
    assert any("layered_runtime: ignored: fastmesh has no runtime layer" in w for w in warnings)
    assert any("admin.access_log_path: ignored" in w for w in warnings)
    # node and dynamic_resources are handed back untouched for the xDS client.
    doc = yaml.safe_load(render("full.yaml", files, tmp_path).read_text())
    doc["dynamic_resources"] = {"ads_config": {"api_type": "DELTA_GRPC"}}
    boot = translate_bootstrap(doc, file="full.yaml")
    assert boot.dynamic_resources == {"ads_config": {"api_type": "DELTA_GRPC"}}
    assert boot.node["id"].startswith("sidecar~") and boot.node["cluster"] == "web"
    assert [c["name"] for c in boot.static_resources["clusters"]][:2] == ["a", "b"]
    assert boot.validate().listeners[0].name == "web"
    # `fastmesh validate` on an xDS bootstrap: the static part (listeners may all come
    # from the management server; rds listeners and ADS-fed EDS clusters wait for it).
    xds = yaml.safe_load(render("base.yaml", files, tmp_path).read_text())
    xds["dynamic_resources"] = {"ads_config": {"api_type": "GRPC", "grpc_services": [
        {"envoy_grpc": {"cluster_name": "backend"}}]}, "cds_config": {"ads": {}},
        "lds_config": {"ads": {}}}
    hcm = xds["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    del hcm["route_config"]
    hcm["rds"] = {"route_config_name": "web", "config_source": {"ads": {}}}
    xds["static_resources"]["clusters"].append({
        "name": "fed", "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}})
    f = tmp_path / "xds.yaml"
    f.write_text(yaml.safe_dump(xds))
    cfg = load_config(f)
    assert [lst.name for lst in cfg.listeners] == ["tcp"]          # web waits for RDS
    assert cfg.cluster("fed").discovery.type == "eds"
    # A non-loopback admin is served as Envoy would, with a warning.
    doc["admin"]["address"]["socket_address"]["address"] = "0.0.0.0"
    boot = translate_bootstrap(doc)
    assert boot.config["admin"]["allow_remote"] is True
    assert any("beyond loopback" in w for w in boot.warnings)


def test_json_bootstrap(files, tmp_path):
    yml = render("tcp.yaml", files, tmp_path, admin=19902, tcp=19003, echo=19004)
    js = tmp_path / "tcp.json"
    js.write_text(json.dumps(yaml.safe_load(yml.read_text()), indent=1))
    assert load_config(js) == dataclass_replace_source(load_config(yml), str(js))


def dataclass_replace_source(cfg, source):
    import dataclasses
    return dataclasses.replace(cfg, source=source)


# ---------------------------------------------------------------- listeners and routes

def test_listeners_translated(files, tmp_path):
    cfg = load("full.yaml", files, tmp_path, web=19010, tls=19011)
    web, secure = cfg.listeners
    assert (web.name, web.address, web.port, web.protocol) == ("web", "127.0.0.1", 19010, "http")
    assert web.per_connection_buffer_limit == 65536
    assert (secure.name, secure.port) == ("secure", 19011)
    doc = yaml.safe_load(render("tcp.yaml", files, tmp_path, tcp=19012).read_text())
    del doc["static_resources"]["listeners"][0]["name"]
    assert translate_bootstrap(doc).validate().listeners[0].name == "127.0.0.1_19012"


def test_http_connection_manager(files, tmp_path):
    web = load("full.yaml", files, tmp_path).listeners[0]
    assert web.generate_request_id is False
    assert web.xff_append is True                       # use_remote_address: true
    assert web.max_request_headers_kb == 32
    assert web.stream_idle_timeout == 120
    assert web.request_headers_timeout == 5             # {seconds: 5}
    assert web.idle_timeout == 1800
    assert web.max_stream_duration == 60
    assert web.max_headers_count == 80
    assert (web.http2.max_concurrent_streams, web.http2.initial_stream_window_size,
            web.http2.initial_connection_window_size) == (50, 131072, 2097152)
    secure = load("full.yaml", files, tmp_path).listeners[1]
    assert secure.forward_client_cert_details == "APPEND_FORWARD"
    assert secure.xff_append is False                    # Envoy's default
    # codec_type HTTP1 is served as AUTO, with a warning.
    doc = yaml.safe_load(render("optional.yaml", files, tmp_path).read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm["typed_config"]["codec_type"] = "HTTP1"
    boot = translate_bootstrap(doc)
    assert any("codec_type: served as AUTO" in w for w in boot.warnings)
    # rds: the listener waits for its route configuration (the xDS client's hook).
    del hcm["typed_config"]["route_config"]
    hcm["typed_config"]["rds"] = {"route_config_name": "web-routes",
                                  "config_source": {"ads": {}}}
    boot = translate_bootstrap(doc)
    assert boot.rds == (("web", "web-routes"),) and boot.config["listeners"] == []
    rc = {"name": "web-routes", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 204}}]}]}
    boot = translate_bootstrap(doc, route_configs={"web-routes": rc})
    assert boot.rds == () and boot.validate().listeners[0].virtual_hosts[0].name == "v"


def routes_of(cfg, vhost=0):
    return {r.name: r for r in cfg.listeners[0].virtual_hosts[vhost].routes}


def test_routes_translated(files, tmp_path):
    cfg = load("full.yaml", files, tmp_path)
    vh = cfg.listeners[0].virtual_hosts[0]
    assert (vh.name, vh.domains) == ("api", ("api.example.com", "*.api.example.com"))
    assert vh.include_request_attempt_count is True
    assert list(routes_of(cfg)) == ["exact", "regex", "headers", "retry", "split",
                                    "direct-inline", "direct-bytes", "direct-file"]
    assert routes_of(cfg)["retry"].per_request_buffer_limit_bytes == 16384
    # No virtual hosts, or a virtual host without routes: 404 for everything, as Envoy.
    doc = yaml.safe_load(render("optional.yaml", files, tmp_path).read_text())
    rc = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]
    rc["virtual_hosts"][0]["routes"] = []
    vh = translate_bootstrap(doc).validate().listeners[0].virtual_hosts[0]
    assert [(r.match.prefix, r.direct_response.status) for r in vh.routes] == [("/", 404)]
    del rc["virtual_hosts"]
    vh, = translate_bootstrap(doc).validate().listeners[0].virtual_hosts
    assert (vh.domains, vh.routes[0].direct_response.status) == (("*",), 404)


def test_route_matches(files, tmp_path):
    r = routes_of(load("full.yaml", files, tmp_path))
    assert (r["exact"].match.path, r["exact"].match.case_sensitive) == ("/exact", False)
    assert r["regex"].match.regex == "/v[0-9]+/.*"
    h = {m.name: m for m in r["headers"].match.headers}
    assert r["headers"].match.prefix == "/h"
    assert h["x-exact"].exact == "1" and h["x-prefix"].prefix == "pre"
    assert h["x-suffix"].regex == ".*suf" and h["x-contains"].regex == ".*mid.*"
    assert h["x-regex"].regex == "[a-z]+"
    assert h["x-present"].present is True
    assert (h["x-absent"].present, h["x-absent"].invert) == (True, True)
    assert h["x-sm-exact"].regex == "(?i)E"
    assert h["x-sm-prefix"].prefix == "P"
    assert h["x-sm-suffix"].regex == ".*S" and h["x-sm-contains"].regex == ".*C.*"
    assert h["x-sm-regex"].regex == "r+"


def test_route_actions(files, tmp_path):
    r = routes_of(load("full.yaml", files, tmp_path))
    assert (r["exact"].action, r["exact"].cluster) == ("cluster", "a")
    rx = r["regex"]
    assert (rx.timeout, rx.idle_timeout, rx.priority) == (2.5, 30.5, "high")
    assert (rx.max_stream_duration.max_stream_duration,
            rx.max_stream_duration.grpc_timeout_header_max,
            rx.max_stream_duration.grpc_timeout_header_offset) == (30, 10, 0.1)
    rp = r["retry"].retry_policy
    assert rp.retry_on == ("5xx", "connect-failure", "retriable-status-codes")
    assert (rp.num_retries, rp.per_try_timeout, rp.base_interval, rp.max_interval,
            rp.retriable_status_codes) == (2, 0.5, 0.025, 0.25, (409,))
    # weight 0 leaves the cluster out; {value: 25} is a UInt32Value.
    assert [(w.name, w.weight) for w in r["split"].weighted_clusters] == [("a", 75), ("b", 25)]
    assert (r["direct-inline"].direct_response.status,
            r["direct-inline"].direct_response.body) == (200, "direct\n")
    assert (r["direct-bytes"].direct_response.status,
            r["direct-bytes"].direct_response.body) == (201, "bytes\n")
    assert r["direct-file"].direct_response.body == "from a file\n"


def test_http_filters(files, tmp_path):
    cfg = load("full.yaml", files, tmp_path)
    web = cfg.listeners[0]
    assert [f.name for f in web.http_filters] == ["envoy.filters.http.local_ratelimit",
                                                  "envoy.filters.http.fault",
                                                  "envoy.filters.http.rbac"]
    rl = web.http_filters[0].config.thaw()
    assert rl == {"stat_prefix": "web", "token_bucket": {"max_tokens": 1000,
                                                         "fill_interval": 1.0}}
    assert web.http_filters[1].config.thaw()["max_active_faults"] == 10
    assert web.http_filters[2].config.thaw()["rules"]["action"] == "DENY"
    # Per-route settings are keyed by the listener's own filter names ("ratelimit").
    vh = web.virtual_hosts[0]
    assert vh.typed_per_filter_config.thaw()["envoy.filters.http.fault"]["abort"][
        "http_status"] == 503
    per = routes_of(cfg)["retry"].typed_per_filter_config.thaw()
    assert per["envoy.filters.http.local_ratelimit"]["token_bucket"]["tokens_per_fill"] == 10
    assert per["envoy.filters.http.rbac"] == {}


def test_optional_filter_skipped(files, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="fastmesh.envoy"):
        cfg = load("optional.yaml", files, tmp_path)
    assert cfg.listeners[0].http_filters == ()
    assert cfg.listeners[0].virtual_hosts[0].routes[0].typed_per_filter_config.thaw() == {}
    msgs = [r.getMessage() for r in caplog.records]
    assert any("http_filters[0].typed_config: skipped: http filter 'cors' "
               "(envoy.extensions.filters.http.cors.v3.Cors) is optional" in m for m in msgs)
    assert any("typed_per_filter_config.cors: ignored" in m for m in msgs)


def test_tcp_proxy(files, tmp_path):
    cfg = load("tcp.yaml", files, tmp_path, tcp=19020)
    db = cfg.listeners[0]
    assert (db.protocol, db.cluster, db.port, db.idle_timeout) == ("tcp", "echo", 19020, 600)
    assert [f.name for f in db.network_filters] == ["envoy.filters.network.rbac"]


def test_tls_contexts(files, tmp_path):
    cfg = load("full.yaml", files, tmp_path)
    tls = cfg.listeners[1].tls
    ctx = tls.common_tls_context
    assert ctx.tls_certificates[0].certificate_chain.filename == str(files / "cert.pem")
    assert ctx.validation_context.trusted_ca.filename == str(files / "bundle.pem")
    assert ctx.alpn_protocols == ("h2", "http/1.1")
    assert ctx.tls_params.tls_minimum_protocol_version == "TLSv1_2"
    assert tls.require_client_certificate is False
    up = cfg.cluster("b").tls
    assert up.sni == "localhost"
    assert up.common_tls_context.validation_context.trusted_ca.filename == str(
        files / "bundle.pem")


# ---------------------------------------------------------------- clusters

def test_clusters_translated(files, tmp_path):
    cfg = load("full.yaml", files, tmp_path)
    a, b, dns, logical = (cfg.cluster(n) for n in ("a", "b", "dns", "logical"))
    assert (a.discovery.type, a.lb, a.connect_timeout) == ("static", "least_request", 0.25)
    assert (a.per_connection_buffer_limit, a.max_requests_per_connection) == (32768, 100)
    # The DRAINING endpoint is left out; load_balancing_weight is the weight.
    assert [(e.address, e.port, e.weight) for e in a.endpoints] == [("127.0.0.1", 18001, 2)]
    assert (b.lb, b.ring_min, b.ring_max, b.connect_timeout) == ("ring_hash", 1024, 4096, 2)
    assert (dns.discovery.type, dns.lb, dns.maglev_table_size) == ("strict_dns", "maglev", 65537)
    assert (dns.discovery.dns_refresh_rate, dns.discovery.dns_failure_base_interval,
            dns.discovery.dns_failure_max_interval, dns.discovery.dns_lookup_family) == (
        10, 1, 10, "V4_ONLY")
    assert logical.discovery.type == "logical_dns"
    assert [(r.address, r.port) for r in logical.discovery.dns_resolvers] == [("127.0.0.1", 53)]


def test_eds_clusters(files, tmp_path):
    cfg = load("full.yaml", files, tmp_path)
    eds = cfg.cluster("eds")
    assert (eds.discovery.type, eds.discovery.eds_path) == ("eds", str(files / "eds.yaml"))
    # Fed over ADS (or api_config_source): native eds_config {ads: {}}, the xDS
    # client publishing the assignments through the discovery path.
    doc = yaml.safe_load(render("full.yaml", files, tmp_path).read_text())
    for source in ({"ads": {}}, {"api_config_source": {"api_type": "GRPC"}}):
        doc["static_resources"]["clusters"][4]["eds_cluster_config"]["eds_config"] = source
        native, dynamic = translate_bootstrap(doc)
        eds = next(c for c in native["clusters"] if c["name"] == "eds")
        assert (eds["type"], eds["eds_config"], "endpoints" in eds) == ("eds", {"ads": {}}, False)
    # An endpoint the assignment marks UNHEALTHY, DRAINING or TIMEOUT is left out (as
    # Envoy sends it no traffic): full.yaml's cluster a has a DRAINING one.
    assert [e.port for e in load("full.yaml", files, tmp_path).cluster("a").endpoints] == [18001]


def test_cluster_resilience(files, tmp_path):
    a = load("full.yaml", files, tmp_path).cluster("a")
    assert a.healthy_panic_threshold == 25
    default, high = a.circuit_breakers
    assert (default.priority, default.max_connections, default.max_pending_requests,
            default.max_requests, default.max_retries, default.track_remaining) == (
        "default", 100, 50, 200, 5, True)
    assert (high.priority, high.retry_budget.budget_percent,
            high.retry_budget.min_retry_concurrency) == ("high", 20, 3)
    od = a.outlier_detection
    assert (od.consecutive_5xx, od.consecutive_gateway_failure, od.interval,
            od.base_ejection_time, od.max_ejection_time, od.max_ejection_percent,
            od.enforcing_consecutive_gateway_failure) == (3, 4, 5, 10, 60, 50, 100)
    hc, = a.health_checks
    assert (hc.timeout, hc.interval, hc.interval_jitter, hc.unhealthy_threshold,
            hc.healthy_threshold, hc.http.path, hc.http.expected_statuses) == (
        1, 2, 0.1, 3, 1, "/healthz", ((200, 300),))


def test_cluster_http2(files, tmp_path):
    cfg = load("full.yaml", files, tmp_path)
    b = cfg.cluster("b")
    assert (b.protocol, b.idle_timeout, b.max_requests_per_connection) == ("http2", 30, 1000)
    assert cfg.cluster("dns").protocol == "http2"          # the deprecated cluster field
    assert cfg.cluster("logical").protocol == "auto"       # use_downstream_protocol_config
    assert cfg.cluster("h1").protocol == "http1"
    assert cfg.cluster("h1").idle_timeout == 3600          # Envoy's default, not native 60s


# ---------------------------------------------------------------- rejections and errors

def _rejected_rows():
    locations = yaml.safe_load((DATA / "locations.yaml").read_text())
    for t in engine.TABLES:
        for r in t.rows:
            if r.status == engine.REJECTED:
                yield pytest.param(t.message, r.field, locations.get(t.message),
                                   id=f"{t.message.rsplit('.', 1)[-1]}.{r.field}")


@pytest.mark.parametrize("message,field,at", list(_rejected_rows()))
def test_rejections(files, tmp_path, message, field, at):
    """Every field the tables refuse, put into its message in base.yaml, is refused at
    exactly its path with "not supported yet" and the row's reason."""
    assert at is not None, f"locations.yaml has no place for {message}"
    doc = base_doc(files, tmp_path)
    path = parse_path(at) if at else ()
    node_at(doc, path)[field] = {"some": "value"}
    err = envoy_error(doc, tmp_path)
    row = next(t for t in engine.TABLES if t.message == message).by_field[field]
    assert err.path == _format_path(path + (field,))
    assert err.reason == f"not supported yet: {row.note}"
    assert err.line is not None and str(err).startswith(f"{tmp_path / 'case.yaml'}:{err.line}: ")


def test_base_fixture_is_valid(files, tmp_path):
    assert load("base.yaml", files, tmp_path).cluster("backend").tls.sni == "localhost"


ERROR_CASES = yaml.safe_load((DATA / "errors.yaml").read_text())


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c["name"] for c in ERROR_CASES])
def test_errors(files, tmp_path, case):
    doc = base_doc(files, tmp_path)
    path = parse_path(case["at"]) if case["at"] else ()
    for key in [case["delete"]] if "delete" in case else []:
        del node_at(doc, path)[key]
    if "set" in case:
        node_at(doc, path).update(case["set"])
    if "value" in case:
        parent_set(doc, path, case["value"])
    if "append" in case:
        node_at(doc, path).append(case["append"])
    err = envoy_error(doc, tmp_path)
    assert err.path == case["path"], str(err)
    assert case["reason"] in err.reason, str(err)
    assert err.line is not None


# ---------------------------------------------------------------- fastmesh validate

def _validate(path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "fastmesh", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_validate_cli(files, tmp_path):
    good = render("full.yaml", files, tmp_path)
    r = _validate(good)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{good}: valid (2 listener(s), 6 cluster(s))")
    assert "layered_runtime: ignored" in r.stderr
    bad = tmp_path / "bad.yaml"
    text = render("side_by_side.yaml", files, tmp_path, a=18101).read_text()
    text = text.replace("port_value: 18101", "port_value: 70000")
    text = text.replace("route: {cluster: a, timeout: 5s}",
                        "route: {cluster: a, prefix_rewrite: /}")
    bad.write_text(text)
    lines = text.splitlines()
    rewrite_line = next(i for i, l in enumerate(lines, 1) if "prefix_rewrite" in l)
    port_line = next(i for i, l in enumerate(lines, 1) if "70000" in l)
    r = _validate(bad)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == (
        f"invalid: {bad}:{rewrite_line}: static_resources.listeners[0].filter_chains[0]"
        ".filters[0].typed_config.route_config.virtual_hosts[3].routes[1].route.prefix_rewrite: "
        "not supported yet: traffic management (rewrites, redirects, mirroring) comes later")
    text = text.replace("prefix_rewrite: /", "timeout: 5s")
    bad.write_text(text)
    r = _validate(bad)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == (
        f"invalid: {bad}:{port_line}: static_resources.clusters[0].load_assignment.endpoints[0]"
        ".lb_endpoints[0].endpoint.address.socket_address.port_value: 70000 is out of range; "
        "must be between 1 and 65535")


@needs_envoy
@pytest.mark.parametrize("name", GOOD)
def test_fixtures_are_valid_envoy(files, tmp_path, name):
    f = render(name, files, tmp_path)
    r = subprocess.run([ENVOY, "--mode", "validate", "-c", str(f), "--log-level", "error"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    load_config(f)            # and valid fastmesh


# ---------------------------------------------------------------- the compatibility table

def test_compat_doc_is_generated():
    committed = (ROOT / "docs" / "envoy-compat.md").read_text()
    assert committed == tables.markdown(), (
        "docs/envoy-compat.md is stale: python -m fastmesh.control.envoy.tables --markdown "
        "> docs/envoy-compat.md")


def test_rows_name_existing_tests():
    names = {name for name, obj in globals().items() if name.startswith("test_")
             and callable(obj)}
    missing = {(rid, test) for rid, test in tables.all_rows() if test not in names}
    assert not missing


def test_every_row_exercised(files, tmp_path):
    """Every row of the tables is applied by some fixture: the good files, the
    rejection placements, the error cases (so the doc claims nothing untested)."""
    used: set[str] = set()
    with engine.recording(used):
        for name in GOOD:
            load(name, files, tmp_path)
        for message, field, at in (p.values for p in _rejected_rows()):
            doc = base_doc(files, tmp_path)
            node_at(doc, parse_path(at) if at else ())[field] = {"some": "value"}
            with pytest.raises(ConfigError):
                parse_config(yaml.safe_dump(doc))
        for case in ERROR_CASES:
            test_errors(files, tmp_path, case)
    unused = sorted(rid for rid, _ in tables.all_rows() if rid not in used)
    assert not unused, f"rows no fixture exercises: {unused}"


# ---------------------------------------------------------------- xDS resources

def test_translate_resources_from_protos(files, tmp_path):
    """The xDS client's shape: real protobuf messages, MessageToDict with
    preserving_proto_field_name (durations "0.250s", wrappers bare, int64 as
    strings), fed to translate_resources."""
    pytest.importorskip("envoy.config.cluster.v3.cluster_pb2")
    from google.protobuf import json_format

    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
    from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
    from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
        http_connection_manager_pb2,
    )
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
    from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2  # noqa
    from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
    from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa
    from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2  # noqa
    from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401

    def json_form(v, key=None):
        # The YAML forms Envoy also reads ({seconds}, {value: N} wrappers) in proto3
        # JSON, which json_format parses; Percent messages keep their {value}.
        if isinstance(v, dict):
            if v and set(v) <= {"seconds", "nanos"}:
                return f"{v.get('seconds', 0) + v.get('nanos', 0) / 1e9:g}s"
            if set(v) == {"value"} and key not in ("healthy_panic_threshold",
                                                     "budget_percent"):
                return v["value"]
            return {k: json_form(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [json_form(x, key) for x in v]
        return v

    def roundtrip(d, cls):
        msg = json_format.ParseDict(json_form(d), cls())
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)

    doc = yaml.safe_load(render("full.yaml", files, tmp_path).read_text())
    static = doc["static_resources"]
    listeners = [roundtrip(l, listener_pb2.Listener) for l in static["listeners"]]
    # The web listener's routes come over RDS; the EDS cluster's endpoints over EDS.
    hcm = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    rc = roundtrip(hcm.pop("route_config"), route_pb2.RouteConfiguration)
    hcm["rds"] = {"route_config_name": "web-routes", "config_source": {"ads": {}}}
    clusters = [roundtrip(c, cluster_pb2.Cluster) for c in static["clusters"]]
    clusters[4]["eds_cluster_config"]["eds_config"] = {"ads": {}}
    cla = roundtrip({"cluster_name": "eds-service", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "10.1.1.1",
                                                     "port_value": 8080}}}}]}]},
        endpoint_pb2.ClusterLoadAssignment)
    assert cla["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]  # decoded, not used
    assert clusters[0]["connect_timeout"] == "0.250s"        # proto3 JSON, as the client has it
    secrets = {s["name"]: s for s in static["secrets"]}
    native = translate_resources(listeners, clusters, {"web-routes": rc},
                                 {"eds-service": cla}, secrets, validate=False)
    eds = next(c for c in native["clusters"] if c["name"] == "eds")
    assert (eds["type"], eds["eds_config"]) == ("eds", {"ads": {}})
    # {ads: {}} is the xDS client's native key; without it, the rest validates as is.
    native["clusters"].remove(eds)
    clusters.pop(4)
    cfg = parse_config(native)
    static_cfg = load_config(tmp_path / "full.yaml")
    for got, want in zip(cfg.listeners[0].virtual_hosts[0].routes,
                         static_cfg.listeners[0].virtual_hosts[0].routes):
        assert got == want, got.name
    # proto3 JSON leaves out zero values: the fault's {numerator: 0} arrives as {}.
    assert cfg.listeners[0].virtual_hosts[0].typed_per_filter_config.thaw() == {
        "envoy.filters.http.fault": {"abort": {"http_status": 503, "percentage": {}}}}
    assert cfg.listeners[1].tls == static_cfg.listeners[1].tls
    for name in ("a", "b", "dns", "logical", "h1"):
        assert cfg.cluster(name) == static_cfg.cluster(name), name
    # Errors name the resource.
    clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"]["port_value"] = 70000
    with pytest.raises(ConfigError) as info:
        translate_resources(listeners, clusters, {"web-routes": rc}, {"eds-service": cla},
                            secrets)
    assert info.value.path == ("clusters[a].load_assignment.endpoints[0].lb_endpoints[0]"
                               ".endpoint.address.socket_address.port_value")
    with pytest.raises(ConfigError) as info:
        translate_resources(listeners, clusters, {}, {"eds-service": cla}, secrets)
    assert info.value.path == "listeners[web].filter_chains[0].filters[0].typed_config.rds" \
        ".route_config_name"
    assert "'web-routes' has not been received" in info.value.reason


# ---------------------------------------------------------------- live: bench configs, Envoy

class _Run(Proc):
    name = "fastmesh"

    def __init__(self, tmp: Path, argv: list[str], name: str) -> None:
        self.name = name
        super().__init__(tmp)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.spawn(argv, ready=False, env=env)


def _get(port: int, path: str, host: str | None = None, tls: ssl.SSLContext | None = None):
    if tls is None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=tls)
    try:
        c.request("GET", path, headers={"Host": host} if host else {})
        r = c.getresponse()
        body = r.read()
        return r.status, r.getheader("x-origin"), body
    finally:
        c.close()


def _tcp_roundtrip(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


@pytest.mark.parametrize("mode", ["http", "h2", "tcp", "https", "grpc"])
def test_bench_envoy_configs_run_unchanged(tmp_path, make_origin, mode):
    """`fastmesh bench` writes its Envoy peer's bootstrap: fastmesh runs that file as
    it is and proxies real requests (h2: h2c with prior knowledge; tcp: HTTP over
    tcp_proxy; https: TLS with the bench's certificate; grpc: a grpcio server behind
    the HTTP/2 upstream the file asks for)."""
    from fastmesh.bench.peers import Envoy

    grpc_server = None
    if mode == "grpc":
        grpc = pytest.importorskip("grpc")
        from concurrent import futures

        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        servicer = health.HealthServicer()
        servicer.set("bench", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
        origin_port = grpc_server.add_insecure_port("127.0.0.1:0")
        grpc_server.start()
    else:
        origin = make_origin("bench-origin")
        origin_port = origin.address[1]
    port = free_port()
    argv = Envoy().command(str(tmp_path), mode, port, origin_port)
    cfg = Path(argv[argv.index("-c") + 1])
    assert cfg.name == f"envoy-{mode}.json" and is_envoy_bootstrap(json.loads(cfg.read_text()))
    p = _Run(tmp_path, fastmesh_argv(cfg, "--single-process"), f"fastmesh-{mode}")
    try:
        if mode == "grpc":
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stub = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                try:
                    return stub.Check(health_pb2.HealthCheckRequest(service="bench"),
                                      timeout=2).status == health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    return False         # not listening yet

            assert p.wait(serving, 30), p.output()
            with pytest.raises(grpc.RpcError) as info:          # the origin's own answer
                stub.Check(health_pb2.HealthCheckRequest(service="nosuch"), timeout=2)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            channel.close()
            return
        tls = None
        if mode == "https":
            from fastmesh.bench import tlscerts
            tls = tlscerts.client_context(tlscerts.files(str(tmp_path)).bundle)
            tls.check_hostname = False
        assert p.wait(lambda: _get(port, "/hello", tls=tls)[0] == 200, 30), p.output()
        if mode == "h2":
            from support.h2util import H2Client
            c = H2Client(("127.0.0.1", port))
            try:
                r = c.get("/bench/1")
            finally:
                c.close()
            status, who, body = r.status, r.header(b"x-origin").decode(), bytes(r.body)
        else:
            status, who, body = _get(port, "/bench/1", tls=tls)
        assert (status, who, body) == (200, "bench-origin", b"hello /bench/1\n")
        assert origin.received()[-1].target == b"/bench/1"
    finally:
        p.stop()
        if grpc_server is not None:
            grpc_server.stop(0)


def test_reload_envoy_file(files, tmp_path):
    """SIGHUP re-reads the bootstrap through the normal versioned apply; a bad one is
    refused at its Envoy path and the running config keeps serving."""
    import signal

    port = free_port()
    cfg = render("optional.yaml", files, tmp_path, web=port)
    p = _Run(tmp_path, fastmesh_argv(cfg, "--single-process"), "fastmesh-reload")
    try:
        assert p.wait(lambda: _get(port, "/")[2] == b"ok", 30), p.output()
        cfg.write_text(cfg.read_text().replace("inline_string: ok", "inline_string: v2"))
        p.proc.send_signal(signal.SIGHUP)
        assert p.wait(lambda: _get(port, "/")[2] == b"v2", 20), p.output()
        cfg.write_text(cfg.read_text().replace(
            "                direct_response: {status: 200",
            "                redirect: {path_redirect: /x}\n"
            "                direct_response: {status: 200"))
        p.proc.send_signal(signal.SIGHUP)
        assert p.wait(lambda: "reload rejected" in p.output(), 20), p.output()
        assert (f"{cfg}:25: static_resources.listeners[0].filter_chains[0].filters[0]"
                ".typed_config.route_config.virtual_hosts[0].routes[0].redirect: not supported "
                "yet") in p.output()
        assert _get(port, "/")[:1] == (200,) and _get(port, "/")[2] == b"v2"
    finally:
        p.stop()


@needs_envoy
def test_side_by_side_with_envoy(files, tmp_path, make_origin, tcp_echo):
    """The same bootstrap file to a real Envoy and to fastmesh, one after the other, in
    front of the same origins: each request is answered by the same origin (x-origin)
    with the same status."""
    a, b = make_origin("a"), make_origin("b")
    web, tcp = free_port(), free_port()
    cfg = render("side_by_side.yaml", files, tmp_path, web=web, tcp=tcp, a=a.address[1],
                 b=b.address[1], echo=tcp_echo.address[1])
    requests = [
        ("/a/x", None, {}), ("/exact", None, {}), ("/exact/more", None, {}),
        ("/v2/items", None, {}), ("/v2/items/x", None, {}), ("/split/1", None, {}),
        ("/split", None, {}), ("/health", None, {}), ("/gone", None, {}),
        ("/nothing", None, {}), ("/a/y", "api.example.com", {}),
        ("/shop/cart", "shop.example.com", {}), ("/elsewhere", "shop.example.com", {}),
        ("/nothing", None, {"x-canary": "yes"}), ("/a/z", None, {"x-canary": "no"}),
        ("/retry/1", None, {}), ("/a/x", "empty.example.com", {}),
    ]

    def run(name: str, argv: list[str]) -> list:
        p = _Run(tmp_path, argv, name)
        try:
            assert p.wait(lambda: _get(web, "/health")[0] == 200, 30), p.output()
            out = []
            for path, host, headers in requests:
                c = http.client.HTTPConnection("127.0.0.1", web, timeout=5)
                c.request("GET", path, headers={**({"Host": host} if host else {}), **headers})
                r = c.getresponse()
                body = r.read()
                out.append((path, host, headers.get("x-canary"), r.status,
                            r.getheader("x-origin"),
                            body if r.getheader("x-origin") is None and r.status != 404
                            else None))
                c.close()
            out.append(("tcp", _tcp_roundtrip(tcp, b"ping over tcp_proxy")))
            return out
        finally:
            p.stop()

    envoy = run("envoy", [ENVOY, "-c", str(cfg), "--concurrency", "1", "--log-level", "error",
                          "--disable-hot-restart", "--base-id", str(os.getpid() % 60000)])
    seen_a, seen_b = len(a.received()), len(b.received())
    mesh = run("fastmesh", fastmesh_argv(cfg, "--single-process"))
    assert mesh == envoy
    # Both really proxied: each origin saw the same requests from each proxy.
    assert len(a.received()) == 2 * seen_a and len(b.received()) == 2 * seen_b
    got = {(r[0], r[1], r[2]): (r[3], r[4]) for r in envoy[:-1]}
    assert got[("/split/1", None, None)] == (200, "a")          # weights 100/0
    assert got[("/v2/items", None, None)] == (200, "b")
    assert got[("/nothing", None, None)] == (404, None)
    assert got[("/elsewhere", "shop.example.com", None)] == (404, None)
    assert got[("/gone", None, None)] == (410, None)
    assert got[("/a/x", "empty.example.com", None)] == (404, None)      # a host without routes
    assert envoy[-1] == ("tcp", b"ping over tcp_proxyBYE")
