"""Ingest benchmark: device WebSocket throughput, ack latency, CPU and Redis memory.

Starts its own embedded Redis (or uses ``--redis-url``) and one ``enroute
serve`` process with one worker, creates an organisation and N contractors,
opens N device WebSockets from separate load-generator processes and runs:

- ``paced``: single-ping frames at ``--rate`` pings/s in total, open loop,
  so the ack latency counts from the time each frame was due;
- ``single``: single-ping frames, one in flight per connection, as fast as
  acks come back;
- ``batch``: ``--batch-size``-ping frames, one in flight per connection.

For each phase it reports accepted pings/s, ack latency p50/p99, server and
Redis CPU seconds per 10,000 pings and the CPU cores the load generator
used. Redis memory per device is measured after every device has sent its
first ping, split into latest state (the ``{org}:dev:{id}`` hash) and
position index (the device's share of ``{org}:cells`` and ``{org}:heat``),
with history reported apart. ``redis-benchmark`` then runs GEOADD on the
same Redis, so the ratio of the two rates compares across machines.

Run ``python -m benchmarks.ingest --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import redis

from benchmarks import _common
from benchmarks._device_load import Device, Phase, run_worker
from tracker import keys, orgs
from tracker.redis_server import EmbeddedRedis
from tracker.store import connect

logger = logging.getLogger(__name__)

MODULE = "benchmarks.ingest"
SECTION = "Ingest"
PHASES = ("paced", "single", "batch")
SERVER_START_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 300.0
PHASE_START_DELAY_S = 0.5
CONTRACTOR_CONCURRENCY = 32
#: Devices start at random points in a 16 km x 22 km box over Helsinki.
AREA_LAT_DEG = (60.15, 60.30)
AREA_LON_DEG = (24.75, 25.15)
GEOADD_COMMAND = ("GEOADD", "bench:geo", "24.9", "60.1", "member:__rand_int__")
GEOADD_REQUESTS = 200_000
GEOADD_PIPELINE = 64
HISTORY_SAMPLE_KEYS = 50

SECTION_INTRO = (
    "Measured with `python -m benchmarks.ingest` (see its docstring): one "
    "`enroute serve` process with one worker, its own embedded Redis over a "
    "Unix socket with append-only persistence, and device WebSockets opened "
    "by separate load-generator processes on the same machine over "
    "127.0.0.1. `paced` sends single-ping frames at a fixed total rate and "
    "times each ack from when its frame was due. `single` and `batch` keep "
    "one frame in flight per connection. CPU figures are seconds of CPU "
    "time per 10,000 accepted pings. The cores column splits the machine "
    "between the server, Redis, the load generator and other processes, "
    "which compete for the same cores. GEOADD/s is `redis-benchmark -P 64 "
    "-n 200000` on the same Redis, and the last column divides accepted "
    "pings/s by it, so rows from different machines compare.\n\n"
    "Memory is measured after every device has sent one ping: latest state "
    "is MEMORY USAGE of the `{org}:dev:{id}` hash, index is the device's "
    "share of `{org}:cells` and `{org}:heat`. The used_memory delta also "
    "contains the first history entry and Redis's own buffers, and history "
    "is MEMORY USAGE of sampled `{org}:hist:{id}` keys per stored ping."
)
THROUGHPUT_TITLE = "Throughput and ack latency"
THROUGHPUT_COLUMNS = (
    "date", "machine", "command", "phase", "connections", "accepted pings/s",
    "ack p50 ms", "ack p99 ms", "server CPU s / 10k pings", "Redis CPU s / 10k pings",
    "cores: server / Redis / client (processes) / other", "GEOADD/s",
    "pings/s ÷ GEOADD/s",
)  # fmt: skip
MEMORY_TITLE = "Redis memory per device"
MEMORY_COLUMNS = (
    "date", "machine", "command", "devices", "latest state B", "index B",
    "state + index B", "used_memory delta after first ping B", "history B/ping",
)  # fmt: skip


@dataclass(frozen=True)
class RedisTarget:
    """The Redis under test and how to reach it."""

    url: str
    socket_path: str | None
    host: str
    port: int


@contextlib.contextmanager
def redis_target(redis_url: str | None, work_dir: Path) -> Iterator[RedisTarget]:
    """Yield the given Redis, or an embedded one started in ``work_dir``."""
    if redis_url:
        parsed = redis.connection.parse_url(redis_url)
        yield RedisTarget(
            redis_url,
            parsed.get("path"),
            str(parsed.get("host", "127.0.0.1")),
            int(parsed.get("port", 6379)),
        )
        return
    server = EmbeddedRedis(work_dir / "redis")
    url = server.start()
    try:
        yield RedisTarget(url, str(server.socket_path), "127.0.0.1", 0)
    finally:
        server.stop()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def server_process(
    redis_url: str, work_dir: Path, workers: int = 1
) -> Iterator[tuple[str, psutil.Process]]:
    """Run ``enroute serve`` with ``workers`` worker processes; yield its base URL and process."""
    port = free_port()
    env = {
        **os.environ,
        "ENROUTE_REDIS_URL": redis_url,
        "ENROUTE_DATA_DIR": str(work_dir / "server-data"),
    }
    log_path = work_dir / "server.log"
    command = [sys.executable, "-m", "api.cli", "--log-level", "warning", "serve",
               "--port", str(port), "--workers", str(workers)]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argument list
            command, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, process, log_path)
        yield base_url, psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            logger.warning("server pid %d ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.wait()


def _wait_healthy(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with code {process.returncode} during start; "
                f"log {log_path}:\n{log_path.read_text()[-2000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"server did not respond to /healthz within {SERVER_START_TIMEOUT_S:.0f} s; see {log_path}"
    )


async def create_fleet(redis_url: str, base_url: str, count: int) -> tuple[str, list[str]]:
    """Create an organisation and ``count`` contractors; return (org id, device tokens)."""
    client = connect(redis_url)
    try:
        org = await orgs.create_org(client, f"bench-ingest-{secrets.token_hex(3)}")
    finally:
        await client.aclose()

    limit = asyncio.Semaphore(CONTRACTOR_CONCURRENCY)
    headers = {"Authorization": f"Bearer {org.api_key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:

        async def create(index: int) -> str:
            async with limit:
                response = await http.post(
                    "/v1/contractors", json={"id": contractor_id(index), "name": "Bench"}
                )
            if response.status_code != 201:
                raise RuntimeError(
                    f"POST /v1/contractors failed with {response.status_code}: {response.text}"
                )
            return str(response.json()["device_token"])

        tokens = await asyncio.gather(*(create(index) for index in range(count)))
    return org.id, list(tokens)


def contractor_id(index: int) -> str:
    """Return the id of the benchmark's contractor number ``index``."""
    return f"c{index:06d}"


class LoadGenerator:
    """Worker processes that own the device connections and run the phases."""

    def __init__(self, ws_url: str, devices: list[Device], processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        t_base = time.time() - 3600.0
        self.pipes = []
        self.processes = []
        for index in range(processes):
            parent_end, child_end = context.Pipe()
            share = devices[index::processes]
            process = context.Process(
                target=run_worker, args=(ws_url, share, t_base, child_end), daemon=True
            )
            process.start()
            self.pipes.append(parent_end)
            self.processes.append(process)
        for pipe in self.pipes:
            self._receive(pipe, CONNECT_TIMEOUT_S)

    def run(self, phase: Phase, frames_per_s: float | None = None) -> list[dict[str, Any]]:
        """Run ``phase`` on every worker; ``frames_per_s`` is split between them."""
        share_per_s = frames_per_s / len(self.pipes) if frames_per_s else None
        for pipe in self.pipes:
            pipe.send(
                Phase(phase.name, phase.pings_per_frame, phase.duration_s,
                      phase.start_at, share_per_s, phase.frames_per_device)  # fmt: skip
            )
        timeout_s = phase.duration_s + 120.0
        return [self._receive(pipe, timeout_s) for pipe in self.pipes]

    def close(self) -> None:
        """Ask the workers to close their connections and wait for them to exit."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                logger.warning("load worker pid %s did not exit; terminating it", process.pid)
                process.terminate()

    @staticmethod
    def _receive(pipe: Any, timeout_s: float) -> dict[str, Any]:
        if not pipe.poll(timeout_s):
            raise RuntimeError(f"load worker sent nothing within {timeout_s:.0f} s")
        message: dict[str, Any] = pipe.recv()
        if "error" in message:
            raise RuntimeError(f"load worker failed: {message['error']}")
        return message


def redis_cpu_s(client: redis.Redis) -> float:
    """Return the CPU seconds Redis has used, user plus system."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def process_cpu_s(process: psutil.Process) -> float:
    """Return the CPU seconds of a process, user plus system."""
    times = process.cpu_times()
    return float(times.user + times.system)


def machine_busy_s() -> float:
    """Return the CPU seconds all processes of the machine have used since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def run_phase(
    load: LoadGenerator,
    server: psutil.Process,
    client: redis.Redis,
    phase: Phase,
    frames_per_s: float | None,
) -> dict[str, Any]:
    """Run one phase and return its figures."""
    server_start_s, redis_start_s = process_cpu_s(server), redis_cpu_s(client)
    machine_start_s = machine_busy_s()
    stats = load.run(phase, frames_per_s)
    wall_s = time.monotonic() - phase.start_at
    server_s = process_cpu_s(server) - server_start_s
    redis_s = redis_cpu_s(client) - redis_start_s
    client_s = sum(message["cpu_s"] for message in stats)
    other_s = machine_busy_s() - machine_start_s - server_s - redis_s - client_s

    latencies_s = np.concatenate(
        [np.frombuffer(message["latencies_s"], dtype=np.float64) for message in stats]
    )
    accepted = sum(message["accepted"] for message in stats)
    per_10k = 10_000 / accepted if accepted else float("nan")
    p50_ms, p99_ms = (
        np.percentile(latencies_s, [50, 99]) * 1000 if latencies_s.size else (np.nan, np.nan)
    )
    return {
        "benchmark": "ingest",
        "phase": phase.name,
        "pings_per_frame": phase.pings_per_frame,
        "duration_s": phase.duration_s,
        "frames_sent": sum(message["frames_sent"] for message in stats),
        "acks": sum(message["acks"] for message in stats),
        "errors": sum(message["errors"] for message in stats),
        "lost_connections": sum(message["lost_connections"] for message in stats),
        "accepted": accepted,
        "duplicates": sum(message["duplicates"] for message in stats),
        "rejected": sum(message["rejected"] for message in stats),
        "accepted_pings_per_s": sum(m["accepted_in_window"] for m in stats) / phase.duration_s,
        "ack_p50_ms": float(p50_ms),
        "ack_p99_ms": float(p99_ms),
        "server_cpu_s_per_10k": server_s * per_10k,
        "redis_cpu_s_per_10k": redis_s * per_10k,
        "server_cores_used": server_s / wall_s,
        "redis_cores_used": redis_s / wall_s,
        "client_cores_used": client_s / wall_s,
        "other_cores_used": max(0.0, other_s / wall_s),
    }


def measure_state_memory(client: redis.Redis, org: str, count: int) -> dict[str, float]:
    """Return bytes per device of latest state and position index (MEMORY USAGE)."""
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        pipe.memory_usage(keys.device(org, contractor_id(index)), samples=0)
    device_bytes = [value or 0 for value in pipe.execute()]
    cells_bytes = client.memory_usage(keys.cells(org), samples=0) or 0
    heat_bytes = client.memory_usage(keys.heat(org), samples=0) or 0
    state_b = sum(device_bytes) / count
    index_b = (cells_bytes + heat_bytes) / count
    return {
        "latest_state_bytes_per_device": state_b,
        "index_bytes_per_device": index_b,
        "state_and_index_bytes_per_device": state_b + index_b,
        "heat_cells": float(client.hlen(keys.heat(org))),
    }


def measure_history_memory(client: redis.Redis, org: str, count: int) -> float:
    """Return bytes of history per stored ping, over a sample of devices."""
    sample = range(0, count, max(1, count // HISTORY_SAMPLE_KEYS))
    pipe = client.pipeline(transaction=False)
    for index in sample:
        history_key = keys.history(org, contractor_id(index))
        pipe.memory_usage(history_key, samples=0)
        pipe.zcard(history_key)
    replies = pipe.execute()
    total_bytes = sum(value or 0 for value in replies[0::2])
    total_pings = sum(replies[1::2])
    return total_bytes / total_pings if total_pings else float("nan")


def geoadd_rate(target: RedisTarget) -> float | None:
    """Run ``redis-benchmark`` GEOADD on the Redis under test; return requests/s."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        logger.warning("redis-benchmark not found on PATH; skipping the GEOADD baseline")
        return None
    where = ["-s", target.socket_path] if target.socket_path else [
        "-h", target.host, "-p", str(target.port)]  # fmt: skip
    command = [binary, *where, "-q", "-P", str(GEOADD_PIPELINE), "-n", str(GEOADD_REQUESTS),
               "-r", "100000", *GEOADD_COMMAND]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)  # noqa: S603
    match = re.search(r"([\d.]+) requests per second", result.stdout)
    if result.returncode != 0 or match is None:
        logger.warning(
            "redis-benchmark failed with code %d: %s", result.returncode,
            (result.stderr or result.stdout)[-500:],
        )
        return None
    return float(match.group(1))


def place_devices(tokens: Sequence[str], seed: int) -> list[Device]:
    """Give every token a random start point in the benchmark area."""
    rng = random.Random(seed)
    return [
        Device(token, round(rng.uniform(*AREA_LAT_DEG), 6), round(rng.uniform(*AREA_LON_DEG), 6))
        for token in tokens
    ]


def run(
    contractors: int = 1000,
    rate_pings_per_s: float = 5000.0,
    duration_s: float = 15.0,
    batch_size: int = 50,
    client_processes: int = 1,
    redis_url: str | None = None,
    phases: Sequence[str] = PHASES,
    seed: int | None = None,
    redis_config: Sequence[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """Run the ingest benchmark and return one result dict per phase, then memory.

    Parameters
    ----------
    contractors
        Devices, each with its own WebSocket connection.
    rate_pings_per_s
        Total rate of the ``paced`` phase.
    duration_s
        Length of each phase, not counting the drain of frames in flight.
    batch_size
        Pings per frame of the ``batch`` phase.
    client_processes
        Load-generator processes the connections are split between.
    redis_url
        Existing Redis to use; an embedded one in a temporary folder if None.
    phases
        Phases to run, from ``PHASES``.
    seed
        Seed of the device start points; random when None, and logged.
    redis_config
        ``(name, value)`` pairs applied with CONFIG SET before the run, for
        example ``("hash-max-ziplist-value", "128")`` to measure memory with
        a setting an operator might choose.
    """
    seed = seed if seed is not None else secrets.randbelow(2**31)
    logger.info("device placement seed %d", seed)
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enroute-bench-")))
        target = stack.enter_context(redis_target(redis_url, work_dir))
        base_url, server = stack.enter_context(server_process(target.url, work_dir))
        client = redis.Redis.from_url(target.url)
        stack.callback(client.close)
        for name, value in redis_config:
            client.config_set(name, value)
            logger.info("redis config %s set to %s", name, value)

        org, tokens = asyncio.run(create_fleet(target.url, base_url, contractors))
        logger.info("created organisation %s with %d contractors", org, contractors)
        memory_start_b = int(client.info("memory")["used_memory"])
        load = LoadGenerator(
            base_url.replace("http://", "ws://"), place_devices(tokens, seed), client_processes
        )
        stack.callback(load.close)

        # First fix of every device: the state the memory figures describe.
        first = Phase("first fix", 1, 60.0, time.monotonic() + PHASE_START_DELAY_S,
                      frames_per_device=1)  # fmt: skip
        first_stats = load.run(first)
        first_accepted = sum(message["accepted"] for message in first_stats)
        if first_accepted != contractors:
            logger.warning("first fix: %d of %d devices acknowledged a stored ping",
                           first_accepted, contractors)  # fmt: skip
        memory = {
            "benchmark": "ingest",
            "phase": "memory",
            "devices": contractors,
            "used_memory_delta_bytes_per_device": (
                int(client.info("memory")["used_memory"]) - memory_start_b
            ) / contractors,
            **measure_state_memory(client, org, contractors),
        }

        for name in phases:
            start_at = time.monotonic() + PHASE_START_DELAY_S
            if name == "paced":
                phase = Phase(f"paced {rate_pings_per_s:g}/s", 1, duration_s, start_at)
                results.append(run_phase(load, server, client, phase, rate_pings_per_s))
            elif name == "single":
                phase = Phase("single, max", 1, duration_s, start_at)
                results.append(run_phase(load, server, client, phase, None))
            elif name == "batch":
                phase = Phase(f"batch {batch_size}, max", batch_size, duration_s, start_at)
                results.append(run_phase(load, server, client, phase, None))
            else:
                raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {name!r}")
            logger.info("phase %s: %.0f accepted pings/s", results[-1]["phase"],
                        results[-1]["accepted_pings_per_s"])  # fmt: skip

        memory["history_bytes_per_ping"] = measure_history_memory(client, org, contractors)
        geoadd_per_s = geoadd_rate(target)
        client.delete(GEOADD_COMMAND[1])
        for result in results:
            result["connections"] = contractors
            result["client_processes"] = client_processes
            result["geoadd_per_s"] = geoadd_per_s
            result["ratio_to_geoadd"] = (
                result["accepted_pings_per_s"] / geoadd_per_s if geoadd_per_s else None
            )
        results.append(memory)
    return results


def print_results(results: Sequence[dict[str, Any]]) -> None:
    """Print the figures of a run as a small text table."""
    print("CPU per 10k pings in seconds; cores used by server, Redis, the load "
          "generator (its process count in brackets) and other processes")  # fmt: skip
    header = (f"{'phase':<18}{'pings/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
              f"{'srv s':>7}{'redis s':>8}{'cores srv/redis/client/other':>30}"
              f"{'x GEOADD':>9}{'errors':>7}")  # fmt: skip
    print(header)
    for result in results:
        if result["phase"] == "memory":
            continue
        ratio = result["ratio_to_geoadd"]
        cores = (
            f"{result['server_cores_used']:.2f}/{result['redis_cores_used']:.2f}/"
            f"{result['client_cores_used']:.2f} ({result['client_processes']})/"
            f"{result['other_cores_used']:.2f}"
        )
        print(
            f"{result['phase']:<18}{result['accepted_pings_per_s']:>9.0f}"
            f"{result['ack_p50_ms']:>8.1f}{result['ack_p99_ms']:>8.1f}"
            f"{result['server_cpu_s_per_10k']:>7.2f}{result['redis_cpu_s_per_10k']:>8.2f}"
            f"{cores:>30}{'-' if ratio is None else f'{ratio:.3f}':>9}{result['errors']:>7}"
        )
    geoadd = next((r["geoadd_per_s"] for r in results if "geoadd_per_s" in r), None)
    print(f"redis-benchmark GEOADD -P {GEOADD_PIPELINE}: "
          f"{'not run' if geoadd is None else f'{geoadd:.0f} requests/s'}")  # fmt: skip
    memory = next((r for r in results if r["phase"] == "memory"), None)
    if memory is not None:
        print(
            f"Redis memory per device: latest state {memory['latest_state_bytes_per_device']:.0f} B"
            f" + index {memory['index_bytes_per_device']:.0f} B"
            f" = {memory['state_and_index_bytes_per_device']:.0f} B"
            f" ({memory['heat_cells']:.0f} heat cells for {memory['devices']} devices);"
            f" used_memory delta after first ping {memory['used_memory_delta_bytes_per_device']:.0f} B;"
            f" history {memory['history_bytes_per_ping']:.0f} B/ping"
        )


def record_results(results: Sequence[dict[str, Any]], command: str, path: Path) -> None:
    """Append this run's rows to the Ingest section of the results page."""
    date, machine = _common.today(), _common.machine_description()
    throughput_rows = []
    memory_rows = []
    for result in results:
        if result["phase"] == "memory":
            memory_rows.append((
                date, machine, f"`{command}`", result["devices"],
                f"{result['latest_state_bytes_per_device']:.0f}",
                f"{result['index_bytes_per_device']:.0f}",
                f"{result['state_and_index_bytes_per_device']:.0f}",
                f"{result['used_memory_delta_bytes_per_device']:.0f}",
                f"{result['history_bytes_per_ping']:.0f}",
            ))  # fmt: skip
            continue
        geoadd, ratio = result["geoadd_per_s"], result["ratio_to_geoadd"]
        cores = (
            f"{result['server_cores_used']:.2f} / {result['redis_cores_used']:.2f} / "
            f"{result['client_cores_used']:.2f} ({result['client_processes']}) / "
            f"{result['other_cores_used']:.2f}"
        )
        throughput_rows.append((
            date, machine, f"`{command}`", result["phase"], result["connections"],
            f"{result['accepted_pings_per_s']:.0f}",
            f"{result['ack_p50_ms']:.1f}", f"{result['ack_p99_ms']:.1f}",
            f"{result['server_cpu_s_per_10k']:.2f}", f"{result['redis_cpu_s_per_10k']:.2f}",
            cores, "not run" if geoadd is None else f"{geoadd:.0f}",
            "" if ratio is None else f"{ratio:.3f}",
        ))  # fmt: skip

    def rewrite(body: str) -> str:
        # The introduction is rewritten every time; the tables keep their rows.
        first_table = re.search(r"^### ", body, flags=re.MULTILINE)
        tables = body[first_table.start() :] if first_table else ""
        body = SECTION_INTRO + "\n\n" + tables if tables else SECTION_INTRO
        body = _common.append_table_rows(body, THROUGHPUT_TITLE, THROUGHPUT_COLUMNS, throughput_rows)
        return _common.append_table_rows(body, MEMORY_TITLE, MEMORY_COLUMNS, memory_rows)

    _common.update_section(SECTION, rewrite, path)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m benchmarks.ingest``."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("--contractors", type=int, default=1000,
                        help="devices, one WebSocket each (default 1000)")
    parser.add_argument("--rate", type=float, default=5000.0,
                        help="total pings/s of the paced phase (default 5000)")
    parser.add_argument("--duration", type=float, default=15.0,
                        help="seconds per phase (default 15)")
    parser.add_argument("--batch-size", type=int, default=50,
                        help="pings per frame of the batch phase (default 50)")
    parser.add_argument("--client-processes", type=int, default=1,
                        help="load-generator processes (default 1)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated phases to run (default {','.join(PHASES)})")
    parser.add_argument("--redis-url", help="existing Redis (default: an embedded one)")
    parser.add_argument("--seed", type=int, help="seed of the device start points")
    parser.add_argument("--redis-config", action="append", default=[], metavar="NAME=VALUE",
                        help="CONFIG SET on the Redis before the run; repeatable")
    parser.add_argument("--results", type=Path, default=_common.RESULTS_PATH,
                        help="results page to append to (default benchmarks/RESULTS.md)")
    parser.add_argument("--no-record", action="store_true",
                        help="print the figures without appending them to the results page")
    return parser  # fmt: skip


def _measured(arguments: Sequence[str]) -> list[str]:
    """Return the arguments without ``--results``, which changes no figure."""
    kept: list[str] = []
    skip_value = False
    for argument in arguments:
        if skip_value:
            skip_value = False
        elif argument == "--results":
            skip_value = True
        elif not argument.startswith("--results="):
            kept.append(argument)
    return kept


def _config_pair(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise SystemExit(f"--redis-config must be NAME=VALUE, got {text!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    results = run(
        contractors=args.contractors,
        rate_pings_per_s=args.rate,
        duration_s=args.duration,
        batch_size=args.batch_size,
        client_processes=args.client_processes,
        redis_url=args.redis_url,
        phases=[name.strip() for name in args.phases.split(",") if name.strip()],
        seed=args.seed,
        redis_config=[_config_pair(text) for text in args.redis_config],
    )
    print(f"machine: {_common.machine_description()}")
    print_results(results)
    if not args.no_record:
        record_results(results, _common.command_line(MODULE, _measured(arguments)), args.results)
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
