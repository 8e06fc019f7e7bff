"""Tests of arrival and departure detection."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
from h3.api import basic_int as h3_int
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.detection import (
    Arrived,
    DetectionConfig,
    DetectionState,
    Fix,
    VisitEvent,
    VisitState,
    detect,
    step,
)
from geofence.errors import InvalidConfigError, InvalidStateError
from geofence.fences import Fence, circle_fence
from geofence.index import FenceIndex

T0 = 1793606400.0
FIXTURE_CHECKS = [HealthCheck.function_scoped_fixture]


def run(
    fixes: list[Fix], fence: Fence, config: DetectionConfig | None = None
) -> tuple[DetectionState, list[VisitEvent]]:
    """Step through fixes in the given order; return the final state and all events."""
    state = DetectionState()
    events: list[VisitEvent] = []
    for fix in fixes:
        state, new_events = step(state, fix, fence, config or DetectionConfig())
        events.extend(new_events)
    return state, events


def kinds(events: list[VisitEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


# Scripted visits.


def test_visit_arrives_once_and_departs_once(site_fence: Fence, tracks: Any) -> None:
    visit = tracks.visit()

    events = detect(visit.fixes, site_fence)

    assert kinds(events) == ["Arrived", "Departed"]
    assert events[0].t == tracks.first_fix(visit.fixes, site_fence, "inside").t
    assert events[1].t == tracks.first_fix(visit.drive_out, site_fence, "outside").t


def test_visit_events_carry_confirming_fixes(site_fence: Fence, tracks: Any) -> None:
    arrived, departed = detect(tracks.visit().fixes, site_fence)

    assert arrived.fix.t == arrived.t
    assert arrived.confirmed_by.t - arrived.t >= DetectionConfig().arrival_dwell_s
    assert departed.fix.t == departed.t
    assert departed.confirmed_by.t - departed.t >= DetectionConfig().departure_grace_s


def test_van_trip_within_grace_keeps_job_open(site_fence: Fence, tracks: Any) -> None:
    visit = tracks.visit(van_trip_s=240.0)
    # The van is beyond the exit boundary, so the trip starts an exit.
    van_exit = tracks.first_fix(visit.to_van, site_fence, "outside")

    events = detect(visit.fixes, site_fence)

    assert kinds(events) == ["Arrived", "Departed"]
    assert events[1].t > van_exit.t + 1000.0


def test_van_trip_longer_than_grace_departs_when_left(
    site_fence: Fence, tracks: Any
) -> None:
    visit = tracks.visit(van_trip_s=400.0)

    events = detect(visit.fixes, site_fence)

    assert kinds(events) == ["Arrived", "Departed"]
    assert events[1].t == tracks.first_fix(visit.to_van, site_fence, "outside").t


def test_short_stop_then_return_completes_once(site_fence: Fence, tracks: Any) -> None:
    # Two minutes on site, ten away, then the real visit.
    first = tracks.segment(T0, T0 + 120, 10, (0.0, 0.0), (0.0, 0.0))
    away = tracks.segment(T0 + 120, T0 + 720, 10, (600.0, 0.0), (600.0, 0.0))
    again = tracks.segment(T0 + 720, T0 + 1920, 10, (0.0, 0.0), (0.0, 0.0))
    leave = tracks.segment(T0 + 1920, T0 + 2520, 10, (600.0, 0.0), (600.0, 0.0))

    events = detect(first + away + again + leave, site_fence)

    assert kinds(events) == ["Arrived", "Departed"]
    assert events[0].t == T0
    assert events[1].t == T0 + 1920


def test_short_stop_alone_never_completes(site_fence: Fence, tracks: Any) -> None:
    stop = tracks.segment(T0, T0 + 120, 10, (0.0, 0.0), (0.0, 0.0))
    away = tracks.segment(T0 + 120, T0 + 3600, 10, (900.0, 0.0), (900.0, 0.0))

    state, events = run(stop + away, site_fence)

    assert kinds(events) == ["Arrived"]
    assert state.status is VisitState.OUTSIDE


def test_drive_past_does_not_arrive(site_fence: Fence, tracks: Any) -> None:
    # Through the middle of the 100 m circle at 10 m/s.
    drive = tracks.segment(T0, T0 + 200, 5, (-1000.0, 0.0), (1000.0, 0.0))

    assert detect(drive, site_fence) == []


@pytest.mark.parametrize(
    "wild_t",
    [
        pytest.param(T0 + 55, id="approaching"),
        pytest.param(T0 + 135, id="entering"),
        pytest.param(T0 + 600, id="on-site"),
        pytest.param(T0 + 1395, id="at-van"),
        pytest.param(T0 + 2885, id="departing"),
    ],
)
@pytest.mark.parametrize("jump_m", [3000.0, 40_000.0])
def test_one_wild_fix_changes_nothing(
    site_fence: Fence, tracks: Any, wild_t: float, jump_m: float
) -> None:
    fixes = tracks.visit().fixes
    wild = tracks.fix_at(wild_t, -jump_m, jump_m, accuracy_m=10.0)

    assert detect([*fixes, wild], site_fence) == detect(fixes, site_fence)


def test_jump_at_start_reanchors(site_fence: Fence, tracks: Any) -> None:
    wrong_start = tracks.fix_at(T0, 20_000.0, 0.0)
    on_site = tracks.segment(T0 + 10, T0 + 130, 10, (0.0, 0.0), (0.0, 0.0))

    events = detect([wrong_start, *on_site], site_fence)

    assert kinds(events) == ["Arrived"]
    assert events[0].t == T0 + 10 * DetectionConfig().jump_reanchor_fixes


def test_gap_on_site_keeps_contractor_on_site(site_fence: Fence, tracks: Any) -> None:
    fixes = tracks.visit().fixes
    # Twenty minutes without any fix in the middle of the first work period.
    gapped = [fix for fix in fixes if not T0 + 200 <= fix.t < T0 + 1300]

    state, events = run([fix for fix in gapped if fix.t < T0 + 1300], site_fence)

    assert kinds(events) == ["Arrived"]
    assert state.status is VisitState.ON_SITE
    assert detect(gapped, site_fence) == detect(fixes, site_fence)


def test_gap_then_outside_departs_at_first_outside_fix(
    site_fence: Fence, tracks: Any
) -> None:
    work = tracks.segment(T0, T0 + 600, 10, (0.0, 0.0), (0.0, 0.0))
    # The phone goes dark for 15 minutes, and reappears 2 km away.
    away = tracks.segment(T0 + 1500, T0 + 2100, 10, (2000.0, 0.0), (2000.0, 0.0))

    events = detect(work + away, site_fence)

    assert kinds(events) == ["Arrived", "Departed"]
    assert events[1].t == T0 + 1500


def test_poor_fixes_near_site_never_depart(site_fence: Fence, tracks: Any) -> None:
    work = tracks.segment(T0, T0 + 300, 10, (0.0, 0.0), (0.0, 0.0))
    # 90 m fixes 140 m out: beyond the exit boundary, but their disks reach the site.
    scatter = tracks.segment(
        T0 + 300, T0 + 3000, 10, (140.0, 0.0), (140.0, 0.0), accuracy_m=90.0
    )

    state, events = run(work + scatter, site_fence)

    assert kinds(events) == ["Arrived"]
    assert state.status is VisitState.ON_SITE


def test_fixes_larger_than_fence_never_arrive(tracks: Any) -> None:
    tiny = circle_fence("tiny", tracks.SITE_LAT, tracks.SITE_LON, 10.0)
    poor = tracks.segment(T0, T0 + 900, 10, (0.0, 0.0), (0.0, 0.0), accuracy_m=40.0)
    unknown = tracks.segment(
        T0 + 900, T0 + 1800, 10, (0.0, 0.0), (0.0, 0.0), accuracy_m=None
    )

    assert detect(poor + unknown, tiny) == []


def test_precise_fixes_in_tiny_fence_arrive(tracks: Any) -> None:
    tiny = circle_fence("tiny", tracks.SITE_LAT, tracks.SITE_LON, 10.0)
    precise = tracks.segment(T0, T0 + 60, 10, (0.0, 0.0), (0.0, 0.0), accuracy_m=4.0)

    assert kinds(detect(precise, tiny)) == ["Arrived"]


# Field cases.

YARD_PINGS = [  # (seconds after T0, lat, lon, accuracy_m); the device does not move.
    (0, 60.17584, 24.938001, 13.8),
    (5, 60.175856, 24.938004, 14.1),
    (10, 60.175845, 24.938017, 14.0),
    (15, 60.175845, 24.937992, 14.2),
    (20, 60.175859, 24.937985, 13.9),
    (25, 60.175859, 24.937988, 13.8),
    (30, 60.17375, 24.943, 1414.0),  # 360 m away, accuracy 13 times the yard's size
    (35, 60.175852, 24.938001, 14.0),
    (40, 60.175843, 24.938011, 13.9),
    (45, 60.175849, 24.937995, 14.1),
    (50, 60.175845, 24.938017, 14.2),
    (55, 60.175849, 24.937988, 13.8),
    (60, 60.175858, 24.938, 14.2),
]


def test_fix_with_accuracy_larger_than_fence_moves_nothing(yard_fence: Fence) -> None:
    fixes = [Fix(T0 + dt, lat, lon, acc) for dt, lat, lon, acc in YARD_PINGS]

    events = detect(fixes, yard_fence)

    assert kinds(events) == ["Arrived"]
    assert T0 <= events[0].t <= T0 + 30
    assert events == detect([fix for fix in fixes if fix.accuracy_m < 1000], yard_fence)


def test_poor_fix_leaves_state_unchanged(yard_fence: Fence) -> None:
    fixes = [Fix(T0 + dt, lat, lon, acc) for dt, lat, lon, acc in YARD_PINGS]
    state, _ = run(fixes[:6], yard_fence)

    after, events = step(state, fixes[6], yard_fence)

    assert after is state
    assert events == []


NAN_FRAMES = [  # Raw device frames; json.loads reads bare NaN and Infinity as floats.
    '{"t": 1793606400, "lat": 60.1711, "lon": 24.9452, "acc": 12, "speed": 0.0}',
    '{"t":1793606410,"lat":NaN,"lon":NaN,"acc":0,"speed":444.7,"valid":true}',
    '{"t":1793606420,"lat":null,"lon":null,"acc":null,"speed":0}',
    '{"t":1793606430,"lat":"","lon":"","acc":15,"speed":0}',
    '{"t":1793606440,"lat":Infinity,"lon":24.9452,"acc":15,"speed":0}',
    '{"t":1793606445,"lat":"NaN","lon":"nan","acc":15,"speed":0}',
    '{"t":1793606450,"lat":60.1711,"lon":-270.60823,"acc":15,"speed":0}',
    '{"t":1793606455,"lat":60.1711,"acc":15,"speed":0}',
    '{"t": 1793606460, "lat": 60.1712, "lon": 24.9453, "acc": 12, "speed": 0.0}',
]


def frame_fix(frame: str) -> Fix:
    data = json.loads(frame)
    return Fix(data["t"], data.get("lat"), data.get("lon"), data.get("acc"))


def test_nan_and_null_fixes_never_read_as_outside() -> None:
    fence = circle_fence("site-08", 60.1711, 24.9452, 100.0)
    fixes = [frame_fix(frame) for frame in NAN_FRAMES]

    state, events = run(fixes, fence)

    assert kinds(events) == ["Arrived"]
    assert events[0].t == T0
    assert events[0].confirmed_by.t == T0 + 60
    assert state.status is VisitState.ON_SITE


@pytest.mark.parametrize("frame", NAN_FRAMES[1:-1])
def test_invalid_frame_changes_nothing(frame: str) -> None:
    fence = circle_fence("site-08", 60.1711, 24.9452, 100.0)
    state, _ = run([frame_fix(NAN_FRAMES[0])], fence)

    after, events = step(state, frame_fix(frame), fence)

    assert after is state
    assert events == []


def test_detect_drops_nan_fixes_before_sorting() -> None:
    fence = circle_fence("site-08", 60.1711, 24.9452, 100.0)
    fixes = [frame_fix(frame) for frame in NAN_FRAMES]
    fixes.append(Fix(math.nan, 60.1711, 24.9452, 10.0))

    assert kinds(detect(list(reversed(fixes)), fence)) == ["Arrived"]


@pytest.mark.parametrize(
    "accuracy_m", [-5.0, math.nan, math.inf, 100.5, 1414.0], ids=str
)
def test_unusable_accuracy_is_ignored(site_fence: Fence, accuracy_m: float) -> None:
    state, _ = run([Fix(T0, 60.1711, 24.9452, 10.0)], site_fence)

    after, events = step(state, Fix(T0 + 10, 60.1711, 24.9452, accuracy_m), site_fence)

    assert after is state
    assert events == []


# Step rules.


def test_step_ignores_old_and_duplicate_times(site_fence: Fence) -> None:
    state, _ = run([Fix(T0 + 10, 60.1711, 24.9452, 10.0)], site_fence)

    for t in (T0 + 10, T0 + 5, math.nan, math.inf):
        after, events = step(state, Fix(t, 60.1711, 24.9452, 10.0), site_fence)
        assert after is state
        assert events == []


def test_departed_is_final(site_fence: Fence, tracks: Any) -> None:
    state, _ = run(tracks.visit().fixes, site_fence)
    back = tracks.segment(
        state.last_t + 60, state.last_t + 1000, 10, (0.0, 0.0), (0.0, 0.0)
    )

    final = state
    later_events: list[VisitEvent] = []
    for fix in back:
        final, new_events = step(final, fix, site_fence)
        later_events.extend(new_events)

    assert state.status is VisitState.DEPARTED
    assert later_events == []
    assert final is state


def test_arrival_needs_both_fixes_and_dwell(site_fence: Fence) -> None:
    config = DetectionConfig(min_inside_fixes=3, arrival_dwell_s=30.0)
    two_long = [Fix(T0, 60.1711, 24.9452, 5.0), Fix(T0 + 60, 60.1711, 24.9452, 5.0)]
    three_short = [Fix(T0 + dt, 60.1711, 24.9452, 5.0) for dt in (0, 10, 20)]

    assert detect(two_long, site_fence, config) == []
    assert detect(three_short, site_fence, config) == []


def test_one_fix_arrival_when_configured(site_fence: Fence) -> None:
    config = DetectionConfig(min_inside_fixes=1, arrival_dwell_s=0.0)

    events = detect([Fix(T0, 60.1711, 24.9452, 5.0)], site_fence, config)

    assert kinds(events) == ["Arrived"]


def test_polygon_visit_arrives_and_departs(yard_fence: Fence, tracks: Any) -> None:
    lat, lon = 60.17585, 24.9380
    inside = [Fix(T0 + dt, lat, lon, 10.0) for dt in range(0, 900, 10)]
    far_lat, far_lon = tracks.offset(lat, lon, -1500.0, 0.0)
    # One minute after the last inside fix, 1.5 km away: 25 m/s is plausible.
    outside = [Fix(T0 + dt, far_lat, far_lon, 10.0) for dt in range(950, 1400, 10)]

    events = detect(inside + outside, yard_fence)

    assert kinds(events) == ["Arrived", "Departed"]
    assert [event.t for event in events] == [T0, T0 + 950]


# Properties.


def annulus_fix(
    fence: Fence, t: float, bearing_rad: float, distance_m: float, accuracy_m: float
) -> Fix:
    lats, lons = fence.projection.inverse_array(
        np.array([distance_m * math.sin(bearing_rad)]),
        np.array([distance_m * math.cos(bearing_rad)]),
    )
    lon = float(lons[0])
    return Fix(t, float(lats[0]), lon - 360.0 if lon > 180.0 else lon, accuracy_m)


@given(
    samples=st.lists(
        st.tuples(
            st.floats(1.0, 120.0),  # seconds since the previous fix
            st.floats(0.0, 2 * math.pi),
            st.floats(100.001, 2000.0),
            st.floats(1.0, 150.0),
        ),
        min_size=1,
        max_size=80,
    )
)
@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_CHECKS)
def test_track_outside_never_arrives(
    site_fence: Fence, samples: list[tuple[float, ...]]
) -> None:
    t = T0
    fixes = []
    for dt, bearing, distance_m, accuracy_m in samples:
        t += dt
        fixes.append(annulus_fix(site_fence, t, bearing, distance_m, accuracy_m))

    events = detect(fixes, site_fence)

    assert not any(isinstance(event, Arrived) for event in events)


@given(
    true_share=st.floats(0.0, 1.0),
    bearing=st.floats(0.0, 2 * math.pi),
    accuracy_m=st.floats(3.0, 100.0),
    jitter=st.lists(
        st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 2 * math.pi)),
        min_size=2,
        max_size=150,
    ),
)
@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_CHECKS)
def test_jitter_within_accuracy_never_flaps(
    site_fence: Fence,
    true_share: float,
    bearing: float,
    accuracy_m: float,
    jitter: list[tuple[float, float]],
) -> None:
    # The contractor keeps still somewhere inside the site or on its edge,
    # and each fix lands within its accuracy of the true position.
    true_x = true_share * 100.0 * math.cos(bearing)
    true_y = true_share * 100.0 * math.sin(bearing)
    fixes = []
    for i, (share, angle) in enumerate(jitter):
        x_m = true_x + share * accuracy_m * math.cos(angle)
        y_m = true_y + share * accuracy_m * math.sin(angle)
        lats, lons = site_fence.projection.inverse_array(
            np.array([x_m]), np.array([y_m])
        )
        fixes.append(Fix(T0 + 10 * i, float(lats[0]), float(lons[0]), accuracy_m))

    events = detect(fixes, site_fence)

    assert kinds(events).count("Arrived") <= 1
    assert "Departed" not in kinds(events)


@given(seed=st.integers(0, 2**32 - 1), cut=st.floats(0.0, 1.0))
@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_CHECKS)
def test_detect_ignores_input_order(
    site_fence: Fence, tracks: Any, seed: int, cut: float
) -> None:
    fixes = tracks.visit(van_trip_s=cut * 600.0).fixes
    shuffled = list(fixes)
    random.Random(seed).shuffle(shuffled)

    assert detect(shuffled, site_fence) == detect(fixes, site_fence)


def test_detect_keeps_most_accurate_of_same_time(site_fence: Fence) -> None:
    good = [Fix(T0 + dt, 60.1711, 24.9452, 5.0) for dt in (0, 10, 20, 30)]
    # Same times, far away but claiming a poor accuracy.
    poor = [Fix(T0 + dt, 60.19, 24.9452, 90.0) for dt in (0, 10, 20, 30)]

    assert detect(poor + good, site_fence) == detect(good + poor, site_fence)
    assert kinds(detect(poor + good, site_fence)) == ["Arrived"]


@given(cut=st.integers(0, 400))
@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_CHECKS)
def test_restart_mid_visit_continues_identically(
    site_fence: Fence, tracks: Any, cut: int
) -> None:
    fixes = tracks.visit().fixes
    expected_state, expected_events = run(fixes, site_fence)

    state, events = run(fixes[:cut], site_fence)
    stored = json.loads(json.dumps(state.to_dict()))
    restored = DetectionState.from_dict(stored)
    for fix in fixes[cut:]:
        restored, new_events = step(restored, fix, site_fence)
        events.extend(new_events)

    assert events == expected_events
    assert restored == expected_state


def test_step_never_modifies_its_input(site_fence: Fence, tracks: Any) -> None:
    state = DetectionState()
    for fix in tracks.visit().fixes:
        before = state.to_dict()
        new_state, _ = step(state, fix, site_fence)
        assert state.to_dict() == before
        state = new_state


# Stored states.


def test_state_reads_redis_hash_bytes(site_fence: Fence, tracks: Any) -> None:
    state, _ = run(tracks.visit().fixes[:200], site_fence)
    # A Redis hash returns keys and values as bytes.
    raw = {
        key.encode(): repr(value).encode()
        if not isinstance(value, str)
        else value.encode()
        for key, value in state.to_dict().items()
    }

    assert DetectionState.from_dict(raw) == state


def test_state_dict_omits_missing_values() -> None:
    data = DetectionState().to_dict()

    assert None not in data.values()
    assert data["status"] == "outside"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"status": "outside"}, "v", "v is missing"),
        ({"v": 2, "status": "outside"}, "v", "v must be 1, got 2"),
        ({"v": 1}, "status", "status is missing"),
        (
            {"v": 1, "status": "inside"},
            "status",
            "status must be one of outside, entering",
        ),
        (
            {
                "v": 1,
                "status": "outside",
                "rejected_jumps": "x",
                "inside_fixes": 0,
                "outside_fixes": 0,
            },
            "rejected_jumps",
            "rejected_jumps must be a non-negative integer, got 'x'",
        ),
        (
            {
                "v": 1,
                "status": "outside",
                "last_t": "nan",
                "rejected_jumps": 0,
                "inside_fixes": 0,
                "outside_fixes": 0,
            },
            "last_t",
            "last_t must be a finite number, got 'nan'",
        ),
        (
            {
                "v": 1,
                "status": "entering",
                "rejected_jumps": 0,
                "inside_fixes": 1,
                "outside_fixes": 0,
                "run_fix_t": 1.0,
                "run_fix_lat": 60.0,
            },
            "run_fix_lon",
            "run_fix_lon is missing",
        ),
    ],
)
def test_state_from_bad_dict_names_field(
    data: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidStateError) as caught:
        DetectionState.from_dict(data)

    assert message in str(caught.value)
    assert caught.value.field == field


# Configuration.


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"min_inside_fixes": 0},
            "min_inside_fixes must be an integer of at least 1, got 0",
        ),
        ({"arrival_dwell_s": -1.0}, "arrival_dwell_s must be at least 0, got -1.0"),
        ({"max_accuracy_m": 0.0}, "max_accuracy_m must be greater than 0, got 0.0"),
        (
            {"departure_grace_s": math.nan},
            "departure_grace_s must be a finite number, got nan",
        ),
        ({"min_inside_share": 1.5}, "min_inside_share must be within 0..1, got 1.5"),
        (
            {"max_speed_mps": "fast"},
            "max_speed_mps must be a finite number, got 'fast'",
        ),
    ],
)
def test_config_rejects_out_of_range(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfigError) as caught:
        DetectionConfig(**changes)

    assert message in str(caught.value)
    assert caught.value.field == next(iter(changes))


def test_config_defaults_documented_values() -> None:
    config = DetectionConfig()

    assert (config.min_inside_fixes, config.arrival_dwell_s) == (2, 30.0)
    assert (config.min_on_site_s, config.departure_grace_s) == (180.0, 300.0)
    assert config.max_accuracy_m == 100.0


def test_nan_never_reaches_h3(
    monkeypatch: pytest.MonkeyPatch, yard_fence: Fence, tracks: Any
) -> None:
    latlng_to_cell = h3_int.latlng_to_cell
    calls = []

    def finite_only(lat: float, lon: float, res: int) -> int:
        assert math.isfinite(lat)
        assert math.isfinite(lon)
        calls.append((lat, lon))
        return int(latlng_to_cell(lat, lon, res))

    monkeypatch.setattr(h3_int, "latlng_to_cell", finite_only)
    fixes = [frame_fix(frame) for frame in NAN_FRAMES]
    # Move the valid frames into the yard's south-west quarter, away from
    # its centre, so the fence looks up their H3 cells.
    fixes[0] = Fix(fixes[0].t, 60.1757, 24.9373, 5.0)
    fixes[-1] = Fix(fixes[-1].t, 60.1757, 24.9374, 5.0)
    index = FenceIndex()
    index.add(yard_fence)

    _, events = run(fixes, yard_fence)
    matches = index.contains_many(
        np.array([math.nan, 60.17585, math.inf]), np.array([24.938, math.nan, 24.938])
    )

    assert kinds(events) == ["Arrived"]
    assert len(calls) == 2
    assert matches.point_index.size == 0
