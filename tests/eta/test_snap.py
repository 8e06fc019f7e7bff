"""Tests for snapping pings onto road edges."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eta.build import road_graph_from_tables
from eta.errors import InvalidCoordinateError
from eta.graph import RoadGraph
from eta.routing import random_points_on_graph
from eta.snap import snap_point, snap_points, usable_heading_deg

# Spherical metres per degree of latitude; the WGS84 figure at 60 N is 0.2 % larger,
# so distances below are compared to 1 %.
METRES_PER_DEGREE_LAT = 111_195.0


def two_way(u: int, v: int, length_m: float, **tags: Any) -> list[dict[str, Any]]:
    return [
        dict(u=u, v=v, length_m=length_m, **tags),
        dict(u=v, v=u, length_m=length_m, **tags),
    ]


@pytest.fixture(scope="module")
def street() -> RoadGraph:
    """One two-way street along latitude 60, 24.00 to 24.02 (about 1.1 km)."""
    return road_graph_from_tables(
        [{"id": 1, "lat": 60.0, "lon": 24.0}, {"id": 2, "lat": 60.0, "lon": 24.02}],
        two_way(1, 2, 1111.0, highway="residential"),
    )


@pytest.fixture(scope="module")
def divided_road() -> RoadGraph:
    """Two one-way carriageways 15 m apart: eastbound to the south, westbound north."""
    offset_deg = 15.0 / METRES_PER_DEGREE_LAT
    return road_graph_from_tables(
        [
            {"id": 1, "lat": 60.0, "lon": 24.0},
            {"id": 2, "lat": 60.0, "lon": 24.02},
            {"id": 3, "lat": 60.0 + offset_deg, "lon": 24.02},
            {"id": 4, "lat": 60.0 + offset_deg, "lon": 24.0},
        ],
        [
            {"u": 1, "v": 2, "length_m": 1111.0, "highway": "primary"},
            {"u": 3, "v": 4, "length_m": 1111.0, "highway": "primary"},
        ],
    )


def test_snap_node_has_zero_distance(helsinki: RoadGraph) -> None:
    snap = snap_point(
        helsinki, float(helsinki.node_lat[3]), float(helsinki.node_lon[3])
    )
    assert snap is not None
    assert snap.distance_m == 0.0
    assert 3 in (helsinki.edge_u[snap.edge], helsinki.edge_v[snap.edge])


def test_snap_midblock_projects_onto_edge(street: RoadGraph) -> None:
    snap = snap_point(street, 60.0 + 50 / METRES_PER_DEGREE_LAT, 24.01)
    assert snap is not None
    assert snap.fraction == pytest.approx(0.5, abs=1e-3)
    assert snap.distance_m == pytest.approx(50.0, rel=1e-2)
    assert snap.lat == pytest.approx(60.0)
    assert snap.offset_m == pytest.approx(snap.fraction * 1111.0)


def test_snap_prefers_edge_over_nearer_node(street: RoadGraph) -> None:
    # nodes are about 555 m away, the street itself 30 m
    snap = snap_point(street, 60.0 - 30 / METRES_PER_DEGREE_LAT, 24.01)
    assert snap is not None
    assert snap.distance_m == pytest.approx(30.0, rel=1e-2)


def test_snap_two_way_without_heading_keeps_both(street: RoadGraph) -> None:
    snap = snap_point(street, 60.0001, 24.005)
    assert snap is not None
    assert snap.reverse_edge == int(street.edge_reverse[snap.edge])
    assert snap.reverse_edge >= 0


def test_snap_far_ping_is_off_network(
    street: RoadGraph, caplog: pytest.LogCaptureFixture
) -> None:
    lat = 60.0 + 500 / METRES_PER_DEGREE_LAT
    with caplog.at_level(logging.WARNING, logger="eta.snap"):
        snap = snap_point(street, lat, 24.01)
    assert snap is None
    assert "more than 200 m from any drivable road" in caplog.text


def test_snap_point_warn_false_silent(
    street: RoadGraph, caplog: pytest.LogCaptureFixture
) -> None:
    lat = 60.0 + 500 / METRES_PER_DEGREE_LAT
    with caplog.at_level(logging.WARNING, logger="eta.snap"):
        snap = snap_point(street, lat, 24.01, warn=False)
    assert snap is None
    assert caplog.records == []


def test_snap_far_ping_within_larger_limit(street: RoadGraph) -> None:
    snap = snap_point(
        street, 60.0 + 500 / METRES_PER_DEGREE_LAT, 24.01, max_distance_m=1000.0
    )
    assert snap is not None
    assert snap.distance_m == pytest.approx(500.0, rel=1e-2)


def test_snap_batch_marks_off_network_rows(street: RoadGraph) -> None:
    snaps = snap_points(street, [60.0, 61.0, 60.0], [24.01, 24.01, 24.015])
    assert snaps.off_network.tolist() == [False, True, False]
    assert snaps.edge[1] == -1
    assert math.isnan(snaps.fraction[1])


def test_snap_swapped_ping_hints_swap(
    load_case: Callable[[str], dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    case = load_case("09-lat-lon-swapped.json")
    graph = road_graph_from_tables(
        case["input"]["graph"]["nodes"], case["input"]["graph"]["edges"]
    )
    ping = case["input"]["pings"][1]
    with caplog.at_level(logging.WARNING, logger="eta.snap"):
        snap = snap_point(graph, ping["lat"], ping["lon"])
    assert snap is None
    assert "lat and lon may be swapped" in caplog.text
    assert "km outside the road graph's bounding box" in caplog.text


def test_snap_swapped_batch_flags_swap(
    load_case: Callable[[str], dict[str, Any]],
) -> None:
    case = load_case("09-lat-lon-swapped.json")
    graph = road_graph_from_tables(
        case["input"]["graph"]["nodes"], case["input"]["graph"]["edges"]
    )
    pings = case["input"]["pings"]
    snaps = snap_points(
        graph, [p["lat"] for p in pings], [p["lon"] for p in pings], warn=False
    )
    assert snaps.off_network.tolist() == [False, True]
    assert snaps.possible_swap.tolist() == [False, True]
    assert snaps.distance_m[1] > 3_000_000


def test_snap_case_control_ping_on_corner(
    load_case: Callable[[str], dict[str, Any]],
) -> None:
    case = load_case("09-lat-lon-swapped.json")
    graph = road_graph_from_tables(
        case["input"]["graph"]["nodes"], case["input"]["graph"]["edges"]
    )
    ping = case["input"]["pings"][0]
    snap = snap_point(graph, ping["lat"], ping["lon"])
    assert snap is not None
    assert snap.distance_m == 0.0
    assert graph.node_index(1) in (graph.edge_u[snap.edge], graph.edge_v[snap.edge])


@pytest.mark.parametrize(
    ("lat", "lon", "message"),
    [
        (91.2, 24.9, "lat must be within -90..90, got 91.2"),
        (-90.5, 24.9, "lat must be within -90..90, got -90.5"),
        (60.1, 181.0, "lon must be within -180..180, got 181.0"),
        (float("nan"), 24.9, "lat must be a finite number, got nan"),
        (60.1, float("inf"), "lon must be a finite number, got inf"),
    ],
)
def test_snap_rejects_bad_coordinates(
    street: RoadGraph, lat: float, lon: float, message: str
) -> None:
    with pytest.raises(InvalidCoordinateError) as info:
        snap_point(street, lat, lon)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_snap_batch_names_bad_index(street: RoadGraph) -> None:
    with pytest.raises(
        InvalidCoordinateError, match=r"lats\[1\] must be within -90..90, got 95.0"
    ):
        snap_points(street, [60.0, 95.0], [24.0, 24.0])


def test_snap_batch_rejects_unequal_lengths(street: RoadGraph) -> None:
    with pytest.raises(ValueError, match="equal length"):
        snap_points(street, [60.0, 60.0], [24.0])


def test_snap_rejects_non_positive_distance(street: RoadGraph) -> None:
    with pytest.raises(
        ValueError, match=r"max_distance_m must be a positive number, got 0\.0"
    ):
        snap_point(street, 60.0, 24.01, max_distance_m=0.0)


@pytest.mark.parametrize(
    ("heading_deg", "speed_mps", "expected"),
    [
        (0.0, 0.0, None),
        (187.0, 0.0, None),
        (90.0, 0.49, None),
        (90.0, 0.5, 90.0),
        (370.0, 3.0, 10.0),
        (None, 5.0, None),
        (90.0, None, None),
        (float("nan"), 5.0, None),
    ],
)
def test_usable_heading(
    heading_deg: float | None, speed_mps: float | None, expected: float | None
) -> None:
    assert usable_heading_deg(heading_deg, speed_mps) == expected


def test_snap_case_stationary_heading_ignored(
    load_case: Callable[[str], dict[str, Any]],
) -> None:
    case = load_case("22-speed-zero-with-heading.json")
    graph = road_graph_from_tables(
        case["input"]["graph"]["nodes"], case["input"]["graph"]["edges"]
    )
    snaps = []
    for variant in case["input"]["variants"]:
        ping = variant["ping"]
        snaps.append(
            snap_point(
                graph,
                ping["lat"],
                ping["lon"],
                heading_deg=ping["heading"],
                speed_mps=ping["speed"],
            )
        )
    assert snaps[0] is not None
    assert snaps[0].reverse_edge >= 0
    assert snaps[1:] == snaps[:1] * 2


@pytest.mark.parametrize(
    ("heading_deg", "eastbound"),
    [(90.0, True), (80.0, True), (270.0, False), (200.0, False)],
)
def test_snap_moving_heading_picks_direction(
    street: RoadGraph, heading_deg: float, eastbound: bool
) -> None:
    snap = snap_point(street, 60.0001, 24.005, heading_deg=heading_deg, speed_mps=8.0)
    assert snap is not None
    goes_east = (
        street.node_lon[street.edge_v[snap.edge]]
        > street.node_lon[street.edge_u[snap.edge]]
    )
    assert bool(goes_east) is eastbound
    assert snap.reverse_edge == -1


def test_snap_moving_heading_keeps_fraction_consistent(street: RoadGraph) -> None:
    east = snap_point(street, 60.0001, 24.005, heading_deg=90.0, speed_mps=8.0)
    west = snap_point(street, 60.0001, 24.005, heading_deg=270.0, speed_mps=8.0)
    assert east is not None and west is not None
    assert east.fraction == pytest.approx(0.25, abs=1e-3)
    assert west.fraction == pytest.approx(1.0 - east.fraction)


def test_snap_divided_road_follows_heading(divided_road: RoadGraph) -> None:
    # 5 m from the westbound carriageway, 10 m from the eastbound one
    lat = 60.0 + 10 / METRES_PER_DEGREE_LAT
    nearest = snap_point(divided_road, lat, 24.01)
    heading_east = snap_point(
        divided_road, lat, 24.01, heading_deg=90.0, speed_mps=12.0
    )
    assert nearest is not None and heading_east is not None
    assert divided_road.node_osmid[divided_road.edge_u[nearest.edge]] == 3
    assert divided_road.node_osmid[divided_road.edge_u[heading_east.edge]] == 1


def test_snap_one_way_ignores_opposite_heading() -> None:
    graph = road_graph_from_tables(
        [{"id": 1, "lat": 60.0, "lon": 24.0}, {"id": 2, "lat": 60.0, "lon": 24.02}],
        [{"u": 1, "v": 2, "length_m": 1111.0, "highway": "primary"}],
    )
    snap = snap_point(graph, 60.0, 24.01, heading_deg=270.0, speed_mps=12.0)
    assert snap is not None
    assert (snap.edge, snap.reverse_edge) == (0, -1)


def test_snap_random_points_on_streets_have_zero_distance(helsinki: RoadGraph) -> None:
    lats, lons = random_points_on_graph(helsinki, 500, np.random.default_rng(3))
    snaps = snap_points(helsinki, lats, lons)
    assert not snaps.off_network.any()
    assert np.max(snaps.distance_m) < 0.05


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(60.160, 60.183),
            st.floats(24.930, 24.958),
            st.floats(0, 360),
            st.floats(0, 3),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_snap_points_equals_snap_point(
    helsinki: RoadGraph, pings: list[tuple[float, float, float, float]]
) -> None:
    lats, lons, headings, speeds = (list(column) for column in zip(*pings, strict=True))
    batch = snap_points(
        helsinki, lats, lons, headings_deg=headings, speeds_mps=speeds, warn=False
    )
    for i, (lat, lon, heading, speed) in enumerate(pings):
        single = snap_point(helsinki, lat, lon, heading_deg=heading, speed_mps=speed)
        assert batch.row(i) == single


def brute_force_nearest(graph: RoadGraph, lat: float, lon: float) -> tuple[int, float]:
    """Return (segment, distance_m) minimising (distance, segment) over all segments."""
    index = graph.segment_index
    x, y = graph.project([lat], [lon])
    segments = np.arange(len(index))
    _, distance = index.project(
        segments, np.full(len(index), x[0]), np.full(len(index), y[0])
    )
    best = int(np.lexsort((segments, distance))[0])
    return best, float(distance[best])


def test_snap_nearest_matches_brute_force(helsinki: RoadGraph) -> None:
    rng = np.random.default_rng(11)
    lats, lons = random_points_on_graph(helsinki, 400, rng)
    lats = lats + rng.normal(0, 0.0005, len(lats))
    lons = lons + rng.normal(0, 0.001, len(lons))
    x, y = helsinki.project(lats, lons)
    rows, segments = helsinki.segment_index.nearest(x, y, 200.0)
    for row, segment in zip(rows, segments, strict=True):
        assert segment == brute_force_nearest(helsinki, lats[row], lons[row])[0]
    missed = np.setdiff1d(np.arange(len(lats)), rows)
    for row in missed:
        assert brute_force_nearest(helsinki, lats[row], lons[row])[1] > 200.0


def test_snap_busy_junction_is_exact() -> None:
    # twelve streets meet at one node: more segment samples lie at the node
    # than the k-d tree search looks at, so the exhaustive search decides
    centre = {"id": 0, "lat": 60.0, "lon": 24.0}
    nodes = [centre]
    edges = []
    for spoke in range(1, 13):
        angle = 2 * math.pi * spoke / 12
        nodes.append(
            {
                "id": spoke,
                "lat": 60.0 + 0.001 * math.sin(angle),
                "lon": 24.0 + 0.002 * math.cos(angle),
            }
        )
        edges += two_way(0, spoke, 111.0)
    graph = road_graph_from_tables(nodes, edges)
    for lat, lon in ((60.0, 24.0), (60.00001, 24.00002)):
        snap = snap_point(graph, lat, lon)
        segment, distance_m = brute_force_nearest(graph, lat, lon)
        assert snap is not None
        assert snap.distance_m == pytest.approx(distance_m)
        assert graph.segment_index.edge[segment] in (snap.edge, snap.reverse_edge)
        batch = snap_points(graph, [lat], [lon]).row(0)
        assert batch == snap


def test_snap_rows_match_row_by_row(helsinki: RoadGraph) -> None:
    lats = np.array([60.1716, 60.17, 61.5, 60.175])
    lons = np.array([24.9443, 24.95, 24.9443, 24.93])
    snaps = snap_points(helsinki, lats, lons, warn=False)
    assert snaps.rows() == [snaps.row(index) for index in range(len(snaps))]
