"""Which origin served a request, and waiting for a condition: the
discovery tests' view of traffic (origins answer with x-origin: <name>)."""
from __future__ import annotations

import time

from support.harness import Client


def served_by(p, n: int, path: str = "/d") -> list[str]:
    """Which origin answered each of n requests on one connection to the
    proxy's "web" listener (its name), or the status when not 200."""
    out = []
    c = Client(p.address("web"))
    try:
        for i in range(n):
            r = c.request("GET", f"{path}{i}")
            out.append(r.header("x-origin").decode() if r.status == 200 else str(r.status))
    finally:
        c.close()
    return out


def poll(pred, timeout: float = 10.0) -> bool:
    """pred() polled until it holds (True) or the deadline passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False
