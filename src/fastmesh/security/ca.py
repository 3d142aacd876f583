"""The built-in certificate authority (`fastmesh ca ...`).

A directory holds one CA:

- ``root-cert.pem`` / ``root-key.pem``: the current root (EC P-256,
  self-signed, ``CA:TRUE, pathlen:0``; its URI SAN is the trust domain's
  SPIFFE ID, where the trust domain is read back from);
- ``bundle.pem``: the trust bundle, the roots a peer may chain to: the
  current root first, then any previous root still trusted during a root
  rotation;
- ``previous/``: earlier roots (cert and key), kept until the rotation ends.

Workload certificates (X.509-SVIDs) are signed by the root directly:
EC P-256, one URI SAN (the workload's SPIFFE ID), ``CA:FALSE``,
digitalSignature, serverAuth + clientAuth, 24 h by default, never past the
root's own end. Root rotation is Istio's order: ``rotate-root`` makes a new
root and trusts both (new certificates come from the new root; old ones
still verify), ``rotate-root --finish`` drops the old roots once every
workload holds a certificate from the new one.

Keys are only ever written with mode 0600, and every file is written to a
temporary name beside it and renamed into place, so a watcher (or a
workload reading its files) never sees half a file.

All X.509 work is the ``cryptography`` package's; nothing here runs on the
request path.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastmesh.security.spiffe import SpiffeId, parse_spiffe_id

__all__ = ["CertificateAuthority", "IssuedCertificate", "CAError", "write_file",
           "load_certificates", "describe_certificate", "spiffe_ids_of"]

ROOT_CERT = "root-cert.pem"
ROOT_KEY = "root-key.pem"
BUNDLE = "bundle.pem"
PREVIOUS = "previous"

DEFAULT_ROOT_TTL = 10 * 365 * 86400.0      # seconds: ten years, as Istio's self-signed root
DEFAULT_WORKLOAD_TTL = 24 * 3600.0         # seconds: Istio's and Linkerd's default
# Certificates start a little in the past: a peer whose clock is behind ours
# would otherwise refuse a certificate that is not valid "yet".
BACKDATE = dt.timedelta(minutes=5)


class CAError(Exception):
    """A CA directory that is missing, incomplete or inconsistent, or a bad request."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A workload certificate and its key, with the trust bundle to verify peers."""

    spiffe_id: str
    cert_pem: bytes          # the leaf (signed by the root directly: it is the whole chain)
    key_pem: bytes           # PKCS#8, unencrypted: write it with mode 0600 (write_files does)
    bundle_pem: bytes        # the roots peers' certificates may chain to
    not_before: dt.datetime
    not_after: dt.datetime

    def write_files(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write ``cert.pem``, ``key.pem`` (0600) and ``bundle.pem`` into
        `directory`, each atomically; the key last-but-one and the cert last,
        so a watcher keyed on ``cert.pem`` finds its key already in place."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"bundle": d / "bundle.pem", "key": d / "key.pem", "cert": d / "cert.pem"}
        write_file(paths["bundle"], self.bundle_pem, 0o644)
        write_file(paths["key"], self.key_pem, 0o600)
        write_file(paths["cert"], self.cert_pem, 0o644)
        return paths


def write_file(path: str | os.PathLike, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically with exactly `mode`: a temporary
    file in the same directory, created with that mode (never wider, whatever
    the umask), synced, then renamed over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)       # mkstemp makes 0600; certificates are readable by all
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM blob (a chain or a bundle), in order."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CAError(f"not a PEM certificate file: {exc}") from None
    return certs


def spiffe_ids_of(cert: x509.Certificate) -> list[str]:
    """The spiffe:// URI SANs of a certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith("spiffe://")]


def describe_certificate(cert: x509.Certificate, now: dt.datetime | None = None) -> dict:
    """What `fastmesh ca show` prints for one certificate."""
    now = now or _now()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    left = (cert.not_valid_after_utc - now).total_seconds()
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "spiffe_ids": spiffe_ids_of(cert),
        "ca": is_ca,
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "seconds_left": round(left),
        "expired": left <= 0,
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def _make_root(trust_domain: SpiffeId, ttl: float) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    # A serial with the time in it makes two roots of one domain tell apart
    # in `show` at a glance.
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain.trust_domain),
        x509.NameAttribute(NameOID.COMMON_NAME,
                           f"fastmesh root CA {now.strftime('%Y-%m-%dT%H:%M:%SZ')}"),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(seconds=ttl))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(trust_domain))]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


class CertificateAuthority:
    """A CA directory loaded (or made) for issuing workload certificates."""

    def __init__(self, directory: Path, root: x509.Certificate,
                 key: ec.EllipticCurvePrivateKey, bundle: list[x509.Certificate]) -> None:
        self.directory = directory
        self.root = root
        self._key = key
        self.bundle = bundle
        ids = spiffe_ids_of(root)
        if len(ids) != 1:
            raise CAError(f"{directory / ROOT_CERT}: the root carries no trust domain "
                          "(one spiffe:// URI SAN)")
        self.trust_domain = parse_spiffe_id(ids[0]).trust_domain

    # ------------------------------------------------------------ make / load

    @classmethod
    def init(cls, directory: str | os.PathLike, trust_domain: str, *,
             ttl: float = DEFAULT_ROOT_TTL, force: bool = False) -> "CertificateAuthority":
        """Make a new root in `directory`. An existing CA is kept (and
        returned) unless `force`; a different trust domain is an error then."""
        d = Path(directory)
        td = parse_spiffe_id(f"spiffe://{trust_domain}")
        if td.path:
            raise CAError(f"trust domain {trust_domain!r} must not contain '/'")
        if (d / ROOT_CERT).exists() and not force:
            ca = cls.load(d)
            if ca.trust_domain != td.trust_domain:
                raise CAError(f"{d} already holds a CA for trust domain {ca.trust_domain!r} "
                              f"(not {td.trust_domain!r}); use --force to replace it")
            return ca
        if ttl <= 0:
            raise CAError("the root's lifetime must be positive")
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        if force and (d / PREVIOUS).exists():
            shutil.rmtree(d / PREVIOUS)
        cert, key = _make_root(td, ttl)
        write_file(d / ROOT_KEY, _key_pem(key), 0o600)
        write_file(d / ROOT_CERT, _cert_pem(cert), 0o644)
        write_file(d / BUNDLE, _cert_pem(cert), 0o644)
        return cls(d, cert, key, [cert])

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "CertificateAuthority":
        """Load the CA in `directory`; CAError names what is missing or wrong."""
        d = Path(directory)
        for name in (ROOT_CERT, ROOT_KEY, BUNDLE):
            if not (d / name).is_file():
                raise CAError(f"{d}: no {name} (make a CA with `fastmesh ca init`)")
        root = load_certificates((d / ROOT_CERT).read_bytes())[0]
        try:
            key = serialization.load_pem_private_key((d / ROOT_KEY).read_bytes(), None)
        except (ValueError, TypeError) as exc:
            raise CAError(f"{d / ROOT_KEY}: not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(f"{d / ROOT_KEY}: not an EC key")
        if key.public_key().public_numbers() != root.public_key().public_numbers():
            raise CAError(f"{d / ROOT_KEY} does not belong to {d / ROOT_CERT}")
        bundle = load_certificates((d / BUNDLE).read_bytes())
        if not bundle or bundle[0] != root:
            raise CAError(f"{d / BUNDLE}: the current root must come first")
        return cls(d, root, key, bundle)

    # ------------------------------------------------------------ issue

    @property
    def bundle_pem(self) -> bytes:
        return b"".join(_cert_pem(c) for c in self.bundle)

    def issue(self, spiffe_id: str, *, ttl: float = DEFAULT_WORKLOAD_TTL,
              dns_names: tuple[str, ...] = ()) -> IssuedCertificate:
        """A new key and certificate for `spiffe_id`, which must be in this
        CA's trust domain; valid for `ttl` seconds (not past the root's end)."""
        sid = parse_spiffe_id(spiffe_id)
        if sid.trust_domain != self.trust_domain:
            raise CAError(f"{spiffe_id} is not in this CA's trust domain {self.trust_domain!r}")
        if not sid.path:
            raise CAError(f"{spiffe_id}: a workload ID needs a path (ns/<ns>/sa/<sa>)")
        if ttl <= 0:
            raise CAError("the certificate's lifetime must be positive")
        now = _now()
        not_after = min(now + dt.timedelta(seconds=ttl), self.root.not_valid_after_utc)
        if not_after <= now:
            raise CAError("the root has expired: rotate it (`fastmesh ca rotate-root`)")
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(sid))]
        sans += [x509.DNSName(n) for n in dns_names]
        cert = (x509.CertificateBuilder()
                # X.509-SVIDs identify by the URI SAN; the subject carries the
                # trust domain only (as Istio's workload certificates do).
                .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                            self.trust_domain)]))
                .issuer_name(self.root.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=True, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                # not critical: the subject is not empty (RFC 5280 4.2.1.6)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.root.public_key()), critical=False)
                .sign(self._key, hashes.SHA256()))
        return IssuedCertificate(str(sid), _cert_pem(cert), _key_pem(key), self.bundle_pem,
                                 cert.not_valid_before_utc, cert.not_valid_after_utc)

    # ------------------------------------------------------------ rotation

    def rotate_root(self, *, ttl: float = DEFAULT_ROOT_TTL) -> x509.Certificate:
        """Start a root rotation: a new root signs from now on; the bundle
        trusts it and every earlier root still in it, so certificates issued
        before keep verifying until `finish_rotation`."""
        d = self.directory
        prev = d / PREVIOUS
        prev.mkdir(mode=0o700, exist_ok=True)
        stamp = format(self.root.serial_number, "x")[:16]
        write_file(prev / f"root-key-{stamp}.pem", _key_pem(self._key), 0o600)
        write_file(prev / f"root-cert-{stamp}.pem", _cert_pem(self.root), 0o644)
        cert, key = _make_root(parse_spiffe_id(f"spiffe://{self.trust_domain}"), ttl)
        bundle = [cert] + self.bundle
        # The bundle first: a reader that sees the new root already trusts it.
        write_file(d / BUNDLE, b"".join(_cert_pem(c) for c in bundle), 0o644)
        write_file(d / ROOT_KEY, _key_pem(key), 0o600)
        write_file(d / ROOT_CERT, _cert_pem(cert), 0o644)
        self.root, self._key, self.bundle = cert, key, bundle
        return cert

    def finish_rotation(self) -> list[x509.Certificate]:
        """End a root rotation: the bundle holds the current root only.
        Returns the roots dropped; their keys are deleted."""
        dropped = self.bundle[1:]
        write_file(self.directory / BUNDLE, _cert_pem(self.root), 0o644)
        self.bundle = [self.root]
        shutil.rmtree(self.directory / PREVIOUS, ignore_errors=True)
        return dropped
