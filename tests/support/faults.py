"""A TCP fault proxy for adversity tests (issue 9), in the spirit of
asyncpg's `_testbase/fuzzer.py`: it sits between a client (the proxy under
test) and a server (an origin) and misbehaves on command.

FaultProxy(target).start() listens on 127.0.0.1:<ephemeral>; `set_mode()`
switches what it does, at run time, for new and existing connections alike:

- "pass":       forward both ways untouched.
- "delay":      hold every chunk `delay` seconds before forwarding it.
- "slice":      forward one byte per write (TCP_NODELAY, a short pause
                between bytes), so the peer's parser sees single bytes.
- "reset":      abort with an RST (SO_LINGER 0) once `after` bytes of the
                server's response went through (0: as soon as anything
                arrives, or at accept for new connections).
- "half_close": after `after` response bytes, send EOF (FIN) to the client
                but keep reading from it (and forwarding what it sends).
- "blackhole":  accept, read and discard, never connect upstream and never
                answer.

Counters (connections, bytes each way, resets, blackholed bytes) let tests
wait on evidence instead of sleeping.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading

from support.loopthread import LoopThread

MODES = ("pass", "delay", "slice", "reset", "half_close", "blackhole")


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN: SO_LINGER on, timeout 0."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class FaultProxy(LoopThread):
    """A misbehaving TCP relay in its own thread and loop (see module doc)."""

    thread_name = "fault-proxy"

    def __init__(self, target: tuple[str, int], mode: str = "pass", **params) -> None:
        super().__init__()
        self.target = target
        self.lock = threading.Lock()
        self.mode = "pass"
        self.params: dict = {}
        self.set_mode(mode, **params)
        self.address: tuple[str, int] | None = None
        self.server: asyncio.AbstractServer | None = None
        self.tasks: set[asyncio.Task] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.open_connections = 0
        self.bytes_up = 0            # client -> server, forwarded
        self.bytes_down = 0          # server -> client, forwarded
        self.writes_down = 0         # writes server -> client (one per byte sliced)
        self.resets = 0
        self.half_closes = 0
        self.blackholed = 0          # bytes swallowed in blackhole mode

    # -- control (any thread)
    def set_mode(self, mode: str, *, delay: float = 0.1, after: int = 0,
                 byte_pause: float = 0.001) -> None:
        """Switch the behaviour; takes effect at the next chunk of every
        connection."""
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {MODES}")
        with self.lock:
            self.mode = mode
            self.params = {"delay": delay, "after": after, "byte_pause": byte_pause}

    def counters(self) -> dict:
        with self.lock:
            return {k: getattr(self, k) for k in (
                "connections", "open_connections", "bytes_up", "bytes_down", "writes_down",
                "resets", "half_closes", "blackholed")}

    # -- loop side
    async def _setup(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.address = self.server.sockets[0].getsockname()[:2]

    async def _shutdown(self) -> None:
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2)
        await self.server.wait_closed()

    def _count(self, **kw) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    async def _handle(self, creader, cwriter) -> None:
        self.tasks.add(asyncio.current_task())
        self.writers.add(cwriter)
        self._count(connections=1, open_connections=1)
        swriter = None
        try:
            mode = self.mode
            if mode == "blackhole":
                while data := await creader.read(65536):
                    self._count(blackholed=len(data))
                return
            if mode == "reset" and self.params["after"] == 0:
                self._count(resets=1)
                _rst(cwriter)
                return
            try:
                sreader, swriter = await asyncio.open_connection(*self.target)
            except OSError:
                _rst(cwriter)
                return
            self.writers.add(swriter)
            down_sent = [0]
            up = asyncio.ensure_future(self._pump(creader, swriter, cwriter, swriter, None))
            down = asyncio.ensure_future(self._pump(sreader, cwriter, cwriter, swriter, down_sent))
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            # The first side to finish decides: a reset ends both; a clean EOF
            # from one side was forwarded, so wait for the other to finish.
            if any(t.result() == "reset" for t in done if not t.cancelled()):
                for t in pending:
                    t.cancel()
            elif pending:
                await asyncio.wait(pending, timeout=30)
                for t in pending:
                    t.cancel()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for w in (cwriter, swriter):
                if w is not None:
                    self.writers.discard(w)
                    w.close()
            self._count(open_connections=-1)
            self.tasks.discard(asyncio.current_task())

    async def _pump(self, reader, writer, cwriter, swriter, down_sent) -> str:
        """Copy reader -> writer under the current mode. down_sent is a
        one-item list of response bytes forwarded (None going upstream)."""
        downstream = down_sent is not None
        half_closed = False
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    if not half_closed and writer.can_write_eof():
                        writer.write_eof()
                    return "eof"
                mode, p = self.mode, self.params
                if mode == "blackhole":
                    self._count(blackholed=len(data))
                    continue
                if mode == "delay":
                    await asyncio.sleep(p["delay"])
                if downstream and mode in ("reset", "half_close") and not half_closed:
                    room = p["after"] - down_sent[0]
                    if room < len(data):
                        if room > 0:
                            writer.write(data[:room])
                            await writer.drain()
                            down_sent[0] += room
                            self._count(bytes_down=room)
                        if mode == "reset":
                            self._count(resets=1)
                            _rst(cwriter)
                            _rst(swriter)
                            return "reset"
                        self._count(half_closes=1)
                        half_closed = True
                        writer.write_eof()
                        continue
                if half_closed:
                    continue              # the client was sent EOF: drop the rest
                if mode == "slice":
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for i in range(len(data)):
                        writer.write(data[i:i + 1])
                        await writer.drain()
                        await asyncio.sleep(p["byte_pause"])   # 0: just yield
                    writes = len(data)
                else:
                    writer.write(data)
                    await writer.drain()
                    writes = 1
                if downstream:
                    down_sent[0] += len(data)
                    self._count(bytes_down=len(data), writes_down=writes)
                else:
                    self._count(bytes_up=len(data))
        except (ConnectionError, OSError):
            return "reset"
