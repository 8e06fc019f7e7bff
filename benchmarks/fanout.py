"""Benchmark the live fan-out and the heatmap query.

Two measurements, each against a real server process and Redis:

1. Ping-to-customer latency: ``--jobs`` contractors (default 1,000) are each
   dispatched to a job that one customer watches over
   ``/v1/track/{token}/ws``, while the contractors' devices send single-ping
   frames at ``--rate`` pings/s in total (default 5,000). The latency of an
   update is its arrival time at the customer minus the fix time of the
   position it carries. Fix times are the send times, on the same clock.
   Devices and customers run in two separate processes, on uvloop like
   the server.
2. Heatmap: ``--contractors`` positions (default 100,000) spread over a
   20 km square are written through the ingest script, then
   ``GET /v1/fleet/heatmap`` is timed at resolutions 7 and 9.

Run with ``python -m benchmarks.fanout``; results go to the "Fan-out"
section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
import uvloop

from benchmarks._common import (
    append_table_rows,
    command_line,
    machine_description,
    today,
    update_section,
)
from benchmarks._light_client import LightClient
from benchmarks.ingest import redis_target, server_process
from tracker import orgs
from tracker.pings import Ping
from tracker.store import PingWriter, connect

# The middle of the bundled Helsinki graph, which spans about 1.6 km north
# to south (60.164-60.179) and 1 km east to west (24.935-24.953).
CENTRE = (60.1716, 24.9443)
SETUP_CONCURRENCY = 50
CONNECT_S = 3.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


async def create_watched_jobs(redis_url: str, base_url: str, count: int) -> tuple[str, list[str], list[str]]:
    """Create ``count`` contractors with dispatched jobs; return (API key, device tokens, share tokens)."""
    client = connect(redis_url)
    try:
        org = await orgs.create_org(client, f"bench-fanout-{int(time.time())}")
    finally:
        await client.aclose()
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    headers = {"Authorization": f"Bearer {org.api_key}"}
    now = time.time()
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:

        async def create(index: int) -> tuple[str, str]:
            contractor = f"c{index:05d}"
            async with limit:
                created = await http.post("/v1/contractors", json={"id": contractor})
                created.raise_for_status()
                body = {
                    "id": f"j{index:05d}",
                    "contractor_id": contractor,
                    "site": {"lat": CENTRE[0], "lon": CENTRE[1], "radius_m": 40},
                    "window": {"start": iso(now), "end": iso(now + 7200)},
                }
                (await http.post("/v1/jobs", json=body)).raise_for_status()
                (await http.post(f"/v1/jobs/j{index:05d}/dispatch")).raise_for_status()
                shared = await http.post(f"/v1/jobs/j{index:05d}/share")
                shared.raise_for_status()
            return created.json()["device_token"], shared.json()["token"]

        pairs = await asyncio.gather(*(create(index) for index in range(count)))
    return org.api_key, [p[0] for p in pairs], [p[1] for p in pairs]


@dataclass(frozen=True)
class Schedule:
    """Unix times of one latency run: devices send from ``start_t`` to ``end_t``.

    Only what happens from ``measure_t`` on counts, so connecting and the
    first ping of each job (which builds its route tree) stay out.
    """

    start_t: float
    measure_t: float
    end_t: float


def _device_process(ws_url: str, tokens: list[str], rate: float, schedule: Schedule, pipe: Any) -> None:
    pipe.send(uvloop.run(_drive_devices(ws_url, tokens, rate, schedule)))


async def _drive_devices(
    ws_url: str, tokens: list[str], rate: float, schedule: Schedule
) -> list[float]:
    """Send pings until the end of the schedule; return the ack latencies of the measured part."""
    period_s = len(tokens) / rate
    rng = random.Random(7)
    deadline = schedule.end_t
    ack_latencies: list[float] = []

    async def device(token: str) -> None:
        # Each device circles 200-650 m north-south and 130-400 m east-west
        # of the site, a few metres per ping, inside the graph's area.
        radius = rng.uniform(0.002, 0.006)
        angle = rng.uniform(0, 6.28)
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[None] = loop.create_future()

        def on_ack(_: bytes) -> None:
            if not ack.done():
                ack.set_result(None)

        def on_close(_: asyncio.Future[None]) -> None:
            if not ack.done():
                ack.set_exception(ConnectionError("the server closed the device connection"))

        connection = await LightClient.connect(
            f"{ws_url}/v1/devices/stream", on_ack, {"Authorization": f"Bearer {token}"}
        )
        connection.closed.add_done_callback(on_close)
        try:
            await asyncio.sleep(max(0.0, schedule.start_t - time.time()) + rng.uniform(0, period_s))
            while time.time() < deadline:
                started = time.time()
                angle += 0.002
                fix = {"t": started, "lat": CENTRE[0] + radius * math.cos(angle),
                       "lon": CENTRE[1] + 1.2 * radius * math.sin(angle), "acc": 6.0}  # fmt: skip
                ack = loop.create_future()
                connection.send_text(orjson.dumps(fix))
                await ack
                if started >= schedule.measure_t:
                    ack_latencies.append(time.time() - started)
                await asyncio.sleep(max(0.0, period_s - (time.time() - started)))
        finally:
            connection.close()

    results = await asyncio.gather(*(device(token) for token in tokens), return_exceptions=True)
    failures = [result for result in results if isinstance(result, Exception)]
    if failures:
        print(f"{len(failures)} devices failed, first: {failures[0]!r}", flush=True)
    return ack_latencies


def _customer_process(ws_url: str, shares: list[str], schedule: Schedule, pipe: Any) -> None:
    pipe.send(uvloop.run(_watch(ws_url, shares, schedule)))


async def _watch(ws_url: str, shares: list[str], schedule: Schedule) -> tuple[list[float], int]:
    """Return the latencies of position updates sent from the measured part on, and how many carried an ETA."""
    latencies: list[float] = []
    with_eta = 0
    deadline = schedule.end_t + 2.0  # updates still on their way at the end

    def note(raw: bytes) -> None:
        nonlocal with_eta
        received = time.time()
        message = orjson.loads(raw)
        position = message.get("position") if message.get("type") == "update" else None
        if position and position["t"] >= schedule.measure_t:
            latencies.append(received - position["t"])
            with_eta += message.get("eta_s") is not None

    async def customer(token: str) -> None:
        connection = await LightClient.connect(f"{ws_url}/v1/track/{token}/ws", note)
        try:
            await asyncio.wait_for(connection.closed, max(0.1, deadline - time.time()))
        except TimeoutError:
            pass
        finally:
            connection.close()

    results = await asyncio.gather(*(customer(token) for token in shares), return_exceptions=True)
    failures = [result for result in results if isinstance(result, Exception)]
    if failures:
        print(f"{len(failures)} customers failed, first: {failures[0]!r}", flush=True)
    return latencies, with_eta


async def fill_heatmap(redis_url: str, count: int) -> str:
    """Write ``count`` contractors' positions through the ingest script; return the org."""
    client = connect(redis_url)
    writer = PingWriter(client)
    try:
        org = await orgs.create_org(client, f"bench-heat-{int(time.time())}")
        rng = np.random.default_rng(11)
        lats = CENTRE[0] + rng.uniform(-0.09, 0.09, count)
        lons = CENTRE[1] + rng.uniform(-0.18, 0.18, count)
        now = time.time()
        for start in range(0, count, 2000):
            await asyncio.gather(
                *(
                    writer.write(org.id, f"h{i:06d}", [Ping(now, float(lats[i]), float(lons[i]), 5.0)])
                    for i in range(start, min(start + 2000, count))
                )
            )
        return org.api_key
    finally:
        await writer.aclose()
        await client.aclose()


def time_heatmap(base_url: str, api_key: str, res: int, repeats: int) -> list[float]:
    """Return the wall times of ``repeats`` heatmap requests in milliseconds."""
    times_ms = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as http:
        for _ in range(repeats):
            started = time.perf_counter()
            response = http.get("/v1/fleet/heatmap", params={"res": res, "format": "cells"})
            times_ms.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return times_ms


def tree_cpu_s(process: psutil.Process) -> float:
    """Return the CPU seconds used so far by a process and its children."""
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            total += times.user + times.system
    return total


def busy_share(before: Any, after: Any) -> float:
    """Return the share of all cores' time spent busy between two ``psutil.cpu_times()``."""
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
    return (total - idle) / total if total > 0 else 0.0


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(
    jobs: int,
    rate: float,
    duration_s: float,
    contractors: int,
    redis_url: str | None,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Run both measurements; return one result row per measurement."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work, redis_target(redis_url, Path(work)) as target:
        with server_process(target.url, Path(work), workers) as (base_url, server):
            ws_url = base_url.replace("http", "ws", 1)
            _, tokens, shares = asyncio.run(create_watched_jobs(target.url, base_url, jobs))
            # Customers and devices get CONNECT_S to connect; the first
            # quarter of the load (at most 5 s) is a warm-up.
            start_t = time.time() + CONNECT_S
            schedule = Schedule(start_t, start_t + min(5.0, duration_s / 4), start_t + duration_s)
            receiver, sender = multiprocessing.Pipe(duplex=False)
            customers = multiprocessing.Process(
                target=_customer_process, args=(ws_url, shares, schedule, sender)
            )
            acks, acks_sender = multiprocessing.Pipe(duplex=False)
            devices = multiprocessing.Process(
                target=_device_process, args=(ws_url, tokens, rate, schedule, acks_sender)
            )
            customers.start()
            devices.start()
            # The load generators and an embedded Redis share the machine
            # with the server, so their CPU time is measured too.
            load = [psutil.Process(customers.pid), psutil.Process(devices.pid)]
            redis_servers = [
                child for child in psutil.Process().children(recursive=True)
                if "redis-server" in child.name()
            ]  # fmt: skip
            time.sleep(max(0.0, schedule.measure_t - time.time()))
            server_before_s = tree_cpu_s(server)
            load_before_s = sum(tree_cpu_s(process) for process in load)
            redis_before_s = sum(tree_cpu_s(process) for process in redis_servers)
            machine_before = psutil.cpu_times()
            time.sleep(max(0.0, schedule.end_t - time.time()))
            server_cpu_s = tree_cpu_s(server) - server_before_s
            load_cpu_s = sum(tree_cpu_s(process) for process in load) - load_before_s
            redis_cpu_s = sum(tree_cpu_s(process) for process in redis_servers) - redis_before_s
            machine_busy = busy_share(machine_before, psutil.cpu_times())
            ack_latencies = acks.recv()
            acknowledged = len(ack_latencies)
            devices.join()
            latencies, with_eta = receiver.recv()
            customers.join()
            measured_s = schedule.end_t - schedule.measure_t
            print(
                f"{acknowledged} pings acknowledged ({acknowledged / measured_s:.0f}/s); "
                f"ack p50 {statistics.median(ack_latencies) * 1000:.1f} ms; "
                f"server CPU {server_cpu_s:.1f} s, {server_cpu_s / max(acknowledged, 1) * 1e6:.0f} µs "
                "per ping with its fan-out; load generators "
                f"{load_cpu_s / max(acknowledged, 1) * 1e6:.0f} µs and Redis "
                f"{redis_cpu_s / max(acknowledged, 1) * 1e6:.0f} µs per ping; "
                f"all cores {machine_busy * 100:.0f} % busy",
                flush=True,
            )
            results.append(
                {
                    "measurement": (
                        f"ping to customer, {jobs} watched jobs at {rate:.0f} pings/s, "
                        f"{workers} server worker{'s' if workers > 1 else ''}"
                    ),
                    "updates": len(latencies),
                    "with_eta": with_eta,
                    "acknowledged": acknowledged,
                    "acknowledged_per_s": round(acknowledged / measured_s),
                    "ack_p50_ms": round(statistics.median(ack_latencies) * 1000, 1) if ack_latencies else None,
                    "server_cpu_us_per_ping": round(server_cpu_s / max(acknowledged, 1) * 1e6),
                    "load_cpu_us_per_ping": round(load_cpu_s / max(acknowledged, 1) * 1e6),
                    "redis_cpu_us_per_ping": (
                        round(redis_cpu_s / max(acknowledged, 1) * 1e6) if redis_servers else None
                    ),
                    "machine_busy_pct": round(machine_busy * 100),
                    "updates_per_s": round(len(latencies) / measured_s, 1),
                    "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
                    "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
                }
            )
            heat_key = asyncio.run(fill_heatmap(target.url, contractors))
            for res in (7, 9):
                times_ms = time_heatmap(base_url, heat_key, res, 20)
                results.append(
                    {
                        "measurement": f"heatmap res {res} over {contractors} contractors",
                        "updates": None,
                        "updates_per_s": None,
                        "p50_ms": round(statistics.median(times_ms), 1),
                        "p99_ms": round(percentile(times_ms, 0.99), 1),
                    }
                )
    return results


LATENCY_TITLE = "Ping-to-customer latency and where the CPU went"
LATENCY_COLUMNS = (
    "date", "measurement", "pings/s acked", "updates/s", "ack p50 ms", "p50 ms", "p99 ms",
    "server CPU µs/ping", "load generators CPU µs/ping", "Redis CPU µs/ping", "all cores busy %",
    "machine", "command",
)  # fmt: skip
HEATMAP_TITLE = "Heatmap query time"
HEATMAP_COLUMNS = ("date", "measurement", "p50 ms", "p99 ms", "machine", "command")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000, help="watched jobs (default 1000)")
    parser.add_argument("--rate", type=float, default=5000.0, help="device pings/s in total (default 5000)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--contractors", type=int, default=100_000, help="positions for the heatmap")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--redis-url", help="external Redis (default: an embedded one)")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    results = run(args.jobs, args.rate, args.duration, args.contractors, args.redis_url, args.workers)
    for row in results:
        print(
            f"{row['measurement']}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
            + (f", {row['updates_per_s']} updates/s" if row["updates_per_s"] is not None else "")
        )
    if not args.no_record:
        machine, command = machine_description(), command_line("benchmarks.fanout", argv)
        latency_rows = [
            [today(), row["measurement"], row["acknowledged_per_s"], row["updates_per_s"],
             row["ack_p50_ms"], row["p50_ms"], row["p99_ms"], row["server_cpu_us_per_ping"],
             row["load_cpu_us_per_ping"], row["redis_cpu_us_per_ping"] or "not measured",
             row["machine_busy_pct"], machine, command]
            for row in results
            if row["updates"] is not None
        ]  # fmt: skip
        heatmap_rows = [
            [today(), row["measurement"], row["p50_ms"], row["p99_ms"], machine, command]
            for row in results
            if row["updates"] is None
        ]

        def add_rows(body: str) -> str:
            body = append_table_rows(body, LATENCY_TITLE, LATENCY_COLUMNS, latency_rows)
            return append_table_rows(body, HEATMAP_TITLE, HEATMAP_COLUMNS, heatmap_rows)

        update_section("Fan-out", add_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
