"""Unmodified TCP clients for the interception tests: plain sockets to the
server's own address, nothing about a proxy (stdlib only; run by the
system's python3 as an unprivileged user).

    python3 tcp_clients.py echo HOST PORT CONNS LINES   CONNS x LINES round trips
    python3 tcp_clients.py greet HOST PORT              wait for the greeting, then HELO

Prints one JSON line with what happened.
"""
from __future__ import annotations

import json
import socket
import sys
import time


def _readline(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    i = buf.index(b"\n") + 1
    line = bytes(buf[:i])
    del buf[:i]
    return line


def echo(host: str, port: int, conns: int, lines: int) -> dict:
    ok = failed = 0
    for c in range(conns):
        try:
            with socket.create_connection((host, port), timeout=10) as s:
                buf = bytearray()
                for i in range(lines):
                    msg = f"msg {c} {i}\n".encode()
                    s.sendall(msg)
                    if _readline(s, buf) == msg:
                        ok += 1
                    else:
                        failed += 1
        except OSError:
            failed += lines
    return {"ok": ok, "failed": failed}


def greet(host: str, port: int) -> dict:
    t0 = time.monotonic()
    with socket.create_connection((host, port), timeout=10) as s:
        buf = bytearray()
        greeting = _readline(s, buf).decode()
        waited = time.monotonic() - t0
        s.sendall(b"HELO client\r\n")
        reply = _readline(s, buf).decode()
    return {"greeting": greeting, "reply": reply, "waited": waited}


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "echo":
        out = echo(host, port, int(sys.argv[4]), int(sys.argv[5]))
    else:
        out = greet(host, port)
    print(json.dumps(out))
