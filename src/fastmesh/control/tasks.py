"""Small asyncio helpers shared by the control side's background sources
(health checks, discovery, certificates)."""
from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel `task` and wait until it has ended, whatever it raised (a
    cancellation, or a bug its own code already logged)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except BaseException:  # noqa: BLE001 - cancelled, or a bug already logged
        pass
