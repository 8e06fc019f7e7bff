"""JobStore transitions against a Redis of the test's own."""

from __future__ import annotations

import time
from pathlib import Path

from tracker.jobs import Event, Job, JobStatus, JobStore, Visit
from tracker.redis_server import EmbeddedRedis
from tracker.store import connect


async def test_transition_reloads_lost_script(tmp_path: Path) -> None:
    # A restart after the append-only file was rewritten loses loaded
    # scripts; SCRIPT FLUSH on a Redis of this test's own does the same.
    embedded = EmbeddedRedis(tmp_path / "redis")
    client = connect(embedded.start())
    try:
        store = JobStore(client)
        now = time.time()
        job = Job(id="j1", contractor_id="c1", site={"lat": 60.17, "lon": 24.94, "radius_m": 50},
                  visits=[Visit(now, now + 3600)])  # fmt: skip
        await store.create("o1", job)
        assert await store.transition("o1", job, JobStatus.EN_ROUTE, Event("job.en_route", now, "dispatch"))
        await client.script_flush()
        cancelled = await store.transition("o1", job, JobStatus.CANCELLED, Event("job.cancelled", now, "api"))
    finally:
        await client.aclose()
        embedded.stop()
    assert cancelled
