"""An HTTP/1.1 origin as a separate PROCESS, for fault scenarios (issue 9):
it can be SIGKILLed and started again on the same port, and it records every
request it served.

Run as a script (`python origin_proc.py --port P --record FILE ...`) or
through `OriginProc`, which starts it, waits until it accepts, kills and
restarts it, and reads its records.

Each request carrying the tag header (`x-fault-id`) is recorded, before the
answer is written, as one line `<id> <outcome> <unix time> <name>` appended
to the record file with one write(2) (O_APPEND), so a record survives a
SIGKILL of the origin. <outcome> is the status sent (200, 503), `hang` or
`reset`. `/health` answers 200 and is not recorded (for health checks).

Behaviours (command line): `--fail-rate F` answers 503 to a fraction F of
requests; `--hang` reads requests and never answers; `--reset-rate F` sends
the head and part of the body of a fraction F of responses, then an RST
(SO_LINGER 0); `--body N` is the size of a 200's body.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

TAG = b"x-fault-id"


class _Origin(asyncio.Protocol):
    def __init__(self, opts, rec_fd: int) -> None:
        self.o = opts
        self.rec_fd = rec_fd
        self.buf = bytearray()
        self.transport = None
        self.dead = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.dead:
            return
        self.buf += data
        while not self.dead:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).split(b"\r\n")
            clen, tag = 0, None
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    clen = int(value)
                elif name == TAG:
                    tag = value.strip().decode()
            if len(self.buf) < end + 4 + clen:
                return
            del self.buf[:end + 4 + clen]
            self.answer(head[0].split(b" ")[1], tag)

    def record(self, tag: str | None, outcome: str) -> None:
        if tag is not None:
            os.write(self.rec_fd, f"{tag} {outcome} {time.time():.6f} {self.o.name}\n".encode())

    def answer(self, target: bytes, tag: str | None) -> None:
        o = self.o
        if target == b"/health":
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
            return
        if o.hang:
            self.record(tag, "hang")
            self.dead = True          # keeps the connection, never answers
            return
        if o.fail_rate and random.random() < o.fail_rate:
            self.record(tag, "503")
            self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nx-origin: "
                                 + o.name.encode() + b"\r\ncontent-length: 5\r\n\r\nfail\n")
            return
        body = (f"{tag} {o.name}\n".encode() + b"x" * o.body)[:max(o.body, 1)]
        head = (b"HTTP/1.1 200 OK\r\nx-origin: " + o.name.encode()
                + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n")
        if o.reset_rate and random.random() < o.reset_rate:
            self.record(tag, "reset")
            self.transport.write(head + body[:len(body) // 2])
            self.dead = True
            # Let the head and half the body leave first, then RST.
            asyncio.get_running_loop().call_later(0.005, self._rst)
            return
        self.record(tag, "200")
        self.transport.write(head + body)

    def _rst(self) -> None:
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


async def _main(opts) -> None:
    rec_fd = os.open(opts.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Origin(opts, rec_fd), opts.host, opts.port,
                                      reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    # 0.0.0.0 serves every 127.x.y.z (scale runs); 127.0.0.N one loopback
    # address, so that several origins share a port (churn runs)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--record", required=True)
    ap.add_argument("--name", default="origin")
    ap.add_argument("--fail-rate", type=float, default=0.0)
    ap.add_argument("--reset-rate", type=float, default=0.0)
    ap.add_argument("--hang", action="store_true")
    ap.add_argument("--body", type=int, default=64)
    opts = ap.parse_args(argv)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_main(opts))


# ------------------------------------------------------------------ parent side

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OriginProc:
    """An origin process on a fixed port: start(), kill() (SIGKILL), start()
    again on the same port, stop(); records() reads what it served."""

    def __init__(self, name: str, record_dir: Path, port: int | None = None,
                 host: str = "127.0.0.1", **behaviour) -> None:
        self.name = name
        self.host = host
        self.port = port or free_port()
        self.record = Path(record_dir) / f"{name}.records"
        self.behaviour = behaviour
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1" if self.host == "0.0.0.0" else self.host, self.port)

    def args(self, **behaviour) -> list[str]:
        b = {**self.behaviour, **behaviour}
        a = [sys.executable, __file__, "--port", str(self.port), "--host", self.host, "--record",
             str(self.record), "--name", self.name, "--body", str(b.get("body", 64))]
        if b.get("fail_rate"):
            a += ["--fail-rate", str(b["fail_rate"])]
        if b.get("reset_rate"):
            a += ["--reset-rate", str(b["reset_rate"])]
        if b.get("hang"):
            a.append("--hang")
        return a

    def start(self, timeout: float = 10.0, **behaviour) -> "OriginProc":
        """Start the process (behaviour overrides the constructor's) and wait
        until it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(self.args(**behaviour), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"origin {self.name} exited with {self.proc.returncode}")
            try:
                socket.create_connection(self.address, timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"origin {self.name} did not accept within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: the kernel resets its connections; nothing else runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def records(self) -> list[tuple[str, str, float, str]]:
        """[(id, outcome, time, name)] in the order served."""
        if not self.record.exists():
            return []
        out = []
        for line in self.record.read_text().splitlines():
            i, outcome, t, name = line.split(" ")
            out.append((i, outcome, float(t), name))
        return out


if __name__ == "__main__":
    main()
