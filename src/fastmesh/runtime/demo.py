"""The demo origin that `fastmesh run` starts when no config is given.

A small HTTP/1.1 server (keep-alive, Content-Length responses) so that the
embedded default config has something real to proxy to.
"""
from __future__ import annotations

import asyncio

BODY = b"hello from the fastmesh demo origin\n"


class DemoOrigin(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            line = head.split(b"\r\n", 1)[0].split(b" ")
            path = line[1] if len(line) > 1 else b"/"
            body = BODY if path != b"/headers" else head + b"\n"
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body))


async def start_demo_origin(host: str = "127.0.0.1", port: int = 10001) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(DemoOrigin, host, port)
