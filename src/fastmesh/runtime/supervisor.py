"""The supervisor: starts N worker processes and keeps them running.

Workers share the listen ports with SO_REUSEPORT, so the kernel spreads
connections across them and the supervisor never touches traffic. It
restarts a worker that crashes (with backoff), validates the config once on
SIGHUP and applies it to every worker in two phases (a bad file, or a config
that any worker fails to prepare, is logged and the running config keeps
serving everywhere: docs/design.md, "Versioned, two-phase apply"), drains
all workers on SIGTERM/SIGINT, and serves the admin listener with the
workers' stats summed.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from fastmesh.admin import metrics
from fastmesh.admin.clusters import merge as merge_clusters
from fastmesh.admin.ops import AdminOps
from fastmesh.admin.server import AdminServer
from fastmesh.control.config import Config, ConfigError, parse_config
from fastmesh.control.certs import CertManager
from fastmesh.control.certs import Table as SecretTable
from fastmesh.control.discovery import Discovery, Table
from fastmesh.control.health import Change, HealthChecker
from fastmesh.runtime import privileges
from fastmesh.security import tickets
from fastmesh.runtime.channel import Channel

log = logging.getLogger("fastmesh.supervisor")

RESTART_BACKOFF_MAX = 5.0
START_TIMEOUT = 30.0      # a worker's first config: imports, compile, bind
PREPARE_TIMEOUT = 30.0    # compiling may resolve hostnames
COMMIT_TIMEOUT = 10.0


class WorkerHandle:
    """The supervisor's view of one worker process.

    One reader task per channel reads every message the worker sends and
    resolves the future of the request whose id it echoes: answers are paired
    by id, never by order, so an answer arriving after its request timed out
    is dropped rather than taken for the answer to the next request.
    """

    def __init__(self, wid: int) -> None:
        self.id = wid
        self.proc: asyncio.subprocess.Process | None = None
        self.chan: Channel | None = None
        self.ready = False
        self.restarts = 0
        self.started_at = 0.0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    def attach(self, chan: Channel) -> None:
        """Start talking to a (new) worker over `chan`."""
        self.detach()
        self.chan = chan
        self._reader = asyncio.create_task(self._read(chan))

    def detach(self) -> None:
        """Close the channel; requests waiting on it fail at once."""
        self.ready = False
        if self.chan is not None:
            self.chan.close()
            self.chan = None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        self._fail_pending("the worker's channel closed")

    async def _read(self, chan: Channel) -> None:
        try:
            while True:
                msg = await chan.recv()
                if msg is None:
                    break
                rid = msg.get("id")
                if rid is None:
                    self._unsolicited(msg)
                    continue
                fut = self._pending.pop(rid, None)
                if fut is None:
                    log.debug("worker %d: late answer to request %s (%s) dropped",
                              self.id, rid, msg.get("op"))
                elif not fut.done():
                    fut.set_result(msg)
        except (ConnectionError, OSError, ValueError) as exc:
            log.error("worker %d: control channel failed: %s", self.id, exc)
        finally:
            if self.chan is chan:
                self._fail_pending("the worker's channel closed")

    def _unsolicited(self, msg: dict[str, Any]) -> None:
        # Workers send none today; one would be an event, not an answer.
        log.warning("worker %d: unexpected message %r", self.id, msg.get("op"))

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_result({"ok": False, "error": why})

    async def call(self, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait for its answer. A failure (no channel,
        timeout, closed channel) is an answer too: ``ok`` false and ``error``."""
        chan = self.chan
        if chan is None:
            return {"ok": False, "error": "not running"}
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await chan.send({**msg, "id": rid})
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return {"ok": False, "error": f"no answer to {msg['op']} within {timeout:g}s"}
        except (ConnectionError, OSError) as exc:
            return {"ok": False, "error": f"cannot send {msg['op']}: {exc}"}
        finally:
            self._pending.pop(rid, None)

    async def request(self, msg: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """`call`, once the worker has reported ready."""
        if not self.ready:
            return {"ok": False, "error": "not ready"}
        return await self.call(msg, timeout)


class Supervisor:
    """Runs `workers` worker processes on one config until told to stop."""

    def __init__(self, config_text: str, source: str, *, path: str | None,
                 workers: int, log_level: str = "info", user: str | None = None,
                 group: str | None = None) -> None:
        self.config: Config = parse_config(config_text, source=source)
        # Workers drop root to this identity once bound; the supervisor
        # keeps root to (re)start them (runtime/privileges.py).
        self.run_as = privileges.resolve(user or self.config.user,
                                         group if user else (group or self.config.group))
        self.config_text = config_text
        self.source = source
        # The version of the committed config: 1 for the first, +1 per
        # successful reload. Workers serve it; a restarted worker gets it.
        self.version = 1
        self.last_reload_error: str | None = None
        # Held by a reload and by a restarted worker's handshake, so a worker
        # never starts on a config that is being replaced under it.
        self._apply_lock = asyncio.Lock()
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
        self.xds: Any = None             # the xDS source feeding it (runtime/xds.py)
        self.addresses: dict[str, list[Any]] = {}
        # Active health checks run here, once for all workers; each change
        # goes to every worker, a (re)started worker gets the whole table.
        self.health = HealthChecker(self._send_health)
        self._sends: set[asyncio.Task[Any]] = set()
        # So does discovery (DNS, endpoint files): each new endpoint set goes
        # to every worker, a (re)started worker gets them all.
        base = os.path.dirname(path) if path else None
        self.discovery = Discovery(self._send_endpoints, base)
        # And certificate sources (files, the built-in CA): new TLS material
        # goes to every worker, a (re)started worker gets all of it.
        self.certs = CertManager(self._send_secrets, base)

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start the workers (each must report ready) and the admin listener."""
        loop = asyncio.get_running_loop()
        # Stop signals are ours before any worker serves: one that arrives
        # while the others start must drain, not kill this process outright.
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        privileges.warn_if_root(self.run_as)
        await self.certs.update(self.config)    # the workers start with the material
        results = await asyncio.gather(*(self._spawn(w) for w in self.workers))
        if not all(results):
            await self.stop()
            raise RuntimeError("workers failed to start (see the log above)")
        for w in self.workers:
            self._watchers.append(asyncio.create_task(self._watch(w)))
        await self.discovery.update(self.config)
        await self.health.update(self.discovery.effective(self.config))
        if self.config.admin is not None:
            self.admin = AdminServer(self.config.admin.address, self.config.admin.port,
                                     stats=self.stats_snapshot, config=lambda: self.config,
                                     ready=self.is_ready, version=lambda: self.version,
                                     clusters=self.clusters_status,
                                     certs=self.certs.certs, ops=self._admin_ops(),
                                     allow_remote=self.config.admin.allow_remote_changes,
                                     xds_configs=self._xds_configs())
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
        await self.health.stop()
        await self.discovery.stop()
        await self.certs.stop()
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
            w.detach()
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
        # Stats and apply requests only go to the worker once it is ready.
        w.attach(await Channel.open(parent))
        run_as = self.run_as
        msg = await w.call({"op": "config", "version": self.version,
                            "text": self.config_text, "source": self.source,
                            "run_as": None if run_as is None else
                            [run_as.user, run_as.uid, run_as.gid],
                            # discovered endpoints: a restarted worker starts with them
                            "endpoints": {name: [e.wire() for e in eps]
                                          for name, eps in self.discovery.table.items()},
                            # TLS material: the same certificates in every worker
                            "secrets": self.certs.table,
                            # and the same session ticket keys (security/tickets.py)
                            "ticket_secret": tickets.secret().hex()},
                           START_TIMEOUT)
        if not msg.get("ok"):
            log.error("worker %d failed to start: %s", w.id, msg.get("error", "no answer"))
            w.detach()
            if w.proc.returncode is None:
                w.proc.kill()
            await w.proc.wait()
            return False
        w.ready = True
        self.addresses = msg.get("addresses", {})
        if self.discovery.table:
            self._send_endpoints(self.discovery.table, [w])
        if self.certs.table:
            # Material rotated while it started (it was not ready for the broadcast).
            self._send_secrets(self.certs.table, [w])
        table = self.health.table()
        if table:
            self._send_health(table, [w])
        return True

    def _send_health(self, changes: list[Change], workers: list[WorkerHandle] | None = None
                     ) -> None:
        self._broadcast({"op": "health", "changes": [list(c) for c in changes]}, workers)

    def _send_endpoints(self, table: Table, workers: list[WorkerHandle] | None = None) -> None:
        self._broadcast({"op": "endpoints", "clusters": {
            name: [e.wire() for e in eps] for name, eps in table.items()}}, workers)
        checked = {c.name for c in self.config.clusters if c.health_checks}
        if workers is None and checked.intersection(table):
            # Health checks follow the discovered endpoints (only a checked
            # cluster's change needs them: effective() copies the config,
            # 10,000 endpoints of Python objects).
            task = asyncio.ensure_future(self.health.update(self.discovery.effective(self.config)))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    def _send_secrets(self, table: SecretTable,
                      workers: list[WorkerHandle] | None = None) -> None:
        self._broadcast({"op": "secrets", "secrets": table}, workers)

    def _broadcast(self, msg: dict[str, Any], workers: list[WorkerHandle] | None = None) -> None:
        # Sent in order (a task starts writing before the next one is
        # made), answered by each worker; a worker that misses one because
        # it is restarting gets the whole table when it is ready again.
        for w in workers if workers is not None else self.workers:
            if w.ready:
                task = asyncio.ensure_future(self._send_to(w, msg))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)

    async def _send_to(self, w: WorkerHandle, msg: dict[str, Any]) -> None:
        answer = await w.request(msg, 5.0)
        if not answer.get("ok"):
            log.warning("worker %d: %s update not applied: %s", w.id, msg["op"],
                        answer.get("error"))

    async def _watch(self, w: WorkerHandle) -> None:
        """Restart the worker whenever it exits while we are not stopping."""
        backoff = 0.1
        while not self.stopping:
            assert w.proc is not None
            code = await w.proc.wait()
            w.detach()
            if self.stopping:
                return
            log.error("worker %d (pid %d) exited with %s: restarting", w.id, w.proc.pid, code)
            w.restarts += 1
            while not self.stopping:
                async with self._apply_lock:
                    ok = await self._spawn(w)
                if ok:
                    if time.monotonic() - w.started_at > 1.0:
                        backoff = 0.1
                    break
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX)

    # --- reload and stats ----------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the config file; on a valid file that every worker prepares
        every worker switches to it, otherwise the error is logged and nothing
        changes anywhere."""
        if self.path is None:
            log.warning("reload requested, but the config is embedded (no file to re-read)")
            return False
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            config = parse_config(text, source=self.path)
        except (ConfigError, OSError) as exc:
            self._reload_failed(str(exc))
            log.error("reload rejected, the running config keeps serving: %s", exc)
            return False
        return await self.apply(config, text, self.path)

    async def apply(self, config: Config, text: str, source: str) -> bool:
        """Two-phase apply of a validated config: every ready worker prepares
        it (compile, bind new listeners); only if all succeed do they commit,
        else all abort and the running version keeps serving everywhere."""
        async with self._apply_lock:
            version = self.version + 1
            # A worker not ready now starts later on whichever version is
            # committed by then (its handshake waits for this lock).
            workers = [w for w in self.workers if w.ready]
            # New TLS listeners and clusters get their material first.
            await self.certs.update(config)
            answers = await asyncio.gather(*(
                w.request({"op": "prepare", "version": version, "text": text, "source": source},
                          PREPARE_TIMEOUT)
                for w in workers))
            failed = [f"worker {w.id}: {a.get('error', 'no answer')}"
                      for w, a in zip(workers, answers) if not a.get("ok")]
            if failed:
                await asyncio.gather(*(w.request({"op": "abort", "version": version})
                                       for w in workers))
                self._reload_failed("; ".join(failed))
                log.error("reload of %s failed, every worker keeps serving version %d: %s",
                          source, self.version, "; ".join(failed))
                return False
            # Every worker holds the new config ready: from here it is the
            # committed one, the one a restarted worker gets.
            self.config, self.config_text, self.source = config, text, source
            self.version = version
            answers = await asyncio.gather(*(
                w.request({"op": "commit", "version": version}, COMMIT_TIMEOUT)
                for w in workers))
            for w, a in zip(workers, answers):
                if not a.get("ok") and w.proc is not None and w.proc.returncode is None:
                    # Cannot happen in normal operation. The worker may be
                    # half switched: restart it on the committed version.
                    log.error("worker %d failed to commit version %d (%s): restarting it",
                              w.id, version, a.get("error"))
                    try:
                        w.proc.kill()
                    except ProcessLookupError:
                        pass
            self.reloads_ok += 1
            self.last_reload_error = None
            log.info("config version %d from %s is serving", version, source)
        # After the commit: discovery follows the new clusters; new endpoints
        # are checked (workers hold them unhealthy meanwhile), removed ones
        # forgotten, others keep state.
        await self.discovery.update(config)
        await self.health.update(self.discovery.effective(config))
        return True

    def _xds_configs(self) -> Any:
        return self.xds.config_dump if self.xds is not None else None

    def _reload_failed(self, error: str) -> None:
        self.reloads_failed += 1
        self.last_reload_error = error

    async def stats_snapshot(self) -> dict[str, Any]:
        """The workers' stats summed, with the supervisor's own values (the
        admin's stats provider; docs/stats.md). A worker that does not
        answer is left out of the sums."""
        answers = await asyncio.gather(*(w.request({"op": "stats"}, 5.0) for w in self.workers))
        own = metrics.process_block(
            workers=self.nworkers,
            workers_ready=sum(1 for w in self.workers if w.ready),
            worker_restarts_total=sum(w.restarts for w in self.workers),
            config_reloads_ok=self.reloads_ok,
            config_reloads_failed=self.reloads_failed,
            config_version=self.version)          # the committed one
        merged = metrics.merge([a["stats"] for a in answers if a.get("ok")]
                               + [{"blocks": [own, *self.health.blocks(),
                                              *self.discovery.blocks(),
                                              *self.certs.blocks(),
                                              *(self.xds.blocks() if self.xds else ())]}])
        merged["info"] = {
            "worker_pids": [w.proc.pid for w in self.workers if w.proc is not None],
            "config_reload_error": self.last_reload_error,
            # each worker's own version (None if it did not answer)
            "worker_config_versions": [a.get("version") if a.get("ok") else None
                                       for a in answers],
        }
        return merged

    async def clusters_status(self) -> list[dict[str, Any]]:
        """Admin /clusters: the workers' endpoints and counters merged
        (summed per endpoint), with discovery's metadata. A worker that does
        not answer is left out."""
        answers = await asyncio.gather(*(w.request({"op": "clusters"}, 5.0)
                                         for w in self.workers))
        return merge_clusters([a["clusters"] for a in answers if a.get("ok")], self.config,
                              self.discovery.table)

    async def stats(self) -> dict[str, Any]:
        """The stats as one plain dict (what /stats?format=json shows)."""
        return metrics.summary(await self.stats_snapshot())

    # --- admin actions (admin/ops.py) -------------------------------------------

    def _admin_ops(self) -> AdminOps:
        async def to_all(msg: dict[str, Any]) -> None:
            answers = await asyncio.gather(*(w.request(msg, 5.0) for w in self.workers))
            for w, a in zip(self.workers, answers):
                if not a.get("ok"):
                    log.warning("worker %d: admin %s not applied: %s", w.id, msg["op"],
                                a.get("error"))

        async def reset_counters() -> None:
            await to_all({"op": "reset_counters"})
            self.reloads_ok = self.reloads_failed = 0
            for w in self.workers:
                w.restarts = 0

        async def workers() -> list[dict[str, Any]]:
            return [{"id": w.id, "pid": w.proc.pid if w.proc is not None else None,
                     "ready": w.ready, "restarts": w.restarts} for w in self.workers]

        return AdminOps(
            reset_counters=reset_counters,
            drain_listeners=lambda graceful: to_all({"op": "drain_listeners",
                                                     "graceful": graceful}),
            set_log_levels=lambda levels: to_all({"op": "logging", "levels": levels}),
            listeners=lambda: {k: tuple(v) for k, v in self.addresses.items()},
            options=lambda: {"config_path": self.path or "", "concurrency": self.nworkers,
                             "log_level": self.log_level,
                             "drain_time": f"{self.config.drain_timeout:g}s"},
            pids=lambda: [os.getpid()] + [w.proc.pid for w in self.workers
                                          if w.proc is not None and w.proc.returncode is None],
            workers=workers)
