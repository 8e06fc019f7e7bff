"""WebSocket clients for load generators: websockets' Sans-I/O protocol on a bare asyncio protocol.

The load generators of the fan-out benchmark share the server's cores, so
what they spend per message is taken from the server. websockets' asyncio
client passes every message through locks, futures and a message
assembler. Here the library's Sans-I/O ``ClientProtocol`` does the
handshake and the framing, and each received text message goes straight
to a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri


class LightClient(asyncio.Protocol):
    """One WebSocket connection that hands each text message to ``on_text``."""

    def __init__(self, url: str, headers: dict[str, str], on_text: Callable[[bytes], None]) -> None:
        self.uri = parse_uri(url)
        self.protocol = ClientProtocol(self.uri, max_size=None)
        self.request = self.protocol.connect()
        for name, value in headers.items():
            self.request.headers[name] = value
        self.on_text = on_text
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def connect(
        cls, url: str, on_text: Callable[[bytes], None], headers: dict[str, str] | None = None
    ) -> LightClient:
        """Open a connection and wait for the handshake's response."""
        client = cls(url, headers or {}, on_text)
        await asyncio.get_running_loop().create_connection(lambda: client, client.uri.host, client.uri.port)
        await client.opened
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.protocol.send_request(self.request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.handshake_exc is not None:
                    self.opened.set_exception(self.protocol.handshake_exc)
                else:
                    self.opened.set_result(None)
            elif event.opcode is Opcode.TEXT:
                self.on_text(event.data)
        self._flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        # The protocol reaches its closed state, with the close code, only
        # after it learns that the stream ended.
        with contextlib.suppress(EOFError):
            self.protocol.receive_eof()
        error = exc or ConnectionError(f"connection closed (code {self.protocol.close_code})")
        if not self.opened.done():
            self.opened.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, text: bytes) -> None:
        """Send one text message, given as UTF-8 bytes."""
        self.protocol.send_text(text)
        self._flush()

    def close(self) -> None:
        """Start the closing handshake. ``closed`` is done when the connection ends."""
        if self.protocol.state is not State.OPEN:
            return
        self.protocol.send_close()
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.protocol.close_expected():
            self.transport.close()
