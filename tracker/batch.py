"""Redis writes and live messages gathered while a batch of frames is handled.

The lifecycle handles the frames that reached the server in one event-loop
turn together. Their job updates are collected here and sent in one
pipeline, and their live messages go out as one pub/sub message per
organisation, so the subscribers get one message per batch instead of one
per ping. Each message of a batch travels on a line of its own behind its
routing key, so a subscriber decodes only the messages its viewers want.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Hashable, Iterator
from typing import Any, Generic, TypeVar

import orjson
from redis.asyncio.cluster import RedisCluster

from tracker import keys
from tracker.store import Argument, CommandPipe

#: First line of a pub/sub payload that carries several live messages.
BATCH_HEADER = b"batch\n"
#: Routing key of a message that only viewers of every message want.
NO_ROUTE = "-"
#: Routing key of a change of the organisation's privacy settings.
PRIVACY_ROUTE = "privacy"

T = TypeVar("T")


class Batch:
    """Commands and live messages to send at the end of a batch."""

    def __init__(self, commands: CommandPipe) -> None:
        self.commands = commands
        self.queued: list[tuple[Argument, ...]] = []
        self.messages: dict[str, list[Any]] = {}

    def command(self, *args: Argument) -> None:
        """Queue one command."""
        self.queued.append(args)

    def hset(self, key: str, mapping: dict[str, Argument]) -> None:
        """Queue an HSET of several fields."""
        args: list[Argument] = ["HSET", key]
        for name, value in mapping.items():
            args += (name, value)
        self.queued.append(tuple(args))

    def publish(self, org: str, message: Any) -> None:
        """Queue a live message for the organisation's channel."""
        self.messages.setdefault(org, []).append(message)

    async def execute(self) -> None:
        """Send the commands, then the live messages, and wait for Redis to reply."""
        await (await self.send())

    async def send(self) -> Awaitable[Any]:
        """Send the commands, then the live messages; return an awaitable of the replies.

        On a RedisPipe connection this returns once the commands are
        written, before Redis has run them.
        """
        payloads = [
            ("PUBLISH", keys.live_channel(org), encode_messages(messages))
            for org, messages in self.messages.items()
        ]
        # A cluster pipeline can't carry PUBLISH, so it goes on its own there.
        if isinstance(self.commands.client, RedisCluster):
            await self.commands.execute(self.queued)
            for _, channel, payload in payloads:
                await self.commands.client.publish(channel, payload)
            return asyncio.sleep(0)
        return await self.commands.send([*self.queued, *payloads])


def message_route(message: dict[str, Any]) -> str:
    """Return the routing key of a live message: its contractor, its job, PRIVACY_ROUTE or NO_ROUTE."""
    kind = message.get("type")
    if kind == "position":
        return "c:" + str(message.get("contractor_id"))
    if kind == "job":
        return "j:" + str(message.get("job", {}).get("id"))
    if kind == "event":
        return "j:" + str(message.get("event", {}).get("job_id"))
    if kind == "privacy":
        return PRIVACY_ROUTE
    return NO_ROUTE


def encode_messages(messages: list[Any]) -> bytes:
    """Encode live messages as one pub/sub payload.

    A lone message goes as its JSON. Several go as the line ``batch``
    followed by one line per message: its routing key, a space and its
    JSON. Routing keys contain no spaces (ids are checked against
    ``keys.ID_PATTERN``), and JSON text contains no raw line breaks.
    """
    if len(messages) == 1:
        return orjson.dumps(messages[0])
    lines = [BATCH_HEADER]
    for message in messages:
        lines.append(message_route(message).encode() + b" " + orjson.dumps(message) + b"\n")
    return b"".join(lines)


def split_batch(payload: bytes) -> Iterator[tuple[str, bytes]]:
    """Yield the routing key and JSON of each message of a batch payload."""
    for line in payload[len(BATCH_HEADER) :].split(b"\n"):
        if line:
            route, _, message = line.partition(b" ")
            yield route.decode(), message


class BoundedCache(Generic[T]):
    """A dict that starts over when it reaches ``max_keys`` keys."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._items: dict[Hashable, T] = {}

    def get(self, key: Hashable) -> T | None:
        """Return the value under ``key``, or None."""
        return self._items.get(key)

    def put(self, key: Hashable, value: T) -> None:
        """Store ``value`` under ``key``, emptying the cache first when it is full."""
        if len(self._items) >= self.max_keys and key not in self._items:
            self._items.clear()
        self._items[key] = value
