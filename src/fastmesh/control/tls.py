"""TLS settings: Envoy's DownstreamTlsContext / UpstreamTlsContext, validated, and made into SSLContexts.

A listener's ``tls`` (with ``tls_mode``) and a cluster's ``tls`` hold Envoy's
fields (``common_tls_context`` with ``tls_certificates``,
``validation_context``, ``alpn_protocols``, ``tls_params``;
``require_client_certificate`` downstream, ``sni`` upstream). This module
has the frozen dataclasses, the parsers validation.py calls for those keys,
and the builders compile.py calls: they read the files and return ready
``ssl.SSLContext`` objects, so the data side never reads a file
(docs/security.md).
"""
from __future__ import annotations

import base64
import dataclasses
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

from fastmesh.control.loader import Path, _Ctx
from fastmesh.security.peer import MATCH_KINDS, SAN_TYPES, SanMatcher, dns_names

TLS_VERSIONS = ("TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3")
TLS_MODES = ("strict", "permissive")
# Mozilla's "intermediate" configuration (v5.7) for TLS 1.2; TLS 1.3 suites
# are OpenSSL's (all three are in the intermediate list).
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
)
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
# Envoy's ecdh_curves names -> OpenSSL's. Python's ssl sets one group only
# (SSLContext.set_ecdh_curve); P-256 is the one every client has, and
# Mozilla intermediate allows X25519, P-256 and P-384 (OpenSSL's default
# list also offers P-521 and X448, which it does not).
ECDH_CURVES = {"X25519": "X25519", "P-256": "prime256v1", "P-384": "secp384r1"}
DEFAULT_ECDH_CURVE = "P-256"
FCC_MODES = ("SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET",
             "ALWAYS_FORWARD_ONLY")
CCD_KEYS = ("subject", "cert", "chain", "dns", "uri")
REDACTED = "[redacted]"
DEFAULT_WORKLOAD_TTL = 24 * 3600.0      # the CA's own default (security/ca.py)
DEFAULT_RENEW_FRACTION = 0.5            # Istio renews at half the lifetime too
MIN_WORKLOAD_TTL = 1.0


@dataclass(frozen=True, slots=True)
class DataSource:
    """Envoy's DataSource: a file (read when the config is compiled) or inline PEM."""

    filename: str | None = None
    inline_string: str | None = None
    inline_bytes: bytes | None = None       # session ticket keys only

    def read(self) -> bytes:
        if self.filename is not None:
            with open(self.filename, "rb") as f:
                return f.read()
        if self.inline_bytes is not None:
            return self.inline_bytes
        return (self.inline_string or "").encode()


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    certificate_chain: DataSource
    private_key: DataSource


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """How the peer's certificate is checked: the CAs it must chain to and
    the SANs it must carry (any matcher matching is enough)."""

    trusted_ca: DataSource | None = None
    match_typed_subject_alt_names: tuple[SanMatcher, ...] = ()


@dataclass(frozen=True, slots=True)
class TlsParams:
    tls_minimum_protocol_version: str = "TLSv1_2"
    tls_maximum_protocol_version: str = "TLSv1_3"
    cipher_suites: tuple[str, ...] = ()     # () = Mozilla intermediate
    ecdh_curves: tuple[str, ...] = (DEFAULT_ECDH_CURVE,)   # exactly one (Python's ssl)


@dataclass(frozen=True, slots=True)
class BuiltinCaSource:
    """``common_tls_context.builtin_ca`` (a fastmesh key): the workload
    certificate is issued by the built-in CA in `directory` for `spiffe_id`,
    renewed at `renew_fraction` of its lifetime; the trust bundle is the
    CA's (unless ``validation_context.trusted_ca`` names one).
    control/certs.py runs it. Envoy's counterpart is an SDS secret
    (``tls_certificate_sds_secret_configs``), which names a gRPC or file
    config source; this one is neither, so it has its own key (the SDS key
    is kept for the xDS client)."""

    directory: str
    spiffe_id: str
    ttl: float = DEFAULT_WORKLOAD_TTL
    renew_fraction: float = DEFAULT_RENEW_FRACTION
    dns_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CommonTlsContext:
    tls_certificates: tuple[TlsCertificate, ...] = ()
    validation_context: ValidationContext | None = None
    alpn_protocols: tuple[str, ...] = ()
    tls_params: TlsParams = TlsParams()
    builtin_ca: BuiltinCaSource | None = None       # instead of tls_certificates


@dataclass(frozen=True, slots=True)
class DownstreamTlsConfig:
    """A listener's ``tls`` (Envoy's DownstreamTlsContext).

    Session tickets (security/tickets.py): ``session_ticket_keys`` are
    Envoy's (80-byte keys, the first encrypts); without them the keys are
    derived from a secret the workers share and change every
    ``session_ticket_key_rotation`` (a fastmesh key), the two before still
    accepted. ``disable_stateless_session_resumption`` turns tickets off."""

    common_tls_context: CommonTlsContext
    require_client_certificate: bool = False
    session_ticket_keys: tuple[DataSource, ...] = ()
    disable_stateless_session_resumption: bool = False
    session_ticket_key_rotation: float = 3600.0


@dataclass(frozen=True, slots=True)
class UpstreamTlsConfig:
    """A cluster's ``tls`` (Envoy's UpstreamTlsContext)."""

    common_tls_context: CommonTlsContext
    sni: str | None = None


@dataclass(frozen=True, slots=True)
class ClientCertDetails:
    """``set_current_client_cert_details``: which fields go into XFCC
    (``By`` and ``Hash`` always do)."""

    subject: bool = False
    cert: bool = False
    chain: bool = False
    dns: bool = False
    uri: bool = False


# ---------------------------------------------------------------- parsing

_COMMON_KEYS = ("tls_certificates", "validation_context", "alpn_protocols", "tls_params",
                "builtin_ca")
_BUILTIN_CA_KEYS = ("directory", "spiffe_id", "ttl", "renew_fraction", "dns_names")
_DOWNSTREAM_KEYS = ("common_tls_context", "require_client_certificate", "session_ticket_keys",
                    "disable_stateless_session_resumption", "session_ticket_key_rotation")
_TICKET_KEYS = ("keys",)
TICKET_KEY_LEN = 80             # Envoy's: 16 bytes of name, 32 of HMAC key, 32 of AES key
_UPSTREAM_KEYS = ("common_tls_context", "sni")
_CERT_KEYS = ("certificate_chain", "private_key")
_VALIDATION_KEYS = ("trusted_ca", "match_typed_subject_alt_names")
_SAN_KEYS = ("san_type", "matcher")
_MATCHER_KEYS = MATCH_KINDS + ("ignore_case",)
_PARAMS_KEYS = ("tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites",
                "ecdh_curves")
_SOURCE_KEYS = ("filename", "inline_string")


def _v():  # validation helpers; imported late (validation imports this module)
    from fastmesh.control import validation
    return validation


def parse_downstream(ctx: _Ctx, path: Path, value: Any, *, http: bool) -> DownstreamTlsConfig | None:
    v = _v()
    m = v._Map(ctx, path, value, _DOWNSTREAM_KEYS, "a DownstreamTlsContext")
    common = m.section("common_tls_context", lambda c, p, x: _parse_common(c, p, x, server=True))
    require = m.get("require_client_certificate", v._bool, False)
    tickets = m.section("session_ticket_keys", _parse_ticket_keys, ())
    no_tickets = m.get("disable_stateless_session_resumption", v._bool, False)
    rotation = m.get("session_ticket_key_rotation", v._duration(positive=True), 3600.0)
    if tickets and no_tickets:
        ctx.error(path + ("session_ticket_keys",), "session_ticket_keys with "
                  "disable_stateless_session_resumption: true (no tickets are issued)")
    if common is None:
        return None
    if not common.tls_certificates and common.builtin_ca is None:
        ctx.error(path + ("common_tls_context",), "a TLS listener needs tls_certificates "
                  "(its certificate chain and private key) or builtin_ca")
    if require and common.validation_context is None and common.builtin_ca is None:
        ctx.error(path + ("require_client_certificate",), "require_client_certificate needs "
                  "common_tls_context.validation_context.trusted_ca (the CAs client "
                  "certificates must chain to)")
    if not common.alpn_protocols and http:
        common = dataclasses.replace(common, alpn_protocols=("h2", "http/1.1"))
    cfg = DownstreamTlsConfig(common, bool(require), tuple(tickets or ()), bool(no_tickets),
                              rotation or 3600.0)
    if not ctx.errors and common.builtin_ca is None:
        try:
            build_server_contexts(cfg)
        except (OSError, ssl.SSLError, ValueError) as exc:
            ctx.error(path, f"cannot load the certificates: {exc}")
    return cfg


def parse_upstream(ctx: _Ctx, path: Path, value: Any, *, http2: bool) -> UpstreamTlsConfig | None:
    v = _v()
    m = v._Map(ctx, path, value, _UPSTREAM_KEYS, "an UpstreamTlsContext")
    common = m.section("common_tls_context",
                       lambda c, p, x: _parse_common(c, p, x, server=False), CommonTlsContext())
    sni = m.get("sni", v._nonempty_str, None)
    if common is None:
        return None
    vc = common.validation_context
    if sni is None and (vc is None or vc.trusted_ca is None) and common.builtin_ca is None:
        ctx.error(path, "verification against the system CAs checks the server's name: set "
                  "sni, or validation_context.trusted_ca (with match_typed_subject_alt_names "
                  "to pin the server's identity)")
    if len(common.tls_certificates) > 1:
        ctx.error(path + ("common_tls_context", "tls_certificates"),
                  "an upstream connection presents one client certificate: give at most one")
    if not common.alpn_protocols and http2:
        common = dataclasses.replace(common, alpn_protocols=("h2",))
    cfg = UpstreamTlsConfig(common, sni)
    if not ctx.errors and common.builtin_ca is None:
        try:
            build_client_context(cfg)
        except (OSError, ssl.SSLError, ValueError) as exc:
            ctx.error(path, f"cannot load the certificates: {exc}")
    return cfg


def _parse_common(ctx: _Ctx, path: Path, value: Any, *, server: bool) -> CommonTlsContext:
    v = _v()
    m = v._Map(ctx, path, value, _COMMON_KEYS, "a CommonTlsContext")
    certs = m.section("tls_certificates", lambda c, p, x: v._list(
        c, p, x, _parse_cert, min_items=1, what="certificates"), ())
    vc = m.section("validation_context", _parse_validation, None)
    alpn = m.get("alpn_protocols", _alpn, ())
    params = m.section("tls_params", _parse_params, TlsParams())
    builtin = m.section("builtin_ca", _parse_builtin_ca, None)
    if builtin is not None and certs:
        ctx.error(path + ("builtin_ca",), "give tls_certificates or builtin_ca, not both "
                  "(builtin_ca issues the certificate)")
    if vc is not None and vc.trusted_ca is None and builtin is None \
            and "builtin_ca" not in m:
        ctx.error(path + ("validation_context",), "validation_context needs trusted_ca (the "
                  "CAs the peer's certificate must chain to), or builtin_ca (its bundle)")
    return CommonTlsContext(tuple(c for c in certs or () if c is not None), vc, alpn or (),
                            params or TlsParams(), builtin)


def _dns_list(value: Any) -> tuple[str, ...]:
    v = _v()
    if not isinstance(value, (list, tuple)):
        raise v._Bad("expected a list of DNS names")
    return tuple(v._nonempty_str(x) for x in value)


def _parse_builtin_ca(ctx: _Ctx, path: Path, value: Any) -> BuiltinCaSource | None:
    v = _v()
    from fastmesh.security.ca import CAError, CertificateAuthority
    from fastmesh.security.spiffe import parse_spiffe_id

    m = v._Map(ctx, path, value, _BUILTIN_CA_KEYS, "builtin_ca")
    directory = m.get("directory", v._nonempty_str)
    sid = m.get("spiffe_id", v._nonempty_str)
    ttl = m.get("ttl", v._duration(positive=True), DEFAULT_WORKLOAD_TTL)
    frac = m.get("renew_fraction", v._fraction, DEFAULT_RENEW_FRACTION)
    dns = m.get("dns_names", _dns_list, ())
    if ttl is not None and ttl < MIN_WORKLOAD_TTL:
        ctx.error(path + ("ttl",), f"must be at least {MIN_WORKLOAD_TTL:g}s")
    if frac is not None and not 0 < frac < 1:
        ctx.error(path + ("renew_fraction",), f"{frac} is out of range; must be above 0 and "
                  "below 1 (the share of the lifetime after which it renews)")
    if directory is None or sid is None:
        return None
    try:
        parsed = parse_spiffe_id(sid)
    except ValueError as exc:
        ctx.error(path + ("spiffe_id",), f"not a SPIFFE ID: {exc}")
        return None
    try:
        ca = CertificateAuthority.load(directory)
    except (CAError, OSError) as exc:
        ctx.error(path + ("directory",), f"cannot load the CA: {exc}")
        return None
    if parsed.trust_domain != ca.trust_domain:
        ctx.error(path + ("spiffe_id",), f"{sid} is not in the CA's trust domain "
                  f"{ca.trust_domain!r}")
    elif not parsed.path:
        ctx.error(path + ("spiffe_id",), "a workload ID needs a path (ns/<ns>/sa/<sa>)")
    return BuiltinCaSource(directory, sid, ttl or DEFAULT_WORKLOAD_TTL,
                           frac if frac is not None else DEFAULT_RENEW_FRACTION, dns or ())


def _alpn(value: Any) -> tuple[str, ...]:
    v = _v()
    if not isinstance(value, (list, tuple)) or not value:
        raise v._Bad("expected a non-empty list of protocol names (h2, http/1.1)")
    out = []
    for item in value:
        name = v._nonempty_str(item)
        if len(name) > 255:
            raise v._Bad(f"ALPN protocol name {name[:20]!r}... is longer than 255 bytes")
        out.append(name)
    return tuple(out)


def _parse_source(ctx: _Ctx, path: Path, value: Any) -> DataSource | None:
    v = _v()
    m = v._Map(ctx, path, value, _SOURCE_KEYS, "a DataSource (filename or inline_string)")
    which = m.one_of(_SOURCE_KEYS, "data source")
    if which == "filename":
        name = m.get("filename", v._nonempty_str)
        if name is not None and not os.access(name, os.R_OK):
            ctx.error(path + ("filename",), f"cannot read {name!r}: "
                      f"{'no such file' if not os.path.exists(name) else 'permission denied'}")
        return DataSource(filename=name)
    if which == "inline_string":
        return DataSource(inline_string=m.get("inline_string", v._nonempty_str))
    return None


def _parse_ticket_keys(ctx: _Ctx, path: Path, value: Any) -> tuple[DataSource, ...]:
    """Envoy's TlsSessionTicketKeys: ``{keys: [DataSource, ...]}``, each key
    exactly 80 bytes (a file of raw bytes, or ``inline_bytes`` in base64)."""
    v = _v()
    m = v._Map(ctx, path, value, _TICKET_KEYS, "TlsSessionTicketKeys")
    keys = m.section("keys", lambda c, p, x: v._list(
        c, p, x, _parse_ticket_key, min_items=1, what="keys"), ())
    keys = tuple(k for k in keys or () if k is not None)
    if len(keys) > 4:
        ctx.error(path + ("keys",), f"{len(keys)} keys; at most 4 (the first encrypts, "
                  "the others only decrypt tickets issued before a rotation)")
    return keys


def _parse_ticket_key(ctx: _Ctx, path: Path, value: Any) -> DataSource | None:
    v = _v()
    keys = ("filename", "inline_bytes")
    m = v._Map(ctx, path, value, keys, "a DataSource (filename or inline_bytes)")
    which = m.one_of(keys, "data source")
    src = None
    if which == "filename":
        name = m.get("filename", v._nonempty_str)
        if name is not None and not os.access(name, os.R_OK):
            ctx.error(path + ("filename",), f"cannot read {name!r}")
            return None
        src = DataSource(filename=name) if name is not None else None
    elif which == "inline_bytes":
        raw = m.get("inline_bytes", v._nonempty_str)
        try:
            src = DataSource(inline_bytes=base64.b64decode(raw or "", validate=True))
        except ValueError:
            ctx.error(path + ("inline_bytes",), "not base64")
            return None
    if src is not None:
        try:
            n = len(src.read())
        except OSError as exc:
            ctx.error(path, f"cannot read the key: {exc}")
            return None
        if n != TICKET_KEY_LEN:
            ctx.error(path, f"a session ticket key is {TICKET_KEY_LEN} bytes "
                      f"(16 name, 32 HMAC, 32 AES), this one is {n}")
            return None
    return src


def _parse_cert(ctx: _Ctx, path: Path, value: Any) -> TlsCertificate | None:
    v = _v()
    m = v._Map(ctx, path, value, _CERT_KEYS, "a TlsCertificate")
    chain = m.section("certificate_chain", _parse_source)
    key = m.section("private_key", _parse_source)
    if chain is None or key is None:
        return None
    return TlsCertificate(chain, key)


def _parse_validation(ctx: _Ctx, path: Path, value: Any) -> ValidationContext:
    v = _v()
    m = v._Map(ctx, path, value, _VALIDATION_KEYS, "a CertificateValidationContext")
    ca = m.section("trusted_ca", _parse_source, None)
    sans = m.section("match_typed_subject_alt_names", lambda c, p, x: v._list(
        c, p, x, _parse_san, min_items=1, what="SAN matchers"), ())
    return ValidationContext(ca, tuple(s for s in sans or () if s is not None))


def _parse_san(ctx: _Ctx, path: Path, value: Any) -> SanMatcher | None:
    v = _v()
    m = v._Map(ctx, path, value, _SAN_KEYS, "a SubjectAltNameMatcher")
    san_type = m.get("san_type", v._enum(SAN_TYPES))
    matcher = m.get("matcher", lambda x: x)
    if matcher is None:
        return None
    mm = v._Map(ctx, path + ("matcher",), matcher, _MATCHER_KEYS, "a StringMatcher")
    kind = mm.one_of(MATCH_KINDS, "matcher")
    ignore_case = mm.get("ignore_case", v._bool, False)
    if kind is None:
        return None
    if kind == "safe_regex":
        # Envoy's RegexMatcher: {regex: ...} (google_re2); a bare string is taken too.
        raw = mm.data.get(kind)
        if isinstance(raw, dict):
            raw = raw.get("regex")
        try:
            text = v._regex(raw)
        except v._Bad as exc:
            ctx.error(path + ("matcher", kind), exc.reason)
            return None
    else:
        text = mm.get(kind, v._nonempty_str)
    if san_type is None or text is None:
        return None
    return SanMatcher(san_type, kind, text, bool(ignore_case))


def _parse_params(ctx: _Ctx, path: Path, value: Any) -> TlsParams:
    v = _v()
    m = v._Map(ctx, path, value, _PARAMS_KEYS, "tls_params")
    lo = m.get("tls_minimum_protocol_version", v._enum(TLS_VERSIONS), "TLSv1_2")
    hi = m.get("tls_maximum_protocol_version", v._enum(TLS_VERSIONS), "TLSv1_3")
    lo = "TLSv1_2" if lo == "TLS_AUTO" else lo
    hi = "TLSv1_3" if hi == "TLS_AUTO" else hi
    for key, ver in (("tls_minimum_protocol_version", lo), ("tls_maximum_protocol_version", hi)):
        if ver in ("TLSv1_0", "TLSv1_1"):
            ctx.error(path + (key,), f"{ver} is not supported: fastmesh speaks TLS 1.2 and 1.3 "
                      "only (RFC 8996 deprecates 1.0 and 1.1)")
    if lo and hi and lo > hi:
        ctx.error(path, f"tls_minimum_protocol_version {lo} is above "
                  f"tls_maximum_protocol_version {hi}")
    ciphers = m.get("cipher_suites", _ciphers, ())
    curves = m.get("ecdh_curves", _curves, (DEFAULT_ECDH_CURVE,))
    return TlsParams(lo or "TLSv1_2", hi or "TLSv1_3", ciphers or (),
                     curves or (DEFAULT_ECDH_CURVE,))


def _curves(value: Any) -> tuple[str, ...]:
    v = _v()
    if not isinstance(value, (list, tuple)) or len(value) != 1:
        raise v._Bad("expected a list of exactly one curve (Python's ssl sets one group): "
                     f"one of {', '.join(ECDH_CURVES)}")
    return (v._enum(tuple(ECDH_CURVES))(value[0]),)


def _ciphers(value: Any) -> tuple[str, ...]:
    v = _v()
    if not isinstance(value, (list, tuple)) or not value:
        raise v._Bad("expected a non-empty list of OpenSSL cipher names")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    out = []
    for item in value:
        name = v._nonempty_str(item)
        try:
            probe.set_ciphers(name)
        except ssl.SSLError:
            raise v._Bad(f"unknown cipher suite {name!r} (OpenSSL names, e.g. "
                         "ECDHE-ECDSA-AES128-GCM-SHA256)") from None
        out.append(name)
    return tuple(out)


def parse_fcc(ctx: _Ctx, path: Path, value: Any) -> str | None:
    v = _v()
    try:
        return v._enum(FCC_MODES)(value)
    except v._Bad as exc:
        ctx.error(path, exc.reason)
        return None


def parse_ccd(ctx: _Ctx, path: Path, value: Any) -> ClientCertDetails:
    v = _v()
    m = v._Map(ctx, path, value, CCD_KEYS, "set_current_client_cert_details")
    return ClientCertDetails(**{k: bool(m.get(k, v._bool, False)) for k in CCD_KEYS})


# ---------------------------------------------------------------- contexts

_VERSIONS = {"TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}


def _load_pair(ctx: ssl.SSLContext, cert: TlsCertificate) -> bytes:
    """load_cert_chain reads files only: inline PEM goes through a private
    temporary directory, removed at once."""
    chain = cert.certificate_chain.read()
    if cert.certificate_chain.filename and cert.private_key.filename:
        ctx.load_cert_chain(cert.certificate_chain.filename, cert.private_key.filename)
        return chain
    with tempfile.TemporaryDirectory(prefix="fastmesh-tls-") as d:
        cpath, kpath = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        for p, data in ((cpath, chain), (kpath, cert.private_key.read())):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cpath, kpath)
    return chain


def _base(common: CommonTlsContext, purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    p = common.tls_params
    ctx.minimum_version = _VERSIONS[p.tls_minimum_protocol_version]
    ctx.maximum_version = _VERSIONS[p.tls_maximum_protocol_version]
    ctx.set_ciphers(":".join(p.cipher_suites or INTERMEDIATE_CIPHERS))
    ctx.set_ecdh_curve(ECDH_CURVES[p.ecdh_curves[0]])
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if common.alpn_protocols:
        ctx.set_alpn_protocols(list(common.alpn_protocols))
    vc = common.validation_context
    if vc is not None and vc.trusted_ca is not None:
        ctx.load_verify_locations(cadata=vc.trusted_ca.read().decode())
    return ctx


def build_server_contexts(cfg: DownstreamTlsConfig, listener: str | None = None
                          ) -> list[tuple[tuple[str, ...], ssl.SSLContext]]:
    """One SSLContext per certificate with that certificate's DNS SANs (for
    SNI), in config order: the first is the default. With ``listener`` (the
    contexts will serve), they take the listener's session ticket keys."""
    common = cfg.common_tls_context
    out = []
    for cert in common.tls_certificates:
        ctx = _base(common, ssl.PROTOCOL_TLS_SERVER)
        # The server picks the suite (Mozilla intermediate: the client may, as
        # all suites are strong; OpenSSL's default is the client's order).
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        if common.validation_context is not None:
            # Envoy: with a validation context, a certificate is asked for and
            # verified if given; require_client_certificate refuses its absence.
            ctx.verify_mode = (ssl.CERT_REQUIRED if cfg.require_client_certificate
                               else ssl.CERT_OPTIONAL)
        if cfg.disable_stateless_session_resumption:
            ctx.options |= ssl.OP_NO_TICKET
        chain = _load_pair(ctx, cert)
        out.append((dns_names(chain), ctx))
    if listener is not None and not cfg.disable_stateless_session_resumption:
        from fastmesh.security import tickets
        tickets.attach(listener, cfg, [c for _, c in out])
    return out


def build_client_context(cfg: UpstreamTlsConfig) -> ssl.SSLContext:
    """The cluster's client context: verification always on; the server's
    name is checked against ``sni`` unless SAN matchers pin its identity."""
    common = cfg.common_tls_context
    ctx = _base(common, ssl.PROTOCOL_TLS_CLIENT)
    vc = common.validation_context
    if vc is None or vc.trusted_ca is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = bool(cfg.sni) and not (vc and vc.match_typed_subject_alt_names)
    ctx.verify_mode = ssl.CERT_REQUIRED
    for cert in common.tls_certificates:
        _load_pair(ctx, cert)
    return ctx


def san_matchers(common: CommonTlsContext) -> tuple[SanMatcher, ...]:
    vc = common.validation_context
    return vc.match_typed_subject_alt_names if vc is not None else ()


# ---------------------------------------------------------------- dump

def _source_dict(s: DataSource | None, secret: bool) -> dict[str, str] | None:
    if s is None:
        return None
    if s.filename is not None:
        return {"filename": s.filename}
    # Key material never leaves the process (/config_dump): inline keys are redacted.
    return {"inline_string": REDACTED if secret else (s.inline_string or "")}


def _common_dict(c: CommonTlsContext) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tls_certificates": [{"certificate_chain": _source_dict(t.certificate_chain, False),
                              "private_key": _source_dict(t.private_key, True)}
                             for t in c.tls_certificates],
        "alpn_protocols": list(c.alpn_protocols),
        "tls_params": {"tls_minimum_protocol_version": c.tls_params.tls_minimum_protocol_version,
                       "tls_maximum_protocol_version": c.tls_params.tls_maximum_protocol_version,
                       "cipher_suites": list(c.tls_params.cipher_suites
                                             or INTERMEDIATE_CIPHERS),
                       "ecdh_curves": list(c.tls_params.ecdh_curves)},
    }
    if not out["tls_certificates"]:
        del out["tls_certificates"]
    if c.builtin_ca is not None:
        b = c.builtin_ca
        out["builtin_ca"] = {"directory": b.directory, "spiffe_id": b.spiffe_id, "ttl": b.ttl,
                             "renew_fraction": b.renew_fraction}
        if b.dns_names:
            out["builtin_ca"]["dns_names"] = list(b.dns_names)
    if not out["alpn_protocols"]:
        del out["alpn_protocols"]
    vc = c.validation_context
    if vc is not None:
        d: dict[str, Any] = {}
        if vc.trusted_ca is not None:
            d["trusted_ca"] = _source_dict(vc.trusted_ca, False)
        if vc.match_typed_subject_alt_names:
            d["match_typed_subject_alt_names"] = [
                {"san_type": s.san_type,
                 "matcher": {s.kind: ({"regex": s.value} if s.kind == "safe_regex" else s.value),
                             **({"ignore_case": True} if s.ignore_case else {})}}
                for s in vc.match_typed_subject_alt_names]
        out["validation_context"] = d
    return out


def downstream_to_dict(cfg: DownstreamTlsConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"common_tls_context": _common_dict(cfg.common_tls_context),
                           "require_client_certificate": cfg.require_client_certificate}
    if cfg.session_ticket_keys:
        out["session_ticket_keys"] = {"keys": [
            {"filename": k.filename} if k.filename else {"inline_bytes": REDACTED}
            for k in cfg.session_ticket_keys]}
    if cfg.disable_stateless_session_resumption:
        out["disable_stateless_session_resumption"] = True
    out["session_ticket_key_rotation"] = cfg.session_ticket_key_rotation
    return out


def upstream_to_dict(cfg: UpstreamTlsConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"common_tls_context": _common_dict(cfg.common_tls_context)}
    if cfg.sni is not None:
        out["sni"] = cfg.sni
    return out
