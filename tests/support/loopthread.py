"""An event loop in a daemon thread: the base of the test servers and of the
proxy under test, so each talks to the others over real sockets."""
from __future__ import annotations

import asyncio
import threading


class LoopThread:
    """start() runs `_setup()` in a new loop in its own thread, then the loop
    until stop(), which runs `_shutdown()` there first; `_finish()` runs in
    the loop after it stopped. Subclasses implement those three."""

    thread_name = "loop"
    stop_timeout = 5.0

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def new_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()

    async def _setup(self) -> None:
        pass

    async def _shutdown(self) -> None:
        pass

    def _finish(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def start(self):
        ready = threading.Event()
        err: list = []

        def run():
            loop = self.new_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._setup())
            except BaseException as e:   # noqa: BLE001 - reported to the starter
                err.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            self._finish(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self.thread = threading.Thread(target=run, name=self.thread_name, daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.thread_name} thread did not start")
        if err:
            self.thread.join(5)
            raise err[0]
        return self

    def stop(self) -> None:
        if self.loop is None or self.thread is None:
            return
        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(
                    self.stop_timeout)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
