"""Fences around job sites: validation, geometry and per-fix location.

A fence has two boundaries. The entry boundary is the site itself, a circle
or a GeoJSON polygon. The exit boundary lies ``hysteresis_m`` further out,
so GPS jitter at the edge of the site cannot flip a contractor between
inside and outside on every fix. The default of 30 m is an estimate of
phone accuracy in built-up streets (about 20-50 m), so that a fix from a
contractor still on site seldom lands outside the exit boundary.

Geometry is measured in metres in a projection centred on the fence (see
``geofence.projection``), so radii and margins mean the same at any
latitude. Fences may cross the 180th meridian; they may not come nearer
the poles than 5 degrees of latitude.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from h3.api import basic_int as h3_int

from geofence.cover import (
    EDGE_LENGTH_M_BY_RES,
    MAX_COVER_CELLS,
    MIN_COVER_RES,
    build_cover,
    estimate_cover_cells,
)
from geofence.errors import FenceTooLargeError, InvalidFenceError
from geofence.projection import (
    WGS84_A_M,
    WGS84_E2,
    LocalProjection,
    canonical_lon,
    is_position,
    valid_positions,
    wrap_lon_delta,
)
from geofence.shapes import CircleShape, PolygonShape, Shape
from geofence.types import BoolArray, FenceId, FloatArray, H3Index, LatLon
from geofence.validation import (
    MAX_RADIUS_M,
    MIN_RADIUS_M,
    check_extent,
    check_fence_id,
    check_hysteresis,
    check_latitude,
    check_longitude,
    check_number,
    check_polygon,
    check_ring_latitudes,
    parse_polygon,
    unwrap_ring,
)

logger = logging.getLogger(__name__)

DEFAULT_HYSTERESIS_M = 30.0
"""Default width of the band between the entry and exit boundaries."""

AUTO_CELLS_ACROSS = 10.0
"""Cells across a polygon that the automatic cover resolution aims for. About
80 % of the benchmark's polygons then lies in interior cells, which need no
geometry."""

# Metres per degree of latitude on the meridian where it is shortest (at
# the equator): the WGS84 semi-major axis times (1 - e2), times pi / 180.
_MIN_METRES_PER_DEGREE_LAT = WGS84_A_M * (1.0 - WGS84_E2) * math.pi / 180.0


class Zone(enum.Enum):
    """The location of a fix relative to a fence, given its accuracy."""

    INSIDE = "inside"
    """Inside the entry boundary, with at least ``min_inside_share`` of its
    accuracy disk inside."""

    OUTSIDE = "outside"
    """Beyond the exit boundary, with its accuracy disk clear of the site."""

    UNDECIDED = "undecided"
    """Neither: in the band between the boundaries, or too uncertain."""

    INVALID = "invalid"
    """Not a position: a coordinate or the accuracy is not a finite number."""


class FenceKind(enum.Enum):
    """The shape of a fence's site."""

    CIRCLE = "circle"
    POLYGON = "polygon"


@dataclass(frozen=True, eq=False)
class Fence:
    """A job site's fence, ready for per-fix tests.

    Build it with :func:`circle_fence`, :func:`polygon_fence` or
    :func:`fence_from_site`. Building a polygon fence computes its H3 cover,
    which takes a few milliseconds, so build each fence once and keep it
    while its job is open.

    Attributes
    ----------
    fence_id
        The caller's id, usually the job id.
    shape
        The site in metres in the fence's local projection.
    hysteresis_m
        Distance from the entry boundary out to the exit boundary.
    cover_res
        H3 resolution of ``interior_depth_m``, or -1 for circles.
    interior_depth_m
        For polygons, the H3 cells (as integers) that lie wholly inside the
        site, each with a distance in metres that every point of the cell
        lies inside the edge. Empty for circles, which need no cells.
    """

    fence_id: FenceId
    shape: Shape
    hysteresis_m: float
    cover_res: int
    interior_depth_m: Mapping[H3Index, float]

    def __repr__(self) -> str:
        return (
            f"Fence({self.fence_id!r}, {self.kind.value}, centre={self.centre}, "
            f"area_m2={self.area_m2:.0f}, hysteresis_m={self.hysteresis_m})"
        )

    @property
    def kind(self) -> FenceKind:
        """Whether the site is a circle or a polygon."""
        return (
            FenceKind.CIRCLE
            if isinstance(self.shape, CircleShape)
            else FenceKind.POLYGON
        )

    @property
    def projection(self) -> LocalProjection:
        """The fence's local metric projection."""
        return self.shape.projection

    @property
    def centre(self) -> LatLon:
        """Centre of the projection as (lat, lon): the circle's centre or the
        middle of the polygon's bounding box."""
        return (self.shape.projection.lat0_deg, self.shape.projection.lon0_deg)

    @property
    def radius_m(self) -> float | None:
        """Radius of a circular site, None for a polygon."""
        return self.shape.radius_m if isinstance(self.shape, CircleShape) else None

    @property
    def area_m2(self) -> float:
        """Area of the site in square metres."""
        return self.shape.area_m2

    @property
    def extent_m(self) -> float:
        """Maximum side of the site's bounding box in metres."""
        return self.shape.extent_m

    def contains(self, lat: float, lon: float) -> bool:
        """Test whether a position lies inside the entry boundary, edge included.

        Non-finite or out-of-range coordinates are never inside.

        Examples
        --------
        >>> fence = circle_fence("j1", 60.1711, 24.9452, 100.0)
        >>> fence.contains(60.1711, 24.9452), fence.contains(60.1731, 24.9452)
        (True, False)
        """
        if not is_position(lat, lon):
            return False
        return self.signed_distance_m(lat, lon) >= 0.0

    def contains_many(self, lats: FloatArray, lons: FloatArray) -> BoolArray:
        """Test many positions against the entry boundary, edge included.

        This is the exact test with no H3 shortcut: arithmetic on the
        projected radius for circles, prepared shapely geometry for polygons.
        Non-finite or out-of-range coordinates are never inside.
        """
        lats = np.asarray(lats, dtype=np.float64)
        lons = np.asarray(lons, dtype=np.float64)
        valid = valid_positions(lats, lons)
        inside = np.zeros(lats.shape, dtype=bool)
        x_m, y_m = self.projection.forward_array(lats[valid], lons[valid])
        inside[valid] = self.shape.contains_xy(x_m, y_m)
        return inside

    def signed_distance_m(self, lat: float, lon: float) -> float:
        """Return the distance from the entry boundary in metres.

        Positive inside the site, negative outside; NaN for a position that
        is not finite and in range.
        """
        if not is_position(lat, lon):
            return math.nan
        x_m, y_m = self.shape.projection.forward(lat, lon)
        return self.shape.signed_distance_xy(x_m, y_m)

    def zone(
        self, lat: float, lon: float, accuracy_m: float, min_inside_share: float = 0.5
    ) -> Zone:
        """Locate a fix relative to the fence, taking its accuracy into account.

        Parameters
        ----------
        lat, lon
            The fix position in degrees.
        accuracy_m
            Radius of the fix's accuracy disk in metres, positive.
        min_inside_share
            Share of the accuracy disk that must lie inside the site for the
            fix to count as inside when the disk crosses the edge.

        Returns
        -------
        Zone
            ``INSIDE`` when the position is inside the entry boundary and
            either its whole accuracy disk or at least ``min_inside_share``
            of it lies inside. ``OUTSIDE`` when the position is at least
            ``max(hysteresis_m, accuracy_m)`` from the site, so beyond the
            exit boundary with its disk clear of the site. ``INVALID`` for
            a non-finite or out-of-range input, else ``UNDECIDED``.

        Notes
        -----
        A fix far away in latitude costs a subtraction. Otherwise a circle
        costs one projection. A polygon costs one projection for a fix near
        its centre or far outside its bounding box, else an H3 lookup, and
        prepared-geometry tests only for a fix near the edge. A fix whose
        accuracy disk crosses the edge also costs an intersection area
        (tens of microseconds).
        """
        # NaN fails every comparison, so it lands here too.
        if not (
            -90.0 <= lat <= 90.0
            and -180.0 <= lon <= 180.0
            and math.isfinite(accuracy_m)
        ):
            return Zone.INVALID
        shape = self.shape
        projection = shape.projection
        clear_m = self.hysteresis_m if self.hysteresis_m > accuracy_m else accuracy_m

        # Far away in latitude alone: no projection needed. A point's
        # projected distance from the centre is at least its latitude
        # difference times the smallest meridional radius of curvature.
        dlat_deg = lat - projection.lat0_deg
        if dlat_deg < 0.0:
            dlat_deg = -dlat_deg
        if dlat_deg * _MIN_METRES_PER_DEGREE_LAT > shape.reach_m + clear_m:
            return Zone.OUTSIDE

        x_m, y_m = projection.forward(lat, lon)
        if isinstance(shape, CircleShape):
            depth_m = shape.radius_m - math.sqrt(x_m * x_m + y_m * y_m)
        else:
            # Near the centre, or far outside the bounding box: no cell
            # lookup and no geometry.
            if shape.inner_radius_m - math.sqrt(x_m * x_m + y_m * y_m) >= accuracy_m:
                return Zone.INSIDE
            min_x, min_y, max_x, max_y = shape.bounds
            if (
                x_m < min_x - clear_m
                or x_m > max_x + clear_m
                or y_m < min_y - clear_m
                or y_m > max_y + clear_m
            ):
                return Zone.OUTSIDE
            cell = h3_int.latlng_to_cell(lat, lon, self.cover_res)
            cell_depth_m = self.interior_depth_m.get(cell)
            if cell_depth_m is not None and cell_depth_m >= accuracy_m:
                return Zone.INSIDE
            depth_m = shape.signed_distance_xy(x_m, y_m)

        if depth_m >= 0.0:
            if depth_m >= accuracy_m:
                return Zone.INSIDE
            if shape.inside_share_xy(x_m, y_m, accuracy_m) >= min_inside_share:
                return Zone.INSIDE
            return Zone.UNDECIDED
        if -depth_m >= clear_m:
            return Zone.OUTSIDE
        return Zone.UNDECIDED


def circle_fence(
    fence_id: FenceId,
    lat: float,
    lon: float,
    radius_m: float,
    *,
    hysteresis_m: float = DEFAULT_HYSTERESIS_M,
    field: str = "site",
) -> Fence:
    """Build a fence around a circular site.

    Parameters
    ----------
    fence_id
        The caller's id for the fence, usually the job id.
    lat, lon
        Centre of the site in degrees; lat within -85..85, lon within
        -180..180.
    radius_m
        Radius of the site, within ``MIN_RADIUS_M``..``MAX_RADIUS_M``.
    hysteresis_m
        Width of the band between entry and exit boundaries, 0..500 m.
    field
        Name of the input field that contains the site, for error messages.

    Raises
    ------
    InvalidFenceError
        When a value has the wrong type or is out of range. The message
        names the field, shows the value and states the rule.

    Examples
    --------
    >>> fence = circle_fence("j1", 60.1711, 24.9452, 100.0)
    >>> fence.radius_m, round(fence.area_m2)
    (100.0, 31416)
    """
    check_fence_id(fence_id)
    hysteresis_m = check_hysteresis(hysteresis_m)
    lat = check_number(lat, f"{field}.lat")
    lon = check_number(lon, f"{field}.lon")
    check_latitude(lat, f"{field}.lat", lat)
    check_longitude(lon, f"{field}.lon", lon)
    radius_m = check_number(radius_m, f"{field}.radius_m")
    if not MIN_RADIUS_M <= radius_m <= MAX_RADIUS_M:
        raise InvalidFenceError(
            f"{field}.radius_m must be within {MIN_RADIUS_M:g}..{MAX_RADIUS_M:g} m, "
            f"got {radius_m:g}",
            field=f"{field}.radius_m",
            value=radius_m,
        )

    shape = CircleShape(LocalProjection.centred_at(lat, canonical_lon(lon)), radius_m)
    return Fence(fence_id, shape, hysteresis_m, cover_res=-1, interior_depth_m={})


def polygon_fence(
    fence_id: FenceId,
    geojson: Mapping[str, Any],
    *,
    hysteresis_m: float = DEFAULT_HYSTERESIS_M,
    cover_res: int | None = None,
    field: str = "site",
) -> Fence:
    """Build a fence around a polygonal site given as a GeoJSON Polygon.

    Parameters
    ----------
    fence_id
        The caller's id for the fence, usually the job id.
    geojson
        ``{"type": "Polygon", "coordinates": [exterior, *holes]}`` with each
        ring a closed list of ``[lon, lat]`` positions (GeoJSON order). A
        ring may cross the 180th meridian: consecutive vertices more than
        180 degrees apart are joined the short way across it.
    hysteresis_m
        Width of the band between entry and exit boundaries, 0..500 m.
    cover_res
        H3 resolution of the cells that let most fixes skip geometry; None
        picks one that puts about ``AUTO_CELLS_ACROSS`` cells across the site.
    field
        Name of the input field that contains the site, for error messages.

    Raises
    ------
    InvalidFenceError
        For a malformed or invalid polygon. The message names the field,
        shows the value and states the rule.
    FenceTooLargeError
        When the polygon spans 180 degrees of longitude or more, its
        bounding box is longer than ``MAX_FENCE_EXTENT_M``, or ``cover_res``
        would need more than ``MAX_COVER_CELLS`` cells. These checks run
        before any H3 cell is computed, and their cost depends only on the
        vertex count.

    Examples
    --------
    >>> ring = [[24.937, 60.1755], [24.939, 60.1755], [24.939, 60.1762],
    ...         [24.937, 60.1762], [24.937, 60.1755]]
    >>> fence = polygon_fence("yard", {"type": "Polygon", "coordinates": [ring]})
    >>> fence.contains(60.17585, 24.9380), fence.contains(60.1770, 24.9380)
    (True, False)
    """
    check_fence_id(fence_id)
    hysteresis_m = check_hysteresis(hysteresis_m)
    rings = parse_polygon(geojson, field)
    shell_lons = unwrap_ring(rings[0], f"{field}.coordinates[0]")
    hole_lons = [
        unwrap_ring(ring, f"{field}.coordinates[{i}]")
        for i, ring in enumerate(rings[1:], 1)
    ]

    # Reject what no job site can be before doing anything costly.
    span_deg = max(shell_lons) - min(shell_lons)
    if span_deg >= 180.0:
        raise FenceTooLargeError(
            f"{field}.coordinates polygon spans {span_deg:.1f} degrees of longitude; "
            "split it or use a smaller site",
            field=f"{field}.coordinates",
            value=span_deg,
            limit=180.0,
        )
    check_ring_latitudes(rings, field)
    shell_lats = [lat for _, lat in rings[0]]
    lat0 = 0.5 * (min(shell_lats) + max(shell_lats))
    lon0 = _fold_lon(0.5 * (min(shell_lons) + max(shell_lons)))
    projection = LocalProjection.centred_at(lat0, lon0)
    shell_xy = _project_ring(projection, shell_lats, shell_lons)
    check_extent(shell_xy, field)

    holes_xy = []
    for hole, lons in zip(rings[1:], hole_lons, strict=True):
        # Put each hole on the same side of the 180th meridian as the shell.
        shift_deg = 360.0 * round((shell_lons[0] - lons[0]) / 360.0)
        lats = [lat for _, lat in hole]
        holes_xy.append(
            _project_ring(projection, lats, [lon + shift_deg for lon in lons])
        )
    polygon = shapely.Polygon(shell_xy, holes_xy)
    check_polygon(polygon, field)

    shape = PolygonShape(projection, polygon)
    res = (
        _auto_cover_res(shape)
        if cover_res is None
        else _check_cover_res(cover_res, shape)
    )
    cover = build_cover(shape, res)
    return Fence(fence_id, shape, hysteresis_m, res, cover.interior_depth_m)


def fence_from_site(
    fence_id: FenceId,
    site: Mapping[str, Any],
    *,
    hysteresis_m: float = DEFAULT_HYSTERESIS_M,
    field: str = "site",
) -> Fence:
    """Build a fence from a job's site: a circle or a GeoJSON Polygon.

    Parameters
    ----------
    site
        ``{"lat", "lon", "radius_m"}`` for a circle, or a GeoJSON Polygon
        (``{"type": "Polygon", "coordinates": ...}``).

    Raises
    ------
    InvalidFenceError
        When the site is neither shape or breaks one of their rules.

    Examples
    --------
    >>> fence_from_site("j1", {"lat": 60.17, "lon": 24.94, "radius_m": 50}).kind
    <FenceKind.CIRCLE: 'circle'>
    """
    if not isinstance(site, Mapping):
        raise InvalidFenceError(
            f"{field} must be an object, got {type(site).__name__}",
            field=field,
            value=site,
        )
    if "type" in site:
        return polygon_fence(fence_id, site, hysteresis_m=hysteresis_m, field=field)
    missing = [key for key in ("lat", "lon", "radius_m") if key not in site]
    if missing:
        raise InvalidFenceError(
            f"{field} must be {{lat, lon, radius_m}} or a GeoJSON Polygon, "
            f"but it has no {' or '.join(missing)}",
            field=field,
            value=dict(site),
        )
    return circle_fence(
        fence_id,
        site["lat"],
        site["lon"],
        site["radius_m"],
        hysteresis_m=hysteresis_m,
        field=field,
    )


def _fold_lon(lon_deg: float) -> float:
    return canonical_lon(wrap_lon_delta(lon_deg))


def _project_ring(
    projection: LocalProjection, lats: Sequence[float], lons: Sequence[float]
) -> FloatArray:
    x_m, y_m = projection.forward_array(np.asarray(lats), np.asarray(lons))
    return np.column_stack([x_m, y_m])


def _auto_cover_res(shape: PolygonShape) -> int:
    target_edge_m = math.sqrt(shape.area_m2) / AUTO_CELLS_ACROSS
    for res in range(MIN_COVER_RES, 16):
        if EDGE_LENGTH_M_BY_RES[res] <= target_edge_m:
            return res
    return 15


def _check_cover_res(cover_res: object, shape: PolygonShape) -> int:
    if (
        isinstance(cover_res, bool)
        or not isinstance(cover_res, int)
        or not MIN_COVER_RES <= cover_res <= 15
    ):
        raise InvalidFenceError(
            f"cover_res must be an integer within {MIN_COVER_RES}..15, "
            f"got {cover_res!r}",
            field="cover_res",
            value=cover_res,
        )
    cells = estimate_cover_cells(shape, cover_res)
    if cells > MAX_COVER_CELLS:
        raise FenceTooLargeError(
            f"cover_res {cover_res} would need about {cells:.0f} H3 cells "
            "for this site; "
            f"the limit is {MAX_COVER_CELLS}, so use a coarser resolution",
            field="cover_res",
            value=cover_res,
            limit=MAX_COVER_CELLS,
        )
    return cover_res
