"""The load generators' WebSocket client against a real server."""

from __future__ import annotations

import asyncio

import orjson

from benchmarks._light_client import LightClient
from support import Api, ServerProcess


async def test_light_client_sees_server_close(server: ServerProcess) -> None:
    received: list[bytes] = []
    connection = await LightClient.connect(f"{server.ws_url}/v1/track/no-such-token/ws", received.append)
    await asyncio.wait_for(connection.closed, 10)
    assert connection.protocol.close_code == 4404


async def test_light_client_gets_ack(server: ServerProcess, api: Api) -> None:
    token = api.contractor("light-1")
    acks: asyncio.Queue[bytes] = asyncio.Queue()
    headers = {"Authorization": f"Bearer {token}"}
    connection = await LightClient.connect(f"{server.ws_url}/v1/devices/stream", acks.put_nowait, headers)
    try:
        connection.send_text(b'{"t": 1.0e9, "lat": 60.17, "lon": 24.94, "acc": 5.0}')
        reply = orjson.loads(await asyncio.wait_for(acks.get(), 10))
    finally:
        connection.close()
        await asyncio.wait_for(connection.closed, 10)
    assert reply["type"] == "ack"
