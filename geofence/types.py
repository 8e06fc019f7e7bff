"""Type aliases shared by the geofence modules.

Coordinates are WGS84 degrees in (lat, lon) order everywhere in the public
API; GeoJSON input is the one place where positions are (lon, lat).
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

LatLon: TypeAlias = tuple[float, float]
"""A position as (lat_deg, lon_deg)."""

H3Cell: TypeAlias = str
"""An H3 cell as its hexadecimal string, as returned by the default ``h3`` API."""

H3Index: TypeAlias = int
"""An H3 cell as a 64-bit integer, as returned by ``h3.api.basic_int``."""

FenceId: TypeAlias = str
"""The caller's identifier of a fence, usually the job id."""

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
