"""The built-in CA (`fastmesh ca init | issue | show | rotate-root`).

Certificates are checked the way peers will use them: a real TLS handshake
over a socket on 127.0.0.1 with Python's ssl (OpenSSL), server and client
both presenting certificates from the CA (mTLS), and `openssl verify` with
the TLS server and client purposes. Files are checked for their modes.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from fastmesh.security.ca import (BUNDLE, ROOT_CERT, ROOT_KEY, CAError, CertificateAuthority,
                                  load_certificates, spiffe_ids_of, write_file)
from fastmesh.security.spiffe import parse_spiffe_id, workload_id

TD = "example.org"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def fastmesh_ca(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastmesh", "ca", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def handshake(server_dir: Path, client_dir: Path | None, server_bundle: Path | None = None,
              client_bundle: Path | None = None) -> tuple[str | None, str | None]:
    """One mTLS handshake on 127.0.0.1: the server presents server_dir's
    cert and requires a client certificate chaining to its bundle; the client
    presents client_dir's (none if None) and verifies the server against its
    bundle. Returns (server's error, client's error), None where it passed;
    on success, the SPIFFE IDs each side saw are checked by the caller via
    `seen`."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(server_dir / "cert.pem", server_dir / "key.pem")
    sctx.load_verify_locations(server_bundle or server_dir / "bundle.pem")
    sctx.verify_mode = ssl.CERT_REQUIRED
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False          # SPIFFE: the URI SAN identifies, not a hostname
    cctx.verify_mode = ssl.CERT_REQUIRED
    cctx.load_verify_locations(client_bundle or (client_dir or server_dir) / "bundle.pem")
    if client_dir is not None:
        cctx.load_cert_chain(client_dir / "cert.pem", client_dir / "key.pem")
    lsock = socket.create_server(("127.0.0.1", 0))
    errors: dict[str, str | None] = {"server": None, "client": None}
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = lsock.accept()
        conn.settimeout(10)
        try:
            with sctx.wrap_socket(conn, server_side=True) as tls:
                seen["client_cert"] = tls.getpeercert()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            errors["server"] = str(exc)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with socket.create_connection(lsock.getsockname(), timeout=10) as raw:
            with cctx.wrap_socket(raw) as tls:
                seen["server_cert"] = tls.getpeercert()
                if tls.recv(2) != b"ok":
                    errors["client"] = "server closed"
    except (ssl.SSLError, OSError) as exc:
        errors["client"] = str(exc)
    t.join(10)
    lsock.close()
    handshake.seen = seen
    return errors["server"], errors["client"]


def uri_sans(peercert: dict) -> list[str]:
    return [v for k, v in peercert.get("subjectAltName", ()) if k == "URI"]


# ------------------------------------------------------------------ SPIFFE IDs

@pytest.mark.parametrize("bad", [
    "http://example.org/ns/a/sa/b", "spiffe://", "spiffe:///ns/a", "spiffe://Example.org/x",
    "spiffe://example.org:8080/x", "spiffe://u@example.org/x", "spiffe://example.org/a//b",
    "spiffe://example.org/a/", "spiffe://example.org/./a", "spiffe://example.org/a/..",
    "spiffe://example.org/a?b", "spiffe://example.org/a#b", "spiffe://example.org/a b",
    "spiffe://example.org/" + "a" * 2100,
])
def test_bad_spiffe_ids_are_refused(bad):
    with pytest.raises(ValueError):
        parse_spiffe_id(bad)


def test_workload_ids_parse_into_namespace_and_service_account():
    sid = workload_id("cluster.local", "shop", "cart")
    assert str(sid) == "spiffe://cluster.local/ns/shop/sa/cart"
    assert (sid.trust_domain, sid.namespace, sid.service_account) == ("cluster.local", "shop", "cart")
    other = parse_spiffe_id("spiffe://cluster.local/workload/x")
    assert other.namespace is None and other.segments == ("workload", "x")


# ------------------------------------------------------------------ init

def test_init_makes_a_p256_root_with_private_files(tmp_path):
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    d = tmp_path / "ca"
    assert mode(d) == 0o700 and mode(d / ROOT_KEY) == 0o600
    assert mode(d / ROOT_CERT) == 0o644 and mode(d / BUNDLE) == 0o644
    root = load_certificates((d / ROOT_CERT).read_bytes())[0]
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp256r1"
    assert spiffe_ids_of(root) == [f"spiffe://{TD}"] and ca.trust_domain == TD
    assert load_certificates((d / BUNDLE).read_bytes()) == [root]
    # no temporary file left behind by the atomic writes
    assert sorted(p.name for p in d.iterdir()) == [BUNDLE, ROOT_CERT, ROOT_KEY]


def test_init_keeps_an_existing_ca_and_refuses_another_domain(tmp_path):
    a = CertificateAuthority.init(tmp_path, TD)
    b = CertificateAuthority.init(tmp_path, TD)
    assert a.root == b.root
    with pytest.raises(CAError, match="already holds a CA"):
        CertificateAuthority.init(tmp_path, "other.org")
    c = CertificateAuthority.init(tmp_path, "other.org", force=True)
    assert c.root != a.root and c.trust_domain == "other.org"


def test_keys_are_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        write_file(tmp_path / "k.pem", b"secret", 0o600)
        CertificateAuthority.init(tmp_path / "ca", TD).issue(
            f"spiffe://{TD}/ns/a/sa/b").write_files(tmp_path / "w")
    finally:
        os.umask(old)
    assert mode(tmp_path / "k.pem") == 0o600
    assert mode(tmp_path / "ca" / ROOT_KEY) == 0o600
    assert mode(tmp_path / "w" / "key.pem") == 0o600


def test_load_names_what_is_wrong(tmp_path):
    with pytest.raises(CAError, match="no root-cert.pem"):
        CertificateAuthority.load(tmp_path)
    CertificateAuthority.init(tmp_path / "a", TD)
    CertificateAuthority.init(tmp_path / "b", TD)
    (tmp_path / "a" / ROOT_KEY).write_bytes((tmp_path / "b" / ROOT_KEY).read_bytes())
    with pytest.raises(CAError, match="does not belong"):
        CertificateAuthority.load(tmp_path / "a")


# ------------------------------------------------------------------ issue

def test_issued_certificate_is_an_x509_svid(tmp_path):
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    got = ca.issue(f"spiffe://{TD}/ns/shop/sa/cart")
    cert = load_certificates(got.cert_pem)[0]
    assert spiffe_ids_of(cert) == [f"spiffe://{TD}/ns/shop/sa/cart"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign
    assert cert.public_key().curve.name == "secp256r1"
    life = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(hours=23, minutes=59) < life <= dt.timedelta(hours=24)
    cert.verify_directly_issued_by(ca.root)


def test_issued_certificates_carry_mtls_between_two_workloads(tmp_path):
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    ca.issue(str(workload_id(TD, "shop", "cart"))).write_files(tmp_path / "cart")
    ca.issue(str(workload_id(TD, "shop", "pay"))).write_files(tmp_path / "pay")
    assert handshake(tmp_path / "pay", tmp_path / "cart") == (None, None)
    assert uri_sans(handshake.seen["client_cert"]) == [f"spiffe://{TD}/ns/shop/sa/cart"]
    assert uri_sans(handshake.seen["server_cert"]) == [f"spiffe://{TD}/ns/shop/sa/pay"]
    for purpose in ("sslserver", "sslclient"):
        r = subprocess.run(["openssl", "verify", "-purpose", purpose, "-CAfile",
                            str(tmp_path / "ca" / BUNDLE), str(tmp_path / "cart" / "cert.pem")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_a_certificate_from_another_ca_or_none_is_refused(tmp_path):
    mine = CertificateAuthority.init(tmp_path / "mine", TD)
    other = CertificateAuthority.init(tmp_path / "other", TD)
    mine.issue(f"spiffe://{TD}/ns/a/sa/server").write_files(tmp_path / "server")
    other.issue(f"spiffe://{TD}/ns/a/sa/intruder").write_files(tmp_path / "intruder")
    # the intruder's client certificate does not chain to the server's bundle
    server_err, _ = handshake(tmp_path / "server", tmp_path / "intruder",
                              client_bundle=tmp_path / "mine" / BUNDLE)
    assert server_err is not None and "certificate" in server_err.lower()
    # no client certificate at all
    server_err, _ = handshake(tmp_path / "server", None, client_bundle=tmp_path / "mine" / BUNDLE)
    assert server_err is not None


def test_issue_refuses_foreign_domains_and_caps_at_the_roots_end(tmp_path):
    ca = CertificateAuthority.init(tmp_path, TD, ttl=3600)
    with pytest.raises(CAError, match="trust domain"):
        ca.issue("spiffe://other.org/ns/a/sa/b")
    with pytest.raises(CAError, match="needs a path"):
        ca.issue(f"spiffe://{TD}")
    with pytest.raises(ValueError):
        ca.issue(f"spiffe://{TD}/ns//sa/b")
    got = ca.issue(f"spiffe://{TD}/ns/a/sa/b", ttl=7 * 86400)
    assert got.not_after == ca.root.not_valid_after_utc


# ------------------------------------------------------------------ rotation

def test_root_rotation_trusts_both_roots_until_finished(tmp_path):
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    old_root = ca.root
    ca.issue(f"spiffe://{TD}/ns/a/sa/old").write_files(tmp_path / "old")
    ca.rotate_root()
    assert ca.root != old_root and ca.bundle == [ca.root, old_root]
    assert CertificateAuthority.load(tmp_path / "ca").bundle == [ca.root, old_root]
    new = ca.issue(f"spiffe://{TD}/ns/a/sa/new")
    new.write_files(tmp_path / "new")
    load_certificates(new.cert_pem)[0].verify_directly_issued_by(ca.root)
    bundle = tmp_path / "ca" / BUNDLE
    # during the rotation an old-root workload and a new-root one talk both ways
    assert handshake(tmp_path / "new", tmp_path / "old", bundle, bundle) == (None, None)
    assert handshake(tmp_path / "old", tmp_path / "new", bundle, bundle) == (None, None)
    dropped = ca.finish_rotation()
    assert dropped == [old_root] and not (tmp_path / "ca" / "previous").exists()
    assert load_certificates(bundle.read_bytes()) == [ca.root]
    # after it, the old root's certificate is refused
    server_err, _ = handshake(tmp_path / "new", tmp_path / "old", bundle, bundle)
    assert server_err is not None


# ------------------------------------------------------------------ the command line

def test_cli_init_issue_show_rotate(tmp_path):
    r = fastmesh_ca("init", "--dir", "ca", "--trust-domain", TD, cwd=tmp_path)
    assert r.returncode == 0 and "made root CA" in r.stdout, r.stderr
    r = fastmesh_ca("init", "--dir", "ca", "--trust-domain", TD, cwd=tmp_path)
    assert r.returncode == 0 and "kept root CA" in r.stdout, r.stderr
    r = fastmesh_ca("issue", "--dir", "ca", "--namespace", "shop", "--service-account", "cart",
                    "--ttl", "1h", "--out", "cart", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert mode(tmp_path / "cart" / "key.pem") == 0o600
    r = fastmesh_ca("show", "--json", "--dir", "ca", "cart/cert.pem", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    [leaf] = shown["cart/cert.pem"]
    assert leaf["spiffe_ids"] == [f"spiffe://{TD}/ns/shop/sa/cart"] and not leaf["ca"]
    assert 3500 < leaf["seconds_left"] <= 3600
    assert shown[str(Path("ca") / BUNDLE)][0]["ca"]
    r = fastmesh_ca("rotate-root", "--dir", "ca", cwd=tmp_path)
    assert r.returncode == 0 and "2 roots" in r.stdout, r.stderr
    r = fastmesh_ca("rotate-root", "--dir", "ca", "--finish", cwd=tmp_path)
    assert r.returncode == 0 and "1 previous root" in r.stdout, r.stderr


@pytest.mark.parametrize("args, message", [
    (("issue", "--dir", "nowhere", "--spiffe-id", f"spiffe://{TD}/a", "--out", "x"),
     "no root-cert.pem"),
    (("init", "--dir", "ca", "--trust-domain", "Bad_Domain"), "trust domain"),
    (("init", "--dir", "ca", "--root-ttl", "soon"), "duration"),
    (("show",), "name a CA directory"),
])
def test_cli_errors_are_one_clear_line(tmp_path, args, message):
    r = fastmesh_ca(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
