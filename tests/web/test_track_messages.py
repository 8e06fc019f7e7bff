"""The customer tracking page fed scripted snapshots and live messages.

Playwright fulfils the page's GET /v1/track/{token} and accepts its
WebSocket in place of the server, so each test controls exactly which fixes, routes and
statuses reach the page, and when.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, WebSocketRoute, expect

from support import ServerProcess

pytestmark = pytest.mark.browser

TOKEN = "st_scripted"
WAIT_MS = 15_000
ORIGIN = (60.1700, 24.9400)
METRES_PER_DEGREE = 111_195.0
SMALL_PHONE_VIEWPORT = {"width": 320, "height": 568}
# Frames of the contractor marker as [lat, lon], or null while it is hidden.
SAMPLE_FRAMES = """() => {
  window.markerFrames = [];
  const sample = () => {
    const marker = window.enrouteTrack.marker;
    window.markerFrames.push(marker ? [marker.getLatLng().lat, marker.getLatLng().lng] : null);
    requestAnimationFrame(sample);
  };
  requestAnimationFrame(sample);
}"""


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def at_metres(x: float, y: float) -> list[float]:
    """Return [lat, lon] of the point x m east and y m north of ORIGIN."""
    lon_scale = METRES_PER_DEGREE * math.cos(math.radians(ORIGIN[0]))
    return [ORIGIN[0] + y / METRES_PER_DEGREE, ORIGIN[1] + x / lon_scale]


def to_metres(latlon: list[float]) -> tuple[float, float]:
    lon_scale = METRES_PER_DEGREE * math.cos(math.radians(ORIGIN[0]))
    return ((latlon[1] - ORIGIN[1]) * lon_scale, (latlon[0] - ORIGIN[0]) * METRES_PER_DEGREE)


def update(status: str = "en_route", **fields: Any) -> dict[str, Any]:
    """Return an ``update`` message like the server's, with `fields` replaced."""
    now = time.time()
    body: dict[str, Any] = {
        "type": "update",
        "job_id": "j-scripted",
        "status": status,
        "flags": [],
        "site": {"lat": at_metres(400, 0)[0], "lon": at_metres(400, 0)[1], "radius_m": 50.0},
        "address": "Pohjoisesplanadi 11, Helsinki",
        "window": {"start": iso(now - 600), "end": iso(now + 3000)},
        "eta_s": 600.0 if status == "en_route" else None,
        "arrival_window": (
            {"earliest": iso(now + 500), "latest": iso(now + 700)} if status == "en_route" else None
        ),
        "position": None,
    }
    body.update(fields)
    return body


def fix(x: float, y: float, t: float, acc: float = 8.0) -> dict[str, float]:
    lat, lon = at_metres(x, y)
    return {"lat": lat, "lon": lon, "t": t, "acc": acc}


class ScriptedTrack:
    """Stands in for the server's snapshot and live connection of one share token."""

    def __init__(self, page: Page, snapshot: dict[str, Any]) -> None:
        self.page = page
        self.snapshot = snapshot
        self.sockets: list[WebSocketRoute] = []
        self.close_first_with: int | None = None

    async def open(self, server: ServerProcess) -> None:
        await self.page.route(
            f"**/v1/track/{TOKEN}", lambda route: route.fulfill(json=self.snapshot)
        )
        await self.page.route_web_socket(f"**/v1/track/{TOKEN}/ws", self._accept)
        await self.page.goto(f"{server.base_url}/track/{TOKEN}")
        await self.page.wait_for_function(
            "() => window.enrouteTrack && window.enrouteTrack.lastUpdate !== null", timeout=WAIT_MS
        )

    def _accept(self, socket: WebSocketRoute) -> None:
        self.sockets.append(socket)
        if self.close_first_with is not None and len(self.sockets) == 1:
            asyncio.get_running_loop().create_task(socket.close(code=self.close_first_with))

    async def connected(self, count: int = 1) -> WebSocketRoute:
        deadline = time.monotonic() + WAIT_MS / 1000
        while len(self.sockets) < count:
            assert time.monotonic() < deadline, "the page did not open its live connection"
            await asyncio.sleep(0.05)
        return self.sockets[count - 1]

    async def send(self, message: dict[str, Any]) -> None:
        (await self.connected(len(self.sockets) or 1)).send(json.dumps(message))


async def test_hidden_contractor_stays_hidden(
    web_server: ServerProcess, phone_page: Any, artifacts_dir: Path
) -> None:
    t0 = time.time()
    route = [at_metres(0, 0), at_metres(400, 0)]
    track = ScriptedTrack(phone_page.page, update(position=fix(0, 0, t0, acc=30.0), route=route))
    await track.open(web_server)
    page = phone_page.page
    circles = page.locator("path.accuracy-circle")
    await expect(circles).to_have_count(1, timeout=WAIT_MS)

    # A 10 s glide runs when the job is cancelled and the position hidden.
    await track.send(update(position=fix(100, 0, t0 + 10, acc=30.0)))
    await asyncio.sleep(0.5)
    await track.send(update("cancelled", position=None))
    await asyncio.sleep(0.5)
    await page.screenshot(path=artifacts_dir / "track-hidden-after-cancel.png")
    circle_removed = await page.evaluate("window.enrouteTrack.accuracyCircle === null")
    marker_removed = await page.evaluate("window.enrouteTrack.marker === null")
    assert circle_removed
    assert marker_removed
    await expect(circles).to_have_count(0)

    # A new visible position shows the contractor again, and an event that
    # completes the job hides it at once, glide or not.
    await track.send(update(position=fix(150, 0, t0 + 20, acc=30.0)))
    await expect(circles).to_have_count(1, timeout=WAIT_MS)
    await track.send(update(position=fix(250, 0, t0 + 30, acc=30.0)))
    await asyncio.sleep(0.5)
    await track.send({"type": "event", "event": {"type": "job.completed", "status": "completed"}})
    await asyncio.sleep(0.5)
    completed_marker_removed = await page.evaluate("window.enrouteTrack.marker === null")
    assert completed_marker_removed
    await expect(circles).to_have_count(0)
    assert phone_page.errors == []


async def test_motion_noisy_fixes(
    web_server: ServerProcess, phone_page: Any, artifacts_dir: Path
) -> None:
    # East along y = 0, round a block and back east along y = 6, so a fix
    # near x = 100 lies nearer the route's return leg than its first leg.
    route = [at_metres(*point) for point in [(0, 0), (200, 0), (200, 80), (60, 80), (60, 6), (400, 6)]]
    t0 = time.time()
    track = ScriptedTrack(phone_page.page, update(position=fix(0, 0, t0), route=route))
    await track.open(web_server)
    page = phone_page.page
    await page.wait_for_function("() => window.enrouteTrack.marker !== null", timeout=WAIT_MS)
    await page.evaluate(SAMPLE_FRAMES)

    # Sideways noise, two fixes behind the one before, a fix nearer the
    # return leg, then clean fixes along the road, one second apart.
    noisy = [(30, 12), (22, -10), (60, 8), (55, 0), (100, 5), (135, 0), (170, 0)]
    for index, (x, y) in enumerate(noisy, start=1):
        await track.send(update(position=fix(x, y, t0 + index)))
        await asyncio.sleep(1.0)
    await asyncio.sleep(0.5)
    await page.screenshot(path=artifacts_dir / "track-motion-noisy.png")

    frames = [to_metres(frame) for frame in await page.evaluate("window.markerFrames") if frame]
    xs = [x for x, _ in frames]
    backwards_m = max(before - after for before, after in zip(xs, xs[1:]))
    off_road_m = max(abs(y) for _, y in frames)
    travelled_m = sum(math.dist(a, b) for a, b in zip(frames, frames[1:]))
    final_x, final_y = frames[-1]
    assert backwards_m < 1.0
    assert off_road_m < 1.0
    assert travelled_m < 200.0
    assert abs(final_x - 170) < 2.0
    assert abs(final_y) < 2.0
    assert phone_page.errors == []


async def test_summary_messages_agree(web_server: ServerProcess, phone_page: Any) -> None:
    now = time.time()
    passed_window = {"start": iso(now - 3600), "end": iso(now - 1800)}
    track = ScriptedTrack(phone_page.page, update("scheduled", window=passed_window, flags=["no_show"]))
    await track.open(web_server)
    page = phone_page.page
    arrival = page.get_by_test_id("arrival-window")
    detail = page.get_by_test_id("arrival-detail")
    flags = page.locator("[data-testid=flags] li")
    await expect(arrival).to_have_text("The appointment window has passed", timeout=WAIT_MS)
    await expect(detail).to_have_text("Waiting for your contractor to set off")
    await expect(flags).to_have_count(0)

    arriving = {"earliest": iso(now + 600), "latest": iso(now + 720)}
    late_update = update(
        window=passed_window, flags=["late", "no_show"], arrival_window=arriving, position=fix(0, 0, now)
    )
    await track.send(late_update)
    await expect(arrival).to_have_text(
        f"Arriving {local_time(now + 600)}–{local_time(now + 720)}", timeout=WAIT_MS
    )
    await expect(flags).to_have_text(["The appointment window has passed"])
    assert phone_page.errors == []


def local_time(t: float) -> str:
    return datetime.fromtimestamp(t, ZoneInfo("Europe/Helsinki")).strftime("%H:%M")


async def test_arrived_at_from_update(web_server: ServerProcess, phone_page: Any) -> None:
    now = time.time()
    track = ScriptedTrack(phone_page.page, update(position=fix(0, 0, now)))
    await track.open(web_server)
    arrival = phone_page.page.get_by_test_id("arrival-window")
    await expect(arrival).to_have_text(re.compile(r"^Arriving "), timeout=WAIT_MS)

    arrived_at = now - 1200
    await track.send(update("arrived", arrived_at=iso(arrived_at), position=fix(400, 0, now)))
    await expect(arrival).to_have_text(f"Arrived at {local_time(arrived_at)}", timeout=WAIT_MS)
    # An update from a server that leaves the field out keeps the time.
    await track.send(update("arrived", position=fix(400, 0, now + 1)))
    await asyncio.sleep(0.3)
    await expect(arrival).to_have_text(f"Arrived at {local_time(arrived_at)}")
    assert phone_page.errors == []


async def test_small_phone_layout(
    web_server: ServerProcess, browser: Any, artifacts_dir: Path
) -> None:
    context = await browser.new_context(
        viewport=SMALL_PHONE_VIEWPORT, locale="en-GB", timezone_id="Europe/Helsinki"
    )
    page = await context.new_page()
    now = time.time()
    route = [at_metres(0, 0), at_metres(400, 0)]
    snapshot = update(flags=["late", "stale"], position=fix(0, 0, now), route=route)
    track = ScriptedTrack(page, snapshot)
    await track.open(web_server)
    await expect(page.get_by_test_id("fix-age")).to_contain_text("Location updated", timeout=WAIT_MS)
    await page.wait_for_timeout(300)
    await page.screenshot(path=artifacts_dir / "track-small-phone.png", full_page=True)

    sizes = await page.evaluate(
        """() => {
          const map = window.enrouteTrack.map;
          const container = map.getContainer();
          const panel = document.querySelector(".track-panel");
          const steps = [...document.querySelectorAll("[data-testid=status] li:not([hidden])")];
          return {
            leaflet: [map.getSize().x, map.getSize().y],
            container: [container.clientWidth, container.clientHeight],
            panelHidden: panel.scrollHeight - panel.clientHeight,
            stepsCut: steps.filter((step) => step.scrollWidth > step.clientWidth).map((step) => step.textContent),
          };
        }"""
    )
    assert sizes["leaflet"] == sizes["container"]
    assert sizes["panelHidden"] <= 1
    assert sizes["stepsCut"] == []
    await context.close()


async def test_reconnect_note(web_server: ServerProcess, phone_page: Any) -> None:
    track = ScriptedTrack(phone_page.page, update())
    track.close_first_with = 1011
    await track.open(web_server)
    connection = phone_page.page.get_by_test_id("connection")
    await track.connected(2)
    await expect(connection).to_have_text("Reconnected", timeout=WAIT_MS)
    assert phone_page.errors == []


LAYOUT_AT_320 = """() => {
  const steps = [...document.querySelectorAll("[data-testid=status] li:not([hidden])")]
    .filter((step) => step.getClientRects().length > 0);
  return {
    documentWidth: document.documentElement.scrollWidth,
    stepsCut: steps.filter((step) => step.scrollWidth > step.clientWidth).map((step) => step.textContent),
    stepsOutside: steps.filter((step) => step.getBoundingClientRect().right > window.innerWidth)
      .map((step) => step.textContent),
  };
}"""


async def test_every_status_fits_320(
    web_server: ServerProcess, browser: Any, artifacts_dir: Path
) -> None:
    context = await browser.new_context(
        viewport=SMALL_PHONE_VIEWPORT, locale="en-GB", timezone_id="Europe/Helsinki"
    )
    page = await context.new_page()
    now = time.time()
    track = ScriptedTrack(page, update("scheduled"))
    await track.open(web_server)
    current_step = page.locator("[data-testid=status] [aria-current=step]")
    labels = {
        "scheduled": "Scheduled",
        "en_route": "On the way",
        "arrived": "Arrived",
        "completed": "Completed",
        "cancelled": "Cancelled",
    }
    for status, label in labels.items():
        await track.send(update(status, arrived_at=iso(now - 60) if status == "arrived" else None))
        await expect(current_step).to_have_text(label, timeout=WAIT_MS)
        await page.wait_for_timeout(100)
        await page.screenshot(path=artifacts_dir / f"track-320-{status}.png", full_page=True)
        layout = await page.evaluate(LAYOUT_AT_320)
        assert layout["documentWidth"] == SMALL_PHONE_VIEWPORT["width"], status
        assert layout["stepsCut"] == [], status
        assert layout["stepsOutside"] == [], status
    await context.close()


async def test_completed_shows_arrival(web_server: ServerProcess, phone_page: Any) -> None:
    arrived_at = time.time() - 1800
    track = ScriptedTrack(phone_page.page, update("completed", arrived_at=iso(arrived_at)))
    await track.open(web_server)
    page = phone_page.page
    await expect(page.get_by_test_id("arrival-window")).to_have_text("Job completed", timeout=WAIT_MS)
    await expect(page.get_by_test_id("arrival-detail")).to_have_text(
        f"Arrived at {local_time(arrived_at)}"
    )
    assert phone_page.errors == []


async def test_expired_link_final_state(web_server: ServerProcess, phone_page: Any) -> None:
    page = phone_page.page
    await page.route(f"**/v1/track/{TOKEN}", lambda route: route.fulfill(status=410, json={}))
    await page.goto(f"{web_server.base_url}/track/{TOKEN}")
    notice = page.get_by_test_id("notice")
    await expect(notice).to_contain_text("expired", timeout=WAIT_MS)
    await expect(notice).to_contain_text("Ask your contractor for a new link")
    await expect(page.get_by_test_id("arrival-window")).to_have_text("Tracking unavailable")
    await expect(page.get_by_test_id("status")).to_be_hidden()
    await expect(page.locator("#map")).to_be_hidden()
    assert phone_page.errors == []
