"""Benchmark geofence point checks and the per-ping geofence work.

Two measurements, both on synthetic fences over a 20 km square around
central Helsinki:

1. Point checks: ``--fences`` active fences (default 10,000; 70 % circles
   of 30-300 m radius, 30 % polygons of 30-150 m across) in one
   ``FenceIndex``, queried with ``FenceIndex.contains_many`` for ``--points``
   random points (default 1,000,000). Each point is checked against every
   fence. The matches for a sample of the points must equal those of an
   exact shapely test of every fence: ``shapely.dwithin`` from a circle's
   centre, ``shapely.intersects_xy`` for a polygon.
2. Per-ping work in the ingest path: one device with 1, 2 or 3 open job
   fences, ``geofence.detection.step`` once per ping and fence, over a
   track that drives to the first site, stays, walks to the van and back,
   and leaves. Times are per ping, for all of the device's fences.

Run with ``python -m benchmarks.geofence``; results go to the "Geofence"
section of ``benchmarks/RESULTS.md``. Timings are the best of ``--repeats``
query runs (20 times as many per-ping runs), since other processes on the
machine add noise.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely

from benchmarks._common import command_line, machine_description, today, update_section
from geofence.detection import DetectionState, Fix, VisitEvent, step
from geofence.fences import Fence, circle_fence, polygon_fence
from geofence.index import DEFAULT_INDEX_RES, FenceIndex
from geofence.projection import LocalProjection
from geofence.shapes import PolygonShape

logger = logging.getLogger(__name__)

SECTION = "Geofence"
CENTRE = (60.1699, 24.9384)  # central Helsinki
AREA_HALF_SIDE_M = 10_000.0
POINT_TARGET_PER_S = 1_000_000
PING_TARGET_US = 5.0
T0 = 1793606400.0

# The index's default resolution and the two finer ones that suit many
# small fences.
DEFAULT_RESOLUTIONS = (DEFAULT_INDEX_RES, 10, 11)


def synthetic_fences(count: int, rng: np.random.Generator) -> list[Fence]:
    """Return ``count`` fences scattered over the square around ``CENTRE``.

    Seven in ten are circles of 30-300 m radius, the rest polygons of 4-8
    vertices and 30-150 m across.
    """
    projection = LocalProjection.centred_at(*CENTRE)
    x_m = rng.uniform(-AREA_HALF_SIDE_M, AREA_HALF_SIDE_M, count)
    y_m = rng.uniform(-AREA_HALF_SIDE_M, AREA_HALF_SIDE_M, count)
    lats, lons = projection.inverse_array(x_m, y_m)
    fences = []
    for i, (lat, lon) in enumerate(zip(lats.tolist(), lons.tolist(), strict=True)):
        if rng.random() < 0.7:
            fences.append(
                circle_fence(f"c{i}", lat, lon, float(rng.uniform(30.0, 300.0)))
            )
            continue
        vertices = int(rng.integers(4, 9))
        angles = (
            (np.arange(vertices) + rng.uniform(0.0, 0.8, vertices))
            * 2
            * math.pi
            / vertices
        )
        radii_m = rng.uniform(0.3, 0.5, vertices) * rng.uniform(30.0, 150.0)
        local = LocalProjection.centred_at(lat, lon)
        ring_lats, ring_lons = local.inverse_array(
            radii_m * np.cos(angles), radii_m * np.sin(angles)
        )
        ring = [
            [lo, la]
            for la, lo in zip(ring_lats.tolist(), ring_lons.tolist(), strict=True)
        ]
        ring.append(ring[0])
        fences.append(
            polygon_fence(f"p{i}", {"type": "Polygon", "coordinates": [ring]})
        )
    return fences


def random_points(
    count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``count`` random (lat, lon) points over the fences' square plus 500 m."""
    projection = LocalProjection.centred_at(*CENTRE)
    half_m = AREA_HALF_SIDE_M + 500.0
    return projection.inverse_array(
        rng.uniform(-half_m, half_m, count), rng.uniform(-half_m, half_m, count)
    )


def exact_matches(
    fences: Sequence[Fence], lats: np.ndarray, lons: np.ndarray
) -> set[tuple[int, str]]:
    """Return the (point, fence id) matches of an exact shapely test of every fence.

    A generous box around each fence, from its centre and extent alone,
    picks the points worth testing; each is then tested in the fence's
    projection.
    """
    tree = shapely.STRtree(shapely.points(lons, lats))
    matches: set[tuple[int, str]] = set()
    for fence in fences:
        lat0, lon0 = fence.centre
        reach_m = fence.extent_m + 50.0
        dlat = reach_m / 110_000.0
        dlon = reach_m / (110_000.0 * math.cos(math.radians(lat0)))
        near = tree.query(
            shapely.box(lon0 - dlon, lat0 - dlat, lon0 + dlon, lat0 + dlat)
        )
        if near.size == 0:
            continue
        x_m, y_m = fence.projection.forward_array(lats[near], lons[near])
        if isinstance(fence.shape, PolygonShape):
            inside = shapely.intersects_xy(fence.shape.polygon, x_m, y_m)
        else:
            centre = shapely.Point(0.0, 0.0)
            inside = shapely.dwithin(
                centre, shapely.points(x_m, y_m), fence.shape.radius_m
            )
        matches.update((int(i), fence.fence_id) for i in near[inside])
    return matches


def bench_point_checks(
    fences: Sequence[Fence],
    points: int,
    res: int,
    sample: int,
    repeats: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Time ``contains_many`` over random points and verify a sample against shapely."""
    started = time.perf_counter()
    index = FenceIndex(res)
    index.add_many(fences)
    index.contains_many(
        np.array([CENTRE[0]]), np.array([CENTRE[1]])
    )  # builds the table
    index_s = time.perf_counter() - started

    lats, lons = random_points(points, rng)
    best_s = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        matches = index.contains_many(lats, lons)
        best_s = min(best_s, time.perf_counter() - started)

    # Compare the matches of the first `sample` points with the exact test.
    in_sample = matches.point_index < sample
    got = set(
        zip(
            matches.point_index[in_sample].tolist(),
            matches.fence_id[in_sample].tolist(),
            strict=True,
        )
    )
    expected = exact_matches(fences, lats[:sample], lons[:sample])
    return {
        "res": res,
        "fences": len(fences),
        "points": points,
        "index_s": round(index_s, 1),
        "query_s": round(best_s, 3),
        "points_per_s": round(points / best_s),
        "pair_checks_per_s": f"{points * len(fences) / best_s:.2e}",
        "matches": int(matches.point_index.size),
        "sample": sample,
        "identical": got == expected,
    }


def device_track(site: Fence, rng: np.random.Generator) -> list[Fix]:
    """Return a device's fixes every 5 s for one visit to ``site``.

    The device drives in from 2 km, works an hour with a walk to a van
    parked 60 m beyond the edge, and drives 4 km away. Fixes scatter by
    4 m and report accuracies of 5-20 m.
    """
    half_m = site.extent_m / 2.0
    # (seconds, start, end) with positions as (north, east) metres from the centre
    legs = [
        (240.0, (2000.0, 0.0), (0.0, 0.0)),
        (1800.0, (0.0, 0.0), (0.0, 0.0)),
        (60.0, (0.0, 0.0), (half_m + 60.0, 0.0)),
        (120.0, (half_m + 60.0, 0.0), (half_m + 60.0, 0.0)),
        (60.0, (half_m + 60.0, 0.0), (0.0, 0.0)),
        (1800.0, (0.0, 0.0), (0.0, 0.0)),
        (480.0, (0.0, 0.0), (-4000.0, 0.0)),
    ]
    north_m, east_m, times = [], [], []
    t = T0
    for duration_s, start, end in legs:
        steps = np.arange(0.0, duration_s, 5.0)
        north_m.append(start[0] + (end[0] - start[0]) * steps / duration_s)
        east_m.append(start[1] + (end[1] - start[1]) * steps / duration_s)
        times.append(t + steps)
        t += duration_s
    north = np.concatenate(north_m) + rng.normal(0.0, 4.0, sum(len(a) for a in north_m))
    east = np.concatenate(east_m) + rng.normal(0.0, 4.0, north.size)
    lats, lons = site.projection.inverse_array(east, north)
    accuracies = rng.uniform(5.0, 20.0, north.size)
    return [
        Fix(float(t), float(lat), float(lon), float(acc))
        for t, lat, lon, acc in zip(
            np.concatenate(times), lats, lons, accuracies, strict=True
        )
    ]


def bench_per_ping(
    fences: Sequence[Fence], kind: str, repeats: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Time ``step`` per ping for a device with the given open job fences."""
    fixes = device_track(fences[0], rng)
    best_s = math.inf
    events: list[VisitEvent] = []
    for _ in range(repeats):
        states = [DetectionState() for _ in fences]
        events = []
        started = time.perf_counter()
        for fix in fixes:
            for i, fence in enumerate(fences):
                states[i], found = step(states[i], fix, fence)
                if found:
                    events.extend(found)
        best_s = min(best_s, time.perf_counter() - started)
    per_ping_us = 1e6 * best_s / len(fixes)
    return {
        "open_fences": len(fences),
        "fence_kinds": kind,
        "pings": len(fixes),
        "events": len(events),
        "us_per_ping": round(per_ping_us, 2),
        "us_per_step": round(per_ping_us / len(fences), 2),
    }


def per_ping_fences(rng: np.random.Generator) -> dict[str, list[Fence]]:
    """Return sets of open job fences for one device: circles, polygons and a mix."""
    site = CENTRE
    other_a = (CENTRE[0] + 0.03, CENTRE[1] + 0.05)
    other_b = (CENTRE[0] - 0.04, CENTRE[1] - 0.02)

    def square(fence_id: str, lat: float, lon: float, half_m: float) -> Fence:
        local = LocalProjection.centred_at(lat, lon)
        xs = np.array([-half_m, half_m, half_m, -half_m, -half_m])
        ys = np.array([-half_m, -half_m, half_m, half_m, -half_m])
        lats, lons = local.inverse_array(xs, ys)
        ring = [[lo, la] for la, lo in zip(lats.tolist(), lons.tolist(), strict=True)]
        return polygon_fence(fence_id, {"type": "Polygon", "coordinates": [ring]})

    circles = [
        circle_fence("j1", *site, 80.0),
        circle_fence("j2", *other_a, 150.0),
        circle_fence("j3", *other_b, 50.0),
    ]
    polygons = [
        square("j1", *site, 40.0),
        square("j2", *other_a, 60.0),
        square("j3", *other_b, 30.0),
    ]
    mixed = [polygons[0], circles[1], circles[2]]
    return {"circles": circles, "polygons": polygons, "mixed": mixed}


def run(
    *,
    fences: int = 10_000,
    points: int = 1_000_000,
    resolutions: Sequence[int] = DEFAULT_RESOLUTIONS,
    sample: int = 20_000,
    repeats: int = 5,
    seed: int = 20261204,
) -> list[dict[str, Any]]:
    """Run both measurements and return one row per result.

    Rows of the point-check measurement have ``"measurement": "points"``,
    rows of the per-ping measurement ``"measurement": "ping"``.
    """
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    city = synthetic_fences(fences, rng)
    build_s = time.perf_counter() - started
    logger.info("built %d fences in %.1f s", len(city), build_s)

    rows: list[dict[str, Any]] = []
    for res in resolutions:
        row = bench_point_checks(city, points, res, min(sample, points), repeats, rng)
        row["fence_build_s"] = round(build_s, 1)
        rows.append({"measurement": "points", **row})

    for kind, kind_fences in per_ping_fences(rng).items():
        for count in (1, 2, 3):
            # One pass over the track takes milliseconds, so take many.
            row = bench_per_ping(kind_fences[:count], kind, 20 * repeats, rng)
            rows.append({"measurement": "ping", **row})
    return rows


POINT_COLUMNS = [
    ("res", "H3 res"),
    ("fences", "fences"),
    ("points", "points"),
    ("fence_build_s", "fence build s"),
    ("index_s", "index build s"),
    ("query_s", "query s"),
    ("points_per_s", "points/s"),
    ("pair_checks_per_s", "point-fence checks/s"),
    ("matches", "matches"),
    ("sample", "verified points"),
    ("identical", "identical to shapely"),
]
PING_COLUMNS = [
    ("fence_kinds", "fences"),
    ("open_fences", "open fences"),
    ("pings", "pings"),
    ("events", "events"),
    ("us_per_ping", "µs/ping"),
    ("us_per_step", "µs/step"),
]


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Return rows as a Markdown table with the given (key, title) columns."""
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    lines += [
        "| " + " | ".join(str(row[key]) for key, _ in columns) + " |" for row in rows
    ]
    return "\n".join(lines)


def targets_summary(rows: list[dict[str, Any]]) -> list[str]:
    """Return one line per target with the measured figure and whether it is met."""
    lines = []
    for row in rows:
        if row["measurement"] == "points":
            met = row["points_per_s"] >= POINT_TARGET_PER_S and row["identical"]
            lines.append(
                f"- res {row['res']}: {row['points_per_s']:,} points/s against "
                f"{row['fences']:,} fences, identical to shapely: {row['identical']} "
                f"(target >= {POINT_TARGET_PER_S:,}/s and identical: "
                f"{'met' if met else 'NOT met'})"
            )
    worst = max(
        (row for row in rows if row["measurement"] == "ping"),
        key=lambda r: r["us_per_ping"],
    )
    lines.append(
        f"- per ping: at most {worst['us_per_ping']} µs ({worst['fence_kinds']}, "
        f"{worst['open_fences']} open fences; target <= {PING_TARGET_US:g} µs: "
        f"{'met' if worst['us_per_ping'] <= PING_TARGET_US else 'NOT met'})"
    )
    return lines


def results_section(rows: list[dict[str, Any]], command: str, load: str) -> str:
    """Return the body of the "Geofence" section of the results page."""
    points = [row for row in rows if row["measurement"] == "points"]
    pings = [row for row in rows if row["measurement"] == "ping"]
    return "\n".join(
        [
            f"Command: `{command}`  ",
            f"Date: {today()}  ",
            f"Machine: {machine_description()}  ",
            f"Load average (1 min) at start: {load}",
            "",
            "### Point checks",
            "",
            format_table(points, POINT_COLUMNS),
            "",
            "### Per-ping geofence work",
            "",
            format_table(pings, PING_COLUMNS),
            "",
            "Targets:",
            "",
            *targets_summary(rows),
            "",
            "Notes:",
            "",
            "- *points/s*: points per second through `FenceIndex.contains_many`, each "
            "checked against every fence; *point-fence checks/s* counts each (point, "
            "fence) pair. Timings are the best of the repeats.",
            "- *identical to shapely*: the matches of the verified points equal an "
            "exact shapely test of every fence in its own projection.",
            "- A query costs one `h3.latlng_to_cell` call per point, which holds the "
            "GIL, and an exact test per (point, fence) pair in boundary cells. Finer "
            "resolutions leave fewer such pairs for these 30-300 m fences.",
            "- *µs/ping*: `step` for each of the device's open fences per ping, over a "
            "track with one visit of an hour to the first fence; the other fences are "
            "km away.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; print and record the results."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.geofence", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--fences", type=int, default=10_000, help="active fences (default 10000)"
    )
    parser.add_argument(
        "--points",
        type=int,
        default=1_000_000,
        help="points to check (default 1000000)",
    )
    parser.add_argument(
        "--res",
        type=int,
        action="append",
        default=None,
        help="H3 resolution of the index (repeatable; default "
        f"{', '.join(str(res) for res in DEFAULT_RESOLUTIONS)})",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=20_000,
        help="points verified against shapely (default 20000)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed query runs, the best counting (default 5); per-ping runs are 20 "
        "times as many",
    )
    parser.add_argument("--seed", type=int, default=20261204, help="random seed")
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="print only; leave RESULTS.md unchanged",
    )
    args = parser.parse_args(argv)
    for name in ("fences", "points", "sample", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")

    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    load = f"{os.getloadavg()[0]:.2f}"
    rows = run(
        fences=args.fences,
        points=args.points,
        resolutions=args.res or DEFAULT_RESOLUTIONS,
        sample=args.sample,
        repeats=args.repeats,
        seed=args.seed,
    )
    print(
        format_table([r for r in rows if r["measurement"] == "points"], POINT_COLUMNS)
    )
    print()
    print(format_table([r for r in rows if r["measurement"] == "ping"], PING_COLUMNS))
    print()
    print("\n".join(targets_summary(rows)))
    if not args.no_record:
        command = command_line(
            "benchmarks.geofence", list(argv if argv is not None else sys.argv[1:])
        )
        update_section(SECTION, lambda _old: results_section(rows, command, load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
