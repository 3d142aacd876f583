"""One data plane inside one event loop: listeners, a Worker and its config.

This is the glue between the control side (a validated ``Config``) and the
compiled data side (``fastmesh._core.Worker``): it binds listen sockets,
compiles snapshots, swaps them on reload and drains on shutdown. A worker
process runs exactly one; the embedding API (``fastmesh.Proxy``) runs one in
the application's loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from fastmesh import _core
from fastmesh.control.compile import build_snapshot
from fastmesh.control.config import Config, ListenerConfig

log = logging.getLogger("fastmesh.dataplane")

LISTEN_BACKLOG = 4096


def bind_socket(address: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening TCP socket; with reuse_port several processes share the port
    and the kernel spreads connections across them."""
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
    except BaseException:
        sock.close()
        raise
    return sock


class _Listener:
    __slots__ = ("config", "sock", "server", "address")

    def __init__(self, config: ListenerConfig, sock: socket.socket, server: asyncio.AbstractServer):
        self.config = config
        self.sock = sock
        self.server = server
        self.address = sock.getsockname()[:2]


class DataPlane:
    """Listeners + Worker for one config, in the current event loop."""

    def __init__(self, config: Config, *, reuse_port: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None,
                 owns_loop: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port
        self.loop = loop
        # Batching under load sleeps in the loop: only where the loop is ours.
        self.owns_loop = owns_loop
        self.worker: _core.Worker | None = None
        self.listeners: dict[str, _Listener] = {}
        self.version = 0

    async def start(self) -> None:
        """Compile the config, bind every listener and start serving."""
        self.loop = self.loop or asyncio.get_running_loop()
        _core.seed_random(os.urandom(16))
        self.worker = _core.Worker(self.loop)
        self.worker.apply(build_snapshot(self.config, self.version))
        self._set_batching(self.config)
        try:
            for lc in self.config.listeners:
                await self._open(lc)
        except BaseException:
            await self._close_listeners(list(self.listeners))
            raise

    def _set_batching(self, config: Config) -> None:
        assert self.worker is not None
        self.worker.set_batch_window(config.batch_window if self.owns_loop else 0.0)

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Bound (host, port) per listener name (useful with port 0)."""
        return {name: lst.address for name, lst in self.listeners.items()}

    async def _open(self, lc: ListenerConfig, sock: socket.socket | None = None) -> None:
        assert self.worker is not None and self.loop is not None
        if sock is None:
            sock = bind_socket(lc.address, lc.port, self.reuse_port)
        try:
            server = await self.loop.create_server(
                self.worker.listener_state(lc.name), sock=sock, backlog=LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        self.listeners[lc.name] = _Listener(lc, sock, server)
        log.info("listener %s (%s) on %s:%d", lc.name, lc.protocol, *self.listeners[lc.name].address)

    async def _close_listeners(self, names: list[str]) -> None:
        for name in names:
            lst = self.listeners.pop(name, None)
            if lst is None:
                continue
            lst.server.close()
            if self.worker is not None:
                self.worker.drop_listener(name)

    async def reload(self, config: Config) -> None:
        """Serve `config` from now on without dropping a connection.

        The snapshot is built first: if that fails nothing changes. Listeners
        whose address is unchanged keep their socket (so no connection is
        refused); added ones are bound; removed ones stop accepting.
        """
        assert self.worker is not None
        snapshot = build_snapshot(config, self.version + 1)
        new = {lc.name: lc for lc in config.listeners}
        moved = [name for name, lst in self.listeners.items()
                 if name not in new
                 or (new[name].address, new[name].port) != (lst.config.address, lst.config.port)]
        to_open = [lc for name, lc in new.items() if name not in self.listeners or name in moved]
        # Bind added/moved listeners first: a port that cannot be bound
        # leaves the old config serving.
        socks: dict[str, socket.socket] = {}
        try:
            for lc in to_open:
                socks[lc.name] = bind_socket(lc.address, lc.port, self.reuse_port)
        except BaseException:
            for s in socks.values():
                s.close()
            raise
        self.worker.apply(snapshot)
        self._set_batching(config)
        self.version += 1
        await self._close_listeners(moved)
        for name, lc in new.items():
            if name in socks:
                await self._open(lc, socks[name])
            else:
                self.listeners[name].config = lc
        self.config = config

    async def drain(self, timeout: float | None = None) -> None:
        """Stop accepting, let requests in flight finish (responses carry
        Connection: close), then close what is left after `timeout`."""
        if self.worker is None:
            return
        timeout = self.config.drain_timeout if timeout is None else timeout
        for lst in self.listeners.values():
            lst.server.close()
        self.worker.start_drain()
        deadline = self.loop.time() + timeout
        while self.worker.connection_count() and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        left = self.worker.connection_count()
        if left:
            log.warning("drain timeout: closing %d connections", left)
        self.worker.close_all()
        self.listeners.clear()

    def stats(self) -> dict[str, Any]:
        """Counters of this data plane (see docs/admin.md for their meaning)."""
        if self.worker is None:
            return {}
        return self.worker.stats_dict()
