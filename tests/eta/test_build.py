"""Tests for graph building, compiling and the on-disk cache."""

from __future__ import annotations

import bz2
import gzip
import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import osmnx as ox
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eta.build import (
    OSM_SUFFIXES,
    build_graph,
    default_source_path,
    load_graph,
    resolve_source,
)
from eta.cache import cache_file_name, cache_key, file_sha256
from eta.errors import GraphSourceError, GraphSourceNotFoundError
from eta.graph import RoadGraph
from eta.osm import is_drivable

BUILD_MESSAGE = "Building road graph"

NOT_DRIVABLE = {
    "footway",
    "cycleway",
    "path",
    "steps",
    "pedestrian",
    "track",
    "service",
    "trail",
}


def _built(caplog: pytest.LogCaptureFixture) -> bool:
    return any(BUILD_MESSAGE in record.getMessage() for record in caplog.records)


def test_helsinki_is_strongly_connected(
    helsinki_osmnx: tuple[nx.MultiDiGraph, dict[str, Any]],
) -> None:
    G, _ = helsinki_osmnx
    assert nx.is_strongly_connected(G)


def test_helsinki_report_counts_dropped_parts(
    helsinki_osmnx: tuple[nx.MultiDiGraph, dict[str, Any]],
) -> None:
    G, report = helsinki_osmnx
    assert report["strong_components"] > 1
    assert report["dropped_components"] == report["strong_components"] - 1
    assert report["dropped_nodes"] > 0
    assert report["nodes"] == G.number_of_nodes()


def test_helsinki_size(helsinki: RoadGraph) -> None:
    assert 100 <= helsinki.num_nodes <= 500
    assert helsinki.num_edges >= helsinki.num_nodes


def test_helsinki_country_from_tags(helsinki: RoadGraph) -> None:
    assert helsinki.country == "FI"


def test_helsinki_reports_maxspeed_counts(helsinki: RoadGraph) -> None:
    assert (
        0
        < helsinki.report["maxspeed_parsed_edges"]
        <= helsinki.report["maxspeed_tagged_edges"]
    )
    assert helsinki.report["maxspeed_tagged_edges"] <= helsinki.num_edges


def test_helsinki_has_no_footways(helsinki: RoadGraph) -> None:
    highways = {helsinki.edge_highway_name(e) for e in range(helsinki.num_edges)}
    assert highways.isdisjoint(NOT_DRIVABLE)


def test_helsinki_speeds_in_range(helsinki: RoadGraph) -> None:
    assert np.all((helsinki.edge_speed_kph >= 5) & (helsinki.edge_speed_kph <= 150))
    assert np.all(np.isfinite(helsinki.edge_travel_time_s))


def test_helsinki_edges_match_osmnx(
    helsinki: RoadGraph, helsinki_osmnx: tuple[nx.MultiDiGraph, dict[str, Any]]
) -> None:
    G, _ = helsinki_osmnx
    for e in range(helsinki.num_edges):
        u = int(helsinki.node_osmid[helsinki.edge_u[e]])
        v = int(helsinki.node_osmid[helsinki.edge_v[e]])
        times = [data["travel_time"] for data in G.get_edge_data(u, v).values()]
        assert helsinki.edge_travel_time_s[e] in times


def test_edge_polyline_ends_at_nodes(helsinki: RoadGraph) -> None:
    for e in range(helsinki.num_edges):
        line = helsinki.edge_polyline(e)
        u, v = helsinki.edge_u[e], helsinki.edge_v[e]
        assert tuple(line[0]) == (helsinki.node_lat[u], helsinki.node_lon[u])
        assert tuple(line[-1]) == (helsinki.node_lat[v], helsinki.node_lon[v])


def test_reverse_edges_pair_up(helsinki: RoadGraph) -> None:
    paired = np.flatnonzero(helsinki.edge_reverse >= 0)
    assert len(paired) > 0
    assert np.array_equal(helsinki.edge_reverse[helsinki.edge_reverse[paired]], paired)
    assert np.array_equal(
        helsinki.edge_u[paired], helsinki.edge_v[helsinki.edge_reverse[paired]]
    )


def test_bounds_are_south_west_north_east(helsinki: RoadGraph) -> None:
    south, west, north, east = helsinki.bounds
    assert 60.1 < south < north < 60.2
    assert 24.9 < west < east < 25.0


def test_edges_latlon_one_line_per_street(helsinki: RoadGraph) -> None:
    lines = helsinki.edges_latlon()
    two_way = int((helsinki.edge_reverse >= 0).sum())
    assert len(lines) == helsinki.num_edges - two_way // 2
    assert all(len(line) >= 2 and 60 < line[0][0] < 61 for line in lines)


def test_streets_geojson_lon_lat_order(helsinki: RoadGraph) -> None:
    collection = helsinki.streets_geojson()
    lon, lat = collection["features"][0]["geometry"]["coordinates"][0]
    assert collection["type"] == "FeatureCollection"
    assert 24 < lon < 25
    assert 60 < lat < 61


def test_save_load_roundtrip(helsinki: RoadGraph, tmp_path: Path) -> None:
    path = tmp_path / "graph.npz"
    helsinki.save(path)
    loaded = RoadGraph.load(path)
    assert np.array_equal(loaded.edge_travel_time_s, helsinki.edge_travel_time_s)
    assert np.array_equal(loaded.geom_x, helsinki.geom_x)
    assert loaded.highway_names == helsinki.highway_names
    assert loaded.report == helsinki.report


def test_node_index_finds_osm_id(helsinki: RoadGraph) -> None:
    assert helsinki.node_index(int(helsinki.node_osmid[7])) == 7


def test_node_index_unknown_id(helsinki: RoadGraph) -> None:
    with pytest.raises(KeyError, match="no node with OSM id -5"):
        helsinki.node_index(-5)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"highway": "residential"}, True),
        ({"highway": "primary_link"}, True),
        ({"highway": "footway"}, False),
        ({"highway": "cycleway"}, False),
        ({"highway": "service"}, False),
        ({"highway": "track"}, False),
        ({"highway": "trail"}, False),
        ({"highway": "residential", "access": "private"}, False),
        ({"highway": "residential", "motor_vehicle": "no"}, False),
        ({"highway": "residential", "motorcar": "no"}, False),
        ({"highway": "residential", "area": "yes"}, False),
        ({"highway": "tertiary", "access": "destination"}, True),
        ({"building": "yes"}, False),
    ],
)
def test_is_drivable(tags: dict[str, str], expected: bool) -> None:
    assert is_drivable(tags) is expected


def test_load_graph_second_load_uses_cache(
    tmp_path: Path, town_writer: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    source = town_writer(tmp_path / "town.osm")
    with caplog.at_level(logging.INFO, logger="eta.build"):
        first = load_graph(source)
    assert _built(caplog)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="eta.build"):
        second = load_graph(source)
    assert not _built(caplog)
    assert second.cache_path == tmp_path / cache_file_name(
        cache_key(file_sha256(source), None)
    )
    assert np.array_equal(second.edge_travel_time_s, first.edge_travel_time_s)


def test_load_graph_rebuilds_when_bytes_change(
    tmp_path: Path, town_writer: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    source = town_writer(tmp_path / "town.osm")
    first = load_graph(source)
    town_writer(source, extra_lat=0.0005)
    with caplog.at_level(logging.INFO, logger="eta.build"):
        second = load_graph(source)
    assert _built(caplog)
    assert second.source_hash != first.source_hash
    assert second.geom_lat.max() > first.geom_lat.max()


def test_load_graph_ignores_corrupt_cache(
    tmp_path: Path, town_writer: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    source = town_writer(tmp_path / "town.osm")
    cached = tmp_path / cache_file_name(cache_key(file_sha256(source), None))
    cached.write_bytes(b"not a zip file")
    with caplog.at_level(logging.INFO):
        graph = load_graph(source)
    assert _built(caplog)
    assert any(
        "Ignoring unreadable graph cache" in r.getMessage() for r in caplog.records
    )
    assert graph.num_nodes > 0


def test_read_only_folder_caches_in_user_dir(
    tmp_path: Path, town_writer: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    source = town_writer(folder / "town.osm")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    folder.chmod(0o555)
    try:
        graph = build_graph(source, progress=False)
    finally:
        folder.chmod(0o755)
    assert graph.cache_path is not None
    assert graph.cache_path.parent == tmp_path / "user-cache" / "enroute" / "graphs"
    assert sorted(p.name for p in folder.iterdir()) == ["town.osm"]


def test_build_drops_footway(
    tmp_path: Path, town_writer: Callable[..., Path], graph_cache_dir: Path
) -> None:
    graph = build_graph(
        town_writer(tmp_path / "town.osm"), cache_dir=graph_cache_dir, progress=False
    )
    highways = {graph.edge_highway_name(e) for e in range(graph.num_edges)}
    assert 100 not in graph.node_osmid.tolist()
    assert highways == {"residential", "tertiary"}


def test_build_honours_oneway(
    tmp_path: Path, town_writer: Callable[..., Path], graph_cache_dir: Path
) -> None:
    graph = build_graph(
        town_writer(tmp_path / "town.osm"), cache_dir=graph_cache_dir, progress=False
    )
    pairs = set(
        zip(
            graph.node_osmid[graph.edge_u].tolist(),
            graph.node_osmid[graph.edge_v].tolist(),
            strict=True,
        )
    )
    assert (2, 5) in pairs
    assert (5, 2) not in pairs


@pytest.mark.parametrize("suffix", [".osm.gz", ".osm.bz2"])
def test_build_compressed_xml(
    tmp_path: Path, town_writer: Callable[..., Path], graph_cache_dir: Path, suffix: str
) -> None:
    plain = town_writer(tmp_path / "town.osm")
    packed = tmp_path / f"town{suffix}"
    opener = gzip.open if suffix.endswith("gz") else bz2.open
    with plain.open("rb") as src, opener(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    graph = build_graph(packed, cache_dir=graph_cache_dir, progress=False)
    reference = build_graph(plain, cache_dir=graph_cache_dir, progress=False)
    assert np.array_equal(graph.edge_travel_time_s, reference.edge_travel_time_s)


def test_build_graphml_source(
    helsinki_osmnx: tuple[nx.MultiDiGraph, dict[str, Any]],
    helsinki: RoadGraph,
    tmp_path: Path,
) -> None:
    G, _ = helsinki_osmnx
    path = tmp_path / "helsinki.graphml"
    ox.save_graphml(G, path)
    graph = build_graph(path, cache_dir=tmp_path, progress=False)
    assert graph.num_edges == helsinki.num_edges
    assert np.allclose(
        np.sort(graph.edge_travel_time_s), np.sort(helsinki.edge_travel_time_s)
    )


def test_build_graphml_without_times_gets_speeds(
    helsinki_osmnx: tuple[nx.MultiDiGraph, dict[str, Any]], tmp_path: Path
) -> None:
    G = helsinki_osmnx[0].copy()
    for _u, _v, data in G.edges(data=True):
        del data["travel_time"], data["speed_kph"]
    path = tmp_path / "bare.graphml"
    ox.save_graphml(G, path)
    graph = build_graph(path, cache_dir=tmp_path, progress=False)
    assert graph.report["graphml_travel_times"] == "assigned"
    assert np.all((graph.edge_speed_kph >= 5) & (graph.edge_speed_kph <= 150))


def test_build_default_source_into_cache_dir(graph_cache_dir: Path) -> None:
    graph = load_graph(None, cache_dir=graph_cache_dir)
    assert graph.cache_path is not None
    assert graph.cache_path.parent == graph_cache_dir


def test_build_progress_on_stderr(
    tmp_path: Path, town_writer: Callable[..., Path], capfd: pytest.CaptureFixture[str]
) -> None:
    build_graph(town_writer(tmp_path / "town.osm"), cache_dir=tmp_path, progress=True)
    captured = capfd.readouterr()
    assert "writing cache" in captured.err
    assert captured.out == ""


def test_build_quiet_without_progress(
    tmp_path: Path, town_writer: Callable[..., Path], capfd: pytest.CaptureFixture[str]
) -> None:
    build_graph(town_writer(tmp_path / "town.osm"), cache_dir=tmp_path, progress=False)
    assert capfd.readouterr().err == ""


def test_missing_file_source(tmp_path: Path) -> None:
    with pytest.raises(GraphSourceNotFoundError, match="not found") as info:
        load_graph(tmp_path / "missing.osm.pbf")
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("name", ["roads.osm", "roads.graphml", "roads"])
def test_directory_source_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.mkdir()
    with pytest.raises(GraphSourceError, match="graph source must be a file") as info:
        load_graph(path)
    assert not isinstance(info.value, FileNotFoundError)
    assert str(info.value) == f"graph source must be a file, but {path} is a directory"


def test_unsupported_file_source(tmp_path: Path) -> None:
    path = tmp_path / "roads.csv"
    path.write_text("u,v\n")
    with pytest.raises(
        GraphSourceError, match=r"unsupported graph source 'roads\.csv'"
    ) as info:
        build_graph(path)
    assert isinstance(info.value, ValueError)


def test_empty_source_string() -> None:
    with pytest.raises(GraphSourceError, match="file path or a place name"):
        load_graph("  ")


def test_place_name_resolves_without_network() -> None:
    resolved = resolve_source("Kallio, Helsinki, Finland")
    assert (resolved.kind, resolved.place) == ("place", "Kallio, Helsinki, Finland")


@pytest.mark.parametrize(
    "place", ["Helsinki, Finland", "St. Louis, Missouri", "Washington D.C.", "Mt.Fuji"]
)
def test_dotted_place_names_resolve(place: str) -> None:
    resolved = resolve_source(place)
    assert resolved.kind == "place"
    assert resolved.place == place


@pytest.mark.parametrize(
    "name", ["some.txt", "roads.XML", "area.geojson", "track.gpx", "extract.gz", "maps/helsinki"]
)
def test_missing_path_like_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # A relative name, as a user would type it, in a folder without that file.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GraphSourceNotFoundError) as info:
        resolve_source(name)
    assert str(info.value) == f"graph source file not found: {name}"


def test_source_without_roads(tmp_path: Path, osm_writer: Callable[..., Path]) -> None:
    source = osm_writer(
        tmp_path / "paths.osm",
        [(1, 60.0, 24.0), (2, 60.001, 24.0)],
        [(1, [1, 2], {"highway": "footway"})],
    )
    with pytest.raises(GraphSourceError, match="contains no drivable roads"):
        build_graph(source, cache_dir=tmp_path, progress=False)


GRAPHML_HEADER = '<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.osm", b'<osm version="0.6"><node id="1"', "as OSM data: XML parsing error"),
        ("broken.osm.gz", gzip.compress(b"<osm version="), "as OSM data: XML parsing error"),
        ("broken.osm.bz2", bz2.compress(b"<osm version="), "as OSM data: XML parsing error"),
        ("plain.osm.gz", b"not gzip", "as OSM data"),
        ("random.osm.pbf", bytes(range(256)) * 4, "as OSM data: PBF error"),
        (
            "lat.osm",
            b'<osm version="0.6"><node id="1" lat="abc" lon="24.9"/></osm>',
            "as OSM data: wrong format for coordinate: 'abc'",
        ),
        (
            "range.osm",
            b'<osm version="0.6"><node id="1" lat="999" lon="24.9"/></osm>',
            "as OSM data: wrong format for coordinate: '999'",
        ),
        (
            "id.osm",
            b'<osm version="0.6"><node id="x" lat="60.1" lon="24.9"/></osm>',
            "as OSM data: illegal id: 'x'",
        ),
        (
            "timestamp.osm",
            b'<osm version="0.6"><node id="1" timestamp="t" lat="60.1" lon="24.9"/></osm>',
            "as OSM data: can not parse timestamp: 't'",
        ),
        ("broken.graphml", b"<graphml><graph", "as GraphML"),
        ("other.graphml", b"<svg/>", "as GraphML"),
    ],
    ids=[
        "osm",
        "osm.gz",
        "osm.bz2",
        "not-gzip",
        "pbf",
        "coordinate",
        "coordinate-range",
        "id",
        "timestamp",
        "graphml",
        "not-graphml",
    ],
)
def test_corrupt_source_error(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    with pytest.raises(GraphSourceError, match=f"^could not parse {re.escape(str(source))} {message}") as info:
        build_graph(source, cache_dir=tmp_path, progress=False)
    assert info.value.source == source


def test_cut_pbf_error(tmp_path: Path) -> None:
    source = tmp_path / "cut.osm.pbf"
    source.write_bytes(default_source_path().read_bytes()[:3000])
    with pytest.raises(GraphSourceError, match="PBF error: unexpected EOF"):
        build_graph(source, cache_dir=tmp_path, progress=False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            (
                "<key id='k' for='node' attr.name='x' attr.type='weird'/>"
                "<graph edgedefault='directed'><node id='1'><data key='k'>1</data></node></graph>"
            ),
            "'weird'",
        ),
        ("<graph edgedefault='directed'><node/></graph>", "int() argument must be"),
        (
            (
                "<key id='k' for='node' attr.name='x' attr.type='double'/>"
                "<graph edgedefault='directed'><node id='1'><data key='k'>abc</data></node></graph>"
            ),
            "could not convert string to float: 'abc'",
        ),
        (
            "<graph edgedefault='directed'><node id='1'><data key='zz'>1</data></node></graph>",
            "Bad GraphML data: no key zz",
        ),
    ],
    ids=["attribute-type", "node-id", "value", "data-key"],
)
def test_graphml_invalid_error(tmp_path: Path, body: str, message: str) -> None:
    source = tmp_path / "invalid.graphml"
    source.write_text(GRAPHML_HEADER + body + "</graphml>")
    with pytest.raises(GraphSourceError, match=re.escape(f"as GraphML: {message}")):
        build_graph(source, cache_dir=tmp_path, progress=False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<graph edgedefault='directed'><node id='1'/></graph>", "the graph has no crs attribute"),
        (
            (
                "<key id='c' for='graph' attr.name='crs' attr.type='string'/>"
                "<graph edgedefault='directed'><data key='c'>epsg:4326</data><node id='1'/></graph>"
            ),
            "node 1 has no x and y coordinates",
        ),
    ],
    ids=["crs", "coordinates"],
)
def test_graphml_not_osmnx_error(tmp_path: Path, body: str, message: str) -> None:
    source = tmp_path / "plain.graphml"
    source.write_text(GRAPHML_HEADER + body + "</graphml>")
    with pytest.raises(GraphSourceError, match=f"is not an osmnx graph: {message}"):
        build_graph(source, cache_dir=tmp_path, progress=False)


@given(
    suffix=st.sampled_from([*OSM_SUFFIXES, ".graphml"]),
    content=st.binary(max_size=2000),
)
@settings(max_examples=150, deadline=None)
def test_random_bytes_source_error(suffix: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / f"random{suffix}"
        source.write_bytes(content)
        with pytest.raises(GraphSourceError):
            build_graph(source, cache_dir=folder, progress=False)


def test_way_with_missing_nodes_is_cut(
    tmp_path: Path, osm_writer: Callable[..., Path]
) -> None:
    source = osm_writer(
        tmp_path / "cut.osm",
        [(1, 60.0, 24.0), (2, 60.001, 24.0), (3, 60.002, 24.0)],
        [(1, [1, 2, 3, 99], {"highway": "residential"})],
    )
    graph = build_graph(source, cache_dir=tmp_path, progress=False)
    assert graph.report["osm_truncated_ways"] == 1
    assert sorted(graph.node_osmid.tolist()) == [1, 3]


def test_shared_campo_grande_builds(
    graph_cache_dir: Path, shared_path: Callable[..., Path]
) -> None:
    graph = load_graph(
        shared_path("data", "osm", "campo-grande.osm.gz"), cache_dir=graph_cache_dir
    )
    assert 5_000 <= graph.num_nodes <= 9_000
    assert graph.report["maxspeed_tagged_edges"] < graph.num_edges / 100
