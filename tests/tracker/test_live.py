"""Viewer: sending mailbox contents and noticing a stalled socket."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from pydantic import ValidationError

from tracker.live import FleetViewer
from tracker.settings import load_settings

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
    with pytest.raises(ValidationError, match="viewer_stall_s"):
        load_settings()
