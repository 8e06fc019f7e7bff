"""The ``enroute`` command line: serve, demo, graph build, org create, simulate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from tracker.redis_server import EmbeddedRedis, RedisUnavailableError
from tracker.settings import Settings, load_settings

logger = logging.getLogger(__name__)

#: Allocations before a young collection, then young and middle collections
#: before an older one; see run_server.
GC_THRESHOLDS = (50_000, 20, 100)


def configure_logging(level: str) -> None:
    """Log to stderr with time, level and module."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[str]:
    """Yield the Redis URL to use, starting an embedded server when none is set."""
    if settings.redis_url:
        yield settings.redis_url
        return
    server = EmbeddedRedis(settings.data_dir)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8000)")
    parser.add_argument("--graph", help="road graph source file (default: bundled Helsinki)")
    parser.add_argument("--redis-url", help="external Redis URL (default: embedded server)")
    parser.add_argument("--data-dir", help="folder of the embedded Redis (default ./.enroute)")


def _settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        graph=getattr(args, "graph", None),
        redis_url=getattr(args, "redis_url", None),
        data_dir=getattr(args, "data_dir", None),
        workers=getattr(args, "workers", None),
    )


def run_server(settings: Settings, redis_url: str) -> None:
    """Run uvicorn with the app factory until interrupted."""
    import uvicorn

    # A server with a thousand connections keeps many long-lived objects, and
    # every ping allocates a few more: with the default thresholds (700, 10,
    # 10) the cyclic garbage collector took about a quarter of the CPU time
    # of the ingest path (python -m benchmarks.ingest, single-ping frames).
    gc.set_threshold(*GC_THRESHOLDS)

    from api.websocket_protocol import PROTOCOL_IMPORT_STRING

    # Worker processes read their settings from the environment.
    os.environ["ENROUTE_REDIS_URL"] = redis_url
    if settings.graph:
        os.environ["ENROUTE_GRAPH"] = settings.graph
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        ws_max_size=1 << 20,
        # Sans-I/O websockets with lighter flow control (api/websocket_protocol.py).
        # Ping frames are ~100 bytes, so per-message deflate would save little
        # and cost CPU on every frame and a zlib context per connection.
        ws=PROTOCOL_IMPORT_STRING,
        ws_per_message_deflate=False,
        log_level="info",
        access_log=False,
    )


def command_serve(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    with redis_for(settings) as url:
        run_server(settings, url)
    return 0


def command_org_create(args: argparse.Namespace) -> int:
    from tracker import orgs
    from tracker.store import connect

    settings = _settings_from(args)

    async def create(url: str) -> orgs.Org:
        client = connect(url)
        try:
            return await orgs.create_org(client, args.name)
        finally:
            await client.aclose()

    with redis_for(settings) as url:
        try:
            org = asyncio.run(create(url))
        except (orgs.OrgExistsError, ValueError) as error:
            print(f"enroute: {error}", file=sys.stderr)
            return 1
    print(f"organisation: {org.id}")
    print(f"api key: {org.api_key}")
    print("Keep the API key: it is shown only once.", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``enroute`` command."""
    parser = argparse.ArgumentParser(prog="enroute", description=__doc__)
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    _add_server_flags(serve)
    serve.add_argument("--workers", type=int, help="server processes (default 1)")
    serve.set_defaults(handler=command_serve)

    org = commands.add_parser("org", help="manage organisations")
    org_commands = org.add_subparsers(dest="org_command", required=True)
    create = org_commands.add_parser("create", help="create an organisation; print its API key")
    create.add_argument("name")
    create.add_argument("--redis-url", help="external Redis URL (default: embedded server)")
    create.add_argument("--data-dir", help="folder of the embedded Redis (default ./.enroute)")
    create.set_defaults(handler=command_org_create)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``enroute`` command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        return int(args.handler(args))
    except RedisUnavailableError as error:
        print(f"enroute: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
