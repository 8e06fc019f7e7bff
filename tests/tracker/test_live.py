"""Viewer and LiveHub: sending mailbox contents, stalls, routing over real pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest

from tracker import keys
from tracker.batch import BATCH_HEADER, encode_messages
from tracker.live import FleetViewer, LiveHub, Viewer
from tracker.settings import SettingsError, load_settings
from tracker.store import connect

TIMEOUT_S = 0.3


async def run_until_watch_returns(viewer: FleetViewer, limit_s: float) -> bool:
    """Run the viewer with its watch; return whether the watch found a stall."""
    sender = asyncio.create_task(viewer.run())
    try:
        await asyncio.wait_for(viewer.watch(TIMEOUT_S), limit_s)
    except TimeoutError:
        return False
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return True


async def test_watch_returns_on_stuck_send() -> None:
    async def never_accepts(message: bytes) -> None:
        await asyncio.Event().wait()

    viewer = FleetViewer("o1", never_accepts)
    viewer.mailbox.put_event(b'{"type": "event"}')
    assert await run_until_watch_returns(viewer, TIMEOUT_S * 3)


async def test_watch_ignores_prompt_viewer() -> None:
    sent: list[bytes] = []

    async def accepts(message: bytes) -> None:
        sent.append(message)

    viewer = FleetViewer("o1", accepts)

    async def feed() -> None:
        for index in range(20):
            viewer.mailbox.put_event(b"%d" % index)
            await asyncio.sleep(TIMEOUT_S / 10)

    feeder = asyncio.create_task(feed())
    assert not await run_until_watch_returns(viewer, TIMEOUT_S * 2.5)
    await feeder


async def test_run_clears_send_started() -> None:
    async def accepts(message: bytes) -> None:
        pass

    viewer = FleetViewer("o1", accepts)
    viewer.mailbox.put_event(b"{}")
    sender = asyncio.create_task(viewer.run())
    await asyncio.sleep(0.01)
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender
    assert viewer.send_started is None


def test_viewer_stall_setting_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENROUTE_VIEWER_STALL_S", "2.5")
    assert load_settings().viewer_stall_s == 2.5


def test_viewer_stall_setting_rejects_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENROUTE_VIEWER_STALL_S", "0")
    with pytest.raises(SettingsError, match="ENROUTE_VIEWER_STALL_S is invalid"):
        load_settings()


class RecordingViewer(Viewer):
    """Keeps what the hub offers it."""

    def __init__(self, org: str, routes: set[str]) -> None:
        super().__init__(org, self._never_sends)
        self.routes = frozenset(routes)
        self.offered: list[tuple[dict[str, Any], bytes]] = []

    async def _never_sends(self, message: bytes) -> None:
        raise AssertionError("the test viewer sends nothing")

    def offer(self, message: dict[str, Any], raw: bytes) -> None:
        self.offered.append((message, raw))


async def publish_to_viewers(redis_url: str, viewers: list[Viewer], payloads: list[bytes]) -> None:
    """Run a hub with ``viewers``, publish ``payloads`` on their org's channel and wait for them."""
    client = connect(redis_url)
    hub = LiveHub(client)
    hub.start()
    try:
        for viewer in viewers:
            await hub.add(viewer)
        for payload in payloads:
            await client.publish(keys.live_channel(viewers[0].org), payload)
        async with asyncio.timeout(5):
            while hub.messages_received < len(payloads):
                await asyncio.sleep(0.01)
    finally:
        await hub.stop()
        await client.aclose()


def position(contractor_id: str) -> dict[str, Any]:
    return {"type": "position", "contractor_id": contractor_id, "fix": {"lat": 60.17}}


async def test_hub_offers_batch_items_by_route(redis_url: str) -> None:
    org = f"hub-{uuid.uuid4().hex[:8]}"
    viewer = RecordingViewer(org, {"c:a"})
    payload = encode_messages([position("b"), position("a"), position("c")])
    await publish_to_viewers(redis_url, [viewer], [payload])
    assert [message["contractor_id"] for message, _ in viewer.offered] == ["a"]


async def test_hub_skips_unwanted_item_undecoded(redis_url: str) -> None:
    org = f"hub-{uuid.uuid4().hex[:8]}"
    viewer = RecordingViewer(org, {"c:a"})
    payload = BATCH_HEADER + b"c:b {not json\n" + b'c:a {"type":"position","contractor_id":"a"}\n'
    await publish_to_viewers(redis_url, [viewer], [payload])
    assert len(viewer.offered) == 1


async def test_hub_offers_fleet_viewer_every_item_as_sent(redis_url: str) -> None:
    org = f"hub-{uuid.uuid4().hex[:8]}"
    viewer = RecordingViewer(org, {"*"})
    messages = [position("a"), {"type": "event", "event": {"job_id": "j1"}}]
    await publish_to_viewers(redis_url, [viewer], [encode_messages(messages), encode_messages(messages[:1])])
    assert [raw for _, raw in viewer.offered] == [
        b'{"type":"position","contractor_id":"a","fix":{"lat":60.17}}',
        b'{"type":"event","event":{"job_id":"j1"}}',
        b'{"type":"position","contractor_id":"a","fix":{"lat":60.17}}',
    ]


async def test_hub_follows_orgs_added_and_removed(redis_url: str) -> None:
    first = RecordingViewer(f"hub-{uuid.uuid4().hex[:8]}", {"c:a"})
    second = RecordingViewer(f"hub-{uuid.uuid4().hex[:8]}", {"c:a"})
    client = connect(redis_url)
    hub = LiveHub(client)
    hub.start()
    payload = encode_messages([position("a")])
    try:
        await hub.add(first)
        await client.publish(keys.live_channel(first.org), payload)
        # Added while the hub waits for messages of the first organisation.
        await hub.add(second)
        await client.publish(keys.live_channel(second.org), payload)
        hub.remove(first)
        async with asyncio.timeout(5):
            while hub._pubsub is None or keys.live_channel(first.org).encode() in hub._pubsub.channels:
                await asyncio.sleep(0.01)
        await client.publish(keys.live_channel(first.org), payload)
        await client.publish(keys.live_channel(second.org), payload)
        async with asyncio.timeout(5):
            while len(second.offered) < 2:
                await asyncio.sleep(0.01)
    finally:
        await hub.stop()
        await client.aclose()
    assert len(first.offered) == 1
    assert len(second.offered) == 2
