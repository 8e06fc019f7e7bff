"""The WebSocket protocol of enroute in a real uvicorn server, against raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from api import websocket_protocol
from api.websocket_protocol import QueuedWebSocketProtocol

MESSAGE = "x" * (256 * 1024)
HANDSHAKE = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def flood_until_stuck(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, send large messages until one can't be sent within 0.5 s, then end."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    with contextlib.suppress(TimeoutError):
        while True:
            await asyncio.wait_for(send({"type": "websocket.send", "text": MESSAGE}), 0.5)


async def wait_for_disconnect(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, then wait until the connection ends."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


@contextlib.asynccontextmanager
async def serving(app: Any, ping_s: float = 20.0) -> AsyncIterator[uvicorn.Server]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=QueuedWebSocketProtocol, log_level="warning",
        lifespan="off", ws_ping_interval=ping_s, ws_ping_timeout=ping_s,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        yield server
    finally:
        server.should_exit = True
        await task


def port_of(server: uvicorn.Server) -> int:
    return int(server.servers[0].sockets[0].getsockname()[1])


async def test_protocol_drops_unread_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket_protocol, "ABORT_AFTER_S", 0.3)
    async with serving(flood_until_stuck) as server:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port_of(server)))
        # The application gives up after its stuck send. Then the protocol
        # drops the connection with its unsent data: a reset, not an
        # orderly close after that data.
        assert await ending_of(server, client) == "reset"


async def ending_of(server: uvicorn.Server, client: socket.socket) -> str:
    """Open a WebSocket that never reads, wait until the server drops it; return how it ended."""
    try:
        client.sendall(HANDSHAKE.encode())
        async with asyncio.timeout(10):
            while not server.server_state.connections:
                await asyncio.sleep(0.02)
            while server.server_state.connections:
                await asyncio.sleep(0.05)
        return await asyncio.to_thread(read_to_end, client)
    finally:
        client.close()


def read_to_end(client: socket.socket) -> str:
    """Read until the connection ends; return "reset" or "closed"."""
    client.settimeout(10)
    try:
        while client.recv(1 << 20):
            pass
    except ConnectionResetError:
        return "reset"
    return "closed"


async def test_protocol_resets_client_missing_pings() -> None:
    async with serving(wait_for_disconnect, ping_s=0.2) as server:
        client = socket.create_connection(("127.0.0.1", port_of(server)))
        assert await ending_of(server, client) == "reset"
