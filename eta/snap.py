"""Snap GPS pings to the nearest drivable road segment.

A ping snaps to the nearest point on the nearest edge segment (not to the
nearest node), found with a shapely STRtree over the street segments in
projected metres. The result names the directed edge, the position along it
as a fraction and as metres from its start, and the distance from the ping.

A two-way street is two directed edges on one geometry. Without a usable
heading both directions stay possible: `Snap.edge` is one of them and
`Snap.reverse_edge` the other, and routing takes the faster. With a heading
from a moving device (speed of at least 0.5 m/s), the direction that fits
the heading is chosen. A stationary device's heading is ignored, because
receivers report a heading of 0 while standing still.

Every public function takes coordinates in the order (lat, lon), in degrees.
A ping farther than ``max_distance_m`` from every road is off the network:
`snap_point` returns None and logs a WARNING. A ping thousands of kilometres
outside the graph's area gets a message that suggests a lat/lon swap.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import shapely

from eta.errors import OffNetworkError
from eta.geo import (
    FloatArray,
    IntArray,
    angle_difference_deg,
    bearing_deg,
    check_latlon,
    check_latlon_arrays,
    haversine_m,
)
from eta.segments import SegmentIndex

if TYPE_CHECKING:
    from eta.graph import RoadGraph

logger = logging.getLogger(__name__)

DEFAULT_MAX_DISTANCE_M = 200.0

# Below this speed a device's heading is noise (often a constant 0).
MIN_HEADING_SPEED_MPS = 0.5

# With a usable heading, segments up to this much farther than the nearest
# one are considered, so a divided road's carriageway that fits the heading
# can win over the nearer one that does not.
HEADING_SEARCH_SLACK_M = 20.0

# Extra cost, in metres of snapping distance, of driving against the
# heading; scaled linearly by the angle (half of it at 90 degrees).
HEADING_PENALTY_M = 40.0

# Positions this close to an edge's end are put exactly on the end node.
NODE_TOLERANCE_M = 0.01

# A point farther than this outside the graph's bounding box gets a hint
# that lat and lon may be swapped, even if swapping does not land inside.
SWAP_HINT_DISTANCE_M = 100_000.0

METRES_PER_DEGREE_LAT = 111_320.0


@dataclass(frozen=True)
class Snap:
    """A ping snapped onto a directed edge.

    Attributes
    ----------
    lat, lon
        The snapped point on the road, in degrees.
    distance_m
        Distance from the ping to the snapped point.
    edge
        Index of the directed edge.
    reverse_edge
        Index of the opposite-direction edge on the same geometry that the
        vehicle may also take, or -1 (one-way street, or heading chose).
    fraction
        Position along ``edge`` from its start, 0..1.
    offset_m
        Position along ``edge`` from its start, in metres of the edge's
        ``length_m``.
    """

    lat: float
    lon: float
    distance_m: float
    edge: int
    reverse_edge: int
    fraction: float
    offset_m: float


@dataclass(frozen=True)
class SnapArrays:
    """Snaps of a batch of pings, one row per ping.

    Off-network rows have ``edge == -1`` and NaN in the float fields, except
    ``distance_m``, which contains the distance to the graph's bounding box for
    pings outside it (NaN otherwise).
    """

    lat: FloatArray
    lon: FloatArray
    distance_m: FloatArray
    edge: IntArray
    reverse_edge: IntArray
    fraction: FloatArray
    offset_m: FloatArray
    possible_swap: npt.NDArray[np.bool_]

    @property
    def off_network(self) -> npt.NDArray[np.bool_]:
        """True for pings that did not snap."""
        return np.asarray(self.edge < 0)

    def __len__(self) -> int:
        return int(self.edge.shape[0])

    def rows(self) -> list[Snap | None]:
        """Return every row as by `row`, converting each column once."""
        columns = zip(
            self.lat.tolist(), self.lon.tolist(), self.distance_m.tolist(), self.edge.tolist(),
            self.reverse_edge.tolist(), self.fraction.tolist(), self.offset_m.tolist(),
        )  # fmt: skip
        return [
            Snap(lat, lon, distance_m, edge, reverse_edge, fraction, offset_m) if edge >= 0 else None
            for lat, lon, distance_m, edge, reverse_edge, fraction, offset_m in columns
        ]

    def row(self, index: int) -> Snap | None:
        """Return one row as a `Snap`, or None when that ping is off the network."""
        if self.edge[index] < 0:
            return None
        return Snap(
            lat=float(self.lat[index]),
            lon=float(self.lon[index]),
            distance_m=float(self.distance_m[index]),
            edge=int(self.edge[index]),
            reverse_edge=int(self.reverse_edge[index]),
            fraction=float(self.fraction[index]),
            offset_m=float(self.offset_m[index]),
        )


def usable_heading_deg(
    heading_deg: float | None, speed_mps: float | None
) -> float | None:
    """Return the heading if the device moves fast enough for it to mean anything.

    Receivers often report a heading of 0 while standing still, so the
    heading is dropped (None) when the speed is unknown or below 0.5 m/s.

    Examples
    --------
    >>> usable_heading_deg(0.0, 0.0) is None
    True
    >>> usable_heading_deg(91.0, 4.2)
    91.0
    """
    if heading_deg is None or speed_mps is None:
        return None
    if not (math.isfinite(heading_deg) and math.isfinite(speed_mps)):
        return None
    if speed_mps < MIN_HEADING_SPEED_MPS:
        return None
    return float(heading_deg) % 360.0


def snap_point(
    graph: RoadGraph,
    lat: float,
    lon: float,
    *,
    heading_deg: float | None = None,
    speed_mps: float | None = None,
    max_distance_m: float = DEFAULT_MAX_DISTANCE_M,
    warn: bool = True,
) -> Snap | None:
    """Snap one ping to the nearest drivable edge.

    Parameters
    ----------
    graph
        The road graph.
    lat, lon
        The ping in degrees, in this order.
    heading_deg
        Compass heading (0 = north, clockwise), used only when
        ``speed_mps`` is at least 0.5.
    speed_mps
        Device speed in m/s.
    max_distance_m
        Pings farther than this from every road are off the network.
    warn
        Log a WARNING when the ping is off the network.

    Returns
    -------
    Snap or None
        None when the ping is off the network.

    Raises
    ------
    InvalidCoordinateError
        If lat/lon are not finite or out of range.
    """
    check_latlon(lat, lon)
    _check_max_distance(max_distance_m)
    heading = usable_heading_deg(heading_deg, speed_mps)

    # a ping outside the graph's box plus the snapping distance cannot snap
    box_distance_m = _box_distance_m(graph, lat, lon, max_distance_m)
    if box_distance_m is not None:
        if warn:
            logger.warning(
                "%s",
                off_network_message(graph, lat, lon, box_distance_m, max_distance_m),
            )
        return None

    x, y = graph.transformer.transform(lon, lat)
    index: SegmentIndex = graph.segment_index
    nearest = index.nearest_one(x, y, max_distance_m)
    if nearest is None:
        if warn:
            logger.warning(
                "%s", off_network_message(graph, lat, lon, math.nan, max_distance_m)
            )
        return None

    segment, nearest_m = nearest
    forward = True
    if heading is not None:
        point = shapely.Point(x, y)
        segment, forward = _choose_one_by_heading(
            graph, index, point, x, y, heading, nearest_m
        )
    t, distance_m = index.project_one(segment, x, y)
    return _make_snap(
        graph, index, segment, t, distance_m, forward, fixed=heading is not None
    )


def _check_max_distance(max_distance_m: float) -> None:
    if not (
        isinstance(max_distance_m, (int, float))
        and math.isfinite(max_distance_m)
        and max_distance_m > 0
    ):
        raise ValueError(
            f"max_distance_m must be a positive number, got {max_distance_m!r}"
        )


def _box_distance_m(
    graph: RoadGraph, lat: float, lon: float, margin_m: float
) -> float | None:
    # distance to the graph's bounding box when the point lies beyond the
    # box plus the margin, else None
    south, west, north, east = graph.bounds
    margin_lat = margin_m / METRES_PER_DEGREE_LAT
    if south - margin_lat <= lat <= north + margin_lat and west - 1 <= lon <= east + 1:
        margin_lon = margin_m / (METRES_PER_DEGREE_LAT * _cos_max_lat(graph))
        if west - margin_lon <= lon <= east + margin_lon:
            return None
    outside, distance_m = _outside_bounds(
        graph, np.array([lat]), np.array([lon]), margin_m
    )
    return float(distance_m[0]) if outside[0] else None


def _cos_max_lat(graph: RoadGraph) -> float:
    south, _, north, _ = graph.bounds
    return max(math.cos(math.radians(max(abs(south), abs(north)))), 1e-6)


def _choose_one_by_heading(
    graph: RoadGraph,
    index: SegmentIndex,
    point: shapely.Point,
    x: float,
    y: float,
    heading: float,
    nearest_m: float,
) -> tuple[int, bool]:
    # scalar form of _choose_by_heading: lowest (cost, segment, forward first)
    candidates = index.tree.query(
        point, predicate="dwithin", distance=nearest_m + HEADING_SEARCH_SLACK_M
    )
    best: tuple[float, int, int] | None = None
    for seg in sorted(int(c) for c in candidates):
        _, distance = index.project_one(seg, x, y)
        bearing = float(bearing_deg(index.dx[seg], index.dy[seg]))
        options = [(0, bearing)]
        if graph.edge_reverse[index.edge[seg]] >= 0:
            options.append((1, bearing + 180.0))
        for order, direction in options:
            cost = (
                distance
                + HEADING_PENALTY_M
                * float(angle_difference_deg(direction, heading))
                / 180
            )
            if best is None or (cost, seg, order) < best:
                best = (cost, seg, order)
    assert best is not None
    return best[1], best[2] == 0


def _make_snap(
    graph: RoadGraph,
    index: SegmentIndex,
    segment: int,
    t: float,
    distance_m: float,
    forward: bool,
    *,
    fixed: bool,
) -> Snap:
    # scalar form of _fill
    edge = int(index.edge[segment])
    start = int(index.start[segment])
    along_m = float(graph.geom_cum_m[start]) + t * math.sqrt(
        float(index.length2[segment])
    )
    geom_length_m = float(graph.edge_geom_length_m[edge])
    fraction = min(max(along_m / geom_length_m, 0.0), 1.0) if geom_length_m > 0 else 0.0
    if along_m <= NODE_TOLERANCE_M:
        fraction = 0.0
    if geom_length_m - along_m <= NODE_TOLERANCE_M:
        fraction = 1.0
    reverse = int(graph.edge_reverse[edge])
    if not forward:
        edge, fraction, reverse = reverse, 1.0 - fraction, -1
    if fixed:
        reverse = -1
    lat0, lat1 = float(graph.geom_lat[start]), float(graph.geom_lat[start + 1])
    lon0, lon1 = float(graph.geom_lon[start]), float(graph.geom_lon[start + 1])
    return Snap(
        lat=lat0 + t * (lat1 - lat0),
        lon=lon0 + t * (lon1 - lon0),
        distance_m=distance_m,
        edge=edge,
        reverse_edge=reverse,
        fraction=fraction,
        offset_m=fraction * float(graph.edge_length_m[edge]),
    )


def snap_points(
    graph: RoadGraph,
    lats: npt.ArrayLike,
    lons: npt.ArrayLike,
    *,
    headings_deg: npt.ArrayLike | None = None,
    speeds_mps: npt.ArrayLike | None = None,
    max_distance_m: float = DEFAULT_MAX_DISTANCE_M,
    warn: bool = True,
) -> SnapArrays:
    """Snap a batch of pings to the nearest drivable edges.

    Parameters
    ----------
    graph
        The road graph.
    lats, lons
        Ping coordinates in degrees, in this order, as equal-length arrays.
    headings_deg, speeds_mps
        Optional per-ping heading and speed; NaN marks a missing value. A
        heading is used only where the speed is at least 0.5 m/s.
    max_distance_m
        Pings farther than this from every road are off the network.
    warn
        Log one WARNING summarising off-network pings.

    Returns
    -------
    SnapArrays
        One row per ping; off-network rows have ``edge == -1``.

    Raises
    ------
    InvalidCoordinateError
        If any lat/lon is not finite or out of range; the message names the
        first bad index.
    """
    _check_max_distance(max_distance_m)
    lat, lon = check_latlon_arrays(lats, lons)
    headings = _usable_headings(headings_deg, speeds_mps, len(lat))
    out = _empty(len(lat))

    # pings outside the graph's bounding box (plus the snapping distance)
    # cannot snap; their distance to the box is kept for the message
    outside, box_distance_m = _outside_bounds(graph, lat, lon, max_distance_m)
    out.distance_m[outside] = box_distance_m[outside]
    out.possible_swap[outside] = _swap_plausible(graph, lat[outside], lon[outside])
    rows = np.flatnonzero(~outside)
    if len(rows):
        x, y = graph.project(lat[rows], lon[rows])
        _snap_rows(graph, rows, x, y, headings[rows], max_distance_m, out)

    if warn and out.off_network.any():
        _warn_off_network(graph, lat, lon, out, max_distance_m)
    return out


def _usable_headings(
    headings_deg: npt.ArrayLike | None, speeds_mps: npt.ArrayLike | None, n: int
) -> FloatArray:
    if headings_deg is None or speeds_mps is None:
        return np.full(n, np.nan)
    heading = np.broadcast_to(np.asarray(headings_deg, dtype=np.float64), (n,))
    speed = np.broadcast_to(np.asarray(speeds_mps, dtype=np.float64), (n,))
    usable = (
        np.isfinite(heading) & np.isfinite(speed) & (speed >= MIN_HEADING_SPEED_MPS)
    )
    return np.where(usable, heading % 360.0, np.nan)


def _empty(n: int) -> SnapArrays:
    return SnapArrays(
        lat=np.full(n, np.nan),
        lon=np.full(n, np.nan),
        distance_m=np.full(n, np.nan),
        edge=np.full(n, -1, dtype=np.int64),
        reverse_edge=np.full(n, -1, dtype=np.int64),
        fraction=np.full(n, np.nan),
        offset_m=np.full(n, np.nan),
        possible_swap=np.zeros(n, dtype=bool),
    )


def _outside_bounds(
    graph: RoadGraph, lat: FloatArray, lon: FloatArray, margin_m: float
) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    south, west, north, east = graph.bounds
    margin_lat = margin_m / METRES_PER_DEGREE_LAT
    margin_lon = margin_m / (METRES_PER_DEGREE_LAT * _cos_max_lat(graph))
    outside = (
        (lat < south - margin_lat)
        | (lat > north + margin_lat)
        | (lon < west - margin_lon)
        | (lon > east + margin_lon)
    )
    distance_m = haversine_m(
        lat, lon, np.clip(lat, south, north), np.clip(lon, west, east)
    )
    return outside, distance_m


def _swap_plausible(
    graph: RoadGraph, lat: FloatArray, lon: FloatArray
) -> npt.NDArray[np.bool_]:
    # the point with lat and lon exchanged lies inside the graph's box
    south, west, north, east = graph.bounds
    return np.asarray((lon >= south) & (lon <= north) & (lat >= west) & (lat <= east))


def _snap_rows(
    graph: RoadGraph,
    rows: IntArray,
    x: FloatArray,
    y: FloatArray,
    headings: FloatArray,
    max_distance_m: float,
    out: SnapArrays,
) -> None:
    index: SegmentIndex = graph.segment_index

    # nearest segment of every ping within the snapping distance
    local, segment = index.nearest(x, y, max_distance_m)
    edge = index.edge[segment]
    reverse = graph.edge_reverse[edge]
    t, distance = index.project(segment, x[local], y[local])
    forward = np.ones(len(local), dtype=bool)

    # moving pings: re-choose among nearby segments and both directions
    moving = np.isfinite(headings[local])
    if moving.any():
        chosen = _choose_by_heading(
            graph, index, shapely.points(x, y), x, y, headings, local[moving], distance[moving]
        )
        segment[moving], forward[moving] = chosen
        edge = index.edge[segment]
        t, distance = index.project(segment, x[local], y[local])
        reverse = np.where(moving, -1, graph.edge_reverse[edge])

    _fill(graph, index, rows[local], segment, t, distance, edge, reverse, forward, out)


def _choose_by_heading(
    graph: RoadGraph,
    index: SegmentIndex,
    points: npt.NDArray[np.object_],
    x: FloatArray,
    y: FloatArray,
    headings: FloatArray,
    local: IntArray,
    nearest_m: FloatArray,
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    pairs = index.tree.query(
        points[local], predicate="dwithin", distance=nearest_m + HEADING_SEARCH_SLACK_M
    )
    inputs, segments = local[pairs[0]], pairs[1]
    _, distance = index.project(segments, x[inputs], y[inputs])
    bearing = bearing_deg(index.dx[segments], index.dy[segments])
    two_way = graph.edge_reverse[index.edge[segments]] >= 0

    # each candidate segment offers its forward direction, and the reverse
    # direction when the street is two-way
    cost_forward = (
        distance
        + HEADING_PENALTY_M * angle_difference_deg(bearing, headings[inputs]) / 180
    )
    cost_reverse = np.where(
        two_way,
        distance
        + HEADING_PENALTY_M
        * angle_difference_deg(bearing + 180.0, headings[inputs])
        / 180,
        np.inf,
    )
    all_inputs = np.concatenate((inputs, inputs))
    all_segments = np.concatenate((segments, segments))
    all_forward = np.concatenate(
        (np.ones(len(inputs), bool), np.zeros(len(inputs), bool))
    )
    cost = np.concatenate((cost_forward, cost_reverse))
    order = np.lexsort((all_segments, cost, all_inputs))
    all_inputs = all_inputs[order]
    first = np.concatenate(([True], all_inputs[1:] != all_inputs[:-1]))

    # map back to the order of `local`
    chosen_inputs = all_inputs[first]
    position = np.searchsorted(chosen_inputs, local)
    return all_segments[order][first][position], all_forward[order][first][position]


def _fill(
    graph: RoadGraph,
    index: SegmentIndex,
    rows: IntArray,
    segment: IntArray,
    t: FloatArray,
    distance: FloatArray,
    edge: IntArray,
    reverse: IntArray,
    forward: npt.NDArray[np.bool_],
    out: SnapArrays,
) -> None:
    start = index.start[segment]
    along_m = graph.geom_cum_m[start] + t * np.sqrt(index.length2[segment])
    geom_length_m = graph.edge_geom_length_m[edge]
    safe_length_m = np.where(geom_length_m > 0, geom_length_m, 1.0)
    fraction = np.where(
        geom_length_m > 0,
        np.minimum(np.maximum(along_m / safe_length_m, 0.0), 1.0),
        0.0,
    )
    fraction = np.where(along_m <= NODE_TOLERANCE_M, 0.0, fraction)
    fraction = np.where(geom_length_m - along_m <= NODE_TOLERANCE_M, 1.0, fraction)

    # a heading against the indexed direction selects the twin edge
    chosen_edge = np.where(forward, edge, graph.edge_reverse[edge])
    fraction = np.where(forward, fraction, 1.0 - fraction)

    out.edge[rows] = chosen_edge
    out.reverse_edge[rows] = np.where(forward, reverse, -1)
    out.fraction[rows] = fraction
    out.offset_m[rows] = fraction * graph.edge_length_m[chosen_edge]
    out.distance_m[rows] = distance
    out.lat[rows] = graph.geom_lat[start] + t * (
        graph.geom_lat[start + 1] - graph.geom_lat[start]
    )
    out.lon[rows] = graph.geom_lon[start] + t * (
        graph.geom_lon[start + 1] - graph.geom_lon[start]
    )


def off_network_message(
    graph: RoadGraph, lat: float, lon: float, distance_m: float, max_distance_m: float
) -> str:
    """Return the message for a point that did not snap, with a swap hint if plausible."""
    south, west, north, east = graph.bounds
    message = (
        f"point (lat={lat:.6f}, lon={lon:.6f}) is more than {max_distance_m:g} m "
        "from any drivable road"
    )
    if math.isfinite(distance_m) and distance_m > max_distance_m:
        away = (
            f"{distance_m:,.0f} m"
            if distance_m < 10_000
            else f"{distance_m / 1000:,.0f} km"
        )
        message += f": it lies {away} outside the road graph's bounding box"
    swapped_inside = bool(_swap_plausible(graph, np.array([lat]), np.array([lon]))[0])
    if swapped_inside or (
        math.isfinite(distance_m) and distance_m > SWAP_HINT_DISTANCE_M
    ):
        message += (
            f" (south={south:.4f}, west={west:.4f}, north={north:.4f}, east={east:.4f}); "
            "lat and lon may be swapped: coordinates are (lat, lon)"
        )
    return message


def off_network_error(
    graph: RoadGraph, lat: float, lon: float, distance_m: float, max_distance_m: float
) -> OffNetworkError:
    """Return an OffNetworkError for a point that did not snap."""
    message = off_network_message(graph, lat, lon, distance_m, max_distance_m)
    swapped = bool(_swap_plausible(graph, np.array([lat]), np.array([lon]))[0])
    known = distance_m if math.isfinite(distance_m) else None
    return OffNetworkError(
        lat, lon, known, max_distance_m, message, possible_swap=swapped
    )


def _warn_off_network(
    graph: RoadGraph,
    lat: FloatArray,
    lon: FloatArray,
    out: SnapArrays,
    max_distance_m: float,
) -> None:
    missed = np.flatnonzero(out.off_network)
    first = int(missed[0])
    logger.warning(
        "%d of %d pings are off the road network; first, ping %d: %s",
        len(missed),
        len(lat),
        first,
        off_network_message(
            graph,
            float(lat[first]),
            float(lon[first]),
            float(out.distance_m[first]),
            max_distance_m,
        ),
    )
