"""The process model through the real `fastmesh` command: workers sharing a
port, SIGTERM drain, SIGHUP reload under load, crash restart, admin, CLI."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.meshproc import Proc, fastmesh_argv

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.rsplit("/", 1)[1]))
        body = f"origin {self.path}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def origin():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def write_config(path: Path, port: int, admin: int, origin: int, marker: str = "v1",
                 extra_route: str = "") -> None:
    path.write_text(textwrap.dedent(f"""\
        drain_timeout: 5s
        admin: {{address: 127.0.0.1, port: {admin}}}
        listeners:
          - name: web
            address: 127.0.0.1
            port: {port}
            virtual_hosts:
              - name: all
                domains: ["*"]
                routes:
                  - match: {{path: /version}}
                    direct_response: {{status: 200, body: "{marker}"}}
        {extra_route}
                  - match: {{prefix: /}}
                    cluster: origin
        clusters:
          - name: origin
            endpoints: [{{address: 127.0.0.1, port: {origin}}}]
        """))


class Fastmesh(Proc):
    """`fastmesh run` as a child process, with its ports."""

    name = "fastmesh"
    stop_timeout = 15.0

    def __init__(self, tmp: Path, origin: int, workers: int = 2, single: bool = False) -> None:
        super().__init__(tmp)
        self.cfg = tmp / "fastmesh.yaml"
        self.origin = origin
        write_config(self.cfg, self.port, self.admin, origin)
        self.spawn(fastmesh_argv(self.cfg, "--workers", str(workers),
                                 *(["--single-process"] if single else [])))

    def get(self, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes, dict]:
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            if conn is None:
                c.close()


@pytest.fixture
def fastmesh(tmp_path, origin):
    fm = Fastmesh(tmp_path, origin)
    yield fm
    fm.stop()


@pytest.fixture(params=["supervisor", "single-process"])
def any_mode(request, tmp_path, origin):
    fm = Fastmesh(tmp_path, origin, single=request.param == "single-process")
    yield fm
    fm.stop()


def test_workers_share_the_port_and_admin_sums_their_stats(fastmesh):
    st = fastmesh.stats()
    assert st["workers"] == 2 and st["workers_ready"] == 2
    assert len(set(st["worker_pids"])) == 2
    for i in range(40):  # new connections: the kernel spreads them over both
        status, body, _ = fastmesh.get(f"/n{i}")
        assert (status, body) == (200, f"origin /n{i}\n".encode())
    st = fastmesh.stats()
    assert st["downstream_rq_2xx"] == 40
    assert st["clusters"]["origin"]["upstream_rq_total"] == 40
    prom = fastmesh.admin_get("/stats/prometheus")[1].decode()
    assert ('fastmesh_listener_downstream_rq_xx_total{listener="web",response_code_class="2xx"} 40'
            in prom)
    assert 'fastmesh_cluster_upstream_rq_total{cluster="origin"} 40' in prom
    assert 'fastmesh_listener_downstream_cx_active{listener="web"}' in prom
    dump = json.loads(fastmesh.admin_get("/config_dump")[1])
    assert dump["listeners"][0]["port"] == fastmesh.port
    assert dump["clusters"][0]["endpoints"][0]["port"] == fastmesh.origin


def prometheus(fm: Fastmesh, query: str = "") -> dict:
    """/stats/prometheus read by prometheus_client's parser: family -> Metric."""
    status, body = fm.admin_get("/stats/prometheus" + query)
    assert status == 200
    fams = {}
    for fam in text_string_to_metric_families(body.decode()):
        assert fam.name not in fams, f"family {fam.name} twice"
        fams[fam.name] = fam
    return fams


def value(fam, sample: str, **labels: str) -> float:
    [v] = [s.value for s in fam.samples if s.name == sample and s.labels == labels]
    return v


def test_prometheus_sums_workers_with_histograms_gauges_and_labels(any_mode):
    fm = any_mode
    workers = 1 if "--single-process" in fm.proc.args else 2
    n = 40
    for i in range(n):  # new connections: the kernel spreads them over the workers
        assert fm.get(f"/p{i}")[0] == 200
    held = [http.client.HTTPConnection("127.0.0.1", fm.port, timeout=5) for _ in range(6)]
    for c in held:      # accepted and counted, kept open
        assert fm.get("/held", c)[0] == 200
    try:
        deadline = time.monotonic() + 5
        while True:     # the closed connections' ends reach the workers a little later
            fams = prometheus(fm)
            active = value(fams["fastmesh_listener_downstream_cx_active"],
                           "fastmesh_listener_downstream_cx_active", listener="web")
            if active == len(held) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        for c in held:
            c.close()
    total = n + len(held)
    # Counters: every worker's requests, each counted once.
    rq = fams["fastmesh_cluster_upstream_rq"]
    assert rq.type == "counter"
    assert value(rq, "fastmesh_cluster_upstream_rq_total", cluster="origin") == total
    xx = fams["fastmesh_listener_downstream_rq_xx"]
    assert xx.type == "counter"
    assert value(xx, "fastmesh_listener_downstream_rq_xx_total", listener="web",
                 response_code_class="2xx") == total
    assert value(xx, "fastmesh_listener_downstream_rq_xx_total", listener="web",
                 response_code_class="5xx") == 0
    assert value(fams["fastmesh_cluster_upstream_rq_xx"], "fastmesh_cluster_upstream_rq_xx_total",
                 cluster="origin", response_code_class="2xx") == total
    # Gauges, summed over the workers too.
    for name in ("fastmesh_listener_downstream_cx_active", "fastmesh_listener_downstream_rq_active",
                 "fastmesh_cluster_upstream_rq_active", "fastmesh_cluster_upstream_cx_active",
                 "fastmesh_config_version", "fastmesh_workers", "fastmesh_workers_ready"):
        assert fams[name].type == "gauge", name
    assert active == len(held)
    assert value(fams["fastmesh_listener_downstream_rq_active"],
                 "fastmesh_listener_downstream_rq_active", listener="web") == 0
    assert value(fams["fastmesh_config_version"], "fastmesh_config_version") == 1
    assert value(fams["fastmesh_workers"], "fastmesh_workers") == workers
    # Latency histograms: cumulative buckets up to +Inf, sum in seconds, count.
    for fname, labels in (("fastmesh_cluster_upstream_rq_time_seconds", {"cluster": "origin"}),
                          ("fastmesh_listener_downstream_rq_time_seconds", {"listener": "web"})):
        h = fams[fname]
        assert h.type == "histogram"
        buckets = [(s.labels["le"], s.value) for s in h.samples if s.name == fname + "_bucket"]
        assert all({k: v for k, v in s.labels.items() if k != "le"} == labels
                   for s in h.samples)
        assert len(buckets) == 20 and buckets[0][0] == "0.0005" and buckets[-1] == ("+Inf", total)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
        assert value(h, fname + "_count", **labels) == total
        assert 0 < value(h, fname + "_sum", **labels) < total * 1.0   # seconds, not ms
    # A counter family always ends in _total, a gauge never does.
    for fam in fams.values():
        for smp in fam.samples:
            if fam.type == "counter":
                assert smp.name.endswith("_total"), smp.name
            elif fam.type == "gauge":
                assert not smp.name.endswith("_total"), smp.name


def test_stats_text_and_its_filter(fastmesh):
    for i in range(10):
        assert fastmesh.get(f"/t{i}")[0] == 200
    status, body = fastmesh.admin_get("/stats")
    lines = body.decode().splitlines()
    assert status == 200
    for line in ("cluster.origin.upstream_rq_total: 10", "cluster.origin.upstream_rq_2xx: 10",
                 "listener.web.downstream_rq_2xx: 10", "listener.web.downstream_cx_total: 10",
                 "config_version: 1", "workers: 2"):
        assert line in lines
    [hist] = [ln for ln in lines if ln.startswith("cluster.origin.upstream_rq_time: ")]
    assert hist.split(": ", 1)[1].startswith("P0(nan,") and "P100(nan," in hist

    def stats(query: str) -> tuple[int, list[str]]:
        status, body = fastmesh.admin_get("/stats?" + query)
        return status, body.decode().splitlines()

    assert stats("filter=" + quote(r"^cluster\.origin\.upstream_rq_(2xx|total)$")) == (
        200, ["cluster.origin.upstream_rq_2xx: 10", "cluster.origin.upstream_rq_total: 10"])
    status, found = stats("filter=_rq_time$")
    assert status == 200 and [ln.split(":")[0] for ln in found] == [
        "cluster.origin.upstream_rq_time", "listener.web.downstream_rq_time",
        "route.web.all/1.downstream_rq_time"]
    assert stats("filter=no_such_stat") == (200, [])
    assert stats("filter=" + quote("("))[0] == 400
    assert stats("format=yaml")[0] == 400
    # The filter applies to the other formats too.
    assert set(prometheus(fastmesh, "?filter=upstream_rq_total")) == {"fastmesh_cluster_upstream_rq"}
    status, body = fastmesh.admin_get("/stats?format=json&filter=" + quote(r"^listener\."))
    js = json.loads(body)
    assert js["downstream_rq_2xx"] == js["listeners"]["web"]["downstream_rq_2xx"] == 10
    assert js["clusters"] == {} and "config_version" not in js


def test_sigterm_drains_in_flight_requests_and_exits_zero(any_mode):
    fastmesh = any_mode
    result: dict = {}

    def slow() -> None:
        result["r"] = fastmesh.get("/slow/1.0")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)   # the request is in flight at the origin
    idle = http.client.HTTPConnection("127.0.0.1", fastmesh.port, timeout=5)
    assert fastmesh.get("/x", idle)[0] == 200   # an idle keep-alive connection
    fastmesh.proc.send_signal(signal.SIGTERM)
    t.join(10)
    status, body, headers = result["r"]
    assert (status, body) == (200, b"origin /slow/1.0\n")
    assert headers.get("connection") == "close"
    assert fastmesh.proc.wait(10) == 0
    # the idle keep-alive connection was closed by the drain
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        fastmesh.get("/after", idle)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fastmesh.port), timeout=2)
    assert "draining" in fastmesh.output()


def test_sighup_reload_under_load_drops_nothing(any_mode, tmp_path):
    fastmesh = any_mode
    stop = threading.Event()
    failures: list[str] = []
    counts = [0] * 4

    def load(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", fastmesh.port, timeout=10)
        while not stop.is_set():
            try:
                status, body, _ = fastmesh.get(f"/load{i}", conn)
                if status != 200 or body != f"origin /load{i}\n".encode():
                    failures.append(f"{status} {body!r}")
                counts[i] += 1
            except Exception as exc:  # any dropped request is a failure
                failures.append(repr(exc))
                conn = http.client.HTTPConnection("127.0.0.1", fastmesh.port, timeout=10)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for n in range(2, 6):
            write_config(fastmesh.cfg, fastmesh.port, fastmesh.admin, fastmesh.origin, marker=f"v{n}")
            fastmesh.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while fastmesh.get("/version")[1] != f"v{n}".encode():
                assert time.monotonic() < deadline, "reload did not take effect"
                time.sleep(0.02)
            # an invalid file is rejected and the running config keeps serving
            fastmesh.cfg.write_text("listeners: [ {name: web, port: notaport} ]\n")
            fastmesh.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
            assert fastmesh.get("/version")[1] == f"v{n}".encode()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == []
    assert all(c > 0 for c in counts)
    st = fastmesh.stats()
    assert st["downstream_rq_5xx"] == 0
    assert st["config_reloads_ok"] == 4
    assert st["config_reloads_failed"] == 4
    out = fastmesh.output()
    assert "reload rejected" in out and f"{fastmesh.cfg}:1: listeners[0]" in out


@pytest.mark.parametrize("single", [False, True], ids=["supervisor", "single-process"])
def test_sigterm_as_soon_as_the_listener_accepts_drains(tmp_path, origin, single):
    # The stop signal handlers are installed before anything serves: a
    # SIGTERM the moment the port accepts (the admin listener is not up yet)
    # drains and exits 0 instead of killing the process (status -15).
    port, admin = free_port(), free_port()
    cfg = tmp_path / "fastmesh.yaml"
    write_config(cfg, port, admin, origin)
    log = open(tmp_path / "fastmesh.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "fastmesh", "run", "-c", str(cfg),
                             "--workers", "1"] + (["--single-process"] if single else []),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_crashed_worker_is_restarted(fastmesh):
    pids = fastmesh.stats()["worker_pids"]
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        st = fastmesh.stats()
        if st["worker_restarts_total"] == 1 and st["workers_ready"] == 2:
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    assert pids[0] not in st["worker_pids"]
    for i in range(10):
        assert fastmesh.get(f"/after{i}")[0] == 200


def test_validate_command(tmp_path):
    good = tmp_path / "good.yaml"
    write_config(good, 10000, 9901, 10001)
    r = subprocess.run([sys.executable, "-m", "fastmesh", "validate", "-c", str(good)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "valid" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners:\n  - name: web\n    port: 80\n    prot: http\n")
    r = subprocess.run([sys.executable, "-m", "fastmesh", "validate", "-c", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"{bad}:4: listeners[0].prot" in r.stderr
    assert "protocol" in r.stderr   # the suggestion


def test_run_with_invalid_config_fails_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners: []\n")
    r = subprocess.run([sys.executable, "-m", "fastmesh", "run", "-c", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert str(bad) in r.stderr and "listeners" in r.stderr


def test_demo_runs_on_the_embedded_config(tmp_path):
    for port in (10000, 10001, 9901):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is busy on this machine")
    log = open(tmp_path / "demo.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "fastmesh", "run", "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", 10000, timeout=5)
                c.request("GET", "/hello")
                r = c.getresponse()
                body = r.read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status == 200 and body == b"hello from the fastmesh demo origin\n"
        c.request("GET", "/healthz")
        assert c.getresponse().read() == b"ok\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log.seek(0)
        out = log.read().decode()
        log.close()
    assert "curl -i http://127.0.0.1:10000/" in out
