"""Tests of the local metric projection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.projection import (
    LocalProjection,
    approx_distance_m,
    canonical_lon,
    wrap_lon_delta,
)

CENTRE_LATITUDES = [0.0, 30.0, 60.1699, 78.22, -45.0, -84.0]


@pytest.mark.parametrize("lat0", CENTRE_LATITUDES)
@pytest.mark.parametrize(
    ("distance_m", "max_error_m"),
    [(50.0, 1e-5), (1_000.0, 1e-3), (5_000.0, 0.03), (25_000.0, 0.6)],
)
def test_distance_from_centre_matches_wgs84_geodesic(
    lat0: float, distance_m: float, max_error_m: float
) -> None:
    pyproj = pytest.importorskip("pyproj")
    geod = pyproj.Geod(ellps="WGS84")
    projection = LocalProjection.centred_at(lat0, 24.9)
    azimuths = np.arange(0.0, 360.0, 7.5)
    lons, lats, _ = geod.fwd(
        np.full(azimuths.size, 24.9),
        np.full(azimuths.size, lat0),
        azimuths,
        np.full(azimuths.size, distance_m),
    )

    x_m, y_m = projection.forward_array(np.asarray(lats), np.asarray(lons))

    assert np.abs(np.hypot(x_m, y_m) - distance_m).max() < max_error_m


@pytest.mark.parametrize("lat0", CENTRE_LATITUDES)
def test_inverse_undoes_forward(lat0: float) -> None:
    projection = LocalProjection.centred_at(lat0, 179.99)
    x_m = np.array([-20_000.0, -5.0, 0.0, 3.0, 20_000.0])
    y_m = np.array([15_000.0, -2.0, 0.0, 7.0, -25_000.0])

    lats, lons = projection.inverse_array(x_m, y_m)
    x_back, y_back = projection.forward_array(
        lats, np.where(lons > 180.0, lons - 360.0, lons)
    )

    np.testing.assert_allclose(x_back, x_m, atol=1e-6)
    np.testing.assert_allclose(y_back, y_m, atol=1e-6)


@given(
    lat=st.floats(-85.0, 85.0),
    dlat=st.floats(-0.2, 0.2),
    dlon=st.floats(-0.2, 0.2),
    lon0=st.sampled_from([-180.0, -179.9, 0.0, 24.9, 179.9, 180.0]),
)
@settings(max_examples=200, deadline=None)
def test_forward_scalar_matches_array(
    lat: float, dlat: float, dlon: float, lon0: float
) -> None:
    projection = LocalProjection.centred_at(lat, lon0)
    lon = canonical_lon(wrap_lon_delta(lon0 + dlon))
    point_lat = max(-90.0, min(90.0, lat + dlat))

    x_m, y_m = projection.forward(point_lat, lon)
    x_array, y_array = projection.forward_array(np.array([point_lat]), np.array([lon]))

    assert x_m == pytest.approx(float(x_array[0]), abs=1e-7)
    assert y_m == pytest.approx(float(y_array[0]), abs=1e-7)


@given(lat=st.floats(-85.0, 85.0), lon0=st.floats(170.0, 180.0))
@settings(max_examples=100, deadline=None)
def test_minus_180_projects_like_plus_180(lat: float, lon0: float) -> None:
    projection = LocalProjection.centred_at(0.5 * lat, lon0)

    assert projection.forward(lat, -180.0) == projection.forward(lat, 180.0)


def test_forward_crosses_antimeridian_without_seam() -> None:
    projection = LocalProjection.centred_at(-16.795, 179.999)

    x_west, _ = projection.forward(-16.795, 179.998)
    x_east, _ = projection.forward(-16.795, -179.999)

    assert x_west < 0.0
    assert 0.0 < x_east < 300.0


def test_centre_projects_to_origin() -> None:
    projection = LocalProjection.centred_at(60.17, 24.94)

    assert projection.forward(60.17, 24.94) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("delta", "expected"),
    [(0.0, 0.0), (180.0, 180.0), (-180.0, -180.0), (190.0, -170.0), (-359.98, 0.02)],
)
def test_wrap_lon_delta_folds_into_half_turn(delta: float, expected: float) -> None:
    assert wrap_lon_delta(delta) == pytest.approx(expected)


def test_approx_distance_close_to_haversine() -> None:
    lat1, lon1, lat2, lon2 = 60.1699, 24.9384, 60.1799, 24.9584
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_chord = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    haversine_m = 2 * 6371008.8 * math.asin(math.sqrt(half_chord))

    assert approx_distance_m(lat1, lon1, lat2, lon2) == pytest.approx(
        haversine_m, rel=5e-3
    )


def test_approx_distance_across_antimeridian() -> None:
    distance_m = approx_distance_m(-16.795, 179.999, -16.795, -179.999)

    assert distance_m == pytest.approx(213.0, abs=1.0)
