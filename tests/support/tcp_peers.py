"""Tiny TCP servers for the interception tests (run as scripts, stdlib only).

    python tcp_peers.py echo HOST PORT      echo every line back
    python tcp_peers.py greeter HOST PORT   server speaks first ("220 ..."), then
                                            answers each line with "250 <line>"

On SIGTERM each prints "connections=N lines=M" (what it served) and exits.
"""
from __future__ import annotations

import asyncio
import signal
import sys

counts = {"connections": 0, "lines": 0}


async def _serve(mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    counts["connections"] += 1
    if mode == "greeter":
        writer.write(b"220 fastmesh-test greeter ready\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            counts["lines"] += 1
            writer.write(line if mode == "echo" else b"250 " + line)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _main(mode: str, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(lambda r, w: _serve(mode, r, w), host, port)
    print("listening", flush=True)
    await stop.wait()
    server.close()
    print(f"connections={counts['connections']} lines={counts['lines']}", flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
