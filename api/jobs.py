"""REST routes for jobs, webhooks and the event feed."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.auth import require_org, runtime_of
from tracker import keys, orgs
from tracker.jobs import (
    InvalidTransitionError,
    Job,
    JobExistsError,
    JobNotFoundError,
    JobStatus,
    Visit,
    parse_iso,
)
from tracker.lifecycle import Lifecycle, build_fence

logger = logging.getLogger(__name__)
router = APIRouter()

MAX_VISITS = 20
# Bounds on appointment windows; anything outside is a typo or a unit error.
MAX_WINDOW_AGE_S = 30 * 86400.0
MAX_WINDOW_AHEAD_S = 400 * 86400.0
MAX_WINDOW_LENGTH_S = 31 * 86400.0


class WindowIn(BaseModel):
    """An appointment window with ISO 8601 times."""

    start: str
    end: str


class VisitIn(BaseModel):
    """One appointment of a job."""

    window: WindowIn


class JobIn(BaseModel):
    """Body of ``POST /v1/jobs``."""

    id: str
    contractor_id: str
    site: dict[str, Any]
    window: WindowIn | None = None
    visits: list[VisitIn] | None = Field(default=None, max_length=MAX_VISITS)
    address: str | None = Field(default=None, max_length=500)


class DispatchIn(BaseModel):
    """Optional body of ``POST /v1/jobs/{id}/dispatch``."""

    at: str | None = Field(default=None, description="when the contractor set off, ISO 8601")


class WebhookIn(BaseModel):
    """Body of ``POST /v1/webhooks``."""

    url: str = Field(min_length=1, max_length=2000)
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=50)


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code, media_type="application/json")


def lifecycle_of(request: Request) -> Lifecycle:
    return runtime_of(request).services["lifecycle"]  # type: ignore[no-any-return]


def _visits(body: JobIn) -> list[Visit]:
    if body.window is not None and body.visits is not None:
        raise ValueError(
            f"give either window or visits, not both, got window and {len(body.visits)} visits"
        )
    if body.visits is not None:
        if not body.visits:
            raise ValueError(f"visits must contain 1 to {MAX_VISITS} visits, got []")
        windows = [visit.window for visit in body.visits]
    elif body.window is not None:
        windows = [body.window]
    else:
        raise ValueError("window is missing: give window {start, end} or visits")
    visits: list[Visit] = []
    for index, window in enumerate(windows):
        prefix = "window" if body.visits is None else f"visits[{index}].window"
        start_t = parse_iso(f"{prefix}.start", window.start)
        end_t = parse_iso(f"{prefix}.end", window.end)
        if end_t <= start_t:
            raise ValueError(
                f"{prefix}.end must be after {prefix}.start, got {window.start} .. {window.end}"
            )
        now = time.time()
        if not now - MAX_WINDOW_AGE_S <= start_t <= now + MAX_WINDOW_AHEAD_S:
            raise ValueError(
                f"{prefix}.start must lie within 30 days before and 400 days after now, "
                f"got {window.start}"
            )
        if end_t - start_t > MAX_WINDOW_LENGTH_S:
            raise ValueError(
                f"{prefix} must be at most 31 days long, got {window.start} .. {window.end}"
            )
        if visits and start_t < visits[-1].end_t:
            previous = f"visits[{index - 1}].window"
            raise ValueError(
                f"{prefix}.start must not be before {previous}.end, because visits must be "
                f"in time order and must not overlap, got {window.start} before "
                f"{windows[index - 1].end}"
            )
        visits.append(Visit(start_t, end_t))
    return visits


@router.post("/v1/jobs", status_code=201)
async def create_job(body: JobIn, request: Request, org: str = Depends(require_org)) -> Response:
    runtime = runtime_of(request)
    try:
        keys.check_id("id", body.id)
        keys.check_id("contractor_id", body.contractor_id)
        visits = _visits(body)
        build_fence(body.id, body.site)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    if await orgs.get_contractor(runtime.redis, org, body.contractor_id) is None:
        raise HTTPException(
            422, f"contractor_id {body.contractor_id!r} not found; create it with POST /v1/contractors"
        )
    job = Job(body.id, body.contractor_id, body.site, visits, body.address)
    try:
        await lifecycle_of(request).jobs.create(org, job)
    except JobExistsError as error:
        raise HTTPException(409, str(error)) from None
    return _json(job.public([]), 201)


@router.get("/v1/jobs")
async def list_jobs(
    request: Request,
    org: str = Depends(require_org),
    status: str = Query("open", description="open, all, or one status"),
) -> Response:
    runtime = runtime_of(request)
    lifecycle = lifecycle_of(request)
    allowed = {"open", "all", *(s.value for s in JobStatus)}
    if status not in allowed:
        raise HTTPException(422, f"status must be one of {', '.join(sorted(allowed))}, got {status!r}")
    if status == "open":
        ids = sorted(member.decode() for member in await runtime.redis.smembers(keys.open_jobs(org)))
    else:
        ids = sorted(await lifecycle.all_job_ids(org))
    jobs = [job for job, _ in await lifecycle.jobs.get_many(org, ids)]
    if status not in ("open", "all"):
        jobs = [job for job in jobs if job.status.value == status]
    return _json({"jobs": [job.public() for job in jobs]})


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request, org: str = Depends(require_org)) -> Response:
    jobs = lifecycle_of(request).jobs
    try:
        job = await jobs.get(org, job_id)
    except JobNotFoundError as error:
        raise HTTPException(404, str(error)) from None
    return _json(job.public(await jobs.timeline(org, job_id)))


async def _move(
    request: Request, org: str, job_id: str, target: JobStatus, cause: str, at_t: float | None = None
) -> Response:
    lifecycle = lifecycle_of(request)
    try:
        job = await lifecycle.jobs.get(org, job_id)
    except JobNotFoundError as error:
        raise HTTPException(404, str(error)) from None
    try:
        if target is JobStatus.EN_ROUTE:
            await lifecycle.dispatch(org, job, at_t)
        else:
            await lifecycle.cancel(org, job, cause)
    except InvalidTransitionError as error:
        raise HTTPException(409, str(error)) from None
    fresh = await lifecycle.jobs.get(org, job_id)
    return _json(fresh.public(await lifecycle.jobs.timeline(org, job_id)))


@router.post("/v1/jobs/{job_id}/dispatch")
async def dispatch_job(
    job_id: str, request: Request, body: DispatchIn | None = None, org: str = Depends(require_org)
) -> Response:
    at_t = None
    if body is not None and body.at is not None:
        settings = runtime_of(request).settings
        try:
            at_t = parse_iso("at", body.at)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        now = time.time()
        if not now - settings.history_s <= at_t <= now + settings.max_future_s:
            raise HTTPException(
                422,
                f"at must lie within the {settings.history_days:g}-day history and at most "
                f"{settings.max_future_s:.0f} s ahead, got {body.at}",
            )
        # A dispatch back-dated into an earlier visit would count that
        # visit's pings for the next one.
        newest = await runtime_of(request).redis.xrevrange(keys.job_events(org, job_id), count=1)
        last = orjson.loads(newest[0][1][b"e"]) if newest else None
        if last is not None and at_t < last["t"]:
            raise HTTPException(
                422,
                f"at must not be before the job's last event ({last['type']} at {last['at']}), "
                f"got {body.at}",
            )
    return await _move(request, org, job_id, JobStatus.EN_ROUTE, "dispatch", at_t)


@router.post("/v1/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request, org: str = Depends(require_org)) -> Response:
    return await _move(request, org, job_id, JobStatus.CANCELLED, "cancel")


# The largest sequence number of a Redis stream id.
MAX_SEQUENCE = 2**64 - 1


@router.get("/v1/events")
async def read_events(
    request: Request,
    org: str = Depends(require_org),
    after: str = Query("0-0", description="cursor: the id of the last event read"),
    since: str | None = Query(None, description="ISO 8601 time: start with the events stored from then on"),
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    runtime = runtime_of(request)
    start = f"({after}"
    cursor = after
    if since is not None:
        if after != "0-0":
            raise HTTPException(422, f"give after or since, not both (after {after!r}, since {since!r})")
        try:
            since_t = parse_iso("since", since)
        except ValueError as error:
            hint = "; encode + as %2B in a URL" if " " in since else ""
            raise HTTPException(422, f"{error}{hint}") from None
        # A stream id starts with the time the event was stored, in Unix ms.
        since_ms = max(0, math.floor(since_t * 1000))
        start = f"{since_ms}-0"
        # With no event yet, the cursor still points at that time, so that
        # paging on from it skips everything older.
        cursor = f"{since_ms - 1}-{MAX_SEQUENCE}" if since_ms > 0 else "0-0"
    try:
        entries = await runtime.redis.xrange(keys.org_events(org), start, "+", count=limit)
    except Exception as error:  # redis.ResponseError: invalid stream id
        if "Invalid stream ID" not in str(error):
            raise
        raise HTTPException(
            422, f"after must be a cursor returned by this endpoint, such as 0-0, got {after!r}"
        ) from None
    events = []
    for entry_id, fields in entries:
        body = orjson.loads(fields[b"e"])
        body["id"] = entry_id.decode()
        events.append(body)
    if events:
        cursor = events[-1]["id"]
    return _json({"events": events, "cursor": cursor})


@router.post("/v1/webhooks", status_code=201)
async def create_webhook(
    body: WebhookIn, request: Request, org: str = Depends(require_org)
) -> Response:
    webhooks = runtime_of(request).services["webhooks"]
    try:
        hook_id, secret = await webhooks.subscribe(org, body.url, body.events)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    return _json({"id": hook_id, "secret": secret, "url": body.url, "events": body.events}, 201)


@router.get("/v1/webhooks")
async def list_webhooks(request: Request, org: str = Depends(require_org)) -> Response:
    webhooks = runtime_of(request).services["webhooks"]
    return _json({"webhooks": await webhooks.list(org)})


@router.get("/v1/webhooks/deliveries")
async def list_deliveries(request: Request, org: str = Depends(require_org)) -> Response:
    webhooks = runtime_of(request).services["webhooks"]
    return _json({"deliveries": await webhooks.deliveries(org)})


@router.delete("/v1/webhooks/{hook_id}", status_code=204)
async def delete_webhook(hook_id: str, request: Request, org: str = Depends(require_org)) -> Response:
    webhooks = runtime_of(request).services["webhooks"]
    if not await webhooks.unsubscribe(org, hook_id):
        raise HTTPException(404, f"webhook {hook_id!r} not found")
    return Response(status_code=204)


@router.get("/v1/eta/coverage")
async def eta_coverage(request: Request, org: str = Depends(require_org)) -> Response:
    """Share of arrivals inside the window predicted at fixed lead times."""
    runtime = runtime_of(request)
    raw = await runtime.redis.lrange(keys.meta(org) + ":coverage", 0, -1)
    by_lead: dict[float, list[dict[str, Any]]] = {}
    for item in raw:
        for sample in orjson.loads(item)["coverage"]:
            by_lead.setdefault(sample["lead_s"], []).append(sample)
    lead_times = []
    for lead_s in sorted(by_lead):
        samples = by_lead[lead_s]
        lead_times.append(
            {
                "lead_s": lead_s,
                "arrivals": len(samples),
                "coverage": sum(s["inside"] for s in samples) / len(samples),
                "mean_width_s": sum(s["width_s"] for s in samples) / len(samples),
            }
        )
    return _json({"arrivals": len(raw), "lead_times": lead_times})
