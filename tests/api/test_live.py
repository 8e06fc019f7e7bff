"""Tracking links, fleet queries and live fan-out across server processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import h3
import httpx
import orjson
import pytest
import redis
import websockets

from support import Api, Device, ServerProcess, create_org, running_server
from tracker import keys
from tracker.redis_server import EmbeddedRedis
from tracker.tracking import CUSTOMER_EVENT_FIELDS

SITE = {"lat": 60.16935, "lon": 24.93890, "radius_m": 50.0}
FAR = (60.17200, 24.93890)  # about 300 m north of the site


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def make_job(api: Api, job_id: str = "j1", contractor_id: str = "c1") -> str:
    token = api.contractor(contractor_id)
    now = time.time()
    body = {
        "id": job_id,
        "contractor_id": contractor_id,
        "site": dict(SITE),
        "window": {"start": iso(now), "end": iso(now + 3600)},
    }
    assert api.post("/v1/jobs", body).status_code == 201
    return token


def share(api: Api, job_id: str = "j1", **params: float) -> dict:
    response = api.client.post(f"/v1/jobs/{job_id}/share", params=params)
    assert response.status_code == 201, response.text
    return response.json()


async def next_update(connection: websockets.ClientConnection, timeout_s: float = 10.0) -> dict:
    """Return the next ``update`` message, skipping events."""
    deadline = time.monotonic() + timeout_s
    while True:
        message = orjson.loads(await asyncio.wait_for(connection.recv(), deadline - time.monotonic()))
        if message["type"] == "update":
            return message


async def test_track_hides_position_before_dispatch(server: ServerProcess, api: Api) -> None:
    token = make_job(api)
    link = share(api)
    async with Device(server.ws_url, token) as device:
        await device.send({"t": time.time(), "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
    snapshot = httpx.get(f"{server.base_url}/v1/track/{link['token']}").json()
    assert snapshot["status"] == "scheduled"
    assert snapshot["position"] is None


async def test_track_hides_fix_from_before_dispatch(server: ServerProcess, api: Api) -> None:
    # A fix taken before the dispatch may show where the contractor lives.
    token = make_job(api)
    link = share(api)
    async with Device(server.ws_url, token) as device:
        await device.send({"t": time.time() - 5, "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
        api.post("/v1/jobs/j1/dispatch")
        before = httpx.get(f"{server.base_url}/v1/track/{link['token']}").json()
        await device.send({"t": time.time(), "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
    after = httpx.get(f"{server.base_url}/v1/track/{link['token']}").json()
    assert before["status"] == "en_route"
    assert before["position"] is None
    assert after["position"] is not None


async def test_track_pushes_positions_en_route(server: ServerProcess, api: Api) -> None:
    token = make_job(api)
    api.post("/v1/jobs/j1/dispatch")
    link = share(api)
    url = f"{server.ws_url}/v1/track/{link['token']}/ws"
    async with websockets.connect(url) as viewer, Device(server.ws_url, token) as device:
        first = await next_update(viewer)
        assert first["status"] == "en_route"
        now = time.time()
        await device.send({"t": now, "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
        update = await next_update(viewer)
        while update["position"] is None or update["position"]["t"] != now:
            update = await next_update(viewer)
    assert update["position"]["lat"] == FAR[0]


async def test_track_hides_position_after_cancel(server: ServerProcess, api: Api) -> None:
    token = make_job(api)
    api.post("/v1/jobs/j1/dispatch")
    link = share(api)
    async with Device(server.ws_url, token) as device:
        await device.send({"t": time.time(), "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
        api.post("/v1/jobs/j1/cancel")
        await device.send({"t": time.time(), "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
    snapshot = httpx.get(f"{server.base_url}/v1/track/{link['token']}").json()
    assert snapshot["status"] == "cancelled"
    assert snapshot["position"] is None
    assert "route" not in snapshot


async def settled_update(connection: websockets.ClientConnection, quiet_s: float = 0.5) -> dict | None:
    """Return the last ``update`` message before ``quiet_s`` seconds pass without one."""
    last = None
    with contextlib.suppress(TimeoutError):
        while True:
            message = orjson.loads(await asyncio.wait_for(connection.recv(), quiet_s))
            if message["type"] == "update":
                last = message
    return last


async def test_track_link_opened_during_cancel_hides_position(server: ServerProcess, api: Api) -> None:
    # The link opens while the job is cancelled, then the device sends a
    # ping. Without holding messages during the view's first read, about
    # one try in three kept showing the contractor.
    loop = asyncio.get_running_loop()
    leaked = []
    for attempt in range(10):
        job_id, contractor_id = f"race{attempt}", f"cr{attempt}"
        token = make_job(api, job_id, contractor_id)
        api.post(f"/v1/jobs/{job_id}/dispatch")
        link = share(api, job_id)
        async with Device(server.ws_url, token) as device:
            await device.send({"t": time.time(), "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
            cancel = loop.run_in_executor(None, api.post, f"/v1/jobs/{job_id}/cancel")
            async with websockets.connect(f"{server.ws_url}/v1/track/{link['token']}/ws") as viewer:
                assert (await cancel).status_code == 200
                await device.send({"t": time.time(), "lat": FAR[0], "lon": FAR[1] + 1e-4, "acc": 5.0})
                last = await settled_update(viewer)
        if last is None or last["status"] != "cancelled" or last["position"] is not None:
            leaked.append(attempt)
    assert leaked == []


async def test_track_privacy_distance_rule(server: ServerProcess, api: Api) -> None:
    token = make_job(api)
    api.client.put("/v1/org/privacy", json={"reveal_within_m": 100})
    api.post("/v1/jobs/j1/dispatch")
    link = share(api)
    async with Device(server.ws_url, token) as device:
        await device.send({"t": time.time() - 20, "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
        far = httpx.get(f"{server.base_url}/v1/track/{link['token']}").json()
        await device.send({"t": time.time(), "lat": SITE["lat"] + 0.0005, "lon": SITE["lon"], "acc": 5.0})
        near = httpx.get(f"{server.base_url}/v1/track/{link['token']}").json()
    assert far["position"] is None
    assert near["position"] is not None


async def test_track_hidden_position_still_gets_eta(server: ServerProcess, api: Api) -> None:
    token = make_job(api)
    api.client.put("/v1/org/privacy", json={"reveal_within_m": 100})
    api.post("/v1/jobs/j1/dispatch")
    link = share(api)
    async with websockets.connect(f"{server.ws_url}/v1/track/{link['token']}/ws") as customer:
        await next_update(customer)
        async with Device(server.ws_url, token) as device:
            await device.send({"t": time.time(), "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
            update = await next_update(customer)
    assert update["position"] is None
    assert update["eta_s"] is not None


async def test_track_privacy_change_hides_position(server: ServerProcess, api: Api) -> None:
    token = make_job(api)
    api.post("/v1/jobs/j1/dispatch")
    link = share(api)
    async with websockets.connect(f"{server.ws_url}/v1/track/{link['token']}/ws") as customer:
        await next_update(customer)
        async with Device(server.ws_url, token) as device:
            await device.send({"t": time.time(), "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
            visible_update = await next_update(customer)
            while visible_update["position"] is None:
                visible_update = await next_update(customer)
            api.client.put("/v1/org/privacy", json={"reveal_within_m": 100})
            hidden_update = await next_update(customer)
    assert visible_update["position"]["lat"] == FAR[0]
    assert hidden_update["position"] is None


def put_privacy_raw(api: Api, body: bytes) -> httpx.Response:
    """Send a raw JSON body, since httpx's json= rejects Infinity and NaN."""
    headers = {"Content-Type": "application/json"}
    return api.client.put("/v1/org/privacy", content=body, headers=headers)


def stored_privacy(redis_sync: redis.Redis, org_id: str) -> dict[bytes, bytes]:
    fields = redis_sync.hgetall(keys.meta(org_id))
    return {name: value for name, value in fields.items() if name.startswith(b"reveal_within")}


def test_privacy_response_matches_stored(
    api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    response = api.client.put("/v1/org/privacy", json={"reveal_within_s": 600, "reveal_within_m": 250.5})
    assert response.status_code == 200, response.text
    assert response.json() == {"reveal_within_s": 600.0, "reveal_within_m": 250.5}
    stored = stored_privacy(redis_sync, org[0])
    assert {name.decode(): float(value) for name, value in stored.items()} == response.json()
    assert api.get("/v1/org/privacy").json() == response.json()


def test_privacy_get_default_unset(api: Api) -> None:
    response = api.get("/v1/org/privacy")
    assert response.status_code == 200, response.text
    assert response.json() == {"reveal_within_s": None, "reveal_within_m": None}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"reveal_within_m": Infinity}', "reveal_within_m: Input should be a finite number, got Infinity"),
        (b'{"reveal_within_m": 1e999}', "reveal_within_m: Input should be a finite number, got Infinity"),
        (b'{"reveal_within_s": -Infinity}', "reveal_within_s: Input should be a finite number, got -Infinity"),
        (b'{"reveal_within_m": NaN}', "reveal_within_m: Input should be a finite number, got NaN"),
        (b'{"reveal_within_m": true}', "reveal_within_m: Input should be a valid number, got true"),
        (b'{"reveal_within_m": "300"}', 'reveal_within_m: Input should be a valid number, got "300"'),
        (b'{"reveal_within_s": 0}', "reveal_within_s: Input should be greater than 0, got 0"),
        (b'{"bogus": 1}', "bogus: Extra inputs are not permitted, got 1"),
    ],
)
def test_privacy_invalid_body_422(
    api: Api, org: tuple[str, str], redis_sync: redis.Redis, body: bytes, message: str
) -> None:
    assert api.client.put("/v1/org/privacy", json={"reveal_within_s": 600}).status_code == 200
    before = stored_privacy(redis_sync, org[0])
    response = put_privacy_raw(api, body)
    assert response.status_code == 422
    assert response.json()["detail"] == message
    assert stored_privacy(redis_sync, org[0]) == before
    assert api.get("/v1/org/privacy").json() == {"reveal_within_s": 600.0, "reveal_within_m": None}


async def test_track_event_carries_no_fix(server: ServerProcess, api: Api) -> None:
    token = make_job(api)
    api.post("/v1/jobs/j1/dispatch")
    link = share(api)
    async with websockets.connect(f"{server.ws_url}/v1/track/{link['token']}/ws") as customer:
        await next_update(customer)
        async with Device(server.ws_url, token) as device:
            # Fixes count from the dispatch on, so these lie up to 41 s ahead,
            # inside the server's tolerance for clocks running ahead.
            now = time.time()
            inside = [{"t": now + 1 + 10 * i, "lat": SITE["lat"], "lon": SITE["lon"], "acc": 5.0} for i in range(5)]
            await device.send({"pings": inside})
        message = orjson.loads(await asyncio.wait_for(customer.recv(), 10))
        while message["type"] != "event":
            message = orjson.loads(await asyncio.wait_for(customer.recv(), 10))
    assert message["event"]["type"] == "job.arrived"
    assert set(message["event"]) <= set(CUSTOMER_EVENT_FIELDS)


@pytest.mark.parametrize(("token", "code"), [("st_unknown", 4404)])
async def test_track_bad_token_close_code(server: ServerProcess, token: str, code: int) -> None:
    async with websockets.connect(f"{server.ws_url}/v1/track/{token}/ws") as connection:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code


async def test_track_expired_link_closes_4410(server: ServerProcess, api: Api) -> None:
    make_job(api)
    link = share(api, ttl_s=1)
    await asyncio.sleep(1.5)
    async with websockets.connect(f"{server.ws_url}/v1/track/{link['token']}/ws") as connection:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4410
    assert httpx.get(f"{server.base_url}/v1/track/{link['token']}").status_code == 410


async def test_fleet_geojson_and_heatmap(server: ServerProcess, api: Api) -> None:
    now = time.time()
    points = [(60.1690, 24.9380), (60.1691, 24.9381), (60.1720, 24.9450)]
    for index, (lat, lon) in enumerate(points):
        token = api.contractor(f"c{index}")
        async with Device(server.ws_url, token) as device:
            await device.send({"t": now, "lat": lat, "lon": lon, "acc": 5.0})
    fleet = api.get("/v1/fleet").json()
    assert {f["properties"]["contractor_id"] for f in fleet["features"]} == {"c0", "c1", "c2"}
    cells = api.get("/v1/fleet/heatmap", res=7, format="cells").json()["cells"]
    expected: dict[str, int] = {}
    for lat, lon in points:
        cell = h3.latlng_to_cell(lat, lon, 7)
        expected[cell] = expected.get(cell, 0) + 1
    assert {c["h3"]: c["count"] for c in cells} == expected
    geojson = api.get("/v1/fleet/heatmap", res=9).json()
    assert sum(f["properties"]["count"] for f in geojson["features"]) == 3


def test_heatmap_bad_resolution_422(api: Api) -> None:
    response = api.get("/v1/fleet/heatmap", res=4)
    assert response.status_code == 422
    assert "res must be within 5..10, got 4" in response.json()["detail"]


async def test_heatmap_counts_follow_moves(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    now = time.time()
    async with Device(server.ws_url, token) as device:
        await device.send({"t": now - 100, "lat": 60.1690, "lon": 24.9380, "acc": 5.0})
        await device.send({"t": now - 10, "lat": 60.1720, "lon": 24.9450, "acc": 5.0})
    cells = api.get("/v1/fleet/heatmap", res=9, format="cells").json()["cells"]
    assert cells == [{"h3": h3.latlng_to_cell(60.1720, 24.9450, 9), "count": 1}]


@pytest.mark.parametrize(
    ("point", "field"),
    [({"lat": "nan", "lon": "24.9"}, "lat"), ({"lat": "60.1", "lon": "inf"}, "lon")],
)
def test_nearby_nonfinite_point_422(api: Api, point: dict[str, str], field: str) -> None:
    response = api.get("/v1/fleet/nearby", **point)
    assert response.status_code == 422
    assert field in response.text
    assert "finite number" in response.text


async def test_nearby_orders_by_distance(server: ServerProcess, api: Api) -> None:
    now = time.time()
    offsets = {"near": 0.0005, "middle": 0.002, "far": 0.004}
    for name, north in offsets.items():
        token = api.contractor(name)
        async with Device(server.ws_url, token) as device:
            await device.send({"t": now, "lat": SITE["lat"] + north, "lon": SITE["lon"], "acc": 5.0})
    found = api.get("/v1/fleet/nearby", lat=SITE["lat"], lon=SITE["lon"], limit=2).json()["contractors"]
    assert [c["contractor_id"] for c in found] == ["near", "middle"]
    assert found[0]["distance_m"] < found[1]["distance_m"]
    assert found[0]["eta_s"] is not None


async def test_nearby_pentagon_point(server: ServerProcess, api: Api) -> None:
    # The centre of the pentagon of base cell 4, off the Norwegian coast.
    lat, lon = 64.70000012793487, 10.53619907546767
    token = api.contractor("boat")
    async with Device(server.ws_url, token) as device:
        reply = await device.send({"t": time.time(), "lat": lat, "lon": lon, "acc": 10.0})
    assert reply["accepted"] == 1
    found = api.get("/v1/fleet/nearby", lat=64.7005, lon=10.537, limit=1).json()["contractors"]
    assert [c["contractor_id"] for c in found] == ["boat"]


async def test_fleet_ws_requires_key(server: ServerProcess) -> None:
    async with websockets.connect(f"{server.ws_url}/v1/fleet/ws?token=ek_wrong") as connection:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


async def test_fanout_across_two_processes(
    tmp_path: Path, redis_url: str, graph_cache_dir: Path, open_api: Callable[[str, str], Api]
) -> None:
    org, key = create_org(redis_url)
    env = {"ENROUTE_GRAPH_CACHE_DIR": str(graph_cache_dir)}
    with running_server(redis_url, tmp_path / "a.log", **env) as a, running_server(
        redis_url, tmp_path / "b.log", **env
    ) as b:
        api = open_api(a.base_url, key)
        token = make_job(api)
        api.post("/v1/jobs/j1/dispatch")
        link = share(api)
        fleet_url = f"{b.ws_url}/v1/fleet/ws?token={key}"
        track_url = f"{b.ws_url}/v1/track/{link['token']}/ws"
        async with websockets.connect(fleet_url) as dispatcher, websockets.connect(track_url) as customer:
            await next_update(customer)
            await asyncio.sleep(0.3)
            now = time.time()
            async with Device(a.ws_url, token) as device:
                await device.send({"t": now, "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
            seen = orjson.loads(await asyncio.wait_for(dispatcher.recv(), 10))
            while seen["type"] != "position":
                seen = orjson.loads(await asyncio.wait_for(dispatcher.recv(), 10))
            update = await next_update(customer)
            while update["position"] is None:
                update = await next_update(customer)
    assert seen["contractor_id"] == "c1"
    assert update["position"]["t"] == now


async def test_fleet_ws_job_message_carries_eta_fields(
    server: ServerProcess, api: Api, org: tuple[str, str]
) -> None:
    token = make_job(api)
    api.post("/v1/jobs/j1/dispatch")
    async with websockets.connect(f"{server.ws_url}/v1/fleet/ws?token={org[1]}") as dispatcher:
        await asyncio.sleep(0.3)
        async with Device(server.ws_url, token) as device:
            await device.send({"t": time.time(), "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
        message = orjson.loads(await asyncio.wait_for(dispatcher.recv(), 10))
        while message["type"] != "job":
            message = orjson.loads(await asyncio.wait_for(dispatcher.recv(), 10))
    job = message["job"]
    assert set(job) == {"id", "contractor_id", "status", "flags", "eta_s", "arrival_window"}
    assert job["eta_s"] > 0
    assert job["arrival_window"]["earliest"] <= job["arrival_window"]["latest"]


async def test_fleet_ws_job_message_drops_cleared_stale(
    server: ServerProcess, api: Api, org: tuple[str, str]
) -> None:
    token = make_job(api)
    api.post("/v1/jobs/j1/dispatch")
    async with Device(server.ws_url, token) as device:
        # A fix 300 s old makes the flag check mark the job stale.
        await device.send({"t": time.time() - 300, "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
        deadline = time.monotonic() + 30
        while "stale" not in api.get("/v1/jobs/j1").json()["flags"]:
            assert time.monotonic() < deadline, "the job was not flagged stale within 30 s"
            await asyncio.sleep(0.5)
        async with websockets.connect(f"{server.ws_url}/v1/fleet/ws?token={org[1]}") as dispatcher:
            await asyncio.sleep(0.3)
            await device.send({"t": time.time(), "lat": FAR[0], "lon": FAR[1], "acc": 5.0})
            message = orjson.loads(await asyncio.wait_for(dispatcher.recv(), 10))
            while message["type"] != "job":
                message = orjson.loads(await asyncio.wait_for(dispatcher.recv(), 10))
    assert message["job"]["flags"] == []


async def test_stalled_viewer_does_not_slow_ingest(server: ServerProcess, api: Api, org: tuple[str, str]) -> None:
    # A dispatcher that connects and never reads, with a tiny receive buffer.
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = (
        f"GET /v1/fleet/ws?token={org[1]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    stalled.sendall(request.encode())
    try:
        tokens = [api.contractor(f"c{i}") for i in range(20)]
        fleet_url = f"{server.ws_url}/v1/fleet/ws?token={org[1]}"
        async with websockets.connect(fleet_url) as healthy:
            now = time.time() - 60
            latencies = []
            for round_index in range(10):
                for index, token in enumerate(tokens):
                    async with Device(server.ws_url, token) as device:
                        started = time.perf_counter()
                        frame = {"pings": [{"t": now + round_index * 5 + i * 0.01, "lat": 60.17 + index * 1e-4,
                                            "lon": 24.94 + i * 1e-5, "acc": 5.0} for i in range(200)]}
                        await device.send(frame)
                        latencies.append(time.perf_counter() - started)
            received = 0
            with pytest.raises(TimeoutError):
                while True:
                    await asyncio.wait_for(healthy.recv(), 1.0)
                    received += 1
    finally:
        stalled.close()
    latencies.sort()
    assert latencies[int(len(latencies) * 0.95)] < 1.0
    assert received > 0


async def test_live_recovers_after_redis_restart(
    tmp_path: Path, graph_cache_dir: Path, open_api: Callable[[str, str], Api]
) -> None:
    embedded = EmbeddedRedis(tmp_path / "redis")
    url = embedded.start()
    try:
        org, key = create_org(url)
        env = {"ENROUTE_GRAPH_CACHE_DIR": str(graph_cache_dir)}
        with running_server(url, tmp_path / "server.log", **env) as server:
            token = open_api(server.base_url, key).contractor("c-020")
            fleet_url = f"{server.ws_url}/v1/fleet/ws?token={key}"
            async with websockets.connect(fleet_url) as dispatcher, Device(server.ws_url, token) as device:
                await asyncio.sleep(0.3)
                t0 = time.time() - 30
                await device.send({"t": t0, "lat": 60.1700, "lon": 24.9450, "acc": 5.0})
                embedded.kill()
                restart = asyncio.get_running_loop().run_in_executor(
                    None, lambda: (time.sleep(3), embedded.start())
                )
                # Sent while Redis is down: acknowledged only once stored.
                reply = await device.send({"t": t0 + 1, "lat": 60.1701, "lon": 24.9450, "acc": 5.0})
                await restart
                assert reply["type"] == "ack"
                restarted_at = time.monotonic()
                last_t = t0 + 2
                for i in range(2, 20):
                    last_t = t0 + i
                    await device.send({"t": last_t, "lat": 60.1700 + i * 1e-4, "lon": 24.9450, "acc": 5.0})
                    await asyncio.sleep(0.5)
                # Live messages were lost while Redis was down, so the server
                # closes the dispatcher's connection for it to reconnect and reload.
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(dispatcher.recv(), 15)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            async with websockets.connect(fleet_url) as dispatcher, Device(server.ws_url, token) as device:
                # The new subscription may lag the handshake by a moment,
                # so the device sends until the dispatcher receives a ping.
                seen = False
                while not seen and time.monotonic() - restarted_at < 20:
                    last_t += 1
                    await device.send({"t": last_t, "lat": 60.1725, "lon": 24.9450, "acc": 5.0})
                    with contextlib.suppress(TimeoutError):
                        while not seen:
                            message = orjson.loads(await asyncio.wait_for(dispatcher.recv(), 0.5))
                            seen = message["type"] == "position" and message["fix"]["t"] == last_t
                assert seen
        client = redis.Redis.from_url(url)
        stored_t = float(client.hget(keys.device(org, "c-020"), "t"))
        history = client.zcard(keys.history(org, "c-020"))
        client.close()
    finally:
        embedded.stop()
    assert stored_t == last_t
    assert history == round(last_t - t0) + 1


async def test_track_resyncs_after_redis_restart(
    tmp_path: Path, graph_cache_dir: Path, open_api: Callable[[str, str], Api]
) -> None:
    # The cancel runs as soon as Redis is back, before the live
    # subscription is, so only a fresh read brings the customer the cancel.
    embedded = EmbeddedRedis(tmp_path / "redis")
    url = embedded.start()
    try:
        _, key = create_org(url)
        env = {"ENROUTE_GRAPH_CACHE_DIR": str(graph_cache_dir)}
        with running_server(url, tmp_path / "server.log", **env) as server:
            api = open_api(server.base_url, key)
            make_job(api)
            api.post("/v1/jobs/j1/dispatch")
            link = share(api)
            async with websockets.connect(f"{server.ws_url}/v1/track/{link['token']}/ws") as viewer:
                await next_update(viewer)
                embedded.kill()
                await asyncio.sleep(2.0)
                embedded.start()
                while api.post("/v1/jobs/j1/cancel").status_code != 200:
                    await asyncio.sleep(0.05)
                update = await next_update(viewer)
                while update["status"] != "cancelled":
                    update = await next_update(viewer)
    finally:
        embedded.stop()
    assert update["position"] is None


@pytest.mark.parametrize("path", ["/track", "/track/"])
def test_track_page_without_token_served(server: ServerProcess, path: str) -> None:
    response = httpx.get(server.base_url + path)
    assert (response.status_code, response.headers["content-type"]) == (200, "text/html; charset=utf-8")
