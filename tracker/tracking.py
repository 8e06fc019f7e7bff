"""Customer tracking links: share tokens, privacy rules and the live view.

A link carries a random token (``st_...``) scoped to one job. Redis keeps
only its SHA-256 digest with the job and the expiry. The customer's view
contains the contractor's position only while the job is en route, or
arrived with the contractor within ``ARRIVED_VISIBLE_M`` of the site, only
from fixes taken after the job went en route (an older one may show where
the contractor lives or worked before), and,
when the organisation sets ``reveal_within_s`` or ``reveal_within_m``, only
once the contractor is that close in time or distance. Before and after,
the view contains the status and the arrival window alone. Status events
reach the customer with the fields in ``CUSTOMER_EVENT_FIELDS`` only: the
others, such as the fix that caused the event, could reveal a hidden
position.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from geofence.fences import Fence, fence_from_site
from tracker import keys, orgs
from tracker.batch import PRIVACY_ROUTE
from tracker.jobs import Job, JobStatus, iso, window_json
from tracker.live import Viewer
from tracker.store import RedisClient

# An expired link's record is kept this long, so it reports "expired"
# instead of "unknown".
EXPIRED_RECORD_S = 7 * 86400
EARTH_RADIUS_M = 6_371_008.8
VISIBLE_STATUSES = frozenset({JobStatus.EN_ROUTE, JobStatus.ARRIVED})
#: How far outside the site an arrived contractor stays visible. Departure
#: is confirmed only after a grace period, and in it the contractor may be
#: driving to the next customer.
ARRIVED_VISIBLE_M = 100.0
CUSTOMER_EVENT_FIELDS = ("type", "job_id", "t", "at", "status", "flags", "visit")


def customer_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return the fields of a status event that a customer may see."""
    return {name: event[name] for name in CUSTOMER_EVENT_FIELDS if name in event}


class ShareError(Exception):
    """Base of the tracking link errors."""


class ShareNotFoundError(ShareError, LookupError):
    """The token matches no tracking link."""


class ShareExpiredError(ShareError, LookupError):
    """The tracking link has expired."""


@dataclass(frozen=True, slots=True)
class Share:
    """Target of a tracking link: organisation, job and expiry."""

    org: str
    job_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Privacy:
    """An organisation's rules for revealing the position to customers."""

    reveal_within_s: float | None = None
    reveal_within_m: float | None = None

    def allows(self, eta_s: float | None, distance_m: float | None) -> bool:
        """Return whether a contractor this close may be shown."""
        if self.reveal_within_s is None and self.reveal_within_m is None:
            return True
        if self.reveal_within_s is not None and eta_s is not None and eta_s <= self.reveal_within_s:
            return True
        return (
            self.reveal_within_m is not None
            and distance_m is not None
            and distance_m <= self.reveal_within_m
        )


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance between two (lat, lon) points in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


async def create_share(client: RedisClient, org: str, job_id: str, ttl_s: float) -> tuple[str, float]:
    """Create a tracking link token; return it and its expiry in Unix seconds."""
    token = orgs.new_secret(orgs.SHARE_TOKEN_PREFIX)
    expires_at = time.time() + ttl_s
    record = orjson.dumps({"org": org, "job_id": job_id, "expires_at": expires_at})
    await client.set(
        keys.share_token(orgs.hash_secret(token)), record, ex=int(ttl_s + EXPIRED_RECORD_S)
    )
    return token, expires_at


async def resolve_share(client: RedisClient, token: str) -> Share:
    """Return the link behind a token.

    Raises
    ------
    ShareNotFoundError
        For an unknown token.
    ShareExpiredError
        For a link past its expiry.
    """
    raw = await client.get(keys.share_token(orgs.hash_secret(token)))
    if not raw:
        raise ShareNotFoundError("tracking link not found")
    body = orjson.loads(raw)
    share = Share(body["org"], body["job_id"], body["expires_at"])
    if share.expires_at < time.time():
        raise ShareExpiredError(f"tracking link expired at {iso(share.expires_at)}")
    return share


async def load_privacy(client: RedisClient, org: str) -> Privacy:
    """Read the organisation's reveal settings."""
    within_s, within_m = await client.hmget(keys.meta(org), "reveal_within_s", "reveal_within_m")
    return Privacy(_finite_or_none(within_s), _finite_or_none(within_m))


def _finite_or_none(raw: bytes | None) -> float | None:
    # Older servers stored "inf" for an infinite limit, which hides nothing,
    # so it reads as unset.
    value = float(raw) if raw else math.inf
    return value if math.isfinite(value) else None


class TrackView:
    """One customer's view of one job, kept current by live messages."""

    def __init__(self, job: Job, fix: dict[str, Any] | None, privacy: Privacy) -> None:
        self.job = job
        self.fix = fix
        self.privacy = privacy
        self.route: list[list[float]] | None = job.route
        self._fence: Fence | None = None
        # Whether the last update showed the contractor, so that hiding him
        # sends an update too.
        self.position_shown = False
        # The route the viewer last received. Routes are long and change
        # every few seconds at most, so updates repeat them only on change.
        self.route_sent: list[list[float]] | None = None

    def site_distance_m(self) -> float | None:
        if self.fix is None:
            return None
        site = self.job.site
        if site.get("type") == "Polygon":
            ring = site["coordinates"][0]
            lat = sum(p[1] for p in ring) / len(ring)
            lon = sum(p[0] for p in ring) / len(ring)
        else:
            lat, lon = site["lat"], site["lon"]
        return distance_m(self.fix["lat"], self.fix["lon"], lat, lon)

    def position_visible(self) -> bool:
        """Return whether the customer may see the contractor now."""
        if self.job.status not in VISIBLE_STATUSES or self.fix is None:
            return False
        if self.job.en_route_t is not None and self.fix["t"] < self.job.en_route_t:
            return False
        if self.job.status is JobStatus.ARRIVED and self._outside_site_m() > ARRIVED_VISIBLE_M:
            return False
        return self.privacy.allows(self.job.eta_s, self.site_distance_m())

    def _outside_site_m(self) -> float:
        """Return how far the fix lies outside the site's fence, infinite for an unusable fix."""
        assert self.fix is not None
        if self._fence is None:
            self._fence = fence_from_site(self.job.id, self.job.site)
        depth_m = self._fence.signed_distance_m(self.fix["lat"], self.fix["lon"])
        return math.inf if math.isnan(depth_m) else -depth_m

    def update(self, *, route_changes_only: bool = False) -> dict[str, Any]:
        """Return the customer's view as an ``update`` message.

        With ``route_changes_only``, the message carries ``route`` only when
        it differs from the route of the last such message. A viewer keeps
        the route it has while the contractor stays visible and en route.
        """
        job = self.job
        visible = self.position_visible()
        body: dict[str, Any] = {
            "type": "update",
            "job_id": job.id,
            "status": job.status.value,
            "flags": job.flags,
            "site": job.site,
            "address": job.address,
            "window": job.window.to_json(),
            "eta_s": job.eta_s if job.status is JobStatus.EN_ROUTE else None,
            "arrival_window": window_json(job.arrival_window) if job.status is JobStatus.EN_ROUTE else None,
            "arrived_at": (
                iso(job.arrived_t)
                if job.arrived_t is not None and job.status in (JobStatus.ARRIVED, JobStatus.COMPLETED)
                else None
            ),
            "position": None,
        }
        if visible and self.fix is not None:
            body["position"] = {
                key: self.fix[key] for key in ("lat", "lon", "t", "acc") if key in self.fix
            }
            self.position_shown = True
            if job.status is JobStatus.EN_ROUTE and self.route:
                if not route_changes_only or self.route is not self.route_sent:
                    body["route"] = self.route
                    self.route_sent = self.route
                return body
            return body
        # Hidden now, so the viewer drops its route; it is sent again when
        # the contractor shows up again.
        self.position_shown = False
        self.route_sent = None
        return body


class TrackViewer(Viewer):
    """A customer's live connection to one job.

    ``load`` reads the customer's view afresh. The viewer reads it once
    subscribed, and again in :meth:`resync`, and defers the messages
    that arrive during a read: they are applied to the fresh view, in
    order, so none is lost and none is undone by the read.
    """

    def __init__(
        self,
        org: str,
        view: TrackView,
        send: Any,
        load: Callable[[], Awaitable[TrackView]] | None = None,
    ) -> None:
        super().__init__(org, send, self.render)
        self.view = view
        self.load = load
        self.routes = frozenset({"c:" + view.job.contractor_id, "j:" + view.job.id, PRIVACY_ROUTE})
        self._deferred: list[tuple[dict[str, Any], bytes]] | None = None

    async def reload(self) -> None:
        """Replace the view with a fresh read, then apply the messages deferred during it."""
        if self.load is None:
            return
        self._deferred = []
        try:
            fresh = await self.load()
            if fresh.route == self.view.route:
                # The client keeps the route it has, unless it changed.
                fresh.route = self.view.route
                fresh.route_sent = self.view.route_sent
            self.view = fresh
        finally:
            deferred, self._deferred = self._deferred, None
            for message, raw in deferred:
                self.offer(message, raw)
        self.mailbox.put_view()

    async def resync(self) -> None:
        await self.reload()

    def offer(self, message: dict[str, Any], raw: bytes) -> None:
        if self._deferred is not None:
            self._deferred.append((message, raw))
            return
        view = self.view
        kind = message.get("type")
        if kind == "position":
            if message["contractor_id"] != view.job.contractor_id:
                return
            view.fix = message["fix"]
            if not view.position_visible() and not view.position_shown:
                return
        elif kind == "job":
            changed = message["job"]
            if changed["id"] != view.job.id:
                return
            view.job.eta_s = changed.get("eta_s")
            view.job.arrival_window = message.get("awin") or view.job.arrival_window
            if message.get("route"):
                view.route = message["route"]
        elif kind == "event":
            event = message["event"]
            if event.get("job_id") != view.job.id:
                return
            view.job.status = JobStatus(event["status"])
            view.job.flags = event["flags"]
            if event.get("type") == "job.en_route" or view.job.status is JobStatus.SCHEDULED:
                # A new trip (the next visit) shows nothing of the last one.
                view.job.eta_s = view.job.arrival_window = view.job.arrived_t = None
                view.route = None
            if event.get("type") == "job.en_route":
                view.job.en_route_t = event["t"]
            elif event.get("type") == "job.arrived":
                view.job.arrived_t = event["t"]
            self.mailbox.put_event(orjson.dumps({"type": "event", "event": customer_event(event)}))
        elif kind == "privacy":
            view.privacy = Privacy(message.get("reveal_within_s"), message.get("reveal_within_m"))
        else:
            return
        self.mailbox.put_view()

    def render(self) -> bytes:
        """Return the customer's current view as a message."""
        return orjson.dumps(self.view.update(route_changes_only=True))

