"""``enroute demo``: the server and a simulated fleet on real streets, end to end.

It starts the embedded Redis (unless a URL is set) and loads the road
graph, the bundled Helsinki extract by default. It runs ``enroute serve``
as a child process, creates a demo organisation and prints the dispatcher
URL and one customer link per job. Then it drives the simulated fleet
through the real device WebSocket until Ctrl-C or ``--duration``. Then it prints a
summary: pings accepted, arrivals and completions found by the geofence,
the on-time rate and the coverage of the arrival windows.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from api.cli import redis_for
from api.ports import check_port_free, setting_source
from tracker.redis_server import die_with_parent
from tracker.settings import Settings

logger = logging.getLogger(__name__)

SERVER_START_TIMEOUT_S = 120.0
# Short geofence thresholds, so a demo of a few minutes completes jobs.
DEMO_GEOFENCE_ENV = {
    "ENROUTE_GEOFENCE_DWELL_S": "15",
    "ENROUTE_GEOFENCE_MIN_ON_SITE_S": "20",
    "ENROUTE_GEOFENCE_GRACE_S": "15",
}


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _start_server(settings: Settings, redis_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ENROUTE_REDIS_URL": redis_url}
    for name, value in DEMO_GEOFENCE_ENV.items():
        env.setdefault(name, value)
    if settings.graph:
        env["ENROUTE_GRAPH"] = settings.graph
    command = [sys.executable, "-m", "api.cli", "--log-level", "warning", "serve",
               "--host", settings.host, "--port", str(port)]  # fmt: skip
    # The server gets SIGTERM when the demo dies, even from SIGKILL (on Linux).
    process = subprocess.Popen(  # noqa: S603 - fixed argument list
        command, env=env, preexec_fn=die_with_parent  # noqa: PLW1509 - only prctl, no locks
    )
    base_url = f"http://{settings.host}:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} during start")
        try:
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"the server did not respond on {base_url} within {SERVER_START_TIMEOUT_S:.0f} s")


def _print_summary(summary: dict[str, Any]) -> None:
    print("\nDemo summary")
    print(f"  pings sent / accepted:   {summary['pings_sent']} / {summary['pings_accepted']}")
    print(f"  jobs:                    {summary['jobs']}")
    print(f"  arrived (geofence):      {summary['arrived']}")
    print(f"  completed (geofence):    {summary['completed']}")
    rate = summary["on_time_rate"]
    print(f"  on-time rate:            {'n/a' if rate is None else f'{rate:.0%}'}")
    if not summary["coverage"]:
        print("  window coverage:         no arrival had a prediction at the lead times yet")
    for row in summary["coverage"]:
        print(
            f"  window coverage {row['lead_s'] / 60:>4.0f} min before arrival: "
            f"{row['coverage']:.0%} of {row['arrivals']} arrivals, "
            f"mean width {row['mean_width_s']:.0f} s"
        )


def run_demo(
    args: argparse.Namespace,
    settings: Settings,
    simulator_config: Callable[[argparse.Namespace, str, str], Any],
) -> int:
    """Run the demo; return the process exit code."""
    from eta.build import load_graph
    from tracker import orgs
    from tracker.store import connect

    logging.getLogger("httpx").setLevel(logging.WARNING)
    port = settings.port or _free_port(settings.host)
    # The demo finds its server by polling the port, so a server of another
    # process on that port would pass the health check in its place.
    check_port_free(
        settings.host, port,
        host_source=setting_source(args, "host"), port_source=setting_source(args, "port"),
    )  # fmt: skip
    print("loading the road graph ...", flush=True)
    graph = load_graph(settings.graph, cache_dir=settings.graph_cache_dir, progress=True)
    with redis_for(settings) as redis_url:
        server = _start_server(settings, redis_url, port)
        base_url = f"http://{settings.host}:{port}"
        try:
            async def create_org() -> orgs.Org:
                client = connect(redis_url)
                try:
                    return await orgs.create_org(client, f"Demo {int(time.time())}")
                finally:
                    await client.aclose()

            org = asyncio.run(create_org())
            config = simulator_config(args, base_url, org.api_key)
            config.prefix = "demo"
            return asyncio.run(_simulate(config, graph, base_url, org.api_key))
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


async def _simulate(config: Any, graph: Any, base_url: str, api_key: str) -> int:
    from benchmarks.simulator import Simulator

    simulator = Simulator(config, graph)
    try:
        await simulator.setup()
        print(f"\nDispatcher: {base_url}/dispatch#key={api_key}")
        print("Customer tracking links:")
        for job_id, url in simulator.stats.share_urls.items():
            print(f"  {job_id}: {url}")
        until = f"for {config.duration_s:.0f} s" if config.duration_s else "until Ctrl-C"
        print(f"\nDriving {len(simulator.contractors)} contractors {until} ...", flush=True)
        run = asyncio.get_running_loop().create_task(simulator.run())
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, run.cancel)
        try:
            await run
        except asyncio.CancelledError:
            print("\nstopping ...", flush=True)
        _print_summary(await simulator.summary())
        return 0
    finally:
        await simulator.close()
