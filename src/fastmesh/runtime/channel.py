"""The supervisor <-> worker control channel: JSON lines over a socketpair.

Messages are small and rare (config, apply, stats, health changes), so readability wins
over speed here. Every request from the supervisor carries an ``id``; the
worker's answer echoes it, with the request's ``op`` and ``ok``:

    -> {"id": 7, "op": "prepare", "version": 3, "text": "...", "source": "..."}
    <- {"id": 7, "op": "prepare", "ok": true, "version": 3}
    <- {"id": 8, "op": "commit", "ok": false, "error": "..."}

The supervisor pairs answers to requests by id, never by order, so an answer
that arrives after its request timed out is dropped instead of being read as
the answer to the next request. A message without an id is unsolicited.

    op         request fields             answer fields
    config     version, text, source      pid, addresses, version
    prepare    version, text, source      version
    commit     version                    version
    abort      version                    version
    stats                                 stats
    health     changes: [[cluster, host,
               port, healthy], ...]
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


def answer(req: dict[str, Any], ok: bool = True, **fields: Any) -> dict[str, Any]:
    """The answer to `req`: its id and op echoed, plus `ok` and `fields`."""
    return {"id": req.get("id"), "op": req.get("op"), "ok": ok, **fields}
