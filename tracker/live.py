"""Live fan-out: Redis pub/sub to the viewers connected to this process.

The lifecycle publishes every new latest position and job update of a
batch of frames as one message, and status events go out beside them, on
one channel per organisation. Each process has
one subscription per organisation that has a viewer here, so a device, its
customer and its dispatcher may be connected to three different processes.

Viewers never slow ingest or each other: the hub only drops the newest
message into each viewer's mailbox, which keeps the latest message per key
(per contractor, per job) and a short list of events, and the viewer's own
task sends when its socket accepts. A viewer that makes no progress for
``STALL_TIMEOUT_S`` seconds is disconnected.

When the pub/sub connection fails (a Redis restart), the hub reconnects
with backoff and subscribes again; viewers stay connected. Messages
published in between are lost, so once Redis confirms the new
subscription, each viewer of the organisation resyncs (see
:meth:`Viewer.resync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tracker import keys
from tracker.batch import BATCH_HEADER, message_route, split_batch
from tracker.store import TRANSIENT_ERRORS, RedisClient
from tracker.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

STALL_TIMEOUT_S = 30.0
#: How often per STALL_TIMEOUT_S a viewer's pending send is looked at.
STALL_CHECKS = 6
MAX_QUEUED_EVENTS = 100
MAX_KEYS_PER_VIEWER = 100_000
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0

SendFunction = Callable[[bytes], Awaitable[None]]
ALL_MESSAGES = "*"


class Mailbox:
    """Latest message per key plus a bounded event list, for one viewer."""

    def __init__(self, render: Callable[[], bytes] | None = None) -> None:
        self.latest: OrderedDict[str, bytes] = OrderedDict()
        self.events: deque[bytes] = deque(maxlen=MAX_QUEUED_EVENTS)
        self.ready = asyncio.Event()
        self.dropped_events = 0
        # A viewer with a view of its own renders it only when it sends,
        # so several changes between two sends cost one rendering.
        self.render = render
        self.view_changed = False

    def put_view(self) -> None:
        """Note that the viewer's view changed; it is rendered at the next send."""
        self.view_changed = True
        self.ready.set()

    def put_latest(self, key: str, message: bytes) -> None:
        self.latest[key] = message
        self.latest.move_to_end(key)
        if len(self.latest) > MAX_KEYS_PER_VIEWER:
            self.latest.popitem(last=False)
        self.ready.set()

    def put_event(self, message: bytes) -> None:
        if len(self.events) == self.events.maxlen:
            self.dropped_events += 1
        self.events.append(message)
        self.ready.set()

    def take(self) -> list[bytes]:
        # Events first, so a status change is seen before positions after it.
        messages = list(self.events)
        messages.extend(self.latest.values())
        if self.view_changed and self.render is not None:
            messages.append(self.render())
        self.view_changed = False
        self.events.clear()
        self.latest.clear()
        self.ready.clear()
        return messages


class Viewer:
    """One live connection: filters hub messages and sends what concerns it.

    Subclasses decide what a message means for them in :meth:`offer`.
    """

    #: Routing keys of the messages this viewer wants ("c:<contractor id>",
    #: "j:<job id>"); ALL_MESSAGES means every message of the organisation.
    routes: frozenset[str] = frozenset()

    def __init__(self, org: str, send: SendFunction, render: Callable[[], bytes] | None = None) -> None:
        self.org = org
        self.send = send
        self.mailbox = Mailbox(render)
        # The event loop time at which the pending send began, if any.
        self.send_started: float | None = None

    def offer(self, message: dict[str, Any], raw: bytes) -> None:  # pragma: no cover
        """Take one live message, decoded and as its JSON bytes."""
        raise NotImplementedError

    async def resync(self) -> None:
        """Catch up after messages were lost; the hub calls this once subscribed again.

        Subclasses read their state again. This default only logs, for
        viewers without state of their own.
        """
        logger.info("viewer of org %s may have missed live messages", self.org)

    async def run(self) -> None:
        """Send mailbox contents until cancelled; :meth:`watch` detects stalls."""
        loop = asyncio.get_running_loop()
        while True:
            await self.mailbox.ready.wait()
            for message in self.mailbox.take():
                self.send_started = loop.time()
                await self.send(message)
                self.send_started = None

    async def watch(self, timeout_s: float = STALL_TIMEOUT_S) -> None:
        """Return when one send has been waiting for ``timeout_s`` seconds or more.

        The send itself carries no timeout, because a timer per message
        took about 2 % of the server's CPU time in a py-spy profile of
        ``python -m benchmarks.fanout``. This check runs ``STALL_CHECKS``
        times per timeout instead, so a stall is noticed between
        ``timeout_s`` and ``timeout_s * (1 + 1 / STALL_CHECKS)`` seconds
        after it began.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(timeout_s / STALL_CHECKS)
            started = self.send_started
            if started is not None and loop.time() - started >= timeout_s:
                return


class FleetViewer(Viewer):
    """A dispatcher: every position and job change of the organisation."""

    routes = frozenset({ALL_MESSAGES})

    def __init__(
        self, org: str, send: SendFunction, restart: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(org, send)
        self.restart = restart

    async def resync(self) -> None:
        """Close the connection through ``restart``: the client reconnects and reloads the fleet."""
        if self.restart is None:
            await super().resync()
            return
        logger.info("closing dispatcher viewer of org %s: live messages may have been lost", self.org)
        await self.restart()

    def offer(self, message: dict[str, Any], raw: bytes) -> None:
        kind = message.get("type")
        if kind == "position":
            self.mailbox.put_latest("p:" + message["contractor_id"], raw)
        elif kind == "job":
            self.mailbox.put_latest("j:" + message["job"]["id"], raw)
        elif kind == "event":
            self.mailbox.put_event(raw)


class LiveHub:
    """The pub/sub subscriptions of one process and the viewers they feed."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        # Organisation -> routing key -> viewers, so a message reaches only
        # the viewers that want it instead of every viewer of the org.
        self._viewers: dict[str, dict[str, set[Viewer]]] = {}
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._delay_s = RECONNECT_FIRST_S
        self.messages_received = 0
        # Channels whose subscription Redis has confirmed on the current
        # connection, and organisations whose viewers resync at the next
        # confirmation because messages may have been lost.
        self._confirmed: set[bytes] = set()
        self._resync_orgs: set[str] = set()
        self._resyncs: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        for task in list(self._resyncs):
            await cancel_and_wait(task)
        if self._pubsub is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._pubsub.aclose()

    async def add(self, viewer: Viewer) -> None:
        """Register a viewer; subscribe to its organisation if it is the first."""
        routes = self._viewers.setdefault(viewer.org, {})
        first = not routes
        for route in viewer.routes:
            routes.setdefault(route, set()).add(viewer)
        if first:
            self._changed.set()
        if not await self._wait_subscribed(viewer.org):
            # Messages may be lost until the subscription is confirmed.
            self._resync_orgs.add(viewer.org)

    def remove(self, viewer: Viewer) -> None:
        """Unregister a viewer; the subscription ends with the last one."""
        routes = self._viewers.get(viewer.org)
        if routes is None:
            return
        for route in viewer.routes:
            viewers = routes.get(route)
            if viewers is not None:
                viewers.discard(viewer)
                if not viewers:
                    del routes[route]
        if not routes:
            del self._viewers[viewer.org]
            self._changed.set()

    async def _wait_subscribed(self, org: str, timeout_s: float = 5.0) -> bool:
        """Return whether Redis confirmed the organisation's subscription within ``timeout_s``.

        A viewer reads its first state only after this, so that nothing
        published after that read can be missed.
        """
        channel = keys.live_channel(org).encode()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while channel not in self._confirmed:
            if asyncio.get_running_loop().time() >= deadline:
                logger.warning("live subscription of org %s not confirmed within %.0f s", org, timeout_s)
                return False
            await asyncio.sleep(0.01)
        return True

    async def _run(self) -> None:
        self._delay_s = RECONNECT_FIRST_S
        while True:
            delay_s = self._delay_s
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as error:
                logger.warning("live pub/sub connection lost (%s); reconnecting in %.1f s", error, delay_s)
            except Exception:
                logger.exception("live pub/sub listener failed; restarting in %.1f s", delay_s)
            self._pubsub = None
            self._confirmed.clear()
            self._resync_orgs.update(self._viewers)
            await asyncio.sleep(delay_s)
            self._delay_s = min(delay_s * 2, RECONNECT_MAX_S)

    async def _listen(self) -> None:
        pubsub = self.client.pubsub()
        subscribed: set[str] = set()
        try:
            await pubsub.ping()  # fails fast while Redis is down
            self._pubsub = pubsub
            self._delay_s = RECONNECT_FIRST_S
            logger.info("live pub/sub connected")
            # The wanted channels are computed again only when viewers come
            # or go, since that takes one step per organisation.
            self._changed.set()
            while True:
                if self._changed.is_set():
                    self._changed.clear()
                    wanted = {keys.live_channel(org) for org in self._viewers}
                    if wanted - subscribed:
                        await pubsub.subscribe(*(wanted - subscribed))
                    if subscribed - wanted:
                        # Not confirmed from now on, so that a viewer who
                        # comes back meanwhile waits for the new subscription.
                        self._confirmed.difference_update(channel.encode() for channel in subscribed - wanted)
                        await pubsub.unsubscribe(*(subscribed - wanted))
                    subscribed = wanted
                if not subscribed:
                    await self._changed.wait()
                    continue
                message = await pubsub.get_message(timeout=0.5)
                if message is None:
                    continue
                if message["type"] == "message":
                    self._dispatch(message["channel"], message["data"])
                elif message["type"] == "subscribe":
                    self._on_subscribed(message["channel"])
                elif message["type"] == "unsubscribe":
                    self._confirmed.discard(message["channel"])
        finally:
            self._pubsub = None
            self._confirmed.clear()
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await pubsub.aclose()

    def _on_subscribed(self, channel: bytes) -> None:
        self._confirmed.add(channel)
        org = _channel_org(channel)
        if org not in self._resync_orgs:
            return
        self._resync_orgs.discard(org)
        viewers = {viewer for group in self._viewers.get(org, {}).values() for viewer in group}
        if viewers:
            logger.info("live subscription of org %s restored; resyncing %d viewers", org, len(viewers))
        for viewer in viewers:
            task = asyncio.get_running_loop().create_task(self._resync(viewer))
            self._resyncs.add(task)
            task.add_done_callback(self._resyncs.discard)

    @staticmethod
    async def _resync(viewer: Viewer) -> None:
        try:
            await viewer.resync()
        except Exception:
            logger.exception("resyncing a viewer of org %s failed", viewer.org)

    def _dispatch(self, channel: bytes, payload: bytes) -> None:
        self.messages_received += 1
        org = _channel_org(channel)
        routes = self._viewers.get(org)
        if not routes:
            return
        if payload.startswith(BATCH_HEADER):
            # Every process receives every batch of the organisation, so
            # messages that no viewer here wants are skipped undecoded.
            everyone = ALL_MESSAGES in routes
            for route, raw in split_batch(payload):
                if everyone or route in routes:
                    self._deliver(org, routes, route, orjson.loads(raw), raw)
        else:
            message = orjson.loads(payload)
            self._deliver(org, routes, message_route(message), message, payload)

    def _deliver(
        self,
        org: str,
        routes: dict[str, set[Viewer]],
        route: str,
        message: dict[str, Any],
        raw: bytes,
    ) -> None:
        viewers = [*routes.get(ALL_MESSAGES, ()), *routes.get(route, ())]
        for viewer in viewers:
            try:
                viewer.offer(message, raw)
            except Exception:
                logger.exception("viewer of org %s failed to take a message", org)


def _channel_org(channel: bytes) -> str:
    """Return the organisation of a live channel name, ``{org}:live``."""
    return channel.decode()[1:].split("}", 1)[0]
