"""The uvicorn WebSocket protocol of enroute: Sans-I/O websockets with lighter flow control.

uvicorn's ``websockets-sansio`` protocol (uvicorn 0.55) pauses reading the
socket after every received message and resumes it when the application
has taken the message. On the default asyncio event loop each pause and
resume is an epoll registration change, which cost about a fifth of the
server's CPU time with a thousand devices streaming single-ping frames
(profiled with py-spy under ``python -m benchmarks.ingest``). This subclass
pauses only when ``MAX_QUEUED_MESSAGES`` messages wait for the application,
so a device that floods the server is still held back.

It also resets connections that stay open after the application ended
them, and those whose client replies to no keepalive ping. Closing a
transport waits until its unsent data is written, and a client that
stopped reading never takes it. Such a socket, and the data waiting for
it, would otherwise stay until the client goes away.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

logger = logging.getLogger(__name__)

#: Received messages that may wait for the application before reading pauses.
MAX_QUEUED_MESSAGES = 16

#: Seconds after the application ends a connection before a socket that is
#: still open is dropped. uvicorn waits 10 s for the client's close frame.
ABORT_AFTER_S = 15.0

#: The import string to pass as uvicorn's ``ws`` option.
PROTOCOL_IMPORT_STRING = f"{__name__}:QueuedWebSocketProtocol"


class QueuedWebSocketProtocol(WebSocketsSansIOProtocol):
    """Pause reading only when ``MAX_QUEUED_MESSAGES`` messages are queued."""

    def send_receive_event_to_app(self) -> None:
        """Queue a received message for the application, pausing only when full."""
        paused = self.read_paused
        # The parent pauses after every message unless read_paused is set, so
        # the flag is set while the parent queues the message.
        self.read_paused = True
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        if not paused and self.queue.qsize() >= MAX_QUEUED_MESSAGES:
            self.read_paused = True
            self.transport.pause_reading()

    async def run_asgi(self) -> None:
        """Run the application, then drop the socket if it is still open ABORT_AFTER_S later."""
        try:
            await super().run_asgi()
        finally:
            if not self.disconnected:
                self.loop.call_later(ABORT_AFTER_S, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.disconnected:
            return
        unsent = self.transport.get_write_buffer_size()
        logger.warning(
            "dropping WebSocket connection from %s: still open %.0f s after the server ended it, "
            "with %d bytes unsent",
            self.client, ABORT_AFTER_S, unsent,
        )  # fmt: skip
        self._reset()

    def keepalive_timeout(self) -> None:
        """Reset a connection whose client did not reply to a ping, since it reads nothing."""
        if self.close_sent or self.transport.is_closing():
            super().keepalive_timeout()
            return
        logger.info("dropping WebSocket connection from %s: no reply to a ping", self.client)
        self._reset()

    def _reset(self) -> None:
        # Closing a socket leaves the data the kernel keeps for it (1.25 MB
        # in one test) waiting for a client that reads nothing. A zero
        # linger time makes the close send a reset and drop that data.
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
