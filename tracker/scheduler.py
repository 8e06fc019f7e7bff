"""Flags that the clock raises: ``late``, ``no_show`` and ``stale``.

Pings raise and clear flags as they come, but a contractor whose phone went
dark sends none, so every server process runs this check every
``TICK_S`` seconds over the open jobs of every organisation. A short Redis
lock per organisation and tick lets only one process act on each tick.

- ``no_show``: the current visit's window ended and the contractor has not
  arrived (the job is scheduled or en route).
- ``late``: the job is en route and its predicted arrival, the last ETA or
  now if that has passed, is after the window's end.
- ``stale``: the job is en route or on site and the device sent nothing for
  longer than ``STALE_INTERVALS`` times its advised interval, and at least
  ``MIN_STALE_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tracker import keys
from tracker.jobs import ACTIVE_STATUSES, Event, Job, JobStatus, JobStore
from tracker.settings import Settings
from tracker.store import TRANSIENT_ERRORS, RedisClient
from tracker.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

TICK_S = 5.0
# Open jobs checked per round trip.
CHECK_CHUNK = 200
STALE_INTERVALS = 3.0
MIN_STALE_S = 60.0


def due_flags(
    job: Job, now: float, last_fix_t: float | None, interval_s: float
) -> list[str]:
    """Return the clock-driven flags that the job should carry now."""
    flags = []
    window_end = job.window.end_t
    if job.status in (JobStatus.SCHEDULED, JobStatus.EN_ROUTE) and now > window_end:
        flags.append("no_show")
    if job.status is JobStatus.EN_ROUTE:
        predicted_t = now
        if job.eta_s is not None and job.eta_t is not None:
            predicted_t = max(now, job.eta_t + job.eta_s)
        if predicted_t > window_end:
            flags.append("late")
    if job.status in ACTIVE_STATUSES:
        silent_s = now - last_fix_t if last_fix_t is not None else None
        if silent_s is not None and silent_s > max(STALE_INTERVALS * interval_s, MIN_STALE_S):
            flags.append("stale")
    return flags


class FlagScheduler:
    """The periodic flag check of one server process."""

    def __init__(self, client: RedisClient, jobs: JobStore, settings: Settings) -> None:
        self.client = client
        self.jobs = jobs
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        logger.info("flag scheduler started, every %.0f s", TICK_S)
        while True:
            try:
                await self.tick(time.time())
            except asyncio.CancelledError:
                logger.info("flag scheduler stopped")
                raise
            except TRANSIENT_ERRORS as error:
                logger.warning("flag check skipped: redis error: %s", error)
            except Exception:
                logger.exception("flag check failed; continuing")
            await asyncio.sleep(TICK_S)

    async def tick(self, now: float) -> int:
        """Check every organisation once; return the number of flags raised."""
        raised = 0
        for org in [member.decode() for member in await self.client.smembers(keys.ORGS)]:
            lock = await self.client.set(
                f"enroute:tick:{org}", "1", nx=True, px=int(TICK_S * 800)
            )
            if lock:
                raised += await self.check_org(org, now)
        return raised

    async def check_org(self, org: str, now: float) -> int:
        """Raise the due flags of one organisation's open jobs."""
        ids = [member.decode() for member in await self.client.smembers(keys.open_jobs(org))]
        if not ids:
            return 0
        raised = 0
        # In chunks, so a large organisation does not hold the event loop
        # (and every live update waiting on it) for the whole check.
        for start in range(0, len(ids), CHECK_CHUNK):
            raised += await self._check_jobs(org, ids[start : start + CHECK_CHUNK], now)
        return raised

    async def _check_jobs(self, org: str, ids: list[str], now: float) -> int:
        raised = 0
        jobs = [job for job, _ in await self.jobs.get_many(org, ids)]
        # One round trip for the contractors' last fix times and intervals.
        devices = await self.jobs.commands.execute(
            [("HMGET", keys.device(org, job.contractor_id), "t", "interval") for job in jobs]
        )
        for job, device in zip(jobs, devices):
            last_fix_t = float(device[0]) if device[0] else None
            interval_s = float(device[1]) if device[1] else self.settings.interval_moving_s
            for flag in due_flags(job, now, last_fix_t, interval_s):
                if flag in job.flags:
                    continue
                detail = {"last_fix_t": last_fix_t} if flag == "stale" else None
                if await self.jobs.transition(
                    org, job, None, Event(f"job.{flag}", now, "clock", None, detail),
                    expected=frozenset({job.status}), flags=[*job.flags, flag],
                ):
                    raised += 1
        return raised
