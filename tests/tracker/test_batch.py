"""CommandPipe and Batch against the session's real Redis."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from tracker import keys
from tracker.batch import (
    BATCH_HEADER,
    NO_ROUTE,
    Batch,
    encode_messages,
    message_route,
    split_batch,
)
from tracker.store import CommandPipe, _pack_command_python, connect, pack_command


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_command_pipe_returns_replies_in_order(redis_url: str) -> None:
    client = connect(redis_url)
    commands = CommandPipe(client)
    key = unique("pipe")
    try:
        replies = await commands.execute([("SET", key, 1.5), ("INCRBYFLOAT", key, 2), ("GET", key)])
    finally:
        await commands.aclose()
        await client.aclose()
    assert replies[2] == b"3.5"


async def test_command_pipe_hmget_missing_is_none(redis_url: str) -> None:
    client = connect(redis_url)
    commands = CommandPipe(client)
    key = unique("hash")
    try:
        await commands.execute([("HSET", key, "a", b"1", "b", "two")])
        (reply,) = await commands.execute([("HMGET", key, "b", "missing", "a")])
    finally:
        await commands.aclose()
        await client.aclose()
    assert reply == [b"two", None, b"1"]


async def test_command_pipe_error_names_command(redis_url: str) -> None:
    client = connect(redis_url)
    commands = CommandPipe(client)
    key = unique("string")
    try:
        await commands.execute([("SET", key, "text")])
        with pytest.raises(ResponseError, match="HSET failed"):
            await commands.execute([("HSET", key, "field", "value")])
        # The connection stays usable after an error reply.
        assert await commands.execute([("GET", key)]) == [b"text"]
    finally:
        await commands.aclose()
        await client.aclose()


async def test_command_pipe_reconnects_after_close(redis_url: str) -> None:
    client = connect(redis_url)
    commands = CommandPipe(client)
    try:
        await commands.execute([("PING",)])
        await commands.aclose()
        assert await commands.execute([("PING",)]) == [b"PONG"]
    finally:
        await commands.aclose()
        await client.aclose()


def test_encode_messages_single_stays_plain() -> None:
    assert orjson.loads(encode_messages([{"type": "position"}])) == {"type": "position"}


def test_encode_messages_several_become_batch_lines() -> None:
    payload = encode_messages([{"type": "position", "contractor_id": "c1"}, {"n": 2}])
    assert payload == BATCH_HEADER + b'c:c1 {"type":"position","contractor_id":"c1"}\n- {"n":2}\n'


def test_message_route_of_event_is_its_job() -> None:
    assert message_route({"type": "event", "event": {"job_id": "j1"}}) == "j:j1"


def test_message_route_of_unknown_type_is_none() -> None:
    assert message_route({"type": "other"}) == NO_ROUTE


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
texts = st.text()
live_messages = st.one_of(
    st.builds(lambda c, note: {"type": "position", "contractor_id": c, "note": note}, ids, texts),
    st.builds(lambda j, note: {"type": "job", "job": {"id": j, "note": note}}, ids, texts),
    st.builds(lambda j, note: {"type": "event", "event": {"job_id": j, "note": note}}, ids, texts),
    st.builds(lambda note: {"type": note}, texts),
)


@given(st.lists(live_messages, min_size=2, max_size=8))
def test_split_batch_returns_each_message_with_its_route(messages: list[dict]) -> None:
    split = list(split_batch(encode_messages(messages)))
    assert split == [(message_route(m), orjson.dumps(m)) for m in messages]


async def test_batch_writes_then_publishes_per_org(redis_url: str) -> None:
    client = connect(redis_url)
    commands = CommandPipe(client)
    org_a, org_b = unique("org"), unique("org")
    pubsub = client.pubsub()
    await pubsub.subscribe(keys.live_channel(org_a), keys.live_channel(org_b))
    key = unique("batch")
    try:
        batch = Batch(commands)
        batch.hset(key, {"eta_s": "12.5"})
        batch.publish(org_a, {"n": 1})
        batch.publish(org_a, {"n": 2})
        batch.publish(org_b, {"n": 3})
        await batch.execute()
        received = {}
        async with asyncio.timeout(5):
            while len(received) < 2:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    received[message["channel"].decode()] = message["data"]
        stored = await client.hget(key, "eta_s")
    finally:
        await pubsub.aclose()
        await commands.aclose()
        await client.aclose()
    assert stored == b"12.5"
    assert received[keys.live_channel(org_a)] == encode_messages([{"n": 1}, {"n": 2}])
    assert received[keys.live_channel(org_b)] == b'{"n":3}'


class Label(str):
    """A str subclass, like the values of some enums."""


@pytest.mark.parametrize(
    ("argument", "encoded"),
    [("héllo", "héllo".encode()), (b"\x00raw", b"\x00raw"), (7, b"7"), (0.1, b"0.1"),
     (Label("sub"), b"sub"), (bytearray(b"ba"), b"ba"), (True, b"True")],
)  # fmt: skip
def test_pack_command_encodes_each_kind(argument: object, encoded: bytes) -> None:
    packed = pack_command(["SET", argument])
    assert packed == b"*2\r\n$3\r\nSET\r\n$%d\r\n%s\r\n" % (len(encoded), encoded)


@given(
    st.lists(
        st.one_of(st.text(), st.binary(), st.integers(), st.floats(allow_nan=False)),
        min_size=1, max_size=6,
    )  # fmt: skip
)
def test_pack_command_matches_python_encoder(arguments: list[str | bytes | int | float]) -> None:
    assert pack_command(arguments) == _pack_command_python(arguments)


async def test_command_pipe_close_releases_socket(redis_url: str) -> None:
    # A loop closed right after aclose() must find no socket left open.
    client = connect(redis_url)
    commands = CommandPipe(client)
    try:
        await commands.execute([("PING",)])
        socket = commands._pipe._transport.get_extra_info("socket")
        await commands.aclose()
        assert socket.fileno() == -1
    finally:
        await client.aclose()
