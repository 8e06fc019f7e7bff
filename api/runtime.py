"""The objects one server process shares between requests."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from tracker.ingest import Ingest
from tracker.settings import Settings
from tracker.store import PingWriter, RedisClient, connect

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Redis client, ingest pipeline and the services built on them."""

    settings: Settings
    redis: RedisClient
    writer: PingWriter
    ingest: Ingest
    services: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        """Connect to the configured Redis and build the ingest pipeline."""
        if not settings.redis_url:
            raise ValueError(
                "redis_url is not set: the CLI starts an embedded server and sets "
                "ENROUTE_REDIS_URL; set it yourself when embedding the app"
            )
        client = connect(settings.redis_url)
        writer = PingWriter(
            client,
            h3_res=settings.h3_res,
            history_s=settings.history_s,
            max_speed_mps=settings.max_speed_mps,
            retry_s=settings.ingest_retry_s,
        )
        return cls(settings, client, writer, Ingest(writer, settings))

    async def close(self) -> None:
        """Close the writer's connection and the Redis connection pool."""
        await self.writer.aclose()
        await self.redis.aclose()
