"""The peer of a TLS connection: its verified identity, SAN matching, and why a handshake failed.

Used by the data side (``core_tls.pxi``) once per TLS connection, never per
request: after a handshake it reads the peer's certificate (``cryptography``),
checks it against the configured ``match_typed_subject_alt_names`` (Envoy's
``StringMatcher`` on URI or DNS SANs), and keeps what routing, policy, access
logs and ``x-forwarded-client-cert`` need as a ``PeerIdentity``. A failed
handshake is classified by ``handshake_failure`` into Envoy's ``ssl.*``
reasons. Pure Python; imports nothing from the control side.
"""
from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["SanMatcher", "PeerIdentity", "peer_identity", "handshake_failure",
           "FAIL_NO_CERT", "FAIL_VERIFY", "FAIL_SAN", "FAIL_OTHER"]

# Reasons, in the order of the listener's and cluster's ssl_* slots after
# ssl_handshake (core_counters.pxi).
FAIL_OTHER = 0        # ssl.connection_error
FAIL_NO_CERT = 1      # ssl.fail_verify_no_cert
FAIL_VERIFY = 2       # ssl.fail_verify_error
FAIL_SAN = 3          # ssl.fail_verify_san

SAN_TYPES = ("URI", "DNS")
MATCH_KINDS = ("exact", "prefix", "suffix", "contains", "safe_regex")


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """One ``match_typed_subject_alt_names`` entry: a SAN type and Envoy's StringMatcher."""

    san_type: str            # "URI" | "DNS"
    kind: str                # one of MATCH_KINDS
    value: str
    ignore_case: bool = False

    def matches(self, san: str) -> bool:
        """Whether one SAN value of this type matches."""
        v, s = self.value, san
        if self.ignore_case and self.kind != "safe_regex":
            v, s = v.lower(), s.lower()
        if self.kind == "exact":
            return s == v
        if self.kind == "prefix":
            return s.startswith(v)
        if self.kind == "suffix":
            return s.endswith(v)
        if self.kind == "contains":
            return v in s
        return re.fullmatch(v, s) is not None


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What a verified peer certificate says: the first URI SAN (its SPIFFE
    ID, the identity), all URI and DNS SANs, the subject, and the DER bytes."""

    uri: str                 # "" when the certificate has no URI SAN
    uris: tuple[str, ...]
    dns: tuple[str, ...]
    subject: str             # RFC 4514
    der: bytes
    chain_der: tuple[bytes, ...] = ()

    @property
    def sha256(self) -> str:
        """The certificate's SHA-256 in hex (XFCC ``Hash``)."""
        return hashlib.sha256(self.der).hexdigest()

    def pem(self) -> str:
        return x509.load_der_x509_certificate(self.der).public_bytes(Encoding.PEM).decode()


def _sans(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    return (tuple(ext.get_values_for_type(x509.UniformResourceIdentifier)),
            tuple(ext.get_values_for_type(x509.DNSName)))


def peer_identity(der: bytes | None) -> PeerIdentity | None:
    """The identity in a DER certificate (``SSLObject.getpeercert(True)``); None without one."""
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    uris, dns = _sans(cert)
    return PeerIdentity(uris[0] if uris else "", uris, dns, cert.subject.rfc4514_string(), der)


def dns_names(pem: bytes) -> tuple[str, ...]:
    """The DNS SANs of the first certificate of a PEM chain (SNI selection)."""
    return _sans(x509.load_pem_x509_certificate(pem))[1]


def san_allowed(matchers: tuple[SanMatcher, ...], peer: PeerIdentity) -> bool:
    """Envoy's rule: the certificate passes when any SAN of a matcher's type
    matches any matcher."""
    for m in matchers:
        values = peer.uris if m.san_type == "URI" else peer.dns
        for v in values:
            if m.matches(v):
                return True
    return False


# OpenSSL's X509_V_ERR_* a verification can end with: all are "the chain or
# the certificate is bad" (expired, unknown CA, self-signed, revoked, ...).
def handshake_failure(exc: BaseException) -> tuple[int, str]:
    """(FAIL_* reason, text for the log) of a failed server- or client-side handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FAIL_VERIFY, exc.verify_message or str(exc)
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return FAIL_NO_CERT, "peer did not return a certificate"
        if reason.startswith("CERTIFICATE_VERIFY_FAILED") or "CERTIFICATE_UNKNOWN" in reason \
                or "UNKNOWN_CA" in reason or "CERTIFICATE_EXPIRED" in reason \
                or "BAD_CERTIFICATE" in reason:
            # The other side refused our certificate (an alert): ours is the
            # bad one as it sees it, and it says so.
            return FAIL_VERIFY, exc.reason or str(exc)
        return FAIL_OTHER, exc.reason or str(exc)
    return FAIL_OTHER, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _xfcc_quote(value: str) -> str:
    # Envoy: values with ',', ';' or '=' are double-quoted, '"' escaped.
    if any(c in value for c in ',;="'):
        return '"' + value.replace('"', '\\"') + '"'
    return value


def xfcc_element(by: str, peer: PeerIdentity | None, *, subject: bool, uri: bool, dns: bool,
                 cert: bool, chain: bool) -> str:
    """One ``x-forwarded-client-cert`` element as Envoy writes it:
    ``By=<our URI SAN>;Hash=<peer cert sha256>;Cert=..;Chain=..;Subject="..";URI=..;DNS=..``."""
    parts = []
    if by:
        parts.append(f"By={_xfcc_quote(by)}")
    if peer is not None:
        parts.append(f"Hash={peer.sha256}")
        if cert:
            parts.append(f"Cert={quote(peer.pem(), safe='')}")
        if chain:
            parts.append(f"Chain={quote(peer.pem(), safe='')}")
        if subject:
            parts.append(f'Subject="{peer.subject}"')
        if uri:
            parts.append(f"URI={_xfcc_quote(peer.uri)}")
        if dns:
            parts.extend(f"DNS={_xfcc_quote(d)}" for d in peer.dns)
    return ";".join(parts)
