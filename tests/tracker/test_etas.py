"""EtaService.update_many against real Redis on the bundled Helsinki graph."""

from __future__ import annotations

import logging
import math
import time
import uuid

import pytest

from eta.build import load_graph
from eta.graph import RoadGraph
from tracker.batch import Batch
from tracker.etas import VECTOR_SNAP_MIN, EtaRequest, EtaService, EtaUpdate
from tracker.jobs import Job, Visit
from tracker.pings import Ping
from tracker.store import CommandPipe, connect

SITE = (60.1716, 24.9443)  # the middle of the bundled graph


@pytest.fixture(scope="module")
def helsinki_graph(graph_cache_dir: object) -> RoadGraph:
    return load_graph(None, cache_dir=str(graph_cache_dir))


def job(index: int) -> Job:
    now = time.time()
    return Job(
        id=f"j{index}",
        contractor_id=f"c{index}",
        site={"lat": SITE[0], "lon": SITE[1], "radius_m": 40},
        visits=[Visit(now, now + 3600)],
    )


def ring(count: int) -> list[Ping]:
    """Return pings on a ring 300-500 m around the site, inside the graph."""
    now = time.time()
    pings = []
    for index in range(count):
        angle = 2 * math.pi * index / count
        radius = 0.003 + 0.0015 * (index % 3) / 2
        pings.append(
            Ping(now, SITE[0] + radius * math.cos(angle), SITE[1] + radius * math.sin(angle), 5.0)
        )
    return pings


async def updates_for(redis_url: str, graph: RoadGraph, pings: list[Ping]) -> list[EtaUpdate | None]:
    client = connect(redis_url)
    commands = CommandPipe(client)
    service = EtaService(client, graph)
    org = f"etas-{uuid.uuid4().hex[:8]}"
    try:
        requests = [EtaRequest(org, job(index), ping, None) for index, ping in enumerate(pings)]
        batch = Batch(commands)
        updates = await service.update_many(requests, batch)
        await batch.execute()
    finally:
        await commands.aclose()
        await client.aclose()
    return updates


async def etas_for(redis_url: str, graph: RoadGraph, pings: list[Ping]) -> list[float | None]:
    updates = await updates_for(redis_url, graph, pings)
    return [None if update is None else update.eta_s for update in updates]


async def test_arrival_window_whole_seconds_around_eta(
    redis_url: str, helsinki_graph: RoadGraph
) -> None:
    ping = ring(1)[0]
    update = (await updates_for(redis_url, helsinki_graph, [ping]))[0]
    assert update is not None
    assert update.earliest_t == math.floor(update.earliest_t)
    assert update.latest_t == math.ceil(update.latest_t)
    assert update.earliest_t <= ping.t + update.eta_s <= update.latest_t


async def test_scalar_snaps_match_vector(
    redis_url: str, helsinki_graph: RoadGraph
) -> None:
    pings = ring(12)
    together = await etas_for(redis_url, helsinki_graph, pings)
    alone = [(await etas_for(redis_url, helsinki_graph, [ping]))[0] for ping in pings]
    assert len(pings) >= VECTOR_SNAP_MIN
    assert None not in together
    assert together == alone


async def test_off_network_warns_once_per_job(
    redis_url: str, helsinki_graph: RoadGraph, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(redis_url)
    commands = CommandPipe(client)
    service = EtaService(client, helsinki_graph)
    far = Ping(time.time(), 60.30, 25.20, 5.0)  # 15 km outside the graph
    org = f"etas-{uuid.uuid4().hex[:8]}"
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                batch = Batch(commands)
                updates = await service.update_many([EtaRequest(org, job(0), far, None)], batch)
                await batch.execute()
    finally:
        await commands.aclose()
        await client.aclose()
    assert updates == [None]
    assert [record.getMessage() for record in caplog.records] == [
        f"no ETA for job j0 of org {org}: contractor c0 at (60.300000, 25.200000) "
        "is off the road network"
    ]
