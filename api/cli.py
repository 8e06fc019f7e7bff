"""The ``enroute`` command line: serve, demo, graph build, org create, simulate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.ports import STARTUP_FAILURE_EXIT, PortUnavailableError, check_port_free, setting_source
from tracker.redis_server import EmbeddedRedis, RedisUnavailableError
from tracker.settings import Settings, SettingsError, load_settings

logger = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    """Log to stderr with time, level and module, secrets masked."""
    import logging.config

    from api.logs import log_config

    logging.config.dictConfig(log_config(level))


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[str]:
    """Yield the Redis URL to use, starting an embedded server when none is set."""
    if settings.redis_url:
        yield settings.redis_url
        return
    server = EmbeddedRedis(settings.data_dir)
    url = server.start()
    server.supervise()
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


    from api.logs import log_config
    from api.websocket_protocol import PROTOCOL_IMPORT_STRING

    # Worker processes read their settings from the environment.
    os.environ["ENROUTE_REDIS_URL"] = redis_url
    os.environ["ENROUTE_HOST"] = settings.host
    os.environ["ENROUTE_PORT"] = str(settings.port)
    os.environ["ENROUTE_WORKERS"] = str(settings.workers)
    os.environ["ENROUTE_DATA_DIR"] = str(settings.data_dir)
    os.environ["ENROUTE_SUPERVISOR_PID"] = str(os.getpid())
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
        log_config=log_config(logging.getLevelName(logging.getLogger().level)),
        access_log=False,
    )


def command_serve(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    check_port_free(
        settings.host, settings.port,
        host_source=setting_source(args, "host"), port_source=setting_source(args, "port"),
    )  # fmt: skip
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


def command_graph_build(args: argparse.Namespace) -> int:
    from eta.build import build_graph
    from eta.errors import GraphSourceError

    try:
        graph = build_graph(args.source, cache_dir=args.cache_dir, progress=True)
    except GraphSourceError as error:
        logger.debug("graph build from %s failed", args.source, exc_info=True)
        print(f"enroute: {error}", file=sys.stderr)
        return 1
    report = graph.report
    print(f"graph: {graph.num_nodes} nodes, {graph.num_edges} edges")
    for name, value in sorted(report.items()):
        print(f"  {name}: {value}")
    print(f"cached at: {graph.cache_path}")
    return 0


def _simulator_config(args: argparse.Namespace, base_url: str, api_key: str) -> Any:
    from benchmarks.simulator import SimulatorConfig

    return SimulatorConfig(
        base_url=base_url,
        api_key=api_key,
        contractors=args.contractors,
        jobs_per_contractor=args.jobs,
        interval_s=args.interval,
        service_s=args.service_s,
        duration_s=args.duration,
        min_trip_s=args.min_trip_s,
        max_trip_s=args.max_trip_s,
        seed=args.seed,
        prefix=args.prefix,
    )


def command_simulate(args: argparse.Namespace) -> int:
    import httpx
    import websockets.exceptions

    from benchmarks.simulator import Simulator
    from eta.build import load_graph
    from eta.errors import GraphSourceError

    try:
        # The track is read before the graph, so a bad file fails at once.
        track = _load_gpx_track(args.gpx) if args.gpx else None
        graph = load_graph(args.graph, progress=True)
        route = _time_gpx_track(args.gpx, graph, track) if track is not None else None
    except (GraphSourceError, SimulateInputError) as error:
        logger.debug("simulate input failed", exc_info=True)
        print(f"enroute: {error}", file=sys.stderr)
        return 1
    config = _simulator_config(args, args.url.rstrip("/"), args.api_key)
    failures: list[str] = []

    async def simulate() -> dict[str, Any]:
        simulator = Simulator(config, graph)
        try:
            if route is not None:
                contractor = simulator.contractors[0]
                await contractor.register()
                deadline = time.time() + config.duration_s if config.duration_s else None
                await contractor.replay(route, deadline)
            else:
                await simulator.setup()
                await simulator.run()
            failures.extend(simulator.stats.failures)
            return await simulator.summary()
        finally:
            await simulator.close()

    try:
        summary = asyncio.run(simulate())
    except httpx.HTTPStatusError as error:
        logger.debug("simulate request failed", exc_info=True)
        print(f"enroute: {_describe_status_error(error, args)}", file=sys.stderr)
        return 1
    except (httpx.TransportError, OSError, websockets.exceptions.WebSocketException) as error:
        logger.debug("simulate connection failed", exc_info=True)
        print(
            f"enroute: could not reach the server at {args.url}: {error or type(error).__name__}; "
            "check --url and that `enroute serve` is running there",
            file=sys.stderr,
        )
        return 1
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if failures:
        print(
            f"enroute: {len(failures)} of {config.contractors} contractors stopped early; "
            f"the first: {failures[0]}",
            file=sys.stderr,
        )
        return 1
    return 0


class SimulateInputError(ValueError):
    """A file given to ``enroute simulate`` cannot be used."""


def _load_gpx_track(path: str) -> list[tuple[float, float, float | None]]:
    import gpxpy.gpx

    from benchmarks.simulator import load_gpx

    try:
        return load_gpx(Path(path))
    except FileNotFoundError as error:
        raise SimulateInputError(f"GPX file not found: {path}; check the --gpx path") from error
    except (OSError, ValueError, gpxpy.gpx.GPXException) as error:
        raise SimulateInputError(
            f"could not read GPX file {path}: {error}; pass a GPX 1.0 or 1.1 file with --gpx"
        ) from error


def _time_gpx_track(path: str, graph: Any, track: list[tuple[float, float, float | None]]) -> Any:
    from benchmarks.simulator import time_track

    try:
        return time_track(graph, track)
    except ValueError as error:
        raise SimulateInputError(
            f"could not replay GPX file {path}: {error}; "
            "pass a GPX file with at least 2 track or route points"
        ) from error


def _describe_status_error(error: Any, args: argparse.Namespace) -> str:
    """Return one line that names the rejected request and what to do next."""
    request, response = error.request, error.response
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if response.status_code == 401:
        return (
            f"the server at {args.url} rejected the API key ({detail}); "
            "pass the key that `enroute org create` printed with --api-key"
        )
    if response.status_code == 409:
        try:
            object_id = orjson.loads(request.content).get("id")
        except (orjson.JSONDecodeError, AttributeError):
            object_id = None
        kind = "contractor" if request.url.path == "/v1/contractors" else "job"
        return (
            f"{kind} {object_id} already exists in this organisation; "
            f"pass --prefix to use other ids (now {args.prefix!r})"
        )
    return (
        f"{request.method} {request.url} failed with status {response.status_code}: {detail}"
    )


def command_demo(args: argparse.Namespace) -> int:
    from api.demo import run_demo

    return run_demo(args, _settings_from(args), _simulator_config)


LOG_LEVELS = ["debug", "info", "warning", "error"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``enroute`` command."""
    parser = argparse.ArgumentParser(prog="enroute", description=__doc__)
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="log level (default info)")
    # Each command takes --log-level too, after its name; it then overrides
    # the one before the name.
    level = argparse.ArgumentParser(add_help=False)
    level.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help="log level (default info)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server", parents=[level])
    _add_server_flags(serve)
    serve.add_argument("--workers", type=int, help="server processes (default 1)")
    serve.set_defaults(handler=command_serve)

    org = commands.add_parser("org", help="manage organisations")
    org_commands = org.add_subparsers(dest="org_command", required=True)
    create = org_commands.add_parser(
        "create", help="create an organisation; print its API key", parents=[level]
    )
    create.add_argument("name")
    create.add_argument("--redis-url", help="external Redis URL (default: embedded server)")
    create.add_argument("--data-dir", help="folder of the embedded Redis (default ./.enroute)")
    create.set_defaults(handler=command_org_create)

    graph = commands.add_parser("graph", help="road graphs")
    graph_commands = graph.add_subparsers(dest="graph_command", required=True)
    build = graph_commands.add_parser(
        "build",
        help="build and cache a road graph from .osm, .osm.gz, .osm.bz2, .osm.pbf, "
        ".graphml or a place name (online)",
        parents=[level],
    )
    build.add_argument("source")
    build.add_argument("--cache-dir", help="where to write the compiled graph (default: beside the source)")
    build.set_defaults(handler=command_graph_build)

    simulate = commands.add_parser(
        "simulate", help="drive simulated contractors against a server", parents=[level]
    )
    simulate.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    simulate.add_argument("--api-key", required=True, help="API key of the organisation to use")
    simulate.add_argument("--graph", help="road graph source file (default: bundled Helsinki)")
    _add_simulation_flags(simulate)
    simulate.add_argument("--gpx", help="replay this GPX track with one contractor instead")
    simulate.set_defaults(handler=command_simulate)

    demo = commands.add_parser(
        "demo", help="run the server and a simulated fleet on real streets", parents=[level]
    )
    _add_server_flags(demo)
    _add_simulation_flags(demo, service_s=30.0, min_trip_s=20.0, max_trip_s=100.0)
    demo.set_defaults(handler=command_demo)
    return parser


# Simulation times beyond 30 days are typos, and far larger ones overflow the clock.
MAX_FLAG_S = 30 * 86400.0


def _positive_int(text: str) -> int:
    """Parse a flag value that must be a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _seconds(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero) or value > MAX_FLAG_S:
        low = "at least 0" if zero else "above 0"
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds {low} and at most {MAX_FLAG_S:.0f}, got {text!r}"
        )
    return value


def _positive_seconds(text: str) -> float:
    """Parse a flag value of seconds above 0."""
    return _seconds(text, zero=False)


def _seconds_or_zero(text: str) -> float:
    """Parse a flag value of seconds, 0 included."""
    return _seconds(text, zero=True)


def _add_simulation_flags(
    parser: argparse.ArgumentParser,
    service_s: float = 90.0,
    min_trip_s: float = 30.0,
    max_trip_s: float = 180.0,
) -> None:
    parser.add_argument("--contractors", type=_positive_int, default=5, help="simulated contractors (default 5)")
    parser.add_argument("--jobs", type=_positive_int, default=3, help="jobs per contractor (default 3)")
    parser.add_argument("--interval", type=_positive_seconds, help="seconds between pings (default: the server's advice, or 5 with --gpx)")
    parser.add_argument("--service-s", type=_seconds_or_zero, default=service_s, help=f"seconds on site per job (default {service_s:g})")
    parser.add_argument(
        "--min-trip-s", type=_positive_seconds, default=min_trip_s,
        help=f"shortest planned drive to a job in seconds (default {min_trip_s:g})",
    )
    parser.add_argument(
        "--max-trip-s", type=_positive_seconds, default=max_trip_s,
        help=f"longest planned drive to a job in seconds (default {max_trip_s:g})",
    )
    parser.add_argument("--duration", type=_positive_seconds, help="stop after this many seconds (default: run until done or Ctrl-C)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--prefix", default="sim", help="prefix of contractor and job ids")


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
    except SettingsError as error:
        print(f"enroute: {error}", file=sys.stderr)
        return 2
    except (RedisConnectionError, RedisTimeoutError) as error:
        # redis-py's message names host and port, never the password.
        print(f"enroute: redis is unreachable: {error} Check --redis-url or ENROUTE_REDIS_URL.", file=sys.stderr)
        return 2
    except PortUnavailableError as error:
        print(f"enroute: {error}", file=sys.stderr)
        return STARTUP_FAILURE_EXIT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
