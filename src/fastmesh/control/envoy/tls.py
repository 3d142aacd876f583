"""Envoy's TLS transport sockets (DownstreamTlsContext, UpstreamTlsContext) to fastmesh's ``tls``.

fastmesh's ``tls`` mappings already take Envoy's field names
(docs/config.md, "tls"), so ``common_tls_context`` passes through to the
native check; what this module adds is the transport socket's envelope, the
``@type`` checks and SDS secrets by name (from ``static_resources.secrets``
or, over xDS, the SDS resources given to ``translate_resources``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastmesh.control.envoy.engine import (
    Bad,
    Path,
    Table,
    Tx,
    boolean,
    copy,
    custom,
    ignore,
    normalize,
    reject,
    string,
    sub,
    type_name,
)

T_TLS = "test_tls_contexts"
T_REJECT = "test_rejections"

DOWNSTREAM = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
RAW_BUFFER = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"


def _passthrough(value: Any) -> Any:
    return normalize(value)


def _secret(tx: Tx, epath: Path, name: Any, kind: str) -> Any:
    if not isinstance(name, str):
        tx.error(epath, "expected the secret's name")
        return None
    secret = tx.secrets.get(name)
    if secret is None:
        tx.error(epath, f"no secret named {name!r} (static_resources.secrets or SDS)")
        return None
    if not isinstance(secret, Mapping) or kind not in secret:
        tx.error(epath, f"secret {name!r} has no {kind}")
        return None
    return normalize(secret[kind])


def _sds_certs(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list):
        tx.error(epath, "expected a list of SdsSecretConfig")
        return
    certs = out.setdefault("tls_certificates", [])
    tx.paths.setdefault(npath + ("tls_certificates",), epath)
    for i, ref in enumerate(value):
        if not isinstance(ref, Mapping) or "name" not in ref:
            tx.error(epath + (i,), "expected an SdsSecretConfig: {name, sds_config}")
            continue
        cert = _secret(tx, epath + (i, "name"), ref["name"], "tls_certificate")
        if cert is not None:
            tx.paths[npath + ("tls_certificates", len(certs))] = epath + (i,)
            certs.append(cert)


def _sds_validation(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, Mapping) or "name" not in value:
        tx.error(epath, "expected an SdsSecretConfig: {name, sds_config}")
        return
    vc = _secret(tx, epath + ("name",), value["name"], "validation_context")
    if vc is not None:
        tx.set(out, npath, "validation_context", vc, epath)


COMMON_TLS_CONTEXT = Table("envoy.extensions.transport_sockets.tls.v3.CommonTlsContext", (
    copy("tls_certificates", "tls_certificates", _passthrough,
         "filename or inline_string; files are watched", T_TLS),
    copy("validation_context", "validation_context", _passthrough,
         "trusted_ca, match_typed_subject_alt_names", T_TLS),
    copy("alpn_protocols", "alpn_protocols", _passthrough, "", T_TLS),
    copy("tls_params", "tls_params", _passthrough,
         "protocol versions, cipher_suites, ecdh_curves (one)", T_TLS),
    custom("tls_certificate_sds_secret_configs", "tls_certificates", _sds_certs,
           "by name, from static_resources.secrets or SDS", T_TLS),
    custom("validation_context_sds_secret_config", "validation_context", _sds_validation,
           "by name, from static_resources.secrets or SDS", T_TLS),
    reject("combined_validation_context", "combined_validation_context", T_REJECT),
    reject("tls_certificate_provider_instance", "certificate provider instances", T_REJECT),
))

DOWNSTREAM_TLS = Table(DOWNSTREAM, (
    sub("common_tls_context", "common_tls_context", lambda: COMMON_TLS_CONTEXT, "", T_TLS),
    copy("require_client_certificate", "require_client_certificate", boolean, "BoolValue",
         T_TLS),
    reject("session_ticket_keys", "session ticket keys (fastmesh keeps its own)", T_REJECT),
    reject("require_sni", "require_sni", T_REJECT),
    reject("ocsp_staple_policy", "OCSP stapling", T_REJECT),
), type_url=DOWNSTREAM)

UPSTREAM_TLS = Table(UPSTREAM, (
    sub("common_tls_context", "common_tls_context", lambda: COMMON_TLS_CONTEXT, "", T_TLS),
    copy("sni", "sni", string, "", T_TLS),
    ignore("max_session_keys", "fastmesh's session cache is its own", T_TLS),
    reject("allow_renegotiation", "renegotiation", T_REJECT),
), type_url=UPSTREAM)


def _socket_config(table: Table):
    def handler(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
        if not isinstance(value, Mapping) or "@type" not in value:
            tx.error(epath, f"expected a typed_config with '@type' ({table.message})")
            return
        try:
            name = type_name(value["@type"])
        except Bad as exc:
            tx.error(epath + ("@type",), exc.reason)
            return
        if name == RAW_BUFFER:
            return          # plaintext: no tls
        if name != table.message:
            tx.error(epath + ("@type",), f"transport socket {name!r} is not supported by "
                     f"fastmesh (only {table.message.rsplit('.', 1)[1]} and RawBuffer)")
            return
        tls: dict = {}
        tx.set(out, npath, "tls", tls, epath)
        tx.walk(table, epath, npath + ("tls",), value, tls)
    return handler


DOWNSTREAM_SOCKET = Table("envoy.config.core.v3.TransportSocket (listener)", (
    ignore("name", "the @type of typed_config decides", T_TLS),
    custom("typed_config", "tls", _socket_config(DOWNSTREAM_TLS),
           "DownstreamTlsContext (or RawBuffer: plaintext)", T_TLS),
))

UPSTREAM_SOCKET = Table("envoy.config.core.v3.TransportSocket (cluster)", (
    ignore("name", "the @type of typed_config decides", T_TLS),
    custom("typed_config", "tls", _socket_config(UPSTREAM_TLS),
           "UpstreamTlsContext (or RawBuffer: plaintext)", T_TLS),
))


def secrets_by_name(tx: Tx, epath: Path, value: Any) -> dict[str, Any]:
    """static_resources.secrets (a list of Secret) by name."""
    if not isinstance(value, list):
        tx.error(epath, "expected a list of secrets")
        return {}
    out = {}
    for i, s in enumerate(value):
        if not isinstance(s, Mapping) or not isinstance(s.get("name"), str):
            tx.error(epath + (i,), "a secret needs a name")
            continue
        extra = set(s) - {"name", "tls_certificate", "validation_context", "@type"}
        if extra:
            tx.error(epath + (i, sorted(extra)[0]), "not supported yet: secrets other than "
                     "tls_certificate and validation_context", key=True)
        out[s["name"]] = s
    return out
