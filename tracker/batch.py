"""Redis writes and live messages gathered while a batch of frames is handled.

The lifecycle handles the frames that reached the server in one event-loop
turn together. Their job updates are collected here and sent in one
pipeline, and their live messages go out as one pub/sub message per
organisation, so the subscribers parse one message per batch instead of
one per ping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Hashable
from typing import Any, Generic, TypeVar

import orjson
from redis.asyncio.cluster import RedisCluster

from tracker import keys
from tracker.store import Argument, CommandPipe

#: Type of the pub/sub message that carries several live messages.
BATCH_MESSAGE = "batch"

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


def encode_messages(messages: list[Any]) -> bytes:
    """Encode live messages as one pub/sub payload: the message itself when alone."""
    if len(messages) == 1:
        return orjson.dumps(messages[0])
    return orjson.dumps({"type": BATCH_MESSAGE, "messages": messages})


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
