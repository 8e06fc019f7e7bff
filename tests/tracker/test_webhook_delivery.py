"""Webhook delivery when a process dies mid-delivery, against the session's real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from tracker import keys, webhooks
from tracker.store import connect
from tracker.webhooks import GROUP, Webhooks

EVENT = {"type": "job.arrived", "job_id": "j1", "contractor_id": "c1", "t": 1.0, "status": "arrived", "flags": []}


class HttpReceiver:
    """A local HTTP endpoint that replies 200, or never replies when ``hang`` is set."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.stopped = asyncio.Event()
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def stop(self) -> None:
        assert self.server is not None
        self.stopped.set()
        self.server.close()
        await asyncio.gather(*self.handlers)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.add(handler)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            self.bodies.append(await reader.readexactly(length))
            if self.hang:
                await self.stopped.wait()
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def subscribed_org(redis_url: str, receiver: HttpReceiver) -> AsyncIterator[tuple[str, Webhooks]]:
    client = connect(redis_url)
    hooks = Webhooks(client)
    org = f"wh-{uuid.uuid4().hex[:8]}"
    url = await receiver.start()
    await hooks.subscribe(org, url, ["*"])
    try:
        yield org, hooks
    finally:
        await hooks.stop()
        await client.srem(webhooks.WEBHOOK_ORGS, org)
        await receiver.stop()
        await client.aclose()


async def wait_for(check, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_delivery_claims_event_of_dead_consumer(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "CLAIM_IDLE_S", 0.2, raising=False)
    receiver = HttpReceiver()
    async with subscribed_org(redis_url, receiver) as (org, hooks):
        stream = keys.org_events(org)
        await hooks.client.xadd(stream, {"e": orjson.dumps(EVENT)})
        # A consumer reads the event and dies before it acknowledges it.
        await hooks.client.xreadgroup(GROUP, "dead-consumer", {stream: ">"}, count=10)
        hooks.start()

        async def delivered() -> bool:
            return len(receiver.bodies) == 1

        assert await wait_for(delivered)
        assert (await hooks.client.xpending(stream, GROUP))["pending"] == 0


async def test_delivery_keeps_retry_of_unfinished_attempt(redis_url: str) -> None:
    receiver = HttpReceiver(hang=True)
    async with subscribed_org(redis_url, receiver) as (org, hooks):
        hook_id = (await hooks.list(org))[0]["id"]
        retry_key = keys.webhooks(org) + ":retry"
        pending = {"hook_id": hook_id, "event": {**EVENT, "id": "1-0"}, "attempt": 3}
        await hooks.client.zadd(retry_key, {orjson.dumps(pending): time.time() - 1})
        hooks.start()

        async def attempted() -> bool:
            return len(receiver.bodies) == 1

        assert await wait_for(attempted)
        await hooks.stop()  # the process dies during the attempt
        assert await hooks.client.zcard(retry_key) == 1
