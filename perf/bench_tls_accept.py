"""What the TLS acceptor's way of handshaking costs, per handshake, against
uvloop's own ``create_server(ssl=...)``.

fastmesh's TLS listeners do not use ``create_server(ssl=...)`` (it swallows
handshake errors, so nothing could be counted by reason, and a peer could
not be refused on its SAN before the codec sees it): the listener's factory
returns an acceptor that puts uvloop's ``SSLProtocol`` in front of the socket
itself, waits for the handshake, reads the peer certificate
(``security.peer.peer_identity``), checks the SAN matchers, and then hands
the TLS transport to the real protocol (``core_tls.pxi``). This script runs
both ways in a server process, the same mechanics as ``TlsAcceptor`` written
in Python (so an upper bound: the compiled one makes fewer Python calls),
and measures the server's CPU time for N full handshakes (each followed by
one small request and response) from a client process:

    python perf/bench_tls_accept.py [-n 2000] [--mtls]
    python perf/bench_tls_accept.py --valgrind 50 250 [--mtls]

Prints server CPU microseconds per connection for each way and the
difference.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(HERE))

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"


class Answer(asyncio.Protocol):
    """The 'real' protocol: answers the first request and closes."""

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.t.write(RESPONSE)
        self.t.close()


class Acceptor(asyncio.Protocol):
    """TlsAcceptor's mechanics (core_tls.pxi), in Python."""

    def __init__(self, loop, ctx, matchers):
        self.loop, self.ctx, self.matchers = loop, ctx, matchers
        self.early = None

    def connection_made(self, transport):
        from uvloop.loop import SSLProtocol
        self.raw = transport
        self.down = Answer()
        waiter = self.loop.create_future()
        sslp = SSLProtocol(self.loop, self, self.ctx, waiter, True, None,
                           call_connection_made=False, ssl_handshake_timeout=10.0)
        transport.set_protocol(sslp)
        sslp.connection_made(transport)
        self.app = sslp._get_app_transport()
        waiter.add_done_callback(self.done)

    def done(self, fut):
        from fastmesh.security.peer import handshake_failure, peer_identity, san_allowed
        if fut.exception() is not None:
            handshake_failure(fut.exception())
            self.raw.abort()
            return
        tr = self.app
        peer = peer_identity(tr.get_extra_info("ssl_object").getpeercert(True))
        if self.matchers and peer is not None and not san_allowed(self.matchers, peer):
            tr.abort()
            return
        tr.set_protocol(self.down)
        self.down.connection_made(tr)
        if self.early is not None:
            self.down.data_received(self.early)

    def data_received(self, data):
        self.early = data if self.early is None else self.early + data


def serve(mode: str, port_file: str, certdir: str, mtls: bool) -> None:
    import uvloop
    from fastmesh.security.peer import SanMatcher
    d = Path(certdir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "w" / "cert.pem", d / "w" / "key.pem")
    matchers = ()
    if mtls:
        ctx.load_verify_locations(cafile=str(d / "w" / "bundle.pem"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        matchers = (SanMatcher("URI", "prefix", "spiffe://example.org/"),)

    async def main():
        import signal
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)   # valgrind prints at exit
        if mode == "create_server":
            srv = await loop.create_server(Answer, "127.0.0.1", 0, ssl=ctx)
        else:
            srv = await loop.create_server(lambda: Acceptor(loop, ctx, matchers), "127.0.0.1", 0)
        Path(port_file).write_text(str(srv.sockets[0].getsockname()[1]))
        await stop.wait()

    uvloop.run(main())


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(mode: str, n: int, certdir: str, mtls: bool, valgrind: bool = False) -> float:
    """Server CPU microseconds per connection; with valgrind, user-space
    instructions of the whole server run (the caller takes differences)."""
    with tempfile.TemporaryDirectory() as d:
        pf = Path(d) / "port"
        cmd = [sys.executable, __file__, "--serve", mode, str(pf), certdir]
        if valgrind:
            cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                   "--cachegrind-out-file=/dev/null"] + cmd
        proc = subprocess.Popen(cmd + (["--mtls"] if mtls else []),
                                stderr=subprocess.PIPE if valgrind else None, text=True)
        try:
            deadline = time.monotonic() + 30
            while not pf.exists() or not pf.read_text():
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start")
                time.sleep(0.05)
            port = int(pf.read_text())
            cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            cctx.check_hostname = False
            cctx.load_verify_locations(cafile=str(Path(certdir) / "w" / "bundle.pem"))
            if mtls:
                cctx.load_cert_chain(Path(certdir) / "c" / "cert.pem",
                                     Path(certdir) / "c" / "key.pem")
            if valgrind:
                for _ in range(n):
                    one(port, cctx)
                proc.terminate()
                _, err = proc.communicate(timeout=600)
                import re
                m = re.search(r"I\s+refs:\s+([\d,]+)", err)
                if m is None:
                    raise SystemExit("no instruction count:\n" + err[-2000:])
                return float(m.group(1).replace(",", ""))
            for _ in range(50):                       # warm-up
                one(port, cctx)
            c0 = cpu_of(proc.pid)
            for _ in range(n):
                one(port, cctx)
            return (cpu_of(proc.pid) - c0) / n * 1e6
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def one(port: int, cctx: ssl.SSLContext) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        with cctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            while t.recv(4096):
                pass


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], sys.argv[4], "--mtls" in sys.argv)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--mtls", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--valgrind", nargs=2, type=int, metavar=("N1", "N2"),
                    help="count instructions (cachegrind) for N1 and N2 connections instead "
                         "of timing: deterministic on a noisy machine")
    args = ap.parse_args()
    from fastmesh.security.ca import CertificateAuthority
    with tempfile.TemporaryDirectory() as certdir:
        ca = CertificateAuthority.init(Path(certdir) / "ca", "example.org")
        ca.issue("spiffe://example.org/ns/default/sa/web").write_files(Path(certdir) / "w")
        ca.issue("spiffe://example.org/ns/default/sa/client").write_files(Path(certdir) / "c")
        res: dict[str, list[float]] = {"create_server": [], "acceptor": []}
        if args.valgrind:
            n1, n2 = args.valgrind
            per = {}
            for mode in res:
                a = run(mode, n1, certdir, args.mtls, True)
                b = run(mode, n2, certdir, args.mtls, True)
                per[mode] = (b - a) / (n2 - n1)
                print(f"{mode}: {per[mode]:,.0f} instructions per connection", flush=True)
            d = per["acceptor"] - per["create_server"]
            print(f"acceptor - create_server: {d:+,.0f} instructions per connection "
                  f"({per['acceptor'] / per['create_server']:.3f}x, "
                  f"{'mTLS' if args.mtls else 'TLS'})")
            return
        for _ in range(args.rounds):
            for mode in res:                   # interleaved rounds
                res[mode].append(run(mode, args.n, certdir, args.mtls))
                print(f"{mode}: {res[mode][-1]:.1f} us server CPU per connection", flush=True)
    a = min(res["create_server"])
    b = min(res["acceptor"])
    print(f"acceptor - create_server: {b - a:+.1f} us per connection "
          f"({b / a:.3f}x; best of {args.rounds}, {'mTLS' if args.mtls else 'TLS'})")


if __name__ == "__main__":
    main()
