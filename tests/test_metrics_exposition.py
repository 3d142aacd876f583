"""/stats/prometheus of a real `fastmesh run` (2 workers, merged by the
supervisor) after real traffic: every family parses with prometheus_client's
text and OpenMetrics parsers, follows Prometheus' conventions, and the
histograms' counts equal the request counters (listener, route, cluster,
connect). Envoy naming mode: Envoy's names, labels and milliseconds."""
from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from support.meshproc import Proc, fastmesh_argv
from support.origin_proc import OriginProc

pytestmark = pytest.mark.timeout(90)

OM_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


class Mesh(Proc):
    name = "fastmesh"

    def __init__(self, tmp: Path, origin: tuple[str, int], naming: str | None = None) -> None:
        super().__init__(tmp)
        admin: dict = {"address": "127.0.0.1", "port": self.admin}
        if naming:
            admin["metrics"] = {"naming": naming}
        cfg = {"drain_timeout": 1, "admin": admin,
               "listeners": [{"name": "web", "address": "127.0.0.1", "port": self.port,
                              "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                  {"name": "local", "match": {"prefix": "/local"},
                                   "direct_response": {"status": 404, "body": "no\n"}},
                                  {"match": {"prefix": "/"}, "cluster": "origin"}]}]}],
               "clusters": [{"name": "origin", "endpoints": [
                   {"address": origin[0], "port": origin[1]}]}]}
        (self.tmp / "fm.json").write_text(json.dumps(cfg))
        self.spawn(fastmesh_argv(self.tmp / "fm.json", "--workers", "2",
                                 "--log-level", "warning"))

    def get(self, path: str, headers: dict | None = None, admin: bool = False
            ) -> tuple[int, dict, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.admin if admin else self.port,
                                       timeout=10)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()


@pytest.fixture
def origin(tmp_path):
    o = OriginProc("o", tmp_path).start()
    yield o.address
    o.stop()


def traffic(m: Mesh, n_origin: int = 30, n_local: int = 7) -> None:
    for i in range(n_origin):
        assert m.get(f"/x{i}")[0] == 200
    for _ in range(n_local):
        assert m.get("/local")[0] == 404


def samples(families) -> dict:
    """{(sample name, sorted labels): value} of parsed families."""
    out = {}
    for fam in families:
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_text_parses_with_conventions_and_histograms_match_counters(tmp_path, origin):
    m = Mesh(tmp_path, origin)
    try:
        traffic(m)
        status, headers, body = m.get("/stats/prometheus", admin=True)
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        fams = list(text_string_to_metric_families(text))
        assert fams
        for fam in fams:
            assert fam.documentation, fam.name
            assert f"# TYPE {fam.name}" in text or f"# TYPE {fam.name}_total" in text
            if fam.type == "histogram":
                assert fam.name.endswith("_seconds"), fam.name
                assert {s.name[len(fam.name):] for s in fam.samples} == {
                    "_bucket", "_sum", "_count"}
        # Counters end in _total in the exposition itself (the parser would
        # add the suffix to its samples anyway, so the raw text is checked).
        kinds = {ln.split()[2]: ln.split()[3] for ln in text.splitlines()
                 if ln.startswith("# TYPE ")}
        counters = [n for n, k in kinds.items() if k == "counter"]
        assert counters and all(n.endswith("_total") for n in counters)
        for ln in text.splitlines():
            if not ln.startswith("#"):
                name = ln.split("{")[0].split(" ")[0]
                assert name in kinds or name.rsplit("_", 1)[0] in kinds, ln
                if name in kinds and kinds[name] == "counter":
                    assert name.endswith("_total")
        v = samples(fams)

        def val(name, **labels):
            return v[(name, tuple(sorted(labels.items())))]

        web = {"listener": "web"}
        assert val("fastmesh_listener_downstream_rq_total", **web) == 37
        assert val("fastmesh_listener_downstream_rq_time_seconds_count", **web) == 37
        assert val("fastmesh_listener_downstream_rq_time_seconds_bucket", le="+Inf", **web) == 37
        # per route: the named one and the unnamed one ("<vhost>/<index>")
        local = {"listener": "web", "route": "local"}
        other = {"listener": "web", "route": "all/1"}
        assert val("fastmesh_route_downstream_rq_total", **local) == 7
        assert val("fastmesh_route_downstream_rq_xx_total", response_code_class="4xx",
                   **local) == 7
        assert val("fastmesh_route_downstream_rq_time_seconds_count", **local) == 7
        assert val("fastmesh_route_downstream_rq_total", **other) == 30
        assert val("fastmesh_route_downstream_rq_time_seconds_count", **other) == 30
        cl = {"cluster": "origin"}
        assert val("fastmesh_cluster_upstream_rq_total", **cl) == 30
        assert val("fastmesh_cluster_upstream_rq_time_seconds_count", **cl) == 30
        assert val("fastmesh_cluster_upstream_rq_xx_total", response_code_class="2xx", **cl) == 30
        cx = val("fastmesh_cluster_upstream_cx_total", **cl)
        assert 1 <= cx <= 30
        assert val("fastmesh_cluster_upstream_cx_connect_time_seconds_count", **cl) == cx
        assert 0 < val("fastmesh_cluster_upstream_cx_connect_time_seconds_sum", **cl) < cx
        assert val("fastmesh_workers") == 2
    finally:
        m.stop()


def test_openmetrics_negotiation_and_envoy_naming(tmp_path, origin):
    m = Mesh(tmp_path, origin)
    try:
        traffic(m, 12, 3)
        status, headers, body = m.get("/stats/prometheus", {"Accept": OM_ACCEPT}, admin=True)
        assert status == 200
        assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        text = body.decode()
        assert text.endswith("# EOF\n")
        fams = list(om_families(text))   # the strict parser: raises on any violation
        types = {f.name: f.type for f in fams}
        assert types["fastmesh_cluster_upstream_rq"] == "counter"
        assert types["fastmesh_route_downstream_rq_time_seconds"] == "histogram"
        v = samples(fams)
        assert v[("fastmesh_cluster_upstream_rq_total", (("cluster", "origin"),))] == 12
        # Without the Accept header: the classic text format.
        assert "# EOF" not in m.get("/stats/prometheus", admin=True)[2].decode()

        # ?naming=envoy: Envoy's names and labels, histograms in ms.
        for accept in ({}, {"Accept": OM_ACCEPT}):
            status, _, body = m.get("/stats/prometheus?naming=envoy", accept, admin=True)
            assert status == 200
            text = body.decode()
            fams = list(om_families(text) if accept else text_string_to_metric_families(text))
            # (prometheus_client's text parser names every counter sample
            # *_total; the exposition keeps Envoy's name: checked on the text)
            v = {(k[0][:-6] if k[0].endswith("_xx_total") else k[0], k[1]): x
                 for k, x in samples(fams).items()}
            assert ('envoy_cluster_upstream_rq_xx{envoy_cluster_name="origin",'
                    'envoy_response_code_class="2"} 12') in text
            cl = (("envoy_cluster_name", "origin"),)
            assert v[("envoy_cluster_upstream_rq_total", cl)] == 12
            assert v[("envoy_cluster_upstream_rq_xx",
                      (("envoy_cluster_name", "origin"), ("envoy_response_code_class", "2")))] == 12
            hcm = (("envoy_http_conn_manager_prefix", "web"),)
            assert v[("envoy_http_downstream_rq_xx",
                      hcm + (("envoy_response_code_class", "4"),))] == 3
            assert v[("envoy_http_downstream_rq_time_count", hcm)] == 15
            assert v[("envoy_cluster_upstream_rq_time_count", cl)] == 12
            assert v[("envoy_cluster_upstream_rq_time_bucket", cl + (("le", "+Inf"),))] == 12
            assert ("envoy_cluster_upstream_cx_connect_ms_count", cl) in v
            assert "fastmesh_" not in text
        # The ms buckets: Envoy's bounds (0.5 ms ... 3600000 ms).
        assert 'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="origin",le="0.5"}' in text
        assert 'le="3600000"' in text
        assert m.get("/stats/prometheus?naming=nope", admin=True)[0] == 400
    finally:
        m.stop()


def test_envoy_naming_from_config(tmp_path, origin):
    m = Mesh(tmp_path, origin, naming="envoy")
    try:
        traffic(m, 4, 0)
        text = m.get("/stats/prometheus", admin=True)[2].decode()
        v = samples(text_string_to_metric_families(text))
        assert v[("envoy_cluster_upstream_rq_total", (("envoy_cluster_name", "origin"),))] == 4
        # ?naming= overrides the config's
        text = m.get("/stats/prometheus?naming=fastmesh", admin=True)[2].decode()
        assert "fastmesh_cluster_upstream_rq_total" in text
    finally:
        m.stop()


def test_istio_standard_metrics(tmp_path, origin):
    """admin.metrics.istio: istio_requests_total and
    istio_request_duration_milliseconds per destination and exact code."""
    m = Mesh.__new__(Mesh)
    Proc.__init__(m, tmp_path)
    cfg = {"drain_timeout": 1,
           "admin": {"address": "127.0.0.1", "port": m.admin,
                     "metrics": {"istio": True, "workload": "shop", "namespace": "prod"}},
           "listeners": [{"name": "web", "address": "127.0.0.1", "port": m.port,
                          "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                              {"name": "local", "match": {"prefix": "/local"},
                               "direct_response": {"status": 404, "body": "no\n"}},
                              {"match": {"prefix": "/"}, "cluster": "origin"}]}]}],
           "clusters": [{"name": "origin", "endpoints": [
               {"address": origin[0], "port": origin[1]}]}]}
    (tmp_path / "fm.json").write_text(json.dumps(cfg))
    m.spawn(fastmesh_argv(tmp_path / "fm.json", "--workers", "2", "--log-level", "warning"))
    try:
        traffic(m, 9, 4)
        for accept in ({}, {"Accept": OM_ACCEPT}):
            text = m.get("/stats/prometheus", accept, admin=True)[2].decode()
            fams = list(om_families(text) if accept else text_string_to_metric_families(text))
            v = samples(fams)
            base = {"reporter": "source", "source_workload": "shop",
                    "source_workload_namespace": "prod", "destination_workload": "unknown",
                    "request_protocol": "http", "grpc_response_status": "",
                    "response_flags": "-", "connection_security_policy": "unknown"}

            def key(name, service, code, **more):
                lab = {**base, "destination_service": service,
                       "destination_service_name": service, "response_code": code, **more}
                return (name, tuple(sorted(lab.items())))

            assert v[key("istio_requests_total", "origin", "200")] == 9
            assert v[key("istio_requests_total", "unknown", "404")] == 4
            d = "istio_request_duration_milliseconds"
            assert v[key(d + "_count", "origin", "200")] == 9
            assert v[key(d + "_bucket", "origin", "200", le="+Inf")] == 9
            assert v[key(d + "_bucket", "unknown", "404", le="3600000")] == 4
        # off by default: no istio_ family (test_prometheus_text_... runs without it)
    finally:
        m.stop()


def test_no_istio_metrics_by_default(tmp_path, origin):
    m = Mesh(tmp_path, origin)
    try:
        traffic(m, 3, 1)
        text = m.get("/stats/prometheus", admin=True)[2].decode()
        assert "istio_" not in text
        assert "istio." not in m.get("/stats", admin=True)[2].decode()
    finally:
        m.stop()
