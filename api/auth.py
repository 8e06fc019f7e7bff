"""Bearer-token authentication for API keys and device tokens.

Token lookups are cached per process for ``CACHE_TTL_S`` seconds so the
HTTP ping endpoint does not pay a Redis round trip per request. A revoked
token therefore keeps working for at most that long.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from fastapi import HTTPException, Request, WebSocket, status
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.runtime import Runtime
from tracker import orgs

logger = logging.getLogger(__name__)

#: Errors that mean Redis can't be reached now. Requests that meet them get
#: 503 with a retry hint.
STORAGE_ERRORS = (RedisConnectionError, RedisTimeoutError)
#: Seconds a client is asked to wait before it tries again when Redis is unreachable.
RETRY_AFTER_S = "5"
#: WebSocket close code "Try Again Later" (IANA WebSocket close code registry).
CLOSE_TRY_AGAIN = 1013

CACHE_TTL_S = 60.0
CACHE_MAX_ENTRIES = 100_000


class _TtlCache:
    """A bounded map of secret digests to lookup results with an expiry."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, object]] = OrderedDict()

    def get(self, digest: str) -> object | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, value: object) -> None:
        self._entries[digest] = (time.monotonic() + CACHE_TTL_S, value)
        self._entries.move_to_end(digest)
        while len(self._entries) > CACHE_MAX_ENTRIES:
            self._entries.popitem(last=False)


def bearer_token(headers: dict[str, str] | object, query_token: str | None) -> str | None:
    """Return the token from ``Authorization: Bearer`` or the ``token`` query value."""
    header = getattr(headers, "get", lambda _: None)("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None


def runtime_of(connection: Request | WebSocket) -> Runtime:
    """Return the process runtime stored on the app."""
    return connection.app.state.runtime  # type: ignore[no-any-return]


async def identify_device(runtime: Runtime, token: str | None) -> orgs.DeviceIdentity | None:
    """Return the device behind a token, using the process cache."""
    if not token:
        return None
    cache: _TtlCache = runtime.services.setdefault("device_cache", _TtlCache())
    digest = orgs.hash_secret(token)
    cached = cache.get(digest)
    if isinstance(cached, orgs.DeviceIdentity):
        return cached
    identity = await orgs.device_for_token(runtime.redis, token)
    if identity is not None:
        cache.put(digest, identity)
    return identity


async def require_org(request: Request) -> str:
    """FastAPI dependency: the organisation of the request's API key."""
    runtime = runtime_of(request)
    token = bearer_token(request.headers, None)
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <api key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cache: _TtlCache = runtime.services.setdefault("api_key_cache", _TtlCache())
    digest = orgs.hash_secret(token)
    org = cache.get(digest)
    if not isinstance(org, str):
        org = await orgs.org_for_api_key(runtime.redis, token)
        if org is not None:
            cache.put(digest, org)
    if org is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return org


async def close_unavailable(websocket: WebSocket, error: Exception, client_kind: str) -> None:
    """Accept a WebSocket and close it with CLOSE_TRY_AGAIN because Redis can't be reached."""
    logger.warning("closing %s connection: redis unavailable: %s", client_kind, error)
    await websocket.accept()
    await websocket.close(CLOSE_TRY_AGAIN, "storage is unavailable; reconnect later")
