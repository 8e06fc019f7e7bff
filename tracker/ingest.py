"""The ingest pipeline: one frame in, one reply out.

A frame is parsed and validated, its valid pings are written to Redis
through the shared :class:`~tracker.store.PingWriter`, the stored pings are
handed in fix-time order to the observers (the job lifecycle), and the
reply is built. The reply is either an ack or an error frame; the ack is
returned only after the pings are stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from tracker import keys
from tracker.pings import FrameError, Ping, TimeRules, parse_frame
from tracker.settings import Settings
from tracker.store import PingWriter, StoreResult, StoreUnavailableError

logger = logging.getLogger(__name__)

#: Called with (org, device id, stored pings in fix order, store result).
PingObserver = Callable[[str, str, list[tuple[Ping, str]], StoreResult], Awaitable[None]]


@dataclass(slots=True)
class IngestCounters:
    """Totals since the process started, for logs and metrics."""

    frames: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0


class Ingest:
    """Turn device frames into stored pings and replies."""

    def __init__(self, writer: PingWriter, settings: Settings) -> None:
        self.writer = writer
        self.settings = settings
        self.observers: list[PingObserver] = []
        self.counters = IngestCounters()

    def rules(self) -> TimeRules:
        """Return the time rules against the server clock now."""
        return TimeRules(time.time(), self.settings.max_future_s, self.settings.history_s)

    async def handle_frame(self, org: str, device_id: str, text: str | bytes) -> dict[str, Any]:
        """Process one frame and return its reply (an ack or an error)."""
        self.counters.frames += 1
        try:
            parsed = parse_frame(text, self.rules())
        except FrameError as error:
            self.counters.errors += 1
            logger.debug("frame error from org %s device %s: %s", org, device_id, error)
            return {"type": "error", "error": str(error)}

        rejected = [{"index": r.index, "error": r.error} for r in parsed.rejected]
        self.counters.rejected += len(rejected)
        if rejected and logger.isEnabledFor(logging.DEBUG):
            logger.debug("org %s device %s: %d pings rejected", org, device_id, len(rejected))
        if parsed.warnings:
            logger.info("frame from org %s device %s: %s", org, device_id, "; ".join(parsed.warnings))
        if not parsed.pings:
            return self._ack(0, 0, rejected, None, [], parsed.warnings)

        pings = [ping for _, ping in parsed.pings]
        try:
            result = await self.writer.write(org, device_id, pings)
        except StoreUnavailableError as error:
            self.counters.errors += 1
            return {"type": "error", "error": str(error), "retry": True}
        except RedisError as error:
            self.counters.errors += 1
            logger.warning("storing a frame failed for org %s device %s: %s", org, device_id, error)
            return {
                "type": "error",
                "error": (
                    f"storing the pings failed ({error}); they may not have been stored, "
                    "send them again (pings already stored count as duplicates)"
                ),
                "retry": True,
            }

        accepted = len(result.statuses) - result.statuses.count("d")
        duplicates = len(result.statuses) - accepted
        self.counters.accepted += accepted
        self.counters.duplicates += duplicates

        statuses = result.statuses
        if result.retried and duplicates:
            # A lost reply hid from the observers what the first attempt
            # stored, so they get those pings now: as history, except the
            # one that the device hash shows as its latest position.
            logger.info(
                "org %s device %s: write retried; %d duplicate pings go to the observers as stored",
                org, device_id, duplicates,
            )  # fmt: skip
            statuses = statuses.replace("d", "h")
            statuses = await self._mark_latest(org, device_id, pings, statuses)
        if self.observers and statuses.count("d") < len(statuses):
            stored = sorted(
                (
                    (ping, status)
                    for ping, status in zip(pings, statuses)
                    if status != "d"
                ),
                key=lambda pair: pair[0].t,
            )
            for observer in self.observers:
                try:
                    await observer(org, device_id, stored, result)
                except Exception:  # noqa: BLE001 - an observer bug must not lose the ack
                    logger.exception(
                        "ping observer failed for org %s device %s", org, device_id
                    )
        return self._ack(
            accepted, duplicates, rejected, result.interval_s, result.open_jobs, parsed.warnings
        )

    async def _mark_latest(self, org: str, device_id: str, pings: list[Ping], statuses: str) -> str:
        """Return ``statuses`` with "l" for the ping that is the device's latest position, if any.

        After a lost reply the statuses can't tell which ping the first
        attempt made the latest, so the device hash's fix time decides.
        """
        try:
            raw = await self.writer.client.hget(keys.device(org, device_id), "t")
        except RedisError as error:
            logger.warning("reading the latest fix of org %s device %s failed: %s", org, device_id, error)
            return statuses
        if raw is None:
            return statuses
        latest_t = float(raw)
        marked = list(statuses)
        for index, ping in enumerate(pings):
            if marked[index] == "h" and ping.t == latest_t:
                marked[index] = "l"
        return "".join(marked)

    def _ack(
        self,
        accepted: int,
        duplicates: int,
        rejected: list[dict[str, Any]],
        interval_s: float | None,
        open_jobs: list[str],
        warnings: list[str],
    ) -> dict[str, Any]:
        if interval_s is None:
            settings = self.settings
            interval_s = settings.interval_moving_s if open_jobs else settings.interval_idle_s
        ack: dict[str, Any] = {
            "type": "ack",
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
            "next_interval_s": interval_s,
        }
        if warnings:
            ack["warnings"] = warnings
        return ack
