"""The benchmark scenarios, as a table.

A scenario says what each proxy is configured as (`mode`: which listener
kind every peer must build, e.g. "http" or "tcp"), which load generator
drives it (`loadgen`, a key of `loadgen.LOADGENS`) and with what request
shape. Adding a scenario (h2 with h2load, grpc, tls) is one entry here, plus
a load generator class if it needs a new tool, plus a config branch in the
peers for a new `mode`; peers that do not support a mode are skipped with a
note (`Peer.supports`).

The filter-cost scenarios (`h1-pyfilter`, `h1-cyfilter`) are `h1` with one
no-op filter on fastmesh's listener (modes "http-pyfilter" / "http-cyfilter",
see peers.FILTER_MODES); only fastmesh builds them, and `cost_over` names
the scenario whose fastmesh CPU/req the report subtracts (docs/bench.md).
"""
from __future__ import annotations

from dataclasses import dataclass

SMALL_BODY = b"hello world!\n"      # 13 bytes, served at /
LARGE_BODY_SIZE = 64 * 1024          # served at /64k


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str                # one line for the table heading
    mode: str                 # proxy listener kind: "http" | "tcp" | "h2" | "grpc" | "http-pyfilter"
                              # | "http-cyfilter" (peers.FILTER_MODES) | "https" (TLS_MODES)
    loadgen: str = "wrk"      # key of loadgen.LOADGENS
    path: str = "/"
    connections: int = 64
    threads: int = 1          # load generator threads (it has one core)
    body_size: int = len(SMALL_BODY)
    streams: int = 1          # h2load: concurrent streams per connection
    origin: str = "nginx"     # "nginx" (HTTP/1.1) | "grpc" (grpcio, see grpcorigin.py)
    direct: bool = True       # also measure the origin without a proxy
    cost_over: str | None = None  # report CPU/req(this) - CPU/req(cost_over) for fastmesh
    close: bool = False       # `Connection: close` on every request: a new connection each

    @property
    def scheme(self) -> str:
        """The load generator's URL scheme: the TLS modes are HTTPS."""
        return "https" if self.mode in TLS_MODES else "http"


# Modes whose proxy listener terminates TLS with the bench's certificates
# (tlscerts.py); HTTP/1.1 inside, ALPN http/1.1.
TLS_MODES = ("https",)
# Two sidecars of the same proxy in one process group, as in a mesh: the
# load (plaintext HTTP/1.1) -> the client's sidecar, which originates mTLS
# with its workload certificate and pins the server's SPIFFE ID -> the
# server's sidecar, which requires and verifies the client's certificate and
# its SPIFFE ID -> the plaintext origin. CPU/req is both sidecars' together.
MTLS_MODES = ("mtls",)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("h1", "HTTP/1.1 keep-alive, 64 connections, GET / (13 B body)", "http"),
    Scenario("h1-conn1", "HTTP/1.1 keep-alive, 1 connection, GET / (13 B): latency", "http",
             connections=1),
    # 64 connections as in h1: tried against 16 on the 2-core rig, 64 does not
    # saturate badly (no errors; the direct row moves ~1.4 GB/s either way, the
    # proxies' p99 stays within ~1.5x of 16 connections' and their throughput
    # is higher), so the scenario stays comparable with h1. See docs/bench.md.
    Scenario("h1-64k", "HTTP/1.1 keep-alive, 64 connections, GET /64k (64 KiB body)", "http",
             path="/64k", body_size=LARGE_BODY_SIZE),
    Scenario("tcp", "L4 (TCP) proxy, HTTP/1.1 keep-alive through it, 64 connections, GET /",
             "tcp"),
    # h2c (prior knowledge) toward the proxy, HTTP/1.1 toward the nginx origin.
    Scenario("h2", "HTTP/2 (h2c), 16 connections x 10 streams, GET / (13 B) to an HTTP/1.1 "
             "origin", "h2", loadgen="h2load", connections=16, streams=10, direct=False),
    # h2c on both sides; the grpcio origin echoes a 15-byte message.
    Scenario("grpc", "gRPC unary over h2c, 16 connections x 10 streams, h2 upstream (grpcio "
             "origin)", "grpc", loadgen="h2load", connections=16, streams=10,
             path="/fmbench.Bench/Unary", body_size=0, origin="grpc"),
    # What a filter on the chain costs: h1 with one no-op filter on fastmesh's
    # listener. No direct row (it is h1's); run with h1 in the same bench.
    Scenario("h1-pyfilter", "h1 + one no-op Python filter on fastmesh's listener "
             "(filter cost = CPU/req - h1's)", "http-pyfilter", direct=False, cost_over="h1"),
    Scenario("h1-cyfilter", "h1 + one no-op Cython filter on fastmesh's listener "
             "(filter cost = CPU/req - h1's)", "http-cyfilter", direct=False, cost_over="h1"),
    Scenario("h1-ratelimit", "h1 + the built-in local rate limit, never limiting, on "
             "fastmesh's listener (filter cost = CPU/req - h1's)", "http-ratelimit",
             direct=False, cost_over="h1"),
    Scenario("h1-resilience", "h1 with every resilience policy configured and nothing "
             "failing (retries, budget, breakers, outlier detection, health check, timeouts, "
             "rate limit, fault at 0 %): cost = CPU/req - h1's", "http-resilience",
             direct=False, cost_over="h1"),
    # TLS termination with the same certificate (EC P-256, from the built-in
    # CA), TLS 1.2-1.3, P-256, Mozilla intermediate ciphers, ALPN http/1.1 on
    # every proxy. No direct row: the nginx origin is plaintext.
    Scenario("tls", "HTTPS keep-alive (TLS 1.3, P-256), 64 connections, GET / (13 B) to a "
             "plaintext origin", "https", direct=False),
    # A new connection per request with a FULL handshake: openssl s_time -new,
    # 16 processes side by side (each one connection at a time), HTTP/1.0 GET.
    Scenario("tls-handshake", "HTTPS, a new connection with a full TLS handshake per request "
             "(openssl s_time -new, 16 at a time), GET /", "https", loadgen="s_time",
             connections=16, direct=False),
    # The same with RESUMED handshakes: wrk reconnects after each response
    # (Connection: close) and offers the session it had (it reuses its SSL
    # object: SSL_clear keeps the session), so TLS 1.3 resumes with a ticket.
    Scenario("tls-resume", "HTTPS, a new connection with a resumed TLS handshake (ticket) per "
             "request (wrk, Connection: close), 64 connections, GET /", "https",
             direct=False, close=True),
    Scenario("mtls", "mTLS between two sidecars (SPIFFE IDs verified both ways), HTTP/1.1 "
             "keep-alive, 64 connections, GET / (13 B): CPU/req of both sidecars", "mtls",
             direct=False),
]}

# The filter-cost scenarios are left out: they measure fastmesh alone; the
# TLS ones too (only fastmesh and Envoy run them; ask with --scenarios).
DEFAULT_SCENARIOS = ["h1", "h1-conn1", "h1-64k", "tcp", "h2", "grpc"]
