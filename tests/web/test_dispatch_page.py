"""The dispatcher fleet page in headless Chromium, against a real server."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import WebSocketRoute, expect

from support import Api, Device, ServerProcess, unique_name

pytestmark = pytest.mark.browser

SITE = {"lat": 60.1705, "lon": 24.9455, "radius_m": 50.0}
# Starting fixes of three contractors in central Helsinki, a few hundred metres apart.
STARTS = [(60.1670, 24.9400), (60.1685, 24.9440), (60.1655, 24.9360)]
# Clear of every marker, nearest to the second contractor (about 190 m away).
CLICK_POINT = (60.1700, 24.9420)
WAIT_MS = 15_000
MARKER_LATLNG = (
    "(id) => { const m = window.enrouteDispatch.markers.get(id); "
    "return m && [m.getLatLng().lat, m.getLatLng().lng]; }"
)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def create_job(api: Api, contractor_id: str, dispatch: bool) -> str:
    job_id = unique_name("j")
    now = time.time()
    body = {
        "id": job_id,
        "contractor_id": contractor_id,
        "site": dict(SITE),
        "window": {"start": iso(now - 600), "end": iso(now + 3000)},
    }
    response = api.post("/v1/jobs", body)
    assert response.status_code == 201, response.text
    if dispatch:
        response = api.post(f"/v1/jobs/{job_id}/dispatch")
        assert response.status_code == 200, response.text
    return job_id


async def send_ping(server: ServerProcess, device_token: str, lat: float, lon: float) -> None:
    async with Device(server.ws_url, device_token) as device:
        reply = await device.send({"t": time.time(), "lat": lat, "lon": lon, "acc": 8.0})
    assert reply["accepted"] == 1, reply


async def click_map_at(page: Any, lat: float, lon: float) -> None:
    """Click the map with the mouse where it shows (lat, lon)."""
    point = await page.evaluate(
        "([lat, lon]) => window.enrouteDispatch.map.latLngToContainerPoint([lat, lon])",
        [lat, lon],
    )
    box = await page.locator("#map").bounding_box()
    await page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])


async def test_dispatch_page_shows_fleet(
    web_server: ServerProcess,
    web_api: Api,
    web_org: tuple[str, str],
    desktop_page: Any,
    artifacts_dir: Path,
) -> None:
    contractor_ids = [unique_name("c") for _ in STARTS]
    tokens = [web_api.contractor(contractor_id) for contractor_id in contractor_ids]
    job_id = create_job(web_api, contractor_ids[0], dispatch=True)
    for token, (lat, lon) in zip(tokens, STARTS):
        await send_ping(web_server, token, lat, lon)

    page = desktop_page.page
    await page.goto(f"{web_server.base_url}/dispatch#key={web_org[1]}")
    await page.wait_for_function(
        f"() => window.enrouteDispatch.markers.size === {len(STARTS)}", timeout=WAIT_MS
    )
    first = await page.evaluate(MARKER_LATLNG, contractor_ids[0])
    await asyncio.sleep(1.0)
    await send_ping(web_server, tokens[0], STARTS[0][0] + 0.0003, STARTS[0][1])
    await page.wait_for_function(
        f"(id) => ({MARKER_LATLNG})(id)[0] > {first[0] + 0.0002}",
        arg=contractor_ids[0],
        timeout=WAIT_MS,
    )
    await page.wait_for_function(
        "() => window.enrouteDispatch.hexLayer.getLayers().length > 0", timeout=WAIT_MS
    )
    job_item = page.locator(f"[data-testid=job-list] li[data-job-id='{job_id}']")
    await expect(job_item).to_contain_text("On the way", timeout=WAIT_MS)

    await click_map_at(page, *CLICK_POINT)
    nearby_items = page.locator("[data-testid=nearby] li")
    await expect(nearby_items).to_have_count(len(STARTS), timeout=WAIT_MS)
    await expect(nearby_items.first).to_contain_text(contractor_ids[1])
    await page.screenshot(path=artifacts_dir / "dispatch-page.png")

    hex_count = await page.get_by_test_id("hex-count").get_attribute("data-count")
    nearby_lines = await page.evaluate(
        "() => window.enrouteDispatch.nearbyLayer.getLayers()"
        ".filter((layer) => layer instanceof L.Polyline).length"
    )
    assert int(hex_count) > 0
    assert nearby_lines == len(STARTS)
    assert "key=" not in page.url
    assert await page.evaluate("document.body.dataset.basemap") == "streets"
    assert desktop_page.errors == []
    assert desktop_page.foreign_urls(web_server.base_url) == []


async def test_dispatch_page_asks_for_key(
    web_server: ServerProcess, web_api: Api, web_org: tuple[str, str], desktop_page: Any
) -> None:
    contractor_id = unique_name("c")
    web_api.contractor(contractor_id)
    job_id = create_job(web_api, contractor_id, dispatch=False)
    page = desktop_page.page
    await page.goto(f"{web_server.base_url}/dispatch")
    form = page.get_by_test_id("key-form")
    await expect(form).to_be_visible(timeout=WAIT_MS)

    await page.get_by_label("Organisation API key").fill(web_org[1])
    await page.get_by_role("button", name="Open fleet map").click()

    job_item = page.locator(f"[data-testid=job-list] li[data-job-id='{job_id}']")
    await expect(job_item).to_contain_text("Scheduled", timeout=WAIT_MS)
    await expect(form).to_be_hidden()
    stored = await page.evaluate("sessionStorage.getItem('enroute.apiKey')")
    assert stored == web_org[1]
    assert desktop_page.errors == []


async def test_dispatch_page_rejects_bad_key(
    web_server: ServerProcess, desktop_page: Any
) -> None:
    page = desktop_page.page
    await page.goto(f"{web_server.base_url}/dispatch#key=ek_not-a-real-key")
    await expect(page.get_by_test_id("key-form")).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("key-error")).to_contain_text("rejected")
    stored = await page.evaluate("sessionStorage.getItem('enroute.apiKey')")
    assert stored is None
    assert desktop_page.errors == []


async def test_dispatch_page_signs_out(
    web_server: ServerProcess,
    web_api: Api,
    web_org: tuple[str, str],
    desktop_page: Any,
) -> None:
    token = web_api.contractor(unique_name("c"))
    await send_ping(web_server, token, *STARTS[0])
    page = desktop_page.page
    await page.goto(f"{web_server.base_url}/dispatch#key={web_org[1]}")
    await page.wait_for_function("() => window.enrouteDispatch.markers.size === 1", timeout=WAIT_MS)

    await page.get_by_role("button", name="Sign out").click()

    await expect(page.get_by_test_id("key-form")).to_be_visible(timeout=WAIT_MS)
    markers = await page.evaluate("window.enrouteDispatch.markers.size")
    stored = await page.evaluate("sessionStorage.getItem('enroute.apiKey')")
    assert markers == 0
    assert stored is None
    assert desktop_page.errors == []


def scripted_job(job_id: str, status: str, start: float, **fields: Any) -> dict[str, Any]:
    """Return a job as GET /v1/jobs lists it."""
    job = {
        "id": job_id,
        "contractor_id": f"c-{job_id}",
        "status": status,
        "flags": [],
        "site": dict(SITE),
        "window": {"start": iso(start), "end": iso(start + 1800)},
        "arrival_window": None,
        "eta_s": None,
    }
    job.update(fields)
    return job


def local_time(t: float) -> str:
    return datetime.fromtimestamp(t, ZoneInfo("Europe/Helsinki")).strftime("%H:%M")


async def open_scripted_feed(page: Any) -> list[WebSocketRoute]:
    """Accept the page's /v1/fleet/ws connections in place of the server, and return their list."""
    sockets: list[WebSocketRoute] = []
    await page.route_web_socket("**/v1/fleet/ws*", lambda socket: sockets.append(socket))
    return sockets


async def test_dispatch_page_orders_lists(
    web_server: ServerProcess, web_org: tuple[str, str], desktop_page: Any, artifacts_dir: Path
) -> None:
    now = time.time()
    jobs = [
        scripted_job("f-c10", "scheduled", now + 600),
        scripted_job("f-c2", "scheduled", now + 600),
        scripted_job("f-c1", "scheduled", now + 600),
        scripted_job(
            "f-passed", "en_route", now - 1800,
            arrival_window={"earliest": iso(now - 400), "latest": iso(now - 300)},
        ),
        scripted_job(
            "f-point", "en_route", now - 1800,
            arrival_window={"earliest": iso(now + 300), "latest": iso(now + 300)},
        ),
    ]
    page = desktop_page.page
    await page.route("**/v1/jobs", lambda route: route.fulfill(json={"jobs": jobs}))
    sockets = await open_scripted_feed(page)
    await page.goto(f"{web_server.base_url}/dispatch#key={web_org[1]}")
    items = page.locator("[data-testid=job-list] li.status-scheduled")
    await expect(items).to_have_count(3, timeout=WAIT_MS)

    # Events arrive out of time order: the arrival before the earlier departure.
    while not sockets:
        await asyncio.sleep(0.05)
    for job_id, kind, at in [("f-point", "arrived", now - 60), ("f-passed", "en_route", now - 120)]:
        event = {"type": f"job.{kind}", "job_id": job_id, "status": kind, "at": iso(at), "flags": []}
        sockets[0].send(json.dumps({"type": "event", "event": event}))
    events = page.locator("[data-testid=events] li")
    await expect(events).to_have_count(2, timeout=WAIT_MS)
    await page.screenshot(path=artifacts_dir / "dispatch-lists.png")

    scheduled_ids = await items.evaluate_all("(nodes) => nodes.map((node) => node.dataset.jobId)")
    passed = page.locator("[data-testid=job-list] li[data-job-id='f-passed'] .job-meta")
    event_texts = await events.all_text_contents()
    assert scheduled_ids == ["f-c1", "f-c2", "f-c10"]
    await expect(passed).to_contain_text("waiting for an updated arrival time")
    assert event_texts[0].startswith(f"{local_time(now - 60)} f-point arrived")
    assert event_texts[1].startswith(f"{local_time(now - 120)} f-passed en_route")
    assert desktop_page.errors == []


async def test_dispatch_page_zero_width_window(
    web_server: ServerProcess, web_org: tuple[str, str], desktop_page: Any
) -> None:
    now = time.time()
    job = scripted_job(
        "f-point", "en_route", now - 1800,
        arrival_window={"earliest": iso(now + 300), "latest": iso(now + 300)},
    )
    page = desktop_page.page
    await page.route("**/v1/jobs", lambda route: route.fulfill(json={"jobs": [job]}))
    await page.goto(f"{web_server.base_url}/dispatch#key={web_org[1]}")
    meta = page.locator("[data-testid=job-list] li[data-job-id='f-point'] .job-meta")
    await expect(meta).to_contain_text(f"arriving at {local_time(now + 300)}", timeout=WAIT_MS)
    assert desktop_page.errors == []


async def test_dispatch_page_recovers_from_outage(
    web_server: ServerProcess, web_org: tuple[str, str], desktop_page: Any
) -> None:
    page = desktop_page.page
    await page.route("**/v1/jobs", lambda route: route.abort())
    await page.route("**/v1/fleet/heatmap*", lambda route: route.abort())
    sockets = await open_scripted_feed(page)
    await page.goto(f"{web_server.base_url}/dispatch#key={web_org[1]}")
    notice = page.get_by_test_id("notice")
    hex_count = page.get_by_test_id("hex-count")
    await expect(notice).to_contain_text("failed", timeout=WAIT_MS)

    await page.unroute("**/v1/jobs")
    while not sockets:
        await asyncio.sleep(0.05)
    # An event about a job the page does not list makes it load the jobs again.
    event = {"type": "job.en_route", "job_id": "j-unknown", "status": "en_route", "flags": []}
    sockets[0].send(json.dumps({"type": "event", "event": event}))
    await expect(notice).to_be_hidden(timeout=WAIT_MS)
    # The heatmap requests still fail.
    await expect(hex_count).to_have_text("Heatmap data unavailable", timeout=WAIT_MS)
    assert desktop_page.errors == []


async def test_dispatch_page_filters_heatmap(
    web_server: ServerProcess, web_api: Api, web_org: tuple[str, str], desktop_page: Any
) -> None:
    token = web_api.contractor(unique_name("c"))
    await send_ping(web_server, token, *STARTS[0])
    page = desktop_page.page
    await page.goto(f"{web_server.base_url}/dispatch#key={web_org[1]}")
    hex_count = page.get_by_test_id("hex-count")
    await expect(hex_count).to_have_attribute("data-count", "1", timeout=WAIT_MS)

    await page.get_by_label("Job status").select_option("en_route", timeout=WAIT_MS)
    await expect(hex_count).to_have_attribute("data-count", "0", timeout=WAIT_MS)
    await page.get_by_label("Job status").select_option("idle")
    await expect(hex_count).to_have_attribute("data-count", "1", timeout=WAIT_MS)
    filtered = [url for url in desktop_page.urls if "status=en_route" in url]
    assert filtered != []
    assert desktop_page.errors == []


async def test_dispatch_page_lists_closed_jobs(
    web_server: ServerProcess, web_api: Api, web_org: tuple[str, str], desktop_page: Any
) -> None:
    contractor_id = unique_name("c")
    web_api.contractor(contractor_id)
    cancelled_id = create_job(web_api, contractor_id, dispatch=True)
    response = web_api.post(f"/v1/jobs/{cancelled_id}/cancel")
    assert response.status_code == 200, response.text
    page = desktop_page.page
    await page.goto(f"{web_server.base_url}/dispatch#key={web_org[1]}")

    cancelled_item = page.locator(f"[data-testid=job-list] li[data-job-id='{cancelled_id}']")
    await expect(cancelled_item).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)
    events = page.locator("[data-testid=events] li")
    await expect(events).to_have_count(2, timeout=WAIT_MS)
    event_texts = await events.all_text_contents()
    assert f"{cancelled_id} cancelled" in event_texts[0]
    assert f"{cancelled_id} en_route" in event_texts[1]
    assert desktop_page.errors == []


def scripted_event(event_id: str, job_id: str, status: str, at: float) -> dict[str, Any]:
    """Return an event as GET /v1/events lists it."""
    return {
        "id": event_id,
        "type": f"job.{status}",
        "job_id": job_id,
        "contractor_id": f"c-{job_id}",
        "status": status,
        "at": iso(at),
        "flags": [],
    }


async def test_dispatch_page_merges_events(
    web_server: ServerProcess, web_org: tuple[str, str], desktop_page: Any
) -> None:
    now = time.time()
    job = scripted_job("f-open", "en_route", now - 600)
    past = [
        scripted_event("100-0", "f-open", "en_route", now - 300),
        scripted_event("101-0", "f-gone", "cancelled", now - 200),
        scripted_event("102-0", "f-old", "completed", now - 13 * 3600),
    ]
    after_reconnect = scripted_event("104-0", "f-open", "arrived", now - 10)
    event_requests: list[str] = []

    async def reply_events(route: Any) -> None:
        event_requests.append(route.request.url)
        body = past if len(event_requests) == 1 else [*past, after_reconnect]
        await route.fulfill(json={"events": body, "cursor": body[-1]["id"]})

    page = desktop_page.page
    await page.route("**/v1/jobs", lambda route: route.fulfill(json={"jobs": [job]}))
    await page.route(re.compile(r"/v1/events\?"), reply_events)
    sockets = await open_scripted_feed(page)
    await page.goto(f"{web_server.base_url}/dispatch#key={web_org[1]}")
    events = page.locator("[data-testid=events] li")
    await expect(events).to_have_count(3, timeout=WAIT_MS)
    job_ids = page.locator("[data-testid=job-list] li")
    await expect(job_ids).to_have_count(2)
    listed = await job_ids.evaluate_all("(nodes) => nodes.map((node) => node.dataset.jobId)")
    assert listed == ["f-open", "f-gone"]

    # A live copy of a loaded event is skipped, and a new one is inserted.
    while not sockets:
        await asyncio.sleep(0.05)
    duplicate = {"type": "event", "id": "101-0", "event": past[1]}
    sockets[0].send(json.dumps(duplicate))
    live = scripted_event("103-0", "f-open", "en_route", now - 60)
    sockets[0].send(json.dumps({"type": "event", "id": "103-0", "event": live}))
    await expect(events).to_have_count(4, timeout=WAIT_MS)

    # After a reconnect the page loads the events again.
    await sockets[0].close(code=1011)
    await expect(events).to_have_count(5, timeout=WAIT_MS)
    event_ids = await events.evaluate_all("(nodes) => nodes.map((node) => node.dataset.eventId)")
    assert event_ids == ["104-0", "103-0", "101-0", "100-0", "102-0"]
    assert len(event_requests) == 2
    assert desktop_page.errors == []


async def test_dispatch_page_no_show_hides_late(
    web_server: ServerProcess, web_org: tuple[str, str], desktop_page: Any
) -> None:
    job = scripted_job("f-open", "en_route", time.time() - 3600, flags=["stale", "no_show", "late"])
    page = desktop_page.page
    await page.route("**/v1/jobs", lambda route: route.fulfill(json={"jobs": [job]}))
    await page.goto(f"{web_server.base_url}/dispatch#key={web_org[1]}")
    badges = page.locator("[data-testid=job-list] li[data-job-id='f-open'] .flag")
    await expect(badges).to_have_count(2, timeout=WAIT_MS)
    shown_flags = await badges.evaluate_all("(nodes) => nodes.map((node) => node.dataset.flag)")
    assert sorted(shown_flags) == ["no_show", "stale"]
    assert desktop_page.errors == []
