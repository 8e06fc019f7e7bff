"""The server against a real three-node Redis Cluster.

The nodes run the same ``redis-server`` binary as the embedded Redis; the
cluster is formed with CLUSTER MEET and CLUSTER ADDSLOTS, so no redis-cli
is needed.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
import websockets

from support import Api, Device, create_org, free_port, running_server
from tracker.redis_server import find_redis_server

SLOTS = 16384


def cluster_port() -> int:
    """Return a free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port > 55000:
            port -= 30000
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = find_redis_server()
    ports = [cluster_port() for _ in range(3)]
    processes = []
    for port in ports:
        folder = tmp_path_factory.mktemp(f"node{port}")
        processes.append(
            subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(folder / "nodes.conf"), "--dir", str(folder),
                 "--save", "", "--appendonly", "yes"],  # fmt: skip
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        clients = [redis.Redis(host="127.0.0.1", port=port) for port in ports]
        deadline = time.monotonic() + 10
        while True:
            try:
                for client in clients:
                    client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        share = SLOTS // 3
        for index, client in enumerate(clients):
            first = index * share
            last = SLOTS - 1 if index == 2 else first + share - 1
            client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
            if index:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0])
        deadline = time.monotonic() + 20
        while any(b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO") for c in clients):
            assert time.monotonic() < deadline, "the cluster did not form"
            time.sleep(0.1)
        for client in clients:
            client.close()
        yield f"redis://127.0.0.1:{ports[0]}?cluster=true"
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


async def test_cluster_ingest_jobs_and_live_views(
    cluster_url: str, tmp_path: Path, graph_cache_dir: Path, open_api: Callable[[str, str], Api]
) -> None:
    org, key = create_org(cluster_url)
    env = {"ENROUTE_GRAPH_CACHE_DIR": str(graph_cache_dir)}
    with running_server(cluster_url, tmp_path / "server.log", **env) as server:
        api = open_api(server.base_url, key)
        token = api.contractor("c1")
        now = time.time()
        body = {
            "id": "j1",
            "contractor_id": "c1",
            "site": {"lat": 60.16935, "lon": 24.93890, "radius_m": 50},
            "window": {"start": iso(now), "end": iso(now + 3600)},
        }
        assert api.post("/v1/jobs", body).status_code == 201
        assert api.post("/v1/jobs/j1/dispatch").json()["status"] == "en_route"
        link = api.client.post("/v1/jobs/j1/share").json()
        track_url = f"{server.ws_url}/v1/track/{link['token']}/ws"
        async with websockets.connect(track_url) as customer, Device(server.ws_url, token) as device:
            await asyncio.wait_for(customer.recv(), 10)
            reply = await device.send({"t": time.time(), "lat": 60.1720, "lon": 24.9389, "acc": 5.0})
            update = orjson.loads(await asyncio.wait_for(customer.recv(), 10))
            while update.get("type") != "update" or update["position"] is None:
                update = orjson.loads(await asyncio.wait_for(customer.recv(), 10))
        job = api.get("/v1/jobs/j1").json()
        fleet = api.get("/v1/fleet").json()
        heat = api.get("/v1/fleet/heatmap", res=8, format="cells").json()
        log = (tmp_path / "server.log").read_text()
    assert reply["accepted"] == 1
    assert update["position"]["lat"] == 60.1720
    assert job["eta_s"] is not None
    assert [f["properties"]["contractor_id"] for f in fleet["features"]] == ["c1"]
    assert heat["cells"][0]["count"] == 1
    assert "Traceback" not in log
    assert org
