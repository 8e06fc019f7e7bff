"""Validation of fence input: numbers, ranges, GeoJSON polygons, size limits.

Every check raises ``InvalidFenceError`` (or ``FenceTooLargeError``) with a
message that names the field, shows the value and states the rule.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import numpy as np
import shapely

from geofence.errors import FenceTooLargeError, InvalidFenceError
from geofence.projection import canonical_lon
from geofence.types import FloatArray

logger = logging.getLogger(__name__)

MIN_RADIUS_M = 5.0
"""Smallest circle radius. Phone fixes are seldom more precise than about
5 m (an estimate), so fixes could not resolve a smaller site."""

MAX_RADIUS_M = 5000.0
"""Largest circle radius, well above any single job site."""

MIN_SITE_AREA_M2 = math.pi * MIN_RADIUS_M**2
"""Smallest polygon area, that of the smallest circle (about 78.5 m2)."""

MAX_FENCE_EXTENT_M = 50_000.0
"""Maximum side of a fence's bounding box in metres. Larger areas are not
job sites."""

MAX_POLYGON_VERTICES = 5000
"""Most vertices a polygon may have, over all its rings."""

MAX_ABS_LAT_DEG = 85.0
"""Largest absolute latitude of a fence's centre and vertices. Nearer the
poles, a fence could enclose a pole, which the longitude arithmetic that cuts
fences at the 180th meridian for H3 does not handle."""

MAX_HYSTERESIS_M = 500.0
"""Widest allowed band between the entry and exit boundaries."""


def check_fence_id(fence_id: object) -> None:
    if not isinstance(fence_id, str) or not fence_id:
        raise InvalidFenceError(
            f"fence_id must be a non-empty string, got {fence_id!r}",
            field="fence_id",
            value=fence_id,
        )


def check_number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidFenceError(
            f"{field} must be a number, got {value!r}", field=field, value=value
        )
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidFenceError(
            f"{field} must be a finite number, got {number}", field=field, value=value
        )
    return number


def check_hysteresis(hysteresis_m: object) -> float:
    value = check_number(hysteresis_m, "hysteresis_m")
    if not 0.0 <= value <= MAX_HYSTERESIS_M:
        raise InvalidFenceError(
            f"hysteresis_m must be within 0..{MAX_HYSTERESIS_M:g} m, got {value:g}",
            field="hysteresis_m",
            value=hysteresis_m,
        )
    return value


def check_latitude(lat: float, field: str, value: object) -> None:
    if not -90.0 <= lat <= 90.0:
        raise InvalidFenceError(
            f"{field} must be within -90..90, got {value}", field=field, value=value
        )
    if abs(lat) > MAX_ABS_LAT_DEG:
        raise InvalidFenceError(
            f"{field} must be within -{MAX_ABS_LAT_DEG:g}..{MAX_ABS_LAT_DEG:g} "
            f"(fences nearer the poles are not supported), got {value}",
            field=field,
            value=value,
        )


def check_longitude(lon: float, field: str, value: object) -> None:
    if not -180.0 <= lon <= 180.0:
        raise InvalidFenceError(
            f"{field} must be within -180..180, got {value}", field=field, value=value
        )


def parse_polygon(geojson: object, field: str) -> list[list[tuple[float, float]]]:
    """Check a GeoJSON Polygon's structure and return its rings as (lon, lat)."""
    if not isinstance(geojson, Mapping):
        raise InvalidFenceError(
            f"{field} must be a GeoJSON Polygon object, got {type(geojson).__name__}",
            field=field,
            value=geojson,
        )
    if geojson.get("type") != "Polygon":
        raise InvalidFenceError(
            f"{field}.type must be 'Polygon', got {geojson.get('type')!r}",
            field=f"{field}.type",
            value=geojson.get("type"),
        )
    coordinates = geojson.get("coordinates")
    if not _is_sequence(coordinates) or len(coordinates) == 0:
        raise InvalidFenceError(
            f"{field}.coordinates must be a non-empty list of rings, "
            f"got {coordinates!r}",
            field=f"{field}.coordinates",
            value=coordinates,
        )
    vertex_count = sum(len(ring) for ring in coordinates if _is_sequence(ring))
    if vertex_count > MAX_POLYGON_VERTICES:
        raise FenceTooLargeError(
            f"{field}.coordinates has {vertex_count} positions; "
            f"the limit is {MAX_POLYGON_VERTICES}",
            field=f"{field}.coordinates",
            value=vertex_count,
            limit=MAX_POLYGON_VERTICES,
        )
    return [
        _parse_ring(ring, f"{field}.coordinates[{i}]")
        for i, ring in enumerate(coordinates)
    ]


def _parse_ring(ring: object, field: str) -> list[tuple[float, float]]:
    if not _is_sequence(ring):
        raise InvalidFenceError(
            f"{field} must be a list of [lon, lat] positions, got {ring!r}",
            field=field,
            value=ring,
        )
    positions = []
    for i, position in enumerate(ring):
        if not _is_sequence(position) or len(position) not in (2, 3):
            raise InvalidFenceError(
                f"{field}[{i}] must be a [lon, lat] position, got {position!r}",
                field=f"{field}[{i}]",
                value=position,
            )
        lon = check_number(position[0], f"{field}[{i}][0]")
        lat = check_number(position[1], f"{field}[{i}][1]")
        check_longitude(lon, f"{field}[{i}][0]", position[0])
        if not -90.0 <= lat <= 90.0:
            raise InvalidFenceError(
                f"{field}[{i}][1] must be within -90..90, got {position[1]}",
                field=f"{field}[{i}][1]",
                value=position[1],
            )
        positions.append((lon, lat))
    if len(positions) < 4:
        raise InvalidFenceError(
            f"{field} ring must have at least 4 positions, got {len(positions)}",
            field=field,
            value=ring,
        )
    first, last = positions[0], positions[-1]
    if (canonical_lon(first[0]), first[1]) != (canonical_lon(last[0]), last[1]):
        raise InvalidFenceError(
            f"{field} ring must be closed (last position equal to the first), "
            f"got first {list(first)} and last {list(last)}",
            field=field,
            value=ring,
        )
    return positions


def _is_sequence(value: object) -> TypeGuard[Sequence[Any]]:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def unwrap_ring(ring: list[tuple[float, float]], field: str) -> list[float]:
    """Return the ring's longitudes made continuous across the 180th meridian.

    Each step between consecutive vertices is taken the short way, so
    179.99 followed by -179.99 becomes 179.99, 180.01.
    """
    turns = 0
    previous = canonical_lon(ring[0][0])
    lons = [previous]
    for i, (raw_lon, _) in enumerate(ring[1:], 1):
        lon = canonical_lon(raw_lon)
        step_deg = lon - previous
        if abs(step_deg) == 180.0:
            raise FenceTooLargeError(
                f"{field} edge from {list(ring[i - 1])} to {list(ring[i])} spans 180.0 "
                "degrees of longitude, so its direction is ambiguous; split the "
                "polygon or use a smaller site",
                field=field,
                value=[list(ring[i - 1]), list(ring[i])],
                limit=180.0,
            )
        if step_deg > 180.0:
            turns -= 1
        elif step_deg < -180.0:
            turns += 1
        lons.append(lon + 360.0 * turns)
        previous = lon
    if turns != 0:
        raise InvalidFenceError(
            f"{field} ring goes all the way around a pole; "
            "split it or use a smaller site",
            field=field,
            value=[list(position) for position in ring],
        )
    return lons


def check_extent(shell_xy: FloatArray, field: str) -> None:
    extent_m = float(max(np.ptp(shell_xy[:, 0]), np.ptp(shell_xy[:, 1])))
    if extent_m > MAX_FENCE_EXTENT_M:
        raise FenceTooLargeError(
            f"{field}.coordinates polygon is {extent_m / 1000:.1f} km across; "
            f"the limit is {MAX_FENCE_EXTENT_M / 1000:g} km, so use a smaller site",
            field=f"{field}.coordinates",
            value=extent_m,
            limit=MAX_FENCE_EXTENT_M,
        )


def check_polygon(polygon: shapely.Polygon, field: str) -> None:
    if not shapely.is_valid(polygon):
        reason = shapely.is_valid_reason(polygon)
        raise InvalidFenceError(
            f"{field}.coordinates polygon is invalid ({reason}); rings must not "
            "cross themselves or each other, and holes must lie inside the exterior",
            field=f"{field}.coordinates",
            value=reason,
        )
    if polygon.area < MIN_SITE_AREA_M2:
        raise InvalidFenceError(
            f"{field}.coordinates polygon area must be at least "
            f"{MIN_SITE_AREA_M2:.1f} m2, got {polygon.area:.1f} m2",
            field=f"{field}.coordinates",
            value=float(polygon.area),
        )


def check_ring_latitudes(rings: list[list[tuple[float, float]]], field: str) -> None:
    """Check that every vertex lies within ``MAX_ABS_LAT_DEG`` of the equator."""
    for i, ring in enumerate(rings):
        for j, (_, lat) in enumerate(ring):
            check_latitude(lat, f"{field}.coordinates[{i}][{j}][1]", lat)
