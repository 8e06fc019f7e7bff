"""Compact road graph: numpy arrays compiled from an osmnx graph.

A `RoadGraph` stores a directed drivable street network as flat arrays:
nodes with (lat, lon) and projected (x, y) metres, edges sorted by their
start node (so the edges leaving node ``n`` are ``out_offsets[n]`` up to
``out_offsets[n + 1]``), the reverse adjacency, and each edge's polyline
as flat point arrays with offsets. A two-way street is two directed edges
with the same geometry in opposite order; ``edge_reverse`` links them.

Graphs are saved with `numpy.savez` (no pickled objects) and load in
milliseconds, which is what makes a cached start fast.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
import numpy.typing as npt

from eta.errors import GraphSourceError
from eta.geo import FloatArray, IntArray, utm_epsg
from eta.speeds import HIGHWAY_SPEEDS_KPH

if TYPE_CHECKING:
    from eta.segments import SegmentIndex

logger = logging.getLogger(__name__)

# Version of the compiled array layout; part of every cache key.
GRAPH_FORMAT_VERSION = 1

_ARRAY_FIELDS = (
    "node_osmid",
    "node_lat",
    "node_lon",
    "node_x",
    "node_y",
    "edge_u",
    "edge_v",
    "edge_length_m",
    "edge_travel_time_s",
    "edge_speed_kph",
    "edge_highway",
    "edge_osmid",
    "edge_reverse",
    "out_offsets",
    "in_offsets",
    "in_edges",
    "geom_offsets",
    "geom_lat",
    "geom_lon",
    "geom_x",
    "geom_y",
)


@dataclass(eq=False)
class RoadGraph:
    """A drivable road network compiled into arrays.

    Coordinates are (lat, lon) in degrees; ``node_x``/``node_y`` and
    ``geom_x``/``geom_y`` are metres in the UTM zone ``crs_epsg``. Node and
    edge indices are positions in these arrays (``node_osmid`` maps node
    indices back to OSM ids).
    """

    node_osmid: IntArray
    node_lat: FloatArray
    node_lon: FloatArray
    node_x: FloatArray
    node_y: FloatArray
    edge_u: IntArray
    edge_v: IntArray
    edge_length_m: FloatArray
    edge_travel_time_s: FloatArray
    edge_speed_kph: FloatArray
    edge_highway: IntArray
    edge_osmid: IntArray
    edge_reverse: IntArray
    out_offsets: IntArray
    in_offsets: IntArray
    in_edges: IntArray
    geom_offsets: IntArray
    geom_lat: FloatArray
    geom_lon: FloatArray
    geom_x: FloatArray
    geom_y: FloatArray
    highway_names: tuple[str, ...]
    crs_epsg: int
    source_hash: str
    country: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    cache_path: Path | None = None

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return int(self.node_lat.shape[0])

    @property
    def num_edges(self) -> int:
        """Number of directed edges."""
        return int(self.edge_u.shape[0])

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        """Bounding box of all edge geometry as (south, west, north, east) degrees."""
        return (
            float(self.geom_lat.min()),
            float(self.geom_lon.min()),
            float(self.geom_lat.max()),
            float(self.geom_lon.max()),
        )

    def edge_polyline(self, edge_index: int) -> FloatArray:
        """Return an edge's geometry as a (k, 2) array of (lat, lon) rows, start to end."""
        start, stop = self.geom_offsets[edge_index], self.geom_offsets[edge_index + 1]
        return np.column_stack((self.geom_lat[start:stop], self.geom_lon[start:stop]))

    def edge_highway_name(self, edge_index: int) -> str:
        """Return the OSM highway type of an edge."""
        return self.highway_names[int(self.edge_highway[edge_index])]

    def node_index(self, osmid: int) -> int:
        """Return the index of the node with OSM id ``osmid``.

        Raises
        ------
        KeyError
            If the graph has no such node.
        """
        index = int(np.searchsorted(self.node_osmid, osmid))
        if index >= self.num_nodes or self.node_osmid[index] != osmid:
            raise KeyError(f"no node with OSM id {osmid} in this graph")
        return index

    def out_edge_indices(self, node: int) -> IntArray:
        """Return the indices of the edges leaving a node."""
        return np.arange(self.out_offsets[node], self.out_offsets[node + 1])

    @cached_property
    def street_edges(self) -> IntArray:
        """Edge indices with one entry per street: two-way pairs appear once."""
        edges = np.arange(self.num_edges)
        return edges[(self.edge_reverse < 0) | (self.edge_reverse > edges)]

    def edges_latlon(self) -> list[list[list[float]]]:
        """Return street polylines as lists of [lat, lon] pairs, for drawing.

        Each two-way street appears once. The order (lat, lon) matches
        Leaflet's; see `streets_geojson` for GeoJSON's (lon, lat).
        """
        return [self.edge_polyline(int(edge)).tolist() for edge in self.street_edges]

    def streets_geojson(self) -> dict[str, Any]:
        """Return the streets as a GeoJSON FeatureCollection of LineStrings.

        Coordinates follow GeoJSON's [lon, lat] order. Each feature's
        properties give its ``highway`` type and whether it is ``oneway``.
        """
        features = []
        for edge in self.street_edges:
            edge = int(edge)
            line = self.edge_polyline(edge)[:, ::-1].tolist()
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "LineString", "coordinates": line},
                    "properties": {
                        "highway": self.edge_highway_name(edge),
                        "oneway": bool(self.edge_reverse[edge] < 0),
                    },
                }
            )
        return {"type": "FeatureCollection", "features": features}

    @cached_property
    def transformer(self) -> Any:
        """pyproj Transformer from WGS84 (lon, lat) to this graph's UTM metres."""
        import pyproj

        return pyproj.Transformer.from_crs(4326, self.crs_epsg, always_xy=True)

    def project(
        self, lats: npt.ArrayLike, lons: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray]:
        """Project (lat, lon) degrees to this graph's (x, y) metres."""
        x, y = self.transformer.transform(np.asarray(lons), np.asarray(lats))
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    @cached_property
    def geom_cum_m(self) -> FloatArray:
        """Projected distance in metres from each edge's start to each of its points."""
        step = np.hypot(np.diff(self.geom_x), np.diff(self.geom_y))
        cumulative = np.concatenate(([0.0], np.cumsum(step)))
        starts = self.geom_offsets[:-1]
        counts = np.diff(self.geom_offsets)
        return cumulative - np.repeat(cumulative[starts], counts)

    @cached_property
    def edge_geom_length_m(self) -> FloatArray:
        """Projected length in metres of each edge's polyline."""
        return self.geom_cum_m[self.geom_offsets[1:] - 1]

    @cached_property
    def forward_csr(self) -> tuple[IntArray, IntArray, FloatArray]:
        """Adjacency u->v as CSR (indptr, indices, travel_time_s).

        Of parallel edges, the fastest is kept.
        """
        return _min_weight_csr(
            self.edge_u, self.edge_v, self.edge_travel_time_s, self.num_nodes
        )

    @cached_property
    def reverse_csr(self) -> tuple[IntArray, IntArray, FloatArray]:
        """Adjacency v->u of the reversed graph as CSR, fastest of parallel edges."""
        return _min_weight_csr(
            self.edge_v, self.edge_u, self.edge_travel_time_s, self.num_nodes
        )

    @cached_property
    def segment_index(self) -> SegmentIndex:
        """Spatial index of street segments for snapping, built on first use."""
        from eta.segments import SegmentIndex

        return SegmentIndex(self)

    def save(self, path: Path) -> None:
        """Write the graph to an uncompressed ``.npz`` file (no pickled objects)."""
        meta = {
            "format_version": GRAPH_FORMAT_VERSION,
            "highway_names": list(self.highway_names),
            "crs_epsg": self.crs_epsg,
            "source_hash": self.source_hash,
            "country": self.country,
            "report": self.report,
        }
        arrays = {name: getattr(self, name) for name in _ARRAY_FIELDS}
        with path.open("wb") as file:
            np.savez(file, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Path) -> RoadGraph:
        """Read a graph written by `save`.

        Raises
        ------
        ValueError
            If the file was written with another array layout version.
        """
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format_version") != GRAPH_FORMAT_VERSION:
                raise ValueError(
                    f"{path} has graph format version {meta.get('format_version')}, "
                    f"expected {GRAPH_FORMAT_VERSION}"
                )
            arrays = {name: data[name] for name in _ARRAY_FIELDS}
        return cls(
            **arrays,
            highway_names=tuple(meta["highway_names"]),
            crs_epsg=int(meta["crs_epsg"]),
            source_hash=str(meta["source_hash"]),
            country=meta["country"],
            report=meta["report"],
            cache_path=path,
        )


def compile_graph(
    G: nx.MultiDiGraph,
    *,
    source_hash: str = "memory",
    country: str | None = None,
    report: dict[str, Any] | None = None,
) -> RoadGraph:
    """Compile an osmnx-style MultiDiGraph into a `RoadGraph`.

    Parameters
    ----------
    G
        Graph in osmnx's format and CRS EPSG:4326. Nodes need ``x`` (lon)
        and ``y`` (lat). Edges need ``length`` (m) and ``travel_time`` (s),
        and may have ``geometry`` (a shapely LineString in lon/lat),
        ``highway`` and ``osmid``. Edges without geometry are straight.
    source_hash
        Content hash of the data the graph came from.
    country
        ISO 3166-1 alpha-2 code the speeds were chosen for, or None.
    report
        Build facts to keep with the graph (counts of dropped parts, tags).

    Raises
    ------
    GraphSourceError
        If the graph is empty or an edge lacks a finite, non-negative
        ``length`` or ``travel_time``.
    """
    if G.number_of_edges() == 0:
        raise GraphSourceError(source_hash, "the road graph has no edges")

    # nodes sorted by OSM id, so node_index is a binary search
    osmids = np.array(sorted(G.nodes), dtype=np.int64)
    index_of = {int(osmid): i for i, osmid in enumerate(osmids)}
    node_lat = np.array([G.nodes[n]["y"] for n in osmids], dtype=np.float64)
    node_lon = np.array([G.nodes[n]["x"] for n in osmids], dtype=np.float64)

    # edges sorted by (u, v, key), so each node's out-edges are contiguous
    edges = sorted(
        (
            (index_of[int(u)], index_of[int(v)], k, d)
            for u, v, k, d in G.edges(keys=True, data=True)
        ),
        key=lambda item: (item[0], item[1], str(item[2])),
    )
    columns = _edge_columns(edges, node_lat, node_lon, source_hash)
    num_nodes = len(osmids)
    edge_u, edge_v = columns["edge_u"], columns["edge_v"]

    # projected coordinates in the UTM zone of the graph's centre
    south, north = float(columns["geom_lat"].min()), float(columns["geom_lat"].max())
    west, east = float(columns["geom_lon"].min()), float(columns["geom_lon"].max())
    epsg = utm_epsg((south + north) / 2, (west + east) / 2)
    import pyproj

    transformer = pyproj.Transformer.from_crs(4326, epsg, always_xy=True)
    node_x, node_y = transformer.transform(node_lon, node_lat)
    geom_x, geom_y = transformer.transform(columns["geom_lon"], columns["geom_lat"])

    graph = RoadGraph(
        node_osmid=osmids,
        node_lat=node_lat,
        node_lon=node_lon,
        node_x=np.asarray(node_x, dtype=np.float64),
        node_y=np.asarray(node_y, dtype=np.float64),
        edge_u=edge_u,
        edge_v=edge_v,
        edge_length_m=columns["edge_length_m"],
        edge_travel_time_s=columns["edge_travel_time_s"],
        edge_speed_kph=columns["edge_speed_kph"],
        edge_highway=columns["edge_highway"],
        edge_osmid=columns["edge_osmid"],
        edge_reverse=_find_reverse_edges(edge_u, edge_v, columns),
        out_offsets=_offsets(edge_u, num_nodes),
        in_offsets=_offsets(np.sort(edge_v), num_nodes),
        in_edges=np.argsort(edge_v, kind="stable").astype(np.int64),
        geom_offsets=columns["geom_offsets"],
        geom_lat=columns["geom_lat"],
        geom_lon=columns["geom_lon"],
        geom_x=np.asarray(geom_x, dtype=np.float64),
        geom_y=np.asarray(geom_y, dtype=np.float64),
        highway_names=columns["highway_names"],
        crs_epsg=epsg,
        source_hash=source_hash,
        country=country,
        report=dict(report or {}),
    )
    logger.info(
        "Compiled road graph: %d nodes, %d edges, %d geometry points, UTM EPSG:%d",
        graph.num_nodes,
        graph.num_edges,
        len(graph.geom_lat),
        epsg,
    )
    return graph


def _min_weight_csr(
    rows: IntArray, cols: IntArray, weights: FloatArray, size: int
) -> tuple[IntArray, IntArray, FloatArray]:
    # keep one entry per (row, col): the smallest weight, as networkx does
    # for parallel edges of a MultiDiGraph
    order = np.lexsort((weights, cols, rows))
    rows, cols, weights = rows[order], cols[order], weights[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    rows, cols, weights = rows[first], cols[first], weights[first]
    return _offsets(rows, size), cols.astype(np.int32), weights.astype(np.float64)


def _offsets(sorted_keys: IntArray, size: int) -> IntArray:
    return np.searchsorted(sorted_keys, np.arange(size + 1)).astype(np.int64)


def _edge_columns(
    edges: list[tuple[int, int, Any, dict[str, Any]]],
    node_lat: FloatArray,
    node_lon: FloatArray,
    source_hash: str,
) -> dict[str, Any]:
    highway_names: list[str] = [*HIGHWAY_SPEEDS_KPH, "road"]
    highway_rank = {name: i for i, name in enumerate(highway_names)}
    lengths, times, speeds, classes, osmids = [], [], [], [], []
    geom_lat: list[float] = []
    geom_lon: list[float] = []
    offsets = [0]
    for u, v, _key, data in edges:
        length_m = float(data.get("length", np.nan))
        time_s = float(data.get("travel_time", np.nan))
        if not (
            np.isfinite(length_m)
            and np.isfinite(time_s)
            and length_m >= 0
            and time_s >= 0
        ):
            raise GraphSourceError(
                source_hash,
                f"edge {u}->{v} needs finite, non-negative length and travel_time, "
                f"got length={length_m!r} travel_time={time_s!r}",
            )
        lengths.append(length_m)
        times.append(time_s)
        speeds.append(3.6 * length_m / time_s if time_s > 0 else 0.0)
        classes.append(_highway_code(data.get("highway"), highway_names, highway_rank))
        osmid = data.get("osmid", -1)
        osmids.append(int(osmid[0] if isinstance(osmid, list) else osmid))

        geometry = data.get("geometry")
        if geometry is not None:
            coords = np.asarray(geometry.coords, dtype=np.float64)
            lons, lats = coords[:, 0], coords[:, 1]
        else:
            lons = np.array([node_lon[u], node_lon[v]])
            lats = np.array([node_lat[u], node_lat[v]])
        geom_lat.extend(lats.tolist())
        geom_lon.extend(lons.tolist())
        offsets.append(len(geom_lat))

    return {
        "edge_u": np.array([e[0] for e in edges], dtype=np.int64),
        "edge_v": np.array([e[1] for e in edges], dtype=np.int64),
        "edge_length_m": np.array(lengths, dtype=np.float64),
        "edge_travel_time_s": np.array(times, dtype=np.float64),
        "edge_speed_kph": np.array(speeds, dtype=np.float64),
        "edge_highway": np.array(classes, dtype=np.int16),
        "edge_osmid": np.array(osmids, dtype=np.int64),
        "geom_offsets": np.array(offsets, dtype=np.int64),
        "geom_lat": np.array(geom_lat, dtype=np.float64),
        "geom_lon": np.array(geom_lon, dtype=np.float64),
        "highway_names": tuple(highway_names),
    }


def _highway_code(value: Any, names: list[str], rank: dict[str, int]) -> int:
    # a simplified edge spanning several types takes the most important one
    values = value if isinstance(value, list) else [value]
    codes = []
    for item in values:
        name = str(item) if item is not None else "road"
        if name not in rank:
            rank[name] = len(names)
            names.append(name)
        codes.append(rank[name])
    return min(codes)


def _find_reverse_edges(
    edge_u: IntArray, edge_v: IntArray, columns: dict[str, Any]
) -> IntArray:
    # pair each edge u->v with an unpaired edge v->u whose geometry is its
    # own geometry reversed: the other direction of the same two-way street
    offsets = columns["geom_offsets"]
    lat, lon = columns["geom_lat"], columns["geom_lon"]
    reverse = np.full(len(edge_u), -1, dtype=np.int64)
    by_pair: dict[tuple[int, int], list[int]] = {}
    for edge, (u, v) in enumerate(zip(edge_u.tolist(), edge_v.tolist(), strict=True)):
        by_pair.setdefault((u, v), []).append(edge)
    for edge, (u, v) in enumerate(zip(edge_u.tolist(), edge_v.tolist(), strict=True)):
        if reverse[edge] >= 0:
            continue
        a, b = offsets[edge], offsets[edge + 1]
        for other in by_pair.get((v, u), []):
            if other == edge or reverse[other] >= 0:
                continue
            c, d = offsets[other], offsets[other + 1]
            if (
                b - a == d - c
                and np.array_equal(lat[a:b], lat[c:d][::-1])
                and np.array_equal(lon[a:b], lon[c:d][::-1])
            ):
                reverse[edge] = other
                reverse[other] = edge
                break
    return reverse
