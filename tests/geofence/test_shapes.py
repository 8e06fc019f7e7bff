"""Tests of fence shapes in projected metres."""

from __future__ import annotations

import math

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.projection import LocalProjection
from geofence.shapes import CircleShape, PolygonShape, circle_overlap_share


def shapely_overlap_share(
    distance_m: float, radius_m: float, accuracy_m: float
) -> float:
    fence = shapely.Point(0.0, 0.0).buffer(radius_m, quad_segs=256)
    disk = shapely.Point(distance_m, 0.0).buffer(accuracy_m, quad_segs=256)
    return float(fence.intersection(disk).area / disk.area)


@pytest.mark.parametrize(
    ("distance_m", "radius_m", "accuracy_m", "expected"),
    [
        (0.0, 100.0, 10.0, 1.0),  # disk wholly inside
        (200.0, 100.0, 10.0, 0.0),  # disk wholly outside
        (0.0, 10.0, 20.0, 0.25),  # fence inside the disk: (10 / 20) ** 2
        (110.0, 100.0, 10.0, 0.0),  # disks touch at one point
    ],
)
def test_overlap_share_exact_cases(
    distance_m: float, radius_m: float, accuracy_m: float, expected: float
) -> None:
    assert circle_overlap_share(distance_m, radius_m, accuracy_m) == pytest.approx(
        expected
    )


@given(
    distance_m=st.floats(0.0, 400.0),
    radius_m=st.floats(5.0, 300.0),
    accuracy_m=st.floats(1.0, 100.0),
)
@settings(max_examples=150, deadline=None)
def test_overlap_share_matches_shapely_area(
    distance_m: float, radius_m: float, accuracy_m: float
) -> None:
    expected = shapely_overlap_share(distance_m, radius_m, accuracy_m)

    assert circle_overlap_share(distance_m, radius_m, accuracy_m) == pytest.approx(
        expected, abs=2e-3
    )


def test_overlap_share_half_on_straight_edge_limit() -> None:
    # A small disk centred on the edge of a huge circle is cut nearly in half.
    share = circle_overlap_share(5000.0, 5000.0, 5.0)

    assert share == pytest.approx(0.5, abs=1e-3)


def test_polygon_share_matches_circle_share() -> None:
    projection = LocalProjection.centred_at(60.0, 25.0)
    circle = CircleShape(projection, 50.0)
    polygon = PolygonShape(projection, shapely.Point(0, 0).buffer(50.0, quad_segs=128))

    for x_m in (0.0, 30.0, 45.0, 50.0, 60.0):
        expected = circle.inside_share_xy(x_m, 0.0, 20.0)
        assert polygon.inside_share_xy(x_m, 0.0, 20.0) == pytest.approx(
            expected, abs=5e-3
        )


def test_polygon_signed_distance_sign_and_holes() -> None:
    projection = LocalProjection.centred_at(60.0, 25.0)
    square = shapely.Polygon(
        [(-50, -50), (50, -50), (50, 50), (-50, 50)],
        [[(-10, -10), (10, -10), (10, 10), (-10, 10)]],
    )
    shape = PolygonShape(projection, square)

    assert shape.signed_distance_xy(30.0, 0.0) == pytest.approx(20.0)
    assert shape.signed_distance_xy(0.0, 0.0) == pytest.approx(-10.0)
    assert shape.signed_distance_xy(80.0, 0.0) == pytest.approx(-30.0)
    assert shape.signed_distance_xy(50.0, 0.0) == 0.0


def test_region_contains_true_circle() -> None:
    projection = LocalProjection.centred_at(60.0, 25.0)
    shape = CircleShape(projection, 100.0)

    region = shape.region(10.0, quad_segs=2)
    true_circle = shapely.Point(0, 0).buffer(110.0 - 1e-6, quad_segs=512)

    assert region.contains(true_circle)


def test_circle_area_and_extent() -> None:
    shape = CircleShape(LocalProjection.centred_at(0.0, 0.0), 10.0)

    assert shape.area_m2 == pytest.approx(math.pi * 100.0)
    assert shape.extent_m == 20.0
