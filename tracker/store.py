"""Redis connections and the batched, retrying write path of the ingest.

Many device connections share one :class:`PingWriter`. Each frame becomes
one call of the ingest script; the writer sends all calls queued in one
event-loop turn as a single pipeline, so a thousand busy connections cost
a handful of round trips rather than a thousand. A frame's future resolves
only after Redis has replied, which is what lets the device get its ack.

When Redis is unreachable the writer retries with exponential backoff for
up to ``retry_s`` seconds, then fails the pending frames with
:class:`StoreUnavailableError`; a failed frame is never acknowledged, so the
device keeps its pings and sends them again.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h3
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker import keys
from tracker.pings import Ping

logger = logging.getLogger(__name__)

# Two fixes confirm a jump only when they are this close in time.
JUMP_CONFIRM_WINDOW_S = 600.0
MAX_CALLS_PER_PIPELINE = 512
RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 2.0

RedisClient = aioredis.Redis | RedisCluster
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class StoreUnavailableError(RuntimeError):
    """Redis did not accept a write within the retry deadline."""


def connect(url: str) -> RedisClient:
    """Return an asyncio client for ``url``; a cluster URL gets the cluster client.

    A URL is treated as a cluster when its query string has ``cluster=true``
    or its scheme is ``redis+cluster`` / ``rediss+cluster``.
    """
    is_cluster = "cluster=true" in url or url.startswith(("redis+cluster", "rediss+cluster"))
    if is_cluster:
        plain = url.replace("+cluster", "").replace("cluster=true", "").rstrip("?&")
        return RedisCluster.from_url(plain, decode_responses=False)
    return aioredis.from_url(url, decode_responses=False, health_check_interval=10)


def load_script(name: str) -> str:
    """Return the text of a Lua script shipped in the ``tracker`` package."""
    return importlib.resources.files("tracker").joinpath(name).read_text()


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What the ingest script did with one frame's pings of one device."""

    statuses: str  # one letter per ping, see ingest.lua
    open_jobs: list[str]
    interval_s: float | None


@dataclass(slots=True)
class _Call:
    org: str
    device_id: str
    args: list[Any]
    future: asyncio.Future[StoreResult]


class PingWriter:
    """Queue frames from many connections and write them in shared pipelines."""

    def __init__(
        self,
        client: RedisClient,
        *,
        h3_res: int = 9,
        history_s: float = 7 * 86400.0,
        max_speed_mps: float = 70.0,
        retry_s: float = 30.0,
    ) -> None:
        self.client = client
        self.h3_res = h3_res
        self.history_s = history_s
        self.max_speed_mps = max_speed_mps
        self.retry_s = retry_s
        self._script = load_script("ingest.lua")
        self._sha: str | None = None
        self._queue: list[_Call] = []
        self._flush_scheduled = False
        self._lock = asyncio.Lock()
        self.frames_written = 0
        self.pipelines_sent = 0

    def _arguments(self, org: str, device_id: str, pings: Sequence[Ping]) -> list[Any]:
        args: list[Any] = [
            device_id,
            keys.live_channel(org),
            repr(self.history_s),
            repr(self.max_speed_mps),
            repr(JUMP_CONFIRM_WINDOW_S),
        ]
        res = self.h3_res
        for ping in pings:
            cell = h3.latlng_to_cell(ping.lat, ping.lon, res)
            args += (
                repr(ping.t),
                repr(ping.lat),
                repr(ping.lon),
                repr(ping.acc if ping.acc is not None else -1.0),
                keys.cell_to_score(cell),
                ping.to_json(),
            )
        return args

    async def write(self, org: str, device_id: str, pings: Sequence[Ping]) -> StoreResult:
        """Store one frame's valid pings of a device; return once Redis replied.

        Raises
        ------
        StoreUnavailableError
            When Redis stayed unreachable for ``retry_s`` seconds.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoreResult] = loop.create_future()
        self._queue.append(_Call(org, device_id, self._arguments(org, device_id, pings), future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        task = asyncio.get_running_loop().create_task(self._flush())
        task.add_done_callback(_log_task_failure)

    async def _flush(self) -> None:
        # One flush at a time keeps pipelines in order; calls queued while
        # a pipeline is in flight go out together in the next one.
        async with self._lock:
            while self._queue:
                calls = self._queue[:MAX_CALLS_PER_PIPELINE]
                del self._queue[:MAX_CALLS_PER_PIPELINE]
                await self._send_with_retry(calls)

    async def _send_with_retry(self, calls: list[_Call]) -> None:
        deadline = time.monotonic() + self.retry_s
        delay_s = RETRY_FIRST_DELAY_S
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._send(calls)
                if attempt > 1:
                    logger.info("redis write succeeded after %d attempts", attempt)
                return
            except TRANSIENT_ERRORS as error:
                if time.monotonic() + delay_s > deadline:
                    logger.error(
                        "redis unreachable for %.0f s; failing %d frames: %s",
                        self.retry_s, len(calls), error,
                    )
                    failure = StoreUnavailableError(
                        "storage is unavailable; the pings were not stored, "
                        "send them again"
                    )
                    for call in calls:
                        if not call.future.done():
                            call.future.set_exception(failure)
                    return
                if attempt == 1 or attempt % 10 == 0:
                    logger.warning(
                        "redis write failed (attempt %d), retrying in %.2f s: %s",
                        attempt, delay_s, error,
                    )
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_DELAY_S)

    async def _send(self, calls: list[_Call]) -> None:
        if self._sha is None:
            self._sha = await self.client.script_load(self._script)
        pending = [call for call in calls if not call.future.done()]
        pipe = self.client.pipeline(transaction=False)
        for call in pending:
            org, device_id = call.org, call.device_id
            pipe.evalsha(
                self._sha,
                4,
                keys.device(org, device_id),
                keys.history(org, device_id),
                keys.cells(org),
                keys.heat(org),
                *call.args,
            )
        replies = await pipe.execute(raise_on_error=False)
        self.pipelines_sent += 1

        missing_script = [
            call for call, reply in zip(pending, replies) if isinstance(reply, NoScriptError)
        ]
        for call, reply in zip(pending, replies):
            if isinstance(reply, NoScriptError):
                continue
            if isinstance(reply, TRANSIENT_ERRORS):
                raise reply
            if isinstance(reply, ResponseError | Exception):
                logger.error(
                    "ingest script failed for org %s device %s: %s",
                    call.org, call.device_id, reply,
                )
                call.future.set_exception(reply)
                continue
            call.future.set_result(_parse_reply(reply))
            self.frames_written += 1
        if missing_script:
            # A restarted Redis has lost its script cache: load it again.
            logger.info("reloading the ingest script after a redis restart")
            self._sha = None
            await self._send(missing_script)


def _parse_reply(reply: list[Any]) -> StoreResult:
    statuses = b"".join(reply[0]).decode()
    jobs_field = reply[1].decode() if reply[1] else ""
    interval = float(reply[2]) if reply[2] else None
    return StoreResult(statuses, [job for job in jobs_field.split(",") if job], interval)


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("ping writer flush failed", exc_info=task.exception())
