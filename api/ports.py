"""The HTTP address check that runs before a server starts.

It lives apart from ``api.cli`` because ``python -m api.cli`` runs that
module as ``__main__``, and ``api.demo`` would then raise a second copy of
its exception class that ``main`` does not catch.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket

# The exit status of a server that cannot listen on its address, the same
# as uvicorn's when it fails to bind.
STARTUP_FAILURE_EXIT = 3


class PortUnavailableError(RuntimeError):
    """The HTTP address is in use or cannot be bound."""


def setting_source(args: argparse.Namespace, name: str) -> str:
    """Return the flag or the ENROUTE_ variable that set a server setting, for messages."""
    variable = f"ENROUTE_{name.upper()}"
    if getattr(args, name, None) is None and variable in os.environ:
        return variable
    return f"--{name}"


def check_port_free(host: str, port: int, *, host_source: str = "--host", port_source: str = "--port") -> None:
    """Raise :class:`PortUnavailableError` if a server could not listen on ``host:port``.

    This runs before the embedded Redis and the road graph start, so a
    busy port fails the command at once. Another process can still take
    the port before uvicorn binds it, and uvicorn then exits with the same
    status. The messages name ``host_source`` and ``port_source``, the flag
    or variable that set each.
    """
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise PortUnavailableError(
            f"cannot resolve {host_source} {host!r}: {error.strerror}. "
            f"Set {host_source} to an IP address or a name that resolves"
        ) from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # uvicorn binds with SO_REUSEADDR (and IPV6_V6ONLY through
            # asyncio), so a port in TIME_WAIT is free for it as well.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise PortUnavailableError(
                        f"cannot listen on {host}:{port}: address already in use. Stop the "
                        f"process that listens there, or choose another {port_source}"
                    ) from None
                raise PortUnavailableError(
                    f"cannot listen on {host}:{port}: {error.strerror}. "
                    f"Choose another {host_source} or {port_source}"
                ) from None
