"""Fleet simulator: contractors driving real streets, pinging a real server.

Each simulated contractor registers over REST, then works through a queue
of jobs at graph locations: it creates and dispatches the job, drives the
fastest route at the graph's speeds with random slowdowns and stops, and
sends pings through the device WebSocket at the server's advised interval
(or a fixed one). Fixes carry GPS noise that matches their ``acc``; now
and then the phone goes offline and uploads the buffered fixes as one
batch later, and rarely it reports a wild fix kilometres away. On site it
dwells for the service time, then drives to the next job.

The simulator is the load generator behind ``enroute demo`` and the
benchmarks; ``enroute simulate`` runs it against any server. A GPX track
can be replayed instead; a track without timestamps is timed from the
graph's speeds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import websockets
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from eta.graph import RoadGraph

logger = logging.getLogger(__name__)

METRES_PER_DEGREE_LAT = 111_320.0
SITE_RADIUS_M = 60.0
# Typical phone accuracy in the open is 5-15 m; noise is drawn to match acc.
ACCURACY_RANGE_M = (5.0, 15.0)
OFFLINE_GAP_PROBABILITY = 0.15
OFFLINE_GAP_RANGE_S = (20.0, 60.0)
WILD_FIX_PROBABILITY = 0.004
WILD_FIX_DISTANCE_M = (1_500.0, 4_000.0)
#: Seconds between the fixes of a replayed track when --interval is not
#: given: a contractor without a job is advised a minute, too sparse to follow.
REPLAY_INTERVAL_S = 5.0
#: Waits between reconnects after a lost device connection, doubling up to the last.
RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 30.0
#: Close codes after which reconnecting can't help.
FINAL_CLOSE_CODES = frozenset({1008, 4401})
STOP_PROBABILITY_PER_EDGE = 0.08
STOP_RANGE_S = (3.0, 20.0)
SLOWDOWN_RANGE = (0.75, 1.0)


@dataclass
class SimulatorConfig:
    """Simulation settings; times in seconds, distances in metres."""

    base_url: str
    api_key: str
    contractors: int = 5
    jobs_per_contractor: int = 3
    interval_s: float | None = None  # None: follow next_interval_s
    service_s: float = 120.0
    duration_s: float | None = None
    min_trip_s: float = 30.0
    max_trip_s: float = 180.0
    window_slack_s: float = 300.0
    seed: int = 1
    prefix: str = "sim"
    offline_gaps: bool = True
    wild_fixes: bool = True


@dataclass
class SimStats:
    """Counters of one simulator run."""

    pings_sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0
    jobs: list[str] = field(default_factory=list)
    share_urls: dict[str, str] = field(default_factory=dict)
    #: One line per contractor that stopped on an error.
    failures: list[str] = field(default_factory=list)


@dataclass
class Route:
    """A drive along a polyline: points and the time to reach each one."""

    lat: np.ndarray
    lon: np.ndarray
    time_s: np.ndarray  # cumulative seconds from the start
    end_node: int

    @property
    def duration_s(self) -> float:
        return float(self.time_s[-1])

    def position(self, elapsed_s: float) -> tuple[float, float, float, float]:
        """Return (lat, lon, speed_mps, heading_deg) after ``elapsed_s`` of driving."""
        t = min(max(elapsed_s, 0.0), self.duration_s)
        index = int(np.searchsorted(self.time_s, t, side="right")) - 1
        index = min(max(index, 0), len(self.time_s) - 2)
        t0, t1 = self.time_s[index], self.time_s[index + 1]
        share = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        lat0, lon0 = self.lat[index], self.lon[index]
        lat1, lon1 = self.lat[index + 1], self.lon[index + 1]
        lat = lat0 + (lat1 - lat0) * share
        lon = lon0 + (lon1 - lon0) * share
        dy = (lat1 - lat0) * METRES_PER_DEGREE_LAT
        dx = (lon1 - lon0) * METRES_PER_DEGREE_LAT * math.cos(math.radians(lat0))
        step_m = math.hypot(dx, dy)
        speed = step_m / (t1 - t0) if t1 > t0 and t < self.duration_s else 0.0
        heading = (math.degrees(math.atan2(dx, dy)) + 360.0) % 360.0
        return float(lat), float(lon), speed, heading


class RoutePlanner:
    """Fastest routes on a road graph, with random slowdowns and stops."""

    def __init__(self, graph: RoadGraph, rng: random.Random) -> None:
        self.graph = graph
        self.rng = rng
        indptr, indices, weights = graph.forward_csr
        self.matrix = csr_matrix((weights, indices, indptr), shape=(graph.num_nodes, graph.num_nodes))

    def travel_times_from(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """Return seconds to every node and the predecessor tree from ``node``."""
        times, predecessors = dijkstra(self.matrix, indices=node, return_predecessors=True)
        return times, predecessors

    def pick_destination(self, origin: int, min_s: float, max_s: float) -> int:
        """Pick a random node whose fastest time from ``origin`` lies in [min_s, max_s]."""
        times, _ = self.travel_times_from(origin)
        candidates = np.flatnonzero((times >= min_s) & (times <= max_s))
        if candidates.size == 0:
            finite = np.flatnonzero(np.isfinite(times) & (times > 0))
            if finite.size == 0:
                return origin
            candidates = finite[np.argsort(times[finite])[-max(1, finite.size // 4):]]
        return int(self.rng.choice(list(candidates)))

    def route(self, origin: int, destination: int) -> Route:
        """Return the drive from ``origin`` to ``destination`` along the fastest path."""
        graph = self.graph
        _, predecessors = self.travel_times_from(origin)
        nodes = [destination]
        while nodes[-1] != origin and predecessors[nodes[-1]] >= 0:
            nodes.append(int(predecessors[nodes[-1]]))
        nodes.reverse()
        lats = [float(graph.node_lat[origin])]
        lons = [float(graph.node_lon[origin])]
        times = [0.0]
        for u, v in zip(nodes, nodes[1:]):
            edges = graph.out_edge_indices(u)
            edges = edges[graph.edge_v[edges] == v]
            edge = int(edges[np.argmin(graph.edge_travel_time_s[edges])])
            polyline = graph.edge_polyline(edge)
            slowdown = self.rng.uniform(*SLOWDOWN_RANGE)
            edge_time_s = float(graph.edge_travel_time_s[edge]) / slowdown
            steps = np.hypot(np.diff(polyline[:, 0]), np.diff(polyline[:, 1]))
            shares = steps / steps.sum() if steps.sum() > 0 else np.full(len(steps), 1 / max(len(steps), 1))
            for (lat, lon), share in zip(polyline[1:], shares):
                lats.append(float(lat))
                lons.append(float(lon))
                times.append(times[-1] + edge_time_s * float(share))
            if self.rng.random() < STOP_PROBABILITY_PER_EDGE:
                # A traffic light or a turn across traffic: stand still.
                lats.append(lats[-1])
                lons.append(lons[-1])
                times.append(times[-1] + self.rng.uniform(*STOP_RANGE_S))
        if len(lats) == 1:
            lats.append(lats[0])
            lons.append(lons[0])
            times.append(1.0)
        return Route(np.array(lats), np.array(lons), np.array(times), destination)


def noisy_fix(rng: random.Random, t: float, lat: float, lon: float, speed: float, heading: float) -> dict[str, Any]:
    """Return a ping whose position error matches its reported accuracy.

    ``acc`` is read as the radius containing about 68 % of fixes, as Android
    reports it, so each axis gets Gaussian noise with sigma ``acc / 1.5``
    (a 2-D Gaussian has 68 % of its mass within about 1.5 sigma).
    """
    acc = rng.uniform(*ACCURACY_RANGE_M)
    sigma_m = acc / 1.5
    north_m, east_m = rng.gauss(0, sigma_m), rng.gauss(0, sigma_m)
    fix = {
        "t": round(float(t), 3),
        "lat": float(lat) + north_m / METRES_PER_DEGREE_LAT,
        "lon": float(lon) + east_m / (METRES_PER_DEGREE_LAT * math.cos(math.radians(lat))),
        "acc": round(acc, 1),
        "spd": round(float(speed), 2),
    }
    if speed >= 0.5:
        fix["hdg"] = round(float(heading), 1)
    return fix


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


class SimulatedContractor:
    """One contractor: its device connection and its queue of jobs."""

    def __init__(
        self,
        index: int,
        config: SimulatorConfig,
        planner: RoutePlanner,
        http: httpx.AsyncClient,
        stats: SimStats,
        rng: random.Random,
    ) -> None:
        self.id = f"{config.prefix}-c{index + 1}"
        self.config = config
        self.planner = planner
        self.http = http
        self.stats = stats
        self.rng = rng
        self.node = rng.randrange(planner.graph.num_nodes)
        self.token = ""
        self.connection: Any = None
        self.advised_interval_s = 5.0
        self.fixed_interval_s: float | None = None
        self.deadline: float | None = None
        self.ws_url = config.base_url.replace("http", "ws", 1) + "/v1/devices/stream"
        self.buffer: list[dict[str, Any]] = []
        self.offline_window = (0.0, 0.0)
        self.queue: list[tuple[str, int]] = []

    async def register(self) -> None:
        response = await self.http.post("/v1/contractors", json={"id": self.id, "name": f"Contractor {self.id}"})
        response.raise_for_status()
        self.token = response.json()["device_token"]

    async def plan_jobs(self) -> None:
        """Create the contractor's whole job queue, with windows along the plan.

        Each window starts at the planned arrival minus half the slack. It
        ends the slack plus a quarter of the trip after the planned arrival,
        so a contractor held up by stops and slowdowns can still be on time.
        """
        config = self.config
        graph = self.planner.graph
        node = self.node
        planned_t = time.time()
        for number in range(1, config.jobs_per_contractor + 1):
            destination = self.planner.pick_destination(node, config.min_trip_s, config.max_trip_s)
            times, _ = self.planner.travel_times_from(node)
            trip_s = float(times[destination]) if math.isfinite(times[destination]) else config.max_trip_s
            arrival_t = planned_t + trip_s * 1.15
            job_id = f"{self.id}-j{number}"
            body = {
                "id": job_id,
                "contractor_id": self.id,
                "site": {
                    "lat": float(graph.node_lat[destination]),
                    "lon": float(graph.node_lon[destination]),
                    "radius_m": SITE_RADIUS_M,
                },
                "window": {
                    "start": iso(arrival_t - config.window_slack_s / 2),
                    "end": iso(arrival_t + trip_s * 0.25 + config.window_slack_s),
                },
                "address": f"Customer {job_id}",
            }
            response = await self.http.post("/v1/jobs", json=body)
            response.raise_for_status()
            share = await self.http.post(f"/v1/jobs/{job_id}/share")
            share.raise_for_status()
            self.stats.share_urls[job_id] = share.json()["url"]
            self.stats.jobs.append(job_id)
            self.queue.append((job_id, destination))
            node = destination
            planned_t = arrival_t + config.service_s

    async def run(self, deadline: float | None) -> None:
        self.deadline = deadline
        await self._open()
        try:
            for job_id, destination in self.queue:
                if deadline is not None and time.time() >= deadline:
                    break
                await self._dispatch(job_id)
                route = self.planner.route(self.node, destination)
                if not await self.drive(route, deadline):
                    break
                self.node = destination
                await self.dwell(self.config.service_s, deadline)
            # The next job's drive takes the contractor away from a site;
            # after the last one, a short drive confirms the departure.
            if self.queue and (deadline is None or time.time() < deadline):
                await self.leave(deadline)
            await self.flush_buffer()
        finally:
            await self._close()

    async def _open(self) -> None:
        self.connection = await websockets.connect(
            self.ws_url, additional_headers={"Authorization": f"Bearer {self.token}"}
        )

    async def _close(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            await connection.close()

    async def _wait_to_retry(self, delay_s: float, action: str, error: Exception) -> float:
        """Sleep before a retry and return the next delay; re-raise ``error`` when the deadline comes first."""
        if self.deadline is not None and time.time() + delay_s >= self.deadline:
            raise error
        logger.warning("contractor %s: %s failed (%s); retrying in %.0f s", self.id, action, error, delay_s)
        await asyncio.sleep(delay_s)
        return min(delay_s * 2, RECONNECT_MAX_S)

    async def _dispatch(self, job_id: str) -> None:
        """Dispatch a job, retrying while the server restarts (connection errors and 503)."""
        delay_s = RECONNECT_FIRST_S
        while True:
            try:
                (await self.http.post(f"/v1/jobs/{job_id}/dispatch")).raise_for_status()
                return
            except httpx.TransportError as error:
                delay_s = await self._wait_to_retry(delay_s, f"dispatching {job_id}", error)
            except httpx.HTTPStatusError as error:
                if error.response.status_code != 503:
                    raise
                delay_s = await self._wait_to_retry(delay_s, f"dispatching {job_id}", error)

    async def leave(self, deadline: float | None) -> None:
        """Drive away from the site, far enough for the departure to be confirmed."""
        exit_node = self.planner.pick_destination(self.node, 20.0, 60.0)
        route = self.planner.route(self.node, exit_node)
        await self.drive(route, deadline)
        self.node = exit_node

    async def replay(self, route: Route, deadline: float | None = None) -> None:
        """Drive a recorded or planned track instead of a planned job queue, until ``deadline``."""
        self.deadline = deadline
        self.fixed_interval_s = REPLAY_INTERVAL_S
        await self._open()
        try:
            await self.drive(route, deadline)
            await self.flush_buffer()
        finally:
            await self._close()

    def interval_s(self) -> float:
        return self.config.interval_s or self.fixed_interval_s or self.advised_interval_s

    async def drive(self, route: Route, deadline: float | None) -> bool:
        """Drive the route, pinging; return False when the deadline cut it short."""
        started = time.time()
        if self.config.offline_gaps and self.rng.random() < OFFLINE_GAP_PROBABILITY:
            gap_start = started + self.rng.uniform(0, max(1.0, route.duration_s / 2))
            self.offline_window = (gap_start, gap_start + self.rng.uniform(*OFFLINE_GAP_RANGE_S))
        else:
            self.offline_window = (0.0, 0.0)
        while True:
            now = time.time()
            elapsed = now - started
            lat, lon, speed, heading = route.position(elapsed)
            await self.ping(now, lat, lon, speed, heading)
            if elapsed >= route.duration_s:
                return True
            if deadline is not None and now >= deadline:
                return False
            await asyncio.sleep(min(self.interval_s(), route.duration_s - elapsed + 0.05))

    async def dwell(self, service_s: float, deadline: float | None) -> None:
        """Stay on site for the service time, pinging, with a short walk in between."""
        graph = self.planner.graph
        lat, lon = float(graph.node_lat[self.node]), float(graph.node_lon[self.node])
        started = time.time()
        while True:
            now = time.time()
            if now - started >= service_s or (deadline is not None and now >= deadline):
                break
            await self.ping(now, lat, lon, 0.0, 0.0)
            await asyncio.sleep(self.interval_s())

    async def ping(self, t: float, lat: float, lon: float, speed: float, heading: float) -> None:
        fix = noisy_fix(self.rng, t, lat, lon, speed, heading)
        if self.config.wild_fixes and self.rng.random() < WILD_FIX_PROBABILITY:
            bearing = self.rng.uniform(0, 2 * math.pi)
            distance = self.rng.uniform(*WILD_FIX_DISTANCE_M)
            fix["lat"] += distance * math.cos(bearing) / METRES_PER_DEGREE_LAT
            fix["lon"] += distance * math.sin(bearing) / (METRES_PER_DEGREE_LAT * math.cos(math.radians(lat)))
        start, end = self.offline_window
        if start <= t < end:
            self.buffer.append(fix)
            return
        if self.buffer:
            self.buffer.append(fix)
            await self.flush_buffer()
            return
        await self.send(fix, 1)

    async def flush_buffer(self) -> None:
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        await self.send({"pings": batch}, len(batch))

    async def send(self, frame: dict[str, Any], count: int) -> None:
        """Send a frame and count its ack; after a lost connection, reconnect and send it again."""
        self.stats.pings_sent += count
        text = orjson.dumps(frame).decode()
        delay_s = RECONNECT_FIRST_S
        while True:
            try:
                if self.connection is None:
                    await self._open()
                await self.connection.send(text)
                reply = orjson.loads(await self.connection.recv())
                break
            except websockets.ConnectionClosed as error:
                if error.rcvd is not None and error.rcvd.code in FINAL_CLOSE_CODES:
                    raise
                self.connection = None
                delay_s = await self._wait_to_retry(delay_s, "the device connection", error)
            except (OSError, websockets.InvalidHandshake) as error:
                self.connection = None
                delay_s = await self._wait_to_retry(delay_s, "reconnecting", error)
        if reply.get("type") != "ack":
            self.stats.errors += 1
            logger.warning("contractor %s got an error reply: %s", self.id, reply.get("error"))
            return
        self.stats.accepted += reply["accepted"]
        self.stats.duplicates += reply["duplicates"]
        self.stats.rejected += len(reply["rejected"])
        self.advised_interval_s = float(reply.get("next_interval_s") or self.advised_interval_s)


class Simulator:
    """A fleet of simulated contractors against one server."""

    def __init__(self, config: SimulatorConfig, graph: RoadGraph) -> None:
        self.config = config
        self.graph = graph
        self.stats = SimStats()
        self.rng = random.Random(config.seed)
        self.http = httpx.AsyncClient(
            base_url=config.base_url,
            headers={"Authorization": f"Bearer {config.api_key}"},
            timeout=30,
        )
        planner = RoutePlanner(graph, self.rng)
        self.contractors = [
            SimulatedContractor(i, config, planner, self.http, self.stats, random.Random(config.seed * 1000 + i))
            for i in range(config.contractors)
        ]

    async def setup(self) -> None:
        """Register the contractors and create their job queues."""
        for contractor in self.contractors:
            await contractor.register()
            await contractor.plan_jobs()

    async def run(self) -> SimStats:
        """Drive every contractor until its jobs are done or the duration ends."""
        deadline = time.time() + self.config.duration_s if self.config.duration_s else None
        logger.info(
            "simulating %d contractors with %d jobs each (seed %d)",
            len(self.contractors), self.config.jobs_per_contractor, self.config.seed,
        )
        results = await asyncio.gather(
            *(contractor.run(deadline) for contractor in self.contractors), return_exceptions=True
        )
        for contractor, result in zip(self.contractors, results):
            if isinstance(result, Exception):
                logger.error("contractor %s stopped: %s", contractor.id, result)
                self.stats.failures.append(f"contractor {contractor.id}: {result}")
        return self.stats

    async def close(self) -> None:
        await self.http.aclose()

    async def summary(self) -> dict[str, Any]:
        """Collect job outcomes and window coverage from the server."""
        arrived = completed = on_time = 0
        for job_id in self.stats.jobs:
            response = await self.http.get(f"/v1/jobs/{job_id}")
            if response.status_code == 404:
                continue
            response.raise_for_status()
            job = response.json()
            events = {event["type"]: event for event in job["timeline"]}
            arrival = events.get("job.arrived")
            if arrival is not None:
                arrived += 1
                end = datetime.fromisoformat(job["window"]["end"]).timestamp()
                on_time += int(arrival["t"] <= end)
            completed += int("job.completed" in events)
        coverage_response = await self.http.get("/v1/eta/coverage")
        coverage_response.raise_for_status()
        coverage = coverage_response.json()
        return {
            "pings_sent": self.stats.pings_sent,
            "pings_accepted": self.stats.accepted,
            "duplicates": self.stats.duplicates,
            "rejected": self.stats.rejected,
            "error_replies": self.stats.errors,
            "jobs": len(self.stats.jobs),
            "arrived": arrived,
            "completed": completed,
            "on_time_rate": on_time / arrived if arrived else None,
            "coverage": coverage.get("lead_times", []),
        }


def load_gpx(path: Path) -> list[tuple[float, float, float | None]]:
    """Read (lat, lon, time or None) points from a GPX file's tracks and routes."""
    import gpxpy

    with path.open() as handle:
        gpx = gpxpy.parse(handle)
    points: list[tuple[float, float, float | None]] = []
    for track in gpx.tracks:
        for segment in track.segments:
            for point in segment.points:
                points.append((point.latitude, point.longitude, point.time.timestamp() if point.time else None))
    for route in gpx.routes:
        for point in route.points:
            points.append((point.latitude, point.longitude, point.time.timestamp() if point.time else None))
    return points


def time_track(graph: RoadGraph, points: list[tuple[float, float, float | None]]) -> Route:
    """Give a track's points times: their own, or from the graph's speeds.

    A point without a time is reached at the speed of the road nearest to
    the midpoint of its leg (the graph's speed for that road), so a planned
    route drawn without timestamps replays at driving pace.
    """
    from eta.snap import snap_points

    if len(points) < 2:
        raise ValueError(f"track must have at least 2 points, got {len(points)}")
    lats = np.array([p[0] for p in points])
    lons = np.array([p[1] for p in points])
    own_times = [p[2] for p in points]
    if all(t is not None for t in own_times):
        times = np.array(own_times, dtype=float) - float(own_times[0])  # type: ignore[arg-type]
        return Route(lats, lons, times, -1)
    mid_lats = (lats[1:] + lats[:-1]) / 2
    mid_lons = (lons[1:] + lons[:-1]) / 2
    snaps = snap_points(graph, mid_lats, mid_lons, max_distance_m=500.0, warn=False)
    speeds_kph = np.where(snaps.edge >= 0, graph.edge_speed_kph[np.maximum(snaps.edge, 0)], 30.0)
    dy = np.diff(lats) * METRES_PER_DEGREE_LAT
    dx = np.diff(lons) * METRES_PER_DEGREE_LAT * np.cos(np.radians(mid_lats))
    leg_s = np.hypot(dx, dy) / (speeds_kph / 3.6)
    return Route(lats, lons, np.concatenate(([0.0], np.cumsum(leg_s))), -1)
