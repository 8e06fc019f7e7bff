"""TrackView and TrackViewer: what a customer's messages carry."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tracker import keys
from tracker.jobs import Job, JobStatus, Visit
from tracker.store import connect
from tracker.tracking import (
    CUSTOMER_EVENT_FIELDS,
    Privacy,
    TrackView,
    TrackViewer,
    customer_event,
    load_privacy,
)

SITE = (60.1716, 24.9443)
ROUTE = [[60.175, 24.94], [60.173, 24.942], [60.1716, 24.9443]]


def en_route_view(privacy: Privacy | None = None) -> TrackView:
    now = time.time()
    job = Job(
        id="j1",
        contractor_id="c1",
        site={"lat": SITE[0], "lon": SITE[1], "radius_m": 40},
        visits=[Visit(now, now + 3600)],
        status=JobStatus.EN_ROUTE,
        route=ROUTE,
    )
    fix = {"lat": 60.175, "lon": 24.94, "t": now, "acc": 5.0}
    return TrackView(job, fix, privacy or Privacy())


def test_update_first_message_carries_route() -> None:
    view = en_route_view()
    assert view.update(route_changes_only=True)["route"] == ROUTE


def test_update_repeats_no_unchanged_route() -> None:
    view = en_route_view()
    view.update(route_changes_only=True)
    assert "route" not in view.update(route_changes_only=True)


def test_update_sends_changed_route() -> None:
    view = en_route_view()
    view.update(route_changes_only=True)
    view.route = ROUTE[1:]
    assert view.update(route_changes_only=True)["route"] == ROUTE[1:]


def test_update_snapshot_always_carries_route() -> None:
    view = en_route_view()
    view.update(route_changes_only=True)
    assert view.update()["route"] == ROUTE


def test_update_resends_route_after_hidden_spell() -> None:
    view = en_route_view()
    view.update(route_changes_only=True)
    view.job.status = JobStatus.ARRIVED
    view.update(route_changes_only=True)
    view.job.status = JobStatus.EN_ROUTE
    assert view.update(route_changes_only=True)["route"] == ROUTE


def test_update_hides_route_with_position() -> None:
    view = en_route_view(Privacy(reveal_within_m=10.0))
    body = view.update(route_changes_only=True)
    assert "route" not in body
    assert body["position"] is None


async def never_sends(message: bytes) -> None:
    raise AssertionError("the test viewer sends nothing")


def arrived_view(lat: float) -> TrackView:
    view = en_route_view()
    view.job.status = JobStatus.ARRIVED
    view.fix = {"lat": lat, "lon": SITE[1], "t": time.time(), "acc": 5.0}
    return view


def test_update_shows_arrived_contractor_on_site() -> None:
    assert arrived_view(SITE[0]).update()["position"] is not None


def test_update_hides_arrived_contractor_away() -> None:
    # About 330 m north of a site of radius 40 m.
    assert arrived_view(SITE[0] + 0.003).update()["position"] is None


EVENT = {
    "type": "job.arrived",
    "job_id": "j1",
    "contractor_id": "c1",
    "t": 1.0,
    "at": "1970-01-01T00:00:01+00:00",
    "cause": "geofence",
    "status": "arrived",
    "flags": [],
    "ping": {"t": 1.0, "lat": 60.17, "lon": 24.94, "acc": 5.0},
}


def test_customer_event_drops_fix() -> None:
    assert "ping" not in customer_event(EVENT)


def test_customer_event_keeps_status() -> None:
    assert customer_event(EVENT)["status"] == "arrived"


@given(st.dictionaries(st.text(max_size=12), st.integers()))
def test_customer_event_only_allowed_fields(event: dict[str, Any]) -> None:
    assert set(customer_event(event)) <= set(CUSTOMER_EVENT_FIELDS)


def test_viewer_event_drops_fix() -> None:
    viewer = TrackViewer("o1", en_route_view(), never_sends)
    viewer.offer({"type": "event", "event": EVENT}, b"")
    forwarded = orjson.loads(viewer.mailbox.events[0])
    assert forwarded["event"] == customer_event(EVENT)



def test_viewer_hides_contractor_who_drives_away() -> None:
    viewer = TrackViewer("o1", arrived_view(SITE[0]), never_sends)
    viewer.render()
    away = {"lat": SITE[0] + 0.003, "lon": SITE[1], "t": time.time(), "acc": 5.0}
    viewer.offer({"type": "position", "contractor_id": "c1", "fix": away}, b"")
    assert orjson.loads(viewer.mailbox.take()[-1])["position"] is None


def test_viewer_skips_hidden_position_after_hiding() -> None:
    viewer = TrackViewer("o1", arrived_view(SITE[0] + 0.003), never_sends)
    viewer.render()
    away = {"lat": SITE[0] + 0.004, "lon": SITE[1], "t": time.time(), "acc": 5.0}
    viewer.offer({"type": "position", "contractor_id": "c1", "fix": away}, b"")
    assert viewer.mailbox.take() == []


def test_viewer_applies_privacy_change() -> None:
    viewer = TrackViewer("o1", en_route_view(), never_sends)
    viewer.render()
    viewer.offer({"type": "privacy", "reveal_within_s": None, "reveal_within_m": 10.0}, b"")
    assert orjson.loads(viewer.mailbox.take()[-1])["position"] is None


def test_update_hides_fix_from_before_dispatch() -> None:
    view = en_route_view()
    assert view.fix is not None
    view.job.en_route_t = view.fix["t"] + 1.0
    assert view.update()["position"] is None


def test_update_shows_fix_from_after_dispatch() -> None:
    view = en_route_view()
    assert view.fix is not None
    view.job.en_route_t = view.fix["t"] - 1.0
    assert view.update()["position"] is not None


def test_viewer_takes_dispatch_time_from_event() -> None:
    view = en_route_view()
    view.job.status = JobStatus.SCHEDULED
    viewer = TrackViewer("o1", view, never_sends)
    assert view.fix is not None
    event = {"type": "job.en_route", "job_id": "j1", "t": view.fix["t"] + 5.0, "status": "en_route", "flags": []}
    viewer.offer({"type": "event", "event": event}, b"")
    assert viewer.view.update()["position"] is None


async def test_load_privacy_reads_inf_as_unset(redis_url: str) -> None:
    org = f"o-{uuid.uuid4().hex[:8]}"
    client = connect(redis_url)
    try:
        await client.hset(keys.meta(org), mapping={"reveal_within_m": "inf", "reveal_within_s": "60.0"})
        privacy = await load_privacy(client, org)
    finally:
        await client.aclose()
    assert privacy.reveal_within_m is None
    assert privacy.reveal_within_s == 60.0


CANCEL_EVENT = {"type": "job.cancelled", "job_id": "j1", "t": 1.0, "status": "cancelled", "flags": []}


async def test_viewer_reload_applies_event_held_during_read() -> None:
    # The event is published after the read, while the read is in flight.
    viewer = TrackViewer("o1", en_route_view(), never_sends)

    async def load() -> TrackView:
        viewer.offer({"type": "event", "event": CANCEL_EVENT}, b"")
        return en_route_view()

    viewer.load = load
    await viewer.reload()
    assert orjson.loads(viewer.mailbox.take()[-1])["status"] == "cancelled"


async def test_viewer_reload_hides_position_sent_before_cancel() -> None:
    # The read returns the cancelled job, and a position from before the cancel arrives during it.
    viewer = TrackViewer("o1", en_route_view(), never_sends)
    cancelled = en_route_view()
    cancelled.job.status = JobStatus.CANCELLED
    fix = {"lat": 60.174, "lon": 24.941, "t": time.time(), "acc": 5.0}

    async def load() -> TrackView:
        viewer.offer({"type": "position", "contractor_id": "c1", "fix": fix}, b"")
        return cancelled

    viewer.load = load
    await viewer.reload()
    assert orjson.loads(viewer.mailbox.take()[-1])["position"] is None


async def test_viewer_reload_keeps_sent_route() -> None:
    viewer = TrackViewer("o1", en_route_view(), never_sends)
    viewer.render()

    async def load() -> TrackView:
        return en_route_view()

    viewer.load = load
    await viewer.reload()
    assert "route" not in orjson.loads(viewer.mailbox.take()[-1])


def test_update_arrived_carries_arrival_time() -> None:
    view = arrived_view(SITE[0])
    view.job.arrived_t = 1764853612.0
    assert view.update()["arrived_at"] == "2025-12-04T13:06:52+00:00"


def test_update_en_route_has_no_arrival_time() -> None:
    assert en_route_view().update()["arrived_at"] is None


def test_viewer_takes_arrival_time_from_event() -> None:
    viewer = TrackViewer("o1", en_route_view(), never_sends)
    event = {"type": "job.arrived", "job_id": "j1", "t": 1764853612.0, "status": "arrived", "flags": []}
    viewer.offer({"type": "event", "event": event}, b"")
    assert viewer.view.update()["arrived_at"] == "2025-12-04T13:06:52+00:00"


def test_viewer_next_visit_drops_old_window() -> None:
    view = arrived_view(SITE[0])
    view.job.arrival_window = {"earliest_t": 1.0, "latest_t": 2.0, "confidence": 0.8}
    view.job.eta_s = 0.0
    viewer = TrackViewer("o1", view, never_sends)
    event = {"type": "job.en_route", "job_id": "j1", "t": time.time(), "status": "en_route", "flags": []}
    viewer.offer({"type": "event", "event": event}, b"")
    update = viewer.view.update()
    assert (update["eta_s"], update["arrival_window"]) == (None, None)
