"""A new user's first run (issue 14's friction list): --version, the demo on
other ports, one-line errors for a port in use and for bad YAML, the
annotated example, the shipped examples running, the default config path.

Each test runs the real `fastmesh` command as a process and reads what a
user would see; none of them may print a traceback."""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fastmesh import __version__
from support.origin import Origin
from support.origin_proc import free_port
from support.served import poll

ROOT = Path(__file__).resolve().parent.parent


def fastmesh(*args: str, timeout: float = 60, env: dict | None = None,
             cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastmesh", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def get(port: int, path: str = "/", host: str = "127.0.0.1") -> tuple[int, bytes]:
    c = http.client.HTTPConnection(host, port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def listening_socket(port: int = 0, address: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((address, port))
    s.listen()
    return s


class Running:
    """`fastmesh run ...` in the background, stopped (SIGTERM) on exit."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "fastmesh", "run", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def ready(self, admin_port: int, timeout: float = 30) -> bool:
        def up() -> bool:
            assert self.proc.poll() is None, self.proc.stdout.read()
            try:
                return get(admin_port, "/ready")[0] == 200
            except OSError:
                return False
        return poll(up, timeout)


def test_version_flag_and_subcommand():
    for args in (("--version",), ("version",)):
        r = fastmesh(*args)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"fastmesh {__version__}"


def test_demo_on_other_ports_proxies_a_request():
    port, admin = free_port(), free_port()
    with Running("--port", str(port), "--admin-port", str(admin), "--workers", "1") as run:
        assert run.ready(admin)
        status, body = get(port, "/hello")
        assert status == 200
        assert body == b"hello from the fastmesh demo origin\n"


def test_demo_ports_refused_with_a_config(tmp_path):
    r = fastmesh("run", "-c", str(ROOT / "examples/minimal.yaml"), "--port", "1234")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "--port" in r.stderr


@pytest.mark.parametrize("single", [False, True], ids=["supervisor", "single-process"])
def test_listener_port_in_use_is_one_line(tmp_path, single):
    taken = listening_socket()
    port = taken.getsockname()[1]
    cfg = tmp_path / "fastmesh.yaml"
    cfg.write_text(yaml.safe_dump({
        "admin": {"port": free_port()},
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": port,
                       "virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
                           {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]}],
    }))
    try:
        r = fastmesh("run", "-c", str(cfg), *(["--single-process"] if single else ["--workers", "2"]))
    finally:
        taken.close()
    assert r.returncode == 1
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "address already in use" in ln]
    assert lines == [f"fastmesh: listener 'ingress' 127.0.0.1:{port}: address already in use"], \
        r.stderr


def test_demo_admin_port_in_use_is_one_line():
    taken = listening_socket()
    admin = taken.getsockname()[1]
    try:
        r = fastmesh("run", "--port", str(free_port()), "--admin-port", str(admin),
                     "--workers", "1")
    finally:
        taken.close()
    assert r.returncode == 1
    assert "Traceback" not in r.stderr, r.stderr
    assert f"fastmesh: admin 127.0.0.1:{admin}: address already in use" in r.stderr.splitlines()


def test_demo_listener_port_in_use_names_it_and_the_way_out():
    taken = listening_socket()
    port = taken.getsockname()[1]
    try:
        r = fastmesh("run", "--port", str(port), "--admin-port", str(free_port()),
                     "--workers", "1")
    finally:
        taken.close()
    assert r.returncode == 1
    assert "Traceback" not in r.stderr, r.stderr
    assert f"fastmesh: listener 'demo' 127.0.0.1:{port}: address already in use" in r.stderr
    assert "--port" in r.stderr


@pytest.mark.parametrize("text, line, column, fragment", [
    # a key indented one column less than its siblings
    ("listeners:\n  - name: a\n    port: 10000\n   protocol: http\n", 4, 4, "protocol"),
    # an unclosed flow sequence: the fix is where it opened
    ("listeners:\n  - name: a\n    port: [1, 2\nclusters: []\n", 3, 11, "["),
    # an unclosed quote
    ('listeners:\n  - name: "a\n    port: 1\n', 2, 11, '"a'),
    ("drain_timeout: 1s\nadmin: {port: 1: 2}\n", 2, 16, ":"),
    ("listeners:\n\t- name: a\n", 2, 1, "\t"),
])
def test_yaml_syntax_error_line_column_snippet(tmp_path, text, line, column, fragment):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    r = fastmesh("validate", "-c", str(cfg))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    first, *rest = r.stderr.splitlines()
    assert first.startswith(f"invalid: {cfg}:{line}:{column}: invalid YAML: "), r.stderr
    # the snippet: the line itself, then a caret under the column
    src_line = text.splitlines()[line - 1]
    assert rest[0].endswith(src_line.replace("\t", " ")), r.stderr
    caret = rest[1]
    offset = rest[0].index("| ") + 2
    assert caret.index("^") - offset == column - 1
    assert src_line.replace("\t", " ")[column - 1:].startswith(fragment.replace("\t", " "))


def test_config_example_validates_and_runs(tmp_path):
    r = fastmesh("config", "--example")
    assert r.returncode == 0
    cfg = tmp_path / "fastmesh.yaml"
    cfg.write_text(r.stdout)
    v = fastmesh("validate", "-c", str(cfg))
    assert v.returncode == 0, v.stderr
    # it binds loopback only, everything explicit
    doc = yaml.safe_load(r.stdout)
    assert all(lst["address"] == "127.0.0.1" for lst in doc["listeners"])
    assert doc["admin"]["address"] == "127.0.0.1"
    # ... and it runs (on free ports) with its app cluster answering
    origin = Origin()
    origin.start()
    try:
        port, admin = free_port(), free_port()
        doc["admin"]["port"] = admin
        doc["listeners"][0]["port"] = port
        doc["listeners"][1]["port"] = free_port()
        doc["clusters"][0]["endpoints"] = [{"address": "127.0.0.1", "port": origin.address[1]}]
        doc["clusters"][0].pop("health_checks")
        cfg.write_text(yaml.safe_dump(doc))
        with Running("-c", str(cfg), "--workers", "1") as run:
            assert run.ready(admin)
            assert get(port, "/healthz") == (200, b"ok\n")
            assert get(port, "/api/x")[0] == 200
            assert origin.received()[-1].path == "/api/x"
    finally:
        origin.stop()


def _on_free_ports(path: Path, tmp_path: Path) -> tuple[Path, dict]:
    """The example with only its ports changed (other engineers' processes
    may hold the fixed ones on a shared machine)."""
    doc = yaml.safe_load(path.read_text())
    doc.setdefault("admin", {})["port"] = free_port()
    for lst in doc["listeners"]:
        lst["port"] = free_port()
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(doc))
    return out, doc


@pytest.mark.parametrize("name", ["minimal.yaml", "sidecar.yaml", "tcp-proxy.yaml"])
def test_examples_validate_run_and_bind_loopback(tmp_path, name):
    path = ROOT / "examples" / name
    r = fastmesh("validate", "-c", str(path))
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(path.read_text())
    assert all(lst.get("address") == "127.0.0.1" for lst in doc["listeners"]), name
    cfg, doc = _on_free_ports(path, tmp_path)
    with Running("-c", str(cfg), "--workers", "1") as run:
        assert run.ready(doc["admin"]["port"]), name
        for lst in doc["listeners"]:       # every listener accepts
            socket.create_connection(("127.0.0.1", lst["port"]), timeout=5).close()
    if name == "sidecar.yaml":
        # catalog-v2's name does not resolve here: an empty cluster, not a failed start
        assert "Traceback" not in run.proc.stdout.read()


def test_sidecar_example_unresolvable_cluster_is_503_not_a_crash(tmp_path):
    cfg, doc = _on_free_ports(ROOT / "examples/sidecar.yaml", tmp_path)
    outbound = next(lst for lst in doc["listeners"] if lst["name"] == "outbound")["port"]
    inbound = next(lst for lst in doc["listeners"] if lst["name"] == "inbound")["port"]
    with Running("-c", str(cfg), "--workers", "1") as run:
        assert run.ready(doc["admin"]["port"])
        assert get(inbound, "/healthz") == (200, b"ok\n")
        c = http.client.HTTPConnection("127.0.0.1", outbound, timeout=10)
        c.request("GET", "/x", headers={"host": "catalog", "x-canary": "1"})   # -> catalog-v2
        r = c.getresponse()
        assert r.status == 503
        c.close()
        assert run.proc.poll() is None


def test_default_listener_address_is_documented_and_explicit():
    from fastmesh.control.config import parse_config
    from fastmesh.control.schema import DEFAULT_LISTENER_ADDRESS

    cfg = parse_config({"listeners": [{"name": "a", "port": 1, "protocol": "tcp",
                                       "cluster": "c"}],
                        "clusters": [{"name": "c", "endpoints": [
                            {"address": "127.0.0.1", "port": 2}]}]})
    assert cfg.listeners[0].address == DEFAULT_LISTENER_ADDRESS == "0.0.0.0"
    docs = (ROOT / "docs/config.md").read_text()
    assert "`address`" in docs and "0.0.0.0" in docs
    from fastmesh.control.jsonschema import config_json_schema
    listener = config_json_schema()["properties"]["listeners"]["items"]
    assert listener["properties"]["address"]["default"] == "0.0.0.0"


def test_config_path_resolution(tmp_path):
    from fastmesh.cli import resolve_config_path

    mounted = tmp_path / "fastmesh.yaml"
    assert resolve_config_path("a.yaml", {"FASTMESH_CONFIG": "b.yaml"}, str(mounted)) == "a.yaml"
    assert resolve_config_path(None, {"FASTMESH_CONFIG": "b.yaml"}, str(mounted)) == "b.yaml"
    assert resolve_config_path(None, {}, str(mounted)) is None      # not mounted: the demo
    mounted.write_text("x")
    assert resolve_config_path(None, {}, str(mounted)) == str(mounted)


def test_run_reads_fastmesh_config_env(tmp_path):
    port, admin = free_port(), free_port()
    cfg = tmp_path / "env.yaml"
    cfg.write_text(yaml.safe_dump({
        "admin": {"address": "127.0.0.1", "port": admin},
        "listeners": [{"name": "env", "address": "127.0.0.1", "port": port,
                       "virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
                           {"match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": "from env\n"}}]}]}],
    }))
    env = {**os.environ, "FASTMESH_CONFIG": str(cfg)}
    with Running("--workers", "1", env=env) as run:
        assert run.ready(admin)
        assert get(port, "/") == (200, b"from env\n")


def test_healthcheck_fail_turns_ready_503_and_request_command(tmp_path):
    """The preStop hook's call: `fastmesh request POST /healthcheck/fail`."""
    port, admin = free_port(), free_port()
    with Running("--port", str(port), "--admin-port", str(admin), "--workers", "1") as run:
        assert run.ready(admin)
        r = fastmesh("request", "GET", "/ready", "--admin-port", str(admin))
        assert r.returncode == 0 and r.stdout == "LIVE\n"
        r = fastmesh("request", "POST", "/healthcheck/fail", "--admin-port", str(admin))
        assert r.returncode == 0, r.stderr
        assert get(admin, "/ready")[0] == 503
        r = fastmesh("request", "GET", "/ready", "--admin-port", str(admin))
        assert r.returncode == 1                           # an exec probe fails
        assert get(port, "/hello")[0] == 200               # traffic still flows meanwhile
        fastmesh("request", "POST", "/healthcheck/ok", "--admin-port", str(admin))
        assert get(admin, "/ready")[0] == 200
    closed = free_port()
    r = fastmesh("request", "GET", "/ready", "--admin-port", str(closed))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"admin 127.0.0.1:{closed}" in r.stderr


def test_request_finds_the_admin_port_in_the_config(tmp_path):
    """`fastmesh request` with no --admin-port reads the admin port of the
    config `run` would use (the image's HEALTHCHECK relies on it)."""
    port, admin = free_port(), free_port()
    cfg = tmp_path / "env.yaml"
    cfg.write_text(yaml.safe_dump({
        "admin": {"address": "127.0.0.1", "port": admin},
        "listeners": [{"name": "env", "address": "127.0.0.1", "port": port,
                       "virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
                           {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]}],
    }))
    env = {**os.environ, "FASTMESH_CONFIG": str(cfg)}
    with Running("--workers", "1", env=env) as run:
        assert run.ready(admin)
        r = fastmesh("request", "GET", "/ready", env=env)
        assert (r.returncode, r.stdout) == (0, "LIVE\n"), r.stderr


def test_readme_two_commands_and_the_demo_curl_line():
    """README's first two commands: `pip install . && fastmesh run` (the
    install is proven by scripts/test.sh's wheel step; here the run, and the
    curl line it prints, work) and `./scripts/test.sh` (this suite)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    commands = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    assert commands == ["pip install . && fastmesh run", "./scripts/test.sh"]
    assert "python3 -m pytest" in (ROOT / "scripts/test.sh").read_text()
    port, admin = free_port(), free_port()
    with Running("--port", str(port), "--admin-port", str(admin), "--workers", "1") as run:
        assert run.ready(admin)
        run.proc.terminate()
        out = run.proc.communicate(timeout=20)[0]
    urls = [ln.split()[-1] for ln in out.splitlines() if ln.strip().startswith("curl")]
    assert f"http://127.0.0.1:{port}/hello" in urls, out
    assert f"http://127.0.0.1:{admin}/stats/prometheus" in urls, out
    assert "Traceback" not in out
