"""Field cases from public bug reports, replayed through the real server.

Fix times are shifted to the last hour, since the server rejects fixes
older than its history retention.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import redis

from support import Api, Device, ServerProcess
from tracker import keys


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def dispatched_job(api: Api, site: dict, t0: float, contractor_id: str = "c1") -> str:
    token = api.contractor(contractor_id)
    body = {
        "id": "j1",
        "contractor_id": contractor_id,
        "site": site,
        "window": {"start": iso(t0), "end": iso(t0 + 7200)},
    }
    assert api.post("/v1/jobs", body).status_code == 201
    assert api.post("/v1/jobs/j1/dispatch", {"at": iso(t0 - 60)}).status_code == 200
    return token


def visit_events(api: Api) -> list[dict]:
    timeline = api.get("/v1/jobs/j1").json()["timeline"]
    return [e for e in timeline if e["type"] in ("job.arrived", "job.completed")]


async def test_nan_and_null_frames_rejected_one_by_one(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    t0 = time.time() - 600
    token = dispatched_job(api, {"lat": 60.1711, "lon": 24.9452, "radius_m": 100}, t0)
    frames = [
        f'{{"device": "c-008", "t": {t0}, "lat": 60.1711, "lon": 24.9452, "acc": 12, "speed": 0.0}}',
        f'{{"device":"c-008","t":{t0 + 10},"lat":NaN,"lon":NaN,"acc":0,"speed":444.7,"valid":true}}',
        f'{{"device":"c-008","t":{t0 + 20},"lat":null,"lon":null,"acc":null,"speed":0}}',
        f'{{"device":"c-008","t":{t0 + 30},"lat":"","lon":"","acc":15,"speed":0}}',
        f'{{"device":"c-008","t":{t0 + 40},"lat":Infinity,"lon":24.9452,"acc":15,"speed":0}}',
        f'{{"device":"c-008","t":{t0 + 45},"lat":"NaN","lon":"nan","acc":15,"speed":0}}',
        f'{{"device":"c-008","t":{t0 + 50},"lat":60.1711,"lon":-270.60823,"acc":15,"speed":0}}',
        f'{{"device":"c-008","t":{t0 + 55},"lat":60.1711,"acc":15,"speed":0}}',
        f'{{"device": "c-008", "t": {t0 + 60}, "lat": 60.1712, "lon": 24.9453, "acc": 12, "speed": 0.0}}',
    ]
    replies = []
    async with Device(server.ws_url, token) as device:
        for frame in frames:
            replies.append(await device.send(frame))
    assert [reply["accepted"] for reply in replies] == [1, 0, 0, 0, 0, 0, 0, 0, 1]
    errors = [reply["rejected"][0]["error"] for reply in replies[1:8]]
    for error, field in zip(errors, ["lat", "lat", "lat", "lat", "lat", "lon", "lon"]):
        assert error.startswith(field), error
    events = visit_events(api)
    assert [e["type"] for e in events] == ["job.arrived"]
    assert events[0]["t"] == t0
    history = redis_sync.zrange(keys.history(org[0], "c1"), 0, -1)
    assert [orjson.loads(item)["t"] for item in history] == [t0, t0 + 60]


async def test_accuracy_larger_than_fence_no_departure(server: ServerProcess, api: Api) -> None:
    t0 = time.time() - 900
    ring = [[24.937, 60.1755], [24.939, 60.1755], [24.939, 60.1762], [24.937, 60.1762], [24.937, 60.1755]]
    token = dispatched_job(api, {"type": "Polygon", "coordinates": [ring]}, t0)
    steady = [(60.17584, 24.938001, 13.8), (60.175856, 24.938004, 14.1), (60.175845, 24.938017, 14.0),
              (60.175845, 24.937992, 14.2), (60.175859, 24.937985, 13.9), (60.175859, 24.937988, 13.8)]  # fmt: skip
    wild = (60.17375, 24.943, 1414.0)
    after = [(60.175852, 24.938001, 14.0), (60.175843, 24.938011, 13.9), (60.175849, 24.937995, 14.1),
             (60.175845, 24.938017, 14.2), (60.175849, 24.937988, 13.8), (60.175858, 24.938, 14.2)]  # fmt: skip
    fixes = [*steady, wild, *after]
    async with Device(server.ws_url, token) as device:
        for index, (lat, lon, acc) in enumerate(fixes):
            reply = await device.send({"t": t0 + 5 * index, "lat": lat, "lon": lon, "acc": acc, "spd": 0.0})
            assert reply["accepted"] == 1
    events = visit_events(api)
    assert [e["type"] for e in events] == ["job.arrived"]
    assert t0 <= events[0]["t"] <= t0 + 30


async def test_seconds_vs_milliseconds_latest(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    token = api.contractor("c1")
    now = time.time()
    pings = [
        {"t": now - 30, "lat": 60.17, "lon": 24.94, "acc": 8},
        {"t": (now - 20) * 1000, "lat": 60.1701, "lon": 24.9402, "acc": 8},
        {"t": (now - 10) / 1000, "lat": 60.1702, "lon": 24.9404, "acc": 8},
        {"t": now - 4.75, "lat": 60.1703, "lon": 24.9406, "acc": 8},
    ]
    async with Device(server.ws_url, token) as device:
        reply = await device.send({"pings": pings})
    assert reply["accepted"] == 2
    assert [r["index"] for r in reply["rejected"]] == [1, 2]
    assert "milliseconds" in reply["rejected"][0]["error"]
    state = redis_sync.hgetall(keys.device(org[0], "c1"))
    assert float(state[b"t"]) == now - 4.75
    assert float(state[b"lat"]) == 60.1703


async def test_standing_heading_not_published(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    token = api.contractor("c1")
    async with Device(server.ws_url, token) as device:
        await device.send({"t": time.time(), "lat": 60.17502, "lon": 24.95, "acc": 6, "spd": 0.0, "hdg": 0})
    fix = orjson.loads(redis_sync.hget(keys.device(org[0], "c1"), "fix"))
    assert "hdg" not in fix
