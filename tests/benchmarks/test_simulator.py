"""The fleet simulator's routes, noise and GPX timing, without a server."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import websockets

from benchmarks import simulator
from benchmarks.simulator import (
    RoutePlanner,
    SimStats,
    SimulatedContractor,
    SimulatorConfig,
    load_gpx,
    noisy_fix,
    time_track,
)
from eta.build import load_graph
from support import shared_dir

GPX_WITHOUT_TIMES = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <trk><trkseg>
    <trkpt lat="60.16700" lon="24.94200"/>
    <trkpt lat="60.16750" lon="24.94300"/>
    <trkpt lat="60.16800" lon="24.94400"/>
  </trkseg></trk>
</gpx>
"""


@pytest.fixture(scope="module")
def helsinki(graph_cache_dir: Path):  # type: ignore[no-untyped-def]
    return load_graph(None, cache_dir=graph_cache_dir)


def test_route_ends_at_destination(helsinki) -> None:  # type: ignore[no-untyped-def]
    planner = RoutePlanner(helsinki, random.Random(3))
    destination = planner.pick_destination(0, 20.0, 200.0)
    route = planner.route(0, destination)
    lat, lon, _, _ = route.position(route.duration_s + 10)
    assert lat == pytest.approx(float(helsinki.node_lat[destination]))
    assert lon == pytest.approx(float(helsinki.node_lon[destination]))


def test_route_times_increase(helsinki) -> None:  # type: ignore[no-untyped-def]
    planner = RoutePlanner(helsinki, random.Random(5))
    route = planner.route(0, planner.pick_destination(0, 20.0, 200.0))
    assert np.all(np.diff(route.time_s) >= 0)


def test_route_not_faster_than_graph(helsinki) -> None:  # type: ignore[no-untyped-def]
    planner = RoutePlanner(helsinki, random.Random(7))
    destination = planner.pick_destination(0, 20.0, 200.0)
    times, _ = planner.travel_times_from(0)
    route = planner.route(0, destination)
    assert route.duration_s >= times[destination] - 1e-6


def test_noisy_fix_error_matches_accuracy() -> None:
    rng = random.Random(11)
    inside = 0
    for _ in range(4000):
        fix = noisy_fix(rng, 0.0, 60.17, 24.94, 5.0, 90.0)
        north_m = (fix["lat"] - 60.17) * 111_320.0
        east_m = (fix["lon"] - 24.94) * 111_320.0 * math.cos(math.radians(60.17))
        inside += math.hypot(north_m, east_m) <= fix["acc"]
    # acc is the radius of about 68 % of fixes.
    assert 0.6 < inside / 4000 < 0.76


def test_time_track_without_timestamps(tmp_path: Path, helsinki) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "track.gpx"
    path.write_text(GPX_WITHOUT_TIMES)
    points = load_gpx(path)
    route = time_track(helsinki, points)
    assert [p[2] for p in points] == [None, None, None]
    assert route.time_s[0] == 0.0
    assert np.all(np.diff(route.time_s) > 0)
    # Two legs of about 80 m each at town speeds: tens of seconds.
    assert 5.0 < route.duration_s < 60.0


def test_time_track_shared_andorra_gpx(graph_cache_dir: Path) -> None:
    shared = shared_dir()
    if shared is None:
        pytest.skip("shared test data not found beside the repository (set ENROUTE_SHARED_DIR)")
    graph = load_graph(str(shared / "data/osm/andorra.osm.pbf"), cache_dir=graph_cache_dir)
    points = load_gpx(shared / "data/gps/andorra_for_map_matching.gpx")
    route = time_track(graph, points)
    assert len(points) == 21
    assert np.all(np.diff(route.time_s) > 0)


async def test_contractor_send_survives_server_restart(  # type: ignore[no-untyped-def]
    helsinki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A device endpoint that acks each frame, but closes the first
    # connection with 1012 (service restart) before acking anything.
    connections = 0

    async def endpoint(connection: websockets.ServerConnection) -> None:
        nonlocal connections
        connections += 1
        async for _ in connection:
            if connections == 1:
                await connection.close(1012, "restarting")
                return
            ack = {"type": "ack", "accepted": 1, "duplicates": 0, "rejected": [], "next_interval_s": 5}
            await connection.send(orjson.dumps(ack).decode())

    async with websockets.serve(endpoint, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = SimulatorConfig(base_url=f"http://127.0.0.1:{port}", api_key="k")
        stats = SimStats()
        contractor = SimulatedContractor(
            0, config, RoutePlanner(helsinki, random.Random(1)), None, stats, random.Random(1)  # type: ignore[arg-type]
        )
        contractor.deadline = time.time() + 30
        monkeypatch.setattr(simulator, "RECONNECT_FIRST_S", 0.05)
        await contractor._open()
        try:
            await contractor.send({"t": time.time(), "lat": 60.17, "lon": 24.94}, 1)
        finally:
            await contractor._close()
    assert (connections, stats.accepted) == (2, 1)


async def test_simulator_run_records_stopped_contractor(  # type: ignore[no-untyped-def]
    helsinki, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run_rejected(self: SimulatedContractor, deadline: float | None) -> None:
        raise RuntimeError("received 4401 (private use) invalid device token")

    monkeypatch.setattr(SimulatedContractor, "run", run_rejected)
    fleet = simulator.Simulator(SimulatorConfig(base_url="http://127.0.0.1:9", api_key="k", contractors=2), helsinki)
    try:
        stats = await fleet.run()
    finally:
        await fleet.close()
    assert stats.failures == [
        "contractor sim-c1: received 4401 (private use) invalid device token",
        "contractor sim-c2: received 4401 (private use) invalid device token",
    ]
