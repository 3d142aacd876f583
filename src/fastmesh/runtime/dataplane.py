"""One data plane inside one event loop: listeners, a Worker and its config.

This is the glue between the control side (a validated ``Config``) and the
compiled data side (``fastmesh._core.Worker``): it binds listen sockets,
compiles snapshots, switches to a new config in two phases (``prepare`` does
all that can fail, ``commit`` switches, ``abort`` undoes a prepare) and drains
on shutdown. A worker
process runs exactly one; the embedding API (``fastmesh.Proxy``) runs one in
the application's loop.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
from typing import Any

from fastmesh import _core
from fastmesh.admin.clusters import merge as merge_clusters
from fastmesh.admin.clusters import worker_clusters
from fastmesh.control import certs as _certs
from fastmesh.control import tls as _tls
from fastmesh.control.compile import build_snapshot
from fastmesh.control.config import Config, ListenerConfig
from fastmesh.control.discovery import Discovery, Table, with_endpoints
from fastmesh.control.health import Change, HealthChecker
from fastmesh.security import tickets

log = logging.getLogger("fastmesh.dataplane")

# The flag active health checking owns on an Endpoint (core_endpoint.pxd).
_FAILED_ACTIVE_HC = _core.HEALTH_FLAGS["failed_active_hc"]
# The flag a discovery source's health status owns (EDS: UNHEALTHY, DRAINING, TIMEOUT).
_FAILED_EDS_HEALTH = _core.HEALTH_FLAGS["failed_eds_health"]

Wire = tuple[str, int, int, bool]     # a discovered endpoint: host, port, weight, healthy

LISTEN_BACKLOG = 4096
# An endpoint update at least this large freezes the collector's objects
# (set_endpoints).
FREEZE_AT = 1000


def bind_socket(address: str, port: int, reuse_port: bool, name: str | None = None) -> socket.socket:
    """A listening TCP socket; with reuse_port several processes share the port
    and the kernel spreads connections across them.

    A failure raises OSError with the same errno and a one-line message naming
    the listener and its address ("listener 'ingress' 0.0.0.0:10000: address
    already in use"), the line a user needs to fix the config.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((address, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        what = f"listener {name!r}" if name is not None else "listener"
        raise OSError(exc.errno, f"{what} {format_hostport(address, port)}: "
                      f"{(exc.strerror or str(exc)).lower()}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def format_hostport(address: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class _Listener:
    __slots__ = ("config", "sock", "server", "address", "paused")

    def __init__(self, config: ListenerConfig, sock: socket.socket, server: asyncio.AbstractServer):
        self.config = config
        self.sock = sock
        self.server = server
        self.address = sock.getsockname()[:2]
        # While the overload protection stopped accepting: a duplicate of
        # the listening socket, which keeps it (and its backlog) open after
        # the server closed the original.
        self.paused: socket.socket | None = None

    def close_paused(self) -> None:
        if self.paused is not None:
            self.paused.close()
            self.paused = None


class Staged:
    """A config made ready to serve but not serving: its snapshot compiled and
    the sockets of its added/moved listeners bound. `DataPlane.commit` switches
    to it, `DataPlane.abort` closes its sockets."""

    __slots__ = ("config", "version", "base", "snapshot", "socks", "moved")

    def __init__(self, config: Config, version: int, base: int, snapshot: _core.Snapshot,
                 socks: dict[str, socket.socket], moved: list[str]) -> None:
        self.config = config
        self.version = version
        self.base = base          # the version it was prepared against
        self.snapshot = snapshot
        self.socks = socks
        self.moved = moved


async def compile_snapshot(config: Config, version: int,
                           extra_filters: dict[str, list[_core.HttpFilter]] | None = None
                           ) -> _core.Snapshot:
    """`build_snapshot` off the event loop: a large config (thousands of
    endpoints, routes, regexes) takes a while to compile, and build_snapshot
    only creates new objects and touches nothing the running Worker uses, so
    it is safe to run beside the loop. Endpoint names are never resolved
    here: DNS is discovery's (control/discovery.py)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, build_snapshot, config, version, extra_filters)


class DataPlane:
    """Listeners + Worker for one config, in the current event loop."""

    def __init__(self, config: Config, *, reuse_port: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None,
                 owns_loop: bool = False, version: int = 1,
                 health_checks: bool = True, discovery: bool = True,
                 certificates: bool = True) -> None:
        self.config = config
        self.reuse_port = reuse_port
        self.loop = loop
        # Batching under load sleeps in the loop: only where the loop is ours.
        self.owns_loop = owns_loop
        self.worker: _core.Worker | None = None
        self.listeners: dict[str, _Listener] = {}
        self.version = version    # of the config being served (1 = the first)
        self.listening_stopped = False   # admin /drain_listeners
        # Filter objects embedders added (add_filter), by listener: they go
        # into every snapshot after the listener's configured http_filters.
        self.extra_filters: dict[str, list[_core.HttpFilter]] = {}
        # Active health: what the checker said, by (cluster, host, port). An
        # endpoint of a checked cluster that is not in it is unhealthy
        # (Envoy: until its first check passes).
        self.health: dict[tuple[str, str, int], bool] = {}
        # The checker runs here when this process owns the config (single
        # process, embedded); a supervisor's worker gets its changes sent.
        self.checker: HealthChecker | None = (
            HealthChecker(self.set_health) if health_checks else None)
        # Discovered endpoints of dynamic clusters (strict_dns, logical_dns,
        # eds) by cluster: from the Discovery running here when this process
        # owns the config, else sent by the supervisor (set_endpoints).
        self.discovered: dict[str, tuple[Wire, ...]] = {}
        base = os.path.dirname(config.source) if os.path.isabs(config.source) else None
        self.discovery: Discovery | None = (
            Discovery(self._discovered, base) if discovery else None)
        # TLS material of listeners and clusters ("listener:<name>" ->
        # material; control/certs.py): from the CertManager running here when
        # this process owns the config, else sent by the supervisor.
        self.secrets: _certs.Table = {}
        self.cert_manager: _certs.CertManager | None = (
            _certs.CertManager(self.set_secrets, base)
            if certificates and any(lc.tls for lc in config.listeners)
            or certificates and any(cc.tls for cc in config.clusters) else None)
        self._certificates = certificates
        # The next change of derived session ticket keys (security/tickets.py).
        self.ticket_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Compile the config, bind every listener and start serving."""
        self.loop = self.loop or asyncio.get_running_loop()
        _core.seed_random(os.urandom(16))
        if self.cert_manager is not None:
            await self.cert_manager.update(self.config)
        snapshot = await compile_snapshot(self.effective(self.config), self.version,
                                          self.extra_filters)
        self.worker = _core.Worker(self.loop)
        self.worker.apply(snapshot)
        self.worker.set_accept_control(self._accept_control)
        self._apply_health()
        self._set_batching(self.config)
        self._set_istio(self.config)
        try:
            for lc in self.config.listeners:
                if lc.bind_to_port:
                    await self._open(lc)
                else:
                    # Reached only by a use_original_dst hand-off; its stats
                    # show from the start.
                    self.worker.listener_state(lc.name)
        except BaseException:
            await self._close_listeners(list(self.listeners))
            raise
        if self.discovery is not None:
            await self.discovery.update(self.config)
        if self.checker is not None:
            await self.checker.update(self.effective(self.config))
        self._schedule_ticket_rotation()

    def _schedule_ticket_rotation(self) -> None:
        # Derived session ticket keys change at epoch boundaries; the change
        # is made on this loop, the thread that runs the handshakes.
        wait = tickets.next_rotation()
        if wait is None or self.ticket_timer is not None:
            return

        def fire() -> None:
            self.ticket_timer = None
            tickets.rotate()
            self._schedule_ticket_rotation()
        self.ticket_timer = self.loop.call_later(wait + 0.001, fire)

    def effective(self, config: Config) -> Config:
        """`config` with its dynamic clusters' endpoints as discovered so far
        and its TLS material as the certificate sources last gave it."""
        return _certs.with_secrets(
            with_endpoints(config, {name: [(h, p, w) for h, p, w, *_ in wire]
                                    for name, wire in self.discovered.items()}),
            self.secrets)

    def certs(self) -> dict[str, Any]:
        """The admin's /certs: the certificates in use (none: no TLS)."""
        if self.cert_manager is None:
            return {"certificates": []}
        return self.cert_manager.certs()

    def set_secrets(self, changes: _certs.Table) -> None:
        """New TLS material (certificate rotation): each listener's and
        cluster's new SSLContexts are swapped into its live TlsServerConf /
        TlsClientConf. New handshakes use them; established connections
        keep theirs."""
        self.secrets.update(changes)
        if self.worker is None:
            return
        for key, material in changes.items():
            kind, name = key.split(":", 1)
            try:
                if kind == "listener":
                    lc = next((lc for lc in self.config.listeners if lc.name == name), None)
                    if lc is None or lc.tls is None or name not in self.listeners:
                        continue
                    conf = self.worker.listener_state(name).conf.tls
                    if conf is not None:
                        conf.set_certificates(_tls.build_server_contexts(
                            _certs.with_material(lc.tls, material), name))
                else:
                    cc = next((cc for cc in self.config.clusters if cc.name == name), None)
                    state = self._state(name)
                    if cc is None or cc.tls is None or state is None or state.conf.tls is None:
                        continue
                    state.conf.tls.set_context(_tls.build_client_context(
                        _certs.with_material(cc.tls, material)))
            except (OSError, ValueError) as exc:   # ssl.SSLError is an OSError
                # The control side checked the same material: cannot happen
                # in normal operation. The old contexts keep serving.
                log.error("%s %s: new certificates not applied: %s", kind, name, exc)

    def _discovered(self, table: Table) -> None:
        # Discovery running in this process (single process, embedded).
        # A DiscoveredEndpoint is a named tuple starting (host, port,
        # weight, healthy): what set_endpoints takes, no conversion.
        self.set_endpoints({name: list(eps) for name, eps in table.items()})

    def set_endpoints(self, changes: dict[str, list[list[Any]]]) -> None:
        """New endpoint sets of dynamic clusters ([host, port, weight,
        healthy] each), swapped on the live ClusterStates: routes untouched,
        balancer state kept where the set allows, pools of removed endpoints
        drained, in-flight requests finish. Endpoints the source calls
        unhealthy get EP_FAILED_EDS_HEALTH (no new requests).

        No per-endpoint Python work here: the set is kept as received and
        ClusterState.set_endpoints converts and flags it in one C pass (a
        10,000-endpoint update must not stall the loop)."""
        checked = False
        for name, eps in changes.items():
            self.discovered[name] = tuple(eps)
            state = self._state(name)
            if state is None:
                continue
            state.set_endpoints(eps)
            checked |= self._apply_health_to(name, state)
        if sum(len(eps) for eps in changes.values()) >= FREEZE_AT:
            # Thousands of new long-lived objects (endpoints, their keys, the
            # parsed set) would make the cyclic collector's next full pass
            # scan all of them on this loop: 40-70 ms at 10,000 endpoints,
            # the only stall of a large update. Frozen, they are left out of
            # its passes (they are still freed by reference counting when
            # they go; what a worker holds at start is frozen the same way).
            gc.freeze()
        if checked and self.checker is not None and self.loop is not None:
            # Checks follow the discovered endpoints (only where a cluster
            # that changed is checked: effective() copies the config).
            self.loop.create_task(self.checker.update(self.effective(self.config)))

    def _state(self, name: str) -> Any:
        if self.worker is None:
            return None
        try:
            return self.worker.cluster(name)
        except KeyError:
            return None

    def set_health(self, changes: list[Change]) -> None:
        """Active health check results: set or clear each endpoint's
        EP_FAILED_ACTIVE_HC by address (indices differ between endpoint
        sets). Endpoints the worker does not have are ignored."""
        if self.worker is None:
            return
        for cluster, host, port, healthy in changes:
            try:
                state = self.worker.cluster(cluster)
            except KeyError:
                continue
            if state is None:
                continue
            for i, ep in enumerate(state.endpoints):
                if ep.host == host and ep.port == port:
                    self.health[(cluster, host, port)] = bool(healthy)
                    state.set_health(i, _FAILED_ACTIVE_HC, not healthy)
                    break

    def _apply_health(self) -> None:
        # After every apply: the flag follows the table for checked clusters
        # (unknown = unhealthy), is clear elsewhere; entries for endpoints
        # that left are forgotten, so one that comes back starts unhealthy.
        assert self.worker is not None
        names = {c.name for c in self.config.clusters if c.health_checks}
        self.health = {k: v for k, v in self.health.items() if k[0] in names}
        for cfg in self.config.clusters:
            state = self._state(cfg.name)
            if state is not None:
                self._apply_health_to(cfg.name, state)

    def _apply_health_to(self, name: str, state: Any) -> bool:
        # One cluster's EP_FAILED_ACTIVE_HC after its set changed; whether
        # the cluster is health checked. Unchecked: one C pass clears it.
        cfg = next((c for c in self.config.clusters if c.name == name), None)
        if cfg is None or not cfg.health_checks:
            state.clear_health_flag(_FAILED_ACTIVE_HC)
            return False
        keep = {k: v for k, v in self.health.items() if k[0] != name}
        for i, ep in enumerate(state.endpoints):
            key = (name, ep.host, ep.port)
            healthy = self.health.get(key, False)
            keep[key] = healthy
            state.set_health(i, _FAILED_ACTIVE_HC, not healthy)
        self.health = keep
        return True

    def _set_istio(self, config: Config) -> None:
        # Istio's standard metrics are counted per request only when asked for.
        if self.worker is not None:
            self.worker.istio = config.admin is not None and config.admin.metrics.istio

    def _set_batching(self, config: Config) -> None:
        assert self.worker is not None
        self.worker.set_batch_window(config.batch_window if self.owns_loop else 0.0)
        om = config.overload_manager
        self.worker.set_overload(om.global_downstream_max_connections,
                                 om.file_descriptor_threshold)

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Bound (host, port) per listener name (useful with port 0)."""
        return {name: lst.address for name, lst in self.listeners.items()}

    async def _open(self, lc: ListenerConfig, sock: socket.socket | None = None) -> None:
        assert self.worker is not None and self.loop is not None
        if sock is None:
            sock = bind_socket(lc.address, lc.port, self.reuse_port, lc.name)
        try:
            server = await self.loop.create_server(
                self.worker.listener_state(lc.name), sock=sock, backlog=LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        self.listeners[lc.name] = _Listener(lc, sock, server)
        log.info("listener %s (%s) on %s:%d", lc.name, lc.protocol, *self.listeners[lc.name].address)

    def _accept_control(self, accepting: bool) -> None:
        """The overload protection (core_overload.pxi) stops or resumes
        accepting. Stopping closes the servers but keeps each listening
        socket open (a duplicate), so connections wait in its backlog."""
        if self.listening_stopped:
            return              # /drain_listeners: they stay closed
        for name, lst in list(self.listeners.items()):
            if accepting:
                if lst.paused is not None:
                    self.loop.create_task(self._resume_listener(name, lst))
            elif lst.paused is None:
                lst.paused = lst.sock.dup()
                lst.server.close()

    async def _resume_listener(self, name: str, lst: _Listener) -> None:
        sock, lst.paused = lst.paused, None
        if sock is None:
            return
        if self.listeners.get(name) is not lst or self.worker is None or self.worker.draining:
            sock.close()
            return
        try:
            lst.server = await self.loop.create_server(
                self.worker.listener_state(name), sock=sock, backlog=LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            log.error("listener %s: cannot accept again after overload: %s", name, exc)
            return
        lst.sock = sock

    async def _close_listeners(self, names: list[str]) -> None:
        for name in names:
            lst = self.listeners.pop(name, None)
            if lst is None:
                continue
            lst.server.close()
            lst.close_paused()
            if self.worker is not None:
                self.worker.drop_listener(name)

    async def reload(self, config: Config) -> None:
        """Serve `config` from now on without dropping a connection: prepare
        then commit. If preparing fails nothing changes."""
        await self.commit(await self.prepare(config, self.version + 1))

    async def add_filter(self, listener: str, flt: _core.HttpFilter) -> None:
        """Append a filter object to an HTTP listener's chain (before the
        router), in this and every later snapshot; applied as a new version."""
        if self.worker is None:
            raise RuntimeError("add_filter() needs a started proxy (await proxy.start() first)")
        if not isinstance(flt, _core.HttpFilter):
            raise TypeError(f"{type(flt).__name__} is not a fastmesh.HttpFilter")
        lc = next((lc for lc in self.config.listeners if lc.name == listener), None)
        if lc is None:
            raise KeyError(f"no listener {listener!r}")
        if lc.protocol != "http":
            raise ValueError(f"listener {listener!r} is {lc.protocol}, not http")
        self.extra_filters.setdefault(listener, []).append(flt)
        try:
            await self.reload(self.config)
        except BaseException:
            self.extra_filters[listener].pop()
            raise

    async def prepare(self, config: Config, version: int) -> Staged:
        """Do everything that can fail before switching to `config`: compile
        its snapshot (off the loop) and bind its added or moved listeners.
        Nothing serves differently until `commit`; `abort` undoes this.

        Listeners whose address is unchanged keep their socket (so no
        connection is refused); removed ones stop accepting at commit."""
        assert self.worker is not None
        base = self.version
        if self._certificates and self.cert_manager is None and (
                any(lc.tls for lc in config.listeners) or any(cc.tls for cc in config.clusters)):
            base_dir = os.path.dirname(config.source) if os.path.isabs(config.source) else None
            self.cert_manager = _certs.CertManager(self.set_secrets, base_dir)
        if self.cert_manager is not None:
            # New TLS listeners and clusters get their material before compiling.
            await self.cert_manager.update(config)
        snapshot = await compile_snapshot(self.effective(config), version, self.extra_filters)
        new = {lc.name: lc for lc in config.listeners if lc.bind_to_port}
        moved = [name for name, lst in self.listeners.items()
                 if name not in new
                 or (new[name].address, new[name].port) != (lst.config.address, lst.config.port)]
        to_open = [lc for name, lc in new.items() if name not in self.listeners or name in moved]
        socks: dict[str, socket.socket] = {}
        try:
            for lc in to_open:
                socks[lc.name] = bind_socket(lc.address, lc.port, self.reuse_port, lc.name)
        except BaseException:
            for s in socks.values():
                s.close()
            raise
        return Staged(config, version, base, snapshot, socks, moved)

    async def commit(self, staged: Staged) -> None:
        """Switch to a prepared config. Nothing here fails in normal operation
        (the sockets are bound already); a `staged` prepared against another
        version than the one serving is refused."""
        assert self.worker is not None
        if staged.base != self.version:
            self.abort(staged)
            raise RuntimeError(f"version {staged.version} was prepared against version "
                               f"{staged.base}, but version {self.version} is serving")
        self.worker.apply(staged.snapshot)
        self.config = staged.config
        self._apply_health()
        self._set_batching(staged.config)
        self._set_istio(staged.config)
        self.version = staged.version
        await self._close_listeners(staged.moved)
        try:
            for lc in staged.config.listeners:
                if not lc.bind_to_port:
                    self.worker.listener_state(lc.name)
                    continue
                sock = staged.socks.pop(lc.name, None)
                if sock is not None:
                    await self._open(lc, sock)
                else:
                    self.listeners[lc.name].config = lc
        finally:
            self.abort(staged)    # sockets left over if an _open failed
        if self.discovery is not None:
            await self.discovery.update(staged.config)
        if self.checker is not None:
            await self.checker.update(self.effective(staged.config))
        self._schedule_ticket_rotation()

    def abort(self, staged: Staged) -> None:
        """Drop a prepared config: close the sockets it bound."""
        for sock in staged.socks.values():
            sock.close()
        staged.socks.clear()

    async def drain(self, timeout: float | None = None) -> None:
        """Stop accepting, let requests in flight finish (responses carry
        Connection: close), then close what is left after `timeout`."""
        if self.checker is not None:
            await self.checker.stop()
        if self.discovery is not None:
            await self.discovery.stop()
        if self.cert_manager is not None:
            await self.cert_manager.stop()
        if self.ticket_timer is not None:
            self.ticket_timer.cancel()
            self.ticket_timer = None
        if self.worker is None:
            return
        timeout = self.config.drain_timeout if timeout is None else timeout
        for lst in self.listeners.values():
            lst.server.close()
            lst.close_paused()
        self.worker.start_drain()
        deadline = self.loop.time() + timeout
        while self.worker.connection_count() and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        left = self.worker.connection_count()
        if left:
            log.warning("drain timeout: closing %d connections", left)
        self.worker.close_all()
        self.listeners.clear()

    def reset_counters(self) -> None:
        """Admin /reset_counters: this worker's counters and histograms to 0
        (gauges kept, as Envoy)."""
        if self.worker is not None:
            self.worker.registry.reset_counters()

    def stop_listening(self, graceful: bool) -> None:
        """Admin /drain_listeners: stop accepting on every listener (the
        connections open keep being served); `graceful` also asks them to
        close after their current request, as a drain does."""
        self.listening_stopped = True
        for lst in self.listeners.values():
            lst.server.close()
            lst.close_paused()
        if graceful and self.worker is not None:
            self.worker.start_drain()

    def worker_clusters(self) -> dict[str, list[list[Any]]]:
        """This worker's endpoints and their counters (admin /clusters; a
        supervisor merges its workers' answers)."""
        return worker_clusters(self.worker) if self.worker is not None else {}

    async def clusters_status(self) -> list[dict[str, Any]]:
        """Admin /clusters when this process owns the config (single
        process, embedded): this worker's answer with discovery's metadata."""
        table = self.discovery.table if self.discovery is not None else {}
        return merge_clusters([self.worker_clusters()], self.config, table)

    def stats(self) -> dict[str, Any]:
        """The worker's stats registry snapshot: plain, JSON-able data
        (docs/stats.md, which also lists what is counted)."""
        if self.worker is None:
            return {"blocks": [], "histograms": []}
        snap = self.worker.stats()
        if self.checker is not None:
            # Process-level health check counters, in the clusters' blocks
            # once merged (admin/metrics.merge sums equal blocks).
            snap["blocks"] = list(snap.get("blocks", ())) + self.checker.blocks()
        if self.discovery is not None:
            snap["blocks"] = list(snap.get("blocks", ())) + self.discovery.blocks()
        if self.cert_manager is not None:
            snap["blocks"] = list(snap.get("blocks", ())) + self.cert_manager.blocks()
        return snap
