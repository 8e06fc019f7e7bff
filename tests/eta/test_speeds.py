"""Tests for maxspeed parsing and edge speed assignment."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eta.build import road_graph_from_tables
from eta.routing import build_tree
from eta.speeds import (
    HIGHWAY_SPEEDS_KPH,
    MAX_SPEED_KPH,
    MIN_SPEED_KPH,
    assign_edge_speeds,
    default_speed_kph,
    edge_speed_kph,
    infer_country,
    parse_maxspeed,
)


@pytest.mark.parametrize(
    ("value", "expected_kph"),
    [
        ("5", 5.0),
        ("30", 30.0),
        ("50", 50.0),
        ("130", 130.0),
        ("7,5", 7.5),
        ("30 mph", 30 * 1.609344),
        ("20mph", 20 * 1.609344),
        ("50 km/h", 50.0),
        ("50 kph", 50.0),
        ("50 kmh", 50.0),
        ("10 knots", 18.52),
        ("70|100", 85.0),
        ("50;30", 30.0),
        ("30 mph;50", 30 * 1.609344),
        ("50|70;60", 60.0),
        ("FI:urban", 50.0),
        ("FI:rural", 80.0),
        ("DE:urban", 50.0),
        ("DE:rural", 100.0),
        ("RU:urban", 60.0),
        ("BE-VLG:rural", 70.0),
        ("GB:nsl_single", 60 * 1.609344),
        ("DE:zone30", 30.0),
        ("DE:zone:20", 20.0),
        ("XX:motorway", 130.0),
        ("XX:urban", 50.0),
        ("walk", 7.0),
        ("3", MIN_SPEED_KPH),
        ("200", MAX_SPEED_KPH),
    ],
)
def test_parse_maxspeed_value(value: str, expected_kph: float) -> None:
    assert parse_maxspeed(value) == pytest.approx(expected_kph)


@pytest.mark.parametrize(
    "value",
    [
        "none",
        "signals",
        "variable",
        "DE:motorway",
        "foo",
        "",
        "0",
        "-30",
        "70100",
        "XX:nowhere",
        None,
        50,
    ],
)
def test_parse_maxspeed_no_limit(value: Any) -> None:
    assert parse_maxspeed(value) is None


def test_parse_maxspeed_bare_context_uses_country() -> None:
    assert parse_maxspeed("urban", country="RU") == 60.0


def test_parse_maxspeed_prefix_beats_country() -> None:
    assert parse_maxspeed("FI:urban", country="RU") == 50.0


@given(st.text(max_size=30))
def test_parse_maxspeed_any_text_in_range(value: str) -> None:
    speed = parse_maxspeed(value)
    assert speed is None or (
        math.isfinite(speed) and MIN_SPEED_KPH <= speed <= MAX_SPEED_KPH
    )


maxspeed_like = st.lists(
    st.one_of(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(
            lambda x: f"{x:g}"
        ),
        st.integers(min_value=0, max_value=10**9).map(str),
        st.sampled_from(
            [
                "mph",
                "km/h",
                "knots",
                "none",
                "walk",
                "FI:urban",
                "XX:zone99",
                "|",
                ";",
                " ",
            ]
        ),
    ),
    min_size=1,
    max_size=6,
).map("".join)


@given(maxspeed_like, st.sampled_from([None, "FI", "DE", "RU", "GB", "ZZ"]))
def test_parse_maxspeed_structured_text_in_range(
    value: str, country: str | None
) -> None:
    speed = parse_maxspeed(value, country)
    assert speed is None or (
        math.isfinite(speed) and MIN_SPEED_KPH <= speed <= MAX_SPEED_KPH
    )


@pytest.mark.parametrize(
    ("highway", "expected_kph"), sorted(HIGHWAY_SPEEDS_KPH.items())
)
def test_default_speed_per_highway(highway: str, expected_kph: float) -> None:
    assert default_speed_kph(highway) == expected_kph


def test_default_speed_unknown_highway() -> None:
    assert default_speed_kph("road") == 10.0


def test_default_speed_capped_by_country() -> None:
    # German living streets are limited to walking pace, below the 10 km/h default
    assert default_speed_kph("living_street", "DE") == 7.0


def test_default_speed_list_takes_fastest() -> None:
    assert default_speed_kph(["residential", "primary"]) == 65.0


def test_edge_speed_list_of_limits_is_mean() -> None:
    assert edge_speed_kph(["30", "50"], "residential").speed_kph == 40.0


def test_edge_speed_untagged_uses_default() -> None:
    speed = edge_speed_kph(float("nan"), "tertiary")
    assert speed.speed_kph == 40.0
    assert not speed.from_tag


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["FI:urban", "50", "FI:rural", "DE:urban"], "FI"),
        (["DE-BY:rural"], "DE"),
        (["sign", "50"], None),
        ([], None),
    ],
)
def test_infer_country(values: list[str], expected: str | None) -> None:
    assert infer_country(values) == expected


def test_assign_speeds_warns_once_per_unknown_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    G = nx.MultiDiGraph()
    for i in range(50):
        G.add_edge(i, i + 1, highway="primary", maxspeed="fast")
        G.add_edge(i + 1, i, highway="primary", maxspeed="slow-ish")
    with caplog.at_level(logging.WARNING, logger="eta.speeds"):
        summary = assign_edge_speeds(G)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "'fast' on 50 edges" in messages[0]
    assert summary.unknown_values == {"fast": 50, "slow-ish": 50}


def test_assign_speeds_counts_tags() -> None:
    G = nx.MultiDiGraph()
    G.add_edge(1, 2, highway="primary", maxspeed="50")
    G.add_edge(2, 3, highway="primary", maxspeed="signals")
    G.add_edge(3, 4, highway="primary")
    summary = assign_edge_speeds(G)
    assert (summary.edges, summary.tagged_edges, summary.parsed_edges) == (3, 2, 1)


def _single_edge_cases(
    load_case: Callable[[str], dict[str, Any]],
) -> list[dict[str, Any]]:
    case = load_case("14-maxspeed-multi-and-implicit-values.json")
    expected = {item["maxspeed"]: item for item in case["expected"]["per_value"]}
    return [
        dict(graph=item["graph"], **expected[item["maxspeed"]])
        for item in case["input"]["single_edge_graphs"]
    ]


def test_case_maxspeed_values_give_expected_speed(
    load_case: Callable[[str], dict[str, Any]],
) -> None:
    for item in _single_edge_cases(load_case):
        graph = road_graph_from_tables(item["graph"]["nodes"], item["graph"]["edges"])
        speed_kph = float(graph.edge_speed_kph[0])
        if isinstance(item["speed_kph"], list):
            low, high = item["speed_kph"]
        else:
            low, high = 30.0, 80.0  # "highway default (finite, 30-80)"
        assert low <= speed_kph <= high, item["maxspeed"]


def test_case_maxspeed_values_give_expected_eta(
    load_case: Callable[[str], dict[str, Any]],
) -> None:
    for item in _single_edge_cases(load_case):
        nodes = item["graph"]["nodes"]
        graph = road_graph_from_tables(nodes, item["graph"]["edges"])
        tree = build_tree(graph, nodes[1]["lat"], nodes[1]["lon"])
        eta_s = tree.eta_s(nodes[0]["lat"], nodes[0]["lon"])
        assert eta_s is not None
        expected_s = 1000.0 / (float(graph.edge_speed_kph[0]) / 3.6)
        assert eta_s == pytest.approx(expected_s, rel=1e-9), item["maxspeed"]
        low, high = item["eta_s_between"]
        assert low - 1e-6 <= eta_s <= high + 1e-6, item["maxspeed"]
        assert eta_s >= 20.0, item["maxspeed"]


def test_case_unknown_value_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    nodes = [{"id": i, "lat": 60.17, "lon": 24.93 + i * 0.001} for i in range(30)]
    edges = [
        {
            "u": i,
            "v": i + 1,
            "length_m": 55.0,
            "highway": "primary",
            "maxspeed": "signals; foo",
        }
        for i in range(29)
    ]
    with caplog.at_level(logging.WARNING, logger="eta.speeds"):
        graph = road_graph_from_tables(nodes, edges)
    assert [record.getMessage().count("foo") for record in caplog.records] == [1]
    assert float(graph.edge_speed_kph[0]) == 65.0
