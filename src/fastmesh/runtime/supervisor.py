"""The supervisor: starts N worker processes and keeps them running.

Workers share the listen ports with SO_REUSEPORT, so the kernel spreads
connections across them and the supervisor never touches traffic. It
restarts a worker that crashes (with backoff), validates the config once on
SIGHUP and hands the new text to every worker (a bad file is logged and the
running config keeps serving), drains all workers on SIGTERM/SIGINT, and
serves the admin listener with the workers' counters summed.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from fastmesh.admin.prometheus import merge_stats
from fastmesh.admin.server import AdminServer
from fastmesh.control.config import Config, ConfigError, parse_config
from fastmesh.runtime.channel import Channel

log = logging.getLogger("fastmesh.supervisor")

RESTART_BACKOFF_MAX = 5.0


class WorkerHandle:
    """The supervisor's view of one worker process."""

    def __init__(self, wid: int) -> None:
        self.id = wid
        self.proc: asyncio.subprocess.Process | None = None
        self.chan: Channel | None = None
        self.lock = asyncio.Lock()
        self.ready = False
        self.restarts = 0
        self.started_at = 0.0

    async def request(self, msg: dict[str, Any], timeout: float = 10.0) -> dict[str, Any] | None:
        """Send one control message and wait for its answer."""
        if self.chan is None or not self.ready:
            return None
        async with self.lock:
            try:
                await self.chan.send(msg)
                return await asyncio.wait_for(self.chan.recv(), timeout)
            except (ConnectionError, asyncio.TimeoutError, OSError):
                return None


class Supervisor:
    """Runs `workers` worker processes on one config until told to stop."""

    def __init__(self, config_text: str, source: str, *, path: str | None,
                 workers: int, log_level: str = "info") -> None:
        self.config: Config = parse_config(config_text, source=source)
        self.config_text = config_text
        self.source = source
        self.path = path
        self.nworkers = max(1, workers)
        self.log_level = log_level
        self.workers = [WorkerHandle(i) for i in range(self.nworkers)]
        self.stopping = False
        self.admin: AdminServer | None = None
        self.reloads_ok = 0
        self.reloads_failed = 0
        self._done = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._started = False
        self._stop_requested = False     # SIGTERM/SIGINT while starting
        self.addresses: dict[str, list[Any]] = {}

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start the workers (each must report ready) and the admin listener."""
        loop = asyncio.get_running_loop()
        # Stop signals are ours before any worker serves: one that arrives
        # while the others start must drain, not kill this process outright.
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        results = await asyncio.gather(*(self._spawn(w) for w in self.workers))
        if not all(results):
            await self.stop()
            raise RuntimeError("workers failed to start (see the log above)")
        for w in self.workers:
            self._watchers.append(asyncio.create_task(self._watch(w)))
        if self.config.admin is not None:
            self.admin = AdminServer(self.config.admin.address, self.config.admin.port,
                                     stats=self.stats, config=lambda: self.config,
                                     ready=self.is_ready)
            await self.admin.start()
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        log.info("fastmesh running: %d worker(s), pid %d", self.nworkers, os.getpid())
        self._started = True
        if self._stop_requested:
            asyncio.ensure_future(self.stop())

    def is_ready(self) -> bool:
        return not self.stopping and all(w.ready for w in self.workers)

    async def wait(self) -> int:
        await self._done.wait()
        return 0

    def _on_stop_signal(self) -> None:
        if not self._started:
            self._stop_requested = True      # start() stops once everything is up
        elif not self.stopping:
            asyncio.ensure_future(self.stop())

    async def stop(self) -> None:
        """Drain every worker (SIGTERM), wait for them, close the admin."""
        self.stopping = True
        for t in self._watchers:
            t.cancel()
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        grace = self.config.drain_timeout + 5.0
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), grace)
        except asyncio.TimeoutError:
            for p in procs:
                if p.returncode is None:
                    log.error("worker pid %d did not drain in %.1fs: killing", p.pid, grace)
                    p.kill()
        for w in self.workers:
            if w.chan is not None:
                w.chan.close()
        if self.admin is not None:
            await self.admin.stop()
        self._done.set()

    # --- workers -----------------------------------------------------------

    async def _spawn(self, w: WorkerHandle) -> bool:
        parent, child = socket.socketpair()
        try:
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fastmesh.runtime.worker",
                "--fd", str(child.fileno()), "--id", str(w.id), "--log-level", self.log_level,
                pass_fds=(child.fileno(),))
        finally:
            child.close()
        w.started_at = time.monotonic()
        # The handshake uses its own reference: stats/reload requests only see
        # the channel once the worker is ready.
        chan = await Channel.open(parent)
        await chan.send({"op": "config", "text": self.config_text, "source": self.source})
        try:
            msg = await asyncio.wait_for(chan.recv(), 30)
        except asyncio.TimeoutError:
            msg = None
        if msg is None or msg.get("op") != "ready":
            log.error("worker %d failed to start: %s", w.id,
                      (msg or {}).get("error", "no answer"))
            chan.close()
            if w.proc.returncode is None:
                w.proc.kill()
            await w.proc.wait()
            return False
        w.chan = chan
        w.ready = True
        self.addresses = msg.get("addresses", {})
        return True

    async def _watch(self, w: WorkerHandle) -> None:
        """Restart the worker whenever it exits while we are not stopping."""
        backoff = 0.1
        while not self.stopping:
            assert w.proc is not None
            code = await w.proc.wait()
            w.ready = False
            if w.chan is not None:
                w.chan.close()
                w.chan = None
            if self.stopping:
                return
            log.error("worker %d (pid %d) exited with %s: restarting", w.id, w.proc.pid, code)
            w.restarts += 1
            while not self.stopping:
                if await self._spawn(w):
                    if time.monotonic() - w.started_at > 1.0:
                        backoff = 0.1
                    break
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX)

    # --- reload and stats ----------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the config file; on a valid file every worker switches to
        it, on an invalid one the error is logged and nothing changes."""
        if self.path is None:
            log.warning("reload requested, but the config is embedded (no file to re-read)")
            return False
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            config = parse_config(text, source=self.path)
        except (ConfigError, OSError) as exc:
            self.reloads_failed += 1
            log.error("reload rejected, the running config keeps serving: %s", exc)
            return False
        answers = await asyncio.gather(*(
            w.request({"op": "reload", "text": text, "source": self.path})
            for w in self.workers))
        failed = [(w.id, (a or {}).get("error", "no answer"))
                  for w, a in zip(self.workers, answers) if not (a and a.get("ok"))]
        if failed:
            self.reloads_failed += 1
            for wid, err in failed:
                log.error("reload failed in worker %d: %s", wid, err)
            return False
        self.config, self.config_text = config, text
        self.reloads_ok += 1
        log.info("config reloaded from %s", self.path)
        return True

    async def stats(self) -> dict[str, Any]:
        answers = await asyncio.gather(*(w.request({"op": "stats"}, 5.0) for w in self.workers))
        merged = merge_stats([a["stats"] for a in answers if a and a.get("op") == "stats"])
        merged["workers"] = self.nworkers
        merged["workers_ready"] = sum(1 for w in self.workers if w.ready)
        merged["worker_restarts_total"] = sum(w.restarts for w in self.workers)
        merged["worker_pids"] = [w.proc.pid for w in self.workers if w.proc is not None]
        merged["config_reloads_ok"] = self.reloads_ok
        merged["config_reloads_failed"] = self.reloads_failed
        return merged
