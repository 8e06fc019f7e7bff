"""The customer tracking page in headless Chromium, against a real server."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from support import Api, Device, ServerProcess, unique_name

pytestmark = pytest.mark.browser

SITE = {"lat": 60.1705, "lon": 24.9455, "radius_m": 50.0}
# A walk north-east towards the site, about 35 m per step and 700 m short of it.
TRACK = [(60.16600 + 0.0002 * i, 24.93400 + 0.0005 * i) for i in range(4)]
PING_GAP_S = 1.0
WAIT_MS = 15_000
# The day appears only when the window starts on another day than today, and
# a window within one minute reads "Arriving at 14:05".
ARRIVING = re.compile(r"^Arriving (at \d{2}:\d{2}|(\w{3} \d{1,2} \w{3}, )?\d{2}:\d{2}–\d{2}:\d{2})$")
MARKER_LATLNG = "() => { const m = window.enrouteTrack.marker; return m && [m.getLatLng().lat, m.getLatLng().lng]; }"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def create_shared_job(
    api: Api, dispatch: bool = True, link_ttl_s: float | None = None, dispatch_at: float | None = None
) -> tuple[str, str, str]:
    """Create a contractor and a job, share the job, and return (job id, device token, share token)."""
    contractor_id = unique_name("c")
    job_id = unique_name("j")
    device_token = api.contractor(contractor_id)
    now = time.time()
    body = {
        "id": job_id,
        "contractor_id": contractor_id,
        "site": dict(SITE),
        "window": {"start": iso(now - 600), "end": iso(now + 3000)},
        "address": "Pohjoisesplanadi 11, Helsinki",
    }
    response = api.post("/v1/jobs", body)
    assert response.status_code == 201, response.text
    if dispatch:
        dispatch_body = {"at": iso(dispatch_at)} if dispatch_at is not None else None
        response = api.post(f"/v1/jobs/{job_id}/dispatch", dispatch_body)
        assert response.status_code == 200, response.text
    params = {"ttl_s": link_ttl_s} if link_ttl_s is not None else {}
    response = api.client.post(f"/v1/jobs/{job_id}/share", params=params)
    assert response.status_code == 201, response.text
    return job_id, device_token, response.json()["token"]


async def send_ping(device: Device, lat: float, lon: float) -> None:
    reply = await device.send({"t": time.time(), "lat": lat, "lon": lon, "acc": 8.0})
    assert reply["accepted"] == 1, reply


async def test_track_page_follows_pings(
    web_server: ServerProcess, web_api: Api, phone_page: Any, artifacts_dir: Path
) -> None:
    _, device_token, share_token = create_shared_job(web_api)
    page = phone_page.page
    await page.goto(f"{web_server.base_url}/track/{share_token}")
    current_step = page.locator("[data-testid=status] [aria-current=step]")
    await expect(current_step).to_have_text("On the way", timeout=WAIT_MS)

    async with Device(web_server.ws_url, device_token) as device:
        await send_ping(device, *TRACK[0])
        await page.wait_for_function("() => window.enrouteTrack.marker !== null", timeout=WAIT_MS)
        first = await page.evaluate(MARKER_LATLNG)
        for lat, lon in TRACK[1:]:
            await asyncio.sleep(PING_GAP_S)
            await send_ping(device, lat, lon)
        await page.wait_for_function(
            f"() => ({MARKER_LATLNG})()[0] > {first[0] + 0.0003}", timeout=WAIT_MS
        )
        moved = await page.evaluate(MARKER_LATLNG)
        arrival = page.get_by_test_id("arrival-window")
        await expect(arrival).to_have_text(
            ARRIVING, timeout=WAIT_MS
        )
        await expect(page.get_by_test_id("fix-age")).to_have_text(
            re.compile(r"updated \d+ s ago"), timeout=WAIT_MS
        )
        await page.screenshot(path=artifacts_dir / "track-page.png", full_page=True)

    assert moved[0] > first[0]
    assert moved[1] > first[1]
    # Later updates leave the unchanged route out; the page keeps drawing it.
    # The route may come with a later update than the first position.
    await page.wait_for_function("() => window.enrouteTrack.routeLine !== null", timeout=WAIT_MS)
    assert await page.evaluate("document.body.dataset.basemap") == "streets"
    assert phone_page.errors == []
    assert phone_page.foreign_urls(web_server.base_url) == []


async def test_track_page_drops_passed_window(
    web_server: ServerProcess, web_api: Api, phone_page: Any
) -> None:
    # The last fix is ten minutes old, so the window it gave has passed.
    now = time.time()
    _, device_token, share_token = create_shared_job(web_api, dispatch_at=now - 900)
    async with Device(web_server.ws_url, device_token) as device:
        reply = await device.send({"t": now - 600, "lat": TRACK[3][0], "lon": TRACK[3][1], "acc": 8.0})
    assert reply["accepted"] == 1, reply
    page = phone_page.page
    await page.goto(f"{web_server.base_url}/track/{share_token}")
    arrival = page.get_by_test_id("arrival-window")
    await expect(arrival).to_have_text("Waiting for an updated arrival time", timeout=WAIT_MS)
    await expect(page.get_by_test_id("arrival-detail")).to_have_text("")


async def test_track_page_shows_cancellation(
    web_server: ServerProcess, web_api: Api, phone_page: Any
) -> None:
    job_id, _, share_token = create_shared_job(web_api, dispatch=False)
    page = phone_page.page
    await page.goto(f"{web_server.base_url}/track/{share_token}")
    current_step = page.locator("[data-testid=status] [aria-current=step]")
    await expect(current_step).to_have_text("Scheduled", timeout=WAIT_MS)
    await expect(page.get_by_test_id("arrival-window")).to_have_text(
        re.compile(r"^Scheduled "), timeout=WAIT_MS
    )

    response = web_api.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text

    await expect(current_step).to_have_text("Cancelled", timeout=WAIT_MS)
    await expect(page.get_by_test_id("arrival-window")).to_have_text("Appointment cancelled")
    assert phone_page.errors == []


async def test_track_page_shows_arrival(
    web_server: ServerProcess, web_api: Api, phone_page: Any
) -> None:
    _, device_token, share_token = create_shared_job(web_api)
    page = phone_page.page
    await page.goto(f"{web_server.base_url}/track/{share_token}")
    current_step = page.locator("[data-testid=status] [aria-current=step]")
    await expect(current_step).to_have_text("On the way", timeout=WAIT_MS)

    # Arrival needs inside fixes after the dispatch that span a dwell (30 s by
    # default). The server accepts fix times up to 60 s ahead of its clock,
    # so fixes stamped ahead pass the dwell without waiting for it.
    now = time.time()
    async with Device(web_server.ws_url, device_token) as device:
        for ahead_s in (1.0, 16.0, 32.0):
            fix = {"t": now + ahead_s, "lat": SITE["lat"], "lon": SITE["lon"], "acc": 5.0}
            reply = await device.send(fix)
            assert reply["accepted"] == 1, reply

    await expect(current_step).to_have_text("Arrived", timeout=WAIT_MS)
    await expect(page.get_by_test_id("arrival-window")).to_have_text(
        re.compile(r"^Arrived at \d{2}:\d{2}$")
    )
    assert phone_page.errors == []


async def test_track_page_unknown_link(web_server: ServerProcess, phone_page: Any) -> None:
    page = phone_page.page
    await page.goto(f"{web_server.base_url}/track/st_no-such-link")
    notice = page.get_by_test_id("notice")
    await expect(notice).to_be_visible(timeout=WAIT_MS)
    await expect(notice).to_contain_text("not found")
    await expect(notice).to_contain_text("ask your contractor for a new one")
    await expect(page.get_by_test_id("arrival-window")).to_have_text("Tracking unavailable")
    await expect(page.get_by_test_id("status")).to_be_hidden()
    await expect(page.locator("#map")).to_be_hidden()
    assert phone_page.errors == []


async def test_track_page_link_without_token(web_server: ServerProcess, phone_page: Any) -> None:
    page = phone_page.page
    await page.goto(f"{web_server.base_url}/track/")
    await expect(page.get_by_test_id("notice")).to_contain_text("This tracking link is incomplete", timeout=WAIT_MS)
    await expect(page.get_by_test_id("arrival-window")).to_have_text("Tracking unavailable")
    await expect(page.get_by_test_id("status")).to_be_hidden()
    await expect(page.locator("#map")).to_be_hidden()
    assert phone_page.errors == []


async def test_track_page_link_expires_while_open(
    web_server: ServerProcess, web_api: Api, phone_page: Any
) -> None:
    _, _, share_token = create_shared_job(web_api, link_ttl_s=3.0)
    page = phone_page.page
    await page.goto(f"{web_server.base_url}/track/{share_token}")
    current_step = page.locator("[data-testid=status] [aria-current=step]")
    await expect(current_step).to_have_text("On the way", timeout=WAIT_MS)

    notice = page.get_by_test_id("notice")
    await expect(notice).to_contain_text("expired", timeout=WAIT_MS)
    await expect(page.get_by_test_id("arrival-window")).to_have_text("Tracking unavailable")
    await expect(page.get_by_test_id("status")).to_be_hidden()
    assert phone_page.errors == []
