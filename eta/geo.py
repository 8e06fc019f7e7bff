"""Geodesy helpers: great-circle distances, UTM zones and coordinate checks.

All functions take and return coordinates in the order (lat, lon), in
degrees on WGS84.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from eta.errors import InvalidCoordinateError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Mean Earth radius in metres (IUGG), as used by osmnx's great_circle.
EARTH_RADIUS_M = 6_371_009.0


def haversine_m(
    lat1: float | FloatArray,
    lon1: float | FloatArray,
    lat2: float | FloatArray,
    lon2: float | FloatArray,
) -> FloatArray:
    """Return great-circle distances in metres between (lat, lon) points.

    Examples
    --------
    >>> round(float(haversine_m(60.0, 24.0, 61.0, 24.0)))
    111195
    """
    phi1 = np.radians(lat1)
    phi2 = np.radians(lat2)
    dphi = phi2 - phi1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlmb / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def utm_epsg(lat: float, lon: float) -> int:
    """Return the EPSG code of the UTM zone (WGS84) that contains a point.

    Examples
    --------
    >>> utm_epsg(60.17, 24.94)
    32635
    >>> utm_epsg(-20.46, -54.62)
    32721
    """
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def check_latlon(
    lat: float, lon: float, *, lat_name: str = "lat", lon_name: str = "lon"
) -> None:
    """Raise InvalidCoordinateError unless lat/lon are finite and in range.

    Examples
    --------
    >>> check_latlon(91.2, 24.9)
    Traceback (most recent call last):
    ...
    eta.errors.InvalidCoordinateError: lat must be within -90..90, got 91.2
    """
    for name, value, limit in ((lat_name, lat, 90.0), (lon_name, lon, 180.0)):
        if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(
            value, bool
        ):
            raise InvalidCoordinateError(name, value, "a number")  # type: ignore[arg-type]
        if not math.isfinite(value):
            raise InvalidCoordinateError(name, float(value), "a finite number")
        if not -limit <= value <= limit:
            raise InvalidCoordinateError(
                name, float(value), f"within -{limit:g}..{limit:g}"
            )


def check_latlon_arrays(
    lats: npt.ArrayLike,
    lons: npt.ArrayLike,
    *,
    lat_name: str = "lats",
    lon_name: str = "lons",
) -> tuple[FloatArray, FloatArray]:
    """Return lat/lon as equal-length float arrays, or raise for a bad entry.

    The error names the first bad index, such as ``lats[3]``.
    """
    lat_array = np.atleast_1d(np.asarray(lats, dtype=np.float64))
    lon_array = np.atleast_1d(np.asarray(lons, dtype=np.float64))
    if lat_array.ndim != 1 or lat_array.shape != lon_array.shape:
        raise ValueError(
            f"{lat_name} and {lon_name} must be 1-D arrays of equal length, "
            f"got shapes {lat_array.shape} and {lon_array.shape}"
        )
    for name, values, limit in (
        (lat_name, lat_array, 90.0),
        (lon_name, lon_array, 180.0),
    ):
        bad = ~np.isfinite(values) | (np.abs(values) > limit)
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            value = float(values[index])
            rule = (
                "a finite number"
                if not math.isfinite(value)
                else f"within -{limit:g}..{limit:g}"
            )
            raise InvalidCoordinateError(f"{name}[{index}]", value, rule)
    return lat_array, lon_array


def bearing_deg(dx_m: FloatArray, dy_m: FloatArray) -> FloatArray:
    """Return compass bearings in degrees (0 = north, clockwise) of x/y steps."""
    return np.asarray(np.degrees(np.arctan2(dx_m, dy_m)) % 360.0)


def angle_difference_deg(
    a_deg: FloatArray | float, b_deg: FloatArray | float
) -> FloatArray:
    """Return the absolute difference of two bearings in degrees, 0..180.

    Examples
    --------
    >>> float(angle_difference_deg(350.0, 10.0))
    20.0
    """
    diff = np.abs((np.asarray(a_deg) - np.asarray(b_deg)) % 360.0)
    return np.asarray(np.minimum(diff, 360.0 - diff))
