"""Fleet queries for dispatchers: latest positions, heatmap, nearest contractors.

All read the H3 position index of ``tracker.keys``. The heatmap groups the
per-cell counts by parent cell in numpy, so its cost grows with the number
of occupied cells, not of contractors. The nearby search reads the score
ranges of a growing disk of coarse cells around the point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h3
import numpy as np
import orjson

from tracker import keys
from tracker.jobs import JobStatus
from tracker.store import RedisClient
from tracker.tracking import distance_m

HEATMAP_RESOLUTIONS = range(5, 11)
# The nearby search starts with a disk of this resolution around the point.
NEARBY_SEARCH_RES = 7
NEARBY_MAX_RINGS = 6


@dataclass(frozen=True, slots=True)
class FleetMember:
    """A contractor's latest fix with the job it is on, if any."""

    contractor_id: str
    fix: dict[str, Any]
    job_id: str | None
    status: str | None


async def fleet(client: RedisClient, org: str) -> list[FleetMember]:
    """Return every contractor with a latest position."""
    members = [member.decode() for member in await client.zrange(keys.cells(org), 0, -1)]
    if not members:
        return []
    pipe = client.pipeline(transaction=False)
    for contractor_id in members:
        pipe.hmget(keys.device(org, contractor_id), "fix", "jobs")
    rows = await pipe.execute()

    jobs = {}
    pipe = client.pipeline(transaction=False)
    for contractor_id, (fix, listed) in zip(members, rows):
        if fix and listed:
            job_id = listed.decode().split(",")[0]
            jobs[contractor_id] = job_id
            pipe.hget(keys.job(org, job_id), "status")
    statuses = dict(zip(jobs.values(), await pipe.execute())) if jobs else {}

    found = []
    for contractor_id, (fix, _) in zip(members, rows):
        if not fix:
            continue
        job_id = jobs.get(contractor_id)
        status = statuses.get(job_id) if job_id else None
        found.append(
            FleetMember(contractor_id, orjson.loads(fix), job_id, status.decode() if status else None)
        )
    return found


def fleet_geojson(members: list[FleetMember]) -> dict[str, Any]:
    """Render fleet members as a GeoJSON FeatureCollection."""
    features = []
    for member in members:
        fix = member.fix
        properties = {
            "contractor_id": member.contractor_id,
            "t": fix["t"],
            "acc": fix.get("acc"),
            "spd": fix.get("spd"),
            "hdg": fix.get("hdg"),
            "job_id": member.job_id,
            "status": member.status,
        }
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [fix["lon"], fix["lat"]]},
                "properties": properties,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def check_resolution(res: int) -> int:
    """Return ``res`` if the heatmap supports it, else raise ValueError."""
    if res not in HEATMAP_RESOLUTIONS:
        raise ValueError(f"res must be within 5..10, got {res}")
    return res


async def heatmap(
    client: RedisClient, org: str, res: int, position_res: int, status: str | None = None
) -> dict[str, int]:
    """Count contractors per H3 cell of resolution ``res``.

    Without a status filter, and at the index's resolution or coarser, this
    reads only the per-cell counts. Otherwise it reads the latest fix of
    every contractor.
    """
    check_resolution(res)
    if status is not None or res > position_res:
        # Finer than the index, or filtered by status: count the latest fixes.
        if status is not None and status not in {s.value for s in JobStatus} | {"idle"}:
            raise ValueError(f"status must be a job status or 'idle', got {status!r}")
        members = await fleet(client, org)
        matching = [m for m in members if status is None or (m.status or "idle") == status]
        cells = [h3.latlng_to_cell(m.fix["lat"], m.fix["lon"], res) for m in matching]
        counts: dict[str, int] = {}
        for cell in cells:
            counts[cell] = counts.get(cell, 0) + 1
        return counts

    raw = await client.hgetall(keys.heat(org))
    if not raw:
        return {}
    scores = np.fromiter((int(k) for k in raw), dtype=np.int64, count=len(raw))
    weights = np.fromiter((int(v) for v in raw.values()), dtype=np.int64, count=len(raw))
    parents = keys.parent_scores(scores, position_res, res)
    unique, inverse = np.unique(parents, return_inverse=True)  # type: ignore[call-overload]
    totals = np.bincount(inverse, weights=weights)
    return {
        h3.int_to_str(int(cell)): int(total)
        for cell, total in zip(unique, totals)
        if total > 0
    }


def heatmap_geojson(counts: dict[str, int]) -> dict[str, Any]:
    """Render heatmap counts as GeoJSON hexagons."""
    features = []
    for cell, count in counts.items():
        ring = [[lon, lat] for lat, lon in h3.cell_to_boundary(cell)]
        ring.append(ring[0])
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"h3": cell, "count": count},
            }
        )
    return {"type": "FeatureCollection", "features": features}


async def nearby(
    client: RedisClient, org: str, lat: float, lon: float, limit: int
) -> list[tuple[str, float, dict[str, Any]]]:
    """Return up to ``limit`` (contractor id, distance_m, fix), nearest first.

    Notes
    -----
    Searches disks of resolution-7 cells (about 1.2 km across) of growing
    size around the point; each cell is one score range of the index. The
    disk grows until it contains ``limit`` contractors and the nearest ones
    can't lie outside it, or the disk reaches ``NEARBY_MAX_RINGS`` rings,
    after which the whole fleet is ranked.
    """
    origin = h3.latlng_to_cell(lat, lon, NEARBY_SEARCH_RES)
    edge_m = h3.average_hexagon_edge_length(NEARBY_SEARCH_RES, unit="m")
    seen: set[str] = set()
    candidates: list[str] = []
    for rings in range(1, NEARBY_MAX_RINGS + 1):
        new_cells = [cell for cell in h3.grid_disk(origin, rings) if cell not in seen]
        seen.update(new_cells)
        pipe = client.pipeline(transaction=False)
        for cell in new_cells:
            low, high = keys.score_range(cell)
            pipe.zrangebyscore(keys.cells(org), low, high)
        for found in await pipe.execute():
            candidates.extend(member.decode() for member in found)
        # Cells k steps apart have centres at least 1.5 k edges apart, so any
        # point this close to the query point lies inside the disk. The 0.8
        # allows for cells of unequal size.
        covered_m = (1.5 * rings - 2.0) * edge_m * 0.8
        ranked = await _rank(client, org, candidates, lat, lon)
        if len(ranked) >= limit and ranked[limit - 1][1] <= covered_m:
            return ranked[:limit]
    everyone = [member.decode() for member in await client.zrange(keys.cells(org), 0, -1)]
    return (await _rank(client, org, everyone, lat, lon))[:limit]


async def _rank(
    client: RedisClient, org: str, contractor_ids: list[str], lat: float, lon: float
) -> list[tuple[str, float, dict[str, Any]]]:
    if not contractor_ids:
        return []
    pipe = client.pipeline(transaction=False)
    for contractor_id in contractor_ids:
        pipe.hget(keys.device(org, contractor_id), "fix")
    ranked = []
    for contractor_id, raw in zip(contractor_ids, await pipe.execute()):
        if raw:
            fix = orjson.loads(raw)
            ranked.append((contractor_id, distance_m(lat, lon, fix["lat"], fix["lon"]), fix))
    ranked.sort(key=lambda item: item[1])
    return ranked
