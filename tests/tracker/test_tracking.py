"""TrackView: what a customer's update message carries."""

from __future__ import annotations

import time

from tracker.jobs import Job, JobStatus, Visit
from tracker.tracking import Privacy, TrackView

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
