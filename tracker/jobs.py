"""Jobs: their record in Redis, the status machine and the timeline.

Statuses move only along :data:`TRANSITIONS`::

    scheduled -> en_route -> arrived -> completed
              \\-> cancelled (from any open status)

A job with several visits (appointments) returns from ``arrived`` to
``scheduled`` when a visit other than the last one completes. The event
``job.completed`` then carries the visit number, and the job stays open.

Every change runs in one Lua script call (``transition.lua``) that checks
the current status, writes the new one, appends the event to the job's
timeline and to the organisation's event stream, and publishes it. So two
server processes that see the same arrival can't both record it, and a
dispatcher's cancel can't be overwritten by a late arrival.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from tracker import keys
from tracker.store import CommandPipe, RedisClient, load_script

logger = logging.getLogger(__name__)

# Timeline and event streams keep about this many entries.
MAX_JOB_EVENTS = 1_000
MAX_ORG_EVENTS = 100_000


class JobStatus(enum.StrEnum):
    """Status of a job."""

    SCHEDULED = "scheduled"
    EN_ROUTE = "en_route"
    ARRIVED = "arrived"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


OPEN_STATUSES = frozenset({JobStatus.SCHEDULED, JobStatus.EN_ROUTE, JobStatus.ARRIVED})
ACTIVE_STATUSES = frozenset({JobStatus.EN_ROUTE, JobStatus.ARRIVED})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.SCHEDULED: frozenset({JobStatus.EN_ROUTE, JobStatus.CANCELLED}),
    JobStatus.EN_ROUTE: frozenset({JobStatus.ARRIVED, JobStatus.CANCELLED}),
    JobStatus.ARRIVED: frozenset(
        {JobStatus.COMPLETED, JobStatus.SCHEDULED, JobStatus.CANCELLED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class JobError(Exception):
    """Base of the job errors."""


class JobNotFoundError(JobError, LookupError):
    """No job with that id in the organisation."""


class JobExistsError(JobError, ValueError):
    """A job with that id exists already."""


class InvalidTransitionError(JobError, ValueError):
    """The requested status change does not start from the job's current status."""

    def __init__(self, job_id: str, current: str, target: str) -> None:
        self.job_id, self.current, self.target = job_id, current, target
        allowed = ", ".join(sorted(TRANSITIONS.get(JobStatus(current), ()))) or "none"
        super().__init__(
            f"job {job_id!r} is {current}; it can't move to {target} "
            f"(allowed from {current}: {allowed})"
        )


@functools.lru_cache(maxsize=8192)
def iso(t: float) -> str:
    """Format Unix seconds as ISO 8601 in UTC."""
    # Cached: a job's window is formatted again for every update sent.
    return datetime.fromtimestamp(t, UTC).isoformat()


def parse_iso(field_name: str, value: str) -> float:
    """Parse an ISO 8601 time with a UTC offset into Unix seconds."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field_name} must be an ISO 8601 time, got {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError(
            f"{field_name} must carry a UTC offset such as +00:00 or Z, got {value!r}"
        )
    return moment.timestamp()


@dataclass(slots=True)
class Visit:
    """One appointment of a job: its promised window in Unix seconds."""

    start_t: float
    end_t: float

    def to_json(self) -> dict[str, str]:
        return {"start": iso(self.start_t), "end": iso(self.end_t)}


@dataclass(slots=True)
class Job:
    """A job as stored: the order and its current status."""

    id: str
    contractor_id: str
    site: dict[str, Any]
    visits: list[Visit]
    address: str | None = None
    status: JobStatus = JobStatus.SCHEDULED
    visit: int = 0
    flags: list[str] = field(default_factory=list)
    eta_s: float | None = None
    eta_t: float | None = None
    arrival_window: dict[str, float] | None = None
    route: list[list[float]] | None = None
    created_t: float = 0.0
    #: When the job last went en route (Unix seconds), if it has.
    en_route_t: float | None = None
    #: When the contractor arrived on the current visit (Unix seconds), if he has.
    arrived_t: float | None = None

    @property
    def window(self) -> Visit:
        """The window of the current visit."""
        return self.visits[min(self.visit, len(self.visits) - 1)]

    def public(self, timeline: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Return the job as the REST API shows it."""
        body: dict[str, Any] = {
            "id": self.id,
            "contractor_id": self.contractor_id,
            "status": self.status.value,
            "flags": self.flags,
            "site": self.site,
            "window": self.window.to_json(),
            "address": self.address,
            "visit": self.visit,
            "visits": [visit.to_json() for visit in self.visits],
            "eta_s": self.eta_s,
            "arrival_window": window_json(self.arrival_window),
        }
        if timeline is not None:
            body["timeline"] = timeline
        return body


def eta_update_json(job: Job) -> dict[str, Any]:
    """Return the fields of a job that an ETA refresh may change, as live messages carry them."""
    return {
        "id": job.id,
        "contractor_id": job.contractor_id,
        "status": job.status.value,
        "flags": job.flags,
        "eta_s": job.eta_s,
        "arrival_window": window_json(job.arrival_window),
    }


def window_json(window: dict[str, float] | None) -> dict[str, Any] | None:
    """Render a stored arrival window with ISO times."""
    if not window:
        return None
    return {
        "earliest": iso(window["earliest_t"]),
        "latest": iso(window["latest_t"]),
        "confidence": window["confidence"],
    }


LOADED_FIELDS = keys.JOB_LOADED_FIELDS
LOADED_FIELD_NAMES = tuple(name.encode() for name in LOADED_FIELDS)


def loaded_fields(values: list[bytes | None]) -> dict[bytes, bytes]:
    """Return an HMGET reply of ``LOADED_FIELDS`` as a dict without the missing fields."""
    return {name: value for name, value in zip(LOADED_FIELD_NAMES, values) if value is not None}


@functools.lru_cache(maxsize=10_000)
def _document(raw: bytes) -> dict[str, Any]:
    # Cached, since every ping of a job reads the job again: the result is
    # shared, so callers must not change it (a job's document never changes).
    return orjson.loads(raw)  # type: ignore[no-any-return]


def job_from_hash(raw: dict[bytes, bytes], *, with_route: bool = False) -> Job:
    """Rebuild a job from its Redis hash; the stored route only when asked for."""
    doc = _document(raw[b"doc"])
    job = Job(
        id=doc["id"],
        contractor_id=doc["contractor_id"],
        site=doc["site"],
        visits=[Visit(v["start_t"], v["end_t"]) for v in doc["visits"]],
        address=doc.get("address"),
        created_t=doc.get("created_t", 0.0),
    )
    job.status = JobStatus(raw[b"status"].decode())
    job.visit = int(raw.get(b"visit", b"0"))
    job.flags = orjson.loads(raw.get(b"flags", b"[]"))
    if raw.get(b"eta_s"):
        job.eta_s = float(raw[b"eta_s"])
        job.eta_t = float(raw[b"eta_t"])
    if raw.get(b"awin"):
        job.arrival_window = orjson.loads(raw[b"awin"])
    if with_route and raw.get(b"route"):
        job.route = orjson.loads(raw[b"route"])
    if raw.get(b"en_route_t"):
        job.en_route_t = float(raw[b"en_route_t"])
    if raw.get(b"arrived_t"):
        job.arrived_t = float(raw[b"arrived_t"])
    return job


def job_document(job: Job) -> bytes:
    """Serialize the fields of a job that never change."""
    return orjson.dumps(
        {
            "id": job.id,
            "contractor_id": job.contractor_id,
            "site": job.site,
            "visits": [{"start_t": v.start_t, "end_t": v.end_t} for v in job.visits],
            "address": job.address,
            "created_t": job.created_t,
        }
    )


@dataclass(frozen=True, slots=True)
class Event:
    """A timeline event before it is stored."""

    type: str
    t: float
    cause: str
    ping: dict[str, float] | None = None
    detail: dict[str, Any] | None = None

    def body(self, job: Job, status: str, flags: list[str]) -> dict[str, Any]:
        """Return the event as stored, published and posted to webhooks."""
        body: dict[str, Any] = {
            "type": self.type,
            "job_id": job.id,
            "contractor_id": job.contractor_id,
            "t": self.t,
            "at": iso(self.t),
            "cause": self.cause,
            "status": status,
            "flags": flags,
        }
        if self.ping is not None:
            body["ping"] = self.ping
        if self.detail:
            body.update(self.detail)
        return body


class JobStore:
    """Job records, transitions and timelines of all organisations."""

    def __init__(self, client: RedisClient, commands: CommandPipe | None = None) -> None:
        self.client = client
        self.commands = commands or CommandPipe(client)
        self._transition = load_script("transition.lua")
        self._sha: str | None = None

    async def create(self, org: str, job: Job) -> None:
        """Store a new job as scheduled.

        Raises
        ------
        JobExistsError
            When the organisation has a job with that id.
        """
        job.created_t = job.created_t or time.time()
        created = await self.client.hsetnx(keys.job(org, job.id), "doc", job_document(job))
        if not created:
            raise JobExistsError(f"job {job.id!r} exists already")
        await self.client.hset(
            keys.job(org, job.id), mapping={"status": job.status.value, "visit": 0, "flags": "[]"}
        )
        await self.client.sadd(keys.open_jobs(org), job.id)
        logger.info("created job %s for contractor %s in org %s", job.id, job.contractor_id, org)

    async def get(self, org: str, job_id: str) -> Job:
        """Load a job.

        Raises
        ------
        JobNotFoundError
            When there is no such job.
        """
        raw = await self.client.hgetall(keys.job(org, job_id))
        if not raw or b"doc" not in raw or b"status" not in raw:
            raise JobNotFoundError(f"job {job_id!r} not found")
        return job_from_hash(raw, with_route=True)

    async def get_many(self, org: str, job_ids: list[str]) -> list[tuple[Job, dict[bytes, bytes]]]:
        """Load several jobs in one round trip; missing ones are left out.

        The raw hashes have the fields in ``LOADED_FIELDS`` (not the stored
        route).
        """
        replies = await self.commands.execute(
            [("HMGET", keys.job(org, job_id), *LOADED_FIELDS) for job_id in job_ids]
        )
        found = []
        for reply in replies:
            raw = loaded_fields(reply)
            if b"doc" in raw and b"status" in raw:
                found.append((job_from_hash(raw), raw))
        return found

    async def timeline(self, org: str, job_id: str) -> list[dict[str, Any]]:
        """Return the job's events, oldest first."""
        entries = await self.client.xrange(keys.job_events(org, job_id))
        return [orjson.loads(fields[b"e"]) for _, fields in entries]

    async def transition(
        self,
        org: str,
        job: Job,
        target: JobStatus | None,
        event: Event,
        *,
        expected: frozenset[JobStatus] | None = None,
        fields: dict[str, Any] | None = None,
        flags: list[str] | None = None,
    ) -> bool:
        """Move a job to ``target`` (or only record a flag event when None).

        The script checks that the stored status is one of ``expected``
        (default: the statuses from which ``target`` may be reached) and
        returns False, changing nothing, when it is not.
        """
        if expected is None:
            if target is None:
                expected = frozenset(JobStatus)
            else:
                expected = frozenset(s for s, ends in TRANSITIONS.items() if target in ends)
        status = target.value if target is not None else job.status.value
        new_flags = flags if flags is not None else job.flags
        body = event.body(job, status, new_flags)
        extra: list[Any] = []
        for name, value in (fields or {}).items():
            extra += [name, value if isinstance(value, (str, bytes)) else orjson.dumps(value)]
        if self._sha is None:
            self._sha = await self.client.script_load(self._transition)
        args = [
            ",".join(sorted(s.value for s in expected)),
            status,
            orjson.dumps(new_flags),
            orjson.dumps(body),
            MAX_JOB_EVENTS,
            MAX_ORG_EVENTS,
            job.contractor_id,
            job.id,
            "1" if status in {s.value for s in ACTIVE_STATUSES} else "0",
            "1" if status in {s.value for s in OPEN_STATUSES} else "0",
            keys.live_channel(org),
            *extra,
        ]
        job_keys = [
            keys.job(org, job.id),
            keys.job_events(org, job.id),
            keys.org_events(org),
            keys.device(org, job.contractor_id),
            keys.open_jobs(org),
        ]
        try:
            stored = await self.client.evalsha(self._sha, len(job_keys), *job_keys, *args)
        except NoScriptError:
            # A restarted Redis (or one whose append-only file was rewritten)
            # has lost the script. redis-py's message leaves out "NOSCRIPT".
            logger.info("transition script missing in redis; loading it again (org %s job %s)", org, job.id)
            self._sha = await self.client.script_load(self._transition)
            stored = await self.client.evalsha(self._sha, len(job_keys), *job_keys, *args)
        if not stored:
            return False
        job.status = JobStatus(status)
        job.flags = new_flags
        logger.info(
            "job %s of org %s: %s (%s) at t=%.1f", job.id, org, event.type, event.cause, event.t
        )
        return True

