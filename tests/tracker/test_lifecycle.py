"""The lifecycle in one process with the ingest path, against the session's real Redis."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tracker.etas import EtaService
from tracker.ingest import Ingest
from tracker.jobs import Event, Job, JobStatus, Visit
from tracker.lifecycle import Lifecycle
from tracker.settings import load_settings
from tracker.store import PingWriter, connect

SITE = {"lat": 60.16935, "lon": 24.93890, "radius_m": 50.0}
EARTH_M_PER_DEGREE = 111_195.0


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("graph-cache")


@contextlib.asynccontextmanager
async def pipeline(redis_url: str, graph_dir: Path) -> AsyncIterator[tuple[Ingest, Lifecycle]]:
    """The ingest path and the lifecycle wired as the server wires them."""
    settings = load_settings(redis_url=redis_url)
    client = connect(redis_url)
    writer = PingWriter(client)
    ingest = Ingest(writer, settings)
    etas = await EtaService.create(client, None, str(graph_dir))
    lifecycle = Lifecycle(client, settings, etas, commands=writer.command_pipe())
    ingest.observers.append(lifecycle.on_pings)
    writer.on_stored = lifecycle.prepare_batch
    try:
        yield ingest, lifecycle
    finally:
        await lifecycle.stop()
        await writer.aclose()
        await client.aclose()


def approach_and_arrive(t0: float) -> list[dict[str, float]]:
    """Fixes every 10 s from 300 m north of the site to 2 m from its centre, then 2 min on site."""
    pings = []
    for step, north_m in enumerate([*range(300, 0, -40), *[2] * 12]):
        lat = SITE["lat"] + north_m / EARTH_M_PER_DEGREE
        pings.append({"t": t0 + 10.0 * step, "lat": lat, "lon": SITE["lon"], "acc": 8.0})
    return pings


def first_inside_t(pings: list[dict[str, float]]) -> float:
    return next(p["t"] for p in pings if abs(p["lat"] - SITE["lat"]) * EARTH_M_PER_DEGREE < SITE["radius_m"])


async def dispatched_job(lifecycle: Lifecycle, org: str, t0: float, window_end: float) -> Job:
    job = Job(id="j1", contractor_id="c1", site=dict(SITE), visits=[Visit(t0, window_end)])
    await lifecycle.jobs.create(org, job)
    await lifecycle.dispatch(org, job, at_t=t0)
    return job


async def test_lifecycle_arrival_survives_death_before_transition(
    redis_url: str, graph_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process dies just before the arrival's status change, after
    # storing the frame; the device sends the frame again.
    t0 = time.time() - 600
    pings = approach_and_arrive(t0)
    org = f"lc-{uuid.uuid4().hex[:8]}"
    async with pipeline(redis_url, graph_dir) as (ingest, lifecycle):
        await dispatched_job(lifecycle, org, t0, t0 + 3600)
        transition = lifecycle.jobs.transition

        async def dies_before_arrival(*args: Any, **kwargs: Any) -> bool:
            if args[2] is JobStatus.ARRIVED:
                raise RuntimeError("process died")
            return await transition(*args, **kwargs)

        monkeypatch.setattr(lifecycle.jobs, "transition", dies_before_arrival)
        await ingest.handle_frame(org, "c1", orjson.dumps({"pings": pings}))
        monkeypatch.setattr(lifecycle.jobs, "transition", transition)
        await ingest.handle_frame(org, "c1", orjson.dumps({"pings": pings}))
        job = await lifecycle.jobs.get(org, "j1")
    assert (job.status, job.arrived_t) == (JobStatus.ARRIVED, first_inside_t(pings))


async def test_lifecycle_timely_offline_arrival_clears_no_show(redis_url: str, graph_dir: Path) -> None:
    # The window ended while the device was offline, so the job was
    # flagged no-show; the batch then shows an arrival inside the window.
    t0 = time.time() - 600
    pings = approach_and_arrive(t0)
    org = f"lc-{uuid.uuid4().hex[:8]}"
    async with pipeline(redis_url, graph_dir) as (ingest, lifecycle):
        job = await dispatched_job(lifecycle, org, t0, first_inside_t(pings) + 60)
        await lifecycle.jobs.transition(
            org, job, None, Event("job.no_show", time.time(), "clock"), flags=["no_show"]
        )
        await ingest.handle_frame(org, "c1", orjson.dumps({"pings": pings}))
        job = await lifecycle.jobs.get(org, "j1")
        kinds = [event["type"] for event in await lifecycle.jobs.timeline(org, "j1")]
    assert (job.status, job.flags) == (JobStatus.ARRIVED, [])
    assert kinds[-2:] == ["job.arrived", "job.no_show_cleared"]


async def test_lifecycle_late_arrival_keeps_no_show(redis_url: str, graph_dir: Path) -> None:
    t0 = time.time() - 600
    pings = approach_and_arrive(t0)
    org = f"lc-{uuid.uuid4().hex[:8]}"
    async with pipeline(redis_url, graph_dir) as (ingest, lifecycle):
        job = await dispatched_job(lifecycle, org, t0, first_inside_t(pings) - 60)
        await lifecycle.jobs.transition(
            org, job, None, Event("job.no_show", time.time(), "clock"), flags=["no_show"]
        )
        await ingest.handle_frame(org, "c1", orjson.dumps({"pings": pings}))
        job = await lifecycle.jobs.get(org, "j1")
    assert (job.status, job.flags) == (JobStatus.ARRIVED, ["no_show"])


async def test_lifecycle_resent_frame_replays_nothing(
    redis_url: str, graph_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A device that sends a frame again after a lost ack must not cost a
    # replay of the visit's history: one retrying phone would slow all.
    t0 = time.time() - 600
    pings = approach_and_arrive(t0)
    org = f"lc-{uuid.uuid4().hex[:8]}"
    replays = 0
    async with pipeline(redis_url, graph_dir) as (ingest, lifecycle):
        await dispatched_job(lifecycle, org, t0, t0 + 3600)
        await ingest.handle_frame(org, "c1", orjson.dumps({"pings": pings}))
        history_since = lifecycle._history_since

        async def counted(*args: Any) -> Any:
            nonlocal replays
            replays += 1
            return await history_since(*args)

        monkeypatch.setattr(lifecycle, "_history_since", counted)
        await ingest.handle_frame(org, "c1", orjson.dumps({"pings": pings[-3:]}))
    assert replays == 0
