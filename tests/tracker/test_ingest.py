"""Ingest replies when Redis rejects a write, against the session's real Redis."""

from __future__ import annotations

import time
import uuid

import hiredis
import orjson
import pytest
from redis.exceptions import ResponseError

from tracker import keys
from tracker.ingest import Ingest
from tracker.settings import load_settings
from tracker.store import PingWriter, connect, is_transient_reply


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
