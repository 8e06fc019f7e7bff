"""The ingest pipeline: one frame in, one reply out.

A frame is parsed and validated, its valid pings are written to Redis
through the shared :class:`~tracker.store.PingWriter`, the stored pings are
handed in fix-time order to the observers (the job lifecycle), and the
reply is built. The reply is either an ack or an error frame; the ack is
returned only after the pings are stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from redis.exceptions import RedisError

from tracker import keys
from tracker.pings import FrameError, Ping, TimeRules, split_frame, validate_items
from tracker.settings import Settings
from tracker.store import PingWriter, StoreResult, StoreUnavailableError

logger = logging.getLogger(__name__)

#: Frames with more pings than this are validated, stored and handed to the
#: observers in chunks of this many, in fix-time order, with the event loop
#: free in between. A 10,000-ping offline upload handled whole held every
#: other connection of the process for about 130 ms, and in chunks of 1,000
#: about 17 ms, against 11 ms in chunks of 250 (one probe each).
CHUNK_PINGS = 250

_fix_time = attrgetter("t")

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


class _WriteFailedError(Exception):
    """A chunk's write failed; ``reply`` is the error frame for the device."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply["error"])
        self.reply = reply


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
            items, warnings = split_frame(text)
        except FrameError as error:
            self.counters.errors += 1
            logger.debug("frame error from org %s device %s: %s", org, device_id, error)
            return {"type": "error", "error": str(error)}

        rules = self.rules()
        pings: list[Ping] = []
        rejected: list[dict[str, Any]] = []
        for start in range(0, len(items), CHUNK_PINGS):
            if start:
                await asyncio.sleep(0)  # lets other connections run between chunks
            valid, invalid = validate_items(items[start : start + CHUNK_PINGS], rules, start)
            pings.extend(ping for _, ping in valid)
            rejected.extend({"index": r.index, "error": r.error} for r in invalid)
        self.counters.rejected += len(rejected)
        if rejected and logger.isEnabledFor(logging.DEBUG):
            logger.debug("org %s device %s: %d pings rejected", org, device_id, len(rejected))
        if warnings:
            logger.info("frame from org %s device %s: %s", org, device_id, "; ".join(warnings))
        if not pings:
            return self._ack(0, 0, rejected, None, [], warnings)

        if len(pings) > CHUNK_PINGS:
            # Sorted, so that no chunk reaches the lifecycle as a late
            # batch behind the chunk before it.
            pings.sort(key=_fix_time)
        accepted = duplicates = 0
        for start in range(0, len(pings), CHUNK_PINGS):
            try:
                result = await self._store(org, device_id, pings[start : start + CHUNK_PINGS])
            except _WriteFailedError as failure:
                self.counters.errors += 1
                return failure.reply
            chunk_duplicates = result.statuses.count("d")
            accepted += len(result.statuses) - chunk_duplicates
            duplicates += chunk_duplicates
        self.counters.accepted += accepted
        self.counters.duplicates += duplicates
        return self._ack(accepted, duplicates, rejected, result.interval_s, result.open_jobs, warnings)

    async def _store(self, org: str, device_id: str, pings: list[Ping]) -> StoreResult:
        """Write ``pings`` and hand them to the observers in fix-time order, repeats left out.

        Raises
        ------
        _WriteFailedError
            With the error reply when the write failed.
        """
        try:
            result = await self.writer.write(org, device_id, pings)
        except StoreUnavailableError as error:
            raise _WriteFailedError({"type": "error", "error": str(error), "retry": True}) from None
        except RedisError as error:
            logger.warning("storing a frame failed for org %s device %s: %s", org, device_id, error)
            raise _WriteFailedError(
                {
                    "type": "error",
                    "error": (
                        f"storing the pings failed ({error}); they may not have been stored, "
                        "send them again (pings already stored count as duplicates)"
                    ),
                    "retry": True,
                }
            ) from None

        statuses = result.statuses
        duplicates = statuses.count("d")
        if duplicates and result.retried:
            # A lost reply hid from the observers what the first attempt
            # stored, so they get those pings now: as history, except the
            # one that the device hash shows as its latest position.
            logger.info(
                "org %s device %s: write retried; %d duplicate pings go to the observers as stored",
                org, device_id, duplicates,
            )  # fmt: skip
            statuses = await self._mark_latest(org, device_id, pings, statuses.replace("d", "h"))
        elif duplicates:
            # A duplicate may be a ping whose observers never ran: the device
            # sends a frame again when the process died before its ack. So
            # the observers get duplicates too, marked "r" (resent).
            statuses = statuses.replace("d", "r")
        if self.observers:
            stored: list[tuple[Ping, str]] = []
            # A sort keeps frame order among equal fix times, so the copy
            # that the script stored comes first and the repeats are skipped.
            for ping, status in sorted(zip(pings, statuses), key=lambda pair: pair[0].t):
                if not stored or ping.t != stored[-1][0].t:
                    stored.append((ping, status))
            for observer in self.observers:
                try:
                    await observer(org, device_id, stored, result)
                except Exception:  # an observer bug must not lose the ack
                    logger.exception(
                        "ping observer failed for org %s device %s", org, device_id
                    )
        return result

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
