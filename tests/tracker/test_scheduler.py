"""FlagScheduler: stopping the periodic flag check of a server process."""

from __future__ import annotations

import asyncio

from tracker.jobs import JobStore
from tracker.scheduler import FlagScheduler
from tracker.settings import load_settings
from tracker.store import connect

STOP_LIMIT_S = 5.0


async def test_stop_while_connecting_returns(redis_url: str) -> None:
    # A server that fails to bind its port stops the scheduler right after
    # starting it, while the first tick still opens its Redis connection.
    # Stopping after each of the first event-loop turns hits that moment.
    settings = load_settings(redis_url=redis_url)
    for turns in range(12):
        client = connect(redis_url)
        jobs = JobStore(client)
        scheduler = FlagScheduler(client, jobs, settings)
        scheduler.start()
        for _ in range(turns):
            await asyncio.sleep(0)
        stop = asyncio.ensure_future(scheduler.stop())
        done, _ = await asyncio.wait([stop], timeout=STOP_LIMIT_S)
        await jobs.commands.aclose()
        await client.aclose()
        assert stop in done, f"stop() still waits {STOP_LIMIT_S} s after {turns} turns"
