"""The automatic job lifecycle: geofence detection and ETAs after each frame.

The ingest calls :meth:`Lifecycle.on_pings` with a device's newly stored
pings in fix-time order. For each of the device's active jobs (en route or
on site), it steps the job's geofence detector and turns arrival and
departure into status changes. The detector's state lives in the job hash,
so any process can continue it. For en-route jobs it then refreshes the
ETA and arrival window and publishes the job's new state.

Late pings: a ping older than the last one the detector saw (an offline
batch uploaded after newer live pings) makes the detector replay the job's
whole history since dispatch in fix order, so the outcome does not depend
on the order in which pings arrived. The status script rejects a second
arrival or completion, so a replay never records an event twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import orjson

from geofence.detection import (
    Arrived,
    Departed,
    DetectionConfig,
    DetectionState,
    Fix,
    step,
)
from geofence.errors import InvalidFenceError
from geofence.fences import Fence, fence_from_site
from tracker import keys
from tracker.batch import Batch, BoundedCache
from tracker.etas import EtaRequest, EtaService, EtaUpdate
from tracker.jobs import (
    ACTIVE_STATUSES,
    Event,
    InvalidTransitionError,
    Job,
    JobStatus,
    JobStore,
    eta_update_json,
    job_from_hash,
    loaded_fields,
)
from tracker.pings import Ping
from tracker.settings import Settings
from tracker.store import CommandPipe, RedisClient, StoreResult

logger = logging.getLogger(__name__)

# Fixes less accurate than this are stored but drive neither geofences nor ETAs.
MAX_USEFUL_ACCURACY_M = 200.0
#: Job hash fields of one trip to the site, emptied when the next trip
#: starts, so that a new visit shows none of the last one's ETA or window.
TRIP_CLEARED = {"eta_s": "", "eta_t": "", "awin": "", "smoother": "", "route": "", "arrived_t": ""}
# A ping refreshes an ETA once this share of the minimum interval has passed.
ETA_INTERVAL_SHARE = 0.9
# Fences kept per process; the cache starts over when it is full.
_FENCE_CACHE_SIZE = 10_000


def build_fence(job_id: str, site: dict[str, Any]) -> Fence:
    """Build a job's fence from its site: a circle or a GeoJSON Polygon.

    Raises
    ------
    ValueError
        With a message naming the field, the value and the rule.
    """
    try:
        return fence_from_site(job_id, site)
    except InvalidFenceError as error:
        raise ValueError(str(error)) from None


def fix_of(ping: Ping) -> Fix:
    """Convert a stored ping into a geofence fix."""
    return Fix(t=ping.t, lat=ping.lat, lon=ping.lon, accuracy_m=ping.acc)


def _accurate(ping: Ping) -> bool:
    return ping.acc is None or ping.acc <= MAX_USEFUL_ACCURACY_M


@dataclass(slots=True)
class _Frame:
    """A stored frame waiting for its batch."""

    org: str
    device_id: str
    stored: list[tuple[Ping, str]]  # pings with their ingest status, in fix order
    result: StoreResult


@dataclass(slots=True)
class _AfterEta:
    """A job's remaining steps once its ETA is known: flags and the device's interval."""

    org: str
    job: Job
    ping: Ping | None
    interval_s: float | None
    update: EtaUpdate | None = None


@dataclass(frozen=True, slots=True)
class _Written:
    """A detector state as this process last wrote it for a job."""

    en_route_t: bytes  # the job hash's en_route_t then: a new dispatch changes it
    det_t: float
    encoded: bytes
    state: DetectionState


@dataclass(slots=True)
class _Work:
    """The state of one batch between its steps."""

    batch: Batch
    etas: list[tuple[EtaRequest, _AfterEta]] = field(default_factory=list)
    followups: list[_AfterEta] = field(default_factory=list)


def _log_batch_failure(frames: list[_Frame]) -> None:
    devices = sorted({f"{frame.org}/{frame.device_id}" for frame in frames})
    logger.exception(
        "job lifecycle batch of %d frames failed; devices %s",
        len(frames), ", ".join(devices[:20]),
    )  # fmt: skip


async def _confirm(replies: Awaitable[Any], frames: list[_Frame]) -> None:
    """Wait for Redis's replies to a batch's writes and log a failure."""
    try:
        await replies
    except Exception:  # noqa: BLE001 - logged with the devices involved
        _log_batch_failure(frames)


def ping_summary(ping: Ping) -> dict[str, float]:
    """Return the ping fields that a timeline event shows."""
    summary = {"t": ping.t, "lat": ping.lat, "lon": ping.lon}
    if ping.acc is not None:
        summary["acc"] = ping.acc
    return summary


class Lifecycle:
    """Job transitions driven by pings, dispatchers and the clock."""

    def __init__(
        self,
        client: RedisClient,
        settings: Settings,
        etas: EtaService,
        config: DetectionConfig | None = None,
        commands: CommandPipe | None = None,
    ) -> None:
        """Build on ``client``; ``commands`` is the pipe for batch writes (the ping writer's, in a server)."""
        self.client = client
        self.settings = settings
        self.jobs = JobStore(client, commands)
        self.etas = etas
        self.config = config or DetectionConfig(
            arrival_dwell_s=settings.geofence_dwell_s,
            min_on_site_s=settings.geofence_min_on_site_s,
            departure_grace_s=settings.geofence_grace_s,
            max_accuracy_m=settings.geofence_max_accuracy_m,
            max_speed_mps=settings.max_speed_mps,
        )
        self._fences: dict[tuple[str, str], Fence] = {}
        # Detector states as last written by this process, per job.
        self._states: BoundedCache[_Written] = BoundedCache()
        self._queue: list[tuple[_Frame, asyncio.Future[None]]] = []
        self._confirming: set[asyncio.Task[None]] = set()
        self._drainer: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        """Finish the batch in progress and close the own Redis connection."""
        pending = [task for task in (self._drainer, *self._confirming) if task is not None]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        await self.jobs.commands.aclose()

    def fence_for(self, org: str, job: Job) -> Fence:
        """Return the job's fence, built once per process."""
        cache_key = (org, job.id)
        fence = self._fences.get(cache_key)
        if fence is None:
            if len(self._fences) >= _FENCE_CACHE_SIZE:
                self._fences.clear()
            fence = build_fence(job.id, job.site)
            self._fences[cache_key] = fence
        return fence

    async def all_job_ids(self, org: str) -> list[str]:
        """Return the ids of every job of the organisation."""
        prefix = keys.job(org, "")
        found = []
        async for key in self.client.scan_iter(match=prefix + "*", count=1000):
            name = key.decode()[len(prefix):]
            if ":" not in name:
                found.append(name)
        return found

    async def dispatch(self, org: str, job: Job, at_t: float | None = None) -> None:
        """Move a scheduled job to en route and compute its first ETA.

        ``at_t`` back-dates the dispatch (Unix seconds), for a dispatch that
        was recorded offline; pings from before it never count for the job.
        """
        if job.status is not JobStatus.SCHEDULED:
            raise InvalidTransitionError(job.id, job.status.value, JobStatus.EN_ROUTE.value)
        now = at_t if at_t is not None else time.time()
        fields = {"det": DetectionState().to_dict(), "det_t": "", "en_route_t": repr(now), **TRIP_CLEARED}
        moved = await self.jobs.transition(
            org, job, JobStatus.EN_ROUTE, Event("job.en_route", now, "dispatch"), fields=fields
        )
        if not moved:
            raise InvalidTransitionError(job.id, (await self.jobs.get(org, job.id)).status.value, "en_route")
        # The predictions of an earlier visit must not calibrate this trip.
        await self.client.delete(keys.job(org, job.id) + ":pred")
        job.eta_s = job.eta_t = job.arrival_window = job.route = job.arrived_t = None
        latest = await self.client.hget(keys.device(org, job.contractor_id), "fix")
        if latest:
            ping = Ping.from_json(latest)
            # A waiting contractor is taken to be where a recent fix put him.
            # The age counts by the clock too, so a back-dated dispatch
            # takes no fix from hours ago.
            age_s = max(now, time.time()) - ping.t
            if age_s <= 2 * self.settings.interval_idle_s:
                await self._refresh_eta(org, job, ping._replace(t=max(ping.t, now)))
            else:
                logger.info(
                    "job %s of org %s dispatched without an ETA: contractor %s's last fix is %.0f s old",
                    job.id, org, job.contractor_id, age_s,
                )  # fmt: skip

    async def cancel(self, org: str, job: Job, cause: str) -> None:
        """Cancel an open job."""
        now = time.time()
        moved = await self.jobs.transition(
            org, job, JobStatus.CANCELLED, Event("job.cancelled", now, cause)
        )
        if not moved:
            current = (await self.jobs.get(org, job.id)).status.value
            raise InvalidTransitionError(job.id, current, JobStatus.CANCELLED.value)

    def prepare_batch(self) -> None:
        """Start the next batch in the coming event-loop turn, if none is running.

        The ping writer calls this when Redis has stored a pipeline of
        frames. The batch then runs right after the frames' handlers queue
        them, one turn earlier than when the first of them starts it.
        """
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def on_pings(
        self, org: str, device_id: str, stored: list[tuple[Ping, str]], result: StoreResult
    ) -> None:
        """Queue a stored frame for the next batch; return once that batch is done.

        The frame's new latest position is published, and the device's
        active jobs advance with its usable pings.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((_Frame(org, device_id, stored, result), done))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        # Frames queued while a batch runs form the next batch, so batches
        # grow with the load. The acks don't wait for Redis's replies to the
        # batch's writes: the writes go out on the ping writer's connection,
        # so Redis runs them before the ingest of any later frame.
        try:
            while self._queue:
                queued, self._queue = self._queue, []
                frames = [frame for frame, _ in queued]
                try:
                    replies = await self.run_batch(frames)
                except Exception:  # noqa: BLE001 - logged; the pings are stored, so the acks go out
                    _log_batch_failure(frames)
                else:
                    confirm = asyncio.get_running_loop().create_task(_confirm(replies, frames))
                    self._confirming.add(confirm)
                    confirm.add_done_callback(self._confirming.discard)
                for _, done in queued:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._drainer = None

    async def run_batch(self, frames: list[_Frame]) -> Awaitable[Any]:
        """Publish new positions and advance the jobs of a batch of stored frames.

        Returns once the batch's writes are sent, with an awaitable of
        Redis's replies to them.

        The jobs come with the frames (the ingest script reads them), and
        ETAs, detector states and live messages are written in one round
        trip. Status changes, late-ping replays and arrivals add round trips
        of their own.
        """
        work = _Work(Batch(self.jobs.commands))
        batch = work.batch
        # Frames of one device in one batch (concurrent HTTP posts, or two
        # connections during a reconnect) are merged. Their job fields were
        # all read before the batch, so one by one the second would undo
        # what the first found. The later frame's fields are the newest.
        merged: dict[tuple[str, str], tuple[_Frame, list[Ping], Ping | None, set[float]]] = {}
        for frame in frames:
            usable = [ping for ping, status in frame.stored if status != "j" and _accurate(ping)]
            latest = max((ping for ping, status in frame.stored if status == "l"),
                         key=lambda ping: ping.t, default=None)  # fmt: skip
            resent = {ping.t for ping, status in frame.stored if status == "r"}
            key = (frame.org, frame.device_id)
            if key in merged:
                _, earlier, earlier_latest, earlier_resent = merged[key]
                usable = sorted([*earlier, *usable], key=lambda ping: ping.t)
                resent |= earlier_resent
                if latest is None or (earlier_latest is not None and earlier_latest.t > latest.t):
                    latest = earlier_latest
            merged[key] = (frame, usable, latest, resent)

        advancing: list[tuple[_Frame, list[Ping], set[float]]] = []
        for frame, usable, latest, resent in merged.values():
            if latest is not None:
                batch.publish(
                    frame.org,
                    {"type": "position", "contractor_id": frame.device_id,
                     "fix": orjson.Fragment(latest.to_json())},
                )  # fmt: skip
            if frame.result.open_jobs and usable:
                advancing.append((frame, usable, resent))
        if advancing:
            # The ingest script returned the jobs' fields, and sequential
            # awaits cost less than tasks: a job that needs no round trip
            # of its own (most of them) never suspends.
            for frame, pings, resent in advancing:
                for values in frame.result.job_fields:
                    raw = loaded_fields(values)
                    if b"doc" not in raw or b"status" not in raw:
                        continue
                    job = job_from_hash(raw)
                    if job.status not in ACTIVE_STATUSES or job.contractor_id != frame.device_id:
                        continue
                    try:
                        await self._advance(frame.org, job, raw, pings, frame.result.interval_s, work, resent)
                    except Exception:
                        logger.exception(
                            "advancing job %s of org %s with contractor %s's pings failed",
                            job.id, frame.org, frame.device_id,
                        )  # fmt: skip
            await self._refresh_etas(work)
        return await batch.send()

    async def _advance(
        self,
        org: str,
        job: Job,
        raw: dict[bytes, bytes],
        pings: list[Ping],
        interval_s: float | None,
        work: _Work,
        resent: set[float] | None = None,
    ) -> None:
        fence = self.fence_for(org, job)
        state, last_t = self._detection_state(org, job, raw)
        en_route_t = float(raw.get(b"en_route_t", b"0") or 0)
        if resent and last_t is not None:
            # A resent ping no newer than the detector's last fix was seen
            # already, so it triggers no replay of the visit.
            # NOTE: a late ping stored just before its process died is
            # skipped the same way when resent, so it never enters detection.
            pings = [ping for ping in pings if ping.t > last_t or ping.t not in resent]
            if not pings:
                return

        if last_t is not None and pings[0].t <= last_t:
            # A late ping: replay the whole visit in fix order.
            pings = await self._history_since(org, job.contractor_id, en_route_t)
            state = DetectionState()
        pings = [ping for ping in pings if ping.t >= en_route_t]

        # Each event keeps the detector's state right after its fix, which
        # its status change stores: a process that dies between two events
        # leaves a detector that finds the second one again.
        events: list[tuple[Arrived | Departed, Ping, DetectionState]] = []
        for ping in pings:
            state, found = step(state, fix_of(ping), fence, self.config)
            events.extend((event, ping, state) for event in found)
        new_last_t = max([p.t for p in pings], default=last_t or 0.0)
        encoded_state = orjson.dumps(state.to_dict())
        detection: dict[str, Any] = {"det": encoded_state, "det_t": repr(new_last_t)}
        if events:
            for event, ping, state_after in events:
                detection_after = {"det": orjson.dumps(state_after.to_dict()), "det_t": repr(ping.t)}
                await self._apply(org, job, event, ping, detection_after)
            if job.status not in ACTIVE_STATUSES:
                detection = {}  # the visit is over; a next visit starts afresh
        # Cached only once the events are applied: when applying fails, the
        # next pings start from the state stored in Redis.
        self._states.put(
            (org, job.id), _Written(raw.get(b"en_route_t", b""), new_last_t, encoded_state, state)
        )
        after = _AfterEta(org, job, pings[-1] if pings else None, interval_s)
        if job.status is JobStatus.EN_ROUTE and pings and self._eta_due(job, pings[-1]):
            # The detector's state goes out in the same HSET as the ETA.
            request = EtaRequest(org, job, pings[-1], raw.get(b"smoother"), detection)
            work.etas.append((request, after))
        else:
            if detection:
                work.batch.hset(keys.job(org, job.id), detection)
            work.followups.append(after)

    def _eta_due(self, job: Job, ping: Ping) -> bool:
        """Return whether ``ping`` refreshes the en-route job's ETA.

        The ping must be accurate enough and newer than the ping behind the
        job's last ETA by at least ``eta_min_interval_s``, less a tenth for
        receivers whose fixes at that very interval jitter. With the default
        of 1 s, a device that sends several fixes a second costs one ETA a
        second, and an older ping never turns the ETA back.
        """
        if not _accurate(ping):
            return False
        if job.eta_t is None:
            return True
        # Fix times near 1.8e9 s are doubles about 2.4e-7 s apart, so a
        # difference of exactly the interval may come out a little short.
        return ping.t - job.eta_t >= ETA_INTERVAL_SHARE * self.settings.eta_min_interval_s - 1e-6

    def _detection_state(
        self, org: str, job: Job, raw: dict[bytes, bytes]
    ) -> tuple[DetectionState, float | None]:
        """Return the job's detector state and the fix time it has seen.

        The state this process wrote last is taken when Redis returned the
        same bytes, which saves decoding them. It is also taken over an
        older state of the same trip. That happens because a frame's job
        fields are read when it is stored, which may be before an earlier
        batch's writes ran.
        """
        raw_state = raw.get(b"det")
        last_t = float(raw[b"det_t"]) if raw.get(b"det_t") else None
        written = self._states.get((org, job.id))
        if written is not None and written.en_route_t == raw.get(b"en_route_t", b""):
            newer = last_t is None or last_t < written.det_t
            if raw_state == written.encoded or newer:
                return written.state, written.det_t
        if raw_state:
            return DetectionState.from_dict(orjson.loads(raw_state)), last_t
        return DetectionState(), last_t

    async def _refresh_etas(self, work: _Work) -> None:
        """Refresh the ETAs the batch asked for, then run each job's follow-up."""
        if work.etas:
            requests = [request for request, _ in work.etas]
            updates = await self.etas.update_many(requests, work.batch)
            for (request, after), update in zip(work.etas, updates):
                if update is None and request.extra_fields:
                    work.batch.hset(keys.job(request.org, request.job.id), request.extra_fields)
                after.update = update
                work.followups.append(after)
        for after in work.followups:
            flags_before = after.job.flags
            try:
                await self._follow_up(after, work.batch)
            except Exception:
                logger.exception("follow-up of job %s of org %s failed", after.job.id, after.org)
            changed = after.job.flags is not flags_before
            if changed and after.update is not None and after.update.message is not None:
                # The ETA message goes out after the follow-up's flag events,
                # so it must carry the flags they set.
                after.update.message["job"] = eta_update_json(after.job)

    async def _follow_up(self, after: _AfterEta, batch: Batch) -> None:
        """Set or clear the late and stale flags and advise the device's interval."""
        org, job, ping, update = after.org, after.job, after.ping, after.update
        if update is not None and ping is not None:
            await self._flag_late(org, job, ping, update)
        if "stale" in job.flags and ping is not None and job.status in ACTIVE_STATUSES:
            flags = [flag for flag in job.flags if flag != "stale"]
            await self.jobs.transition(
                org, job, None, Event("job.stale_cleared", ping.t, "ping", ping_summary(ping)),
                expected=frozenset({job.status}), flags=flags,
            )
        interval = self._advised_interval(job)
        if interval is not None and interval != after.interval_s:
            batch.hset(keys.device(org, job.contractor_id), {"interval": repr(interval)})

    async def _apply(
        self, org: str, job: Job, event: Arrived | Departed, ping: Ping, detection: dict[str, Any]
    ) -> None:
        """Change the job's status for a geofence event; ``detection`` is the detector's state to store with it."""
        summary = ping_summary(ping)
        if isinstance(event, Arrived):
            fields = {"arrived_t": repr(event.t), "eta_s": "0", "eta_t": repr(event.t), **detection}
            # An arrival inside the window, found late from an offline
            # batch, also undoes a no-show flag raised meanwhile.
            cleared = ("late", "stale", "no_show") if event.t <= job.window.end_t else ("late", "stale")
            flags = [flag for flag in job.flags if flag not in cleared]
            no_show_cleared = "no_show" in job.flags and "no_show" not in flags
            if await self.jobs.transition(
                org, job, JobStatus.ARRIVED, Event("job.arrived", event.t, "geofence", summary),
                fields=fields, flags=flags,
            ):
                if no_show_cleared:
                    # Its own event, so that a webhook subscribed to no-shows
                    # learns that this one was undone.
                    await self.jobs.transition(
                        org, job, None, Event("job.no_show_cleared", event.t, "geofence", summary),
                        expected=frozenset({JobStatus.ARRIVED}),
                    )
                await self.etas.record_arrival(org, job, event.t)
            return
        last_visit = job.visit >= len(job.visits) - 1
        if last_visit:
            await self.jobs.transition(
                org, job, JobStatus.COMPLETED, Event("job.completed", event.t, "geofence", summary),
                fields={"completed_t": repr(event.t), **detection},
            )
            return
        detail = {"visit": job.visit}
        fields = {
            "visit": str(job.visit + 1), "det": orjson.dumps(DetectionState().to_dict()),
            "det_t": detection["det_t"], **TRIP_CLEARED,
        }  # fmt: skip
        if await self.jobs.transition(
            org, job, JobStatus.SCHEDULED,
            Event("job.completed", event.t, "geofence", summary, detail), fields=fields,
            flags=[],
        ):
            job.visit += 1
            job.eta_s = job.eta_t = job.arrival_window = job.route = job.arrived_t = None

    async def _refresh_eta(self, org: str, job: Job, ping: Ping) -> None:
        """Refresh one job's ETA now, outside a batch (after a dispatch)."""
        if not _accurate(ping):
            return
        smoother = await self.client.hget(keys.job(org, job.id), "smoother")
        work = _Work(Batch(self.jobs.commands))
        work.etas.append((EtaRequest(org, job, ping, smoother), _AfterEta(org, job, ping, None)))
        await self._refresh_etas(work)
        await work.batch.execute()

    async def _flag_late(self, org: str, job: Job, ping: Ping, update: EtaUpdate) -> None:
        late = ping.t + update.eta_s > job.window.end_t
        if late and "late" not in job.flags:
            await self.jobs.transition(
                org, job, None,
                Event("job.late", ping.t, "eta", ping_summary(ping), {"eta_s": update.eta_s}),
                expected=frozenset({JobStatus.EN_ROUTE}), flags=[*job.flags, "late"],
            )
        elif not late and "late" in job.flags:
            await self.jobs.transition(
                org, job, None,
                Event("job.late_cleared", ping.t, "eta", ping_summary(ping), {"eta_s": update.eta_s}),
                expected=frozenset({JobStatus.EN_ROUTE}),
                flags=[flag for flag in job.flags if flag != "late"],
            )

    def _advised_interval(self, job: Job) -> float | None:
        settings = self.settings
        if job.status is JobStatus.ARRIVED or (job.eta_s is not None and job.eta_s < 180):
            return settings.interval_near_s
        if job.status is JobStatus.EN_ROUTE:
            return settings.interval_moving_s
        return None

    async def _history_since(self, org: str, device_id: str, since_t: float) -> list[Ping]:
        raw = await self.client.zrangebyscore(keys.history(org, device_id), since_t, "+inf")
        pings = [Ping.from_json(item) for item in raw]
        return [p for p in pings if p.acc is None or p.acc <= MAX_USEFUL_ACCURACY_M]
