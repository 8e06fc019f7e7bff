"""Ingest replies when Redis rejects a write, against the session's real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from urllib.parse import urlsplit

import hiredis
import orjson
import pytest
from redis.exceptions import ResponseError

from tracker import keys
from tracker.ingest import CHUNK_PINGS, Ingest
from tracker.pings import Ping
from tracker.settings import load_settings
from tracker.store import PingWriter, StoreResult, connect, is_transient_reply


async def test_ingest_rejected_write_replies_retry(redis_url: str) -> None:
    client = connect(redis_url)
    writer = PingWriter(client)
    ingest = Ingest(writer, load_settings(redis_url=redis_url))
    org, device = f"ingest-{uuid.uuid4().hex[:8]}", "c1"
    # A string where the device hash belongs makes the ingest script fail.
    await client.set(keys.device(org, device), "not a hash")
    frame = orjson.dumps({"t": time.time(), "lat": 60.17, "lon": 24.94})
    try:
        reply = await ingest.handle_frame(org, device, frame)
    finally:
        await writer.aclose()
        await client.aclose()
    assert reply["type"] == "error"
    assert reply["retry"] is True
    assert "WRONGTYPE" in reply["error"]


class ReplyDroppingProxy:
    """A TCP proxy to Redis that loses the reply to the first EVALSHA.

    The connection that sends it is closed once Redis's reply arrives, so
    the script has run but the writer never learns its outcome.
    """

    def __init__(self, redis_url: str) -> None:
        self.upstream = urlsplit(redis_url)
        self.dropped = 0
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        database = self.upstream.path.strip("/") if self.upstream.scheme != "unix" else "0"
        return f"redis://127.0.0.1:{port}/{database or 0}"

    async def stop(self) -> None:
        """Stop accepting and wait for the open connections, which the client has closed."""
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*self.handlers), 5.0)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.upstream.scheme == "unix":
            return await asyncio.open_unix_connection(self.upstream.path)
        return await asyncio.open_connection(self.upstream.hostname, self.upstream.port or 6379)

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.add(handler)
        redis_in, redis_out = await self._open_upstream()
        script_sent = asyncio.Event()

        async def requests() -> None:
            while data := await client_in.read(65536):
                if b"EVALSHA" in data and self.dropped == 0:
                    script_sent.set()
                redis_out.write(data)
                await redis_out.drain()

        async def replies() -> None:
            while data := await redis_in.read(65536):
                if script_sent.is_set() and self.dropped == 0:
                    self.dropped += 1
                    return
                client_out.write(data)
                await client_out.drain()

        tasks = [asyncio.create_task(requests()), asyncio.create_task(replies())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (client_out, redis_out):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_ingest_retried_write_reaches_observers(redis_url: str) -> None:
    proxy = ReplyDroppingProxy(redis_url)
    client = connect(await proxy.start())
    writer = PingWriter(client)
    ingest = Ingest(writer, load_settings(redis_url=redis_url))
    seen: list[tuple[Ping, str]] = []

    async def observer(org: str, device_id: str, stored: list[tuple[Ping, str]], result: StoreResult) -> None:
        seen.extend(stored)

    ingest.observers.append(observer)
    org, device = f"ingest-{uuid.uuid4().hex[:8]}", "c1"
    now = time.time()
    frame = orjson.dumps({"pings": [{"t": now - 2, "lat": 60.17, "lon": 24.94},
                                    {"t": now - 1, "lat": 60.17, "lon": 24.94}]})  # fmt: skip
    try:
        reply = await ingest.handle_frame(org, device, frame)
    finally:
        await writer.aclose()
        await client.aclose()
        await proxy.stop()
    assert proxy.dropped == 1
    # The first attempt stored both pings, so the retry finds them stored.
    assert reply["duplicates"] == 2
    # The newer ping became the device's latest position in the first attempt.
    assert [status for _, status in seen] == ["h", "l"]


@pytest.mark.parametrize(
    "reply",
    [hiredis.ReplyError("LOADING Redis is loading the dataset in memory"),
     hiredis.ReplyError("BUSY Redis is busy running a script"),
     ResponseError("TRYAGAIN Multiple keys request during rehashing of slot")],
)  # fmt: skip
def test_transient_reply_detected(reply: Exception) -> None:
    assert is_transient_reply(reply)


@pytest.mark.parametrize(
    "reply",
    [hiredis.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value"),
     hiredis.ReplyError("NOSCRIPT No matching script"), [b"l"], None],
)  # fmt: skip
def test_other_reply_not_transient(reply: object) -> None:
    assert not is_transient_reply(reply)


@contextlib.asynccontextmanager
async def chunked_ingest(redis_url: str):  # type: ignore[no-untyped-def]
    client = connect(redis_url)
    writer = PingWriter(client)
    try:
        yield client, Ingest(writer, load_settings(redis_url=redis_url))
    finally:
        await writer.aclose()
        await client.aclose()


def reversed_batch(count: int, bad: set[int]) -> bytes:
    """A frame of ``count`` pings, newest first, with lat 91 at the ``bad`` indexes."""
    now = time.time()
    pings = [
        {"t": now - index, "lat": 91.0 if index in bad else 60.17, "lon": 24.94}
        for index in range(count)
    ]
    return orjson.dumps({"pings": pings})


async def test_ingest_large_frame_ack_counts_every_chunk(redis_url: str) -> None:
    async with chunked_ingest(redis_url) as (_, ingest):
        org = f"ingest-{uuid.uuid4().hex[:8]}"
        reply = await ingest.handle_frame(org, "c1", reversed_batch(2500, {0, 1500, 2499}))
    assert (reply["accepted"], [r["index"] for r in reply["rejected"]]) == (2497, [0, 1500, 2499])


async def test_ingest_large_frame_reaches_observers_in_fix_order(redis_url: str) -> None:
    seen: list[float] = []

    async def observe(org: str, device: str, stored: list[tuple[Ping, str]], result: StoreResult) -> None:
        seen.extend(ping.t for ping, _ in stored)

    async with chunked_ingest(redis_url) as (_, ingest):
        ingest.observers.append(observe)
        await ingest.handle_frame(f"ingest-{uuid.uuid4().hex[:8]}", "c1", reversed_batch(2500, set()))
    assert seen == sorted(seen)


async def test_ingest_large_frame_stores_newest_as_latest(redis_url: str) -> None:
    frame = reversed_batch(2500, set())
    newest_t = orjson.loads(frame)["pings"][0]["t"]
    async with chunked_ingest(redis_url) as (client, ingest):
        org = f"ingest-{uuid.uuid4().hex[:8]}"
        await ingest.handle_frame(org, "c1", frame)
        latest_t = float(await client.hget(keys.device(org, "c1"), "t"))
    assert latest_t == newest_t


async def test_ingest_large_frame_yields_before_write(redis_url: str) -> None:
    order: list[str] = []
    async with chunked_ingest(redis_url) as (_, ingest):
        write = ingest.writer.write

        async def recorded_write(org: str, device: str, pings: list[Ping]) -> StoreResult:
            order.append(f"write {len(pings)}")
            return await write(org, device, pings)

        ingest.writer.write = recorded_write  # type: ignore[method-assign]
        asyncio.get_running_loop().call_soon(order.append, "other")
        await ingest.handle_frame(f"ingest-{uuid.uuid4().hex[:8]}", "c1", reversed_batch(2500, set()))
    sizes = [len(range(start, min(start + CHUNK_PINGS, 2500))) for start in range(0, 2500, CHUNK_PINGS)]
    assert order == ["other", *(f"write {size}" for size in sizes)]
