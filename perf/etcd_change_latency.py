"""Change-to-traffic latency of etcd discovery (issue 11's bar: p99 < 500 ms).

    python perf/etcd_change_latency.py [--changes 100] [--workers 0]

Starts a real etcd (Debian's etcd-server) on 127.0.0.1, a pool of origins
(one thread, each origin stamps every request it serves with
time.monotonic()), and `fastmesh run` (--single-process, or --workers N)
with an eds cluster fed by the etcd prefix, under a steady closed-loop load
(4 keep-alive connections). Then it makes `--changes` endpoint changes,
alternately adding an origin (an etcd put) and removing one (an etcd
delete), 4 endpoints live at any time, and measures, with the origins'
timestamps on the same clock:

- add: etcd write -> the first request the new origin serves;
- delete: etcd write -> the last request the removed origin serves.

It prints both distributions (p50/p90/p99/max) and the load's failed
requests (there should be none: make-before-break).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.etcdserver import EtcdServer  # noqa: E402
from support.origin_proc import free_port  # noqa: E402

PREFIX = "/fastmesh/services/origin/"


class Origins:
    """N tiny keep-alive HTTP/1.1 origins in one thread; stamps[i] = the
    monotonic times of the requests origin i served."""

    def __init__(self, n: int) -> None:
        self.ports = [free_port() for _ in range(n)]
        self.stamps: list[list[float]] = [[] for _ in range(n)]
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def setup() -> None:
            for i, port in enumerate(self.ports):
                await asyncio.start_server(lambda r, w, i=i: self._serve(i, r, w),
                                           "127.0.0.1", port)
        self.loop.run_until_complete(setup())
        ready.set()
        self.loop.run_forever()

    async def _serve(self, i: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.stamps[i].append(time.monotonic())
                del head
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


class Load:
    """Closed-loop GETs on `conns` keep-alive connections; counts failures."""

    def __init__(self, port: int, conns: int = 4) -> None:
        self.port, self.stop_flag = port, False
        self.ok = self.failed = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(conns)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        s = None
        while not self.stop_flag:
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                s.sendall(b"GET /x HTTP/1.1\r\nhost: perf\r\n\r\n")
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("EOF")
                    buf += chunk
                head, _, body = buf.partition(b"\r\n\r\n")
                clen = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        clen = int(value)
                while len(body) < clen:
                    body += s.recv(4096)
                if head.startswith(b"HTTP/1.1 200"):
                    self.ok += 1
                else:
                    self.failed += 1
            except OSError:
                self.failed += 1
                if s is not None:
                    s.close()
                s = None

    def stop(self) -> None:
        self.stop_flag = True
        for t in self.threads:
            t.join(5)


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def summary(name: str, ms: list[float]) -> str:
    return (f"{name}: n={len(ms)} p50={pct(ms, 50):.1f} ms p90={pct(ms, 90):.1f} ms "
            f"p99={pct(ms, 99):.1f} ms max={max(ms):.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--workers", type=int, default=0, help="0: --single-process")
    ap.add_argument("--pool", type=int, default=12, help="origins to rotate through")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="etcd-perf-"))
    etcd = EtcdServer(tmp)
    etcd.start()
    origins = Origins(args.pool)
    port, admin = free_port(), free_port()
    cfg = tmp / "fastmesh.yaml"
    cfg.write_text(json.dumps({
        "drain_timeout": 1, "admin": {"address": "127.0.0.1", "port": admin},
        "listeners": [{"name": "web", "address": "127.0.0.1", "port": port,
                       "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                           {"match": {"prefix": "/"}, "cluster": "origin"}]}]}],
        "clusters": [{"name": "origin", "type": "eds", "eds_config": {"etcd": {
            "endpoints": [etcd.url], "prefix": PREFIX}}}]}))
    mode = ["--workers", str(args.workers)] if args.workers else ["--single-process"]
    proxy = subprocess.Popen([sys.executable, "-m", "fastmesh", "run", "-c", str(cfg),
                              "--log-level", "warning", *mode])
    load = None
    try:
        def key(i: int) -> str:
            return f"{PREFIX}127.0.0.1:{origins.ports[i]}"

        def value(i: int) -> dict:
            return {"address": "127.0.0.1", "port": origins.ports[i]}

        live = [0, 1, 2, 3]
        for i in live:
            etcd.put(key(i), value(i))
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the proxy did not serve")
            time.sleep(0.05)
        load = Load(port)
        time.sleep(0.5)
        adds: list[float] = []
        added_at: dict[int, list[float]] = {}     # origin -> its put times
        deletes: list[tuple[int, float]] = []      # (origin, write time)
        nxt = 4
        for n in range(args.changes):
            if n % 2 == 0:
                i = nxt % args.pool
                nxt += 1
                base = len(origins.stamps[i])
                t = time.monotonic()
                etcd.put(key(i), value(i))
                added_at.setdefault(i, []).append(t)
                end = t + 10
                while len(origins.stamps[i]) == base and time.monotonic() < end:
                    time.sleep(0.001)
                if len(origins.stamps[i]) == base:
                    raise SystemExit(f"change {n}: origin {i} got nothing in 10 s")
                adds.append((origins.stamps[i][base] - t) * 1000)
                live.append(i)
            else:
                i = live.pop(0)
                t = time.monotonic()
                etcd.delete(key(i))
                deletes.append((i, t))
            time.sleep(0.1)
        time.sleep(1.0)       # let every removed origin's last request land
        dels = []
        for i, t in deletes:
            # the pool rotates: a removed origin may be added again later;
            # only its requests before that re-add count
            until = min([a for a in added_at.get(i, []) if a > t], default=float("inf"))
            later = [s for s in origins.stamps[i] if t <= s < until]
            dels.append(((max(later) - t) * 1000) if later else 0.0)
        load.stop()
        print(f"{args.changes} changes ({len(adds)} adds, {len(dels)} deletes), "
              f"{'--workers ' + str(args.workers) if args.workers else '--single-process'}")
        print(summary("write -> first request at the added endpoint", adds))
        print(summary("write -> last request at the removed endpoint", dels))
        both = adds + dels
        print(summary("all changes", both))
        print(f"load: {load.ok} requests ok, {load.failed} failed")
    finally:
        if load is not None:
            load.stop()
        proxy.terminate()
        proxy.wait(10)
        etcd.close()


if __name__ == "__main__":
    main()
