"""A worker process: one uvloop event loop running one DataPlane.

Started by the supervisor as ``python -m fastmesh.runtime.worker --fd N``
with one end of a socketpair. It receives its config over that channel (the
supervisor's last good config, so a restarted worker never reads a file that
has since gone bad), binds its listeners with SO_REUSEPORT, and then answers
"reload" and "stats" requests. SIGTERM drains: stop accepting, finish the
requests in flight, close keep-alive connections, exit 0.
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

from fastmesh.control.config import ConfigError, parse_config
from fastmesh.runtime.channel import Channel
from fastmesh.runtime.dataplane import DataPlane

log = logging.getLogger("fastmesh.worker")


async def serve(fd: int, worker_id: int) -> int:
    sock = socket.socket(fileno=fd)
    chan = await Channel.open(sock)
    msg = await chan.recv()
    if msg is None or msg.get("op") != "config":
        log.error("worker %d: no config from the supervisor", worker_id)
        return 2
    try:
        config = parse_config(msg["text"], source=msg.get("source", "<config>"))
        plane = DataPlane(config, reuse_port=True, owns_loop=True)
        await plane.start()
    except (ConfigError, OSError) as exc:
        await chan.send({"op": "failed", "error": str(exc)})
        log.error("worker %d: cannot start: %s", worker_id, exc)
        return 1
    # What exists now lives as long as the process: keep it out of the
    # cyclic collector's scans.
    gc.collect()
    gc.freeze()
    await chan.send({"op": "ready", "pid": os.getpid(),
                     "addresses": {k: list(v) for k, v in plane.addresses.items()}})

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # SIGHUP goes to the supervisor, which validates once and tells us.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)

    async def control() -> None:
        while True:
            req = await chan.recv()
            if req is None:          # the supervisor is gone: shut down
                stopping.set()
                return
            op = req.get("op")
            if op == "reload":
                try:
                    cfg = parse_config(req["text"], source=req.get("source", "<config>"))
                    await plane.reload(cfg)
                    await chan.send({"op": "reloaded", "ok": True, "version": plane.version})
                except Exception as exc:   # the old config keeps serving
                    await chan.send({"op": "reloaded", "ok": False, "error": str(exc)})
            elif op == "stats":
                await chan.send({"op": "stats", "stats": plane.stats()})
            else:
                await chan.send({"op": "error", "error": f"unknown op {op!r}"})

    ctl = asyncio.create_task(control())
    await stopping.wait()
    ctl.cancel()
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
