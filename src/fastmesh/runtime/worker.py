"""A worker process: one uvloop event loop running one DataPlane.

Started by the supervisor as ``python -m fastmesh.runtime.worker --fd N``
with one end of a socketpair. It receives its config over that channel (the
supervisor's last good config, so a restarted worker never reads a file that
has since gone bad) and its version, binds its listeners with SO_REUSEPORT,
and then answers requests (see channel.py): "stats" (its stats registry's
snapshot and the config version it serves), "health" (active health check
results to apply: the supervisor runs the checks), and the two-phase apply
"prepare" / "commit" / "abort" (docs/design.md, "Versioned, two-phase
apply"). SIGTERM drains: stop accepting, finish the requests in flight,
close keep-alive connections, exit 0.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from typing import Any

from fastmesh.admin.ops import apply_log_levels
from fastmesh.control.config import ConfigError, parse_config
from fastmesh.runtime import privileges
from fastmesh.security import tickets
from fastmesh.runtime.channel import Channel, answer
from fastmesh.runtime.dataplane import DataPlane, Staged

log = logging.getLogger("fastmesh.worker")


class Applier:
    """Runs prepare/commit/abort requests one at a time, in the order they
    came: an abort that follows a prepare still compiling waits for it, then
    drops what it staged. At most one config is staged."""

    def __init__(self, chan: Channel, plane: DataPlane, worker_id: int) -> None:
        self.chan = chan
        self.plane = plane
        self.worker_id = worker_id
        self.staged: Staged | None = None
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            req = await self.queue.get()
            try:
                reply = await self.handle(req)
            except Exception as exc:   # the serving config is untouched
                log.error("worker %d: %s of version %s failed: %s",
                          self.worker_id, req["op"], req.get("version"), exc)
                reply = answer(req, False, error=str(exc) or repr(exc))
            await self.chan.send(reply)

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op, version = req["op"], req["version"]
        if op == "prepare":
            self.drop()               # a newer prepare replaces a stale one
            # The supervisor validated it (an xDS config may have no listener yet).
            cfg = parse_config(req["text"], source=req.get("source", "<config>"), min_listeners=0)
            self.staged = await self.plane.prepare(cfg, version)
            return answer(req, version=version)
        if op == "commit":
            if self.staged is None or self.staged.version != version:
                raise RuntimeError(f"version {version} is not prepared")
            staged, self.staged = self.staged, None
            await self.plane.commit(staged)
            log.info("worker %d: serving config version %d", self.worker_id, version)
            return answer(req, version=version)
        # abort: only the version it names (a stale abort leaves a newer one)
        if self.staged is not None and self.staged.version == version:
            self.drop()
        return answer(req, version=version)

    def drop(self) -> None:
        if self.staged is not None:
            self.plane.abort(self.staged)
            self.staged = None


async def serve(fd: int, worker_id: int) -> int:
    sock = socket.socket(fileno=fd)
    chan = await Channel.open(sock)
    msg = await chan.recv()
    if msg is None or msg.get("op") != "config":
        log.error("worker %d: no config from the supervisor", worker_id)
        return 2
    try:
        if msg.get("ticket_secret"):
            # Before any SSLContext: resumption works whichever worker accepts.
            tickets.set_secret(bytes.fromhex(msg["ticket_secret"]))
        config = parse_config(msg["text"], source=msg.get("source", "<config>"), min_listeners=0)
        # Health checks run once per process, in the supervisor: the worker
        # applies the changes it is sent ("health").
        # So do discovery's DNS and files: endpoint sets come as "endpoints".
        # And certificate sources: TLS material comes as "secrets".
        plane = DataPlane(config, reuse_port=True, owns_loop=True, version=msg.get("version", 1),
                          health_checks=False, discovery=False, certificates=False)
        plane.secrets = dict(msg.get("secrets") or {})
        for name, eps in (msg.get("endpoints") or {}).items():
            plane.discovered[name] = tuple((h, p, w, ok) for h, p, w, ok in eps)
        await plane.start()
        if msg.get("run_as"):
            # Bound: now drop root for good (the supervisor keeps it).
            name, uid, gid = msg["run_as"]
            privileges.drop_privileges(privileges.Identity(name, uid, gid))
    except (ConfigError, OSError) as exc:
        await chan.send(answer(msg, False, error=str(exc)))
        log.error("worker %d: cannot start: %s", worker_id, exc)
        return 1
    # What exists now lives as long as the process: keep it out of the
    # cyclic collector's scans.
    gc.collect()
    gc.freeze()
    await chan.send(answer(msg, pid=os.getpid(), version=plane.version,
                           addresses={k: list(v) for k, v in plane.addresses.items()}))

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # SIGHUP goes to the supervisor, which validates once and tells us.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    applier = Applier(chan, plane, worker_id)

    async def control() -> None:
        # Stats are answered at once, even while a prepare compiles.
        while True:
            req = await chan.recv()
            if req is None:          # the supervisor is gone: shut down
                stopping.set()
                return
            op = req.get("op")
            if op in ("prepare", "commit", "abort"):
                applier.queue.put_nowait(req)
            elif op == "health":
                plane.set_health([tuple(c) for c in req["changes"]])
                await chan.send(answer(req))
            elif op == "endpoints":
                plane.set_endpoints(req["clusters"])
                await chan.send(answer(req))
            elif op == "secrets":
                plane.set_secrets(req["secrets"])
                await chan.send(answer(req))
            elif op == "stats":
                await chan.send(answer(req, stats=plane.stats(), version=plane.version))
            elif op == "clusters":
                await chan.send(answer(req, clusters=plane.worker_clusters()))
            elif op == "reset_counters":
                plane.reset_counters()
                await chan.send(answer(req))
            elif op == "drain_listeners":
                plane.stop_listening(bool(req.get("graceful")))
                await chan.send(answer(req))
            elif op == "logging":
                apply_log_levels({k: int(v) for k, v in req["levels"].items()})
                await chan.send(answer(req))
            else:
                await chan.send(answer(req, False, error=f"unknown op {op!r}"))

    tasks = [asyncio.create_task(control()), asyncio.create_task(applier.run())]
    await stopping.wait()
    for t in tasks:
        t.cancel()
    applier.drop()
    log.info("worker %d draining", worker_id)
    await plane.drain()
    chan.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fastmesh-worker")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--id", type=int, default=0)
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s worker[{args.id}] %(levelname)s %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(serve(args.fd, args.id))
    return uvloop.run(serve(args.fd, args.id))


if __name__ == "__main__":
    sys.exit(main())
