"""The supervisor <-> worker control channel: JSON lines over a socketpair.

Messages are small and rare (config, reload, stats), so readability wins
over speed here.
"""
from __future__ import annotations

import asyncio
import json
import socket
from typing import Any


class Channel:
    """One end of a socketpair carrying one JSON object per line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> "Channel":
        reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024 * 1024)
        return cls(reader, writer)

    async def send(self, msg: dict[str, Any]) -> None:
        self.writer.write(json.dumps(msg).encode() + b"\n")
        await self.writer.drain()

    async def recv(self) -> dict[str, Any] | None:
        line = await self.reader.readline()
        if not line:
            return None
        return json.loads(line)

    def close(self) -> None:
        self.writer.close()
