"""Jobs REST API and the automatic lifecycle, against a real server and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from support import Api, Device, ServerProcess, create_org, running_server

from api.jobs import JobIn, _visits
from tracker import keys
from tracker.jobs import parse_iso

# A site on a street inside the bundled Helsinki graph.
SITE = {"lat": 60.16935, "lon": 24.93890, "radius_m": 50.0}
METRES_PER_DEGREE_LAT = 111_320.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (
        lat + north_m / METRES_PER_DEGREE_LAT,
        lon + east_m / (METRES_PER_DEGREE_LAT * math.cos(math.radians(lat))),
    )


def job_body(job_id: str, contractor_id: str, start: float, end: float, **extra: object) -> dict:
    return {
        "id": job_id,
        "contractor_id": contractor_id,
        "site": dict(SITE),
        "window": {"start": iso(start), "end": iso(end)},
        **extra,
    }


def scripted_visit(t0: float) -> list[dict]:
    """Approach, arrive, work, walk to the van and back, work, depart.

    Fixes every 10 s with 8 m accuracy, starting 400 m north of the site.
    """
    pings = []
    t = t0

    def add(north_m: float, east_m: float = 0.0) -> None:
        nonlocal t
        lat, lon = offset(SITE["lat"], SITE["lon"], north_m, east_m)
        pings.append({"t": t, "lat": lat, "lon": lon, "acc": 8.0})
        t += 10.0

    for north_m in range(400, 0, -40):  # approach at 4 m/s
        add(float(north_m))
    for _ in range(30):  # 5 min of work
        add(3.0, 2.0)
    for _ in range(6):  # 1 min at the van, 90 m away
        add(90.0)
    for _ in range(18):  # 3 min more work
        add(-2.0, 1.0)
    for north_m in range(100, 1300, 60):  # depart at 6 m/s
        add(float(north_m))
    for _ in range(60):  # 10 min away
        add(1300.0)
    return pings


def events_of(api: Api, job_id: str) -> list[dict]:
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()["timeline"]


def test_job_create_and_get(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    created = api.post("/v1/jobs", job_body("j1", "c1", now, now + 3600, address="Mannerheimintie 1"))
    assert created.status_code == 201, created.text
    job = api.get("/v1/jobs/j1").json()
    assert job["status"] == "scheduled"
    assert job["address"] == "Mannerheimintie 1"
    assert job["timeline"] == []


def test_job_polygon_site_accepted(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    ring = [[24.9385, 60.1692], [24.9395, 60.1692], [24.9395, 60.1697], [24.9385, 60.1697], [24.9385, 60.1692]]
    body = job_body("j1", "c1", now, now + 3600)
    body["site"] = {"type": "Polygon", "coordinates": [ring]}
    response = api.post("/v1/jobs", body)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"site": {"lat": 91, "lon": 24.9, "radius_m": 50}}, "site.lat"),
        ({"site": {"lat": 60.1, "lon": 24.9, "radius_m": -5}}, "radius_m"),
        ({"site": {"lon": 24.9, "radius_m": 50}}, "lat"),
        ({"window": {"start": "2026-01-01T10:00:00+00:00", "end": "2026-01-01T09:00:00+00:00"}}, "window.end must be after window.start"),
        ({"window": {"start": "2026-01-01T10:00:00", "end": "2026-01-01T11:00:00"}}, "UTC offset"),
        ({"window": {"start": "tomorrow", "end": "2026-01-01T11:00:00+00:00"}}, "ISO 8601"),
        ({"contractor_id": "nobody"}, "contractor_id 'nobody' not found"),
        ({"window": {"start": "0001-01-01T10:00:00+00:00", "end": "0001-01-01T11:00:00+00:00"}}, "window.start must lie within"),
        ({"site": {"lat": 60.1, "lon": 24.9, "radius_m": 10**400}}, "radius_m must be a finite number"),
        ({"id": "has space"}, "id must be"),
    ],
)
def test_job_create_invalid_422(api: Api, change: dict, message: str) -> None:
    api.contractor("c1")
    now = time.time()
    body = {**job_body("j1", "c1", now, now + 3600), **change}
    response = api.post("/v1/jobs", body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def visits_body(job_id: str, contractor_id: str, windows: list[tuple[float, float]]) -> dict:
    body = job_body(job_id, contractor_id, 0, 0)
    del body["window"]
    body["visits"] = [{"window": {"start": iso(start), "end": iso(end)}} for start, end in windows]
    return body


def test_job_visits_accepted(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    # Touching windows don't overlap: the second starts when the first ends.
    windows = [(now, now + 3600), (now + 3600, now + 7200), (now + 86400, now + 90000)]
    created = api.post("/v1/jobs", visits_body("j1", "c1", windows))
    assert created.status_code == 201, created.text
    job = api.get("/v1/jobs/j1").json()
    assert job["status"] == "scheduled"


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        (
            [(7200, 10800), (0, 3600)],
            "visits[1].window.start must not be before visits[0].window.end",
        ),
        (
            [(0, 3600), (1800, 5400)],
            "visits[1].window.start must not be before visits[0].window.end",
        ),
        (
            [(0, 3600), (3600, 7200), (3600, 7200)],
            "visits[2].window.start must not be before visits[1].window.end",
        ),
        ([(0, 3600), (7200, 3600)], "visits[1].window.end must be after visits[1].window.start"),
        ([(0, 3600), (7200, 7200)], "visits[1].window.end must be after visits[1].window.start"),
    ],
)
def test_job_visits_invalid_422(api: Api, windows: list[tuple[float, float]], message: str) -> None:
    api.contractor("c1")
    now = time.time()
    shifted = [(now + start, now + end) for start, end in windows]
    response = api.post("/v1/jobs", visits_body("j1", "c1", shifted))
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert api.get("/v1/jobs/j1").status_code == 404


def test_job_visits_overlap_names_values(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    response = api.post("/v1/jobs", visits_body("j1", "c1", [(now, now + 3600), (now + 1800, now + 5400)]))
    detail = response.json()["detail"]
    assert iso(now + 1800) in detail
    assert iso(now + 3600) in detail
    assert "visits must be in time order and must not overlap" in detail


def test_job_window_and_visits_422(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    body = visits_body("j1", "c1", [(now, now + 3600)])
    body["window"] = {"start": iso(now + 7200), "end": iso(now + 10800)}
    response = api.post("/v1/jobs", body)
    assert response.status_code == 422
    assert "give either window or visits, not both" in response.json()["detail"]
    assert api.get("/v1/jobs/j1").status_code == 404


def test_job_zero_length_window_422(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    response = api.post("/v1/jobs", job_body("j1", "c1", now, now))
    assert response.status_code == 422
    assert "window.end must be after window.start" in response.json()["detail"]


def test_job_empty_visits_422(api: Api) -> None:
    api.contractor("c1")
    response = api.post("/v1/jobs", visits_body("j1", "c1", []))
    assert response.status_code == 422
    assert "visits must contain 1 to 20 visits, got []" in response.json()["detail"]


@given(
    windows=st.lists(
        st.tuples(st.integers(0, 10 * 86400), st.integers(1, 86400)), min_size=1, max_size=6
    )
)
@settings(max_examples=200, deadline=None)
def test_visits_order_rule(windows: list[tuple[int, int]]) -> None:
    base = float(int(time.time()))
    spans = [(base + offset, base + offset + length) for offset, length in windows]
    body = JobIn.model_validate(visits_body("j1", "c1", spans))
    first_bad = next(
        (index for index in range(1, len(spans)) if spans[index][0] < spans[index - 1][1]), None
    )
    if first_bad is None:
        visits = _visits(body)
        assert [(visit.start_t, visit.end_t) for visit in visits] == spans
    else:
        with pytest.raises(ValueError, match=rf"^visits\[{first_bad}\]\.window\.start must not"):
            _visits(body)


def test_job_duplicate_id_409(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    assert api.post("/v1/jobs", job_body("j1", "c1", now, now + 3600)).status_code == 201
    assert api.post("/v1/jobs", job_body("j1", "c1", now, now + 3600)).status_code == 409


def test_job_list_bad_status_422(api: Api) -> None:
    response = api.get("/v1/jobs", status="bogus")
    assert response.status_code == 422
    assert "status must be one of" in response.json()["detail"]


def test_job_unknown_404(api: Api) -> None:
    assert api.get("/v1/jobs/nope").status_code == 404


def test_job_dispatch_future_at_422(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    api.post("/v1/jobs", job_body("j1", "c1", now, now + 3600))
    response = api.post("/v1/jobs/j1/dispatch", {"at": iso(now + 3600)})
    assert response.status_code == 422
    assert "at must lie within" in response.json()["detail"]


def test_job_dispatch_then_cancel(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    api.post("/v1/jobs", job_body("j1", "c1", now, now + 3600))
    dispatched = api.post("/v1/jobs/j1/dispatch")
    assert dispatched.json()["status"] == "en_route"
    assert api.post("/v1/jobs/j1/dispatch").status_code == 409
    cancelled = api.post("/v1/jobs/j1/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert [e["type"] for e in cancelled.json()["timeline"]] == ["job.en_route", "job.cancelled"]
    assert api.post("/v1/jobs/j1/cancel").status_code == 409


def test_job_other_org_not_visible(
    server: ServerProcess, api: Api, redis_url: str, open_api: Callable[[str, str], Api]
) -> None:
    api.contractor("c1")
    now = time.time()
    api.post("/v1/jobs", job_body("j1", "c1", now, now + 3600))
    _, other_key = create_org(redis_url)
    other = open_api(server.base_url, other_key)
    assert other.get("/v1/jobs/j1").status_code == 404
    assert other.post("/v1/jobs/j1/cancel").status_code == 404


async def test_lifecycle_scripted_visit(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    t0 = time.time() - 3600
    api.post("/v1/jobs", job_body("j1", "c1", t0, t0 + 7200))
    api.post("/v1/jobs/j1/dispatch", {"at": iso(t0)})
    pings = scripted_visit(t0 + 60)
    async with Device(server.ws_url, token) as device:
        for ping in pings:
            assert (await device.send(ping))["accepted"] == 1
    events = events_of(api, "j1")
    kinds = [event["type"] for event in events if event["type"] in ("job.arrived", "job.completed")]
    assert kinds == ["job.arrived", "job.completed"]
    arrived = next(e for e in events if e["type"] == "job.arrived")
    completed = next(e for e in events if e["type"] == "job.completed")
    # The contractor reached the fence 10 pings (100 s) into the track.
    assert t0 + 60 + 80 <= arrived["t"] <= t0 + 60 + 130
    # The final departure started after 5 + 1 + 3 min on site.
    departure_t = t0 + 60 + 100 + 540
    assert departure_t - 20 <= completed["t"] <= departure_t + 60
    assert api.get("/v1/jobs/j1").json()["status"] == "completed"


async def test_lifecycle_late_batch_stamps_fix_time(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    t0 = time.time() - 3600
    api.post("/v1/jobs", job_body("j1", "c1", t0, t0 + 7200))
    api.post("/v1/jobs/j1/dispatch", {"at": iso(t0)})
    pings = scripted_visit(t0 + 60)[:50]
    async with Device(server.ws_url, token) as device:
        # The phone was offline: the whole approach arrives as one batch.
        reply = await device.send({"pings": pings})
    assert reply["accepted"] == 50
    arrived = [e for e in events_of(api, "j1") if e["type"] == "job.arrived"]
    assert len(arrived) == 1
    assert arrived[0]["t"] <= t0 + 60 + 130


async def test_lifecycle_order_independent(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    t0 = time.time() - 3600
    api.post("/v1/jobs", job_body("j1", "c1", t0, t0 + 7200))
    api.post("/v1/jobs/j1/dispatch", {"at": iso(t0)})
    pings = scripted_visit(t0 + 60)[:60]
    async with Device(server.ws_url, token) as device:
        # Live pings from the site first, then the buffered approach.
        await device.send({"pings": pings[30:]})
        await device.send({"pings": pings[:30]})
        await device.send({"pings": pings})  # a resend: all duplicates
    arrived = [e for e in events_of(api, "j1") if e["type"] == "job.arrived"]
    assert len(arrived) == 1


async def test_lifecycle_eta_and_window_while_en_route(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    now = time.time()
    api.post("/v1/jobs", job_body("j1", "c1", now, now + 3600))
    api.post("/v1/jobs/j1/dispatch")
    lat, lon = offset(SITE["lat"], SITE["lon"], 300.0, 0.0)
    async with Device(server.ws_url, token) as device:
        await device.send({"t": time.time(), "lat": lat, "lon": lon, "acc": 5.0})
    job = api.get("/v1/jobs/j1").json()
    assert job["eta_s"] is not None
    assert job["eta_s"] > 0
    window = job["arrival_window"]
    assert window is not None
    assert window["earliest"] <= window["latest"]


async def eta_times_after_frames(
    server: ServerProcess, api: Api, org: str, redis_url: str, offsets_s: list[float]
) -> list[float]:
    """Send one ping per offset 300 m from the site; return the job's ETA fix time after each."""
    token = api.contractor("c1")
    now = time.time()
    api.post("/v1/jobs", job_body("j1", "c1", now - 60, now + 3600))
    api.post("/v1/jobs/j1/dispatch")
    now = time.time()  # pings from before the dispatch never count
    lat, lon = offset(SITE["lat"], SITE["lon"], 300.0, 0.0)
    seen = []
    with redis.Redis.from_url(redis_url) as client:
        async with Device(server.ws_url, token) as device:
            for offset_s in offsets_s:
                reply = await device.send({"t": now + offset_s, "lat": lat, "lon": lon, "acc": 5.0})
                assert reply["accepted"] == 1, reply
                seen.append(float(client.hget(keys.job(org, "j1"), "eta_t") or "nan"))
    return [t - now for t in seen]


@pytest.mark.parametrize(
    ("offsets_s", "expected"),
    [
        # Several fixes a second: one ETA a second.
        ([0.0, 0.4, 0.8, 1.0], [0.0, 0.0, 0.0, 1.0]),
        # A 1 Hz receiver whose fixes come a little early still gets one ETA each.
        ([0.0, 0.95, 1.9], [0.0, 0.95, 1.9]),
        # Fixes exactly the slack interval apart refresh despite float rounding.
        ([0.0, 0.9, 1.8, 2.7], [0.0, 0.9, 1.8, 2.7]),
        # An older ping never turns the ETA back.
        ([0.0, 2.0, 1.5], [0.0, 2.0, 2.0]),
    ],
)
async def test_lifecycle_eta_refresh_times(
    server: ServerProcess,
    api: Api,
    org: tuple[str, str],
    redis_url: str,
    offsets_s: list[float],
    expected: list[float],
) -> None:
    seen = await eta_times_after_frames(server, api, org[0], redis_url, offsets_s)
    assert seen == pytest.approx(expected, abs=1e-3)


async def test_lifecycle_eta_every_frame_with_zero_interval(
    tmp_path: Path, redis_url: str, graph_cache_dir: Path, open_api: Callable[[str, str], Api]
) -> None:
    org, key = create_org(redis_url)
    env = {"ENROUTE_GRAPH_CACHE_DIR": str(graph_cache_dir), "ENROUTE_ETA_MIN_INTERVAL_S": "0"}
    with running_server(redis_url, tmp_path / "server.log", **env) as server:
        api = open_api(server.base_url, key)
        seen = await eta_times_after_frames(server, api, org, redis_url, [0.0, 0.2, 0.4])
    assert seen == pytest.approx([0.0, 0.2, 0.4], abs=1e-3)


async def dispatch_after_fix(
    server: ServerProcess, api: Api, fix_age_s: float, back_s: float = 0.0
) -> tuple[float, dict]:
    """Send one fix ``fix_age_s`` old, then dispatch ``back_s`` ago; return the dispatch time and the job."""
    token = api.contractor("c1")
    now = time.time()
    api.post("/v1/jobs", job_body("j1", "c1", now - 60, now + 3600))
    lat, lon = offset(SITE["lat"], SITE["lon"], 300.0, 0.0)
    async with Device(server.ws_url, token) as device:
        reply = await device.send({"t": now - fix_age_s, "lat": lat, "lon": lon, "acc": 5.0})
    assert reply["accepted"] == 1, reply
    dispatched_t = time.time()
    if back_s:
        api.post("/v1/jobs/j1/dispatch", {"at": iso(dispatched_t - back_s)})
    else:
        api.post("/v1/jobs/j1/dispatch")
    return dispatched_t, api.get("/v1/jobs/j1").json()


async def test_dispatch_old_fix_gives_no_eta(server: ServerProcess, api: Api) -> None:
    _, job = await dispatch_after_fix(server, api, 600.0)
    assert job["eta_s"] is None
    assert job["arrival_window"] is None


async def test_dispatch_backdated_old_fix_gives_no_eta(server: ServerProcess, api: Api) -> None:
    # The fix is a minute older than a dispatch back-dated by three hours.
    _, job = await dispatch_after_fix(server, api, 3 * 3600 + 60, back_s=3 * 3600)
    assert job["eta_s"] is None


async def test_dispatch_recent_fix_counts_from_dispatch(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    dispatched_t, job = await dispatch_after_fix(server, api, 30.0)
    assert job["eta_s"] > 0
    # The ETA counts from the dispatch, not from the fix 30 s before it.
    assert float(redis_sync.hget(keys.job(org[0], "j1"), "eta_t")) >= dispatched_t
    assert parse_iso("latest", job["arrival_window"]["latest"]) > dispatched_t + job["eta_s"] / 2


async def test_lifecycle_wrong_contractor_no_arrival(server: ServerProcess, api: Api) -> None:
    api.contractor("c1")
    other_token = api.contractor("c2")
    t0 = time.time() - 3600
    api.post("/v1/jobs", job_body("j1", "c1", t0, t0 + 7200))
    api.post("/v1/jobs/j1/dispatch", {"at": iso(t0)})
    async with Device(server.ws_url, other_token) as device:
        await device.send({"pings": scripted_visit(t0 + 60)[:50]})
    assert api.get("/v1/jobs/j1").json()["status"] == "en_route"


def wait_for(check, timeout_s: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    return check()


def test_scheduler_no_show_flag(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    api.post("/v1/jobs", job_body("j1", "c1", now - 7200, now - 3600))
    job = wait_for(lambda: "no_show" in (j := api.get("/v1/jobs/j1").json())["flags"] and j)
    assert job
    assert "job.no_show" in [e["type"] for e in job["timeline"]]


async def test_scheduler_stale_then_cleared(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    now = time.time()
    api.post("/v1/jobs", job_body("j1", "c1", now, now + 3600))
    api.post("/v1/jobs/j1/dispatch")
    lat, lon = offset(SITE["lat"], SITE["lon"], 300.0, 0.0)
    async with Device(server.ws_url, token) as device:
        await device.send({"t": now - 300, "lat": lat, "lon": lon, "acc": 5.0})
        stale = wait_for(lambda: "stale" in api.get("/v1/jobs/j1").json()["flags"])
        assert stale
        await device.send({"t": time.time(), "lat": lat, "lon": lon, "acc": 5.0})
    job = api.get("/v1/jobs/j1").json()
    assert "stale" not in job["flags"]
    assert "job.stale_cleared" in [e["type"] for e in job["timeline"]]


def test_events_feed_replays_in_order(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    for job_id in ("j1", "j2"):
        api.post("/v1/jobs", job_body(job_id, "c1", now, now + 3600))
        api.post(f"/v1/jobs/{job_id}/dispatch")
    api.post("/v1/jobs/j1/cancel")
    first = api.get("/v1/events", limit=2).json()
    rest = api.get("/v1/events", after=first["cursor"]).json()
    kinds = [(e["job_id"], e["type"]) for e in first["events"] + rest["events"]]
    assert kinds == [("j1", "job.en_route"), ("j2", "job.en_route"), ("j1", "job.cancelled")]


def test_events_since_skips_older(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    api.post("/v1/jobs", job_body("j1", "c1", now, now + 3600))
    api.post("/v1/jobs/j1/dispatch")
    time.sleep(0.05)
    since = iso(time.time())
    api.post("/v1/jobs/j1/cancel")
    events = api.get("/v1/events", since=since).json()["events"]
    assert [e["type"] for e in events] == ["job.cancelled"]


def test_events_since_empty_cursor_skips_older(api: Api) -> None:
    api.contractor("c1")
    now = time.time()
    api.post("/v1/jobs", job_body("j1", "c1", now, now + 3600))
    api.post("/v1/jobs/j1/dispatch")
    time.sleep(0.05)
    cursor = api.get("/v1/events", since=iso(time.time())).json()["cursor"]
    api.post("/v1/jobs/j1/cancel")
    events = api.get("/v1/events", after=cursor).json()["events"]
    assert [e["type"] for e in events] == ["job.cancelled"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "since must be an ISO 8601 time, got 'yesterday'"),
        ({"since": "2026-12-05T10:00:00"}, "since must carry a UTC offset"),
        ({"since": "2026-12-05T10:00:00Z", "after": "1-0"}, "give after or since, not both"),
        ({"since": "2026-12-05T10:00:00 00:00"}, "encode + as %2B in a URL"),
    ],
)
def test_events_since_invalid_422(api: Api, params: dict[str, str], message: str) -> None:
    response = api.get("/v1/events", **params)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_events_bad_cursor_422(api: Api) -> None:
    response = api.get("/v1/events", after="not-a-cursor")
    assert response.status_code == 422


async def test_lifecycle_restart_mid_visit(
    tmp_path: Path, redis_url: str, graph_cache_dir: Path, open_api: Callable[[str, str], Api]
) -> None:
    org, key = create_org(redis_url)
    t0 = time.time() - 3600
    pings = scripted_visit(t0 + 60)
    env = {"ENROUTE_GRAPH_CACHE_DIR": str(graph_cache_dir)}
    with running_server(redis_url, tmp_path / "first.log", **env) as first:
        api = open_api(first.base_url, key)
        token = api.contractor("c1")
        api.post("/v1/jobs", job_body("j1", "c1", t0, t0 + 7200))
        api.post("/v1/jobs/j1/dispatch", {"at": iso(t0)})
        async with Device(first.ws_url, token) as device:
            for ping in pings[:25]:  # arrived and working
                await device.send(ping)
    with running_server(redis_url, tmp_path / "second.log", **env) as second:
        api = open_api(second.base_url, key)
        async with Device(second.ws_url, token) as device:
            for ping in pings[25:]:
                await device.send(ping)
        kinds = [e["type"] for e in events_of(api, "j1")]
    assert kinds.count("job.arrived") == 1
    assert kinds.count("job.completed") == 1


async def test_concurrent_frames_one_device_arrive(server: ServerProcess, api: Api) -> None:
    # Two frames of one device stored at the same moment reach the same
    # lifecycle batch; the second must not undo what the first found.
    now = time.time()
    inside = offset(SITE["lat"], SITE["lon"], 3.0, 2.0)
    outside = offset(SITE["lat"], SITE["lon"], 400.0, 0.0)
    tokens = {f"c{index}": api.contractor(f"c{index}") for index in range(16)}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        for index, token in enumerate(tokens.values()):
            job_id = f"j{index}"
            api.post("/v1/jobs", job_body(job_id, f"c{index}", now - 3600, now + 3600))
            api.post(f"/v1/jobs/{job_id}/dispatch", {"at": iso(now - 300)})
            headers = {"Authorization": f"Bearer {token}"}

            def frame(t: float, point: tuple[float, float]) -> dict:
                return {"pings": [{"t": t, "lat": point[0], "lon": point[1], "acc": 5.0}]}

            first = await http.post("/v1/pings", json=frame(now - 120, outside), headers=headers)
            assert first.status_code == 200, first.text
            replies = await asyncio.gather(
                http.post("/v1/pings", json=frame(now - 60, inside), headers=headers),
                http.post("/v1/pings", json=frame(now - 25, inside), headers=headers),
            )
            assert [reply.status_code for reply in replies] == [200, 200]
    for index in range(16):
        arrived = [e for e in events_of(api, f"j{index}") if e["type"] == "job.arrived"]
        assert [event["t"] for event in arrived] == [pytest.approx(now - 60)], f"job j{index}"


async def test_completed_job_gets_no_stale_cleared(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    t0 = time.time() - 1500
    api.post("/v1/jobs", job_body("j1", "c1", t0, t0 + 7200))
    api.post("/v1/jobs/j1/dispatch", {"at": iso(t0)})
    visit = scripted_visit(t0 + 60)
    async with Device(server.ws_url, token) as device:
        await device.send({"pings": visit[:20]})  # approach and arrive
        # The last fix is old, so the scheduler flags the job stale at once.
        assert wait_for(lambda: "stale" in api.get("/v1/jobs/j1").json()["flags"])
        await device.send({"pings": visit[20:]})  # work and depart
    kinds = [event["type"] for event in events_of(api, "j1")]
    assert kinds[-1] == "job.completed", kinds


async def first_visit_done(server: ServerProcess, api: Api) -> float:
    """Create job j1 with two visits and drive its first visit to completion; return its dispatch time."""
    token = api.contractor("c1")
    t0 = time.time() - 1500
    api.post("/v1/jobs", visits_body("j1", "c1", [(t0, t0 + 3600), (t0 + 3700, t0 + 7200)]))
    api.post("/v1/jobs/j1/dispatch", {"at": iso(t0)})
    async with Device(server.ws_url, token) as device:
        await device.send({"pings": scripted_visit(t0 + 60)})
    return t0


async def test_next_visit_shows_no_old_eta(server: ServerProcess, api: Api) -> None:
    # The last fix lies outside the road graph, so no new ETA replaces
    # the 0 that the first visit's arrival set.
    await first_visit_done(server, api)
    between = api.get("/v1/jobs/j1").json()
    assert api.post("/v1/jobs/j1/dispatch").status_code == 200
    second = api.get("/v1/jobs/j1").json()
    assert between["status"] == "scheduled"
    assert (between["eta_s"], between["arrival_window"]) == (None, None)
    assert second["status"] == "en_route"
    assert (second["eta_s"], second["arrival_window"]) == (None, None)


async def test_dispatch_backdated_into_last_visit_422(server: ServerProcess, api: Api) -> None:
    t0 = await first_visit_done(server, api)
    response = api.post("/v1/jobs/j1/dispatch", {"at": iso(t0 + 600)})
    assert response.status_code == 422
    assert "at must not be before the job's last event (job.completed at" in response.json()["detail"]
