"""Tests of fence validation, containment and per-fix location."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import geofence.cover
from geofence.errors import FenceTooLargeError, GeofenceError, InvalidFenceError
from geofence.fences import (
    Fence,
    FenceKind,
    Zone,
    circle_fence,
    fence_from_site,
    polygon_fence,
)
from geofence.validation import MAX_FENCE_EXTENT_M


def polygon(ring: list[list[float]], *holes: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [ring, *holes]}


def box_ring(lon1: float, lat1: float, lon2: float, lat2: float) -> list[list[float]]:
    return [[lon1, lat1], [lon2, lat1], [lon2, lat2], [lon1, lat2], [lon1, lat1]]


# Validation.


@pytest.mark.parametrize(
    ("lat", "lon", "radius_m", "field", "message"),
    [
        (
            60.17,
            24.94,
            0,
            "site.radius_m",
            "site.radius_m must be within 5..5000 m, got 0",
        ),
        (60.17, 24.94, 5000.5, "site.radius_m", "must be within 5..5000 m, got 5000.5"),
        (
            60.17,
            24.94,
            math.nan,
            "site.radius_m",
            "site.radius_m must be a finite number, got nan",
        ),
        (
            60.17,
            24.94,
            "100",
            "site.radius_m",
            "site.radius_m must be a number, got '100'",
        ),
        (
            60.17,
            24.94,
            True,
            "site.radius_m",
            "site.radius_m must be a number, got True",
        ),
        (91.2, 24.94, 100, "site.lat", "site.lat must be within -90..90, got 91.2"),
        (
            89.0,
            24.94,
            100,
            "site.lat",
            "fences nearer the poles are not supported), got 89.0",
        ),
        (math.inf, 24.94, 100, "site.lat", "site.lat must be a finite number, got inf"),
        (
            60.17,
            -270.6,
            100,
            "site.lon",
            "site.lon must be within -180..180, got -270.6",
        ),
        (60.17, None, 100, "site.lon", "site.lon must be a number, got None"),
    ],
)
def test_circle_fence_rejects_invalid_value(
    lat: Any, lon: Any, radius_m: Any, field: str, message: str
) -> None:
    with pytest.raises(InvalidFenceError) as caught:
        circle_fence("j1", lat, lon, radius_m)

    assert message in str(caught.value)
    assert caught.value.field == field


def test_circle_fence_rejects_empty_id() -> None:
    with pytest.raises(
        InvalidFenceError, match="fence_id must be a non-empty string, got ''"
    ):
        circle_fence("", 60.17, 24.94, 100.0)


@pytest.mark.parametrize("hysteresis_m", [-1.0, 501.0, math.nan])
def test_circle_fence_rejects_hysteresis_out_of_range(hysteresis_m: float) -> None:
    with pytest.raises(InvalidFenceError, match="hysteresis_m must be"):
        circle_fence("j1", 60.17, 24.94, 100.0, hysteresis_m=hysteresis_m)


YARD = box_ring(24.937, 60.1755, 24.939, 60.1762)


@pytest.mark.parametrize(
    ("geojson", "field", "message"),
    [
        (
            {"type": "MultiPolygon", "coordinates": []},
            "site.type",
            "site.type must be 'Polygon', got 'MultiPolygon'",
        ),
        (
            {"type": "Polygon"},
            "site.coordinates",
            "site.coordinates must be a non-empty list",
        ),
        (
            {"type": "Polygon", "coordinates": []},
            "site.coordinates",
            "site.coordinates must be a non-empty list of rings, got []",
        ),
        (
            polygon(YARD[:-1]),
            "site.coordinates[0]",
            "site.coordinates[0] ring must be closed (last position equal to the "
            "first)",
        ),
        (
            polygon(YARD[:2] + [YARD[0]]),
            "site.coordinates[0]",
            "site.coordinates[0] ring must have at least 4 positions, got 3",
        ),
        (
            polygon([YARD[0], [24.939, math.nan], *YARD[2:]]),
            "site.coordinates[0][1][1]",
            "site.coordinates[0][1][1] must be a finite number, got nan",
        ),
        (
            polygon([YARD[0], [24.939], *YARD[2:]]),
            "site.coordinates[0][1]",
            "site.coordinates[0][1] must be a [lon, lat] position, got [24.939]",
        ),
        (
            polygon([YARD[0], [190.0, 60.1755], *YARD[2:]]),
            "site.coordinates[0][1][0]",
            "site.coordinates[0][1][0] must be within -180..180, got 190.0",
        ),
        (
            polygon(box_ring(24.0, 86.0, 24.1, 86.1)),
            "site.coordinates[0][0][1]",
            "must be within -85..85 (fences nearer the poles are not supported), "
            "got 86.0",
        ),
        (
            polygon(
                [
                    [24.937, 60.1755],
                    [24.939, 60.1762],
                    [24.939, 60.1755],
                    [24.937, 60.1762],
                    [24.937, 60.1755],
                ]
            ),
            "site.coordinates",
            "site.coordinates polygon is invalid (Self-intersection",
        ),
        (
            polygon(YARD, box_ring(24.940, 60.1756, 24.941, 60.1757)),
            "site.coordinates",
            "site.coordinates polygon is invalid",
        ),
        (
            polygon(box_ring(24.937, 60.1755, 24.93705, 60.17555)),
            "site.coordinates",
            "site.coordinates polygon area must be at least 78.5 m2, got 15.5 m2",
        ),
        ("not a polygon", "site", "site must be a GeoJSON Polygon object, got str"),
    ],
)
def test_polygon_fence_rejects_invalid_polygon(
    geojson: Any, field: str, message: str
) -> None:
    with pytest.raises(InvalidFenceError) as caught:
        polygon_fence("j1", geojson)

    assert message in str(caught.value)
    assert caught.value.field == field


def test_invalid_fence_error_is_value_error() -> None:
    with pytest.raises(ValueError) as caught:
        circle_fence("j1", 60.17, 24.94, 0)

    assert isinstance(caught.value, GeofenceError)
    assert isinstance(caught.value, InvalidFenceError)
    assert caught.value.value == 0


def test_field_prefix_names_the_input() -> None:
    with pytest.raises(InvalidFenceError, match=r"^visit\.site\.radius_m must be"):
        circle_fence("j1", 60.17, 24.94, 1, field="visit.site")


# Containment and accuracy.


def test_circle_contains_centre_and_edge(site_fence: Fence, tracks: Any) -> None:
    inside_lat, inside_lon = tracks.offset(tracks.SITE_LAT, tracks.SITE_LON, 99.9, 0.0)
    outside_lat, outside_lon = tracks.offset(
        tracks.SITE_LAT, tracks.SITE_LON, 100.1, 0.0
    )

    assert site_fence.contains(tracks.SITE_LAT, tracks.SITE_LON)
    assert site_fence.contains(inside_lat, inside_lon)
    assert not site_fence.contains(outside_lat, outside_lon)


@pytest.mark.parametrize(
    ("north_m", "accuracy_m", "zone"),
    [
        (0.0, 10.0, Zone.INSIDE),  # deep inside
        (95.0, 10.0, Zone.INSIDE),  # near the edge, most of the disk inside
        (99.9, 50.0, Zone.UNDECIDED),  # inside, but most of the disk outside
        (105.0, 3.0, Zone.UNDECIDED),  # outside the site but inside the exit boundary
        (129.0, 10.0, Zone.UNDECIDED),  # just inside the exit boundary (130 m)
        (131.0, 10.0, Zone.OUTSIDE),  # beyond the exit boundary
        (140.0, 50.0, Zone.UNDECIDED),  # beyond it, but the disk reaches the site
        (151.0, 50.0, Zone.OUTSIDE),  # beyond it, disk clear of the site
    ],
)
def test_circle_zone_weighs_accuracy(
    site_fence: Fence, tracks: Any, north_m: float, accuracy_m: float, zone: Zone
) -> None:
    lat, lon = tracks.offset(tracks.SITE_LAT, tracks.SITE_LON, north_m, 0.0)

    assert site_fence.zone(lat, lon, accuracy_m) is zone


@pytest.mark.parametrize("accuracy_m", [15.0, 40.0, 1414.0])
def test_fix_larger_than_fence_is_not_inside(tracks: Any, accuracy_m: float) -> None:
    tiny = circle_fence("tiny", tracks.SITE_LAT, tracks.SITE_LON, 10.0)

    assert tiny.zone(tracks.SITE_LAT, tracks.SITE_LON, accuracy_m) is Zone.UNDECIDED


def test_precise_fix_in_tiny_fence_is_inside(tracks: Any) -> None:
    tiny = circle_fence("tiny", tracks.SITE_LAT, tracks.SITE_LON, 10.0)

    assert tiny.zone(tracks.SITE_LAT, tracks.SITE_LON, 5.0) is Zone.INSIDE


@pytest.mark.parametrize(
    ("lat", "lon"),
    [
        (math.nan, 24.9452),
        (60.1711, math.nan),
        (math.inf, 24.9452),
        (60.1711, -270.60823),
    ],
)
@pytest.mark.parametrize("fence_name", ["site_fence", "yard_fence"])
def test_non_finite_position_is_invalid_not_outside(
    request: pytest.FixtureRequest, fence_name: str, lat: float, lon: float
) -> None:
    fence = request.getfixturevalue(fence_name)

    assert fence.zone(lat, lon, 10.0) is Zone.INVALID
    assert not fence.contains(lat, lon)
    assert math.isnan(fence.signed_distance_m(lat, lon))


@pytest.mark.parametrize("accuracy_m", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("fence_name", ["site_fence", "yard_fence"])
def test_non_finite_accuracy_is_invalid(
    request: pytest.FixtureRequest, fence_name: str, accuracy_m: float
) -> None:
    fence = request.getfixturevalue(fence_name)

    assert fence.zone(60.1711, 24.9452, accuracy_m) is Zone.INVALID


def test_contains_many_skips_non_finite(site_fence: Fence) -> None:
    lats = np.array([60.1711, math.nan, 60.1711, 95.0])
    lons = np.array([24.9452, 24.9452, math.inf, 24.9452])

    assert site_fence.contains_many(lats, lons).tolist() == [True, False, False, False]


def test_yard_contains_case_positions(yard_fence: Fence) -> None:
    # The yard is about 110 m by 78 m, and the device is near its middle.
    assert 8000.0 < yard_fence.area_m2 < 9000.0
    assert yard_fence.contains(60.17585, 24.9380)
    assert not yard_fence.contains(60.17375, 24.943)


def test_polygon_with_hole_excludes_hole() -> None:
    fence = polygon_fence(
        "holed",
        polygon(
            box_ring(24.930, 60.170, 24.940, 60.175),
            box_ring(24.934, 60.172, 24.936, 60.173),
        ),
    )

    assert fence.contains(60.1710, 24.9310)
    assert not fence.contains(60.1725, 24.9350)


@given(
    north_m=st.floats(-200.0, 200.0),
    east_m=st.floats(-200.0, 200.0),
    accuracy_m=st.floats(1.0, 100.0),
)
@settings(max_examples=300, deadline=None)
def test_polygon_zone_same_without_cell_shortcut(
    tracks: Any, north_m: float, east_m: float, accuracy_m: float
) -> None:
    ring = [
        list(reversed(tracks.offset(60.17, 24.94, n, e)))
        for n, e in [(-80, -60), (-70, 90), (20, 120), (90, 0), (30, -100), (-80, -60)]
    ]
    fence = polygon_fence("star", polygon(ring))
    plain = dataclasses.replace(fence, interior_depth_m={})
    lat, lon = tracks.offset(60.17, 24.94, north_m, east_m)

    assert fence.zone(lat, lon, accuracy_m) is plain.zone(lat, lon, accuracy_m)


def test_polygon_cover_has_interior_cells(yard_fence: Fence) -> None:
    assert yard_fence.cover_res >= 12
    assert len(yard_fence.interior_depth_m) > 50


# Fences across the 180th meridian, on Taveuni (Fiji).

F1_CROSSING = polygon(
    [
        [179.99, -16.8],
        [-179.99, -16.8],
        [-179.99, -16.79],
        [179.99, -16.79],
        [179.99, -16.8],
    ]
)
F2A_PLUS_180 = polygon(
    [
        [179.98, -16.8],
        [180.0, -16.8],
        [180.0, -16.79],
        [179.98, -16.79],
        [179.98, -16.8],
    ]
)
F2B_MINUS_180 = polygon(
    [
        [179.98, -16.8],
        [-180.0, -16.8],
        [-180.0, -16.79],
        [179.98, -16.79],
        [179.98, -16.8],
    ]
)
PROBES = {
    "P1": (-16.795, 179.995),
    "P2": (-16.795, -179.995),
    "P3": (-16.795, 0.0),
    "P4": (-16.795, 179.985),
    "P5": (-16.795, 180.0),
    "P6": (-16.795, -180.0),
}


@pytest.mark.parametrize(
    ("probe", "inside"),
    [
        ("P1", True),
        ("P2", True),
        ("P3", False),
        ("P4", False),
        ("P5", True),
        ("P6", True),
    ],
)
def test_crossing_fence_containment(probe: str, inside: bool) -> None:
    fence = polygon_fence("F1", F1_CROSSING)

    assert fence.contains(*PROBES[probe]) is inside


@pytest.mark.parametrize(
    ("probe", "inside"), [("P1", True), ("P2", False), ("P3", False), ("P4", True)]
)
def test_fence_ending_at_180_containment(probe: str, inside: bool) -> None:
    fence = polygon_fence("F2a", F2A_PLUS_180)

    assert fence.contains(*PROBES[probe]) is inside


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_plus_and_minus_180_fences_agree(probe: str) -> None:
    plus = polygon_fence("F2a", F2A_PLUS_180)
    minus = polygon_fence("F2b", F2B_MINUS_180)
    lat, lon = PROBES[probe]

    assert plus.contains(lat, lon) is minus.contains(lat, lon)
    assert plus.signed_distance_m(lat, lon) == minus.signed_distance_m(lat, lon)
    assert plus.zone(lat, lon, 5.0) is minus.zone(lat, lon, 5.0)


def test_crossing_fence_is_contractor_sized() -> None:
    fence = polygon_fence("F1", F1_CROSSING)

    # 0.02 degrees of longitude by 0.01 of latitude at 16.8 S: 2.13 km by 1.11 km.
    assert fence.extent_m == pytest.approx(2131.0, rel=0.01)
    assert fence.area_m2 == pytest.approx(2.36e6, rel=0.01)
    assert fence.centre[1] == 180.0


def test_crossing_circle_contains_both_sides() -> None:
    fence = circle_fence("c", -16.795, 179.9995, 200.0)

    assert fence.contains(-16.795, -179.9995)
    assert fence.contains(-16.795, 179.999)
    assert not fence.contains(-16.795, -179.99)


# Huge polygons are rejected before any H3 work.


@pytest.fixture
def no_h3_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any H3 polygon fill fail, to prove validation never reaches it."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("H3 polygon fill called for a fence that must be rejected")

    monkeypatch.setattr(geofence.cover.h3_int, "h3shape_to_cells", fail)
    monkeypatch.setattr(geofence.cover.h3_int, "h3shape_to_cells_experimental", fail)


@pytest.mark.usefixtures("no_h3_fill")
def test_quarter_globe_rejected_as_too_wide() -> None:
    quarter_globe = polygon([[-180, -90], [0, -90], [0, 0], [-180, 0], [-180, -90]])

    with pytest.raises(FenceTooLargeError, match="spans 180.0 degrees of longitude"):
        polygon_fence("G1", quarter_globe)


@pytest.mark.usefixtures("no_h3_fill")
def test_wide_polygon_rejected_by_span() -> None:
    wide = polygon(
        [[-100, 10], [0, 10], [100, 10], [100, 20], [0, 20], [-100, 20], [-100, 10]]
    )

    with pytest.raises(
        FenceTooLargeError, match=r"polygon spans 200\.0 degrees of longitude"
    ):
        polygon_fence("wide", wide)


@pytest.mark.usefixtures("no_h3_fill")
def test_region_sized_polygon_rejected_by_size_limit() -> None:
    region = polygon(box_ring(23.5, 59.9, 26.5, 60.9))

    with pytest.raises(FenceTooLargeError) as caught:
        polygon_fence("G2", region)

    assert "km across; the limit is 50 km" in str(caught.value)
    assert caught.value.limit == MAX_FENCE_EXTENT_M
    assert caught.value.value > 160_000.0


@pytest.mark.usefixtures("no_h3_fill")
def test_fine_cover_rejected_before_enumeration() -> None:
    large = polygon(box_ring(24.5, 60.0, 25.2, 60.3))

    with pytest.raises(FenceTooLargeError, match="cover_res 13 would need about"):
        polygon_fence("big", large, cover_res=13)


@pytest.mark.usefixtures("no_h3_fill")
def test_polygon_around_pole_rejected() -> None:
    ring = [[0, 80], [120, 80], [-120, 80], [0, 80]]

    with pytest.raises(InvalidFenceError, match="goes all the way around a pole"):
        polygon_fence("pole", polygon(ring))


def test_largest_allowed_polygon_builds() -> None:
    # About 39 km by 44 km around Helsinki, inside the 50 km limit.
    fence = polygon_fence("city", polygon(box_ring(24.6, 60.0, 25.3, 60.4)))

    assert fence.extent_m < MAX_FENCE_EXTENT_M
    assert fence.contains(60.1699, 24.9384)
    assert not fence.contains(59.437, 24.7536)
    assert len(fence.interior_depth_m) > 20


# Building from a job's site.


def test_fence_from_site_builds_circle() -> None:
    fence = fence_from_site("j1", {"lat": 60.1711, "lon": 24.9452, "radius_m": 100})

    assert fence.kind is FenceKind.CIRCLE
    assert fence.radius_m == 100.0


def test_fence_from_site_builds_polygon() -> None:
    fence = fence_from_site("j1", polygon(YARD))

    assert fence.kind is FenceKind.POLYGON
    assert fence.radius_m is None


def test_fence_from_site_names_missing_keys() -> None:
    with pytest.raises(InvalidFenceError, match="but it has no radius_m"):
        fence_from_site("j1", {"lat": 60.1711, "lon": 24.9452})
