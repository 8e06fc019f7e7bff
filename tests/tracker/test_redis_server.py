"""The embedded redis-server: start, persistence, leftovers and supervision."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis

from tracker.redis_server import EmbeddedRedis


def wait_for_ping(url: str, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        client = redis.Redis.from_url(url, socket_timeout=1)
        try:
            if client.ping():
                return True
        except (redis.ConnectionError, OSError):
            time.sleep(0.1)
        finally:
            client.close()
    return False


def test_embedded_keeps_data_across_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    redis.Redis.from_url(url).set("k", "v")
    server.stop()
    server.start()
    try:
        assert redis.Redis.from_url(url).get("k") == b"v"
    finally:
        server.stop()


def test_embedded_stop_removes_process(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    pid = server.pid
    server.stop()
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists()


def test_supervisor_restarts_killed_server(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    server.supervise(poll_s=0.1)
    try:
        redis.Redis.from_url(url).set("acked", "1")
        time.sleep(1.1)  # appendfsync everysec
        old_pid = server.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while server.pid in (None, old_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert wait_for_ping(url)
        assert server.restarts == 1
        assert redis.Redis.from_url(url).get("acked") == b"1"
    finally:
        server.stop()


def test_leftover_of_killed_parent_is_reused(tmp_path: Path) -> None:
    # A parent that starts the server and is then SIGKILLed.
    script = (
        "import sys, time\n"
        "from tracker.redis_server import EmbeddedRedis\n"
        f"EmbeddedRedis({str(tmp_path)!r}).start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == "ready"
    parent.kill()
    parent.wait()
    parent.stdout.close()

    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        assert wait_for_ping(url)
    finally:
        server.stop()
    leftover = int((tmp_path / "redis.pid").read_text()) if (tmp_path / "redis.pid").exists() else None
    assert leftover is None or not Path(f"/proc/{leftover}").exists()


def servers_on(socket_path: Path) -> list[int]:
    """Return the pids of the redis-server processes listening on ``socket_path``."""
    pids = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(socket_path) in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            pids.append(process.pid)
    return pids


def wait_for_new_pid(servers: list[EmbeddedRedis], old_pid: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(server.pid not in (None, old_pid) for server in servers):
            return
        time.sleep(0.1)


def test_sharers_take_over_stopped_server(tmp_path: Path) -> None:
    owner = EmbeddedRedis(tmp_path)
    url = owner.start()
    sharers = [EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)]
    for sharer in sharers:
        sharer.start()
        sharer.supervise(poll_s=0.1)
    try:
        redis.Redis.from_url(url).set("acked", "1")
        old_pid = owner.pid
        assert old_pid is not None
        assert [sharer.pid for sharer in sharers] == [old_pid, old_pid]

        owner.stop()
        wait_for_new_pid(sharers, old_pid)

        assert wait_for_ping(url)
        new_pid = sharers[0].pid
        assert new_pid not in (None, old_pid)
        assert sharers[1].pid == new_pid
        assert servers_on(sharers[0].socket_path) == [new_pid]
        assert redis.Redis.from_url(url).get("acked") == b"1"
    finally:
        for sharer in sharers:
            sharer.stop()
    assert servers_on(sharers[0].socket_path) == []
