"""Tests of H3 covers, the fence index and pentagon-safe grid rings."""

from __future__ import annotations

from typing import Any

import h3
import numpy as np
import pytest
import shapely

from geofence.cover import CellClass, build_cover
from geofence.errors import InvalidArgumentError, UnknownFenceError
from geofence.fences import Fence, circle_fence, polygon_fence
from geofence.index import FenceIndex
from geofence.rings import disk_by_rings, ring_cells


def exact_matches(
    fences: list[Fence], lats: np.ndarray, lons: np.ndarray
) -> set[tuple[int, str]]:
    """Return the (point, fence id) pairs of an exact shapely test of every fence."""
    matches = set()
    for fence in fences:
        x_m, y_m = fence.projection.forward_array(lats, lons)
        if fence.radius_m is not None:
            centre = shapely.Point(0.0, 0.0)
            inside = shapely.dwithin(centre, shapely.points(x_m, y_m), fence.radius_m)
        else:
            inside = shapely.intersects_xy(fence.shape.polygon, x_m, y_m)
        matches.update((int(i), fence.fence_id) for i in np.flatnonzero(inside))
    return matches


def points_around(
    generator: np.random.Generator,
    lat: float,
    lon: float,
    count: int,
    spread_deg: float,
) -> tuple[np.ndarray, np.ndarray]:
    lats = lat + generator.uniform(-spread_deg, spread_deg, count)
    lons = lon + generator.uniform(-2 * spread_deg, 2 * spread_deg, count)
    lons = np.where(lons > 180.0, lons - 360.0, lons)
    return lats, np.where(lons < -180.0, lons + 360.0, lons)


def cell_outline_m(fence: Fence, cell: int) -> shapely.Polygon:
    outline = np.array(h3.cell_to_boundary(h3.int_to_str(cell)))
    x_m, y_m = fence.projection.forward_array(outline[:, 0], outline[:, 1])
    return shapely.Polygon(np.column_stack([x_m, y_m]))


# Covers.


@pytest.mark.parametrize("res", [9, 11])
def test_circle_cover_classes_match_geometry(site_fence: Fence, res: int) -> None:
    cover = build_cover(site_fence.shape, res)
    disk = shapely.Point(0.0, 0.0).buffer(100.0, quad_segs=256)

    for cell in cover.interior_depth_m:
        assert disk.contains(cell_outline_m(site_fence, cell))
    for cell in cover.boundary:
        assert cell_outline_m(site_fence, cell).intersects(disk.exterior.buffer(0.2))


@pytest.mark.parametrize("res", [9, 12])
def test_cover_holds_cell_of_every_inside_point(
    yard_fence: Fence, rng: np.random.Generator, res: int
) -> None:
    cover = build_cover(yard_fence.shape, res)
    lats, lons = points_around(rng, 60.17585, 24.938, 5000, 0.001)
    inside = yard_fence.contains_many(lats, lons)

    for lat, lon, is_inside in zip(lats, lons, inside, strict=True):
        cell_class = cover.classify(float(lat), float(lon))
        if is_inside:
            assert cell_class is not CellClass.OUTSIDE
        if cell_class is CellClass.INTERIOR:
            assert is_inside


def test_tiny_fence_has_only_boundary_cells(tracks: Any) -> None:
    tiny = circle_fence("tiny", tracks.SITE_LAT, tracks.SITE_LON, 5.0)

    cover = build_cover(tiny.shape, 9)

    assert cover.interior_depth_m == {}
    assert 1 <= len(cover.boundary) <= 3
    assert cover.classify(tracks.SITE_LAT, tracks.SITE_LON) is CellClass.BOUNDARY


def test_large_polygon_cover_mostly_interior() -> None:
    ring = [[24.6, 60.0], [25.3, 60.0], [25.3, 60.4], [24.6, 60.4], [24.6, 60.0]]
    fence = polygon_fence("city", {"type": "Polygon", "coordinates": [ring]})

    cover = build_cover(fence.shape, 9)

    assert len(cover.interior_depth_m) > 10 * len(cover.boundary)
    assert cover.classify(60.1699, 24.9384) is CellClass.INTERIOR
    assert cover.classify(59.437, 24.7536) is CellClass.OUTSIDE


def test_interior_depth_is_a_lower_bound(site_fence: Fence) -> None:
    cover = build_cover(site_fence.shape, 11)

    for cell, depth_m in cover.interior_depth_m.items():
        lat, lon = h3.cell_to_latlng(h3.int_to_str(cell))
        assert site_fence.signed_distance_m(lat, lon) >= depth_m


@pytest.mark.parametrize("res", [9, 10])
def test_overlap_and_center_modes_agree(
    yard_fence: Fence, site_fence: Fence, res: int
) -> None:
    for fence in (yard_fence, site_fence):
        center = build_cover(fence.shape, res, mode="center")
        overlap = build_cover(fence.shape, res, mode="overlap")

        assert center.interior_depth_m == overlap.interior_depth_m
        assert center.boundary == overlap.boundary


def test_cover_string_cells_match_integers(site_fence: Fence) -> None:
    cover = build_cover(site_fence.shape, 11)

    assert {h3.str_to_int(c) for c in cover.interior_cells()} == set(
        cover.interior_depth_m
    )
    assert {h3.str_to_int(c) for c in cover.boundary_cells()} == set(cover.boundary)


def test_cover_rejects_coarse_resolution(site_fence: Fence) -> None:
    with pytest.raises(
        InvalidArgumentError, match="res must be an integer within 5..15, got 4"
    ):
        build_cover(site_fence.shape, 4)


# Fences across the 180th meridian, on Taveuni (Fiji).

F1_RING = [
    [179.99, -16.8],
    [-179.99, -16.8],
    [-179.99, -16.79],
    [179.99, -16.79],
    [179.99, -16.8],
]


def test_crossing_fence_cover_holds_both_sides() -> None:
    fence = polygon_fence("F1", {"type": "Polygon", "coordinates": [F1_RING]})

    cover = build_cover(fence.shape, 9)
    cells = set(cover.interior_depth_m) | cover.boundary

    # About 2.36 km2 over cells of about 0.105 km2.
    assert 10 <= len(cells) <= 60
    assert h3.str_to_int(h3.latlng_to_cell(-16.795, 179.995, 9)) in cells
    assert h3.str_to_int(h3.latlng_to_cell(-16.795, -179.995, 9)) in cells
    assert h3.str_to_int(h3.latlng_to_cell(-16.795, 0.0, 9)) not in cells


def test_plus_and_minus_180_covers_identical() -> None:
    plus = [
        [179.98, -16.8],
        [180.0, -16.8],
        [180.0, -16.79],
        [179.98, -16.79],
        [179.98, -16.8],
    ]
    minus = [
        [179.98, -16.8],
        [-180.0, -16.8],
        [-180.0, -16.79],
        [179.98, -16.79],
        [179.98, -16.8],
    ]

    cover_plus = build_cover(
        polygon_fence("a", {"type": "Polygon", "coordinates": [plus]}).shape, 9
    )
    cover_minus = build_cover(
        polygon_fence("b", {"type": "Polygon", "coordinates": [minus]}).shape, 9
    )

    assert cover_plus.interior_depth_m == cover_minus.interior_depth_m
    assert cover_plus.boundary == cover_minus.boundary
    assert h3.latlng_to_cell(-16.795, 180.0, 9) == h3.latlng_to_cell(-16.795, -180.0, 9)


# Pentagons.

PENTAGON_PING = (64.70000012793487, 10.53619907546767)  # off the Trondelag coast


def test_ping_at_pentagon_centre_is_in_pentagon() -> None:
    cell = h3.latlng_to_cell(*PENTAGON_PING, 9)

    assert h3.is_pentagon(cell)


@pytest.mark.parametrize("pentagon", sorted(h3.get_pentagons(9)))
def test_pentagon_has_five_neighbours(pentagon: str) -> None:
    assert len(h3.grid_disk(pentagon, 1)) == 6
    assert len(ring_cells(pentagon, 1)) == 5
    assert [len(ring) for ring in disk_by_rings(pentagon, 1)] == [1, 5]


def test_index_finds_fence_around_pentagon() -> None:
    index = FenceIndex()
    index.add(circle_fence("near", 64.7005, 10.537, 1000.0))
    index.add(circle_fence("far", 64.75, 10.6, 100.0))

    assert index.containing(*PENTAGON_PING) == ["near"]
    assert index.candidates(*PENTAGON_PING) == ["near"]


# Grid rings.

RING_CASES = (
    [((0.0, 0.0), 1, k) for k in range(10, 19)]
    + [((60.1699, 24.9384), 2, k) for k in range(1, 11)]
    + [((60.1699, 24.9384), 9, k) for k in (1, 2, 5, 10)]
    + [(PENTAGON_PING, 9, k) for k in (1, 2, 3)]
)


@pytest.mark.parametrize(("origin_latlng", "res", "k"), RING_CASES)
def test_ring_cells_equals_disk_difference(
    origin_latlng: tuple[float, float], res: int, k: int
) -> None:
    origin = h3.latlng_to_cell(*origin_latlng, res)
    expected = set(h3.grid_disk(origin, k)) - set(h3.grid_disk(origin, k - 1))

    ring = ring_cells(origin, k)

    assert len(ring) == len(set(ring))
    assert set(ring) == expected


@pytest.mark.parametrize(
    ("origin_latlng", "res", "k_max"),
    [((0.0, 0.0), 1, 18), ((60.1699, 24.9384), 2, 10), (PENTAGON_PING, 9, 4)],
)
def test_disk_by_rings_yields_each_cell_once(
    origin_latlng: tuple[float, float], res: int, k_max: int
) -> None:
    origin = h3.latlng_to_cell(*origin_latlng, res)

    rings = disk_by_rings(origin, k_max)
    cells = [cell for ring in rings for cell in ring]

    assert len(rings) == k_max + 1
    assert len(cells) == len(set(cells))
    assert set(cells) == set(h3.grid_disk(origin, k_max))
    for k, ring in enumerate(rings[1:], 1):
        assert set(ring) == set(h3.grid_disk(origin, k)) - set(
            h3.grid_disk(origin, k - 1)
        )


def test_ring_zero_is_origin() -> None:
    origin = h3.latlng_to_cell(60.1699, 24.9384, 9)

    assert ring_cells(origin, 0) == [origin]


@pytest.mark.parametrize("k", [-1, 1.5, True])
def test_ring_cells_rejects_bad_index(k: Any) -> None:
    origin = h3.latlng_to_cell(60.1699, 24.9384, 9)

    with pytest.raises(InvalidArgumentError, match="k must be a non-negative integer"):
        ring_cells(origin, k)


# The index.

REGIONS = [
    pytest.param((60.17, 24.94), id="helsinki"),
    pytest.param((-16.795, 179.99), id="antimeridian"),
    pytest.param((0.0, 0.0), id="equator"),
    pytest.param((64.7, 10.536), id="pentagon"),
    pytest.param((78.22, 15.65), id="svalbard"),
]


@pytest.mark.parametrize("centre", REGIONS)
@pytest.mark.parametrize("res", [9, 11])
def test_contains_many_identical_to_shapely(
    rng: np.random.Generator, tracks: Any, centre: tuple[float, float], res: int
) -> None:
    fences = tracks.random_fences(rng, *centre, count=60, spread_m=2000.0)
    index = FenceIndex(res)
    index.add_many(fences)
    lats, lons = points_around(rng, *centre, 20_000, 0.025)

    matches = index.contains_many(lats, lons)
    got = set(zip(matches.point_index.tolist(), matches.fence_id.tolist(), strict=True))

    assert got == exact_matches(fences, lats, lons)


def test_contains_many_sorted_by_point_then_id(
    rng: np.random.Generator, tracks: Any
) -> None:
    index = FenceIndex()
    index.add_many(tracks.random_fences(rng, 60.17, 24.94, 40, 300.0))
    lats, lons = points_around(rng, 60.17, 24.94, 5000, 0.004)

    matches = index.contains_many(lats, lons)
    rows = list(
        zip(matches.point_index.tolist(), matches.fence_id.tolist(), strict=True)
    )

    assert rows == sorted(rows)
    assert len(rows) > 0


def test_contains_many_ignores_invalid_points(site_fence: Fence) -> None:
    index = FenceIndex()
    index.add(site_fence)
    lats = np.array([60.1711, np.nan, 60.1711, 91.0, 60.1711])
    lons = np.array([24.9452, 24.9452, np.inf, 24.9452, 24.9452])

    matches = index.contains_many(lats, lons)

    assert matches.point_index.tolist() == [0, 4]
    assert matches.to_lists(5) == [["site"], [], [], [], ["site"]]


def test_contains_many_rejects_mismatched_arrays(site_fence: Fence) -> None:
    index = FenceIndex()
    index.add(site_fence)

    with pytest.raises(InvalidArgumentError, match="equal length, got shapes"):
        index.contains_many(np.zeros(3), np.zeros(2))


def test_empty_index_matches_nothing() -> None:
    matches = FenceIndex().contains_many(np.array([60.17]), np.array([24.94]))

    assert matches.point_index.size == 0


def test_index_add_replace_and_remove(site_fence: Fence, tracks: Any) -> None:
    index = FenceIndex()
    index.add(site_fence)
    moved = circle_fence("site", 60.2, 24.9, 100.0)

    index.add(moved)

    assert len(index) == 1
    assert index.fence("site") is moved
    assert index.containing(tracks.SITE_LAT, tracks.SITE_LON) == []
    assert index.containing(60.2, 24.9) == ["site"]

    index.remove("site")

    assert "site" not in index
    assert index.containing(60.2, 24.9) == []


def test_index_remove_unknown_raises_lookup_error() -> None:
    with pytest.raises(LookupError) as caught:
        FenceIndex().remove("nope")

    assert isinstance(caught.value, UnknownFenceError)
    assert caught.value.fence_id == "nope"


def test_candidates_superset_of_containing(
    rng: np.random.Generator, tracks: Any
) -> None:
    index = FenceIndex()
    index.add_many(tracks.random_fences(rng, 60.17, 24.94, 30, 300.0))
    lats, lons = points_around(rng, 60.17, 24.94, 300, 0.004)

    for lat, lon in zip(lats.tolist(), lons.tolist(), strict=True):
        assert set(index.containing(lat, lon)) <= set(index.candidates(lat, lon))


def test_index_rejects_coarse_resolution() -> None:
    with pytest.raises(
        InvalidArgumentError, match="res must be an integer within 5..15"
    ):
        FenceIndex(3)
