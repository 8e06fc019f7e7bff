"""Tests for destination trees, ETAs, routes and node paths."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eta.build import road_graph_from_tables
from eta.errors import OffNetworkError, UnreachableError
from eta.geo import haversine_m
from eta.graph import RoadGraph
from eta.routing import (
    build_tree,
    path_edges,
    random_points_on_graph,
    shortest_path_nodes,
)
from eta.snap import snap_point

SEED = 20251204


def route_length_m(points: list[tuple[float, float]]) -> float:
    lats = np.array([p[0] for p in points])
    lons = np.array([p[1] for p in points])
    return float(haversine_m(lats[:-1], lons[:-1], lats[1:], lons[1:]).sum())


def check_against_networkx(
    graph: RoadGraph, G: nx.MultiDiGraph, pairs: int, seed: int
) -> float:
    """Return the largest |tree time - networkx time| over random node pairs."""
    print(f"random node pairs seed={seed}")
    rng = np.random.default_rng(seed)
    worst = 0.0
    for source, target in rng.integers(graph.num_nodes, size=(pairs, 2)):
        tree = build_tree(
            graph, float(graph.node_lat[target]), float(graph.node_lon[target])
        )
        expected = nx.shortest_path_length(
            G,
            int(graph.node_osmid[source]),
            int(graph.node_osmid[target]),
            weight="travel_time",
        )
        worst = max(worst, abs(float(tree.node_eta_s[source]) - expected))
    return worst


def test_tree_matches_networkx_helsinki(
    helsinki: RoadGraph, helsinki_osmnx: tuple[nx.MultiDiGraph, dict[str, Any]]
) -> None:
    assert check_against_networkx(helsinki, helsinki_osmnx[0], 1000, SEED) <= 1e-6


def test_tree_matches_networkx_grid(
    grid: RoadGraph, grid_osmnx: nx.MultiDiGraph
) -> None:
    assert check_against_networkx(grid, grid_osmnx, 1000, SEED + 1) <= 1e-6


@pytest.mark.parametrize("graph_name", ["helsinki", "grid"])
def test_eta_at_nodes_matches_networkx(
    graph_name: str, request: pytest.FixtureRequest
) -> None:
    graph: RoadGraph = request.getfixturevalue(graph_name)
    G: nx.MultiDiGraph = request.getfixturevalue(f"{graph_name}_osmnx")
    G = G[0] if isinstance(G, tuple) else G
    rng = np.random.default_rng(SEED + 2)
    print(f"seed={SEED + 2}")
    worst = 0.0
    for target in rng.integers(graph.num_nodes, size=20):
        tree = build_tree(
            graph, float(graph.node_lat[target]), float(graph.node_lon[target])
        )
        sources = rng.integers(graph.num_nodes, size=50)
        etas = tree.eta_many(graph.node_lat[sources], graph.node_lon[sources])
        lengths = nx.single_source_dijkstra_path_length(
            G.reverse(copy=False), int(graph.node_osmid[target]), weight="travel_time"
        )
        expected = np.array([lengths[int(graph.node_osmid[s])] for s in sources])
        worst = max(worst, float(np.max(np.abs(etas - expected))))
    assert worst <= 1e-6


def test_path_edges_time_equals_tree(helsinki: RoadGraph) -> None:
    rng = np.random.default_rng(SEED + 3)
    for source, target in rng.integers(helsinki.num_nodes, size=(50, 2)):
        tree = build_tree(
            helsinki, float(helsinki.node_lat[target]), float(helsinki.node_lon[target])
        )
        edges = path_edges(helsinki, int(source), int(target))
        assert float(helsinki.edge_travel_time_s[edges].sum()) == pytest.approx(
            tree.node_eta_s[source], abs=1e-6
        )


def test_path_edges_are_connected(helsinki: RoadGraph) -> None:
    edges = path_edges(helsinki, 0, helsinki.num_nodes - 1)
    assert helsinki.edge_u[edges[0]] == 0
    assert helsinki.edge_v[edges[-1]] == helsinki.num_nodes - 1
    assert np.array_equal(helsinki.edge_v[edges[:-1]], helsinki.edge_u[edges[1:]])


def test_shortest_path_nodes_rejects_bad_index(helsinki: RoadGraph) -> None:
    with pytest.raises(IndexError, match=r"dest_node must be within 0\.\."):
        shortest_path_nodes(helsinki, 0, helsinki.num_nodes)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.booleans())
def test_eta_many_equals_eta_s(
    helsinki: RoadGraph, seed: int, n: int, moving: bool
) -> None:
    rng = np.random.default_rng(seed)
    lats, lons = random_points_on_graph(helsinki, n + 1, rng)
    lats = lats + rng.normal(0, 0.0002, n + 1)
    headings = rng.uniform(0, 360, n + 1)
    speeds = np.full(n + 1, 6.0 if moving else 0.0)
    tree = build_tree(helsinki, float(lats[0]), float(lons[0]))
    batch = tree.eta_many(
        lats[1:], lons[1:], headings_deg=headings[1:], speeds_mps=speeds[1:]
    )
    for i in range(n):
        single = tree.eta_s(
            float(lats[i + 1]),
            float(lons[i + 1]),
            heading_deg=float(headings[i + 1]),
            speed_mps=float(speeds[i + 1]),
        )
        assert (single is None and np.isnan(batch[i])) or batch[i] == single


def test_eta_at_destination_is_zero(helsinki: RoadGraph) -> None:
    lats, lons = random_points_on_graph(helsinki, 1, np.random.default_rng(SEED))
    tree = build_tree(helsinki, float(lats[0]), float(lons[0]))
    assert tree.eta_s(float(lats[0]), float(lons[0])) == 0.0


@pytest.fixture(scope="module")
def one_way_block() -> RoadGraph:
    """A block whose south side 1->2 is one-way eastbound; the rest is two-way.

    Every side is 100 m at 36 km/h, so 10 s.
    """
    nodes = [
        {"id": 1, "lat": 60.0, "lon": 24.0},
        {"id": 2, "lat": 60.0, "lon": 24.002},
        {"id": 3, "lat": 60.001, "lon": 24.002},
        {"id": 4, "lat": 60.001, "lon": 24.0},
    ]
    tags = {"length_m": 100.0, "highway": "residential", "maxspeed": "36"}
    edges = [{"u": 1, "v": 2, **tags}]
    for u, v in ((2, 3), (3, 4), (4, 1)):
        edges += [{"u": u, "v": v, **tags}, {"u": v, "v": u, **tags}]
    return road_graph_from_tables(nodes, edges)


def test_one_way_ping_drives_around(one_way_block: RoadGraph) -> None:
    # halfway along 1->2, facing away from node 1: 5 s to node 2, then 30 s back round
    tree = build_tree(one_way_block, 60.0, 24.0)
    assert tree.eta_s(60.0, 24.001) == pytest.approx(35.0)


def test_one_way_route_goes_round_block(one_way_block: RoadGraph) -> None:
    tree = build_tree(one_way_block, 60.0, 24.0)
    route = tree.route(60.0, 24.001)
    assert route is not None
    assert (60.001, 24.002) in route
    assert route[0] == pytest.approx((60.0, 24.001))
    assert route[-1] == pytest.approx((60.0, 24.0))


def test_same_edge_ahead_drives_straight(one_way_block: RoadGraph) -> None:
    tree = build_tree(one_way_block, 60.0, 24.0015)
    assert tree.eta_s(60.0, 24.0005) == pytest.approx(5.0)


def test_same_edge_ahead_route_stays_on_edge(one_way_block: RoadGraph) -> None:
    route = build_tree(one_way_block, 60.0, 24.0015).route(60.0, 24.0005)
    assert route == [pytest.approx((60.0, 24.0005)), pytest.approx((60.0, 24.0015))]


def test_same_edge_behind_loops_round(one_way_block: RoadGraph) -> None:
    # 1 s to node 2, 30 s round the block to node 1, 7.5 s to the site
    tree = build_tree(one_way_block, 60.0, 24.0015)
    assert tree.eta_s(60.0, 24.0018) == pytest.approx(38.5)


def test_two_way_heading_away_costs_turnaround() -> None:
    graph = road_graph_from_tables(
        [{"id": 1, "lat": 60.0, "lon": 24.0}, {"id": 2, "lat": 60.0, "lon": 24.002}],
        [
            {
                "u": 1,
                "v": 2,
                "length_m": 100.0,
                "highway": "residential",
                "maxspeed": "36",
            },
            {
                "u": 2,
                "v": 1,
                "length_m": 100.0,
                "highway": "residential",
                "maxspeed": "36",
            },
        ],
    )
    tree = build_tree(graph, 60.0, 24.0)
    parked = tree.eta_s(60.0, 24.0015, heading_deg=90.0, speed_mps=0.0)
    toward = tree.eta_s(60.0, 24.0015, heading_deg=270.0, speed_mps=8.0)
    away = tree.eta_s(60.0, 24.0015, heading_deg=90.0, speed_mps=8.0)
    assert parked == pytest.approx(7.5)
    assert toward == pytest.approx(7.5)
    assert away == pytest.approx(2.5 + 10.0)


@pytest.fixture(scope="module")
def dead_end() -> RoadGraph:
    """A two-way street 1-2 and a one-way spur 2->3 that leads nowhere."""
    return road_graph_from_tables(
        [
            {"id": 1, "lat": 60.0, "lon": 24.0},
            {"id": 2, "lat": 60.0, "lon": 24.002},
            {"id": 3, "lat": 60.0, "lon": 24.004},
        ],
        [
            {"u": 1, "v": 2, "length_m": 100.0},
            {"u": 2, "v": 1, "length_m": 100.0},
            {"u": 2, "v": 3, "length_m": 100.0},
        ],
    )


def test_unreachable_eta_is_none(
    dead_end: RoadGraph, caplog: pytest.LogCaptureFixture
) -> None:
    tree = build_tree(dead_end, 60.0, 24.0)
    with caplog.at_level(logging.WARNING, logger="eta.routing"):
        eta = tree.eta_s(60.0, 24.004)
    assert eta is None
    assert "No route from (lat=60.000000, lon=24.004000)" in caplog.text


def test_unreachable_eta_many_is_nan(dead_end: RoadGraph) -> None:
    tree = build_tree(dead_end, 60.0, 24.0)
    etas = tree.eta_many([60.0, 60.0], [24.004, 24.001])
    assert np.isnan(etas[0])
    # halfway along 100 m of unclassified road at the 10 km/h fallback speed
    assert etas[1] == pytest.approx(18.0)


def test_unreachable_route_is_none(dead_end: RoadGraph) -> None:
    assert build_tree(dead_end, 60.0, 24.0).route(60.0, 24.004) is None


def test_unreachable_node_path_raises(dead_end: RoadGraph) -> None:
    with pytest.raises(UnreachableError) as info:
        shortest_path_nodes(dead_end, dead_end.node_index(3), dead_end.node_index(1))
    assert (info.value.origin, info.value.destination) == (2, 0)
    assert isinstance(info.value, LookupError)


@pytest.fixture(scope="module")
def case09(load_case: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return load_case("09-lat-lon-swapped.json")


@pytest.fixture(scope="module")
def case09_graph(case09: dict[str, Any]) -> RoadGraph:
    return road_graph_from_tables(
        case09["input"]["graph"]["nodes"], case09["input"]["graph"]["edges"]
    )


def test_case_control_eta_in_range(
    case09: dict[str, Any], case09_graph: RoadGraph
) -> None:
    request = case09["input"]["eta_requests"][0]
    low, high = case09["expected"]["A-control"]["eta_s_between"]
    tree = build_tree(
        case09_graph, request["destination"]["lat"], request["destination"]["lon"]
    )
    eta = tree.eta_s(request["origin"]["lat"], request["origin"]["lon"])
    assert eta is not None
    assert low <= eta <= high
    # 1663.8 m of 30 km/h streets
    assert eta == pytest.approx(1663.8 / (30 / 3.6))


def test_case_control_route_length(
    case09: dict[str, Any], case09_graph: RoadGraph
) -> None:
    request = case09["input"]["eta_requests"][0]
    low, high = case09["expected"]["A-control"]["route_length_m_between"]
    tree = build_tree(
        case09_graph, request["destination"]["lat"], request["destination"]["lon"]
    )
    route = tree.route(request["origin"]["lat"], request["origin"]["lon"])
    assert route is not None
    assert low <= route_length_m(route) <= high
    assert route[0] == (request["origin"]["lat"], request["origin"]["lon"])
    assert route[-1] == pytest.approx(
        (request["destination"]["lat"], request["destination"]["lon"])
    )


def test_case_control_ends_on_distinct_corners(
    case09: dict[str, Any], case09_graph: RoadGraph
) -> None:
    request = case09["input"]["eta_requests"][0]
    graph = case09_graph
    ends = []
    for point in (request["origin"], request["destination"]):
        snap = snap_point(graph, point["lat"], point["lon"])
        assert snap is not None
        assert snap.distance_m == 0.0
        node = (
            graph.edge_u[snap.edge] if snap.fraction == 0.0 else graph.edge_v[snap.edge]
        )
        ends.append(int(graph.node_osmid[node]))
    assert ends == [1, 9]


def test_case_swapped_destination_raises(
    case09: dict[str, Any], case09_graph: RoadGraph
) -> None:
    request = case09["input"]["eta_requests"][1]
    with pytest.raises(OffNetworkError, match="lat and lon may be swapped") as info:
        build_tree(
            case09_graph, request["destination"]["lat"], request["destination"]["lon"]
        )
    assert info.value.possible_swap
    assert info.value.distance_m is not None
    assert info.value.distance_m > 3_000_000
    assert isinstance(info.value, LookupError)


def test_case_stationary_heading_same_eta(
    load_case: Callable[[str], dict[str, Any]],
) -> None:
    case = load_case("22-speed-zero-with-heading.json")
    graph = road_graph_from_tables(
        case["input"]["graph"]["nodes"], case["input"]["graph"]["edges"]
    )
    destination = case["input"]["eta_request"]["destination"]
    tree = build_tree(graph, destination["lat"], destination["lon"])
    low, high = case["expected"]["eta_s_between"]
    etas = []
    for variant in case["input"]["variants"]:
        ping = variant["ping"]
        eta = tree.eta_s(
            ping["lat"],
            ping["lon"],
            heading_deg=ping["heading"],
            speed_mps=ping["speed"],
        )
        assert eta is not None, variant["id"]
        assert low <= eta <= high, variant["id"]
        etas.append(eta)
    assert max(etas) - min(etas) <= 0.1 * min(etas)
    # two blocks of 276.5 m at 30 km/h, less the few metres to the snapped points
    assert etas[0] == pytest.approx(553.0 / (30 / 3.6), rel=0.01)


def test_route_starts_at_snap_and_ends_at_site(helsinki: RoadGraph) -> None:
    rng = np.random.default_rng(SEED + 4)
    lats, lons = random_points_on_graph(helsinki, 21, rng)
    tree = build_tree(helsinki, float(lats[0]), float(lons[0]))
    for lat, lon in zip(lats[1:], lons[1:], strict=True):
        route = tree.route(float(lat), float(lon))
        eta = tree.eta_s(float(lat), float(lon))
        assert route is not None and eta is not None
        assert route[0] == pytest.approx((lat, lon), abs=1e-7)
        assert route[-1] == pytest.approx(
            (tree.dest_snap.lat, tree.dest_snap.lon), abs=1e-7
        )
        assert (
            route_length_m(route)
            >= float(haversine_m(lat, lon, lats[0], lons[0])) - 0.5
        )


def test_random_points_lie_in_bounds(helsinki: RoadGraph) -> None:
    lats, lons = random_points_on_graph(helsinki, 200, np.random.default_rng(SEED))
    south, west, north, east = helsinki.bounds
    assert np.all((lats >= south) & (lats <= north))
    assert np.all((lons >= west) & (lons <= east))
