"""Instructions per proxied HTTP/1.1 request, this build against a baseline build.

Counts with valgrind (cachegrind, no cache simulation) rather than time, so a
shared, noisy machine or one without hardware counters (a VM) still gives a
comparison: `fastmesh run --single-process` proxies N keep-alive GETs on one
connection to an origin (a direct_response fastmesh, not counted), and

    instructions per request = (Ir(N2 requests) - Ir(N1 requests)) / (N2 - N1)

so that start-up and shutdown cancel out. Valgrind turns the vDSO clock reads
into system calls, so their ~20 ns each are not in the count. Run-to-run
noise is about 1 % (the worker's 100 ms tick runs by wall time, and valgrind
is slow).

    python perf/instructions_per_request.py --baseline /path/to/old/src [--reps 2]
    python perf/instructions_per_request.py --filter fastmesh.bench.noop_filters:NoopPythonFilter
    python perf/instructions_per_request.py --baseline DIR --beside tls_listener.yaml
    python perf/instructions_per_request.py --resilience [--reps 2]
    python perf/instructions_per_request.py --rbac [--reps 2]
    python perf/instructions_per_request.py --tracing [--reps 2]
    python perf/instructions_per_request.py --intercepted [--reps 2]     (root)

DIR and this checkout's src/ each hold a built fastmesh package. With
--filter, this build is compared with itself plus that filter on the
listener's chain (what the filter costs a whole proxied request). With
--resilience, this build is compared with itself configured with every
resilience policy of the `h1-resilience` bench scenario (nothing failing);
the active health check's interval is raised to 60 s there, because under
valgrind a run lasts long enough for a per-second check to be charged to
the requests, which it is not at real request rates. With --rbac, this
build is compared with itself plus envoy.filters.http.rbac with an ALLOW
policy every request matches (method, path prefix, header absent, source
CIDR) and a shadow DENY policy none does. With --tracing, this build is
compared with itself with the listener's tracing on at 0 %, 1 % and 100 %
random sampling, exporting over OTLP/HTTP (--otlp grpc: OTLP/gRPC) to a
receiver in this script that discards what it gets: the export thread's
work counts, as it runs in the proxy's process. Every run starts with one
request that carries a sampled traceparent, so that the once-per-process
work (the SDK's import, the thread) cancels out, and exports when a batch
is full or at exit (OTEL_BSP_SCHEDULE_DELAY raised), as under load. (gRPC's own threads wake by
wall time, which valgrind stretches some fifty times: with --otlp grpc their
idle work is charged to the requests far beyond what it costs at full
speed.)

With --intercepted (root; issue 14's bar), the same GETs go through
transparent interception and are compared with an explicit listener, both
in a network namespace ("app") joined by a veth pair to another ("srv")
where the origin is: the client (as uid 1337, the system's python3) dials
the origin's own address, `fastmesh iptables --proxy-uid 0` redirects it to
a `use_original_dst`, `protocol: auto` listener whose route goes to an
`original_dst` cluster; the explicit case dials fastmesh's listener, whose
static cluster is the same origin. The per-connection work (getsockopt,
detection) is spread over the keep-alive connection's requests, as in use.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fastmesh exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"port {port} did not open")


def listener(name: str, port: int, action: str) -> str:
    return (f"listeners:\n  - name: {name}\n    address: 127.0.0.1\n    port: {port}\n"
            f"    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n"
            f"        routes:\n          - match: {{prefix: /}}\n            {action}\n")


def bench_config(mode: str, port: int, origin: int) -> str:
    """A fastmesh bench scenario's config (JSON is YAML): `http` (h1) or
    `http-resilience` (h1-resilience), so both sides differ only by the
    policies."""
    import json

    sys.path.insert(0, str(HERE))
    from fastmesh.bench import peers

    cfg = peers.Fastmesh().config(mode, port, origin)
    for hc in cfg["clusters"][0].get("health_checks", ()):
        hc["interval"] = "60s"
    return json.dumps(cfg)


RBAC_FILTER = """    http_filters:
      - name: envoy.filters.http.rbac
        typed_config:
          rules:
            action: ALLOW
            policies:
              readers:
                permissions:
                  - and_rules: {rules: [
                      {header: {name: ":method", string_match: {exact: GET}}},
                      {url_path: {path: {prefix: /x}}},
                      {not_rule: {header: {name: x-debug, present_match: true}}}]}
                principals: [{remote_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}]
          shadow_rules:
            action: DENY
            policies:
              admin: {permissions: [{url_path: {path: {prefix: /admin}}}], principals: [{any: true}]}
"""


TRACING = """    tracing:
      random_sampling: {value: PERCENT}
      provider:
        name: envoy.tracers.opentelemetry
        typed_config:
          SERVICE
          service_name: bench
"""
OTLP_SERVICE = {
    "grpc": "grpc_service: {envoy_grpc: {cluster_name: otel}}",
    "http": "http_service: {http_uri: {uri: 'http://otel/v1/traces', cluster: otel}}",
}
OTLP = "http"


def otlp_http_receiver() -> tuple[object, int]:
    """An OTLP/HTTP trace receiver that takes and discards spans."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Stop:
        def stop(self, _grace):
            server.shutdown()

    return Stop(), server.server_address[1]


def otlp_receiver() -> tuple[object, int]:
    """An OTLP/gRPC trace receiver that takes and discards spans."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        spans = 0

        def Export(self, request, context):  # noqa: N802
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    Sink.spans += len(ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


OTLP_PORT = 0


def instructions(src: str, origin: int, n: int, tmp: Path, flt: str | None = None,
                 beside: str | None = None, mode: str | None = None) -> int:
    port = free_port()
    cfg = tmp / f"proxy-{port}.yaml"
    text = listener("web", port, "cluster: origin")
    if beside:
        # Another listener next to the measured one (e.g. a TLS one): the
        # plaintext requests must not pay for it.
        text += beside.replace("PORT", str(free_port()))
    if flt == "rbac":
        text = text.replace("    virtual_hosts:", RBAC_FILTER + "    virtual_hosts:")
    elif flt and flt.startswith("trace:"):
        text = text.replace("    virtual_hosts:",
                            TRACING.replace("PERCENT", flt[6:]).replace(
                                "SERVICE", OTLP_SERVICE[OTLP]) + "    virtual_hosts:")
    elif flt:
        text = text.replace("    virtual_hosts:",
                            f"    http_filters: [{{name: f, import: \"{flt}\"}}]\n    virtual_hosts:")
    cfg.write_text(text + "clusters:\n  - name: origin\n"
                   f"    endpoints: [{{address: 127.0.0.1, port: {origin}}}]\n"
                   "  - name: otel\n"
                   f"    endpoints: [{{address: 127.0.0.1, port: {OTLP_PORT or 9}}}]\n")
    if mode is not None:
        cfg.write_text(bench_config(mode, port, origin))
    env = {**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": "0"}
    if flt and flt.startswith("trace:"):
        # Export when a batch is full (512 spans) or at exit, as under load:
        # the 5 s timer would send a batch of a few spans every 5 s of the
        # run, stretched ~50x by valgrind.
        env["OTEL_BSP_SCHEDULE_DELAY"] = "3600000"
    proc = subprocess.Popen(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                             "--cachegrind-out-file=/dev/null", sys.executable, "-m", "fastmesh",
                             "run", "--single-process", "-c", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_port(port, proc)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    # One sampled request first (a traceparent that says so; passed through
    # untouched without tracing): what tracing does once per process (the
    # SDK's import, the export thread) is then in both counts and cancels.
    conn.request("GET", "/x", headers={
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    conn.getresponse().read()
    for _ in range(n):
        conn.request("GET", "/x")
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
    conn.close()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    m = re.search(r"I\s+refs:\s+([\d,]+)", err)
    if m is None:
        raise SystemExit("no instruction count in valgrind's output:\n" + err[-2000:])
    return int(m.group(1).replace(",", ""))


INTERCEPT_NS = (f"fmperfapp{os.getpid()}", f"fmperfsrv{os.getpid()}")
APP_IP, SRV_IP = "10.232.0.1", "10.232.0.2"
CLIENT = """
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=60)
for _ in range(int(sys.argv[3])):
    c.request("GET", "/x")
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
c.close()
"""


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(HERE)})


def _wait_in(ns: str, host: str, port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    probe = f"import socket; socket.create_connection(({host!r}, {port}), 1).close()"
    while subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", probe],
                         capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"nothing listens on {host}:{port} in {ns}")
        time.sleep(0.2)


def intercept_setup() -> None:
    app, srv = INTERCEPT_NS
    _sh("ip", "netns", "add", app)
    _sh("ip", "netns", "add", srv)
    _sh("ip", "link", "add", "fmpa0", "type", "veth", "peer", "name", "fmps0")
    for ns, dev, ip in ((app, "fmpa0", APP_IP), (srv, "fmps0", SRV_IP)):
        _sh("ip", "link", "set", dev, "netns", ns)
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
    _sh("ip", "netns", "exec", app, sys.executable, "-m", "fastmesh", "iptables",
        "--proxy-uid", "0", "--no-ipv6")


def intercept_teardown() -> None:
    for ns in INTERCEPT_NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def intercept_config(intercepted: bool, port: int) -> str:
    route = "          - match: {prefix: /}\n            cluster: {c}\n"
    if intercepted:
        return (f"listeners:\n  - name: outbound\n    address: 0.0.0.0\n    port: {port}\n"
                "    use_original_dst: true\n    protocol: auto\n    cluster: passthrough\n"
                "    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n"
                "        routes:\n" + route.replace("{c}", "passthrough") +
                "clusters:\n  - {name: passthrough, type: original_dst}\n")
    return (listener("web", port, "cluster: origin") + "clusters:\n  - name: origin\n"
            f"    endpoints: [{{address: {SRV_IP}, port: 8080}}]\n")


def instructions_intercepted(intercepted: bool, n: int, tmp: Path) -> int:
    app = INTERCEPT_NS[0]
    port = 15001 if intercepted else 15002
    cfg = tmp / f"proxy-{port}.yaml"
    cfg.write_text(intercept_config(intercepted, port))
    env = {**os.environ, "PYTHONPATH": str(HERE), "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(["ip", "netns", "exec", app, "valgrind", "--tool=cachegrind",
                             "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                             sys.executable, "-m", "fastmesh", "run", "--single-process",
                             "-c", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_in(app, "127.0.0.1", port, proc)
    target = (SRV_IP, "8080") if intercepted else ("127.0.0.1", str(port))
    subprocess.run(["ip", "netns", "exec", app, "setpriv", "--reuid=1337", "--regid=1337",
                    "--clear-groups", "/usr/bin/python3", "-c", CLIENT, *target, str(n)],
                   check=True, timeout=600)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    m = re.search(r"I\s+refs:\s+([\d,]+)", err)
    if m is None:
        raise SystemExit("no instruction count in valgrind's output:\n" + err[-2000:])
    return int(m.group(1).replace(",", ""))


def intercepted_main(args) -> None:
    n1, n2 = args.n
    results: dict[str, list[float]] = {"fastmesh+intercepted": [], "fastmesh": []}
    intercept_setup()
    origin = None
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            (tmp / "origin.yaml").write_text(listener(
                "o", 8080, 'direct_response: {status: 200, body: "hello world!\\n"}').replace(
                "address: 127.0.0.1", f"address: {SRV_IP}"))
            origin = subprocess.Popen(["ip", "netns", "exec", INTERCEPT_NS[1], sys.executable,
                                       "-m", "fastmesh", "run", "--single-process", "-c",
                                       str(tmp / "origin.yaml")],
                                      env={**os.environ, "PYTHONPATH": str(HERE)},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait_in(INTERCEPT_NS[1], SRV_IP, 8080, origin)
            for _ in range(args.reps):
                for name in results:     # interleaved
                    a = instructions_intercepted(name != "fastmesh", n1, tmp)
                    b = instructions_intercepted(name != "fastmesh", n2, tmp)
                    results[name].append((b - a) / (n2 - n1))
                    print(f"{name}: {results[name][-1]:,.0f} instructions/request", flush=True)
    finally:
        if origin is not None:
            origin.send_signal(signal.SIGTERM)
            origin.wait(10)
        intercept_teardown()
    mean = {name: sum(v) / len(v) for name, v in results.items()}
    new, ref = list(mean)
    print(f"{new} / {ref}: {mean[new] / mean[ref]:.3f} "
          f"({mean[new] - mean[ref]:+,.0f} instructions/request)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", metavar="DIR")
    ap.add_argument("--filter", metavar="MODULE:NAME",
                    help="compare this build with itself plus this filter")
    ap.add_argument("-n", nargs=2, type=int, default=(300, 4300), metavar=("N1", "N2"))
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--beside", metavar="FILE",
                    help="a listener (a YAML list item, PORT for its port) added beside the "
                         "measured one in this build (with --baseline) or compared with "
                         "this build without it")
    ap.add_argument("--rbac", action="store_true",
                    help="compare this build with itself plus an RBAC filter")
    ap.add_argument("--tracing", action="store_true",
                    help="compare this build with itself with tracing at 1 %% and 100 %% "
                         "sampling, exported over OTLP/gRPC")
    ap.add_argument("--otlp", choices=("http", "grpc"), default="http",
                    help="--tracing: the OTLP exporter (default http)")
    ap.add_argument("--resilience", action="store_true",
                    help="compare this build with itself configured with every resilience "
                         "policy (the h1-resilience bench scenario)")
    ap.add_argument("--intercepted", action="store_true",
                    help="compare transparent interception (iptables, original_dst) with an "
                         "explicit listener (root: network namespaces)")
    args = ap.parse_args()
    if args.intercepted:
        intercepted_main(args)
        return
    beside = Path(args.beside).read_text() if args.beside else None
    if (args.baseline is None and args.filter is None and beside is None
            and not args.resilience and not args.rbac and not args.tracing):
        ap.error("give --baseline DIR, --filter MODULE:NAME, --beside FILE, --resilience, "
                 "--rbac or --tracing")
    receiver = None
    if args.tracing:
        global OTLP_PORT, OTLP
        OTLP = args.otlp
        receiver, OTLP_PORT = otlp_receiver() if OTLP == "grpc" else otlp_http_receiver()
        builds = {"fastmesh+trace0%": (str(HERE), "trace:0", None, None),
                  "fastmesh+trace1%": (str(HERE), "trace:1", None, None),
                  "fastmesh+trace100%": (str(HERE), "trace:100", None, None),
                  "fastmesh": (str(HERE), None, None, None)}
    elif args.rbac:
        builds = {"fastmesh+rbac": (str(HERE), "rbac", None, None),
                  "fastmesh": (str(HERE), None, None, None)}
    elif args.resilience:
        builds = {"fastmesh+resilience": (str(HERE), None, None, "http-resilience"),
                  "fastmesh": (str(HERE), None, None, "http")}
    elif args.filter:
        builds = {"fastmesh+filter": (str(HERE), args.filter, None, None),
                  "fastmesh": (str(HERE), None, None, None)}
    elif args.baseline is None:
        builds = {"fastmesh+beside": (str(HERE), None, beside, None),
                  "fastmesh": (str(HERE), None, None, None)}
    else:
        builds = {"fastmesh": (str(HERE), None, beside, None),
                  "baseline": (args.baseline, None, None, None)}
    n1, n2 = args.n
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        oport = free_port()
        (tmp / "origin.yaml").write_text(
            listener("o", oport, 'direct_response: {status: 200, body: "hello world!\\n"}'))
        origin = subprocess.Popen([sys.executable, "-m", "fastmesh", "run", "--single-process",
                                   "-c", str(tmp / "origin.yaml")],
                                  env={**os.environ, "PYTHONPATH": args.baseline or str(HERE)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results: dict[str, list[float]] = {name: [] for name in builds}
        try:
            wait_port(oport, origin)
            for _ in range(args.reps):
                for name, (src, flt, bes, res) in builds.items():   # interleaved, as fastmesh bench does
                    a = instructions(src, oport, n1, tmp, flt, bes, res)
                    b = instructions(src, oport, n2, tmp, flt, bes, res)
                    results[name].append((b - a) / (n2 - n1))
                    print(f"{name}: {results[name][-1]:,.0f} instructions/request", flush=True)
        finally:
            origin.send_signal(signal.SIGTERM)
            origin.wait(10)
            if receiver is not None:
                receiver.stop(0)
    mean = {name: sum(v) / len(v) for name, v in results.items()}
    *news, ref = list(mean)
    for new in news:
        print(f"{new} / {ref}: {mean[new] / mean[ref]:.3f} "
              f"({mean[new] - mean[ref]:+,.0f} instructions/request)")


if __name__ == "__main__":
    main()
