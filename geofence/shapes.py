"""Fence geometry in a fence's local metric projection.

A shape is the site itself (the entry area) in metres around the fence
centre. Containment is boundary-inclusive: a point on the edge is inside.
Circles are exact circles, tested by arithmetic on the projected centre and
radius; polygons are shapely polygons tested with prepared geometry.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import shapely

from geofence.projection import LocalProjection
from geofence.types import BoolArray, FloatArray

logger = logging.getLogger(__name__)

CIRCLE_QUAD_SEGS = 16
"""Segments per quarter circle when an accuracy disk is drawn as a polygon."""


def _outset_factor(quad_segs: int) -> float:
    # A circle drawn with quad_segs segments per quarter lies inside the true
    # circle by up to r * (1 - cos(pi / (4 * quad_segs))). Drawing it with
    # the radius times this factor puts the polygon outside instead.
    return 1.0 / math.cos(math.pi / (4 * quad_segs))


def circle_overlap_share(
    distance_m: float, radius_m: float, accuracy_m: float
) -> float:
    """Return the share of an accuracy disk that lies inside a circle.

    Parameters
    ----------
    distance_m
        Distance between the circle centre and the accuracy disk centre.
    radius_m
        Radius of the circle (the fence).
    accuracy_m
        Radius of the accuracy disk; must be positive.

    Returns
    -------
    float
        Intersection area divided by the accuracy disk area, in 0..1.

    Examples
    --------
    >>> circle_overlap_share(0.0, 100.0, 10.0)
    1.0
    >>> round(circle_overlap_share(0.0, 10.0, 20.0), 3)
    0.25
    """
    s, r, a = distance_m, radius_m, accuracy_m
    if s >= r + a:
        return 0.0
    if s <= abs(r - a):
        return min(1.0, (r * r) / (a * a))

    # Area of the lens where the two disks overlap.
    cos_fence = (s * s + r * r - a * a) / (2.0 * s * r)
    cos_fix = (s * s + a * a - r * r) / (2.0 * s * a)
    kite = (-s + r + a) * (s + r - a) * (s - r + a) * (s + r + a)
    lens_m2 = (
        r * r * math.acos(max(-1.0, min(1.0, cos_fence)))
        + a * a * math.acos(max(-1.0, min(1.0, cos_fix)))
        - 0.5 * math.sqrt(max(0.0, kite))
    )
    return max(0.0, min(1.0, lens_m2 / (math.pi * a * a)))


@dataclass(frozen=True, slots=True)
class CircleShape:
    """A circular site: every point within ``radius_m`` of the projection centre."""

    projection: LocalProjection
    radius_m: float
    reach_m: float = field(init=False)
    """Farthest distance of the site from the projection centre: the radius."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reach_m", self.radius_m)

    @property
    def area_m2(self) -> float:
        """Area of the site in square metres."""
        return math.pi * self.radius_m * self.radius_m

    @property
    def extent_m(self) -> float:
        """Maximum side of the site's bounding box in metres (the diameter)."""
        return 2.0 * self.radius_m

    def contains_xy(self, x_m: FloatArray, y_m: FloatArray) -> BoolArray:
        """Test projected points for containment, boundary included."""
        return np.sqrt(x_m * x_m + y_m * y_m) <= self.radius_m

    def signed_distance_xy(self, x_m: float, y_m: float) -> float:
        """Return the distance to the site's edge: positive inside, negative outside."""
        return self.radius_m - math.sqrt(x_m * x_m + y_m * y_m)

    def inside_share_xy(self, x_m: float, y_m: float, accuracy_m: float) -> float:
        """Return the share of the accuracy disk around (x_m, y_m) inside the site."""
        return circle_overlap_share(
            math.sqrt(x_m * x_m + y_m * y_m), self.radius_m, accuracy_m
        )

    def region(self, margin_m: float, quad_segs: int = 4) -> shapely.Polygon:
        """Return a polygon that contains the site widened by ``margin_m``.

        Curves are drawn with ``quad_segs`` segments per quarter circle, on
        the outside of the true curve.
        """
        radius_m = (self.radius_m + margin_m) * _outset_factor(quad_segs)
        return shapely.Point(0.0, 0.0).buffer(radius_m, quad_segs=quad_segs)

    def classify_cells(
        self,
        cells: np.ndarray,
        vertex_x_m: FloatArray,
        vertex_y_m: FloatArray,
        vertex_cell: np.ndarray,
        margin_m: float,
    ) -> tuple[FloatArray, BoolArray]:
        """Classify projected cell polygons against the site.

        Returns
        -------
        interior_depth_m
            For each cell, how far inside the site its farthest part lies
            less ``margin_m``, or NaN when that is not positive.
        near
            For each cell, whether it comes within ``margin_m`` of the site.
        """
        # A convex cell lies inside a disk exactly when all its vertices do.
        vertex_distance_m = np.sqrt(vertex_x_m * vertex_x_m + vertex_y_m * vertex_y_m)
        farthest_m = np.full(len(cells), -np.inf)
        np.maximum.at(farthest_m, vertex_cell, vertex_distance_m)
        depth_m = self.radius_m - farthest_m - margin_m
        interior_depth_m = np.where(depth_m > 0.0, depth_m, np.nan)

        centre_distance_m = shapely.distance(shapely.Point(0.0, 0.0), cells)
        near = centre_distance_m <= self.radius_m + margin_m
        return interior_depth_m, near


@dataclass(frozen=True, slots=True)
class PolygonShape:
    """A polygonal site, holes allowed, in projected metres."""

    projection: LocalProjection
    polygon: shapely.Polygon
    boundary: shapely.MultiLineString = field(init=False)
    bounds: tuple[float, float, float, float] = field(init=False)
    """Bounding box of the site as (min_x, min_y, max_x, max_y) in metres."""
    reach_m: float = field(init=False)
    """Farthest distance of the site from the projection centre."""
    inner_radius_m: float = field(init=False)
    """Radius of the disk around the projection centre that lies inside the
    site, 0 when the centre is outside; points in it need no geometry."""

    def __post_init__(self) -> None:
        shapely.prepare(self.polygon)
        boundary = shapely.MultiLineString(
            [self.polygon.exterior.coords]
            + [ring.coords for ring in self.polygon.interiors]
        )
        shapely.prepare(boundary)
        object.__setattr__(self, "boundary", boundary)
        min_x, min_y, max_x, max_y = (float(v) for v in self.polygon.bounds)
        object.__setattr__(self, "bounds", (min_x, min_y, max_x, max_y))
        shell = np.asarray(self.polygon.exterior.coords)
        object.__setattr__(
            self, "reach_m", float(np.hypot(shell[:, 0], shell[:, 1]).max())
        )
        inner_radius_m = 0.0
        if shapely.intersects_xy(self.polygon, 0.0, 0.0):
            inner_radius_m = float(shapely.distance(boundary, shapely.Point(0.0, 0.0)))
        object.__setattr__(self, "inner_radius_m", inner_radius_m)

    @property
    def area_m2(self) -> float:
        """Area of the site in square metres."""
        return float(self.polygon.area)

    @property
    def extent_m(self) -> float:
        """Maximum side of the site's bounding box in metres."""
        min_x, min_y, max_x, max_y = self.bounds
        return max(max_x - min_x, max_y - min_y)

    def contains_xy(self, x_m: FloatArray, y_m: FloatArray) -> BoolArray:
        """Test projected points for containment, boundary included."""
        return np.asarray(shapely.intersects_xy(self.polygon, x_m, y_m), dtype=bool)

    def signed_distance_xy(self, x_m: float, y_m: float) -> float:
        """Return the distance to the site's edge: positive inside, negative outside."""
        point = shapely.Point(x_m, y_m)
        distance_m = float(shapely.distance(self.boundary, point))
        if shapely.intersects_xy(self.polygon, x_m, y_m):
            return distance_m
        return -distance_m

    def inside_share_xy(self, x_m: float, y_m: float, accuracy_m: float) -> float:
        """Return the share of the accuracy disk around (x_m, y_m) inside the site.

        Notes
        -----
        The disk is drawn with ``CIRCLE_QUAD_SEGS`` segments per quarter, so
        the share is accurate to about 0.3 %. This costs tens of microseconds
        and is only needed for fixes whose accuracy disk crosses the edge.
        """
        disk = shapely.Point(x_m, y_m).buffer(accuracy_m, quad_segs=CIRCLE_QUAD_SEGS)
        overlap_m2 = shapely.area(shapely.intersection(self.polygon, disk))
        return float(min(1.0, overlap_m2 / shapely.area(disk)))

    def region(self, margin_m: float, quad_segs: int = 4) -> shapely.Polygon:
        """Return a polygon that contains the site widened by ``margin_m``.

        Holes are filled. Rounded corners are drawn with ``quad_segs``
        segments per quarter circle, on the outside of the true curve.
        """
        shell = shapely.Polygon(self.polygon.exterior)
        if margin_m <= 0.0:
            return shell
        return shell.buffer(margin_m * _outset_factor(quad_segs), quad_segs=quad_segs)

    def classify_cells(
        self,
        cells: np.ndarray,
        vertex_x_m: FloatArray,
        vertex_y_m: FloatArray,
        vertex_cell: np.ndarray,
        margin_m: float,
    ) -> tuple[FloatArray, BoolArray]:
        """Classify projected cell polygons against the site.

        Returns
        -------
        interior_depth_m
            For each cell, its distance from the site's edge less
            ``margin_m`` when the cell lies inside, else NaN.
        near
            For each cell, whether it comes within ``margin_m`` of the site.
        """
        near_edge = shapely.dwithin(self.boundary, cells, margin_m)

        # A connected cell that stays clear of every edge lies wholly inside
        # or wholly outside the site, so its first vertex decides which.
        first_vertex = np.searchsorted(vertex_cell, np.arange(len(cells)))
        vertex_inside = shapely.intersects_xy(
            self.polygon, vertex_x_m[first_vertex], vertex_y_m[first_vertex]
        )
        interior = ~near_edge & vertex_inside
        interior_depth_m = np.full(len(cells), np.nan)
        if interior.any():
            clearance_m = shapely.distance(self.boundary, cells[interior])
            interior_depth_m[interior] = clearance_m - margin_m
        near = near_edge | vertex_inside
        return interior_depth_m, near


Shape = CircleShape | PolygonShape
"""The geometry of a fence's site."""
