"""Instructions per TLS handshake on a fastmesh listener, this build against a baseline build.

Like perf/instructions_per_request.py, counted with valgrind (cachegrind, no
cache simulation), so a loaded machine still gives a comparison:
`fastmesh run --single-process` serves a TLS listener answering every
request itself (`direct_response`); a client makes N new connections, each a
handshake (full: no session offered; resumed: the first connection's
session offered) and one GET, and

    instructions per handshake = (Ir(N2 connections) - Ir(N1)) / (N2 - N1)

The server certificate is an EC P-256 workload certificate from the
built-in CA; the client (this process, Python's ssl, not counted) speaks TLS
1.3 with P-256, as the bench's clients do.

    python perf/handshake_instructions.py [--baseline DIR] [--resumed] [-n 20 120] [--reps 2]
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import ssl
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


def certs(tmp: Path) -> dict[str, Path]:
    sys.path.insert(0, str(HERE))
    from fastmesh.security.ca import CertificateAuthority

    ca = CertificateAuthority.init(tmp / "ca", "bench.local")
    files = ca.issue("spiffe://bench.local/ns/bench/sa/server",
                     dns_names=("localhost",)).write_files(tmp / "server")
    return {"cert": files["cert"], "key": files["key"], "bundle": tmp / "ca" / "bundle.pem"}


def config(port: int, c: dict[str, Path]) -> str:
    return f"""listeners:
  - name: web
    address: 127.0.0.1
    port: {port}
    tls:
      common_tls_context:
        tls_certificates:
          - certificate_chain: {{filename: {c['cert']}}}
            private_key: {{filename: {c['key']}}}
        alpn_protocols: [http/1.1]
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{prefix: /}}
            direct_response: {{status: 200, body: ok}}
clusters: []
"""


def handshakes(src: str, n: int, resumed: bool, tmp: Path, c: dict[str, Path]) -> int:
    port = free_port()
    cfg = tmp / f"proxy-{port}.yaml"
    cfg.write_text(config(port, c))
    env = {**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                             "--cachegrind-out-file=/dev/null", sys.executable, "-m", "fastmesh",
                             "run", "--single-process", "-c", str(cfg), "--log-level", "error"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(c["bundle"]))
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ecdh_curve("prime256v1")
    deadline = time.monotonic() + 300
    session = None
    done = 0
    while done < n:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost",
                                     session=session if resumed else None) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := s.recv(4096):
                        data += chunk
                    assert data.startswith(b"HTTP/1.1 200"), data[:80]
                    if resumed and session is None:
                        session = s.session
                    elif resumed:
                        assert s.session_reused
            done += 1
        except (ConnectionRefusedError, ConnectionResetError):
            if done or time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    m = re.search(r"I\s+refs:\s+([\d,]+)", err)
    if m is None:
        raise SystemExit("no instruction count in valgrind's output:\n" + err[-2000:])
    return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", metavar="DIR")
    ap.add_argument("--resumed", action="store_true", help="resumed handshakes (a ticket)")
    ap.add_argument("-n", nargs=2, type=int, default=[20, 120], metavar=("N1", "N2"))
    ap.add_argument("--reps", type=int, default=1)
    a = ap.parse_args()
    builds = [("this build", str(HERE))] + ([("baseline", a.baseline)] if a.baseline else [])
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        c = certs(tmp)
        for _ in range(a.reps):
            for name, src in builds:
                lo = handshakes(src, a.n[0], a.resumed, tmp, c)
                hi = handshakes(src, a.n[1], a.resumed, tmp, c)
                per = (hi - lo) / (a.n[1] - a.n[0])
                kind = "resumed" if a.resumed else "full"
                print(f"{name:10s} {kind} handshake + GET + close: {per:,.0f} instructions")


if __name__ == "__main__":
    main()
