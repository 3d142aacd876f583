"""The origin and the proxies under test: their configs and command lines.

Every proxy is configured to do the same work: accept on 127.0.0.1, route
everything to the one origin endpoint, reuse upstream connections, log
nothing, add no headers (no x-request-id, no X-Forwarded-For), one worker.
docs/bench.md explains every tuning.

A peer class provides `tool` (its program), `available()` (None or why it
is unusable), `supports(mode)` (None or why a scenario's mode cannot be
built), `command(workdir, mode, port, origin_port)` (writes its config,
returns argv) and `ready()`, an extra readiness check.

`fastmesh-baseline` (`--baseline DIR`) is fastmesh from another build, run
like the `fastmesh` peer: same config, same command, but its package is the
one in DIR. `peers_for(baseline)` gives the peers of one bench run.
"""
from __future__ import annotations

import importlib.machinery
import json
import os
import shlex
import socket
import sys

from fastmesh.bench import tlscerts, tools
from fastmesh.bench.procs import free_port
from fastmesh.bench.scenarios import LARGE_BODY_SIZE, MTLS_MODES, SMALL_BODY, TLS_MODES

VERY_HIGH = 1_000_000_000


# ------------------------------------------------------------------ origin

def origin_command(workdir: str, port: int) -> list[str]:
    """nginx serving the 13-byte body at / and 64 KiB at /64k, one worker,
    keep-alive without a request limit, no access log."""
    root = os.path.join(workdir, "origin-root")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "64k"), "wb") as f:
        f.write((b"0123456789abcdef" * (LARGE_BODY_SIZE // 16))[:LARGE_BODY_SIZE])
    body = SMALL_BODY.decode().replace("\n", "\\n")
    conf = f"""
{_nginx_user()}worker_processes 1;
daemon off;
pid {workdir}/origin.pid;
error_log {workdir}/origin-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    {_nginx_temp_paths(workdir, "origin")}
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 300s;
    keepalive_requests {VERY_HIGH};
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location = / {{ return 200 "{body}"; }}
        location = /64k {{ }}
    }}
}}
"""
    path = os.path.join(workdir, "origin-nginx.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write(conf)
    return [tools.require("nginx"), "-p", workdir, "-c", path]


def _nginx_user() -> str:
    """Started as root, nginx would switch its workers to `nobody`, who may not
    be able to enter the temp directory (TMPDIR can be a private directory):
    keep the bench's identity. Everything listens on 127.0.0.1 only."""
    return "user root;\n" if os.geteuid() == 0 else ""


def _nginx_temp_paths(workdir: str, name: str) -> str:
    t = os.path.join(workdir, f"{name}-tmp")
    os.makedirs(t, exist_ok=True)
    return " ".join(f"{k}_temp_path {t}/{k};" for k in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


# ------------------------------------------------------------------ proxies

# The filter-cost scenarios' modes: an http listener with these user filters
# (docs/config.md, http_filters). Only fastmesh builds them.
FILTER_MODES = {
    "http-pyfilter": [{"name": "noop", "import": "fastmesh.bench.noop_filters:NoopPythonFilter"}],
    "http-cyfilter": [{"name": "noop", "import": "fastmesh._core:NoopFilter"}],
    # The built-in local rate limit with a bucket no load empties: its cost
    # when every request is looked at and let through.
    "http-ratelimit": [{"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "stat_prefix": "bench",
        "token_bucket": {"max_tokens": 1 << 30, "tokens_per_fill": 1 << 30,
                         "fill_interval": "1s"},
        "filter_enabled": {"default_value": {"numerator": 100}},
        "filter_enforced": {"default_value": {"numerator": 100}}}}],
}
# The resilience-cost scenario (issue 9's bar): h1 with every resilience
# policy configured and nothing failing: route timeouts, a retry policy with
# back-off, circuit breakers with a retry budget, outlier detection, an
# active health check against the origin, the local rate limit (never
# limiting) and the fault filter (0 %, as a configured-but-idle fault).
RESILIENCE_MODE = "http-resilience"
FILTER_MODES[RESILIENCE_MODE] = FILTER_MODES["http-ratelimit"] + [
    {"name": "envoy.filters.http.fault", "typed_config": {
        "delay": {"fixed_delay": "1s", "percentage": {"numerator": 0}},
        "abort": {"http_status": 503, "percentage": {"numerator": 0}}}}]
RESILIENCE_ROUTE = {
    "timeout": "15s", "idle_timeout": "60s",
    "max_stream_duration": {"max_stream_duration": "60s"},
    "retry_policy": {"retry_on": "5xx,connect-failure,reset", "num_retries": 2,
                     "per_try_timeout": "5s", "retry_back_off": {"base_interval": "25ms"}},
}
RESILIENCE_CLUSTER = {
    "circuit_breakers": {"thresholds": [{"max_connections": 100000,
                                         "max_pending_requests": 100000,
                                         "max_requests": 100000, "max_retries": 1000,
                                         "retry_budget": {"budget_percent": {"value": 20},
                                                          "min_retry_concurrency": 3}}]},
    "outlier_detection": {"consecutive_5xx": 5, "interval": "10s",
                          "base_ejection_time": "30s", "max_ejection_percent": 100},
    "health_checks": [{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 3,
                       "healthy_threshold": 1, "http_health_check": {"path": "/"}}],
}
BASE_MODES = ("http", "tcp", "h2", "grpc")
# Mozilla intermediate's TLS 1.2 suites as fastmesh sets them by default
# (control/tls.py INTERMEDIATE_CIPHERS), given to Envoy explicitly. The DHE
# ones are left out: BoringSSL has none, and OpenSSL offers them only with DH
# parameters, which fastmesh never sets; so both offer the same six.
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
                 "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
                 "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305")


def _pair(inner: list[str], outer: list[str]) -> list[str]:
    """One command that runs two sidecars in one process group (the bench
    measures, pins and kills a proxy by its group): the server's sidecar in
    the background, then the client's sidecar in the shell's place."""
    return ["sh", "-c", f"{shlex.join(inner)} & exec {shlex.join(outer)}"]


def _san(spiffe_id: str) -> list[dict]:
    return [{"san_type": "URI", "matcher": {"exact": spiffe_id}}]


class Peer:
    name = ""
    tool = ""
    required = False          # missing -> exit 2 (instead of skipped with a note)
    modes = BASE_MODES

    def available(self) -> str | None:
        if tools.which(self.tool) is None:
            return str(tools.MissingTool(self.tool))
        return None

    def supports(self, mode: str) -> str | None:
        if mode in self.modes:
            return None
        if mode in FILTER_MODES:
            return "only fastmesh runs the filter-cost scenarios; compare with fastmesh in h1"
        if mode in TLS_MODES or mode in MTLS_MODES:
            return (f"{self.name} has no TLS config in the bench (the TLS scenarios compare "
                    f"fastmesh with Envoy)")
        return f"{self.name} has no {mode} config in the bench"

    def command(self, workdir: str, mode: str, port: int, origin_port: int) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """Extra readiness check after the first proxied request succeeded."""
        return True

    def _write(self, workdir: str, filename: str, text: str) -> str:
        path = os.path.join(workdir, filename)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path


class Fastmesh(Peer):
    name = "fastmesh"
    tool = "fastmesh"
    required = True
    modes = BASE_MODES + tuple(FILTER_MODES) + TLS_MODES + MTLS_MODES

    def available(self):
        return None  # we are it

    def config(self, mode: str, port: int, origin_port: int,
               tls: tlscerts.TlsFiles | None = None) -> dict:
        """The config for `mode`; the TLS modes need `tls`, the certificate files."""
        cluster = {"name": "origin", "connect_timeout": "5s",
                   "endpoints": [{"address": "127.0.0.1", "port": origin_port}]}
        if mode == "grpc":
            # h2 toward the grpcio origin (the h2 scenario's origin is HTTP/1.1 nginx;
            # every http listener takes h2c from clients).
            cluster["protocol"] = "http2"
        if mode == "tcp":
            listener = {"name": "bench", "address": "127.0.0.1", "port": port,
                        "protocol": "tcp", "cluster": "origin"}
        else:
            listener = {
                "name": "bench", "address": "127.0.0.1", "port": port, "protocol": "http",
                # Envoy's benchmarking guidance turns request ids off; Envoy also does
                # not append X-Forwarded-For unless use_remote_address is set.
                "generate_request_id": False,
                "xff_append": False,
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "cluster": "origin"}]}],
            }
            # Only the filter modes add a key: fastmesh-baseline runs this same
            # config on an older build, which may not know keys added since.
            if mode in FILTER_MODES:
                listener["http_filters"] = [dict(f) for f in FILTER_MODES[mode]]
            if mode == RESILIENCE_MODE:
                listener["virtual_hosts"][0]["routes"][0].update(RESILIENCE_ROUTE)
                cluster.update(RESILIENCE_CLUSTER)
            if mode in TLS_MODES:
                listener["tls"] = self.tls_context(tls)
        return {"drain_timeout": 0, "listeners": [listener], "clusters": [cluster]}

    @staticmethod
    def tls_context(tls: tlscerts.TlsFiles | None) -> dict:
        """The listener's `tls`: the bench certificate and ALPN http/1.1; the
        protocol versions (1.2-1.3), the curve (P-256) and the ciphers (Mozilla
        intermediate) are fastmesh's defaults, which Envoy is given explicitly."""
        if tls is None:
            raise ValueError("a TLS mode needs the bench's certificate files")
        return {"common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": tls.cert},
                                  "private_key": {"filename": tls.key}}],
            "alpn_protocols": list(tlscerts.ALPN)}}

    def mtls_configs(self, port: int, inner_port: int, origin_port: int,
                     server: tlscerts.TlsFiles, client: tlscerts.TlsFiles) -> tuple[dict, dict]:
        """The mtls scenario's two sidecars: (the client's, the server's).
        The client's takes plaintext on `port` and originates mTLS to the
        server's on `inner_port` (its certificate CLIENT_ID, the server's
        identity pinned to SERVER_ID); the server's requires a client
        certificate carrying CLIENT_ID and forwards to the origin."""
        outbound = self.config("http", port, origin_port)
        outbound["clusters"][0]["endpoints"][0]["port"] = inner_port
        outbound["clusters"][0]["tls"] = {
            "sni": tlscerts.SERVER_NAME,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": client.cert},
                                      "private_key": {"filename": client.key}}],
                "validation_context": {"trusted_ca": {"filename": client.bundle},
                                       "match_typed_subject_alt_names": _san(tlscerts.SERVER_ID)},
                "alpn_protocols": list(tlscerts.ALPN)}}
        inbound = self.config("https", inner_port, origin_port, server)
        inbound["listeners"][0]["tls"]["common_tls_context"]["validation_context"] = {
            "trusted_ca": {"filename": server.bundle},
            "match_typed_subject_alt_names": _san(tlscerts.CLIENT_ID)}
        inbound["listeners"][0]["tls"]["require_client_certificate"] = True
        return outbound, inbound

    def package_root(self) -> str:
        """The directory that holds the `fastmesh` package this peer runs: the
        one this bench was imported from (not whatever another install on
        sys.path would resolve first)."""
        import fastmesh

        return os.path.dirname(os.path.dirname(os.path.abspath(fastmesh.__file__)))

    def command(self, workdir, mode, port, origin_port):
        import yaml

        if mode in MTLS_MODES:
            inner_port = free_port()
            outbound, inbound = self.mtls_configs(port, inner_port, origin_port,
                                                  tlscerts.files(workdir),
                                                  tlscerts.client_files(workdir))
            paths = [self._write(workdir, f"{self.name}-{mode}-{side}.yaml",
                                 yaml.safe_dump(cfg, sort_keys=False))
                     for side, cfg in (("client", outbound), ("server", inbound))]
            return _pair(self._run(paths[1]), self._run(paths[0]))
        tls = tlscerts.files(workdir) if mode in TLS_MODES else None
        path = self._write(workdir, f"{self.name}-{mode}.yaml",
                           yaml.safe_dump(self.config(mode, port, origin_port, tls),
                                          sort_keys=False))
        return self._run(path)

    def _run(self, path: str) -> list[str]:
        """`fastmesh run` on the config at `path`, one process."""
        root = self.package_root()
        # Startup is measured as a pip-installed fastmesh starts: with its
        # bytecode compiled (an editable checkout under PYTHONDONTWRITEBYTECODE
        # would otherwise compile every module on every start).
        import compileall

        compileall.compile_dir(os.path.join(root, "fastmesh"), quiet=2, force=False)
        pp = os.environ.get("PYTHONPATH")
        return ["env", f"PYTHONPATH={root}{os.pathsep + pp if pp else ''}",
                sys.executable, "-m", "fastmesh", "run", "-c", path, "--workers", "1",
                "--single-process",
                "--log-level", "warning"]


BASELINE = "fastmesh-baseline"


class FastmeshBaseline(Fastmesh):
    """fastmesh from an older build (`--baseline DIR`): the `fastmesh` peer's
    config and command, with PYTHONPATH=DIR. DIR holds a built `fastmesh`
    package (its compiled modules for this Python); DIR/fastmesh/COMMIT, when
    present, names the commit it was built from."""

    name = BASELINE
    modes = BASE_MODES        # the filter modes need keys an older build may not know

    def __init__(self, directory: str):
        d = os.path.abspath(directory)
        # DIR may also be given as the package directory itself.
        if (not os.path.isfile(os.path.join(d, "fastmesh", "__init__.py"))
                and os.path.basename(d) == "fastmesh"
                and os.path.isfile(os.path.join(d, "__init__.py"))):
            d = os.path.dirname(d)
        self.directory = d

    def package_root(self) -> str:
        return self.directory

    def available(self) -> str | None:
        pkg = os.path.join(self.directory, "fastmesh")
        if not os.path.isfile(os.path.join(pkg, "__init__.py")):
            return (f"--baseline {self.directory}: no fastmesh package in it "
                    f"(no fastmesh/__init__.py)")
        suffixes = importlib.machinery.EXTENSION_SUFFIXES
        if not any(os.path.isfile(os.path.join(pkg, "_core" + s)) for s in suffixes):
            return (f"--baseline {self.directory}: fastmesh/_core is not built for this Python "
                    f"(expected fastmesh/_core{suffixes[0]})")
        return None

    def commit(self) -> str | None:
        try:
            with open(os.path.join(self.directory, "fastmesh", "COMMIT"), encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None

    def describe(self) -> str:
        c = self.commit()
        return f"{c} ({self.directory})" if c else self.directory


class Envoy(Peer):
    name = "envoy"
    tool = "envoy"
    required = True
    modes = BASE_MODES + TLS_MODES + MTLS_MODES

    def __init__(self):
        self._admin_path = None

    def bootstrap(self, mode: str, port: int, origin_port: int, admin_path: str,
                  tls: tlscerts.TlsFiles | None = None) -> dict:
        if mode == "tcp":
            net_filter = {
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "bench", "cluster": "origin"},
            }
        else:
            net_filter = {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network."
                             "http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "bench",
                    # AUTO: HTTP/2 when the connection opens with the h2 preface (h2c
                    # prior knowledge), else HTTP/1.1; http2_protocol_options as ours:
                    # 100 streams, 64 KiB stream / 1 MiB connection windows.
                    "codec_type": "AUTO",
                    "http2_protocol_options": {
                        "max_concurrent_streams": 100,
                        "initial_stream_window_size": 65536,
                        "initial_connection_window_size": 1048576},
                    "generate_request_id": False,
                    **self._http10(mode),
                    "route_config": {"name": "all", "virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "origin"}}]}]},
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                            "dynamic_stats": False}}],
                },
            }
        sock = lambda p: {"socket_address": {"address": "127.0.0.1", "port_value": p}}  # noqa: E731
        return {
            "admin": {"address": sock(0)},
            "static_resources": {
                "listeners": [{"name": "bench", "address": sock(port),
                               "filter_chains": [{"filters": [net_filter],
                                                  **self._transport_socket(mode, tls)}]}],
                "clusters": [{
                    "name": "origin", "type": "STATIC", "connect_timeout": "5s",
                    "circuit_breakers": {"thresholds": [{
                        "priority": "DEFAULT", "max_connections": VERY_HIGH,
                        "max_pending_requests": VERY_HIGH, "max_requests": VERY_HIGH,
                        "max_retries": VERY_HIGH}]},
                    "load_assignment": {"cluster_name": "origin", "endpoints": [{
                        "lb_endpoints": [{"endpoint": {"address": sock(origin_port)}}]}]},
                    **self._upstream_protocol(mode),
                }],
            },
        }

    @staticmethod
    def _http10(mode: str) -> dict:
        """The full-handshake scenario's client (openssl s_time) sends
        HTTP/1.0 without a Host; Envoy answers that 426 unless told, fastmesh
        serves it."""
        if mode not in TLS_MODES:
            return {}
        return {"http_protocol_options": {"accept_http_10": True,
                                          "default_host_for_http_10": "bench"}}

    @staticmethod
    def _transport_socket(mode: str, tls: tlscerts.TlsFiles | None) -> dict:
        """TLS termination as fastmesh's defaults: the same certificate files,
        ALPN http/1.1, TLS 1.2-1.3, P-256 only (Envoy's default also offers
        X25519), the Mozilla intermediate TLS 1.2 suites."""
        if mode not in TLS_MODES:
            return {}
        if tls is None:
            raise ValueError("a TLS mode needs the bench's certificate files")
        return {"transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                         "DownstreamTlsContext",
                "common_tls_context": Envoy._common_tls(tls)}}}

    @staticmethod
    def _common_tls(tls: tlscerts.TlsFiles) -> dict:
        return {"tls_certificates": [{"certificate_chain": {"filename": tls.cert},
                                      "private_key": {"filename": tls.key}}],
                "alpn_protocols": list(tlscerts.ALPN),
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                               "tls_maximum_protocol_version": "TLSv1_3",
                               "cipher_suites": list(TLS12_CIPHERS),
                               "ecdh_curves": ["P-256"]}}

    @staticmethod
    def _upstream_protocol(mode: str) -> dict:
        if mode != "grpc":
            return {}
        return {"typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}}

    def mtls_bootstraps(self, port: int, inner_port: int, origin_port: int,
                        server: tlscerts.TlsFiles, client: tlscerts.TlsFiles
                        ) -> tuple[dict, dict]:
        """fastmesh's mtls_configs as Envoy bootstraps: the client's sidecar
        (plaintext in, UpstreamTlsContext with its certificate and the
        server's SPIFFE ID pinned) and the server's (DownstreamTlsContext
        requiring a client certificate with CLIENT_ID)."""
        outbound = self.bootstrap("http", port, origin_port, "")
        cluster = outbound["static_resources"]["clusters"][0]
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
            "socket_address"]["port_value"] = inner_port
        common = self._common_tls(client)
        common["validation_context"] = {"trusted_ca": {"filename": client.bundle},
                                        "match_typed_subject_alt_names": _san(tlscerts.SERVER_ID)}
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                         "UpstreamTlsContext",
                "sni": tlscerts.SERVER_NAME, "common_tls_context": common}}
        inbound = self.bootstrap("https", inner_port, origin_port, "", server)
        ts = inbound["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]
        ts["typed_config"]["common_tls_context"]["validation_context"] = {
            "trusted_ca": {"filename": server.bundle},
            "match_typed_subject_alt_names": _san(tlscerts.CLIENT_ID)}
        ts["typed_config"]["require_client_certificate"] = True
        return outbound, inbound

    def _args(self, path: str, admin_path: str) -> list[str]:
        return [tools.require("envoy"), "-c", path, "--concurrency", "1",
                "--disable-hot-restart", "--log-level", "warn",
                "--admin-address-path", admin_path]

    def command(self, workdir, mode, port, origin_port):
        self._admin_path = os.path.join(workdir, f"envoy-{mode}-admin.txt")
        if mode in MTLS_MODES:
            outbound, inbound = self.mtls_bootstraps(port, free_port(), origin_port,
                                                     tlscerts.files(workdir),
                                                     tlscerts.client_files(workdir))
            inner_admin = os.path.join(workdir, f"envoy-{mode}-server-admin.txt")
            paths = [self._write(workdir, f"envoy-{mode}-{side}.json", json.dumps(b, indent=1))
                     for side, b in (("client", outbound), ("server", inbound))]
            # Two Envoys on one machine: each needs its own base id.
            return _pair(self._args(paths[1], inner_admin) + ["--base-id", "1"],
                         self._args(paths[0], self._admin_path))
        path = self._write(workdir, f"envoy-{mode}.json",
                           json.dumps(self.bootstrap(
                               mode, port, origin_port, self._admin_path,
                               tlscerts.files(workdir) if mode in TLS_MODES else None), indent=1))
        return self._args(path, self._admin_path)

    def ready(self) -> bool:
        """Envoy's own readiness: GET /ready on the (ephemeral) admin port."""
        try:
            with open(self._admin_path, encoding="ascii") as f:
                host, port = f.read().strip().rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=1) as s:
                s.sendall(b"GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
                return s.recv(64).split(b" ", 2)[1:2] == [b"200"]
        except (OSError, ValueError):
            return False


class Haproxy(Peer):
    name = "haproxy"
    tool = "haproxy"

    def command(self, workdir, mode, port, origin_port):
        if mode == "tcp":
            body = "    mode tcp\n"
        else:
            body = ("    mode http\n"
                    "    option http-keep-alive\n"
                    "    http-reuse always\n")
        cfg = f"""global
    nbthread 1
    maxconn 8192
    tune.bufsize 16384

defaults
{body}    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend bench
    bind 127.0.0.1:{port}
    default_backend origin

backend origin
    server origin 127.0.0.1:{origin_port}{" proto h2" if mode == "grpc" else ""}
"""
        path = self._write(workdir, f"haproxy-{mode}.cfg", cfg)
        return [tools.require("haproxy"), "-db", "-f", path]


class NginxProxy(Peer):
    name = "nginx"
    tool = "nginx"
    modes = ("http", "tcp")   # nginx serves h2c only on an h2-only listener (no HTTP/1.1
                              # on that port), and cannot proxy gRPC without grpc_pass

    def supports(self, mode):
        if mode == "tcp":
            load, note = tools.nginx_stream_module()
            return None if load is not None else note
        return super().supports(mode)

    def command(self, workdir, mode, port, origin_port):
        head = f"""{_nginx_user()}worker_processes 1;
daemon off;
pid {workdir}/nginx-{mode}.pid;
error_log {workdir}/nginx-{mode}-error.log warn;
events {{ worker_connections 16384; }}
"""
        if mode == "tcp":
            load, _ = tools.nginx_stream_module()
            conf = f"""{load}
{head}
stream {{
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        proxy_pass 127.0.0.1:{origin_port};
    }}
}}
"""
        else:
            conf = f"""{head}
http {{
    access_log off;
    {_nginx_temp_paths(workdir, "nginx-" + mode)}
    keepalive_timeout 300s;
    keepalive_requests {VERY_HIGH};
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 256;
        keepalive_requests {VERY_HIGH};
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffers 16 16k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""
        path = self._write(workdir, f"nginx-{mode}.conf", conf)
        return [tools.require("nginx"), "-p", workdir, "-c", path]


PEERS: dict[str, Peer] = {p.name: p for p in (Fastmesh(), Envoy(), Haproxy(), NginxProxy())}
DEFAULT_PROXIES = ["fastmesh", "envoy", "haproxy", "nginx"]


def peers_for(baseline: str | None = None) -> dict[str, Peer]:
    """The peers of one bench run: PEERS, plus fastmesh-baseline for DIR."""
    if baseline is None:
        return dict(PEERS)
    return {**PEERS, BASELINE: FastmeshBaseline(baseline)}
