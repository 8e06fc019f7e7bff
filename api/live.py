"""Live views: tracking links, fleet queries, their WebSockets and the pages."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import (
    CLOSE_TRY_AGAIN,
    STORAGE_ERRORS,
    bearer_token,
    close_unavailable,
    require_org,
    runtime_of,
)
from tracker import fleet, keys, orgs, tracking
from tracker.jobs import JobNotFoundError
from tracker.live import STALL_TIMEOUT_S, FleetViewer, LiveHub, Viewer

logger = logging.getLogger(__name__)
router = APIRouter()

CLOSE_POLICY = 1008
CLOSE_RESTART = 1012
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_EXPIRED = 4410
MAX_NEARBY = 100


class PrivacyIn(BaseModel):
    """Body of ``PUT /v1/org/privacy``: reveal the position only this close.

    Like the device protocol, the settings take finite JSON numbers only,
    never strings or booleans, and a body with an unknown field is rejected
    rather than read as "both unset".
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    reveal_within_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    reveal_within_m: float | None = Field(default=None, gt=0, allow_inf_nan=False)


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code, media_type="application/json")


def _page(name: str) -> HTMLResponse:
    text = importlib.resources.files("web").joinpath(name).read_text()
    return HTMLResponse(text, headers={"Cache-Control": "no-store"})


@router.get("/track/{token}", include_in_schema=False)
async def track_page(token: str) -> HTMLResponse:
    return _page("track.html")


@router.get("/track/", include_in_schema=False)
@router.get("/track", include_in_schema=False)
async def track_page_without_token() -> HTMLResponse:
    # A link cut short in a message still gets the page, which reports the missing token.
    return _page("track.html")


@router.get("/dispatch", include_in_schema=False)
async def dispatch_page() -> HTMLResponse:
    return _page("dispatch.html")


@router.get("/v1/config")
async def page_config(request: Request) -> Response:
    """Settings the pages need: the map tile URL and the graph's bounds."""
    runtime = runtime_of(request)
    etas = runtime.services.get("etas")
    bounds = list(etas.graph.bounds) if etas is not None else None
    return _json({"tile_url": runtime.settings.tile_url, "graph_bounds": bounds})


@router.get("/v1/graph/streets")
async def graph_streets(request: Request) -> Response:
    """Return the loaded graph's streets as GeoJSON, drawn when map tiles can't load."""
    runtime = runtime_of(request)
    cached = runtime.services.get("streets_json")
    if cached is None:
        cached = orjson.dumps(runtime.services["etas"].graph.streets_geojson())
        runtime.services["streets_json"] = cached
    return Response(cached, media_type="application/json", headers={"Cache-Control": "max-age=3600"})


@router.get("/v1/org/privacy")
async def get_privacy(request: Request, org: str = Depends(require_org)) -> Response:
    """Return the organisation's reveal settings, null where unset."""
    privacy = await tracking.load_privacy(runtime_of(request).redis, org)
    return _json(
        {"reveal_within_s": privacy.reveal_within_s, "reveal_within_m": privacy.reveal_within_m}
    )


@router.put("/v1/org/privacy")
async def set_privacy(body: PrivacyIn, request: Request, org: str = Depends(require_org)) -> Response:
    client = runtime_of(request).redis
    pipe = client.pipeline(transaction=False)
    for name in ("reveal_within_s", "reveal_within_m"):
        value = getattr(body, name)
        if value is None:
            pipe.hdel(keys.meta(org), name)
        else:
            pipe.hset(keys.meta(org), name, repr(value))
    await pipe.execute()
    # Connected customers apply the new rules at once.
    await client.publish(keys.live_channel(org), orjson.dumps({"type": "privacy", **body.model_dump()}))
    return _json(body.model_dump())


@router.post("/v1/jobs/{job_id}/share", status_code=201)
async def share_job(
    job_id: str,
    request: Request,
    org: str = Depends(require_org),
    ttl_s: float | None = Query(
        None, gt=0, le=30 * 86400, allow_inf_nan=False, description="link lifetime in seconds"
    ),
) -> Response:
    runtime = runtime_of(request)
    try:
        await runtime.services["lifecycle"].jobs.get(org, job_id)
    except JobNotFoundError as error:
        raise HTTPException(404, str(error)) from None
    token, expires_at = await tracking.create_share(
        runtime.redis, org, job_id, ttl_s or runtime.settings.share_ttl_s
    )
    url = f"{runtime.settings.base_url()}/track/{token}"
    return _json({"url": url, "token": token, "expires_at": tracking.iso(expires_at)}, 201)


async def _track_view(request: Request | WebSocket, token: str) -> tuple[tracking.Share, tracking.TrackView]:
    runtime = runtime_of(request)
    share = await tracking.resolve_share(runtime.redis, token)
    job = await runtime.services["lifecycle"].jobs.get(share.org, share.job_id)
    fix_raw = await runtime.redis.hget(keys.device(share.org, job.contractor_id), "fix")
    privacy = await tracking.load_privacy(runtime.redis, share.org)
    return share, tracking.TrackView(job, orjson.loads(fix_raw) if fix_raw else None, privacy)


@router.get("/v1/track/{token}")
async def track_snapshot(token: str, request: Request) -> Response:
    """Return the customer's view of the job now, as the WebSocket's first update."""
    try:
        _, view = await _track_view(request, token)
    except tracking.ShareExpiredError as error:
        raise HTTPException(410, str(error)) from None
    except (tracking.ShareNotFoundError, JobNotFoundError) as error:
        raise HTTPException(404, str(error)) from None
    return _json(view.update())


async def _serve_viewer(
    websocket: WebSocket,
    hub: LiveHub,
    viewer: Viewer,
    expires_at: float | None,
    stall_s: float = STALL_TIMEOUT_S,
) -> None:
    """Run a viewer until the client leaves, stalls or its link expires.

    A customer's viewer reads its view only once subscribed and sends it
    first, so no update published after that read can be missed.
    """
    await hub.add(viewer)
    if isinstance(viewer, tracking.TrackViewer):
        try:
            await viewer.reload()
        except BaseException:
            hub.remove(viewer)
            raise
        for message in viewer.mailbox.take():
            await websocket.send_text(message.decode())
    sender = asyncio.create_task(viewer.run())
    receiver = asyncio.create_task(_drain(websocket))
    watchdog = asyncio.create_task(viewer.watch(stall_s))
    waiters: set[asyncio.Task[Any]] = {sender, receiver, watchdog}
    expiry = None
    if expires_at is not None:
        expiry = asyncio.create_task(asyncio.sleep(max(0.0, expires_at - time.time())))
        waiters.add(expiry)
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        failure = sender.exception() if sender in done else None
        if watchdog in done:
            logger.warning(
                "closing stalled viewer of org %s: it accepted nothing for %.0f s",
                viewer.org, stall_s,
            )  # fmt: skip
            # The close frame can't reach a client that never reads, so the
            # WebSocket protocol resets the socket ABORT_AFTER_S later.
            await _close(websocket, CLOSE_POLICY, "viewer too slow")
        elif failure is not None:
            logger.info("viewer of org %s disconnected while sending: %s", viewer.org, failure)
        elif expiry is not None and expiry in done:
            await _close(websocket, CLOSE_EXPIRED, "tracking link expired")
    finally:
        hub.remove(viewer)
        for task in waiters:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*waiters, return_exceptions=True)


def _text_sender(websocket: WebSocket) -> Any:
    async def send(message: bytes) -> None:
        await websocket.send_text(message.decode())

    return send


async def _drain(websocket: WebSocket) -> None:
    # Viewers send nothing useful; reading detects the disconnect.
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code, reason), 5.0)


@router.websocket("/v1/track/{token}/ws")
async def track_stream(websocket: WebSocket, token: str) -> None:
    runtime = runtime_of(websocket)
    try:
        share, view = await _track_view(websocket, token)
    except STORAGE_ERRORS as error:
        await close_unavailable(websocket, error, "customer")
        return
    except tracking.ShareExpiredError:
        await websocket.accept()
        await websocket.close(CLOSE_EXPIRED, "tracking link expired")
        return
    except (tracking.ShareNotFoundError, JobNotFoundError):
        await websocket.accept()
        await websocket.close(CLOSE_NOT_FOUND, "tracking link not found")
        return
    await websocket.accept()

    async def load() -> tracking.TrackView:
        _, fresh = await _track_view(websocket, token)
        return fresh

    viewer = tracking.TrackViewer(share.org, view, _text_sender(websocket), load)
    logger.info("customer viewer connected: org %s job %s", share.org, share.job_id)
    try:
        await _serve_viewer(
            websocket, runtime.services["hub"], viewer, share.expires_at, runtime.settings.viewer_stall_s
        )
    except tracking.ShareExpiredError:
        await _close(websocket, CLOSE_EXPIRED, "tracking link expired")
    except (tracking.ShareNotFoundError, JobNotFoundError):
        await _close(websocket, CLOSE_NOT_FOUND, "tracking link not found")
    except STORAGE_ERRORS as error:
        logger.warning("customer viewer of org %s job %s: reading the view failed: %s", share.org, share.job_id, error)
        await _close(websocket, CLOSE_TRY_AGAIN, "storage unavailable, try again later")
    logger.info("customer viewer disconnected: org %s job %s", share.org, share.job_id)


@router.websocket("/v1/fleet/ws")
async def fleet_stream(websocket: WebSocket) -> None:
    runtime = runtime_of(websocket)
    token = bearer_token(websocket.headers, websocket.query_params.get("token"))
    try:
        org = await orgs.org_for_api_key(runtime.redis, token) if token else None
    except STORAGE_ERRORS as error:
        await close_unavailable(websocket, error, "dispatcher")
        return
    await websocket.accept()
    if org is None:
        await websocket.close(CLOSE_UNAUTHORIZED, "invalid API key")
        return

    async def restart() -> None:
        # The page reloads the fleet and the jobs when it reconnects.
        await _close(websocket, CLOSE_RESTART, "live feed restarted; reconnect to reload")

    viewer = FleetViewer(org, _text_sender(websocket), restart)
    logger.info("dispatcher viewer connected: org %s", org)
    await _serve_viewer(
        websocket, runtime.services["hub"], viewer, None, stall_s=runtime.settings.viewer_stall_s
    )
    logger.info("dispatcher viewer disconnected: org %s", org)


@router.get("/v1/fleet")
async def get_fleet(request: Request, org: str = Depends(require_org)) -> Response:
    members = await fleet.fleet(runtime_of(request).redis, org)
    return _json(fleet.fleet_geojson(members))


@router.get("/v1/fleet/heatmap")
async def get_heatmap(
    request: Request,
    org: str = Depends(require_org),
    res: int = Query(8, description="H3 resolution, 5..10"),
    format: str = Query("geojson", pattern="^(geojson|cells)$"),
    status: str | None = Query(None, description="only contractors on jobs with this status, or idle"),
) -> Response:
    runtime = runtime_of(request)
    try:
        counts = await fleet.heatmap(runtime.redis, org, res, runtime.settings.h3_res, status)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    if format == "cells":
        return _json({"res": res, "cells": [{"h3": cell, "count": n} for cell, n in counts.items()]})
    return _json(fleet.heatmap_geojson(counts))


@router.get("/v1/fleet/nearby")
async def get_nearby(
    request: Request,
    lat: float = Query(..., ge=-90, le=90, allow_inf_nan=False),
    lon: float = Query(..., ge=-180, le=180, allow_inf_nan=False),
    limit: int = Query(5, ge=1, le=MAX_NEARBY),
    org: str = Depends(require_org),
) -> Response:
    runtime = runtime_of(request)
    found = await fleet.nearby(runtime.redis, org, lat, lon, limit)
    etas = runtime.services.get("etas")
    tree = None
    if etas is not None and found:
        tree = await asyncio.to_thread(etas.tree_to_point, lat, lon)
    contractors = []
    for contractor_id, distance, fix in found:
        eta_s = tree.eta_s(fix["lat"], fix["lon"]) if tree is not None else None
        contractors.append(
            {
                "contractor_id": contractor_id,
                "lat": fix["lat"],
                "lon": fix["lon"],
                "t": fix["t"],
                "distance_m": round(distance, 1),
                "eta_s": round(eta_s, 1) if eta_s is not None else None,
            }
        )
    return _json({"contractors": contractors})
