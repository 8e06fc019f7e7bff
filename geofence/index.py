"""An index of many fences by their H3 covers, for point queries."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import shapely
from h3.api import basic_int as h3_int

from geofence.cover import MIN_COVER_RES, FenceCover, build_cover
from geofence.errors import InvalidArgumentError, UnknownFenceError
from geofence.fences import Fence
from geofence.projection import is_position, project_arrays, valid_positions
from geofence.shapes import CircleShape, PolygonShape, Shape
from geofence.types import FenceId, FloatArray, IntArray

logger = logging.getLogger(__name__)

DEFAULT_INDEX_RES = 10
"""Default H3 resolution of a ``FenceIndex``: cells of about 0.015 km2 with
edges of about 75 m, close to the size of a job's fence (30-300 m across),
so most points meet one or two candidate fences. At resolution 9 a point
meets about six and the vectorized check runs about a fifth slower (see
the "Geofence" section of ``benchmarks/RESULTS.md``)."""


class FenceMatches(NamedTuple):
    """Sparse result of ``FenceIndex.contains_many``: one row per (point, fence) match.

    Rows are sorted by point index, then by fence id.
    """

    point_index: IntArray
    """Index of the point in the query arrays."""

    fence_id: npt.NDArray[np.object_]
    """Id of a fence that contains the point."""

    def to_lists(self, n_points: int) -> list[list[FenceId]]:
        """Return the ids of the fences that contain each of ``n_points`` points."""
        lists: list[list[FenceId]] = [[] for _ in range(n_points)]
        for point, fence_id in zip(
            self.point_index.tolist(), self.fence_id.tolist(), strict=True
        ):
            lists[point].append(fence_id)
        return lists


@dataclass(frozen=True, eq=False)
class _CellTable:
    """All covers of an index flattened into sorted arrays, rebuilt after changes."""

    fence_ids: npt.NDArray[np.object_]
    is_circle: npt.NDArray[np.bool_]
    radius_m: FloatArray
    lon0_deg: FloatArray
    sin_lat0: FloatArray
    cos_lat0: FloatArray
    east_radius_m: FloatArray
    north_radius_m: FloatArray
    polygons: npt.NDArray[np.object_]
    lat_min_deg: FloatArray
    lat_max_deg: FloatArray
    dlon_min_deg: FloatArray
    dlon_max_deg: FloatArray
    cells: npt.NDArray[np.uint64]
    starts: IntArray
    entry_slot: IntArray
    entry_interior: npt.NDArray[np.bool_]


class FenceIndex:
    """Many fences indexed by their H3 covers, for point queries.

    Parameters
    ----------
    res
        H3 resolution of the covers, ``MIN_COVER_RES``..15.

    Notes
    -----
    Adding or removing a fence invalidates a flattened cell table that the
    next query rebuilds in O(total cells log total cells). A query costs one
    H3 lookup per point and an exact test for each (point, fence) pair in a
    boundary cell. Pairs in interior cells need no geometry.

    Examples
    --------
    >>> from geofence.fences import circle_fence
    >>> index = FenceIndex()
    >>> index.add(circle_fence("j1", 60.1711, 24.9452, 100.0))
    >>> index.containing(60.1711, 24.9452), index.containing(60.18, 24.9452)
    (['j1'], [])
    """

    def __init__(self, res: int = DEFAULT_INDEX_RES) -> None:
        if (
            isinstance(res, bool)
            or not isinstance(res, int)
            or not MIN_COVER_RES <= res <= 15
        ):
            raise InvalidArgumentError(
                f"res must be an integer within {MIN_COVER_RES}..15, got {res!r}",
                field="res",
                value=res,
            )
        self._res = res
        self._fences: dict[FenceId, Fence] = {}
        self._covers: dict[
            FenceId, tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]
        ] = {}
        self._bounds: dict[FenceId, tuple[float, float, float, float]] = {}
        self._table: _CellTable | None = None

    @property
    def res(self) -> int:
        """H3 resolution of the covers."""
        return self._res

    def __len__(self) -> int:
        return len(self._fences)

    def __contains__(self, fence_id: object) -> bool:
        return fence_id in self._fences

    def fence(self, fence_id: FenceId) -> Fence:
        """Return the fence with this id.

        Raises
        ------
        UnknownFenceError
            When no fence has this id.
        """
        try:
            return self._fences[fence_id]
        except KeyError:
            raise UnknownFenceError(fence_id) from None

    def add(self, fence: Fence) -> None:
        """Add a fence, replacing any fence with the same id.

        Raises
        ------
        FenceTooLargeError
            When the fence's cover at the index resolution would exceed
            ``MAX_COVER_CELLS`` cells.
        """
        cover = build_cover(fence.shape, self._res)
        interior = np.fromiter(cover.interior_depth_m, dtype=np.uint64)
        boundary = np.fromiter(cover.boundary, dtype=np.uint64)
        self._covers[fence.fence_id] = (
            np.concatenate([interior, boundary]),
            np.concatenate(
                [np.ones(len(interior), bool), np.zeros(len(boundary), bool)]
            ),
        )
        self._bounds[fence.fence_id] = degree_bounds(fence.shape)
        self._fences[fence.fence_id] = fence
        self._table = None

    def add_many(self, fences: Iterable[Fence]) -> None:
        """Add fences one by one, as :meth:`add` does."""
        for fence in fences:
            self.add(fence)

    def remove(self, fence_id: FenceId) -> None:
        """Remove a fence.

        Raises
        ------
        UnknownFenceError
            When no fence has this id.
        """
        if fence_id not in self._fences:
            raise UnknownFenceError(fence_id)
        del self._fences[fence_id]
        del self._covers[fence_id]
        del self._bounds[fence_id]
        self._table = None

    def cover(self, fence_id: FenceId) -> FenceCover:
        """Return a fence's cover at the index resolution."""
        return build_cover(self.fence(fence_id).shape, self._res)

    def candidates(self, lat: float, lon: float) -> list[FenceId]:
        """Return the ids of fences whose cover contains the cell of (lat, lon), sorted.

        A superset of the fences that contain the point: interior-cell
        fences contain it, boundary-cell fences may.
        """
        if not is_position(lat, lon):
            return []
        table = self._flat_table()
        key = np.uint64(h3_int.latlng_to_cell(lat, lon, self._res))
        pos = int(np.searchsorted(table.cells, key))
        if pos == len(table.cells) or table.cells[pos] != key:
            return []
        slots = table.entry_slot[table.starts[pos] : table.starts[pos + 1]]
        return [str(fence_id) for fence_id in table.fence_ids[slots]]

    def containing(self, lat: float, lon: float) -> list[FenceId]:
        """Return the ids of fences whose entry boundary contains (lat, lon), sorted."""
        matches = self.contains_many(np.array([lat]), np.array([lon]))
        return [str(fence_id) for fence_id in matches.fence_id]

    def contains_many(self, lats: FloatArray, lons: FloatArray) -> FenceMatches:
        """Find, for many points, every fence whose entry boundary contains them.

        Parameters
        ----------
        lats, lons
            1-D arrays of equal length, degrees. Non-finite or out-of-range
            positions match nothing and never reach H3.

        Returns
        -------
        FenceMatches
            One row per (point, fence) match, sorted by point then fence id.
            The result equals the exact test of every fence
            (:meth:`Fence.contains_many`) on every point.

        Notes
        -----
        Costs one ``h3.latlng_to_cell`` call per point, then numpy work per
        candidate pair and a prepared shapely test only for pairs in
        boundary cells of polygon fences.
        """
        lats = np.asarray(lats, dtype=np.float64)
        lons = np.asarray(lons, dtype=np.float64)
        if lats.ndim != 1 or lats.shape != lons.shape:
            raise InvalidArgumentError(
                f"lats and lons must be 1-D arrays of equal length, got shapes "
                f"{lats.shape} and {lons.shape}",
                field="lats",
                value=lats.shape,
            )
        table = self._flat_table()
        if len(table.cells) == 0:
            return FenceMatches(np.empty(0, np.int64), np.empty(0, object))

        # Look up every valid point's cell in the sorted cell table.
        valid = np.flatnonzero(valid_positions(lats, lons))
        point_cells = np.fromiter(
            map(
                h3_int.latlng_to_cell,
                lats[valid].tolist(),
                lons[valid].tolist(),
                itertools.repeat(self._res, len(valid)),
            ),
            dtype=np.uint64,
            count=len(valid),
        )
        pos = np.minimum(
            np.searchsorted(table.cells, point_cells), len(table.cells) - 1
        )
        hit = table.cells[pos] == point_cells
        points = valid[hit]
        pos = pos[hit]

        # Expand each point into one pair per fence listed for its cell.
        first = table.starts[pos]
        count = table.starts[pos + 1] - first
        pair_point = np.repeat(points, count)
        group_start = np.cumsum(count) - count
        entry = np.repeat(first - group_start, count) + np.arange(int(count.sum()))
        slot = table.entry_slot[entry]
        keep = table.entry_interior[entry].copy()

        # Test the pairs in boundary cells exactly.
        check = np.flatnonzero(~keep)
        keep[check] = _exact_pairs(
            table, lats[pair_point[check]], lons[pair_point[check]], slot[check]
        )
        return FenceMatches(pair_point[keep], table.fence_ids[slot[keep]])

    def _flat_table(self) -> _CellTable:
        if self._table is None:
            self._table = self._build_table()
        return self._table

    def _build_table(self) -> _CellTable:
        started = time.perf_counter()
        fence_ids = sorted(self._fences)
        fences = [self._fences[fence_id] for fence_id in fence_ids]
        projections = [fence.projection for fence in fences]
        covers = [self._covers[fence_id] for fence_id in fence_ids]
        bounds = np.array(
            [self._bounds[fence_id] for fence_id in fence_ids], dtype=np.float64
        )
        bounds = bounds.reshape(len(fence_ids), 4)

        cells = (
            np.concatenate([c for c, _ in covers]) if covers else np.empty(0, np.uint64)
        )
        interior = (
            np.concatenate([i for _, i in covers]) if covers else np.empty(0, bool)
        )
        slots = np.repeat(np.arange(len(covers)), [len(c) for c, _ in covers])
        order = np.lexsort((slots, cells))
        cells, interior, slots = cells[order], interior[order], slots[order]
        unique_cells, starts = np.unique(cells, return_index=True)

        table = _CellTable(
            fence_ids=np.array(fence_ids, dtype=object),
            is_circle=np.array(
                [isinstance(f.shape, CircleShape) for f in fences], dtype=bool
            ),
            radius_m=np.array(
                [f.radius_m or math.nan for f in fences], dtype=np.float64
            ),
            lon0_deg=np.array([p.lon0_deg for p in projections], dtype=np.float64),
            sin_lat0=np.array([p.sin_lat0 for p in projections], dtype=np.float64),
            cos_lat0=np.array([p.cos_lat0 for p in projections], dtype=np.float64),
            east_radius_m=np.array(
                [p.east_radius_m for p in projections], dtype=np.float64
            ),
            north_radius_m=np.array(
                [p.north_radius_m for p in projections], dtype=np.float64
            ),
            polygons=np.array(
                [
                    f.shape.polygon if isinstance(f.shape, PolygonShape) else None
                    for f in fences
                ],
                dtype=object,
            ),
            lat_min_deg=bounds[:, 0].copy(),
            lat_max_deg=bounds[:, 1].copy(),
            dlon_min_deg=bounds[:, 2].copy(),
            dlon_max_deg=bounds[:, 3].copy(),
            cells=unique_cells,
            starts=np.append(starts, len(cells)).astype(np.int64),
            entry_slot=slots.astype(np.int64),
            entry_interior=interior,
        )
        logger.debug(
            "built H3 cell table: %d fences, %d cells, %d entries in %.1f ms",
            len(fences),
            len(unique_cells),
            len(cells),
            1000 * (time.perf_counter() - started),
        )
        return table


def degree_bounds(shape: Shape) -> tuple[float, float, float, float]:
    """Return a box in degrees that contains the site.

    Returns
    -------
    tuple of float
        (lat_min, lat_max, dlon_min, dlon_max), where dlon is a longitude
        minus the projection centre's, folded into -180..180.
    """
    # Chords of 500 m stray from the true curve in degrees by millimetres,
    # well inside the 1 m margin.
    region = shapely.segmentize(shape.region(1.0), max_segment_length=500.0)
    x_m, y_m = np.asarray(region.exterior.coords).T
    lat_deg, lon_deg = shape.projection.inverse_array(x_m, y_m)
    dlon_deg = lon_deg - shape.projection.lon0_deg
    return (
        float(lat_deg.min()),
        float(lat_deg.max()),
        float(dlon_deg.min()),
        float(dlon_deg.max()),
    )


def _exact_pairs(
    table: _CellTable, lats: FloatArray, lons: FloatArray, slot: IntArray
) -> npt.NDArray[np.bool_]:
    """Test (point, fence) pairs exactly, each in its fence's projection."""
    inside = np.zeros(len(slot), dtype=bool)

    # Pairs outside the fence's box in degrees are outside; drop them before
    # the costlier projection, latitude first since it needs no folding.
    near = np.flatnonzero(
        (lats >= table.lat_min_deg[slot]) & (lats <= table.lat_max_deg[slot])
    )
    slot_near = slot[near]
    lons_near = lons[near]
    dlon_deg = (
        np.where(lons_near == -180.0, 180.0, lons_near) - table.lon0_deg[slot_near]
    )
    dlon_deg = np.where(dlon_deg > 180.0, dlon_deg - 360.0, dlon_deg)
    dlon_deg = np.where(dlon_deg < -180.0, dlon_deg + 360.0, dlon_deg)
    in_box = near[
        (dlon_deg >= table.dlon_min_deg[slot_near])
        & (dlon_deg <= table.dlon_max_deg[slot_near])
    ]
    inside[in_box] = _projected_pairs(table, lats[in_box], lons[in_box], slot[in_box])
    return inside


def _projected_pairs(
    table: _CellTable, lats: FloatArray, lons: FloatArray, slot: IntArray
) -> npt.NDArray[np.bool_]:
    x_m, y_m = project_arrays(
        lats,
        lons,
        table.lon0_deg[slot],
        table.sin_lat0[slot],
        table.cos_lat0[slot],
        table.east_radius_m[slot],
        table.north_radius_m[slot],
    )
    inside = np.empty(len(slot), dtype=bool)
    circle = table.is_circle[slot]
    xc, yc = x_m[circle], y_m[circle]
    inside[circle] = np.sqrt(xc * xc + yc * yc) <= table.radius_m[slot[circle]]
    polygon = ~circle
    inside[polygon] = shapely.intersects_xy(
        table.polygons[slot[polygon]], x_m[polygon], y_m[polygon]
    )
    return inside
