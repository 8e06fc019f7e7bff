"""A short run of the fan-out benchmark against a real server and Redis."""

from __future__ import annotations

import collections

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
    assert latency["redis_cpu_us_per_ping"] > 0
    assert 0 < latency["machine_busy_pct"] <= 100


@pytest.mark.timeout(300)
def test_fanout_heatmap_rows() -> None:
    rows = fanout.run(jobs=2, rate=10.0, duration_s=4.0, contractors=500, redis_url=None)
    heat = [row for row in rows if row["measurement"].startswith("heatmap")]
    assert [row["measurement"] for row in heat] == [
        "heatmap res 7 over 500 contractors",
        "heatmap res 9 over 500 contractors",
    ]


def test_busy_share_counts_non_idle_time() -> None:
    fields = ("user", "system", "idle")
    times = collections.namedtuple("times", fields)
    share = fanout.busy_share(times(10.0, 5.0, 85.0), times(13.0, 6.0, 91.0))
    assert share == pytest.approx(0.4)
