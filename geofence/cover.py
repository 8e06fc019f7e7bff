"""H3 covers of fences.

A fence's cover at an H3 resolution sorts every cell that overlaps the site
into two classes. Interior cells lie wholly inside, so any point in them is
inside with no geometry. Boundary cells cross the edge, so points in them
need the exact test. A point in any other cell is outside.

Cells are classified in the fence's projection with a safety margin of
``CELL_MARGIN_M``. H3 cell edges are great-circle arcs while the projected
cell polygons have straight edges. For fences up to 50 km across and
resolutions from ``MIN_COVER_RES`` up, the two differ by at most about
1.3 cm, measured at resolution 5 and 25 km from a fence's centre (0.13 mm
at resolution 7). So the 10 cm margin keeps every classification exact for
the points that H3 assigns to the cell.

``geofence.index`` builds a many-fence index on these covers, and
``geofence.rings`` walks grid rings around pentagons safely.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import h3
import numpy as np
import shapely
from h3.api import basic_int as h3_int

from geofence.errors import FenceTooLargeError, InvalidArgumentError
from geofence.projection import is_position
from geofence.shapes import PolygonShape, Shape
from geofence.types import H3Cell, H3Index

logger = logging.getLogger(__name__)

CELL_MARGIN_M = 0.1
"""Margin in metres by which a cell must clear a fence's edge to count as
interior or as outside; see the module docstring."""

MIN_COVER_RES = 5
"""Coarsest H3 resolution of a cover; see the module docstring for why."""

MAX_COVER_CELLS = 200_000
"""Most H3 cells one fence's cover may have; estimated before enumerating."""

ContainMode = Literal["overlap", "center"]

EDGE_LENGTH_M_BY_RES = tuple(
    h3.average_hexagon_edge_length(r, unit="m") for r in range(16)
)
"""Average H3 hexagon edge length in metres, by resolution 0..15."""

_CELL_AREA_M2_BY_RES = tuple(h3.average_hexagon_area(r, unit="m^2") for r in range(16))


class CellClass(enum.Enum):
    """The relation of an H3 cell to a fence's site."""

    INTERIOR = "interior"
    BOUNDARY = "boundary"
    OUTSIDE = "outside"


@dataclass(frozen=True, eq=False)
class FenceCover:
    """The H3 cells that overlap one fence's site, split by class.

    Attributes
    ----------
    res
        H3 resolution of the cells.
    interior_depth_m
        Interior cells (as integers), each with a distance in metres that
        every point of the cell lies inside the site's edge.
    boundary
        Cells (as integers) that cross the edge or come within
        ``CELL_MARGIN_M`` of it.
    """

    res: int
    interior_depth_m: Mapping[H3Index, float]
    boundary: frozenset[H3Index]

    def interior_cells(self) -> frozenset[H3Cell]:
        """Return the interior cells as hexadecimal strings."""
        return frozenset(h3.int_to_str(cell) for cell in self.interior_depth_m)

    def boundary_cells(self) -> frozenset[H3Cell]:
        """Return the boundary cells as hexadecimal strings."""
        return frozenset(h3.int_to_str(cell) for cell in self.boundary)

    def classify_cell(self, cell: H3Cell | H3Index) -> CellClass:
        """Return the class of a cell of this cover's resolution."""
        key = h3.str_to_int(cell) if isinstance(cell, str) else cell
        if key in self.interior_depth_m:
            return CellClass.INTERIOR
        if key in self.boundary:
            return CellClass.BOUNDARY
        return CellClass.OUTSIDE

    def classify(self, lat: float, lon: float) -> CellClass:
        """Return the class of the cell that contains (lat, lon).

        Non-finite or out-of-range coordinates give ``OUTSIDE`` without
        reaching H3.
        """
        if not is_position(lat, lon):
            return CellClass.OUTSIDE
        return self.classify_cell(h3_int.latlng_to_cell(lat, lon, self.res))


def estimate_cover_cells(shape: Shape, res: int) -> float:
    """Estimate from above how many cells a cover at ``res`` enumerates.

    Counts cells of average area over the site's bounding box widened by
    two cell edges on every side, which bounds the candidates H3 returns.
    """
    edge_m = EDGE_LENGTH_M_BY_RES[res]
    width_m = height_m = shape.extent_m
    if isinstance(shape, PolygonShape):
        min_x, min_y, max_x, max_y = shape.bounds
        width_m, height_m = max_x - min_x, max_y - min_y
    return float(
        (width_m + 4.0 * edge_m) * (height_m + 4.0 * edge_m) / _CELL_AREA_M2_BY_RES[res]
    )


def candidate_cells(
    shape: Shape, res: int, mode: ContainMode = "center"
) -> set[H3Index]:
    """Return H3 cells that include every cell overlapping the site.

    Parameters
    ----------
    shape
        The site.
    res
        H3 resolution.
    mode
        ``"center"`` (the default) calls ``h3.h3shape_to_cells`` for the
        cells whose centre lies in the site widened by two average cell
        edges. Any cell that overlaps the site qualifies, because no vertex
        lies more than about 1.1 average edges from its cell's centre
        (sampled over h3 4.5 cells, pentagons included).
        ``"overlap"`` calls h3's experimental
        ``h3shape_to_cells_experimental`` for cells that overlap a slightly
        widened site. It returns fewer cells, but with h3 4.5.0 it took
        several times longer per fence in the benchmark's setup.

    Notes
    -----
    The widened site is drawn in the fence's projection, converted back to
    degrees and cut at the 180th meridian into pieces that each stay within
    -180..180, so no polygon passed to H3 has an edge that crosses it.
    """
    edge_m = EDGE_LENGTH_M_BY_RES[res]
    pad_m = 1.0 + 0.05 * edge_m if mode == "overlap" else 1.0 + 2.0 * edge_m
    region = shapely.segmentize(shape.region(pad_m), max_segment_length=2.0 * edge_m)

    x_m, y_m = np.asarray(region.exterior.coords).T
    lat_deg, lon_deg = shape.projection.inverse_array(x_m, y_m)
    outline = shapely.Polygon(np.column_stack([lon_deg, lat_deg]))

    cells: set[H3Index] = set()
    for piece in _split_at_antimeridian(outline):
        poly = h3.LatLngPoly([(lat, lon) for lon, lat in piece.exterior.coords[:-1]])
        if mode == "overlap":
            cells.update(h3_int.h3shape_to_cells_experimental(poly, res, "overlap"))
        else:
            cells.update(h3_int.h3shape_to_cells(poly, res))
    return cells


def build_cover(shape: Shape, res: int, mode: ContainMode = "center") -> FenceCover:
    """Compute a site's cover at an H3 resolution.

    Raises
    ------
    FenceTooLargeError
        When the cover would need more than ``MAX_COVER_CELLS`` cells; the
        estimate is made before any cell is enumerated.
    """
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
    estimate = estimate_cover_cells(shape, res)
    if estimate > MAX_COVER_CELLS:
        raise FenceTooLargeError(
            f"a cover at H3 resolution {res} would need about {estimate:.0f} cells; "
            f"the limit is {MAX_COVER_CELLS}, so use a coarser resolution "
            "or a smaller site",
            field="res",
            value=res,
            limit=MAX_COVER_CELLS,
        )
    cells = sorted(candidate_cells(shape, res, mode))
    if not cells:
        return FenceCover(res, {}, frozenset())

    # Project every cell's outline into the fence's frame.
    outlines = [h3_int.cell_to_boundary(cell) for cell in cells]
    vertex_cell = np.repeat(
        np.arange(len(cells)), [len(outline) for outline in outlines]
    )
    lat_lon = np.asarray(
        list(itertools.chain.from_iterable(outlines)), dtype=np.float64
    )
    x_m, y_m = shape.projection.forward_array(lat_lon[:, 0], lat_lon[:, 1])
    rings = shapely.linearrings(np.column_stack([x_m, y_m]), indices=vertex_cell)
    polygons = shapely.polygons(rings)

    depth_m, near = shape.classify_cells(polygons, x_m, y_m, vertex_cell, CELL_MARGIN_M)
    interior = ~np.isnan(depth_m)
    interior_depth_m = {cells[i]: float(depth_m[i]) for i in np.flatnonzero(interior)}
    boundary = frozenset(cells[i] for i in np.flatnonzero(near & ~interior))
    return FenceCover(res, interior_depth_m, boundary)


def _split_at_antimeridian(outline: shapely.Polygon) -> list[shapely.Polygon]:
    """Cut a (lon, lat) polygon with continuous longitudes into pieces in -180..180."""
    min_lon, _, max_lon, _ = outline.bounds
    if min_lon >= -180.0 and max_lon <= 180.0:
        return [outline]
    pieces: list[shapely.Polygon] = []
    world = shapely.box(-180.0, -90.0, 180.0, 90.0)
    for shift_deg in (0.0, -360.0, 360.0):
        moved = shapely.transform(
            outline, lambda xy, s=shift_deg: xy + np.array([s, 0.0])
        )
        piece = shapely.intersection(moved, world)
        pieces.extend(
            part
            for part in shapely.get_parts(piece)
            if isinstance(part, shapely.Polygon) and part.area > 0.0
        )
    return pieces
