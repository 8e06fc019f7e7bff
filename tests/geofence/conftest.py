"""Named fences, tracks and random generators shared by the geofence tests.

The suite imports test modules in pytest's importlib mode, so test modules
cannot import this file. They reach its helpers through the session-scoped
``tracks`` fixture (an instance of ``Tracks``) and the other fixtures.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pytest

from geofence.detection import Fix
from geofence.fences import Fence, circle_fence, polygon_fence
from geofence.projection import LocalProjection

# A 100 m circle around a job site in central Helsinki.
SITE_LAT = 60.1711
SITE_LON = 24.9452
SITE_RADIUS_M = 100.0

# A yard of about 110 m by 78 m in central Helsinki, as [lon, lat] pairs.
YARD_RING = [
    [24.937, 60.1755],
    [24.939, 60.1755],
    [24.939, 60.1762],
    [24.937, 60.1762],
    [24.937, 60.1755],
]

# Times in the tracks start here (Unix seconds).
T0 = 1793606400.0


def offset(
    lat: float, lon: float, north_m: float, east_m: float
) -> tuple[float, float]:
    """Return the position ``north_m`` and ``east_m`` metres from (lat, lon)."""
    projection = LocalProjection.centred_at(lat, lon)
    lats, lons = projection.inverse_array(np.array([east_m]), np.array([north_m]))
    lon_out = float(lons[0])
    if lon_out > 180.0:
        lon_out -= 360.0
    elif lon_out < -180.0:
        lon_out += 360.0
    return float(lats[0]), lon_out


def fix_at(
    t: float, north_m: float, east_m: float, accuracy_m: float | None = 8.0
) -> Fix:
    """Return a fix ``north_m`` and ``east_m`` metres from the Helsinki site centre."""
    lat, lon = offset(SITE_LAT, SITE_LON, north_m, east_m)
    return Fix(t, lat, lon, accuracy_m)


def segment(
    t_start: float,
    t_end: float,
    interval_s: float,
    start_m: tuple[float, float],
    end_m: tuple[float, float],
    accuracy_m: float | None = 8.0,
) -> list[Fix]:
    """Return fixes every ``interval_s`` moving linearly from ``start_m`` to ``end_m``.

    Positions are (north_m, east_m) from the Helsinki site centre; the end
    time is excluded.
    """
    fixes = []
    duration_s = t_end - t_start
    for t in np.arange(t_start, t_end, interval_s):
        share = (t - t_start) / duration_s
        north_m = start_m[0] + share * (end_m[0] - start_m[0])
        east_m = start_m[1] + share * (end_m[1] - start_m[1])
        fixes.append(fix_at(float(t), north_m, east_m, accuracy_m))
    return fixes


class VisitTrack(NamedTuple):
    """A scripted visit and the parts of it that tests look at."""

    fixes: list[Fix]
    """Every fix of the visit in time order."""

    to_van: list[Fix]
    """The walk from the work spot to the van, the first time."""

    drive_out: list[Fix]
    """The final departure."""


def visit_track(van_trip_s: float = 180.0) -> VisitTrack:
    """Return a scripted visit to the Helsinki site.

    The contractor drives in from 1 km north, works 20 minutes, walks to a
    van parked 80 m beyond the site's edge (past the exit boundary), stays
    there ``van_trip_s``, walks back, works 20 more minutes and drives away
    south. Fixes come every 10 s with 8 m accuracy.
    """
    van_m = (180.0, 0.0)
    work_m = (10.0, 5.0)
    drive_in = segment(T0, T0 + 120, 10, (1000.0, 0.0), (60.0, 0.0))
    work_1 = segment(T0 + 120, T0 + 1320, 10, work_m, work_m)
    to_van = segment(T0 + 1320, T0 + 1380, 10, work_m, van_m)
    at_van = segment(T0 + 1380, T0 + 1380 + van_trip_s, 10, van_m, van_m)
    back_t = T0 + 1380 + van_trip_s
    back = segment(back_t, back_t + 60, 10, van_m, work_m)
    work_2 = segment(back_t + 60, back_t + 1260, 10, work_m, work_m)
    drive_out = segment(back_t + 1260, back_t + 2160, 10, work_m, (-3000.0, 0.0))
    fixes = drive_in + work_1 + to_van + at_van + back + work_2 + drive_out
    return VisitTrack(fixes, to_van, drive_out)


def first_fix(fixes: Sequence[Fix], fence: Fence, predicate: str) -> Fix:
    """Return the first fix inside the site (``"inside"``) or beyond
    ``hysteresis_m`` from it (``"outside"``), by position alone."""
    for fix in fixes:
        depth_m = fence.signed_distance_m(fix.lat, fix.lon)
        if predicate == "inside" and depth_m >= fix.accuracy_m:
            return fix
        if predicate == "outside" and -depth_m >= max(
            fence.hysteresis_m, fix.accuracy_m
        ):
            return fix
    raise AssertionError(f"no fix is {predicate}")


def random_polygon(
    generator: np.random.Generator, lat: float, lon: float, size_m: float
) -> dict[str, object]:
    """Return a random star-shaped GeoJSON Polygon about ``size_m`` across."""
    count = int(generator.integers(3, 10))
    angles = (np.arange(count) + generator.uniform(0.0, 0.8, count)) * 2 * np.pi / count
    radii_m = generator.uniform(0.45, 0.5, count) * size_m
    ring = []
    for angle, radius_m in zip(angles, radii_m, strict=True):
        lat_v, lon_v = offset(
            lat, lon, radius_m * np.sin(angle), radius_m * np.cos(angle)
        )
        ring.append([lon_v, lat_v])
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def random_fences(
    generator: np.random.Generator, lat: float, lon: float, count: int, spread_m: float
) -> list[Fence]:
    """Return a mix of random circles and polygons scattered around (lat, lon)."""
    fences = []
    for i in range(count):
        north_m, east_m = generator.uniform(-spread_m, spread_m, 2)
        centre_lat, centre_lon = offset(lat, lon, north_m, east_m)
        if i % 2:
            radius_m = float(generator.uniform(5.0, 400.0))
            fences.append(circle_fence(f"c{i}", centre_lat, centre_lon, radius_m))
        else:
            size_m = float(generator.uniform(30.0, 600.0))
            polygon = random_polygon(generator, centre_lat, centre_lon, size_m)
            fences.append(polygon_fence(f"p{i}", polygon))
    return fences


class Tracks:
    """The helpers above, for test modules to reach through a fixture."""

    SITE_LAT = SITE_LAT
    SITE_LON = SITE_LON
    SITE_RADIUS_M = SITE_RADIUS_M
    YARD_RING = YARD_RING
    T0 = T0
    offset = staticmethod(offset)
    fix_at = staticmethod(fix_at)
    segment = staticmethod(segment)
    visit = staticmethod(visit_track)
    first_fix = staticmethod(first_fix)
    random_polygon = staticmethod(random_polygon)
    random_fences = staticmethod(random_fences)


@pytest.fixture(scope="session")
def tracks() -> Tracks:
    """Builders of positions, fixes, scripted tracks and random fences."""
    return Tracks()


@pytest.fixture
def site_fence() -> Fence:
    """The 100 m circle around the Helsinki site."""
    return circle_fence("site", SITE_LAT, SITE_LON, SITE_RADIUS_M)


@pytest.fixture
def yard_fence() -> Fence:
    """The Helsinki yard polygon."""
    return polygon_fence("yard", {"type": "Polygon", "coordinates": [YARD_RING]})


@pytest.fixture
def visit() -> VisitTrack:
    """A scripted visit to the Helsinki site with a 3-minute trip to the van."""
    return visit_track()


@pytest.fixture
def rng() -> np.random.Generator:
    """A random generator whose seed is printed, and set by ENROUTE_TEST_SEED."""
    seed = int(os.environ.get("ENROUTE_TEST_SEED", random.randrange(2**32)))
    print(f"random seed: {seed} (rerun with ENROUTE_TEST_SEED={seed})")
    return np.random.default_rng(seed)
