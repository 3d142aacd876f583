"""TLS session tickets: keys shared by every worker, Envoy's session_ticket_keys, rotation.

Real `fastmesh run` processes and Python's ssl clients over real sockets:
a client makes one full handshake, keeps its session (its ticket), and
resumes on new connections; `session_reused` says whether the server took
the ticket. With two workers behind SO_REUSEPORT the new connections land on
either worker, so without shared keys about half would be full handshakes.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import time
from pathlib import Path

import pytest

from fastmesh import _tls_tickets
from fastmesh.control.config import ConfigError, parse_config
from fastmesh.security.ca import CertificateAuthority
from support.meshproc import Proc, fastmesh_argv

pytestmark = pytest.mark.skipif(_tls_tickets.unavailable() is not None,
                                reason=f"ticket keys unreachable: {_tls_tickets.unavailable()}")

VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tickets")
    ca = CertificateAuthority.init(root / "ca", "example.org")
    files = ca.issue("spiffe://example.org/ns/default/sa/web", dns_names=("localhost",)
                     ).write_files(root / "server")
    return {"cert": files["cert"], "key": files["key"], "bundle": root / "ca" / "bundle.pem"}


def listener_tls(pki, **extra) -> dict:
    return {"common_tls_context": {"tls_certificates": [
        {"certificate_chain": {"filename": str(pki["cert"])},
         "private_key": {"filename": str(pki["key"])}}]}, **extra}


class Run(Proc):
    """`fastmesh run` on one TLS listener answering 200 itself."""

    def __init__(self, tmp: Path, pki, *args: str, name: str = "fastmesh", **tls) -> None:
        self.name = name
        super().__init__(tmp)
        cfg = {"drain_timeout": 1, "admin": {"address": "127.0.0.1", "port": self.admin},
               "listeners": [{"name": "web", "address": "127.0.0.1", "port": self.port,
                              "tls": listener_tls(pki, **tls),
                              "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                  {"match": {"prefix": "/"},
                                   "direct_response": {"status": 200, "body": "ok"}}]}]}],
               "clusters": []}
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(cfg))
        self.spawn(fastmesh_argv(path, "--log-level", "warning", *args))


@pytest.fixture
def run(tmp_path, pki):
    procs: list[Run] = []

    def start(*args, **kw) -> Run:
        p = Run(tmp_path, pki, *args, name=f"fastmesh{len(procs)}", **kw)
        procs.append(p)
        return p
    yield start
    for p in procs:
        p.stop()


def client_ctx(pki, version) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki["bundle"]))
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def get(address, ctx, session=None) -> tuple[bool, ssl.SSLSession]:
    """One request on a new connection: (resumed?, the session to resume next)."""
    with socket.create_connection(address, timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):        # TLS 1.3: the ticket comes after the handshake
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data[:100]
            return s.session_reused, s.session


def resumed(address, ctx, session, n: int) -> int:
    """How many of n new connections resumed `session`."""
    return sum(get(address, ctx, session)[0] for _ in range(n))


@pytest.mark.parametrize("version", list(VERSIONS))
def test_two_workers_resume_each_others_tickets(run, pki, version):
    p = run("--workers", "2")
    ctx = client_ctx(pki, VERSIONS[version])
    reused, session = get(p.address, ctx)
    assert not reused
    # 40 connections over two SO_REUSEPORT workers: with per-worker keys about
    # half are full handshakes (all on one worker: 2^-39).
    assert resumed(p.address, ctx, session, 40) == 40


def test_envoy_session_ticket_keys_are_shared_between_processes(run, pki, tmp_path):
    key = tmp_path / "ticket.key"
    key.write_bytes(os.urandom(80))
    same = {"session_ticket_keys": {"keys": [{"filename": str(key)}]}}
    a = run("--single-process", **same)
    b = run("--single-process", **same)
    other = run("--single-process", session_ticket_keys={"keys": [
        {"inline_bytes": base64.b64encode(os.urandom(80)).decode()}]})
    ctx = client_ctx(pki, ssl.TLSVersion.TLSv1_3)
    _, session = get(a.address, ctx)
    assert resumed(b.address, ctx, session, 3) == 3      # another process, the same keys
    assert resumed(other.address, ctx, session, 3) == 0  # other keys: full handshakes


def test_an_older_key_still_decrypts_until_it_is_dropped(run, pki, tmp_path):
    # Envoy's list: the first key encrypts, the others only decrypt.
    k1, k2 = tmp_path / "k1", tmp_path / "k2"
    k1.write_bytes(os.urandom(80))
    k2.write_bytes(os.urandom(80))
    old = run("--single-process", session_ticket_keys={"keys": [{"filename": str(k1)}]})
    rotated = run("--single-process", session_ticket_keys={
        "keys": [{"filename": str(k2)}, {"filename": str(k1)}]})
    dropped = run("--single-process", session_ticket_keys={"keys": [{"filename": str(k2)}]})
    ctx = client_ctx(pki, ssl.TLSVersion.TLSv1_2)
    _, session = get(old.address, ctx)
    assert resumed(rotated.address, ctx, session, 2) == 2
    assert resumed(dropped.address, ctx, session, 2) == 0


def test_derived_keys_rotate(run, pki):
    # A 1 s period: a ticket is still taken in the next periods (the two keys
    # before the current one decrypt) and refused once its key is 3 periods old.
    p = run("--single-process", session_ticket_key_rotation="1s")
    ctx = client_ctx(pki, ssl.TLSVersion.TLSv1_2)
    # Start early in a period, so the resumption below is in the same one or the next.
    while time.time() % 1.0 > 0.5:
        time.sleep(0.05)
    epoch = int(time.time())
    _, session = get(p.address, ctx)
    assert resumed(p.address, ctx, session, 1) == 1
    while int(time.time()) < epoch + 3:          # wait for the epoch, not for a verdict
        time.sleep(0.05)
    time.sleep(0.05)                             # the proxy's timer fires at the boundary
    deadline = time.monotonic() + 5
    while resumed(p.address, ctx, session, 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert resumed(p.address, ctx, session, 1) == 0


def test_disable_stateless_session_resumption(run, pki):
    p = run("--single-process", disable_stateless_session_resumption=True)
    ctx = client_ctx(pki, ssl.TLSVersion.TLSv1_2)
    _, session = get(p.address, ctx)
    assert not session.has_ticket
    # TLS 1.2 may still resume from the server's session cache by id; the
    # ticket is what is off.


def config_with(pki, tmp_path, **tls) -> str:
    return json.dumps({"listeners": [{"name": "web", "address": "127.0.0.1", "port": 1,
                                      "tls": listener_tls(pki, **tls),
                                      "virtual_hosts": [{"name": "a", "domains": ["*"],
                                                         "routes": [{"match": {"prefix": "/"},
                                                                     "direct_response": {"status": 200}}]}]}],
                       "clusters": []}, indent=1)


def test_bad_ticket_keys_are_config_errors(pki, tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(os.urandom(48))
    with pytest.raises(ConfigError) as e:
        parse_config(config_with(pki, tmp_path, session_ticket_keys={"keys": [
            {"filename": str(short)}]}), source="t.json")
    assert "listeners[0].tls.session_ticket_keys.keys[0]" in str(e.value)
    assert "80 bytes" in str(e.value) and "48" in str(e.value)
    good = tmp_path / "good.key"
    good.write_bytes(os.urandom(80))
    with pytest.raises(ConfigError) as e:
        parse_config(config_with(pki, tmp_path, session_ticket_keys={"keys": [
            {"filename": str(good)}]}, disable_stateless_session_resumption=True),
            source="t.json")
    assert "disable_stateless_session_resumption" in str(e.value)


def test_ticket_key_api_refuses_bad_input():
    slot = _tls_tickets.new_slot()
    _tls_tickets.set_keys(slot, [os.urandom(80)])
    with pytest.raises(ValueError):
        _tls_tickets.set_keys(slot, [b"short"])
    with pytest.raises(ValueError):
        _tls_tickets.set_keys(slot, [os.urandom(80)] * 5)
    with pytest.raises(TypeError):
        _tls_tickets.attach(object(), slot)
    with pytest.raises(ValueError):
        _tls_tickets.attach(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), 10_000)
