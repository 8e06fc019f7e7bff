"""Redis connections and the batched, retrying write path of the ingest.

Many device connections share one :class:`PingWriter`. Each frame becomes
one call of the ingest script, and the writer sends all calls queued in one
event-loop turn as a single pipeline, so a thousand busy connections cost
a handful of round trips rather than a thousand. A frame's future resolves
only after Redis has replied, which is what lets the device get its ack.

On a single Redis server (not a cluster, plain TCP or a Unix socket) the
writer keeps a connection of its own, :class:`RedisPipe`: it encodes the
whole pipeline into one buffer and parses the replies with hiredis as they
arrive, which costs a fraction of redis-py's per-command packing and
per-reply timeouts. Cluster and TLS clients go through redis-py pipelines.

When Redis is unreachable the writer retries with exponential backoff for
up to ``retry_s`` seconds, then fails the pending frames with
:class:`StoreUnavailableError`; a failed frame is never acknowledged, so the
device keeps its pings and sends them again.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from h3.api import basic_int as h3_int
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker import keys
from tracker.pings import Ping
from tracker.settings import cluster_url_parts

logger = logging.getLogger(__name__)

# Two fixes confirm a jump only when they are this close in time.
JUMP_CONFIRM_WINDOW_S = 600.0
MAX_CALLS_PER_PIPELINE = 512
# Pipelines waiting for Redis at once: with more than one, Redis runs one
# pipeline while the server builds the next.
MAX_PIPELINES_IN_FLIGHT = 4
RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 2.0
# A pipeline whose replies take longer than this is failed and retried on a
# new connection. The ingest script is idempotent, so a retried call that
# Redis had already run only turns its pings into duplicates.
PIPELINE_REPLY_TIMEOUT_S = 30.0
# Bits of an H3 index below the mode and resolution fields, see keys.py.
_CELL_SCORE_MASK = (1 << 52) - 1
# Devices whose key names the writer keeps encoded; the cache starts over
# when it is full.
MAX_CACHED_DEVICES = 100_000

RedisClient = aioredis.Redis | RedisCluster
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class StoreUnavailableError(RuntimeError):
    """Redis did not accept a write within the retry deadline."""


# Connections per process (per node on a cluster), and how long a request
# waits for one when all are busy.
MAX_CONNECTIONS = 128
POOL_TIMEOUT_S = 20.0


def connect(url: str) -> RedisClient:
    """Return an asyncio client for ``url``; a cluster URL gets the cluster client.

    :func:`tracker.settings.cluster_url_parts` decides whether the URL names a cluster.
    """
    is_cluster, plain = cluster_url_parts(url)
    if is_cluster:
        return RedisCluster.from_url(
            plain, decode_responses=False, max_connections=MAX_CONNECTIONS
        )
    # A burst of requests beyond the pool waits for a free connection
    # instead of failing with "Too many connections".
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_TIMEOUT_S,
        health_check_interval=10,
        decode_responses=False,
    )
    return aioredis.Redis.from_pool(pool)


def load_script(name: str) -> str:
    """Return the text of a Lua script shipped in the ``tracker`` package."""
    return importlib.resources.files("tracker").joinpath(name).read_text()


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Outcome of the ingest script for one frame of one device."""

    statuses: str  # one letter per ping, see ingest.lua
    open_jobs: list[str]
    interval_s: float | None
    #: Per entry of open_jobs: its hash fields named in keys.JOB_LOADED_FIELDS
    #: as read by the script (None where missing).
    job_fields: list[list[bytes | None]] = field(default_factory=list)
    #: Whether the script ran on a second or later attempt. The first may
    #: have stored the pings before its reply was lost, so a "d" status may
    #: be a ping of this very frame.
    retried: bool = False


@dataclass(slots=True)
class _Call:
    org: str
    device_id: str
    # The four keys, the device id and the limits, as a list and as RESP
    # bulk strings.
    head: tuple[list[str], str]
    pings: Sequence[Ping]
    # The six script arguments of every ping (see ingest.lua), as RESP bulk
    # strings when the writer has its own connection, else as a list.
    encoded: str
    values: list[str]
    future: asyncio.Future[StoreResult]
    # Set once an attempt failed: Redis may have run the script anyway.
    retried: bool = False


@dataclass(frozen=True, slots=True)
class _Submitted:
    """A pipeline already written on a connection, waiting for its replies."""

    pipe: RedisPipe
    future: asyncio.Future[list[Any]]


def _pipe_params(client: RedisClient) -> dict[str, Any] | None:
    """Return what :class:`RedisPipe` needs to reach the client's server, or None.

    Only a single server over plain TCP or a Unix socket qualifies; TLS,
    cluster and credential-provider clients keep redis-py's pipelines.
    """
    if not isinstance(client, aioredis.Redis):
        return None
    pool = client.connection_pool
    if pool.connection_class not in (Connection, UnixDomainSocketConnection):
        return None
    params = dict(pool.connection_kwargs)
    if params.get("credential_provider") is not None:
        return None
    return params


class _PendingPipeline:
    """Replies collected for one pipeline sent on a :class:`RedisPipe`."""

    __slots__ = ("count", "replies", "future", "on_reply")

    def __init__(
        self,
        count: int,
        future: asyncio.Future[list[Any]],
        on_reply: Callable[[int, Any], None] | None,
    ) -> None:
        self.count = count
        self.replies: list[Any] = []
        self.future = future
        self.on_reply = on_reply


class RedisPipe(asyncio.Protocol):
    """A Redis connection that sends a pipeline as one buffer and parses replies in C.

    Several pipelines may be in flight: Redis replies to the commands of one
    connection in order, so replies are matched to pipelines first in,
    first out. A lost connection fails every pipeline in flight with
    :class:`redis.exceptions.ConnectionError` and leaves the pipe closed.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        self._pending: deque[_PendingPipeline] = deque()
        self.closed = False
        self._lost = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, params: dict[str, Any]) -> RedisPipe:
        """Connect with redis-py connection keywords (``path`` or ``host``/``port``).

        Sends AUTH when a password is given and SELECT for a database other
        than 0.
        """
        loop = asyncio.get_running_loop()
        connect_timeout_s = params.get("socket_connect_timeout") or 5.0
        async with asyncio.timeout(connect_timeout_s):
            if params.get("path"):
                _, pipe = await loop.create_unix_connection(cls, params["path"])
            else:
                host, port = params.get("host", "localhost"), params.get("port", 6379)
                _, pipe = await loop.create_connection(cls, host, port)
        handshake: list[list[bytes]] = []
        if params.get("password"):
            auth = [b"AUTH", str(params["password"]).encode()]
            if params.get("username"):
                auth.insert(1, str(params["username"]).encode())
            handshake.append(auth)
        if params.get("db"):
            handshake.append([b"SELECT", str(params["db"]).encode()])
        if handshake:
            payload = b"".join(pack_command(command) for command in handshake)
            try:
                replies = await pipe.execute(payload, len(handshake))
            except BaseException:
                # The caller never gets this pipe, so only this code can close it.
                pipe.close()
                raise
            for reply in replies:
                if isinstance(reply, hiredis.ReplyError):
                    pipe.close()
                    raise RedisConnectionError(f"redis rejected the connection setup: {reply}")
        return pipe

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        pending = self._pending
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                if not pending:
                    raise hiredis.ProtocolError("reply without a pending command")
                head = pending[0]
                head.replies.append(reply)
                if head.on_reply is not None:
                    head.on_reply(len(head.replies) - 1, reply)
                if len(head.replies) == head.count:
                    pending.popleft()
                    if not head.future.done():
                        head.future.set_result(head.replies)
                reply = reader.gets()
        except hiredis.ProtocolError as error:
            self._fail(RedisConnectionError(f"invalid reply from redis: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(RedisConnectionError(f"connection to redis lost: {exc or 'closed by server'}"))
        if not self._lost.done():
            self._lost.set_result(None)

    def _fail(self, error: Exception) -> None:
        while self._pending:
            future = self._pending.popleft().future
            if not future.done():
                future.set_exception(error)

    async def execute(
        self,
        payload: bytes,
        count: int,
        on_reply: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """Send an encoded pipeline of ``count`` commands; return their replies.

        Error replies come back as :class:`hiredis.ReplyError` items.
        ``on_reply`` is called with the index and reply of each command as
        soon as it arrives, so callers can act before the last reply.

        Raises
        ------
        redis.exceptions.ConnectionError
            When the connection is or gets closed.
        redis.exceptions.TimeoutError
            When the replies take over ``PIPELINE_REPLY_TIMEOUT_S``; the
            connection is closed, since later replies would be misaligned.
        """
        if count == 0:
            return []
        return await self.wait(self.submit(payload, count, on_reply), count)

    def submit(
        self,
        payload: bytes,
        count: int,
        on_reply: Callable[[int, Any], None] | None = None,
    ) -> asyncio.Future[list[Any]]:
        """Write an encoded pipeline now; return the future of its replies.

        Raises
        ------
        redis.exceptions.ConnectionError
            When the connection is closed.
        """
        if self.closed or self._transport is None:
            raise RedisConnectionError("connection to redis is closed")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append(_PendingPipeline(count, future, on_reply))
        self._transport.write(payload)
        return future

    async def wait(self, future: asyncio.Future[list[Any]], count: int) -> list[Any]:
        """Return the replies of a submitted pipeline; see :meth:`execute` for errors."""
        try:
            async with asyncio.timeout(PIPELINE_REPLY_TIMEOUT_S):
                return await future
        except TimeoutError:
            self.close()
            raise RedisTimeoutError(
                f"redis did not reply to a pipeline of {count} commands within "
                f"{PIPELINE_REPLY_TIMEOUT_S:.0f} s"
            ) from None

    def close(self) -> None:
        """Close the connection and fail the pipelines in flight."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        self._fail(RedisConnectionError("connection to redis closed"))

    async def wait_closed(self) -> None:
        """Close the connection and wait until its socket is released.

        The transport releases its socket one event-loop turn after
        ``close``, so a loop closed before that turn leaves the socket open.
        """
        self.close()
        if self._transport is not None:
            await asyncio.shield(self._lost)


Argument = str | bytes | int | float


def pack_command(args: Sequence[Argument]) -> bytes:
    """Encode one command in the Redis protocol (RESP) as an array of bulk strings.

    Text is encoded as UTF-8 and numbers in their ``repr`` form. hiredis
    encodes str, bytes, int and float arguments in C; other kinds, such as
    a bytearray, take the slower path in Python.
    """
    try:
        return hiredis.pack_command(args if type(args) is tuple else tuple(args))  # type: ignore[no-any-return]
    except TypeError:
        return _pack_command_python(args)


def _pack_command_python(args: Sequence[Argument]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        # Exact type checks: this runs for every argument of the live path.
        kind = type(arg)
        if kind is str:
            data = arg.encode()  # type: ignore[union-attr]
        elif kind is bytes:
            data = arg  # type: ignore[assignment]
        elif isinstance(arg, str):
            data = str(arg).encode()
        elif isinstance(arg, bytes | bytearray | memoryview):
            data = bytes(arg)
        else:
            data = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _done(replies: list[Any]) -> asyncio.Future[list[Any]]:
    future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    future.set_result(replies)
    return future


class CommandPipe:
    """Run lists of plain commands as pipelines, on a connection of its own when possible.

    On a single server over plain TCP or a Unix socket the commands go out
    as one buffer on a :class:`RedisPipe` and hiredis parses the replies.
    That costs a fraction of a redis-py pipeline, which other clients use.
    Use commands whose replies redis-py leaves as they come (not HGETALL,
    which it turns into a dict). Pipelines on one CommandPipe run in the
    order they were sent.
    """

    def __init__(
        self,
        client: RedisClient,
        connection: Callable[[], Awaitable[RedisPipe]] | None = None,
    ) -> None:
        """Use ``client``'s server; ``connection`` returns a shared connection to use instead of an own one."""
        self.client = client
        self._params = _pipe_params(client)
        self._connection = connection
        self._pipe: RedisPipe | None = None
        self._lock = asyncio.Lock()

    async def execute(self, commands: Sequence[Sequence[Argument]]) -> list[Any]:
        """Send ``commands`` in one pipeline and return their replies.

        Raises
        ------
        redis.exceptions.ResponseError
            For the first command that Redis rejected, after all have run.
        redis.exceptions.ConnectionError
            When the connection is lost; the commands may have run or not.
        """
        return await (await self.send(commands))

    async def send(self, commands: Sequence[Sequence[Argument]]) -> Awaitable[list[Any]]:
        """Write ``commands`` as one pipeline; return an awaitable of their replies.

        On a RedisPipe connection this returns as soon as the commands are
        written, so the caller may go on before Redis replies. Through
        redis-py it returns after the replies. Awaiting the result raises
        like :meth:`execute`.
        """
        if not commands:
            return _done([])
        if self._params is None:
            client_pipe = self.client.pipeline(transaction=False)
            for command in commands:
                client_pipe.execute_command(*command)
            return _done(await client_pipe.execute())
        payload = b"".join([pack_command(command) for command in commands])
        if self._connection is not None:
            pipe = await self._connection()
        else:
            async with self._lock:
                if self._pipe is None or self._pipe.closed:
                    self._pipe = await RedisPipe.open(self._params)
                pipe = self._pipe
        future = pipe.submit(payload, len(commands))
        return self._checked(commands, pipe.wait(future, len(commands)))

    async def _checked(
        self, commands: Sequence[Sequence[Argument]], replies_coroutine: Awaitable[list[Any]]
    ) -> list[Any]:
        replies = await replies_coroutine
        for command, reply in zip(commands, replies):
            if isinstance(reply, hiredis.ReplyError):
                name = command[0].decode() if isinstance(command[0], bytes) else str(command[0])
                raise ResponseError(f"{name} failed: {reply}")
        return replies

    async def aclose(self) -> None:
        """Close the own connection, if there is one; pipelines in flight fail.

        A shared connection stays open for its owner.
        """
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            await pipe.wait_closed()


class PingWriter:
    """Queue frames from many connections and write them in shared pipelines."""

    def __init__(
        self,
        client: RedisClient,
        *,
        h3_res: int = 9,
        history_s: float = 7 * 86400.0,
        max_speed_mps: float = 70.0,
        retry_s: float = 30.0,
    ) -> None:
        self.client = client
        self.h3_res = h3_res
        self.history_s = history_s
        self.max_speed_mps = max_speed_mps
        self.retry_s = retry_s
        self._script = load_script("ingest.lua")
        self._sha: str | None = None
        self._pipe_params = _pipe_params(client)
        self._pipe: RedisPipe | None = None
        self._limits = [repr(history_s), repr(max_speed_mps), repr(JUMP_CONFIRM_WINDOW_S)]
        self._heads: dict[tuple[str, str], tuple[list[str], str]] = {}
        self._queue: list[_Call] = []
        self._flush_scheduled = False
        self._lock = asyncio.Lock()
        self._in_flight = 0
        self._slot_freed = asyncio.Event()
        self._pipe_lock = asyncio.Lock()
        #: Called once the replies of a pipeline have resolved its frames'
        #: futures, before the writers resume: the lifecycle uses it to
        #: start its next batch in the turn that those writers run.
        self.on_stored: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.frames_written = 0
        self.pipelines_sent = 0

    def _head(self, org: str, device_id: str) -> tuple[list[str], str]:
        """Return the keys, device id and limits of a call, also as RESP."""
        head = self._heads.get((org, device_id))
        if head is None:
            if len(self._heads) >= MAX_CACHED_DEVICES:
                self._heads.clear()
            values = [
                keys.device(org, device_id),
                keys.history(org, device_id),
                keys.cells(org),
                keys.heat(org),
                device_id,
                *self._limits,
            ]
            encoded = "".join(f"${len(value.encode())}\r\n{value}\r\n" for value in values)
            head = (values, encoded)
            self._heads[org, device_id] = head
        return head

    def _ping_fields(self, ping: Ping) -> tuple[str, str, str, str, str, str]:
        """Return a ping's script arguments: t, lat, lon, acc, cell score, JSON."""
        acc = ping.acc
        return (
            repr(ping.t),
            repr(ping.lat),
            repr(ping.lon),
            "-1.0" if acc is None else repr(acc),
            str(h3_int.latlng_to_cell(ping.lat, ping.lon, self.h3_res) & _CELL_SCORE_MASK),
            ping.to_json().decode(),
        )

    def _encode_pings(self, pings: Sequence[Ping]) -> str:
        """Return the script arguments of ``pings`` as RESP bulk strings."""
        # The values are ASCII, so a str's length is its byte length.
        parts = []
        for ping in pings:
            t, lat, lon, acc, cell, fix = self._ping_fields(ping)
            parts.append(
                f"${len(t)}\r\n{t}\r\n${len(lat)}\r\n{lat}\r\n"
                f"${len(lon)}\r\n{lon}\r\n${len(acc)}\r\n{acc}\r\n"
                f"${len(cell)}\r\n{cell}\r\n${len(fix)}\r\n{fix}\r\n"
            )
        return "".join(parts)

    async def write(self, org: str, device_id: str, pings: Sequence[Ping]) -> StoreResult:
        """Store one frame's valid pings of a device; return once Redis replied.

        Raises
        ------
        StoreUnavailableError
            When Redis stayed unreachable for ``retry_s`` seconds.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoreResult] = loop.create_future()
        head = self._head(org, device_id)
        if self._pipe_params is not None:
            call = _Call(org, device_id, head, pings, self._encode_pings(pings), [], future)
        else:
            values = [value for ping in pings for value in self._ping_fields(ping)]
            call = _Call(org, device_id, head, pings, "", values, future)
        self._queue.append(call)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def command_pipe(self) -> CommandPipe:
        """Return a CommandPipe on the writer's own connection (when it has one).

        Redis runs commands sent through it after every frame written before
        them and before every frame written after them.
        """
        connection = self._connected_pipe if self._pipe_params is not None else None
        return CommandPipe(self.client, connection)

    async def aclose(self) -> None:
        """Close the writer's own Redis connection, if it has one."""
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            await pipe.wait_closed()

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        # The usual case: the connection is open, the script is loaded and a
        # pipeline slot is free. The calls are then written in this turn of
        # the event loop rather than two turns later through the flusher.
        pipe, sha = self._pipe, self._sha
        while (
            self._queue
            and pipe is not None
            and not pipe.closed
            and sha is not None
            and not self._lock.locked()
            and self._in_flight < MAX_PIPELINES_IN_FLIGHT
        ):
            calls = self._queue[:MAX_CALLS_PER_PIPELINE]
            try:
                future = self._submit_on_pipe(pipe, calls, sha)
            except RedisConnectionError:
                break  # the flusher reconnects
            del self._queue[:MAX_CALLS_PER_PIPELINE]
            self._in_flight += 1
            self._track(self._send_pipeline(calls, _Submitted(pipe, future)))
        if self._queue:
            self._track(self._flush())

    def _track(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_task_failure)

    async def _acquire_slot(self) -> None:
        while self._in_flight >= MAX_PIPELINES_IN_FLIGHT:
            self._slot_freed.clear()
            await self._slot_freed.wait()
        self._in_flight += 1

    async def _flush(self) -> None:
        # One flusher at a time takes calls off the queue, in order. Calls
        # queued while all pipelines are in flight go out together later.
        async with self._lock:
            while self._queue:
                await self._acquire_slot()
                calls = self._queue[:MAX_CALLS_PER_PIPELINE]
                del self._queue[:MAX_CALLS_PER_PIPELINE]
                self._track(self._send_pipeline(calls))

    async def _send_pipeline(self, calls: list[_Call], submitted: _Submitted | None = None) -> None:
        try:
            await self._send_with_retry(calls, submitted)
        finally:
            self._in_flight -= 1
            self._slot_freed.set()

    async def _send_with_retry(self, calls: list[_Call], submitted: _Submitted | None = None) -> None:
        """Write the calls until Redis replies; ``submitted`` is a first attempt already written."""
        deadline = time.monotonic() + self.retry_s
        delay_s = RETRY_FIRST_DELAY_S
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._send(calls, submitted)
                if attempt > 1:
                    logger.info("redis write succeeded after %d attempts", attempt)
                return
            except TRANSIENT_ERRORS as error:
                if time.monotonic() + delay_s > deadline:
                    logger.error(
                        "redis unreachable for %.0f s; failing %d frames: %s",
                        self.retry_s, len(calls), error,
                    )
                    # A write sent before Redis stopped replying may still
                    # run, so the message can't promise that nothing was stored.
                    failure = StoreUnavailableError(
                        "storage is unavailable; the pings may not have been stored, "
                        "send them again (pings already stored count as duplicates)"
                    )
                    for call in calls:
                        if not call.future.done():
                            call.future.set_exception(failure)
                    return
                if attempt == 1 or attempt % 10 == 0:
                    logger.warning(
                        "redis write failed (attempt %d), retrying in %.2f s: %s",
                        attempt, delay_s, error,
                    )
                submitted = None
                for call in calls:
                    call.retried = True
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_DELAY_S)

    async def _send(self, calls: list[_Call], submitted: _Submitted | None = None) -> None:
        if submitted is not None:
            # Written by _start_flush, with every call still pending.
            pending = calls
            replies = await submitted.pipe.wait(submitted.future, len(calls))
        else:
            if self._sha is None:
                self._sha = await self.client.script_load(self._script)
            pending = [call for call in calls if not call.future.done()]
            if self._pipe_params is not None:
                replies = await self._execute_on_pipe(pending, self._sha)
            else:
                replies = await self._execute_on_client(pending, self._sha)
        self.pipelines_sent += 1

        missing_script = []
        for call, reply in zip(pending, replies):
            if call.future.done():
                continue
            if isinstance(reply, NoScriptError) or (
                isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")
            ):
                missing_script.append(call)
                continue
            if isinstance(reply, TRANSIENT_ERRORS):
                raise reply
            if is_transient_reply(reply):
                raise RedisConnectionError(f"redis is not ready: {reply}")
            if isinstance(reply, hiredis.ReplyError | ResponseError | Exception):
                logger.error(
                    "ingest script failed for org %s device %s: %s",
                    call.org, call.device_id, reply,
                )
                error = reply if isinstance(reply, ResponseError) else ResponseError(str(reply))
                call.future.set_exception(error)
                continue
            try:
                call.future.set_result(_parse_reply(reply, call.retried))
            except (ValueError, IndexError, TypeError, AttributeError) as error:
                logger.error(
                    "unexpected ingest script reply for org %s device %s: %r (%s)",
                    call.org, call.device_id, reply, error,
                )
                call.future.set_exception(ResponseError(f"unexpected ingest script reply: {error}"))
                continue
            self.frames_written += 1
        if missing_script:
            # A restarted Redis has lost its script cache: load it again.
            logger.info("reloading the ingest script after a redis restart")
            self._sha = None
            await self._send(missing_script)

    async def _execute_on_pipe(self, calls: list[_Call], sha: str) -> list[Any]:
        if not calls:
            return []
        pipe = await self._connected_pipe()
        return await pipe.wait(self._submit_on_pipe(pipe, calls, sha), len(calls))

    def _submit_on_pipe(
        self, pipe: RedisPipe, calls: list[_Call], sha: str
    ) -> asyncio.Future[list[Any]]:
        """Write the calls on the pipe now; return the future of the replies."""
        prefix = f"$7\r\nEVALSHA\r\n${len(sha)}\r\n{sha}\r\n$1\r\n4\r\n"
        parts = [
            f"*{11 + 6 * len(call.pings)}\r\n{prefix}{call.head[1]}{call.encoded}".encode()
            for call in calls
        ]

        last = len(calls) - 1

        def resolve_early(index: int, reply: Any) -> None:
            # A successful call gets its result at once. Errors wait for the
            # whole pipeline, where _send retries or fails them.
            future = calls[index].future
            if isinstance(reply, list) and not future.done():
                try:
                    result = _parse_reply(reply, calls[index].retried)
                except (ValueError, IndexError, TypeError, AttributeError):
                    result = None
                if result is not None:
                    future.set_result(result)
                    self.frames_written += 1
            if index == last and self.on_stored is not None:
                self.on_stored()

        return pipe.submit(b"".join(parts), len(calls), resolve_early)

    async def _execute_on_client(self, calls: list[_Call], sha: str) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(sha, 4, *call.head[0], *call.values)
        return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    async def _connected_pipe(self) -> RedisPipe:
        async with self._pipe_lock:
            if self._pipe is None or self._pipe.closed:
                assert self._pipe_params is not None
                self._pipe = await RedisPipe.open(self._pipe_params)
            return self._pipe


# Error replies of a server that is starting, busy or failing over: the
# write is retried rather than failed.
TRANSIENT_REPLY_PREFIXES = ("LOADING ", "BUSY ", "TRYAGAIN ", "MASTERDOWN ", "CLUSTERDOWN ")


def is_transient_reply(reply: Any) -> bool:
    """Return whether a reply is an error that a retry may clear (LOADING, BUSY, ...)."""
    return isinstance(reply, hiredis.ReplyError | ResponseError) and str(reply).startswith(
        TRANSIENT_REPLY_PREFIXES
    )


def _parse_reply(reply: list[Any], retried: bool = False) -> StoreResult:
    statuses = b"".join(reply[0]).decode()
    jobs = [job for job in reply[1].decode().split(",") if job] if reply[1] else []
    interval = float(reply[2]) if reply[2] else None
    return StoreResult(statuses, jobs, interval, list(reply[3]) if len(reply) > 3 else [], retried)


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("ping writer flush failed", exc_info=task.exception())
