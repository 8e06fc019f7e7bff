"""A short run of the fan-out benchmark against a real server and Redis."""

from __future__ import annotations

import pytest

from benchmarks import fanout


@pytest.mark.timeout(300)
def test_fanout_updates_carry_eta() -> None:
    rows = fanout.run(jobs=5, rate=25.0, duration_s=6.0, contractors=200, redis_url=None)
    latency = rows[0]
    assert latency["updates"] > 0
    # Every device drives inside the bundled graph, so every update has an ETA.
    assert latency["with_eta"] == latency["updates"]
    assert latency["p99_ms"] is not None


@pytest.mark.timeout(300)
def test_fanout_heatmap_rows() -> None:
    rows = fanout.run(jobs=2, rate=10.0, duration_s=4.0, contractors=500, redis_url=None)
    heat = [row for row in rows if row["measurement"].startswith("heatmap")]
    assert [row["measurement"] for row in heat] == [
        "heatmap res 7 over 500 contractors",
        "heatmap res 9 over 500 contractors",
    ]
