"""Shared fixtures for the ETA tests: real graphs built once per session."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest

from eta.build import build_osmnx_graph
from eta.graph import RoadGraph, compile_graph


def shared_dir() -> Path:
    """Return the shared data folder: $ENROUTE_SHARED_DIR, else ../shared beside the repo."""
    configured = os.environ.get("ENROUTE_SHARED_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2].parent / "shared"


def shared_file(*parts: str) -> Path:
    """Return a file under the shared folder, or skip the test when it is absent."""
    path = shared_dir().joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"shared test data not found: {path} (set ENROUTE_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def load_case() -> Callable[[str], dict[str, Any]]:
    """Return a loader of field cases by file name, skipping when absent."""

    def load(name: str) -> dict[str, Any]:
        return dict(json.loads(shared_file("cases", name).read_text()))

    return load


@pytest.fixture(scope="session")
def graph_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session cache folder, so no test writes next to installed or shared data."""
    return tmp_path_factory.mktemp("graph-cache")


@pytest.fixture(scope="session")
def helsinki_osmnx() -> tuple[nx.MultiDiGraph, dict[str, Any]]:
    """The bundled Helsinki extract as the modelled osmnx graph and build report."""
    return build_osmnx_graph(None)


@pytest.fixture(scope="session")
def helsinki(helsinki_osmnx: tuple[nx.MultiDiGraph, dict[str, Any]]) -> RoadGraph:
    """The bundled Helsinki extract compiled from `helsinki_osmnx`."""
    G, report = helsinki_osmnx
    return compile_graph(G, country=report["country"], report=report)


def make_grid_graph(rows: int, cols: int, seed: int) -> nx.MultiDiGraph:
    """Build an osmnx-style street grid with random travel times.

    About a fifth of the streets are one-way, and some blocks have a
    second, slower parallel edge, so routing must pick the faster one.
    """
    rng = np.random.default_rng(seed)
    G = nx.MultiDiGraph(crs="epsg:4326")
    spacing_deg = 0.002
    for r in range(rows):
        for c in range(cols):
            G.add_node(
                r * cols + c + 1, y=60.0 + r * spacing_deg, x=24.0 + c * spacing_deg * 2
            )

    def add(u: int, v: int) -> None:
        length_m = float(rng.uniform(150, 250))
        G.add_edge(
            u,
            v,
            length=length_m,
            travel_time=float(length_m / rng.uniform(5, 20)),
            highway="residential",
        )

    for r in range(rows):
        for c in range(cols):
            node = r * cols + c + 1
            for neighbour in (
                node + 1 if c + 1 < cols else None,
                node + cols if r + 1 < rows else None,
            ):
                if neighbour is None:
                    continue
                direction = rng.uniform()
                if direction < 0.1:
                    add(node, neighbour)
                elif direction < 0.2:
                    add(neighbour, node)
                else:
                    add(node, neighbour)
                    add(neighbour, node)
                if rng.uniform() < 0.05:
                    add(node, neighbour)
    return G


@pytest.fixture(scope="session")
def grid_osmnx() -> nx.MultiDiGraph:
    """A 30 x 30 synthetic grid in osmnx's format, its largest strong component."""
    G = make_grid_graph(30, 30, seed=7)
    largest = max(nx.strongly_connected_components(G), key=len)
    return nx.MultiDiGraph(G.subgraph(largest))


@pytest.fixture(scope="session")
def grid(grid_osmnx: nx.MultiDiGraph) -> RoadGraph:
    """`grid_osmnx` compiled."""
    return compile_graph(grid_osmnx, source_hash="grid")


def write_osm_xml(
    path: Path,
    nodes: list[tuple[int, float, float]],
    ways: list[tuple[int, list[int], dict[str, str]]],
) -> Path:
    """Write a small OSM XML file of (id, lat, lon) nodes and (id, refs, tags) ways."""
    lines = [
        "<?xml version='1.0' encoding='UTF-8'?>",
        '<osm version="0.6" generator="tests">',
    ]
    lines += [
        f'<node id="{i}" lat="{lat}" lon="{lon}" version="1"/>' for i, lat, lon in nodes
    ]
    for way_id, refs, tags in ways:
        lines.append(f'<way id="{way_id}" version="1">')
        lines += [f'<nd ref="{ref}"/>' for ref in refs]
        lines += [f'<tag k="{k}" v="{v}"/>' for k, v in tags.items()]
        lines.append("</way>")
    lines.append("</osm>")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def small_town_osm(path: Path, *, extra_lat: float = 0.0) -> Path:
    """Write a 3 x 3 block town with a footway and a one-way street.

    ``extra_lat`` moves one corner node, to make files with other bytes.
    """
    nodes = [
        (
            r * 3 + c + 1,
            60.17 + r * 0.002 + (extra_lat if r == c == 2 else 0.0),
            24.93 + c * 0.004,
        )
        for r in range(3)
        for c in range(3)
    ]
    nodes.append((100, 60.171, 24.935))
    ways = [
        (1, [1, 2, 3], {"highway": "residential", "maxspeed": "30"}),
        (2, [4, 5, 6], {"highway": "residential"}),
        (3, [7, 8, 9], {"highway": "tertiary", "maxspeed": "FI:urban"}),
        (4, [1, 4, 7], {"highway": "residential"}),
        (5, [2, 5, 8], {"highway": "residential", "oneway": "yes"}),
        (6, [3, 6, 9], {"highway": "residential"}),
        (7, [1, 100, 5], {"highway": "footway"}),
    ]
    return write_osm_xml(path, nodes, ways)


@pytest.fixture(scope="session")
def osm_writer() -> Callable[..., Path]:
    """`write_osm_xml` as a fixture, for tests that need their own small OSM files."""
    return write_osm_xml


@pytest.fixture(scope="session")
def town_writer() -> Callable[..., Path]:
    """`small_town_osm` as a fixture."""
    return small_town_osm


@pytest.fixture(scope="session")
def shared_path() -> Callable[..., Path]:
    """`shared_file` as a fixture: a shared data file, or a skip when absent."""
    return shared_file
