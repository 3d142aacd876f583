"""Certificate rotation through live proxies, with real TLS clients.

Certificates come from the built-in CA. The sources are the two of
control/certs.py: files watched on disk (rewritten atomically as `fastmesh
ca issue` does, or swapped through a Kubernetes-style ``..data`` symlink),
and the built-in CA directly (``builtin_ca``). A client tells which
certificate it got by the serial of the one the proxy presented; the
client certificate an mTLS cluster presents is seen by the next sidecar's
x-forwarded-client-cert Hash (the SHA-256 of that certificate).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from fastmesh.control.config import ConfigError, parse_config
from fastmesh.security.ca import CertificateAuthority
from support.harness import Client, http_config
from support.meshproc import Proc, fastmesh_argv
from support.origin_proc import free_port

TD = "example.org"
CLIENT_ID = f"spiffe://{TD}/ns/default/sa/client"
SERVER_ID = f"spiffe://{TD}/ns/default/sa/web"
SHORT_TTL = 6.0          # a few seconds: certificates expire during the tests


def serial_of(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number


def serial_file(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def sha256_file(path: Path) -> str:
    return hashlib.sha256(x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(
        __import__("cryptography.hazmat.primitives.serialization",
                   fromlist=["Encoding"]).Encoding.DER)).hexdigest()


def client_ctx(bundle: Path, cert: dict | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(bundle))
    ctx.check_hostname = False         # SPIFFE: the identity is the URI SAN
    if cert is not None:
        ctx.load_cert_chain(str(cert["cert"]), str(cert["key"]))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def presented_serial(address, ctx: ssl.SSLContext) -> int:
    """A new TLS connection's server certificate serial (and one request
    served over it)."""
    c = Client(address)
    try:
        c.sock = ctx.wrap_socket(c.sock, server_hostname="web.example.org")
        serial = serial_of(c.sock.getpeercert(True))
        assert c.request("GET", "/probe").status == 200
        return serial
    finally:
        c.close()


def wait_until(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.01)


class Pki:
    """A CA and workload certificates written where proxies read them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = CertificateAuthority.init(root / "ca", TD)
        self.bundle = root / "ca" / "bundle.pem"

    def issue(self, name: str, spiffe_id: str, *, ttl: float = 3600.0) -> dict[str, Path]:
        return self.ca.issue(spiffe_id, ttl=ttl, dns_names=("web.example.org",)).write_files(
            self.root / name)


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path)


def files_tls(pair: dict, *, bundle: Path | None = None, require=False, sans=()) -> dict:
    common: dict = {"tls_certificates": [{"certificate_chain": {"filename": str(pair["cert"])},
                                          "private_key": {"filename": str(pair["key"])}}]}
    if bundle is not None:
        common["validation_context"] = {"trusted_ca": {"filename": str(bundle)}}
        if sans:
            common["validation_context"]["match_typed_subject_alt_names"] = [
                {"san_type": "URI", "matcher": {"exact": s}} for s in sans]
    out = {"common_tls_context": common}
    if require:
        out["require_client_certificate"] = True
    return out


def lst(p, name="web") -> dict:
    return p.stats()["listeners"][name]


# ------------------------------------------------------------------ load

class Load:
    """Steady load from threads: keep-alive HTTP/1.1 clients, each on ONE
    connection for the whole test (a dropped connection is an error), and
    `fresh` clients that open a new TLS connection per request."""

    def __init__(self, keepalive=(), fresh=()) -> None:
        self.ok = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._keepalive, args=(a,), daemon=True)
                        for a in keepalive]
        self.threads += [threading.Thread(target=self._fresh, args=(a, ctx), daemon=True)
                         for a, ctx in fresh]

    def _count(self, ok: bool, why: str = "") -> None:
        with self.lock:
            if ok:
                self.ok += 1
            else:
                self.failed.append(why)

    def _keepalive(self, address) -> None:
        c = Client(address)
        try:
            while not self.stop.is_set():
                try:
                    r = c.request("GET", "/ka")
                    self._count(r.status == 200 and not r.connection_close,
                                f"keep-alive: status {r.status}")
                    if r.status != 200 or r.connection_close:
                        return
                except Exception as exc:   # noqa: BLE001 - any error is a failed request
                    self._count(False, f"keep-alive: {exc!r}")
                    return
                time.sleep(0.002)
        finally:
            c.close()

    def _fresh(self, address, ctx) -> None:
        while not self.stop.is_set():
            c = Client(address)
            try:
                c.sock = ctx.wrap_socket(c.sock, server_hostname="web.example.org")
                r = c.request("GET", "/fresh")
                self._count(r.status == 200, f"fresh: status {r.status}")
            except Exception as exc:   # noqa: BLE001 - any error is a failed request
                self._count(False, f"fresh: {exc!r}")
            finally:
                c.close()
            time.sleep(0.005)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


# ------------------------------------------------------------------ the bar

def test_100_rotations_under_load_nothing_lost(pki, origin, start_proxy):
    """client -> A (plaintext in; mTLS out with A's client certificate from
    files) -> B (mTLS in with B's server certificate from files) -> origin.
    Both certificates, a few seconds' lifetime, are replaced 100 times
    while requests flow: every request succeeds, no keep-alive connection
    drops, every new handshake after a rotation sees the new certificate."""
    b_pair = pki.issue("b", SERVER_ID, ttl=SHORT_TTL)
    a_pair = pki.issue("a", CLIENT_ID, ttl=SHORT_TTL)
    direct = pki.issue("direct", CLIENT_ID)            # a client straight to B
    b = start_proxy(http_config(origin, listener={
        "tls": files_tls(b_pair, bundle=pki.bundle, require=True, sans=[CLIENT_ID]),
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"uri": True}}))
    # A's pooled connections to B are B's downstream ones: a few requests
    # each, so A keeps opening new ones (handshakes with its current client
    # certificate) while old ones finish theirs.
    a = start_proxy(http_config(b.address(), cluster_opts={
        "tls": files_tls(a_pair, bundle=pki.bundle, sans=[SERVER_ID]),
        "max_requests_per_connection": 20, "idle_timeout": 0.3}))
    ctx = client_ctx(pki.bundle, direct)
    assert presented_serial(b.address(), ctx) == serial_file(b_pair["cert"])
    ka = Client(b.address())                 # established TLS keep-alive, kept all along
    ka.sock = ctx.wrap_socket(ka.sock, server_hostname="web.example.org")
    first_serial = serial_of(ka.sock.getpeercert(True))
    try:
        with Load(keepalive=[a.address(), a.address()],
                  fresh=[(b.address(), ctx)]) as load:
            for i in range(100):
                pki.issue("b", SERVER_ID, ttl=SHORT_TTL)
                pki.issue("a", CLIENT_ID, ttl=SHORT_TTL)
                want_b = serial_file(b_pair["cert"])
                want_a = sha256_file(a_pair["cert"])
                wait_until(lambda: presented_serial(b.address(), ctx) == want_b, 10,
                           f"rotation {i}: B's new server certificate")

                def a_rotated() -> bool:
                    reqs = origin.received()
                    return any(f"Hash={want_a}" in (r.header("x-forwarded-client-cert") or b"")
                               .decode() for r in reqs[-50:])
                wait_until(a_rotated, 10, f"rotation {i}: A's new client certificate")
                # The established connection is still served (its old certificate).
                assert ka.request("GET", f"/ka-direct/{i}").status == 200
            time.sleep(0.2)     # some load after the last rotation too
        assert load.failed == [], load.failed[:5]
        assert load.ok > 100
        assert serial_of(ka.sock.getpeercert(True)) == first_serial
    finally:
        ka.close()
    sa = a.cluster_stats("origin")
    sb = lst(b)
    assert sa["upstream_cx_connect_fail"] == 0 and sa["ssl.connection_error"] == 0
    for k in ("ssl.connection_error", "ssl.fail_verify_no_cert", "ssl.fail_verify_error",
              "ssl.fail_verify_san"):
        assert sb[k] == 0, (k, sb)
    assert sb["ssl.certificate_update_success"] >= 101
    assert sa["ssl.certificate_update_success"] >= 101
    # The origin got every request B accepted: nothing dropped between.
    b.wait_requests_done()
    st = b.stats()
    assert st["downstream_rq_2xx"] == len(origin.received())
    assert origin.errors == []


# ------------------------------------------------------------------ files

def test_invalid_new_files_rejected_last_good_kept(pki, origin, start_proxy):
    pair = pki.issue("srv", SERVER_ID)
    p = start_proxy(http_config(origin, listener={"tls": files_tls(pair)}))
    ctx = client_ctx(pki.bundle)
    good = serial_file(pair["cert"])
    assert presented_serial(p.address(), ctx) == good
    # A half-written certificate (a writer that does not rename).
    text = pair["cert"].read_bytes()
    pair["cert"].write_bytes(text[: len(text) // 2])
    p.wait_for(lambda s: s["listeners"]["web"]["ssl.certificate_update_rejected"] >= 1, 5)
    assert presented_serial(p.address(), ctx) == good
    # A whole certificate whose key is another one's.
    other = pki.ca.issue(SERVER_ID, dns_names=("web.example.org",))
    pair["cert"].write_bytes(other.cert_pem)
    p.wait_for(lambda s: s["listeners"]["web"]["ssl.certificate_update_rejected"] >= 2, 5)
    assert presented_serial(p.address(), ctx) == good
    # Then a good pair: taken.
    pki.issue("srv", SERVER_ID)
    new = serial_file(pair["cert"])
    wait_until(lambda: presented_serial(p.address(), ctx) == new, 10, "the good pair")
    assert new != good


def test_kubernetes_secret_symlink_swap(pki, origin, start_proxy, tmp_path):
    """A Kubernetes secret volume: cert.pem -> ..data/cert.pem, ..data ->
    ..<timestamp>/; an update writes a new timestamped directory and renames
    a new ..data link over the old one."""
    vol = tmp_path / "secret"
    vol.mkdir()

    def publish(n: int) -> int:
        issued = pki.ca.issue(SERVER_ID, dns_names=("web.example.org",))
        d = vol / f"..2026_12_02_{n:04d}"
        d.mkdir()
        (d / "tls.crt").write_bytes(issued.cert_pem)
        (d / "tls.key").write_bytes(issued.key_pem)
        tmp_link = vol / "..data_tmp"
        os.symlink(d.name, tmp_link)
        os.rename(tmp_link, vol / "..data")
        for f in ("tls.crt", "tls.key"):
            if not (vol / f).is_symlink():
                os.symlink(f"..data/{f}", vol / f)
        return x509.load_pem_x509_certificate(issued.cert_pem).serial_number

    first = publish(1)
    p = start_proxy(http_config(origin, listener={"tls": files_tls(
        {"cert": vol / "tls.crt", "key": vol / "tls.key"})}))
    ctx = client_ctx(pki.bundle)
    assert presented_serial(p.address(), ctx) == first
    for n in range(2, 5):
        want = publish(n)
        wait_until(lambda: presented_serial(p.address(), ctx) == want, 10, f"swap {n}")


def test_trust_bundle_change_applies_to_new_handshakes(pki, origin, start_proxy, tmp_path):
    """The listener's trusted_ca file changes: a client certificate from a
    CA it did not trust is taken by new handshakes once it does."""
    other = CertificateAuthority.init(tmp_path / "other", TD)
    pair = pki.issue("srv", SERVER_ID)
    trust = tmp_path / "trust.pem"
    trust.write_bytes(pki.bundle.read_bytes())
    p = start_proxy(http_config(origin, listener={"tls": files_tls(pair, bundle=trust,
                                                                   require=True)}))
    foreign = other.issue(CLIENT_ID).write_files(tmp_path / "foreign")
    ctx = client_ctx(pki.bundle, foreign)

    def served() -> bool:
        try:
            presented_serial(p.address(), ctx)
            return True
        except (OSError, AssertionError):
            return False
    assert not served()
    p.wait_for(lambda s: s["listeners"]["web"]["ssl.fail_verify_error"] >= 1)
    from fastmesh.security.ca import write_file
    write_file(trust, pki.bundle.read_bytes() + other.bundle_pem, 0o644)
    wait_until(served, 10, "the new trust bundle")


# ------------------------------------------------------------------ built-in CA

def builtin(pki: Pki, spiffe_id: str, ttl: float = 4.0, frac: float = 0.5, **extra) -> dict:
    return {"builtin_ca": {"directory": str(pki.root / "ca"), "spiffe_id": spiffe_id,
                           "ttl": ttl, "renew_fraction": frac,
                           "dns_names": ["web.example.org"], **extra}}


def test_builtin_ca_issues_and_renews_at_the_fraction(pki, origin, start_proxy):
    p = start_proxy(http_config(origin, listener={"tls": {
        "common_tls_context": builtin(pki, SERVER_ID, ttl=3.0, frac=0.5)}}))
    ctx = client_ctx(pki.bundle)
    c = Client(p.address())
    c.sock = ctx.wrap_socket(c.sock, server_hostname="web.example.org")
    cert = x509.load_der_x509_certificate(c.sock.getpeercert(True))
    c.close()
    ids = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier)
    assert ids == [SERVER_ID]
    life = (cert.not_valid_after_utc.timestamp() - time.time())
    assert 0 < life <= 3.0
    seen = {cert.serial_number}
    # Renewed every ~1.5 s (half of 3 s): a few new serials, each valid when seen.
    deadline = time.monotonic() + 10
    while len(seen) < 4 and time.monotonic() < deadline:
        seen.add(presented_serial(p.address(), ctx))
        time.sleep(0.1)
    assert len(seen) >= 4, seen


def test_root_rotation_with_traffic_flowing(pki, origin, start_proxy):
    """A -> B over mTLS, both with certificates from the built-in CA;
    `rotate-root`, then `--finish` once both hold certificates of the new
    root, while requests flow: nothing fails; after --finish, a certificate
    of the old root is refused by B."""
    old_cert = pki.issue("old-client", CLIENT_ID)
    b = start_proxy(http_config(origin, listener={"tls": {
        "common_tls_context": {**builtin(pki, SERVER_ID),
                               "validation_context": {"match_typed_subject_alt_names": [
                                   {"san_type": "URI", "matcher": {"exact": CLIENT_ID}}]}},
        "require_client_certificate": True},
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"cert": True}}))
    a = start_proxy(http_config(b.address(), cluster_opts={
        "tls": {"common_tls_context": {
            **builtin(pki, CLIENT_ID),
            "validation_context": {"match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": SERVER_ID}}]}}},
        "max_requests_per_connection": 20, "idle_timeout": 0.3}))

    def issuers(p) -> set[str]:
        certs = p._in_loop(lambda: p.proxy._dataplane.certs())["certificates"]
        return {c["cert_chain"][0]["serial_number"] for c in certs}

    def signed_by_new_root(p) -> bool:
        # By signature: the two roots may share a subject (same second).
        dp = p.proxy._dataplane
        for mat in p._in_loop(lambda: dict(dp.secrets)).values():
            try:
                x509.load_pem_x509_certificate(mat["certs"][0][0].encode()) \
                    .verify_directly_issued_by(new_root)
            except Exception:   # noqa: BLE001 - InvalidSignature: the old root's
                return False
        return True

    with Load(keepalive=[a.address(), a.address()]) as load:
        time.sleep(0.3)
        new_root = pki.ca.rotate_root()
        wait_until(lambda: signed_by_new_root(a) and signed_by_new_root(b),
                   15, "certificates of the new root in A and B")
        assert load.failed == [], load.failed[:5]
        pki.ca.finish_rotation()
        # Both trust the new root only, and traffic still flows.
        wait_until(lambda: all(
            len(x509.load_pem_x509_certificates(m["ca"].encode())) == 1
            for p in (a, b) for m in p._in_loop(lambda: dict(p.proxy._dataplane.secrets))
            .values()), 10, "bundles with the new root only")
        time.sleep(0.5)
    assert load.failed == [], load.failed[:5]
    assert load.ok > 50
    assert issuers(a) and issuers(b)
    # What is served is the new root's: B's certificate verifies against the
    # new root alone, with a new client certificate...
    fresh = pki.issue("new-client", CLIENT_ID)
    assert presented_serial(b.address(), client_ctx(pki.bundle, fresh)) == int(
        next(iter(issuers(b))), 16)
    # ...A presents a certificate of the new root to B (XFCC Cert=, the PEM).
    c = Client(a.address())
    try:
        assert c.request("GET", "/after-finish").status == 200
    finally:
        c.close()
    rec = [r for r in origin.received() if r.path == "/after-finish"][0]
    xfcc = rec.header("x-forwarded-client-cert").decode()
    pem = urllib.parse.unquote(xfcc.split("Cert=", 1)[1].split(";", 1)[0])
    x509.load_pem_x509_certificate(pem.encode()).verify_directly_issued_by(new_root)
    # ...and a certificate of the old root (issued before the rotation) is refused.
    with pytest.raises((OSError, AssertionError)):
        presented_serial(b.address(), client_ctx(pki.bundle, old_cert))
    b.wait_for(lambda s: s["listeners"]["web"]["ssl.fail_verify_error"] >= 1)


# ------------------------------------------------------------------ admin and stats

def test_certs_endpoint_and_expiry_metrics(pki, origin, tmp_path):
    pair = pki.issue("srv", SERVER_ID, ttl=3 * 86400)
    client = pki.issue("cli", CLIENT_ID, ttl=86400)
    admin = free_port()
    cfg = http_config(origin, listener={"tls": files_tls(pair, bundle=pki.bundle)},
                      cluster_opts={"tls": files_tls(client, bundle=pki.bundle,
                                                     sans=[SERVER_ID])})
    cfg["admin"] = {"address": "127.0.0.1", "port": admin}
    from support.harness import ProxyThread

    class AdminProxy(ProxyThread):
        async def _setup(self) -> None:
            import fastmesh
            self.proxy = fastmesh.Proxy(self.config, admin=True)
            await self.proxy.start()

    p = AdminProxy(cfg).start()
    try:
        def get(path: str) -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=5) as r:
                return r.read()
        body = get("/certs")
        doc = json.loads(body)
        by_kind = {("listener" if "listener" in c else "cluster"): c for c in doc["certificates"]}
        leaf = by_kind["listener"]["cert_chain"][0]
        cert = x509.load_pem_x509_certificate(pair["cert"].read_bytes())
        assert by_kind["listener"]["listener"] == "web"
        assert leaf["serial_number"] == format(cert.serial_number, "x")
        assert {"uri": SERVER_ID} in leaf["subject_alt_names"]
        assert {"dns": "web.example.org"} in leaf["subject_alt_names"]
        assert leaf["path"] == str(pair["cert"])
        assert leaf["days_until_expiration"] == "2"
        assert leaf["expiration_time"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert leaf["valid_from"] == cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert by_kind["listener"]["ca_cert"][0]["serial_number"] == format(
            pki.ca.root.serial_number, "x")
        assert by_kind["cluster"]["cluster"] == "origin"
        assert by_kind["cluster"]["cert_chain"][0]["days_until_expiration"] == "0"
        # No key material anywhere the admin shows.
        dump = get("/config_dump")
        for text in (body, dump, get("/stats"), get("/stats/prometheus")):
            assert b"PRIVATE KEY" not in text
        st = p.stats()
        assert st["listeners"]["web"]["ssl.certificate.0.expiration_unix_time_seconds"] == \
            int(cert.not_valid_after_utc.timestamp())
        assert st["days_until_first_cert_expiring"] == 0       # the cluster's: < 1 day
        assert 0 < st["seconds_until_first_cert_expiring"] <= 86400
        prom = get("/stats/prometheus").decode()
        assert 'fastmesh_listener_ssl_certificate_0_expiration_unix_time_seconds' \
               '{listener="web"}' in prom
        # Rotated: /certs and the gauge follow.
        pki.issue("srv", SERVER_ID, ttl=5 * 86400)
        new = x509.load_pem_x509_certificate(pair["cert"].read_bytes())
        wait_until(lambda: json.loads(get("/certs"))["certificates"][1]["cert_chain"][0]
                   ["serial_number"] == format(new.serial_number, "x"), 10, "/certs rotated")
        st = p.stats()
        assert st["listeners"]["web"]["ssl.certificate.0.expiration_unix_time_seconds"] == \
            int(new.not_valid_after_utc.timestamp())
    finally:
        p.stop()


# ------------------------------------------------------------------ workers

class WorkersProc(Proc):
    name = "fastmesh-workers"

    def __init__(self, tmp: Path, cfg: dict) -> None:
        super().__init__(tmp)
        cfg = json.loads(json.dumps(cfg))
        cfg["listeners"][0]["port"] = self.port
        cfg["admin"] = {"address": "127.0.0.1", "port": self.admin}
        self.cfg = self.tmp / "fastmesh.yaml"
        self.cfg.write_text(yaml.safe_dump(cfg))
        self.spawn(fastmesh_argv(self.cfg, "--workers", "2", "--log-level", "warning"))


def test_two_workers_serve_the_same_rotated_certificate(pki, origin, tmp_path):
    pair = pki.issue("srv", SERVER_ID)
    p = WorkersProc(tmp_path, http_config(origin, listener={"tls": files_tls(pair)}))
    try:
        ctx = client_ctx(pki.bundle)
        assert p.stats()["workers"] == 2
        for n in range(3):
            want = serial_file(pair["cert"])
            wait_until(lambda: presented_serial(p.address, ctx) == want, 10, f"round {n}")
            # Many new connections, spread over both workers by SO_REUSEPORT:
            # every one gets the same certificate.
            serials = {presented_serial(p.address, ctx) for _ in range(30)}
            assert serials == {want}, (n, serials)
            pki.issue("srv", SERVER_ID)
        st = p.stats()
        assert st["listeners"]["web"]["ssl.certificate_update_success"] >= 3
        assert st["listeners"]["web"]["ssl.handshake"] >= 93
    finally:
        p.stop()


def test_builtin_ca_in_two_workers(pki, origin, tmp_path):
    # Issued once by the supervisor, renewed every 5 s: both workers must
    # present the one the supervisor holds (/certs), never one of their own.
    p = WorkersProc(tmp_path, http_config(origin, listener={"tls": {
        "common_tls_context": builtin(pki, SERVER_ID, ttl=10.0)}}))
    try:
        ctx = client_ctx(pki.bundle)

        def held() -> int:
            doc = json.loads(p.admin_get("/certs")[1])
            return int(doc["certificates"][0]["cert_chain"][0]["serial_number"], 16)
        first = held()
        assert {presented_serial(p.address, ctx) for _ in range(20)} == {first}
        wait_until(lambda: held() != first, 10, "renewal")
        second = held()
        wait_until(lambda: presented_serial(p.address, ctx) == second, 5, "renewal applied")
        assert {presented_serial(p.address, ctx) for _ in range(20)} == {second}
    finally:
        p.stop()


# ------------------------------------------------------------------ config

def _cfg(common: dict) -> str:
    cfg = http_config(("127.0.0.1", 1), listener={"tls": {"common_tls_context": common}})
    return json.dumps(cfg)


@pytest.mark.parametrize("change, key, reason", [
    ({"spiffe_id": "spiffe://other.org/ns/a/sa/b"}, "spiffe_id", "trust domain"),
    ({"spiffe_id": "http://x"}, "spiffe_id", "not a SPIFFE ID"),
    ({"renew_fraction": 1.0}, "renew_fraction", "out of range"),
    ({"ttl": "0s"}, "ttl", "greater than zero"),
    ({"directory": "/nonexistent/ca"}, "directory", "cannot load the CA"),
    ({"bogus": 1}, "bogus", "unknown"),
])
def test_builtin_ca_config_errors(pki, change, key, reason):
    common = builtin(pki, SERVER_ID)
    common["builtin_ca"].update(change)
    with pytest.raises(ConfigError) as ei:
        parse_config(_cfg(common), source="t.yaml")
    text = str(ei.value)
    assert key in text and reason.lower() in text.lower(), text


def test_builtin_ca_and_files_together_refused(pki):
    pair = pki.issue("srv", SERVER_ID)
    common = {**builtin(pki, SERVER_ID),
              "tls_certificates": files_tls(pair)["common_tls_context"]["tls_certificates"]}
    with pytest.raises(ConfigError, match="not both"):
        parse_config(_cfg(common), source="t.yaml")


def test_builtin_ca_config_dump_has_no_key(pki, origin, start_proxy):
    p = start_proxy(http_config(origin, listener={"tls": {
        "common_tls_context": builtin(pki, SERVER_ID, ttl=3600)}}))
    from fastmesh.control.config import config_to_dict
    dump = json.dumps(config_to_dict(p.proxy.config))
    assert "PRIVATE KEY" not in dump and "builtin_ca" in dump
    assert presented_serial(p.address(), client_ctx(pki.bundle)) > 0
