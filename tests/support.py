"""Test helpers: real server processes, organisations and device clients."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_START_TIMEOUT_S = 120.0


def shared_dir() -> Path | None:
    """Return the folder of shared test data beside the repository, if present."""
    configured = os.environ.get("ENROUTE_SHARED_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared"
    return path if path.is_dir() else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unique_name(prefix: str = "org") -> str:
    """Return an organisation name no other test uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


class ServerProcess:
    """An ``enroute serve`` process on a free port against a given Redis.

    With ``redis_url`` None, the process starts or shares the embedded
    Redis in ``data_dir``.
    """

    def __init__(
        self,
        redis_url: str | None,
        log_path: Path,
        data_dir: Path | None = None,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.redis_url = redis_url
        self.args = args
        self.data_dir = data_dir
        self.port = free_port()
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        env = {**os.environ, **self.env}
        command = [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port), *self.args]
        if self.redis_url is None:
            env.pop("ENROUTE_REDIS_URL", None)
            if self.data_dir is not None:
                command += ["--data-dir", str(self.data_dir)]
        else:
            env["ENROUTE_REDIS_URL"] = self.redis_url
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}; log:\n"
                    + self.log_path.read_text()[-3000:]
                )
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become healthy; log:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def create_org(redis_url: str) -> tuple[str, str]:
    """Create an organisation with the CLI; return (org id, API key)."""
    name = unique_name()
    output = subprocess.run(
        [sys.executable, "-m", "api.cli", "org", "create", name, "--redis-url", redis_url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)
    return fields["organisation"], fields["api key"]


class Api:
    """A small synchronous REST client for one organisation."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )

    def close(self) -> None:
        self.client.close()

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.client.post(path, json=body)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params)

    def contractor(self, contractor_id: str, name: str = "Test Contractor") -> str:
        """Create a contractor; return its device token."""
        response = self.post("/v1/contractors", {"id": contractor_id, "name": name})
        assert response.status_code == 201, response.text
        return str(response.json()["device_token"])


class Device:
    """A device WebSocket that sends frames and reads one reply per frame."""

    def __init__(self, ws_url: str, token: str) -> None:
        self.url = f"{ws_url}/v1/devices/stream"
        self.token = token
        self.connection: Any = None

    async def __aenter__(self) -> Device:
        self.connection = await websockets.connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=None,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.connection.close()

    async def send(self, frame: Any) -> dict[str, Any]:
        """Send a frame (a dict, a string or bytes) and return the reply."""
        if isinstance(frame, (dict, list)):
            frame = orjson.dumps(frame).decode()
        await self.connection.send(frame)
        reply = await asyncio.wait_for(self.connection.recv(), timeout=60)
        return orjson.loads(reply)  # type: ignore[no-any-return]


@contextmanager
def running_server(redis_url: str, log_path: Path, **env: str) -> Iterator[ServerProcess]:
    """Run a server process for the duration of the block."""
    server = ServerProcess(redis_url, log_path, **env).start()
    try:
        yield server
    finally:
        server.stop()
