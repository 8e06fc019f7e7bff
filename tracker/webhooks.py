"""Webhook subscriptions and their delivery, apart from the ingest path.

Job events land in each organisation's event stream (``{org}:events``). A
delivery task in every server process reads new events through the Redis
consumer group ``webhooks``, so processes share the work, and POSTs each
event to the subscriptions that want its type. The body is the event JSON;
``X-Enroute-Signature: sha256=<hex>`` is the HMAC-SHA256 of the body under
the subscription's secret.

A failed delivery is retried with exponential backoff (1 s, 2 s, 4 s, ...
capped at one hour, ``MAX_ATTEMPTS`` attempts in all). Pending retries live
in the sorted set ``{org}:webhooks:retry``, so they survive a restart, and
every attempt is written to the delivery log ``{org}:webhooks:log``. A slow
or dead receiver delays only its own deliveries: ingest never waits on it.

A process that dies mid-delivery loses no event. New events stay pending in
the consumer group until delivered, and another process claims those left
idle for ``CLAIM_IDLE_S``. A due retry is leased rather than removed: its
time moves ``LEASE_S`` ahead while it is attempted, so if the attempt never
finishes, the retry falls due again. A receiver may therefore get an event
twice; ``X-Enroute-Delivery`` names the event and the subscription.

Unlike API keys and device tokens, webhook secrets are stored as given,
because signing needs the key itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from redis.exceptions import ResponseError

from tracker import keys
from tracker.store import TRANSIENT_ERRORS, RedisClient
from tracker.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

GROUP = "webhooks"
WEBHOOK_ORGS = "enroute:webhook-orgs"
MAX_ATTEMPTS = 10
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 3600.0
DELIVERY_TIMEOUT_S = 5.0
MAX_CONCURRENT_DELIVERIES = 32
POLL_INTERVAL_S = 0.25
LOG_LENGTH = 1000
#: New events that a consumer read but did not acknowledge for this long
#: (its process died, most likely) are claimed by another process.
CLAIM_IDLE_S = 120.0
#: How far ahead an attempted retry's due time moves while it runs; well
#: above one attempt's time limit.
LEASE_S = 60.0
MAX_CLAIMED = 100

# Return the due retries (score <= ARGV[1]) and move them to ARGV[2].
LEASE_DUE_RETRIES = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], member)
end
return due
"""


def sign(secret: str, body: bytes) -> str:
    """Return the ``X-Enroute-Signature`` header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay_s(attempt: int) -> float:
    """Return the wait before attempt ``attempt + 1`` (attempts count from 1)."""
    return min(FIRST_RETRY_S * 2 ** (attempt - 1), MAX_RETRY_S)


def check_url(url: str) -> str:
    """Return ``url`` if webhooks may post to it, else raise ValueError.

    The URL must be absolute http or https with a port within 1..65535, and
    its host must pass IDNA encoding. A host written as an IP address, in any
    notation the resolver accepts, must pass `blocked_reason`. httpx, which
    delivers the webhooks, must accept the URL too (it rejects octal hosts
    such as ``0177.0.0.1``), and the host it connects to must also pass
    `blocked_reason`. A host name is checked only when each delivery
    resolves it, so registration works offline.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"url must be a valid http or https URL ({error}), got {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must be an absolute http or https URL, got {url!r}")
    if port == 0:
        raise ValueError(f"url port must be within 1..65535, got {url!r}")
    address = host_address(url, parts.hostname)
    if address is not None:
        check_address(url, address)
    # Judge the host that httpx connects to as well, in case its parser
    # reads a different host from the URL than urlsplit does.
    client_address = host_address(url, client_host(url))
    if client_address is not None and client_address != address:
        check_address(url, client_address)
    return url


def check_address(url: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    """Raise WebhookTargetError if ``address``, the host of ``url``, is blocked."""
    blocked = blocked_reason(address)
    if blocked:
        raise WebhookTargetError(f"url must not point at {blocked}, got {url!r} ({address})")


def client_host(url: str) -> str:
    """Return the host that httpx connects to for ``url``, IDNA-encoded.

    Raises ValueError with httpx's reason for a URL that httpx rejects.
    """
    try:
        return httpx.URL(url).raw_host.decode("ascii")
    except httpx.InvalidURL as error:
        raise ValueError(
            f"url must be a URL that the delivery client httpx accepts ({error}), got {url!r}"
        ) from None


def host_address(
    url: str, host: str
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse a URL's host as an IP address, or return None for a host name.

    A host without a colon is first encoded with Python's ``idna`` codec
    (IDNA 2003), as ``socket.getaddrinfo`` does before it resolves a host.
    The encoding maps fullwidth digits and the dots U+3002, U+FF0E and U+FF61 to ASCII, so
    ``１６９。254。169。254`` becomes 169.254.169.254. IPv4 then goes
    through ``socket.inet_aton``, which accepts the legacy forms that the
    resolver accepts too: one decimal, hex or octal number (``2852039166``,
    ``0xa9fea9fe``) and short dotted forms (``127.1``).

    Raises ValueError for a host that contains whitespace or control
    characters, an invalid IPv6 literal or a host that IDNA rejects.
    """
    # glibc's inet_aton ignores whatever follows a space, so "127.0.0.1 x"
    # would parse, while no resolver takes such a host.
    if any(char.isspace() or not char.isprintable() for char in host):
        raise ValueError(f"url host must not contain whitespace or control characters, got {url!r}")
    if ":" in host:
        # Only a bracketed IPv6 literal contains a colon. The zone after %
        # names a local interface and is not part of the address.
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"url host must be a valid IPv6 address, got {url!r}") from None
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as error:
        reason = error.__cause__ or error
        raise ValueError(
            f"url host must be a valid IDNA host name ({reason}), got {url!r}"
        ) from None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(ascii_host))
    except OSError:
        return None


class WebhookTargetError(ValueError):
    """A webhook URL points at an address that enroute never posts to."""


def blocked_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Return why webhooks may not reach ``address``, or None when they may.

    Link-local addresses (which include cloud metadata services such as
    169.254.169.254), multicast, unspecified and reserved addresses are
    never targets. Loopback and private addresses are allowed, since a
    self-hosted receiver often lives on the same network.

    An IPv6 address that embeds IPv4 addresses is also judged by them. An
    IPv4-mapped address (``::ffff:a.b.c.d``) is judged only by its IPv4
    address. A 6to4 (2002::/16) or Teredo (2001::/32) address is judged by
    its own rules and by each IPv4 address it embeds, which for Teredo are
    the server and the client.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return blocked_reason(address.ipv4_mapped)
        embedded = [address.sixtofour, *(address.teredo or ())]
        for ipv4 in embedded:
            reason = blocked_reason(ipv4) if ipv4 is not None else None
            if reason:
                return f"{reason} ({ipv4}) embedded in {address}"
    if address.is_link_local:
        return "a link-local address (such as a cloud metadata service)"
    if address.is_loopback:
        # Python counts ::1 as reserved, since it lies in ::/8.
        return None
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "a multicast, unspecified or reserved address"
    return None


async def check_target(url: str) -> None:
    """Resolve the URL's host and raise WebhookTargetError for a blocked address.

    The host that httpx connects to is resolved, and the one urlsplit reads
    as well when the two parsers differ.

    NOTE: the address is checked before httpx resolves the host again to
    connect, so a DNS server that answers differently the second time
    (DNS rebinding) is not stopped here.
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    # A URL that httpx cannot parse raises httpx.InvalidURL to the caller.
    hosts = dict.fromkeys([httpx.URL(url).raw_host.decode("ascii"), parts.hostname or ""])
    loop = asyncio.get_running_loop()
    for host in filter(None, hosts):
        for info in await loop.getaddrinfo(host, port):
            address = ipaddress.ip_address(info[4][0].split("%")[0])
            reason = blocked_reason(address)
            if reason:
                raise WebhookTargetError(f"{host} resolves to {reason}")


class Webhooks:
    """Subscriptions and the delivery loop of one server process."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.consumer = f"{socket.gethostname()}-{id(self)}"
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES)
        self._lease_due = client.register_script(LEASE_DUE_RETRIES)

    async def subscribe(self, org: str, url: str, events: list[str]) -> tuple[str, str]:
        """Add a subscription; return its id and signing secret."""
        check_url(url)
        for event in events:
            if event != "*" and not event.startswith("job."):
                raise ValueError(f"events must be '*' or job event types such as job.arrived, got {event!r}")
        hook_id = "wh_" + secrets.token_hex(8)
        secret = "whsec_" + secrets.token_urlsafe(32)
        record = {"id": hook_id, "url": url, "events": events, "secret": secret}
        with contextlib.suppress(ResponseError):  # BUSYGROUP: the group exists
            await self.client.xgroup_create(keys.org_events(org), GROUP, id="$", mkstream=True)
        await self.client.hset(keys.webhooks(org), hook_id, orjson.dumps(record))
        await self.client.sadd(WEBHOOK_ORGS, org)
        logger.info("org %s subscribed webhook %s to %s", org, hook_id, events)
        return hook_id, secret

    async def unsubscribe(self, org: str, hook_id: str) -> bool:
        """Remove a subscription; return whether it existed."""
        return bool(await self.client.hdel(keys.webhooks(org), hook_id))

    async def list(self, org: str) -> list[dict[str, Any]]:
        """Return the subscriptions, without their secrets."""
        hooks = await self._hooks(org)
        return [{k: v for k, v in hook.items() if k != "secret"} for hook in hooks]

    async def deliveries(self, org: str) -> list[dict[str, Any]]:
        """Return the delivery log, newest first."""
        return [orjson.loads(raw) for raw in await self.client.lrange(keys.webhook_log(org), 0, -1)]

    async def _hooks(self, org: str) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in (await self.client.hgetall(keys.webhooks(org))).values()]

    def start(self) -> None:
        """Start the delivery loop in the running event loop."""
        self._http = httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_S)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the delivery loop; unfinished deliveries are retried later."""
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._http is not None:
            await self._http.aclose()

    async def _run(self) -> None:
        logger.info("webhook delivery started (consumer %s)", self.consumer)
        failures = 0
        while True:
            try:
                orgs = [org.decode() for org in await self.client.smembers(WEBHOOK_ORGS)]
                for org in orgs:
                    await self._deliver_claimed(org)
                    await self._deliver_new(org)
                    await self._deliver_due_retries(org)
                failures = 0
                await asyncio.sleep(POLL_INTERVAL_S)
            except asyncio.CancelledError:
                logger.info("webhook delivery stopped")
                raise
            except TRANSIENT_ERRORS as error:
                failures += 1
                delay_s = min(0.5 * 2**failures, 10.0)
                logger.warning("webhook delivery paused %.1f s: redis error: %s", delay_s, error)
                await asyncio.sleep(delay_s)
            except Exception:
                logger.exception("webhook delivery loop failed; continuing")
                await asyncio.sleep(1.0)

    async def _deliver_new(self, org: str) -> None:
        stream = keys.org_events(org)
        try:
            batches = await self.client.xreadgroup(
                GROUP, self.consumer, {stream: ">"}, count=100
            )
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            with contextlib.suppress(ResponseError):
                await self.client.xgroup_create(stream, GROUP, id="$", mkstream=True)
            return
        if not batches:
            return
        for _, entries in batches:
            await self._deliver_entries(org, entries)

    async def _deliver_claimed(self, org: str) -> None:
        """Deliver the new events that a consumer read long ago and never acknowledged."""
        stream = keys.org_events(org)
        try:
            reply = await self.client.xautoclaim(
                stream, GROUP, self.consumer, int(CLAIM_IDLE_S * 1000), start_id="0-0", count=MAX_CLAIMED
            )
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            return
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
        if entries:
            logger.info("org %s: delivering %d webhook events that another consumer left unacknowledged",
                        org, len(entries))  # fmt: skip
            await self._deliver_entries(org, entries)

    async def _deliver_entries(self, org: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        stream = keys.org_events(org)
        hooks = await self._hooks(org)
        tasks = []
        for entry_id, fields in entries:
            event = orjson.loads(fields[b"e"])
            event["id"] = entry_id.decode()
            for hook in hooks:
                if "*" in hook["events"] or event["type"] in hook["events"]:
                    tasks.append(self._attempt(org, hook, event, 1))
        await asyncio.gather(*tasks)
        await self.client.xack(stream, GROUP, *(entry_id for entry_id, _ in entries))

    async def _deliver_due_retries(self, org: str) -> None:
        retry_key = keys.webhooks(org) + ":retry"
        now = time.time()
        # Leased atomically, so no other process takes the same retry.
        due = await self._lease_due(keys=[retry_key], args=[repr(now), repr(now + LEASE_S), MAX_CLAIMED])
        if not due:
            return
        hooks = {hook["id"]: hook for hook in await self._hooks(org)}
        tasks = []
        for member in due:
            pending = orjson.loads(member)
            hook = hooks.get(pending["hook_id"])
            if hook is None:
                await self.client.zrem(retry_key, member)  # unsubscribed since
                continue
            tasks.append(self._attempt(org, hook, pending["event"], pending["attempt"], member))
        await asyncio.gather(*tasks)

    async def _attempt(
        self, org: str, hook: dict[str, Any], event: dict[str, Any], attempt: int, lease: bytes | None = None
    ) -> None:
        """POST one event to one subscription, then log it and, on failure, schedule the next attempt.

        ``lease`` is the leased retry entry that this attempt replaces.
        """
        body = orjson.dumps(event)
        headers = {
            "Content-Type": "application/json",
            "X-Enroute-Signature": sign(hook["secret"], body),
            "X-Enroute-Event": event["type"],
            "X-Enroute-Delivery": f"{event['id']}/{hook['id']}",
            "User-Agent": "enroute-webhooks/0.1",
        }
        status_code: int | None = None
        error_text = ""
        assert self._http is not None
        async with self._limit:
            try:
                await check_target(hook["url"])
                response = await self._http.post(hook["url"], content=body, headers=headers)
                status_code = response.status_code
            except (httpx.HTTPError, httpx.InvalidURL, OSError, WebhookTargetError) as error:
                error_text = f"{type(error).__name__}: {error}"
        ok = status_code is not None and 200 <= status_code < 300
        log_entry = {
            "hook_id": hook["id"],
            "event_id": event["id"],
            "event_type": event["type"],
            "attempt": attempt,
            "status_code": status_code,
            "error": error_text or None,
            "ok": ok,
            "t": time.time(),
        }
        pipe = self.client.pipeline(transaction=False)
        if lease is not None:
            pipe.zrem(keys.webhooks(org) + ":retry", lease)
        pipe.lpush(keys.webhook_log(org), orjson.dumps(log_entry))
        pipe.ltrim(keys.webhook_log(org), 0, LOG_LENGTH - 1)
        if not ok:
            if attempt < MAX_ATTEMPTS:
                delay_s = retry_delay_s(attempt)
                pending = {"hook_id": hook["id"], "event": event, "attempt": attempt + 1}
                pipe.zadd(keys.webhooks(org) + ":retry", {orjson.dumps(pending): time.time() + delay_s})
                logger.warning(
                    "webhook %s of org %s failed for event %s (attempt %d: %s); retrying in %.0f s",
                    hook["id"], org, event["id"], attempt, status_code or error_text, delay_s,
                )
            else:
                logger.error(
                    "webhook %s of org %s gave up on event %s after %d attempts: %s",
                    hook["id"], org, event["id"], attempt, status_code or error_text,
                )
        await pipe.execute()
