"""The device WebSocket and HTTP ingest against a real server and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import time
from pathlib import Path

import httpx
import orjson
import pytest
import redis
import websockets

from support import Api, Device, ServerProcess, create_org, running_server
from tracker import keys
from tracker.redis_server import EmbeddedRedis


def fix(t: float, lat: float = 60.1699, lon: float = 24.9384, **extra: float) -> dict:
    return {"t": t, "lat": lat, "lon": lon, "acc": 8.0, **extra}


def history_times(client: redis.Redis, org: str, device_id: str) -> list[float]:
    return [score for _, score in client.zrange(keys.history(org, device_id), 0, -1, withscores=True)]


def latest_t(client: redis.Redis, org: str, device_id: str) -> float:
    return float(client.hget(keys.device(org, device_id), "t"))


async def test_stream_single_ping_acked(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    async with Device(server.ws_url, token) as device:
        reply = await device.send(fix(time.time()))
    assert reply == {
        "type": "ack",
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
        "next_interval_s": reply["next_interval_s"],
    }


BAD_FRAMES = [
    ('{"t": 1793606400, "lat": NaN, "lon": 24.9}', "lat must be a finite number, got nan"),
    ('{"t": 1793606400, "lat": 60.1, "lon": Infinity}', "lon must be a finite number, got inf"),
    ('{"t": 1793606400, "lat": "60.1", "lon": 24.9}', "lat must be a finite number, got '60.1' (a string)"),
    ('{"t": 1793606400, "lon": 24.9}', "lat is missing"),
    ('{"t": 1793606400000, "lat": 60.1, "lon": 24.9}', "which looks like milliseconds"),
    ('{"t": NOW_PLUS_HOUR, "lat": 60.1, "lon": 24.9}', "s ahead of the server clock"),
    ('{"t": NOW, "lat": 60.1, "lon": 24.9, "acc": -3}', "acc must be >= 0 m, got -3.0"),
    ('{"t": NOW, "lat": 91.2, "lon": 24.9}', "lat must be within -90..90, got 91.2"),
]


async def test_stream_bad_pings_rejected_connection_open(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    now = time.time()
    async with Device(server.ws_url, token) as device:
        for frame, message in BAD_FRAMES:
            text = frame.replace("NOW_PLUS_HOUR", repr(now + 3600)).replace("NOW", repr(now))
            reply = await device.send(text)
            assert reply["type"] == "ack", text
            assert reply["accepted"] == 0, text
            assert message in reply["rejected"][0]["error"], text
        reply = await device.send(fix(now))
    assert reply["accepted"] == 1


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "invalid JSON"),
        ('{"pings": []}', "at least one ping"),
        ('{"hello": 1}', "frame must be a ping object"),
        ("[]", "frame must be a ping object"),
    ],
)
async def test_stream_bad_frame_error_keeps_open(
    server: ServerProcess, api: Api, frame: str, message: str
) -> None:
    token = api.contractor("c1")
    async with Device(server.ws_url, token) as device:
        reply = await device.send(frame)
        assert reply["type"] == "error"
        assert message in reply["error"]
        assert (await device.send(fix(time.time())))["accepted"] == 1


async def test_stream_binary_frame_error(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    async with Device(server.ws_url, token) as device:
        reply = await device.send(orjson.dumps(fix(time.time())))
        assert reply["type"] == "error"
        assert "binary frames" in reply["error"]


async def test_stream_batch_with_top_level_ping_warns(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    now = time.time()
    frame = {"pings": [fix(now - 2), fix(now - 1)], **fix(now)}
    async with Device(server.ws_url, token) as device:
        reply = await device.send(frame)
    assert reply["accepted"] == 2
    assert reply["warnings"][0].startswith("top-level t, lat, lon ignored")


async def test_stream_batch_over_limit_error(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    now = time.time()
    batch = {"pings": [fix(now - 100 + i * 0.001) for i in range(10_001)]}
    async with Device(server.ws_url, token) as device:
        reply = await device.send(batch)
    assert reply["type"] == "error"
    assert "at most 10000 pings, got 10001" in reply["error"]


async def test_stream_batch_of_limit_accepted(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    now = time.time()
    batch = {"pings": [fix(now - 100 + i * 0.001) for i in range(10_000)]}
    async with Device(server.ws_url, token) as device:
        reply = await device.send(batch)
    assert reply["accepted"] == 10_000


async def test_stream_oversized_frame_closes_1009(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    async with Device(server.ws_url, token) as device:
        await device.connection.send("x" * (2 << 20))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(device.connection.recv(), timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


@pytest.mark.parametrize("token", ["", "dt_wrong"])
async def test_stream_bad_token_closes_4401(server: ServerProcess, token: str) -> None:
    url = f"{server.ws_url}/v1/devices/stream?token={token}"
    async with websockets.connect(url) as connection:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


async def test_stream_out_of_order_history_sorted(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    token = api.contractor("c1")
    now = time.time()
    async with Device(server.ws_url, token) as device:
        await device.send(fix(now - 10, lat=60.1710))
        await device.send({"pings": [fix(now - 30, lat=60.1690), fix(now - 20, lat=60.1700)]})
    assert history_times(redis_sync, org[0], "c1") == [now - 30, now - 20, now - 10]
    assert latest_t(redis_sync, org[0], "c1") == now - 10


async def test_stream_resent_batch_counts_duplicates(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    token = api.contractor("c1")
    now = time.time()
    batch = {"pings": [fix(now - 30 + i) for i in range(5)]}
    async with Device(server.ws_url, token) as device:
        first = await device.send(batch)
    # The ack was lost: the device reconnects and sends the same batch again.
    async with Device(server.ws_url, token) as device:
        second = await device.send(batch)
    assert first["accepted"] == 5
    assert second["accepted"] == 0
    assert second["duplicates"] == 5
    assert len(history_times(redis_sync, org[0], "c1")) == 5


async def test_stream_duplicate_inside_one_batch(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    now = time.time()
    async with Device(server.ws_url, token) as device:
        reply = await device.send({"pings": [fix(now - 5), fix(now - 5)]})
    assert reply["accepted"] == 1
    assert reply["duplicates"] == 1


async def test_stream_two_connections_one_device(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    token = api.contractor("c1")
    now = time.time()
    times = [now - 60 + i * 0.5 for i in range(100)]

    async def send_all(device: Device) -> list[dict]:
        return [await device.send(fix(t)) for t in times]

    async with Device(server.ws_url, token) as first, Device(server.ws_url, token) as second:
        # Both connections send every ping at once: each t is stored once.
        first_replies, second_replies = await asyncio.gather(send_all(first), send_all(second))
    replies = first_replies + second_replies
    assert sum(reply["accepted"] for reply in replies) == 100
    assert sum(reply["duplicates"] for reply in replies) == 100
    assert history_times(redis_sync, org[0], "c1") == times
    assert latest_t(redis_sync, org[0], "c1") == times[-1]


async def test_stream_latest_ignores_future_dated_fix(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    token = api.contractor("c1")
    now = time.time()
    async with Device(server.ws_url, token) as device:
        await device.send(fix(now - 60, lat=60.1699, lon=24.941))
        reply = await device.send(fix(now + 145_152_000, lat=60.1745, lon=24.95))
        await device.send(fix(now - 10, lat=60.1701, lon=24.9412))
        await device.send(fix(now + 20, lat=60.1702, lon=24.9414))
    assert "ahead of the server clock" in reply["rejected"][0]["error"]
    state = redis_sync.hgetall(keys.device(org[0], "c1"))
    assert float(state[b"t"]) == now + 20
    assert float(state[b"lat"]) == 60.1702


async def test_stream_impossible_jump_keeps_latest(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    token = api.contractor("c1")
    now = time.time()
    async with Device(server.ws_url, token) as device:
        await device.send(fix(now - 20, lat=60.168, lon=24.938))
        # Latitude and longitude swapped: about 4,000 km away 10 s later.
        reply = await device.send(fix(now - 10, lat=24.938, lon=60.168))
    assert reply["accepted"] == 1
    state = redis_sync.hgetall(keys.device(org[0], "c1"))
    assert float(state[b"lat"]) == 60.168


async def test_stream_confirmed_jump_moves_latest(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    token = api.contractor("c1")
    now = time.time()
    async with Device(server.ws_url, token) as device:
        await device.send(fix(now - 30, lat=60.168, lon=24.938))
        await device.send(fix(now - 20, lat=60.30, lon=24.938))
        await device.send(fix(now - 10, lat=60.3001, lon=24.938))
    state = redis_sync.hgetall(keys.device(org[0], "c1"))
    assert float(state[b"lat"]) == 60.3001


async def test_stream_low_accuracy_fix_published_accuracy(
    server: ServerProcess, api: Api, org: tuple[str, str], redis_sync: redis.Redis
) -> None:
    token = api.contractor("c1")
    now = time.time()
    async with Device(server.ws_url, token) as device:
        await device.send(fix(now - 10, lat=60.17585, lon=24.938))
        await device.send({"t": now - 5, "lat": 60.17375, "lon": 24.943, "acc": 1414.0})
    state = redis_sync.hgetall(keys.device(org[0], "c1"))
    assert orjson.loads(state[b"fix"])["acc"] == 1414.0


def test_http_pings_ack(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    response = httpx.post(
        server.base_url + "/v1/pings",
        content=orjson.dumps({"pings": [fix(time.time() - 1), {"lat": 1}]}),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"][0]["index"] == 1


def test_http_pings_bad_token_401(server: ServerProcess) -> None:
    response = httpx.post(
        server.base_url + "/v1/pings",
        content=orjson.dumps(fix(time.time())),
        headers={"Authorization": "Bearer dt_nope"},
    )
    assert response.status_code == 401


def test_http_pings_query_token_names_header(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    response = httpx.post(
        server.base_url + "/v1/pings", params={"token": token}, content=orjson.dumps(fix(time.time()))
    )
    assert response.status_code == 401
    assert "Authorization: Bearer header" in response.json()["error"]


def test_http_pings_oversized_body_413(server: ServerProcess, api: Api) -> None:
    token = api.contractor("c1")
    response = httpx.post(
        server.base_url + "/v1/pings",
        content=b" " * (2 << 20),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 413


async def test_org_isolation_same_contractor_id(
    server: ServerProcess, redis_url: str, redis_sync: redis.Redis, open_api: Callable[[str, str], Api]
) -> None:
    org_a, key_a = create_org(redis_url)
    org_b, key_b = create_org(redis_url)
    token_a = open_api(server.base_url, key_a).contractor("shared-id")
    token_b = open_api(server.base_url, key_b).contractor("shared-id")
    now = time.time()
    async with Device(server.ws_url, token_a) as device:
        await device.send(fix(now - 5, lat=60.1))
    async with Device(server.ws_url, token_b) as device:
        await device.send(fix(now - 5, lat=61.1))
    assert float(redis_sync.hget(keys.device(org_a, "shared-id"), "lat")) == 60.1
    assert float(redis_sync.hget(keys.device(org_b, "shared-id"), "lat")) == 61.1


def test_org_api_key_of_other_org_rejected(server: ServerProcess) -> None:
    response = httpx.post(
        server.base_url + "/v1/contractors",
        json={"id": "c1"},
        headers={"Authorization": "Bearer ek_not-a-key"},
    )
    assert response.status_code == 401


async def test_stream_survives_redis_restart(tmp_path: Path, open_api: Callable[[str, str], Api]) -> None:
    embedded = EmbeddedRedis(tmp_path / "redis")
    url = embedded.start()
    try:
        org, key = create_org(url)
        with running_server(url, tmp_path / "server.log", ENROUTE_INGEST_RETRY_S="30") as proc:
            token = open_api(proc.base_url, key).contractor("c1")
            now = time.time()
            acked: list[float] = []
            async with Device(proc.ws_url, token) as device:
                for i in range(10):
                    t = now - 60 + i
                    if (await device.send(fix(t)))["accepted"] == 1:
                        acked.append(t)
                embedded.kill()
                restart = asyncio.get_running_loop().run_in_executor(
                    None, lambda: (time.sleep(2), embedded.start())
                )
                # Sent while Redis is down: acked only once it is stored again.
                replies = []
                for i in range(10, 15):
                    t = now - 60 + i
                    reply = await device.send(fix(t))
                    replies.append(reply)
                    if reply.get("accepted") == 1:
                        acked.append(t)
                await restart
                reply = await device.send(fix(now - 30))
                assert reply["accepted"] == 1
                acked.append(now - 30)
        client = redis.Redis.from_url(url)
        stored = history_times(client, org, "c1")
        client.close()
    finally:
        embedded.stop()
    assert all(reply["type"] in ("ack", "error") for reply in replies)
    assert set(acked) <= set(stored)
    assert len(acked) == 16
