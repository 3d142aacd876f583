"""etcd discovery through a live proxy and a REAL etcd (Debian's
etcd-server, one member on 127.0.0.1, ephemeral ports, a temp data dir):
endpoints written and deleted under a prefix reach the proxy; a registrant
killed loses its endpoint when its lease expires; `fastmesh register` adds
one and its SIGTERM removes it at once; etcd stopped, the last endpoints
keep serving; etcd back, changes flow again from the last revision; a
compaction meanwhile forces a full re-read; and `fastmesh run` with two
workers. Origins record what they served (x-origin on every answer)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from support.etcdserver import EtcdServer, endpoint
from support.faults import FaultProxy
from support.harness import http_config
from support.meshproc import Proc, fastmesh_argv
from support.origin import Origin
from support.served import poll, served_by

from fastmesh.control.config import ConfigError, parse_config

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(shutil.which("etcd") is None,
                                 reason="etcd not installed (apt-get install etcd-server)")]

PREFIX = "/fastmesh/services/origin/"
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def etcd(tmp_path):
    e = EtcdServer(tmp_path)
    e.start()
    yield e
    e.close()


def etcd_cluster(*urls: str, prefix: str = PREFIX, **extra) -> dict:
    return {"name": "origin", "type": "eds", "eds_config": {"etcd": {
        "endpoints": list(urls), "prefix": prefix,
        "retry_backoff": {"base_interval": "50ms", "max_interval": "200ms"}, **extra}}}


def key(o: Origin) -> str:
    return f"{PREFIX}{o.host}:{o.port}"


def register_argv(etcd_url: str, o: Origin, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fastmesh", "register", "--etcd", etcd_url, "--prefix", PREFIX,
            "--address", o.host, "--port", str(o.port), *extra]


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


# ------------------------------------------------------------------ config

@pytest.mark.parametrize("etcd_cfg, where, message", [
    ({"endpoints": [], "prefix": "/p/"}, "eds_config.etcd.endpoints", "must not be empty"),
    ({"endpoints": ["127.0.0.1:2379"], "prefix": "/p/"}, "eds_config.etcd.endpoints[0]",
     "expected http://host:port"),
    ({"endpoints": ["https://127.0.0.1:2379"], "prefix": "/p/"}, "eds_config.etcd.endpoints[0]",
     "not supported yet"),
    ({"endpoints": ["http://127.0.0.1:2379"]}, "eds_config.etcd.prefix", "missing required key"),
    ({"endpoints": ["http://127.0.0.1:2379"], "prefix": ""}, "eds_config.etcd.prefix",
     "must not be empty"),
    ({"endpoints": ["http://127.0.0.1:2379"], "prefix": "/p/", "dial_timeout": "0s"},
     "eds_config.etcd.dial_timeout", "greater than zero"),
    ({"endpoints": ["http://127.0.0.1:2379"], "prefix": "/p/", "prefx": "/q/"},
     "eds_config.etcd.prefx", "did you mean 'prefix'"),
    ({"endpoints": ["http://127.0.0.1:2379"], "prefix": "/p/",
      "retry_backoff": {"base_interval": "2s", "max_interval": "1s"}},
     "eds_config.etcd.retry_backoff.max_interval", "at least base_interval"),
])
def test_etcd_config_errors_name_the_key(etcd_cfg, where, message):
    doc = {"listeners": [{"name": "t", "port": 1, "protocol": "tcp", "cluster": "c"}],
           "clusters": [{"name": "c", "type": "eds", "eds_config": {"etcd": etcd_cfg}}]}
    with pytest.raises(ConfigError) as ei:
        parse_config(json.dumps(doc))
    text = str(ei.value)
    assert f"clusters[0].{where}" in text and message in text, text


def test_etcd_settings_round_trip_through_config_dump():
    from fastmesh.control.dump import config_to_dict
    doc = {"listeners": [{"name": "t", "port": 1, "protocol": "tcp", "cluster": "c"}],
           "clusters": [{"name": "c", "type": "eds", "eds_config": {"etcd": {
               "endpoints": ["http://10.0.0.1:2379", "http://10.0.0.2:2379"],
               "prefix": "/fastmesh/services/c/", "dial_timeout": "1s",
               "retry_backoff": {"base_interval": "100ms", "max_interval": "5s"}}}}]}
    cfg = parse_config(json.dumps(doc))
    e = cfg.clusters[0].discovery.etcd
    assert e.endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert (e.dial_timeout, e.retry_base_interval, e.retry_max_interval) == (1.0, 0.1, 5.0)
    assert parse_config(json.dumps(config_to_dict(cfg))) == cfg


@pytest.mark.parametrize("backoff, expected", [
    (None, (0.5, 30.0)),                                   # Envoy's xDS stream retry
    ({"base_interval": "1s"}, (1.0, 10.0)),                # BackoffStrategy: max = 10 x base
    ({"base_interval": "1s", "max_interval": "2s"}, (1.0, 2.0)),
])
def test_etcd_retry_backoff_defaults_are_envoys(backoff, expected):
    cl = etcd_cluster("http://127.0.0.1:2379")
    del cl["eds_config"]["etcd"]["retry_backoff"]
    if backoff:
        cl["eds_config"]["etcd"]["retry_backoff"] = backoff
    doc = {"listeners": [{"name": "t", "port": 1, "protocol": "tcp", "cluster": "origin"}],
           "clusters": [cl]}
    e = parse_config(json.dumps(doc)).clusters[0].discovery.etcd
    assert (e.retry_base_interval, e.retry_max_interval) == expected


@pytest.mark.parametrize("args, message", [
    (["--etcd", "127.0.0.1:2379"], "expected http://host:port"),
    (["--etcd", "http://127.0.0.1:2379", "--ttl", "soon"], "--ttl"),
    (["--etcd", "http://127.0.0.1:2379", "--weight", "0"], "--weight 1-128"),
])
def test_register_refuses_bad_arguments(args, message):
    base = ["--prefix", PREFIX, "--address", "127.0.0.1", "--port", "8080"]
    r = subprocess.run([sys.executable, "-m", "fastmesh", "register", *base, *args],
                       env=child_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_register_refuses_a_hostname_address():
    from fastmesh.control.etcd_register import Registration
    with pytest.raises(ValueError, match="not an IP address"):
        Registration("http://127.0.0.1:2379", PREFIX, "db.local", 8080)


def test_endpoint_values_are_checked_field_by_field():
    from fastmesh.control.eds_file import EdsError
    from fastmesh.control.etcd_source import endpoint_value, parse_endpoint_value
    e = parse_endpoint_value(endpoint_value("10.0.0.5", 8080, 3, "DRAINING", "eu", "eu-a"))
    assert (e.host, e.port, e.weight, e.healthy, e.region, e.zone) == \
        ("10.0.0.5", 8080, 3, False, "eu", "eu-a")
    for bad, field in [(b"{", "not JSON"), (b'{"address": "db.local", "port": 1}', "address"),
                       (b'{"address": "10.0.0.5", "port": 0}', "port"),
                       (b'{"address": "10.0.0.5", "port": 1, "weight": 500}', "weight"),
                       (b'{"address": "10.0.0.5", "port": 1, "health_status": "OK"}',
                        "health_status"),
                       (b'{"address": "10.0.0.5", "port": 1, "wieght": 2}', "unknown field")]:
        with pytest.raises(EdsError, match=field):
            parse_endpoint_value(bad)


# ------------------------------------------------------------------ live

def test_endpoints_follow_the_prefix(start_proxy, etcd, make_origin):
    a, b = make_origin("a"), make_origin("b")
    c = make_origin("c", host="127.0.0.2")
    p = start_proxy(http_config(clusters=[etcd_cluster(etcd.url)]))
    # nothing registered yet: an empty cluster, 503 at once, not a failed start
    assert served_by(p, 2) == ["503", "503"]
    etcd.put(key(a), endpoint(*a.address))
    assert poll(lambda: served_by(p, 1) == ["a"]), p.cluster_stats()
    etcd.put(key(b), endpoint(*b.address))
    etcd.put(key(c), endpoint(*c.address))
    assert poll(lambda: set(served_by(p, 6)) == {"a", "b", "c"})
    # deleted: no new requests for a, the origins' records say so
    etcd.delete(key(a))
    assert poll(lambda: "a" not in served_by(p, 6))
    na = len(a.received())
    assert set(served_by(p, 20)) == {"b", "c"} and len(a.received()) == na
    # an invalid value is rejected; that key keeps its last good endpoint
    etcd.put(key(b), "{not json")
    assert poll(lambda: p.cluster_stats()["update_rejected"] >= 1)
    assert set(served_by(p, 10)) == {"b", "c"}
    # DRAINING from the source: no new requests
    etcd.put(key(c), endpoint(*c.address, health_status="DRAINING"))
    assert poll(lambda: served_by(p, 4) == ["b"] * 4)
    nc = len(c.received())
    assert served_by(p, 10) == ["b"] * 10 and len(c.received()) == nc
    st = p.cluster_stats()
    assert st["membership_total"] == 2 and st["membership_healthy"] == 1
    assert st["membership_change"] >= 5 and st["update_failure"] == 0
    assert st["etcd_compacted"] == 0


def test_a_killed_registrant_disappears_when_its_lease_expires(start_proxy, etcd, make_origin,
                                                              tmp_path):
    a, b = make_origin("a"), make_origin("b")
    etcd.put(key(b), endpoint(*b.address))       # a static survivor, no lease
    p = start_proxy(http_config(clusters=[etcd_cluster(etcd.url)]))
    log = open(tmp_path / "register.log", "w+b")
    child = subprocess.Popen(register_argv(etcd.url, a, "--ttl", "2s"), env=child_env(),
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        assert poll(lambda: set(served_by(p, 6)) == {"a", "b"}, timeout=20), \
            log.seek(0) or log.read().decode()
        child.kill()                              # no revoke: only the lease's expiry
        child.wait(5)
        t0 = time.monotonic()
        # still registered right after the kill (the lease has not expired yet)
        assert key(a) in etcd.get_prefix(PREFIX)
        assert poll(lambda: key(a) not in etcd.get_prefix(PREFIX), timeout=15)
        assert time.monotonic() - t0 > 0.5       # it was the expiry, not a revoke
        assert poll(lambda: served_by(p, 4) == ["b"] * 4)
    finally:
        if child.poll() is None:
            child.kill()
        log.close()


def test_register_sigterm_removes_the_endpoint_at_once(start_proxy, etcd, make_origin, tmp_path):
    a, b = make_origin("a"), make_origin("b")
    etcd.put(key(b), endpoint(*b.address))
    p = start_proxy(http_config(clusters=[etcd_cluster(etcd.url)]))
    log = open(tmp_path / "register.log", "w+b")
    # a 60 s lease: only a revoke can remove the key within the test's bound
    child = subprocess.Popen(register_argv(etcd.url, a, "--ttl", "60s", "--weight", "2"),
                             env=child_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        assert poll(lambda: key(a) in etcd.get_prefix(PREFIX), timeout=20), \
            log.seek(0) or log.read().decode()
        assert json.loads(etcd.get_prefix(PREFIX)[key(a)])["weight"] == 2
        assert poll(lambda: set(served_by(p, 6)) == {"a", "b"})
        child.send_signal(signal.SIGTERM)
        assert child.wait(10) == 0
        assert key(a) not in etcd.get_prefix(PREFIX)
        assert poll(lambda: served_by(p, 4) == ["b"] * 4, timeout=5)
        log.seek(0)
        assert b"revoked lease" in log.read()
    finally:
        if child.poll() is None:
            child.kill()
        log.close()


def test_the_embedding_api_registers_and_cancel_revokes(etcd, make_origin):
    import fastmesh
    a = make_origin("a")
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        task = asyncio.run_coroutine_threadsafe(
            fastmesh.register(etcd.url, PREFIX, a.host, a.port, ttl=60, zone="z1"), loop)
        assert poll(lambda: key(a) in etcd.get_prefix(PREFIX))
        assert json.loads(etcd.get_prefix(PREFIX)[key(a)])["locality"] == {"zone": "z1"}
        task.cancel()
        assert poll(lambda: key(a) not in etcd.get_prefix(PREFIX), timeout=5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


def test_etcd_down_keeps_serving_and_back_resumes_from_the_revision(start_proxy, etcd,
                                                                    make_origin):
    a, b = make_origin("a"), make_origin("b")
    etcd.put(key(a), endpoint(*a.address))
    p = start_proxy(http_config(clusters=[etcd_cluster(etcd.url)]))
    assert poll(lambda: served_by(p, 1) == ["a"])
    etcd.stop()
    assert poll(lambda: p.cluster_stats()["update_failure"] >= 2)
    assert served_by(p, 10) == ["a"] * 10       # the last known endpoints keep serving
    etcd.start()                                 # same data: revisions carry on
    etcd.put(key(b), endpoint(*b.address))
    etcd.delete(key(a))
    assert poll(lambda: served_by(p, 4) == ["b"] * 4, timeout=15), p.cluster_stats()
    st = p.cluster_stats()
    assert st["etcd_watch_resumed"] >= 1 and st["etcd_compacted"] == 0


def test_a_compaction_while_away_forces_a_full_read(start_proxy, etcd, make_origin):
    a, b, c = make_origin("a"), make_origin("b"), make_origin("c")
    fp = FaultProxy(("127.0.0.1", etcd.client_port)).start()
    try:
        etcd.put(key(a), endpoint(*a.address))
        p = start_proxy(http_config(clusters=[etcd_cluster(f"http://127.0.0.1:{fp.address[1]}")]))
        assert poll(lambda: served_by(p, 1) == ["a"])
        # cut the sidecar off etcd (its watch stream is reset at the next byte)
        fp.set_mode("reset")
        etcd.put(key(b), endpoint(*b.address))
        assert poll(lambda: p.cluster_stats()["update_failure"] >= 1)
        etcd.delete(key(a))
        etcd.put(key(c), endpoint(*c.address))
        etcd.compact()                        # the sidecar's revision is gone
        assert served_by(p, 5) == ["a"] * 5   # meanwhile: the last known set
        fp.set_mode("pass")
        assert poll(lambda: set(served_by(p, 6)) == {"b", "c"}, timeout=15), p.cluster_stats()
        st = p.cluster_stats()
        assert st["etcd_compacted"] >= 1
    finally:
        fp.stop()


def test_a_disconnect_without_compaction_replays_the_missed_events(start_proxy, etcd,
                                                                   make_origin):
    """The feature-off twin of the compaction test: same cut, no compaction,
    so the watch resumes from the revision (deletes included), no re-read."""
    a, b = make_origin("a"), make_origin("b")
    fp = FaultProxy(("127.0.0.1", etcd.client_port)).start()
    try:
        etcd.put(key(a), endpoint(*a.address))
        p = start_proxy(http_config(clusters=[etcd_cluster(f"http://127.0.0.1:{fp.address[1]}")]))
        assert poll(lambda: served_by(p, 1) == ["a"])
        reads = p.cluster_stats()["update_success"]
        fp.set_mode("reset")
        etcd.put(key(b), endpoint(*b.address))
        assert poll(lambda: p.cluster_stats()["update_failure"] >= 1)
        etcd.delete(key(a))
        fp.set_mode("pass")
        assert poll(lambda: served_by(p, 4) == ["b"] * 4, timeout=15), p.cluster_stats()
        st = p.cluster_stats()
        assert st["etcd_watch_resumed"] >= 1 and st["etcd_compacted"] == 0
        assert st["update_success"] >= reads + 1
    finally:
        fp.stop()


# ------------------------------------------------------------------ with workers

class Run(Proc):
    name = "fastmesh"

    def __init__(self, tmp: Path, text: str) -> None:
        super().__init__(tmp)
        self.cfg = self.tmp / "fastmesh.yaml"
        self.cfg.write_text(text.replace("ADMIN", str(self.admin)).replace("PORT", str(self.port)))
        self.spawn(fastmesh_argv(self.cfg, "--workers", "2"), env=child_env())


def test_workers_follow_etcd_through_the_supervisor(tmp_path, etcd, make_origin):
    a, b = make_origin("a"), make_origin("b")
    etcd.put(key(a), endpoint(*a.address))
    r = Run(tmp_path, textwrap.dedent(f"""\
        drain_timeout: 1s
        admin: {{address: 127.0.0.1, port: ADMIN}}
        listeners:
          - name: web
            address: 127.0.0.1
            port: PORT
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, cluster: origin}}]}}]
        clusters:
          - name: origin
            type: eds
            eds_config:
              etcd: {{endpoints: ["{etcd.url}"], prefix: {PREFIX}}}
        """))
    try:
        import http.client

        def who(n: int) -> set[str]:
            # new connections: the kernel spreads them over both workers
            seen = set()
            for _ in range(n):
                c = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
                try:
                    c.request("GET", "/w")
                    resp = c.getresponse()
                    resp.read()
                    seen.add(resp.getheader("x-origin") if resp.status == 200
                             else str(resp.status))
                finally:
                    c.close()
            return seen
        assert r.wait(lambda: who(10) == {"a"}), r.output()
        etcd.put(key(b), endpoint(*b.address))
        etcd.delete(key(a))
        assert r.wait(lambda: who(20) == {"b"}), r.output()
        nb = len(a.received())
        assert who(20) == {"b"} and len(a.received()) == nb
        st = json.loads(r.admin_get("/stats?format=json")[1])["clusters"]["origin"]
        assert st["membership_total"] == 1 and st["update_success"] >= 2
    finally:
        r.stop()


def test_an_etcd_back_with_its_data_wiped_is_read_again(start_proxy, etcd, make_origin):
    """Its revision went back: resuming from ours would wait for revisions
    that mean something else, so the source reads the prefix again."""
    a, b = make_origin("a"), make_origin("b")
    for i in range(20):                          # our revision well above a new etcd's
        etcd.put(key(a), endpoint(*a.address, weight=1 + i % 2))
    p = start_proxy(http_config(clusters=[etcd_cluster(etcd.url)]))
    assert poll(lambda: served_by(p, 1) == ["a"])
    etcd.stop()
    shutil.rmtree(etcd.dir / "data")
    etcd.start()
    etcd.put(key(b), endpoint(*b.address))
    assert poll(lambda: served_by(p, 4) == ["b"] * 4, timeout=15), p.cluster_stats()
