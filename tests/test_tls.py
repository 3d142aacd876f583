"""TLS termination and origination through a live proxy, with real TLS.

Certificates come from the built-in CA (fastmesh.security.ca): workload
certificates with SPIFFE URI SANs (and DNS SANs for SNI), a second CA for
"unknown CA", a tiny lifetime for "expired". Clients are Python's ssl
(OpenSSL) over real sockets, HTTP/1.1 and HTTP/2 (h2, ALPN); the origin
records every byte it receives, so "refused" means nothing reached it.
"""
from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from fastmesh.control.config import ConfigError, parse_config
from fastmesh.security.ca import CertificateAuthority
from support.harness import Client, http_config, tcp_listener, cluster
from support.origin import Origin

TD = "example.org"
CLIENT_ID = f"spiffe://{TD}/ns/default/sa/client"
SERVER_ID = f"spiffe://{TD}/ns/default/sa/web"


class Certs:
    """A CA, a second CA, and issued certificates written to files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = CertificateAuthority.init(root / "ca", TD)
        self.other = CertificateAuthority.init(root / "other", TD)
        self.bundle = root / "ca" / "bundle.pem"

    def issue(self, name: str, spiffe_id: str, *, ca=None, ttl: float = 3600,
              dns=()) -> dict[str, Path]:
        issued = (ca or self.ca).issue(spiffe_id, ttl=ttl, dns_names=tuple(dns))
        return issued.write_files(self.root / name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    c = Certs(tmp_path_factory.mktemp("tls"))
    c.server = c.issue("server", SERVER_ID, dns=("web.example.org", "localhost"))
    c.alt = c.issue("alt", f"spiffe://{TD}/ns/default/sa/alt", dns=("*.alt.example.org",))
    c.client = c.issue("client", CLIENT_ID)
    c.wrong = c.issue("wrong", f"spiffe://{TD}/ns/other/sa/intruder")
    c.foreign = c.issue("foreign", CLIENT_ID, ca=c.other)
    c.expired = c.issue("expired", CLIENT_ID, ttl=1)
    time.sleep(1.2)            # BACKDATE makes not_before earlier; ttl 1 s ends now
    return c


def server_tls(certs: Certs, *, pairs=None, require=False, sans=None, **extra) -> dict:
    pairs = pairs or [certs.server]
    common = {"tls_certificates": [
        {"certificate_chain": {"filename": str(p["cert"])},
         "private_key": {"filename": str(p["key"])}} for p in pairs]}
    if require or sans:
        vc = {"trusted_ca": {"filename": str(certs.bundle)}}
        if sans:
            vc["match_typed_subject_alt_names"] = [
                {"san_type": "URI", "matcher": {"exact": s}} for s in sans]
        common["validation_context"] = vc
    common.update(extra)
    return {"common_tls_context": common, "require_client_certificate": require}


def client_ctx(certs: Certs, *, cert=None, alpn=("http/1.1",), verify=True,
               min_version=None, max_version=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile=str(certs.bundle))
        ctx.check_hostname = False     # SPIFFE: the identity is the URI SAN
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(str(cert["cert"]), str(cert["key"]))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


_OPEN: list[Client] = []


@pytest.fixture(autouse=True)
def _close_tls_clients(start_proxy):
    # Before the proxy's leak check (fixtures tear down in reverse order).
    yield
    while _OPEN:
        _OPEN.pop().close()


def plain_client(address) -> Client:
    c = Client(address)
    _OPEN.append(c)
    return c


def tls_client(address, ctx: ssl.SSLContext, sni: str | None = "web.example.org") -> Client:
    c = Client(address)
    _OPEN.append(c)
    c.sock = ctx.wrap_socket(c.sock, server_hostname=sni)
    return c


def lstats(proxy, name: str = "web") -> dict:
    return proxy.stats()["listeners"][name]


def refused(address, ctx, sni="web.example.org") -> str:
    """Connect and send a request; the reason the connection failed (the
    handshake or the first read), or "" if it was served."""
    try:
        c = tls_client(address, ctx, sni)
    except (ssl.SSLError, OSError) as exc:
        return type(exc).__name__
    try:
        c.request("GET", "/secret")
        c.close()
        return ""
    except (ssl.SSLError, OSError, AssertionError) as exc:
        c.close()
        return type(exc).__name__ or "closed"


# ------------------------------------------------------------------ termination

def test_https_h1_served_with_alpn_and_x_forwarded_proto(certs, origin, start_proxy):
    p = start_proxy(http_config(origin, listener={"tls": server_tls(certs)}))
    c = tls_client(p.address(), client_ctx(certs))
    assert c.sock.selected_alpn_protocol() == "http/1.1"
    r1 = c.request("GET", "/a")
    r2 = c.request("GET", "/b")          # keep-alive over TLS
    assert r1.status == r2.status == 200
    got = origin.received()
    assert [g.path for g in got] == ["/a", "/b"]
    assert got[0].header("x-forwarded-proto") == b"https"
    st = p.wait_for(lambda s: s["listeners"]["web"]["ssl.handshake"] == 1)
    assert st["listeners"]["web"]["ssl.connection_error"] == 0


def test_plaintext_to_a_tls_listener_is_refused(certs, origin, start_proxy):
    p = start_proxy(http_config(origin, listener={"tls": server_tls(certs)}))
    c = plain_client(p.address())
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.is_closed_by_peer()
    p.wait_for(lambda s: s["listeners"]["web"]["ssl.connection_error"] == 1)
    assert origin.all_raw() == b""


def h2_get(sock, path="/h2") -> tuple[int, dict]:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                            (":authority", "web.example.org"), (":path", path)],
                      end_stream=True)
    sock.sendall(conn.data_to_send())
    status, headers, done = None, {}, False
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                headers = {k.decode(): v.decode() for k, v in ev.headers}
                status = int(headers[":status"])
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    return status, headers


def test_h2_over_tls_chosen_by_alpn(certs, origin, start_proxy):
    p = start_proxy(http_config(origin, listener={"tls": server_tls(certs)}))
    c = tls_client(p.address(), client_ctx(certs, alpn=("h2", "http/1.1")))
    assert c.sock.selected_alpn_protocol() == "h2"
    status, _ = h2_get(c.sock)
    assert status == 200
    assert origin.received()[0].path == "/h2"
    assert origin.received()[0].header("x-forwarded-proto") == b"https"


def _peer_der(address, sni) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(address, timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=sni) as t:
            return t.getpeercert(True)


def test_sni_picks_the_certificate_by_dns_san(certs, origin, start_proxy):
    from fastmesh.security.peer import peer_identity
    p = start_proxy(http_config(origin, listener={
        "tls": server_tls(certs, pairs=[certs.server, certs.alt])}))
    addr = p.address()
    assert peer_identity(_peer_der(addr, "web.example.org")).uri == SERVER_ID
    assert peer_identity(_peer_der(addr, "x.alt.example.org")).uri.endswith("/sa/alt")
    # No match, or no SNI at all: the first certificate.
    assert peer_identity(_peer_der(addr, "nothing.example.com")).uri == SERVER_ID
    assert peer_identity(_peer_der(addr, None)).uri == SERVER_ID


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_1_0_and_1_1_refused(certs, origin, start_proxy, version):
    p = start_proxy(http_config(origin, listener={"tls": server_tls(certs)}))
    ctx = client_ctx(certs, verify=False)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    v = getattr(ssl.TLSVersion, version)
    ctx.minimum_version = v
    ctx.maximum_version = v
    assert refused(p.address(), ctx) != ""
    p.wait_for(lambda s: s["listeners"]["web"]["ssl.connection_error"] == 1)
    assert s_handshakes(p) == 0
    assert origin.all_raw() == b""


def s_handshakes(p) -> int:
    return lstats(p)["ssl.handshake"]


def test_session_resumption_counts_reused(certs, origin, start_proxy):
    p = start_proxy(http_config(origin, listener={"tls": server_tls(certs)}))
    ctx = client_ctx(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2   # the session is there after the handshake
    c = tls_client(p.address(), ctx)
    assert c.request("GET", "/1").status == 200
    session = c.sock.session
    c.close()
    c2 = plain_client(p.address())
    c2.sock = ctx.wrap_socket(c2.sock, server_hostname="web.example.org", session=session)
    assert c2.sock.session_reused
    assert c2.request("GET", "/2").status == 200
    p.wait_for(lambda s: s["listeners"]["web"]["ssl.session_reused"] == 1
               and s["listeners"]["web"]["ssl.handshake"] == 2)


# ------------------------------------------------------------------ bad peers (mTLS)

BAD_PEERS = [
    # (certificate fixture attribute or None, counter)
    (None, "ssl.fail_verify_no_cert"),
    ("foreign", "ssl.fail_verify_error"),
    ("expired", "ssl.fail_verify_error"),
    ("wrong", "ssl.fail_verify_san"),
]


@pytest.mark.parametrize("which,counter", BAD_PEERS,
                         ids=["no-cert", "other-ca", "expired", "wrong-spiffe-id"])
def test_bad_peer_refused_and_counted_nothing_reaches_the_origin(
        certs, origin, start_proxy, which, counter):
    p = start_proxy(http_config(origin, listener={
        "tls": server_tls(certs, require=True, sans=[CLIENT_ID])}))
    cert = getattr(certs, which) if which else None
    assert refused(p.address(), client_ctx(certs, cert=cert)) != ""
    st = p.wait_for(lambda s: s["listeners"]["web"][counter] == 1)
    assert st["listeners"]["web"]["ssl.handshake"] == 0
    assert st["listeners"]["web"]["downstream_rq_total"] == 0
    assert origin.all_raw() == b"" and origin.connections == 0
    # ... and the right peer is served by the same listener.
    c = tls_client(p.address(), client_ctx(certs, cert=certs.client))
    assert c.request("GET", "/ok").status == 200


def test_bad_peer_refused_on_a_tcp_listener(certs, tcp_echo, start_proxy):
    cfg = {"drain_timeout": 1,
           "listeners": [tcp_listener("tcp", "echo", tls=server_tls(
               certs, require=True, sans=[CLIENT_ID]))],
           "clusters": [cluster("echo", tcp_echo.address)]}
    p = start_proxy(cfg)
    assert refused(p.address("tcp"), client_ctx(certs, cert=certs.wrong)) != ""
    p.wait_for(lambda s: s["listeners"]["tcp"]["ssl.fail_verify_san"] == 1)
    c = tls_client(p.address("tcp"), client_ctx(certs, cert=certs.client))
    c.send(b"ping")
    assert c.recv_exactly(4) == b"ping"


# ------------------------------------------------------------------ permissive

def test_permissive_serves_tls_and_plaintext_h1_h2c_on_one_port(certs, origin, start_proxy):
    p = start_proxy(http_config(origin, listener={"tls": server_tls(certs),
                                                   "tls_mode": "permissive"}))
    addr = p.address()
    assert tls_client(addr, client_ctx(certs)).request("GET", "/tls").status == 200
    assert plain_client(addr).request("GET", "/plain").status == 200
    s = socket.create_connection(addr, timeout=5)
    status, _ = h2_get(s, "/h2c")          # h2c prior knowledge
    s.close()
    assert status == 200
    got = {r.path: r.header("x-forwarded-proto") for r in origin.received()}
    assert got == {"/tls": b"https", "/plain": b"http", "/h2c": b"http"}
    st = lstats(p)
    assert st["ssl.handshake"] == 1


def test_strict_mode_refuses_plaintext_the_permissive_one_takes(certs, origin, start_proxy):
    # The same request, the only difference tls_mode: this is what permissive changes.
    p = start_proxy(http_config(origin, listener={"tls": server_tls(certs)}))
    c = plain_client(p.address())
    c.send(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.is_closed_by_peer()
    assert origin.received() == []


def test_permissive_tcp_listener_takes_tls_and_plaintext(certs, tcp_echo, start_proxy):
    cfg = {"drain_timeout": 1,
           "listeners": [tcp_listener("tcp", "echo", tls=server_tls(certs),
                                      tls_mode="permissive")],
           "clusters": [cluster("echo", tcp_echo.address)]}
    p = start_proxy(cfg)
    c = plain_client(p.address("tcp"))
    c.send(b"plain")
    assert c.recv_exactly(5) == b"plain"
    t = tls_client(p.address("tcp"), client_ctx(certs))
    t.send(b"secret")
    assert t.recv_exactly(6) == b"secret"


# ------------------------------------------------------------------ origination

class TlsOrigin(Origin):
    """The recording origin behind TLS (its own certificate)."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        super().__init__("tls-origin")
        self.ctx = ctx

    async def _serve(self):
        return await asyncio.start_server(self._handle, self.host, 0, ssl=self.ctx)


def origin_ctx(pair, bundle=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pair["cert"]), str(pair["key"]))
    if bundle is not None:
        ctx.load_verify_locations(cafile=str(bundle))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture
def tls_origin(certs):
    o = TlsOrigin(origin_ctx(certs.server)).start()
    yield o
    o.stop()


def upstream_tls(certs, *, sans=(SERVER_ID,), cert=None, sni=None) -> dict:
    common = {"validation_context": {"trusted_ca": {"filename": str(certs.bundle)}}}
    if sans:
        common["validation_context"]["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": s}} for s in sans]
    if cert is not None:
        common["tls_certificates"] = [{"certificate_chain": {"filename": str(cert["cert"])},
                                       "private_key": {"filename": str(cert["key"])}}]
    out = {"common_tls_context": common}
    if sni:
        out["sni"] = sni
    return out


def test_tls_origination_with_pinned_identity(certs, tls_origin, start_proxy, clients):
    p = start_proxy(http_config(tls_origin, cluster_opts={"tls": upstream_tls(certs)}))
    assert clients(p.address()).request("GET", "/up").status == 200
    assert tls_origin.received()[0].path == "/up"
    st = p.cluster_stats("origin")
    assert st["ssl.handshake"] == 1


def test_tls_origination_sni_hostname_check(certs, tls_origin, start_proxy, clients):
    # No SAN matchers: the server's name is checked against sni (DNS SAN).
    p = start_proxy(http_config(tls_origin, cluster_opts={
        "tls": upstream_tls(certs, sans=(), sni="web.example.org")}))
    assert clients(p.address()).request("GET", "/sni").status == 200
    p2 = start_proxy(http_config(tls_origin, cluster_opts={
        "tls": upstream_tls(certs, sans=(), sni="elsewhere.example.com")}))
    assert clients(p2.address()).request("GET", "/wrong-name").status == 502
    p2.wait_for(lambda s: s["clusters"]["origin"]["ssl.fail_verify_error"] == 1)
    assert [r.path for r in tls_origin.received()] == ["/sni"]


def test_wrong_server_identity_is_a_connect_failure_no_request_byte(
        certs, tls_origin, start_proxy, clients):
    p = start_proxy(http_config(tls_origin, cluster_opts={
        "tls": upstream_tls(certs, sans=(f"spiffe://{TD}/ns/default/sa/db",))}))
    assert clients(p.address()).request("GET", "/leak").status == 502
    st = p.wait_for(lambda s: s["clusters"]["origin"]["ssl.fail_verify_san"] == 1)
    assert st["clusters"]["origin"]["upstream_cx_connect_fail"] == 1
    assert st["clusters"]["origin"]["ssl.handshake"] == 0
    assert tls_origin.all_raw() == b"" and tls_origin.received() == []


def test_upstream_from_another_ca_refused(certs, start_proxy, clients):
    o = TlsOrigin(origin_ctx(certs.foreign)).start()
    try:
        p = start_proxy(http_config(o, cluster_opts={"tls": upstream_tls(certs, sans=(CLIENT_ID,))}))
        assert clients(p.address()).request("GET", "/x").status == 502
        p.wait_for(lambda s: s["clusters"]["origin"]["ssl.fail_verify_error"] == 1)
        assert o.received() == []
    finally:
        o.stop()


# ------------------------------------------------------------------ two sidecars

def test_two_sidecars_mtls_chain_with_spiffe_identities(certs, origin, start_proxy, clients):
    # client -> A (plaintext in, mTLS out with the client's workload cert)
    #        -> B (mTLS in, requires CLIENT_ID) -> origin
    b = start_proxy(http_config(origin, listener={
        "tls": server_tls(certs, require=True, sans=[CLIENT_ID]),
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"uri": True}}))
    # (A's pooled connections are B's downstream ones: a short idle timeout
    # lets B go idle for the fixture's leak check.)
    a = start_proxy(http_config(b.address(), cluster_opts={
        "tls": upstream_tls(certs, cert=certs.client), "idle_timeout": 0.2}))
    for path in ("/1", "/2", "/3"):
        assert clients(a.address()).request("GET", path).status == 200
    assert [r.path for r in origin.received()] == ["/1", "/2", "/3"]
    xfcc = origin.received()[0].header("x-forwarded-client-cert")
    assert xfcc is not None
    xfcc = xfcc.decode()
    assert xfcc and f"URI={CLIENT_ID}" in xfcc and f"By={SERVER_ID}" in xfcc
    assert "Hash=" in xfcc
    assert a.cluster_stats("origin")["ssl.handshake"] >= 1
    assert lstats(b)["ssl.handshake"] >= 1
    # A sidecar without the client certificate is refused by B, by reason.
    a2 = start_proxy(http_config(b.address(), cluster_opts={"tls": upstream_tls(certs),
                                                             "idle_timeout": 0.2}))
    assert clients(a2.address()).request("GET", "/nocert").status in (502, 503)
    b.wait_for(lambda s: s["listeners"]["web"]["ssl.fail_verify_no_cert"] == 1)
    assert "/nocert" not in [r.path for r in origin.received()]


# ------------------------------------------------------------------ config

def _cfg(listener_tls=None, **lst) -> dict:
    cfg = http_config(("127.0.0.1", 1))
    if listener_tls is not None:
        cfg["listeners"][0]["tls"] = listener_tls
    cfg["listeners"][0].update(lst)
    return cfg


def test_config_errors_name_the_key(certs):
    bad = {"common_tls_context": {"tls_certificates": [
        {"certificate_chain": {"filename": "/nonexistent.pem"},
         "private_key": {"filename": str(certs.server["key"])}}]}}
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(bad))
    assert "certificate_chain.filename" in e.value.path and "no such file" in e.value.reason
    old = server_tls(certs, tls_params={"tls_minimum_protocol_version": "TLSv1_1"})
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(old))
    assert "tls_minimum_protocol_version" in e.value.path and "TLSv1_1" in e.value.reason
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(server_tls(certs, require=True) | {"require_client_certficate": 1}))
    assert "did you mean" in e.value.reason
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(tls_mode="permissive"))
    assert "needs tls" in e.value.reason
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(server_tls(certs, tls_params={"cipher_suites": ["NOPE-CIPHER"]})))
    assert "unknown cipher" in e.value.reason
    mismatched = {"common_tls_context": {"tls_certificates": [
        {"certificate_chain": {"filename": str(certs.server["cert"])},
         "private_key": {"filename": str(certs.client["key"])}}]}}
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(mismatched))
    assert "cannot load" in e.value.reason


def test_config_dump_redacts_inline_keys(certs):
    from fastmesh.control.config import config_to_dict
    tls = {"common_tls_context": {"tls_certificates": [
        {"certificate_chain": {"inline_string": certs.server["cert"].read_text()},
         "private_key": {"inline_string": certs.server["key"].read_text()}}]}}
    dumped = config_to_dict(parse_config(_cfg(tls)))
    tc = dumped["listeners"][0]["tls"]["common_tls_context"]["tls_certificates"][0]
    assert tc["private_key"] == {"inline_string": "[redacted]"}
    assert "PRIVATE KEY" not in repr(dumped)
    assert dumped["listeners"][0]["tls"]["common_tls_context"]["alpn_protocols"] == [
        "h2", "http/1.1"]


# ------------------------------------------------------------------ sslyze

def test_sslyze_mozilla_intermediate(certs, origin, start_proxy):
    sslyze = shutil.which("sslyze")
    if sslyze is None:
        pytest.skip("sslyze is not installed here")
    p = start_proxy(http_config(origin, listener={"tls": server_tls(certs)}))
    host, port = p.address()
    # The listener's certificate comes from our own CA, which sslyze's trust
    # stores do not hold: it is given as the CA to validate against.
    r = subprocess.run([sslyze, "--mozilla_config=intermediate",
                        f"--certinfo_ca_file={certs.bundle}", f"{host}:{port}"],
                       capture_output=True, text=True, timeout=300)
    # A private CA cannot pass sslyze's path validation (it checks against
    # the public trust stores whatever the CA file says): that one finding is
    # expected, any other is a failure.
    out = r.stdout
    assert "Checking results against Mozilla's \"intermediate\"" in out, out[-3000:]
    if r.returncode != 0:
        verdict = out.split("Not compliant.", 1)[1] if "Not compliant." in out else ""
        findings = [line.strip() for line in verdict.splitlines() if line.strip().startswith("* ")]
        assert findings and all(f.startswith("* certificate_path_validation") for f in findings), \
            out[-3000:]


# ------------------------------------------------------------------ testssl.sh

# Findings a mesh workload certificate has by design: it lives hours, not
# years (SPIFFE/Istio rotate instead of revoking), so it has no CRL or OCSP
# URI and "expires < 30 days". Anything else at MEDIUM or above fails.
_BY_DESIGN = {"cert_expirationStatus", "cert_notAfter", "cert_revocation"}


def run_testssl(address, bundle: Path, out: Path) -> list[tuple[str, str, str]]:
    host, port = address
    r = subprocess.run(
        [shutil.which("testssl"), "--quiet", "--color", "0", "--warnings", "off",
         "--jsonfile-pretty", str(out), "-p", "-s", "-f", "-P", "-S", "-U",
         "--add-ca", str(bundle), "--ip", host, f"localhost:{port}"],
        capture_output=True, text=True, timeout=400)
    assert out.exists(), (r.stdout + r.stderr)[-3000:]
    import json
    scan = json.loads(out.read_text())["scanResult"][0]
    found = [(section, f["id"], f["severity"], f.get("finding", ""))
             for section, items in scan.items() if isinstance(items, list)
             for f in items if isinstance(f, dict)]
    assert any(s == "protocols" for s, *_ in found), r.stdout[-3000:]
    return [(i, sev, text) for _, i, sev, text in found
            if sev in ("MEDIUM", "HIGH", "CRITICAL", "FATAL") and i not in _BY_DESIGN]


@pytest.mark.skipif(shutil.which("testssl") is None, reason="testssl.sh is not installed "
                    "(scripts/test.sh installs Debian's testssl.sh)")
def test_testssl_no_medium_or_high_finding(certs, origin, start_proxy, tmp_path):
    p = start_proxy(http_config(origin, listener={"tls": server_tls(certs)}))
    bad = run_testssl(p.address(), certs.bundle, tmp_path / "default.json")
    assert bad == [], bad


@pytest.mark.skipif(shutil.which("testssl") is None, reason="testssl.sh is not installed")
def test_testssl_catches_a_weak_cipher_list(certs, origin, start_proxy, tmp_path):
    # The check above can fail: a listener configured off the Mozilla
    # policy (TLS 1.2 only, a CBC suite with SHA-1) gets findings.
    weak = server_tls(certs, tls_params={"cipher_suites": ["ECDHE-ECDSA-AES128-SHA"],
                                         "tls_maximum_protocol_version": "TLSv1_2"})
    p = start_proxy(http_config(origin, listener={"tls": weak}))
    bad = run_testssl(p.address(), certs.bundle, tmp_path / "weak.json")
    assert bad, "testssl found nothing wrong with TLS 1.2 CBC-SHA1 only"


# ------------------------------------------------------------------ identity, XFCC

PEER_FILTER = {"name": "peer", "import": "filters_demo:PeerHeader"}


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_peer_identity_reaches_the_filters(proto, certs, origin, start_proxy):
    p = start_proxy(http_config(origin, listener={
        "tls": server_tls(certs, sans=[CLIENT_ID]), "http_filters": [PEER_FILTER]}))
    alpn = ("http/1.1",) if proto == "h1" else ("h2",)
    c = tls_client(p.address(), client_ctx(certs, cert=certs.client, alpn=alpn))
    if proto == "h1":
        assert c.request("GET", "/who").status == 200
    else:
        assert h2_get(c.sock, "/who")[0] == 200
    # Without a client certificate (not required here): no identity.
    c2 = tls_client(p.address(), client_ctx(certs, alpn=alpn))
    if proto == "h1":
        assert c2.request("GET", "/anon").status == 200
    else:
        assert h2_get(c2.sock, "/anon")[0] == 200
    got = {r.path: r.header("x-peer") for r in origin.received()}
    assert got == {"/who": CLIENT_ID.encode(), "/anon": b"none"}


def test_xfcc_sanitized_by_default_and_appended_when_asked(certs, origin, start_proxy):
    forged = ("x-forwarded-client-cert", "By=spiffe://evil/x;URI=spiffe://evil/admin")
    p = start_proxy(http_config(origin, listener={"tls": server_tls(certs, sans=[CLIENT_ID])}))
    c = tls_client(p.address(), client_ctx(certs, cert=certs.client))
    assert c.request("GET", "/sanitize", headers=[forged]).status == 200
    assert origin.received()[-1].header("x-forwarded-client-cert") is None
    p2 = start_proxy(http_config(origin, listener={
        "tls": server_tls(certs, sans=[CLIENT_ID]),
        "forward_client_cert_details": "APPEND_FORWARD",
        "set_current_client_cert_details": {"uri": True, "subject": True}}))
    c2 = tls_client(p2.address(), client_ctx(certs, cert=certs.client))
    assert c2.request("GET", "/append", headers=[forged]).status == 200
    xfcc = origin.received()[-1].header("x-forwarded-client-cert").decode()
    first, ours = xfcc.split(",", 1)
    assert first == forged[1]
    assert ours.startswith(f"By={SERVER_ID};Hash=") and f"URI={CLIENT_ID}" in ours
    assert 'Subject="O=example.org"' in ours
    # A client without a certificate is not mTLS: the forged header is removed.
    c3 = tls_client(p2.address(), client_ctx(certs))
    assert c3.request("GET", "/anon", headers=[forged]).status == 200
    assert origin.received()[-1].header("x-forwarded-client-cert") is None


def test_h2_upstream_over_tls_with_alpn(certs, origin, start_proxy, clients):
    # A (http2 cluster with tls: ALPN h2 by default) -> B (TLS listener) -> origin.
    b = start_proxy(http_config(origin, listener={"tls": server_tls(certs)}))
    a = start_proxy(http_config(b.address(), cluster_opts={
        "protocol": "http2", "idle_timeout": 0.2,
        "tls": upstream_tls(certs, sans=(SERVER_ID,))}))
    for path in ("/x", "/y"):
        assert clients(a.address()).request("GET", path).status == 200
    assert [r.path for r in origin.received()] == ["/x", "/y"]
    assert a.cluster_stats("origin")["ssl.handshake"] == 1     # one multiplexed connection
    st = b.stats()
    assert st["listeners"]["web"]["ssl.handshake"] == 1
