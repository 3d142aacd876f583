"""Certificate rotation under steady load: the numbers for perf/RESULTS.md.

The scenario of tests/test_cert_rotation.py::test_100_rotations_under_load_nothing_lost,
standalone and with timings: client -> A (plaintext in, mTLS out with A's
client certificate from files) -> B (mTLS in, B's server certificate from
files) -> origin. Both certificates (lifetime `--ttl` seconds) are rewritten
`--rotations` times while keep-alive clients (through A) and new-connection
TLS clients (to B) send requests. Prints the requests served and failed, the
keep-alive connections kept, and how long each rotation took to show (file
written -> a new handshake presents the new serial).

    PYTHONPATH=$PWD/src python perf/cert_rotation.py [--rotations 100] [--ttl 6]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.harness import Client, ProxyThread, http_config  # noqa: E402
from support.origin import Origin  # noqa: E402
from test_cert_rotation import (CLIENT_ID, SERVER_ID, Load, Pki, client_ctx,  # noqa: E402
                                files_tls, presented_serial, serial_file, sha256_file)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rotations", type=int, default=100)
    ap.add_argument("--ttl", type=float, default=6.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pki = Pki(Path(tmp))
        b_pair = pki.issue("b", SERVER_ID, ttl=args.ttl)
        a_pair = pki.issue("a", CLIENT_ID, ttl=args.ttl)
        direct = pki.issue("direct", CLIENT_ID)
        origin = Origin().start()
        b = ProxyThread(http_config(origin, listener={
            "tls": files_tls(b_pair, bundle=pki.bundle, require=True, sans=[CLIENT_ID]),
            "forward_client_cert_details": "SANITIZE_SET"})).start()
        a = ProxyThread(http_config(b.address(), cluster_opts={
            "tls": files_tls(a_pair, bundle=pki.bundle, sans=[SERVER_ID]),
            "max_requests_per_connection": 20, "idle_timeout": 0.3})).start()
        ctx = client_ctx(pki.bundle, direct)
        lat_b, lat_a = [], []
        t0 = time.monotonic()
        try:
            with Load(keepalive=[a.address(), a.address()],
                      fresh=[(b.address(), ctx)]) as load:
                for _ in range(args.rotations):
                    w = time.monotonic()
                    pki.issue("b", SERVER_ID, ttl=args.ttl)
                    pki.issue("a", CLIENT_ID, ttl=args.ttl)
                    want_b, want_a = serial_file(b_pair["cert"]), sha256_file(a_pair["cert"])
                    while presented_serial(b.address(), ctx) != want_b:
                        time.sleep(0.005)
                    lat_b.append(time.monotonic() - w)
                    while not any(f"Hash={want_a}" in (r.header("x-forwarded-client-cert")
                                                        or b"").decode()
                                  for r in origin.received()[-50:]):
                        time.sleep(0.005)
                    lat_a.append(time.monotonic() - w)
            elapsed = time.monotonic() - t0
            sa, sb = a.cluster_stats("origin"), b.stats()["listeners"]["web"]
        finally:
            a.stop()
            b.stop()
            origin.stop()
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] * 1000  # noqa: E731
    print(f"rotations: {args.rotations} (server and client certificate each), "
          f"lifetime {args.ttl:g} s, {elapsed:.1f} s")
    print(f"requests ok: {load.ok}, failed: {len(load.failed)} {load.failed[:3]}")
    print(f"keep-alive connections through A: 2 opened, "
          f"{2 - sum('keep-alive' in f for f in load.failed)} open at the end")
    print(f"B handshakes: {sb['ssl.handshake']}, B handshake failures: "
          f"{sb['ssl.connection_error'] + sb['ssl.fail_verify_error'] + sb['ssl.fail_verify_no_cert'] + sb['ssl.fail_verify_san']}, "
          f"A upstream connect failures: {sa['upstream_cx_connect_fail']}")
    print(f"rejected reads (key and certificate written apart): B {sb['ssl.certificate_update_rejected']}, "
          f"A {sa['ssl.certificate_update_rejected']}")
    print(f"file written -> new server cert seen: p50 {q(lat_b, .5):.0f} ms, "
          f"p99 {q(lat_b, .99):.0f} ms, max {max(lat_b) * 1000:.0f} ms "
          f"(mean {statistics.mean(lat_b) * 1000:.0f})")
    print(f"file written -> new client cert seen by B: p50 {q(lat_a, .5):.0f} ms, "
          f"p99 {q(lat_a, .99):.0f} ms, max {max(lat_a) * 1000:.0f} ms")
    return 0 if not load.failed else 1


if __name__ == "__main__":
    sys.exit(main())
