"""Exact fastest-route travel times to a destination, and paths for simulation.

For each destination (a job site), `build_tree` runs one reverse
one-to-all Dijkstra search (scipy.sparse.csgraph) on the reversed graph.
The destination usually lies partway along an edge. The search therefore
starts from a virtual node, joined to the start of each edge the site
snapped to (both directions of a two-way street). Each join weighs the
travel time of the part of that edge up to the site. The result is every node's travel time to the
site; a ping's ETA is then the remaining part of its own edge plus a
lookup, or the direct time along the edge when the ping is on the site's
edge ahead of it.

Travel times equal those of an exact shortest-path search on the same
edge weights (``travel_time`` of the osmnx graph, fastest of parallel
edges), up to floating-point rounding.
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from eta.errors import UnreachableError
from eta.geo import FloatArray, IntArray, check_latlon
from eta.graph import RoadGraph
from eta.snap import (
    DEFAULT_MAX_DISTANCE_M,
    Snap,
    SnapArrays,
    off_network_error,
    snap_point,
    snap_points,
)

logger = logging.getLogger(__name__)


class DestinationTree:
    """Travel times from every node of a graph to one destination point.

    Build it with `build_tree`. Coordinates are (lat, lon) in degrees.

    Attributes
    ----------
    graph
        The road graph.
    dest_lat, dest_lon
        The destination as requested.
    dest_snap
        The destination snapped onto the road.
    node_eta_s
        Fastest travel time in seconds from each node to the destination;
        ``inf`` for nodes with no path (internal: scalar methods never
        return it).
    """

    def __init__(
        self,
        graph: RoadGraph,
        dest_lat: float,
        dest_lon: float,
        dest_snap: Snap,
        node_eta_s: FloatArray,
    ) -> None:
        self.graph = graph
        self.dest_lat = dest_lat
        self.dest_lon = dest_lon
        self.dest_snap = dest_snap
        self.node_eta_s = node_eta_s

        # (edge, fraction) pairs the destination lies on: one per direction
        self.dest_positions: list[tuple[int, float]] = [
            (dest_snap.edge, dest_snap.fraction)
        ]
        if dest_snap.reverse_edge >= 0:
            self.dest_positions.append(
                (dest_snap.reverse_edge, 1.0 - dest_snap.fraction)
            )

    def eta_s(
        self,
        lat: float,
        lon: float,
        *,
        heading_deg: float | None = None,
        speed_mps: float | None = None,
        max_distance_m: float = DEFAULT_MAX_DISTANCE_M,
    ) -> float | None:
        """Compute the fastest travel time in seconds from a ping to the destination.

        Parameters
        ----------
        lat, lon
            The ping in degrees, in this order.
        heading_deg, speed_mps
            Optional heading and speed; see `eta.snap.snap_point`.
        max_distance_m
            Snapping distance; farther pings are off the network.

        Returns
        -------
        float or None
            None, with a WARNING log, when the ping is off the network or no
            route leads from it to the destination. Never NaN or infinite.

        Examples
        --------
        >>> from eta.build import road_graph_from_tables
        >>> graph = road_graph_from_tables(
        ...     [{"id": 1, "lat": 60.17, "lon": 24.93}, {"id": 2, "lat": 60.17, "lon": 24.95}],
        ...     [{"u": 1, "v": 2, "length_m": 1000.0, "maxspeed": "50"}],
        ... )
        >>> tree = build_tree(graph, 60.17, 24.95)
        >>> round(tree.eta_s(60.17, 24.93), 6)
        72.0
        """
        snap = snap_point(
            self.graph, lat, lon, heading_deg=heading_deg, speed_mps=speed_mps,
            max_distance_m=max_distance_m,
        )  # fmt: skip
        if snap is None:
            return None
        eta = self.eta_for_snap(snap)
        if not math.isfinite(eta):
            logger.warning(
                "No route from (lat=%.6f, lon=%.6f) to the destination (lat=%.6f, lon=%.6f)",
                lat, lon, self.dest_lat, self.dest_lon,
            )  # fmt: skip
            return None
        return eta

    def eta_many(
        self,
        lats: npt.ArrayLike,
        lons: npt.ArrayLike,
        *,
        headings_deg: npt.ArrayLike | None = None,
        speeds_mps: npt.ArrayLike | None = None,
        max_distance_m: float = DEFAULT_MAX_DISTANCE_M,
    ) -> FloatArray:
        """Compute travel times in seconds from many pings to the destination.

        Takes (lat, lon) arrays like `eta.snap.snap_points`. Entries are NaN
        for pings off the network or with no route; one WARNING summarises
        them. Each finite entry equals `eta_s` for the same ping.
        """
        snaps = snap_points(
            self.graph, lats, lons, headings_deg=headings_deg, speeds_mps=speeds_mps,
            max_distance_m=max_distance_m,
        )  # fmt: skip
        return self.eta_for_snaps(snaps)

    def eta_for_snaps(self, snaps: SnapArrays) -> FloatArray:
        """Compute travel times in seconds for pings already snapped with `snap_points`.

        Snapping once and querying several trees (a contractor with several
        jobs) saves the snapping cost. NaN marks off-network or unreachable.
        """
        on = ~snaps.off_network
        result = np.full(len(snaps), np.nan)
        eta = self._eta_for(snaps.edge[on], snaps.fraction[on], snaps.reverse_edge[on])
        unreachable = ~np.isfinite(eta)
        if unreachable.any():
            logger.warning(
                "%d of %d snapped pings have no route to the destination "
                "(lat=%.6f, lon=%.6f)",
                int(unreachable.sum()), len(eta), self.dest_lat, self.dest_lon,
            )  # fmt: skip
        result[on] = np.where(unreachable, np.nan, eta)
        return result

    def eta_for_snap(self, snap: Snap) -> float:
        """Compute the travel time in seconds for one snapped ping, ``inf`` if unreachable.

        The scalar form of `eta_for_snaps`, with the same arithmetic.
        """
        eta = self._eta_on_edge_one(snap.edge, snap.fraction)
        if snap.reverse_edge >= 0:
            eta = min(
                eta, self._eta_on_edge_one(snap.reverse_edge, 1.0 - snap.fraction)
            )
        return eta

    def _eta_on_edge_one(self, edge: int, fraction: float) -> float:
        graph = self.graph
        time_s = float(graph.edge_travel_time_s[edge])
        if fraction == 0.0:
            eta = float(self.node_eta_s[graph.edge_u[edge]])
        else:
            eta = (1.0 - fraction) * time_s + float(self.node_eta_s[graph.edge_v[edge]])
        for dest_edge, dest_fraction in self.dest_positions:
            if edge == dest_edge and fraction <= dest_fraction:
                eta = min(eta, (dest_fraction - fraction) * time_s)
        return eta

    def _eta_for(
        self, edge: IntArray, fraction: FloatArray, reverse: IntArray
    ) -> FloatArray:
        eta = self._eta_on_edge(edge, fraction)
        has_reverse = reverse >= 0
        if has_reverse.any():
            other = self._eta_on_edge(np.where(has_reverse, reverse, 0), 1.0 - fraction)
            eta = np.where(has_reverse, np.minimum(eta, other), eta)
        return eta

    def _eta_on_edge(self, edge: IntArray, fraction: FloatArray) -> FloatArray:
        graph = self.graph
        time_s = graph.edge_travel_time_s[edge]

        # drive to the end of the edge, then the fastest way on
        eta = (1.0 - fraction) * time_s + self.node_eta_s[graph.edge_v[edge]]

        # exactly at the start node, any edge leaving it may be taken
        eta = np.where(fraction == 0.0, self.node_eta_s[graph.edge_u[edge]], eta)

        # on the destination's edge, before the destination: drive straight there
        for dest_edge, dest_fraction in self.dest_positions:
            ahead = (edge == dest_edge) & (fraction <= dest_fraction)
            eta = np.where(
                ahead, np.minimum(eta, (dest_fraction - fraction) * time_s), eta
            )
        return np.asarray(eta)

    def route(
        self,
        lat: float,
        lon: float,
        *,
        heading_deg: float | None = None,
        speed_mps: float | None = None,
        max_distance_m: float = DEFAULT_MAX_DISTANCE_M,
    ) -> list[tuple[float, float]] | None:
        """Find the fastest route from a ping to the destination as (lat, lon) points.

        The polyline starts at the ping's snapped point, follows each edge's
        geometry, and ends at the destination's snapped point. Its travel
        time is `eta_s` for the same ping.

        Returns
        -------
        list of (lat, lon) or None
            None, with a WARNING log, when the ping is off the network or no
            route leads to the destination.
        """
        snap = snap_point(
            self.graph, lat, lon, heading_deg=heading_deg, speed_mps=speed_mps,
            max_distance_m=max_distance_m,
        )  # fmt: skip
        if snap is None:
            return None
        return self.route_for_snap(snap)

    def route_for_snap(self, snap: Snap) -> list[tuple[float, float]] | None:
        """Find the fastest route from a ping already snapped; see `route`."""
        start = self._best_start(snap)
        if start is None:
            logger.warning(
                "No route from (lat=%.6f, lon=%.6f) to the destination (lat=%.6f, lon=%.6f)",
                snap.lat, snap.lon, self.dest_lat, self.dest_lon,
            )  # fmt: skip
            return None
        kind, edge, fraction, end_fraction = start
        if kind == "along":
            return edge_part(self.graph, edge, fraction, end_fraction)
        points = (
            edge_part(self.graph, edge, fraction, 1.0)
            if kind == "edge"
            else [(snap.lat, snap.lon)]
        )
        node = (
            int(self.graph.edge_v[edge])
            if kind == "edge"
            else int(self.graph.edge_u[edge])
        )
        return _join(points, self._route_from_node(node))

    def _best_start(self, snap: Snap) -> tuple[str, int, float, float] | None:
        # the candidates of _eta_on_edge, with what each one means for the path
        graph = self.graph
        options = [(snap.edge, snap.fraction)]
        if snap.reverse_edge >= 0:
            options.append((snap.reverse_edge, 1.0 - snap.fraction))
        candidates: list[tuple[float, str, int, float, float]] = []
        for edge, fraction in options:
            time_s = float(graph.edge_travel_time_s[edge])
            for dest_edge, dest_fraction in self.dest_positions:
                if edge == dest_edge and fraction <= dest_fraction:
                    candidates.append(
                        (
                            (dest_fraction - fraction) * time_s,
                            "along",
                            edge,
                            fraction,
                            dest_fraction,
                        )
                    )
            if fraction == 0.0:
                candidates.append(
                    (float(self.node_eta_s[graph.edge_u[edge]]), "node", edge, 0.0, 0.0)
                )
            else:
                remaining = (1.0 - fraction) * time_s + float(
                    self.node_eta_s[graph.edge_v[edge]]
                )
                candidates.append((remaining, "edge", edge, fraction, 1.0))
        best = min(candidates, key=lambda item: item[0])
        if not math.isfinite(best[0]):
            return None
        return best[1], best[2], best[3], best[4]

    def _route_from_node(self, node: int) -> list[tuple[float, float]]:
        # walk the search tree: at each node take the step whose time plus
        # the next node's time is smallest, which is the node's own time
        graph = self.graph
        points: list[tuple[float, float]] = []
        visited = {node}
        for _ in range(graph.num_nodes + 1):
            finish = self._finish_at(node)
            edges = graph.out_edge_indices(node)
            edges = np.array(
                [e for e in edges if int(graph.edge_v[e]) not in visited],
                dtype=np.int64,
            )
            via = (
                graph.edge_travel_time_s[edges] + self.node_eta_s[graph.edge_v[edges]]
                if len(edges)
                else np.array([])
            )
            if finish is not None and (len(via) == 0 or finish[0] <= via.min()):
                node_point = [
                    (float(graph.node_lat[node]), float(graph.node_lon[node]))
                ]
                _extend(points, node_point)
                _extend(points, finish[1])
                return points
            if len(via) == 0:
                break
            edge = int(edges[int(np.argmin(via))])
            _extend(points, self._edge_points(edge))
            node = int(graph.edge_v[edge])
            visited.add(node)
        raise RuntimeError(
            "route walk did not reach the destination; the search tree is inconsistent"
        )

    def _finish_at(self, node: int) -> tuple[float, list[tuple[float, float]]] | None:
        # fastest way from `node` to the destination without leaving its edge
        best: tuple[float, list[tuple[float, float]]] | None = None
        for dest_edge, dest_fraction in self.dest_positions:
            if dest_fraction >= 1.0 and int(self.graph.edge_v[dest_edge]) == node:
                return 0.0, []
            if int(self.graph.edge_u[dest_edge]) != node:
                continue
            time_s = dest_fraction * float(self.graph.edge_travel_time_s[dest_edge])
            if best is None or time_s < best[0]:
                best = (time_s, edge_part(self.graph, dest_edge, 0.0, dest_fraction))
        return best

    def _edge_points(self, edge: int) -> list[tuple[float, float]]:
        graph = self.graph
        start, stop = int(graph.geom_offsets[edge]), int(graph.geom_offsets[edge + 1])
        return list(zip(graph.geom_lat[start:stop].tolist(), graph.geom_lon[start:stop].tolist()))


def build_tree(
    graph: RoadGraph,
    dest_lat: float,
    dest_lon: float,
    *,
    max_distance_m: float = DEFAULT_MAX_DISTANCE_M,
) -> DestinationTree:
    """Compute travel times from every node to one destination.

    Parameters
    ----------
    graph
        The road graph.
    dest_lat, dest_lon
        The destination (job site) in degrees, in this order.
    max_distance_m
        The destination must lie within this distance of a road.

    Returns
    -------
    DestinationTree
        Computes ETAs and routes from pings to the destination.

    Raises
    ------
    InvalidCoordinateError
        If dest_lat/dest_lon are not finite or out of range.
    OffNetworkError
        If the destination is farther than ``max_distance_m`` from every
        road; the message suggests a lat/lon swap when that is plausible.

    Notes
    -----
    One Dijkstra search over the reversed graph: O((V + E) log V).
    """
    check_latlon(dest_lat, dest_lon, lat_name="dest_lat", lon_name="dest_lon")
    snaps = snap_points(
        graph, [dest_lat], [dest_lon], max_distance_m=max_distance_m, warn=False
    )
    dest_snap = snaps.row(0)
    if dest_snap is None:
        raise off_network_error(
            graph, dest_lat, dest_lon, float(snaps.distance_m[0]), max_distance_m
        )

    # virtual node N: reversed edges N -> start of each destination edge
    virtual: dict[int, float] = {}
    positions = [(dest_snap.edge, dest_snap.fraction)]
    if dest_snap.reverse_edge >= 0:
        positions.append((dest_snap.reverse_edge, 1.0 - dest_snap.fraction))
    for edge, fraction in positions:
        _add_virtual(
            virtual,
            int(graph.edge_u[edge]),
            fraction * float(graph.edge_travel_time_s[edge]),
        )
        if fraction >= 1.0:
            _add_virtual(virtual, int(graph.edge_v[edge]), 0.0)

    n = graph.num_nodes
    indptr, indices, data = graph.reverse_csr
    targets = np.array(sorted(virtual), dtype=np.int32)
    matrix = sp.csr_array(
        (
            np.concatenate((data, [virtual[int(t)] for t in targets])),
            np.concatenate((indices, targets)),
            np.concatenate((indptr, [indptr[-1] + len(targets)])),
        ),
        shape=(n + 1, n + 1),
    )
    times = dijkstra(matrix, directed=True, indices=n)
    return DestinationTree(graph, dest_lat, dest_lon, dest_snap, np.asarray(times[:n]))


def _add_virtual(virtual: dict[int, float], node: int, time_s: float) -> None:
    virtual[node] = min(time_s, virtual.get(node, math.inf))


def edge_part(
    graph: RoadGraph, edge: int, start_fraction: float, end_fraction: float
) -> list[tuple[float, float]]:
    """Return the (lat, lon) polyline of an edge between two fractions of its length.

    Fractions are measured along the edge's geometry from its start node;
    ``start_fraction`` must not exceed ``end_fraction``.

    Examples
    --------
    >>> from eta.build import road_graph_from_tables
    >>> graph = road_graph_from_tables(
    ...     [{"id": 1, "lat": 60.0, "lon": 24.0}, {"id": 2, "lat": 60.0, "lon": 24.02}],
    ...     [{"u": 1, "v": 2, "length_m": 1111.0}],
    ... )
    >>> [(round(a, 4), round(b, 4)) for a, b in edge_part(graph, 0, 0.25, 0.5)]
    [(60.0, 24.005), (60.0, 24.01)]
    """
    start, stop = int(graph.geom_offsets[edge]), int(graph.geom_offsets[edge + 1])
    cumulative = graph.geom_cum_m[start:stop]
    total = cumulative[-1]
    lat, lon = graph.geom_lat[start:stop], graph.geom_lon[start:stop]
    if total <= 0:
        return [(float(lat[0]), float(lon[0]))]
    a, b = start_fraction * total, end_fraction * total
    inner = np.flatnonzero((cumulative > a) & (cumulative < b))
    points = [_interpolate(cumulative, lat, lon, a)]
    points.extend((float(lat[i]), float(lon[i])) for i in inner)
    points.append(_interpolate(cumulative, lat, lon, b))
    return points


def point_on_edge(graph: RoadGraph, edge: int, fraction: float) -> tuple[float, float]:
    """Return the (lat, lon) point at a fraction 0..1 of an edge's geometry."""
    start, stop = int(graph.geom_offsets[edge]), int(graph.geom_offsets[edge + 1])
    cumulative = graph.geom_cum_m[start:stop]
    return _interpolate(
        cumulative,
        graph.geom_lat[start:stop],
        graph.geom_lon[start:stop],
        fraction * cumulative[-1],
    )


def _interpolate(
    cumulative: FloatArray, lat: FloatArray, lon: FloatArray, along_m: float
) -> tuple[float, float]:
    return float(np.interp(along_m, cumulative, lat)), float(
        np.interp(along_m, cumulative, lon)
    )


def _extend(points: list[tuple[float, float]], more: list[tuple[float, float]]) -> None:
    # _join in place, so a walk over many edges copies each point once
    points.extend(more[1:] if points and more and points[-1] == more[0] else more)


def _join(
    points: list[tuple[float, float]], more: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    # append a polyline, dropping its first point when it repeats our last
    if points and more and points[-1] == more[0]:
        return points + more[1:]
    return points + more


def shortest_path_nodes(
    graph: RoadGraph, origin_node: int, dest_node: int
) -> list[int]:
    """Find the node indices of a fastest path between two nodes.

    Parameters
    ----------
    graph
        The road graph.
    origin_node, dest_node
        Node indices (positions in ``graph.node_lat``), not OSM ids.

    Raises
    ------
    IndexError
        If a node index is out of range.
    UnreachableError
        If no path leads from ``origin_node`` to ``dest_node``.
    """
    for name, node in (("origin_node", origin_node), ("dest_node", dest_node)):
        if not 0 <= node < graph.num_nodes:
            raise IndexError(
                f"{name} must be within 0..{graph.num_nodes - 1}, got {node}"
            )
    indptr, indices, data = graph.forward_csr
    matrix = sp.csr_array(
        (data, indices, indptr), shape=(graph.num_nodes, graph.num_nodes)
    )
    times, predecessors = dijkstra(
        matrix, directed=True, indices=origin_node, return_predecessors=True
    )
    if not math.isfinite(times[dest_node]):
        raise UnreachableError(origin_node, dest_node)
    path = [dest_node]
    while path[-1] != origin_node:
        path.append(int(predecessors[path[-1]]))
    return path[::-1]


def path_edges(graph: RoadGraph, origin_node: int, dest_node: int) -> list[int]:
    """Find the edge indices of a fastest path between two nodes, in driving order.

    Between two consecutive nodes the fastest parallel edge is taken. Use
    ``graph.edge_polyline``, ``graph.edge_travel_time_s`` and
    ``graph.edge_length_m`` to drive along them.

    Raises
    ------
    UnreachableError
        If no path leads from ``origin_node`` to ``dest_node``.
    """
    nodes = shortest_path_nodes(graph, origin_node, dest_node)
    edges = []
    for u, v in itertools.pairwise(nodes):
        candidates = graph.out_edge_indices(u)
        candidates = candidates[graph.edge_v[candidates] == v]
        edges.append(int(candidates[np.argmin(graph.edge_travel_time_s[candidates])]))
    return edges


def random_points_on_graph(
    graph: RoadGraph, n: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Draw ``n`` random (lat, lon) points on the streets, uniform by length.

    Returns
    -------
    lats, lons
        Arrays of length ``n``, in degrees.
    """
    streets = graph.street_edges
    weights = graph.edge_geom_length_m[streets]
    edges = rng.choice(streets, size=n, p=weights / weights.sum())
    fractions = rng.uniform(0.0, 1.0, size=n)
    points = [
        point_on_edge(graph, int(e), float(f))
        for e, f in zip(edges, fractions, strict=True)
    ]
    lats = np.array([p[0] for p in points], dtype=np.float64)
    lons = np.array([p[1] for p in points], dtype=np.float64)
    return lats, lons
