"""Run every benchmark and record their rows in ``benchmarks/RESULTS.md``.

``python -m benchmarks`` runs the ingest, ETA, geofence and fan-out
benchmarks one after another with their default settings. Each one writes
its own section of the results page with the command, the date and the
machine. ``--only NAME`` runs a subset, ``--quick`` uses smaller loads for
a smoke run, and ``--osm PATH`` adds extracts to the ETA benchmark (the
extracts beside the repository in ``../shared/data/osm`` are used when
present).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

SHARED_OSM = Path(__file__).resolve().parents[2] / "shared" / "data" / "osm"
DEFAULT_EXTRACTS = ("liechtenstein.osm.pbf", "campo-grande.osm.gz")


def _ingest(quick: bool, osm: list[str]) -> int:
    from benchmarks import ingest

    return ingest.main(["--contractors", "200", "--duration", "5"] if quick else [])


def _eta(quick: bool, osm: list[str]) -> int:
    from benchmarks import eta

    argv: list[str] = []
    for path in osm:
        argv += ["--osm", path]
    if quick:
        argv += ["--pairs", "100"]
    return eta.main(argv)


def _geofence(quick: bool, osm: list[str]) -> int:
    from benchmarks import geofence

    return geofence.main(["--points", "100000"] if quick else [])


def _fanout(quick: bool, osm: list[str]) -> int:
    from benchmarks import fanout

    if quick:
        return fanout.main(["--jobs", "100", "--rate", "500", "--duration", "10", "--contractors", "10000"])
    return fanout.main([])


BENCHMARKS: dict[str, Callable[[bool, list[str]], int]] = {
    "ingest": _ingest,
    "eta": _eta,
    "geofence": _geofence,
    "fanout": _fanout,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this benchmark")
    parser.add_argument("--quick", action="store_true", help="smaller loads, for a smoke run")
    parser.add_argument("--osm", action="append", default=[], help="extra OSM extract for the ETA benchmark")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    osm = list(args.osm)
    if not osm:
        osm = [str(SHARED_OSM / name) for name in DEFAULT_EXTRACTS if (SHARED_OSM / name).exists()]
    failures = 0
    for name in args.only or list(BENCHMARKS):
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        try:
            status = BENCHMARKS[name](args.quick, osm)
        except Exception:  # noqa: BLE001 - report and go on with the others
            logger.exception("benchmark %s failed", name)
            status = 1
        print(f"=== {name}: exit {status} after {time.monotonic() - started:.0f} s", flush=True)
        failures += int(status != 0)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
