"""The TLS scenarios' certificates: made once per bench run in the workdir
with the built-in CA, and used by every proxy (fastmesh's listener `tls`,
Envoy's `DownstreamTlsContext`) so the comparison is like with like.

The server certificate is an EC P-256 workload certificate with the SPIFFE
URI SAN `spiffe://bench.local/ns/bench/sa/server` and the DNS SANs
`localhost` and `127.0.0.1` (the load generators connect to the address;
the readiness check verifies the chain and the name `localhost`).
"""
from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass

TRUST_DOMAIN = "bench.local"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/server"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/client"     # the mtls scenario's caller
SERVER_NAME = "localhost"
ALPN = ["http/1.1"]
# Long enough for any bench run; the certificate is thrown away with the workdir.
TTL_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class TlsFiles:
    cert: str      # the leaf (the root signs it directly: it is the whole chain)
    key: str
    bundle: str    # the CA's root, to verify the server


def files(workdir: str) -> TlsFiles:
    """The certificate files of this bench run, made on the first call."""
    d = os.path.join(workdir, "tls")
    paths = TlsFiles(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"),
                     os.path.join(d, "bundle.pem"))
    if not os.path.exists(paths.cert):
        # Imported here: only the TLS scenarios need `cryptography`.
        from fastmesh.security.ca import CertificateAuthority

        ca = CertificateAuthority.init(os.path.join(d, "ca"), TRUST_DOMAIN)
        ca.issue(SERVER_ID, ttl=TTL_S,
                 dns_names=(SERVER_NAME, "127.0.0.1")).write_files(d)
    return paths


def client_files(workdir: str) -> TlsFiles:
    """The mtls scenario's client workload certificate (CLIENT_ID), from the
    same CA as the server's."""
    server = files(workdir)
    d = os.path.join(workdir, "tls", "client")
    paths = TlsFiles(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"), server.bundle)
    if not os.path.exists(paths.cert):
        from fastmesh.security.ca import CertificateAuthority

        ca = CertificateAuthority.load(os.path.join(workdir, "tls", "ca"))
        ca.issue(CLIENT_ID, ttl=TTL_S).write_files(d)
    return paths


def client_context(bundle: str) -> ssl.SSLContext:
    """A verifying client context for readiness checks: the bench's root,
    the name `localhost`, ALPN http/1.1."""
    ctx = ssl.create_default_context(cafile=bundle)
    ctx.set_alpn_protocols(ALPN)
    return ctx


def wrap(sock: socket.socket, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    return ctx.wrap_socket(sock, server_hostname=SERVER_NAME)
