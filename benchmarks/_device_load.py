"""Device WebSocket load for the ingest benchmark, run in worker processes.

Each worker process opens a share of the device connections and runs the
phases that the parent sends it over a pipe. A paced phase sends single
frames at a fixed rate, open loop: a frame's latency counts from the time
it was due, so a slow server cannot hide its backlog. A closed-loop phase
keeps one frame in flight per connection and sends the next as soon as the
ack arrives ("as fast as acks come back").

Every device moves along its own line at about 11 m/s in fix time, so its
pings pass the jump filter, cross H3 cells now and then, and never repeat
a fix time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

logger = logging.getLogger(__name__)

CONNECT_CONCURRENCY = 50
DRAIN_TIMEOUT_S = 30.0
PACING_TICK_S = 0.002
#: Fix-time step between a device's consecutive pings.
FIX_STEP_S = 0.01
#: Latitude step per ping: 1.0e-6 degrees is about 0.11 m, so 11 m/s.
LAT_STEP_DEG = 1.0e-6


@dataclass(frozen=True, slots=True)
class Device:
    """A device the worker connects as, and where its track starts."""

    token: str
    lat_deg: float
    lon_deg: float


@dataclass(frozen=True, slots=True)
class Phase:
    """One measured phase, as the parent sends it to every worker.

    ``frames_per_s`` is this worker's pacing rate; None selects the closed
    loop. ``start_at`` is a ``time.monotonic()`` value, which all processes
    of one Linux machine share.
    """

    name: str
    pings_per_frame: int
    duration_s: float
    start_at: float
    frames_per_s: float | None = None
    frames_per_device: int | None = None


@dataclass(slots=True)
class PhaseStats:
    """Counts, ack latencies (s) and CPU time (s) of one worker in one phase."""

    frames_sent: int = 0
    acks: int = 0
    errors: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    accepted_in_window: int = 0
    lost_connections: int = 0
    cpu_s: float = 0.0
    latencies_s: array = field(default_factory=lambda: array("d"))

    def to_message(self) -> dict[str, Any]:
        """Return the stats as a picklable dict, latencies as raw doubles."""
        message = {name: getattr(self, name) for name in self.__slots__}
        message["latencies_s"] = self.latencies_s.tobytes()
        return message


class _Connection:
    """One device connection: its socket, track and frames awaiting an ack."""

    __slots__ = ("device", "socket", "sequence", "sent_at", "remaining", "closed")

    def __init__(self, device: Device, socket: ClientConnection) -> None:
        self.device = device
        self.socket = socket
        self.sequence = 0
        self.sent_at: deque[float] = deque()
        self.remaining = 0
        self.closed = False

    def next_frame(self, t_base: float, pings: int) -> str:
        """Build the next frame of ``pings`` fixes along the device's track."""
        device = self.device
        parts = []
        for _ in range(pings):
            sequence = self.sequence
            self.sequence = sequence + 1
            parts.append(
                '{"t":%.2f,"lat":%.6f,"lon":%.6f,"acc":8.0,"spd":11.1,"hdg":0.0}'
                % (
                    t_base + sequence * FIX_STEP_S,
                    device.lat_deg + sequence * LAT_STEP_DEG,
                    device.lon_deg,
                )
            )
        if pings == 1:
            return parts[0]
        return '{"pings":[' + ",".join(parts) + "]}"


class _Worker:
    """The event-loop side of a worker process."""

    def __init__(self, ws_url: str, devices: list[Device], t_base: float) -> None:
        self.url = f"{ws_url}/v1/devices/stream"
        self.devices = devices
        self.t_base = t_base
        self.connections: list[_Connection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.phase: Phase | None = None
        self.stats = PhaseStats()
        self.end_at = 0.0
        self.in_flight = 0
        self.drained = asyncio.Event()

    async def connect_all(self) -> None:
        """Open every device's connection, a bounded number at a time."""
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(device: Device) -> _Connection:
            async with limit:
                socket = await websockets.connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {device.token}"},
                    max_size=None,
                    open_timeout=60,
                )
            return _Connection(device, socket)

        self.connections = list(await asyncio.gather(*(connect(d) for d in self.devices)))
        self.readers = [
            asyncio.create_task(self._read_acks(connection))
            for connection in self.connections
        ]

    async def close_all(self) -> None:
        """Close every connection and stop the ack readers."""
        await asyncio.gather(
            *(connection.socket.close() for connection in self.connections),
            return_exceptions=True,
        )
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)

    async def run_phase(self, phase: Phase) -> PhaseStats:
        """Run one phase from its start time and return what it measured."""
        self.phase = phase
        self.stats = PhaseStats()
        self.end_at = phase.start_at + phase.duration_s
        self.in_flight = 0
        self.drained.clear()
        await asyncio.sleep(max(0.0, phase.start_at - time.monotonic()))
        cpu_start_s = time.process_time()

        if phase.frames_per_s is not None:
            await self._pace(phase)
        else:
            for connection in self.connections:
                connection.remaining = phase.frames_per_device or -1
                await self._send(connection)

        # Frames sent before the end still count once their acks are in.
        wait_s = max(0.0, self.end_at - time.monotonic()) + DRAIN_TIMEOUT_S
        if self.in_flight:
            try:
                await asyncio.wait_for(self.drained.wait(), wait_s)
            except TimeoutError:
                logger.warning(
                    "%d frames still unacknowledged %.0f s after the phase ended",
                    self.in_flight, DRAIN_TIMEOUT_S,
                )
        self.phase = None
        self.stats.cpu_s = time.process_time() - cpu_start_s
        return self.stats

    async def _pace(self, phase: Phase) -> None:
        assert phase.frames_per_s is not None
        connections = self.connections
        count = len(connections)
        interval_s = 1.0 / phase.frames_per_s
        sent = 0
        while True:
            now = time.monotonic()
            if now >= self.end_at:
                return
            due = int((now - phase.start_at) * phase.frames_per_s)
            while sent < due:
                await self._send(connections[sent % count], phase.start_at + sent * interval_s)
                sent += 1
            await asyncio.sleep(PACING_TICK_S)

    async def _send(self, connection: _Connection, due_at: float | None = None) -> None:
        phase = self.phase
        if phase is None or connection.closed:
            return
        frame = connection.next_frame(self.t_base, phase.pings_per_frame)
        connection.sent_at.append(time.monotonic() if due_at is None else due_at)
        self.in_flight += 1
        self.stats.frames_sent += 1
        try:
            await connection.socket.send(frame)
        except websockets.ConnectionClosed:
            # The reader sees the close too and writes the frames off.
            pass

    async def _read_acks(self, connection: _Connection) -> None:
        try:
            async for message in connection.socket:
                now = time.monotonic()
                sent_at = connection.sent_at.popleft()
                self._record(message, now, now - sent_at)
                self.in_flight -= 1
                phase = self.phase
                if phase is None or phase.frames_per_s is not None:
                    # Paced: the pacer sends, and the phase drains after its end.
                    if self.in_flight == 0 and now >= self.end_at:
                        self.drained.set()
                    continue
                connection.remaining -= 1
                if now < self.end_at and connection.remaining != 0:
                    await self._send(connection)
                elif self.in_flight == 0:
                    self.drained.set()
        except websockets.ConnectionClosed as error:
            logger.warning("device connection closed by the server: %s", error)
        finally:
            # Frames that will never be acknowledged count as errors.
            connection.closed = True
            lost = len(connection.sent_at)
            connection.sent_at.clear()
            self.stats.errors += lost
            self.stats.lost_connections += 1
            self.in_flight -= lost
            if self.in_flight == 0 and (self.phase is None or time.monotonic() >= self.end_at):
                self.drained.set()

    def _record(self, message: str | bytes, now: float, latency_s: float) -> None:
        stats = self.stats
        reply = orjson.loads(message)
        stats.acks += 1
        stats.latencies_s.append(latency_s)
        if reply.get("type") != "ack":
            stats.errors += 1
            return
        accepted = reply["accepted"]
        stats.accepted += accepted
        stats.duplicates += reply["duplicates"]
        stats.rejected += len(reply["rejected"])
        if now <= self.end_at:
            stats.accepted_in_window += accepted


async def _serve(ws_url: str, devices: list[Device], t_base: float, pipe: Connection) -> None:
    worker = _Worker(ws_url, devices, t_base)
    await worker.connect_all()
    pipe.send({"ready": len(worker.connections)})
    loop = asyncio.get_running_loop()
    try:
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command is None:
                return
            stats = await worker.run_phase(command)
            pipe.send(stats.to_message())
    finally:
        await worker.close_all()


def run_worker(ws_url: str, devices: list[Device], t_base: float, pipe: Connection) -> None:
    """Connect ``devices`` and run phases received on ``pipe`` until None arrives.

    Sends ``{"ready": N}`` once connected, then one stats dict per phase.
    Runs as the target of a ``multiprocessing`` process.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(ws_url, devices, t_base, pipe))
    except Exception as error:  # noqa: BLE001 - the parent must hear of any failure
        logger.exception("device load worker failed")
        pipe.send({"error": f"{type(error).__name__}: {error}"})
