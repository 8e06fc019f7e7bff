"""Requests while Redis is down: 503 or close code 1013 with a retry hint, never a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from api.auth import CLOSE_TRY_AGAIN
from support import Api, ServerProcess, create_org, running_server
from tracker.redis_server import EmbeddedRedis


@dataclass
class Outage:
    """A server whose Redis has been killed, with credentials made before."""

    server: ServerProcess
    api_key: str
    device_token: str
    share_token: str


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory, graph_cache_dir: Path) -> Iterator[Outage]:
    folder = tmp_path_factory.mktemp("outage")
    embedded = EmbeddedRedis(folder / "redis")
    url = embedded.start()
    try:
        _, key = create_org(url)
        env = {"ENROUTE_GRAPH_CACHE_DIR": str(graph_cache_dir)}
        with running_server(url, folder / "server.log", **env) as server:
            api = Api(server.base_url, key)
            device_token = api.contractor("c1")
            now = time.time()
            job = {
                "id": "j1",
                "contractor_id": "c1",
                "site": {"lat": 60.17, "lon": 24.94, "radius_m": 50},
                "window": {"start": time_text(now), "end": time_text(now + 3600)},
            }
            assert api.post("/v1/jobs", job).status_code == 201
            share_token = api.client.post("/v1/jobs/j1/share").json()["token"]
            api.close()
            # This process has not looked up the device token or the share
            # token yet, so the requests below must read them from Redis.
            embedded.kill()
            yield Outage(server, key, device_token, share_token)
    finally:
        embedded.stop()


def time_text(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def test_http_ping_during_outage_503(outage: Outage) -> None:
    response = httpx.post(
        f"{outage.server.base_url}/v1/pings",
        json={"t": time.time(), "lat": 60.17, "lon": 24.94},
        headers={"Authorization": f"Bearer {outage.device_token}"},
        timeout=30,
    )
    assert response.status_code == 503
    assert response.json()["retry"] is True
    assert response.headers["retry-after"] == "5"


def test_healthz_during_outage_503(outage: Outage) -> None:
    response = httpx.get(f"{outage.server.base_url}/healthz", timeout=30)
    assert response.status_code == 503
    assert response.json()["retry"] is True
    assert response.headers["retry-after"] == "5"


def test_rest_during_outage_503(outage: Outage) -> None:
    response = httpx.get(
        f"{outage.server.base_url}/v1/jobs/j1",
        headers={"Authorization": f"Bearer {outage.api_key}"},
        timeout=30,
    )
    assert response.status_code == 503
    assert response.json()["retry"] is True


@pytest.mark.parametrize(
    "path",
    ["/v1/devices/stream?token={device}", "/v1/track/{share}/ws", "/v1/fleet/ws?token={key}"],
)
async def test_websocket_during_outage_closes_1013(outage: Outage, path: str) -> None:
    url = outage.server.ws_url + path.format(
        device=outage.device_token, share=outage.share_token, key=outage.api_key
    )
    async with websockets.connect(url, open_timeout=30) as connection:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await connection.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CLOSE_TRY_AGAIN
