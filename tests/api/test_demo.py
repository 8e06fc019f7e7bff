"""``enroute demo`` end to end: embedded Redis, server, simulated fleet."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest
import websockets
from support import REPO_ROOT, free_port

DEMO_ENV = {
    "ENROUTE_GEOFENCE_DWELL_S": "10",
    "ENROUTE_GEOFENCE_MIN_ON_SITE_S": "10",
    "ENROUTE_GEOFENCE_GRACE_S": "10",
}


async def watch(url: str, seconds: float) -> list[dict]:
    """Collect a customer's updates for ``seconds``."""
    updates = []
    deadline = time.monotonic() + seconds
    async with websockets.connect(url) as connection:
        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(connection.recv(), deadline - time.monotonic())
            except TimeoutError:
                break
            message = orjson.loads(raw)
            if message["type"] == "update":
                updates.append(message)
    return updates


async def start_demo(tmp_path: Path, graph_cache_dir: Path, *arguments: str) -> asyncio.subprocess.Process:
    """Start ``enroute demo`` with its own embedded Redis; its output comes through a pipe."""
    env = {
        **os.environ,
        **DEMO_ENV,
        "ENROUTE_GRAPH_CACHE_DIR": str(graph_cache_dir),
        "ENROUTE_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("ENROUTE_REDIS_URL", None)
    command = [sys.executable, "-m", "api.cli", "--log-level", "warning", "demo", *arguments]
    return await asyncio.create_subprocess_exec(
        *command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )


@pytest.mark.slow
async def test_demo_runs_end_to_end(tmp_path: Path, graph_cache_dir: Path) -> None:
    port = free_port()
    process = await start_demo(
        tmp_path, graph_cache_dir,
        "--port", str(port), "--duration", "90", "--contractors", "4", "--jobs", "2",
        "--service-s", "15", "--min-trip-s", "10", "--max-trip-s", "30",
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    links: list[str] = []
    while len(links) < 2:
        raw = await asyncio.wait_for(process.stdout.readline(), 120)
        assert raw, "demo ended before printing the tracking links"
        lines.append(raw.decode())
        match = re.search(r"demo-c[12]-j1: (http://\S+)", lines[-1])
        if match:
            links.append(match.group(1))
    # Each contractor's first job is en route from the start.
    watched = await asyncio.gather(
        *(watch(f"ws://127.0.0.1:{port}/v1/track/{link.rsplit('/', 1)[1]}/ws", 45) for link in links)
    )
    updates = [update for updates in watched for update in updates]
    rest, _ = await asyncio.wait_for(process.communicate(), 120)
    output = "".join(lines) + rest.decode()

    assert process.returncode == 0, output
    positions = {(u["position"]["lat"], u["position"]["lon"]) for u in updates if u["position"]}
    assert len(positions) >= 2, output
    assert any(u["arrival_window"] for u in updates), output
    arrived = int(re.search(r"arrived \(geofence\):\s+(\d+)", output).group(1))  # type: ignore[union-attr]
    completed = int(re.search(r"completed \(geofence\):\s+(\d+)", output).group(1))  # type: ignore[union-attr]
    assert arrived >= 1, output
    assert completed >= 1, output
    assert "Dispatcher: http://" in output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux only")
async def test_demo_killed_stops_its_server(tmp_path: Path, graph_cache_dir: Path) -> None:
    process = await start_demo(
        tmp_path, graph_cache_dir, "--port", str(free_port()), "--duration", "300", "--contractors", "1"
    )
    assert process.stdout is not None
    servers: list[psutil.Process] = []
    alive: list[psutil.Process] = []
    try:
        # The links are printed once the server responds.
        while b"Dispatcher: http://" not in await asyncio.wait_for(process.stdout.readline(), 120):
            pass
        children = psutil.Process(process.pid).children(recursive=True)
        servers = [child for child in children if "serve" in child.cmdline()]
        process.kill()
        _, alive = await asyncio.to_thread(psutil.wait_procs, servers, timeout=15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        # A server left running would keep the demo's output pipe open.
        for server in alive:
            server.kill()
        await process.wait()
    assert len(servers) == 1
    assert alive == []
