"""Shared fixtures: a real Redis, a real server process, organisations.

The suite starts its own embedded redis-server, the same way the product
does; ``ENROUTE_TEST_REDIS_URL`` points it at an external server instead.
Tests never flush the database: each one works in organisations of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from support import Api, ServerProcess, create_org
from tracker.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("ENROUTE_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_sync(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def graph_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("graph-cache")


@pytest.fixture(scope="session")
def server(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, graph_cache_dir: Path
) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    process = ServerProcess(
        redis_url, log_path, ENROUTE_GRAPH_CACHE_DIR=str(graph_cache_dir)
    ).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture()
def org(redis_url: str) -> tuple[str, str]:
    """A fresh organisation: (org id, API key)."""
    return create_org(redis_url)


@pytest.fixture()
def api(server: ServerProcess, org: tuple[str, str]) -> Iterator[Api]:
    client = Api(server.base_url, org[1])
    yield client
    client.close()


@pytest.fixture()
def open_api() -> Iterator[Callable[[str, str], Api]]:
    """Open REST clients (base URL, API key) that are closed when the test ends."""
    clients: list[Api] = []

    def open_client(base_url: str, api_key: str) -> Api:
        clients.append(Api(base_url, api_key))
        return clients[-1]

    yield open_client
    for client in clients:
        client.close()
