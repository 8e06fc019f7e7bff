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

import logging
import time
from typing import Any

import orjson

from geofence.detection import Arrived, Departed, DetectionConfig, DetectionState, Fix, step
from geofence.errors import InvalidFenceError
from geofence.fences import Fence, fence_from_site
from tracker import keys
from tracker.etas import EtaService
from tracker.jobs import ACTIVE_STATUSES, Event, InvalidTransitionError, Job, JobStatus, JobStore
from tracker.pings import Ping
from tracker.settings import Settings
from tracker.store import RedisClient, StoreResult

logger = logging.getLogger(__name__)

# Fixes less accurate than this are stored but drive neither geofences nor ETAs.
MAX_USEFUL_ACCURACY_M = 200.0
# Status changes to ignore when a replay reproduces them.
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
    ) -> None:
        self.client = client
        self.settings = settings
        self.jobs = JobStore(client)
        self.etas = etas
        self.config = config or DetectionConfig(
            arrival_dwell_s=settings.geofence_dwell_s,
            min_on_site_s=settings.geofence_min_on_site_s,
            departure_grace_s=settings.geofence_grace_s,
            max_accuracy_m=settings.geofence_max_accuracy_m,
            max_speed_mps=settings.max_speed_mps,
        )
        self._fences: dict[tuple[str, str], Fence] = {}

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
        fields = {"det": DetectionState().to_dict(), "det_t": "", "en_route_t": repr(now)}
        moved = await self.jobs.transition(
            org, job, JobStatus.EN_ROUTE, Event("job.en_route", now, "dispatch"), fields=fields
        )
        if not moved:
            raise InvalidTransitionError(job.id, (await self.jobs.get(org, job.id)).status.value, "en_route")
        latest = await self.client.hget(keys.device(org, job.contractor_id), "fix")
        if latest:
            ping = Ping.from_json(latest)
            await self._refresh_eta(org, job, ping)

    async def cancel(self, org: str, job: Job, cause: str) -> None:
        """Cancel an open job."""
        now = time.time()
        moved = await self.jobs.transition(
            org, job, JobStatus.CANCELLED, Event("job.cancelled", now, cause)
        )
        if not moved:
            current = (await self.jobs.get(org, job.id)).status.value
            raise InvalidTransitionError(job.id, current, JobStatus.CANCELLED.value)

    async def on_pings(
        self, org: str, device_id: str, stored: list[tuple[Ping, str]], result: StoreResult
    ) -> None:
        """Advance the device's active jobs with its newly stored pings."""
        if not result.open_jobs:
            return
        usable = [
            ping
            for ping, status in stored
            if status != "j" and (ping.acc is None or ping.acc <= MAX_USEFUL_ACCURACY_M)
        ]
        if not usable:
            return
        for job, raw in await self.jobs.get_many(org, result.open_jobs):
            if job.status not in ACTIVE_STATUSES or job.contractor_id != device_id:
                continue
            await self._advance(org, job, raw, usable, result.interval_s)

    async def _advance(
        self,
        org: str,
        job: Job,
        raw: dict[bytes, bytes],
        pings: list[Ping],
        interval_s: float | None = None,
    ) -> None:
        fence = self.fence_for(org, job)
        state = DetectionState.from_dict(orjson.loads(raw[b"det"])) if raw.get(b"det") else DetectionState()
        last_t = float(raw[b"det_t"]) if raw.get(b"det_t") else None
        en_route_t = float(raw.get(b"en_route_t", b"0") or 0)

        if last_t is not None and pings[0].t <= last_t:
            # A late ping: replay the whole visit in fix order.
            pings = await self._history_since(org, job.contractor_id, en_route_t)
            state = DetectionState()
        pings = [ping for ping in pings if ping.t >= en_route_t]

        events: list[tuple[Arrived | Departed, Ping]] = []
        for ping in pings:
            state, found = step(state, fix_of(ping), fence, self.config)
            events.extend((event, ping) for event in found)
        new_last_t = max([p.t for p in pings], default=last_t or 0.0)
        detection = {"det": orjson.dumps(state.to_dict()), "det_t": repr(new_last_t)}
        if events:
            # Store the detector before the status changes it caused.
            await self.client.hset(keys.job(org, job.id), mapping=detection)
            for event, ping in events:
                await self._apply(org, job, event, ping)
            detection = {}
        stored = False
        if job.status is JobStatus.EN_ROUTE and pings:
            # The detector's state goes out in the same pipeline as the ETA.
            stored = await self._refresh_eta(org, job, pings[-1], raw.get(b"smoother"), detection)
        if detection and not stored:
            await self.client.hset(keys.job(org, job.id), mapping=detection)
        if "stale" in job.flags and pings:
            flags = [flag for flag in job.flags if flag != "stale"]
            await self.jobs.transition(
                org, job, None, Event("job.stale_cleared", pings[-1].t, "ping", ping_summary(pings[-1])),
                expected=frozenset({job.status}), flags=flags,
            )
        await self._advise_interval(org, job, interval_s)

    async def _apply(self, org: str, job: Job, event: Arrived | Departed, ping: Ping) -> None:
        summary = ping_summary(ping)
        if isinstance(event, Arrived):
            fields = {"arrived_t": repr(event.t), "eta_s": "0", "eta_t": repr(event.t)}
            flags = [flag for flag in job.flags if flag not in ("late", "stale")]
            if await self.jobs.transition(
                org, job, JobStatus.ARRIVED, Event("job.arrived", event.t, "geofence", summary),
                fields=fields, flags=flags,
            ):
                await self.etas.record_arrival(org, job, event.t)
            return
        last_visit = job.visit >= len(job.visits) - 1
        if last_visit:
            await self.jobs.transition(
                org, job, JobStatus.COMPLETED, Event("job.completed", event.t, "geofence", summary),
                fields={"completed_t": repr(event.t)},
            )
            return
        detail = {"visit": job.visit}
        fields = {"visit": str(job.visit + 1), "det": orjson.dumps(DetectionState().to_dict())}
        if await self.jobs.transition(
            org, job, JobStatus.SCHEDULED,
            Event("job.completed", event.t, "geofence", summary, detail), fields=fields,
            flags=[],
        ):
            job.visit += 1

    async def _refresh_eta(
        self,
        org: str,
        job: Job,
        ping: Ping,
        smoother: bytes | None = None,
        extra_fields: dict[str, Any] | None = None,
    ) -> bool:
        """Refresh the ETA; return whether the job hash was written (with ``extra_fields``)."""
        if ping.acc is not None and ping.acc > MAX_USEFUL_ACCURACY_M:
            return False
        update = await self.etas.update(org, job, ping, smoother, extra_fields)
        if update is None:
            return False
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
        return True

    async def _advise_interval(self, org: str, job: Job, current_s: float | None) -> None:
        settings = self.settings
        if job.status is JobStatus.ARRIVED or (job.eta_s is not None and job.eta_s < 180):
            interval = settings.interval_near_s
        elif job.status is JobStatus.EN_ROUTE:
            interval = settings.interval_moving_s
        else:
            return
        if interval != current_s:
            await self.client.hset(keys.device(org, job.contractor_id), "interval", repr(interval))

    async def _history_since(self, org: str, device_id: str, since_t: float) -> list[Ping]:
        raw = await self.client.zrangebyscore(keys.history(org, device_id), since_t, "+inf")
        pings = [Ping.from_json(item) for item in raw]
        return [p for p in pings if p.acc is None or p.acc <= MAX_USEFUL_ACCURACY_M]
