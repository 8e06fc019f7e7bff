"""Stopping the background tasks of a server process."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

# How long a cancelled task gets to end before it is cancelled again.
RECANCEL_INTERVAL_S = 0.1
STOP_TIMEOUT_S = 10.0


async def cancel_and_wait(task: asyncio.Task[Any], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Cancel ``task`` and wait until it ends, cancelling it again while it runs.

    A single cancel is not enough. On Python 3.11, ``asyncio.wait_for``
    returns the inner result when the cancellation arrives just as the inner
    future completes (CPython issue gh-86296, gone with the rewrite of
    ``wait_for`` in 3.12). A loop cancelled while redis-py opens a
    connection then carries on, and a shutdown that awaits it never ends. A task that still
    runs after ``timeout_s`` seconds is logged and left behind.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        if loop.time() > deadline:
            logger.error("task %s did not stop within %.0f s; leaving it", task.get_name(), timeout_s)
            return
        task.cancel()
        await asyncio.wait([task], timeout=RECANCEL_INTERVAL_S)
    if not task.cancelled():
        task.result()
