"""Benchmark ETA queries against osmnx and networkx on the same graphs.

Run as ``python -m benchmarks.eta [--osm PATH ...] [--pairs N]``. For the
bundled Helsinki extract and every ``--osm`` file it measures, in one run:

- the graph build, the cached load in this process, and a cold start (a new
  Python process importing the package and loading the cached graph);
- one reverse search per destination (`eta.routing.build_tree`);
- the per-ping ETA (snap plus lookup), batched with ``eta_many`` and one
  call at a time with ``eta_s``;
- per query on the same origin/destination pairs, ``networkx.shortest_path_length``
  and osmnx's own query (two ``nearest_nodes`` and ``shortest_path``);
- the largest difference between enroute's and networkx's travel times.

Pairs run from random nodes to ``--pairs / 100`` random destination nodes,
100 origins each, which is how ETAs are used: many pings per job site. For
the batch figure, each destination's tree computes the ETAs of all origins
at once. A synthetic grid of about 100,000 nodes measures the reverse search at scale.
Results are printed and written to the "ETA" section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from benchmarks._common import command_line, machine_description, today, update_section
from eta.build import build_graph, build_osmnx_graph, default_source_path, load_graph
from eta.graph import RoadGraph, compile_graph
from eta.routing import build_tree, random_points_on_graph

logger = logging.getLogger(__name__)

PINGS_PER_DESTINATION = 100
OSMNX_QUERIES = 100
GRID_SIDE = 317  # 317 x 317 = 100,489 nodes
GRID_TREES = 10
GRID_NETWORKX_QUERIES = 3

COLUMNS = [
    ("graph", "graph"),
    ("nodes", "nodes"),
    ("edges", "edges"),
    ("build_s", "build s"),
    ("load_ms", "cached load ms"),
    ("cold_start_s", "cold start s"),
    ("index_ms", "first snap ms"),
    ("tree_ms", "tree ms"),
    ("batch_us", "ping µs (batch)"),
    ("single_us", "ping µs (single)"),
    ("networkx_ms", "networkx ms/query"),
    ("osmnx_ms", "osmnx ms/query"),
    ("speedup_batch", "speedup batch"),
    ("speedup_single", "speedup single"),
    ("max_diff_s", "max |Δt| s"),
]


def _timed(
    function: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def _cold_start_s(source: Path, cache_dir: Path) -> float:
    # a new interpreter: import the package and load the cached graph
    code = (
        "import time; t = time.perf_counter(); from eta.build import load_graph; "
        f"load_graph({str(source)!r}, cache_dir={str(cache_dir)!r}); "
        "print(time.perf_counter() - t)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return float(output.stdout.strip().splitlines()[-1])


def bench_graph(
    label: str, source: Path, pairs: int, cache_dir: Path, rng: np.random.Generator
) -> dict[str, Any]:
    """Measure one OSM extract; return one result row."""
    graph, build_s = _timed(
        lambda: build_graph(source, cache_dir=cache_dir, progress=False)
    )
    load_times = [
        _timed(lambda: load_graph(source, cache_dir=cache_dir))[1] for _ in range(5)
    ]
    graph = load_graph(source, cache_dir=cache_dir)
    G, _ = build_osmnx_graph(source)

    destinations = rng.integers(
        graph.num_nodes, size=max(1, pairs // PINGS_PER_DESTINATION)
    )
    origins = rng.integers(
        graph.num_nodes, size=(len(destinations), PINGS_PER_DESTINATION)
    )

    # first snap builds the spatial index; not part of the per-ping figures
    _, index_s = _timed(
        lambda: build_tree(graph, float(graph.node_lat[0]), float(graph.node_lon[0]))
    )
    row = _bench_queries(graph, G, destinations, origins)
    row.update(
        graph=label,
        nodes=graph.num_nodes,
        edges=graph.num_edges,
        build_s=round(build_s, 2),
        load_ms=round(1000 * statistics.median(load_times), 1),
        cold_start_s=round(_cold_start_s(source, cache_dir), 2),
        index_ms=round(1000 * index_s, 1),
        osmnx_ms=round(_osmnx_ms(graph, G, destinations, origins), 2),
    )
    row["speedup_batch"] = round(row["networkx_ms"] * 1000 / row["batch_us"])
    row["speedup_single"] = round(row["networkx_ms"] * 1000 / row["single_us"])
    return row


def _bench_queries(
    graph: RoadGraph, G: nx.MultiDiGraph, destinations: np.ndarray, origins: np.ndarray
) -> dict[str, Any]:
    # each tree computes ETAs for all origins in one batch (throughput). Its
    # own row of origins also goes one ping at a time and is checked against
    # networkx
    all_lats, all_lons = (
        graph.node_lat[origins.ravel()],
        graph.node_lon[origins.ravel()],
    )
    tree_s, batch_s, single_s, networkx_s = [], 0.0, 0.0, 0.0
    worst_diff = 0.0
    for row, (destination, sources) in enumerate(
        zip(destinations, origins, strict=True)
    ):
        dest_lat, dest_lon = (
            float(graph.node_lat[destination]),
            float(graph.node_lon[destination]),
        )
        tree, seconds = _timed(build_tree, graph, dest_lat, dest_lon)
        tree_s.append(seconds)
        etas, seconds = _timed(tree.eta_many, all_lats, all_lons)
        batch_s += seconds
        own = etas[row * origins.shape[1] : (row + 1) * origins.shape[1]]
        started = time.perf_counter()
        singles = [
            tree.eta_s(float(graph.node_lat[s]), float(graph.node_lon[s]))
            for s in sources
        ]
        single_s += time.perf_counter() - started

        # the reference: networkx on the osmnx graph, same pairs
        target = int(graph.node_osmid[destination])
        started = time.perf_counter()
        expected = np.array(
            [
                nx.shortest_path_length(
                    G, int(graph.node_osmid[s]), target, weight="travel_time"
                )
                for s in sources
            ]
        )
        networkx_s += time.perf_counter() - started
        worst_diff = max(worst_diff, float(np.max(np.abs(own - expected))))
        worst_diff = max(
            worst_diff, float(np.max(np.abs(np.array(singles, dtype=float) - expected)))
        )
    count = origins.size
    return {
        "pairs": count,
        "tree_ms": round(1000 * statistics.median(tree_s), 2),
        "batch_us": round(1e6 * batch_s / (count * len(destinations)), 2),
        "single_us": round(1e6 * single_s / count, 1),
        "networkx_ms": round(1000 * networkx_s / count, 3),
        "max_diff_s": float(f"{worst_diff:.1e}"),
    }


def _osmnx_ms(
    graph: RoadGraph, G: nx.MultiDiGraph, destinations: np.ndarray, origins: np.ndarray
) -> float:
    # osmnx's own per-query path: snap both ends to nodes, then route. Its
    # nearest_nodes needs scikit-learn for unprojected graphs, so it runs on
    # the projected graph, as osmnx's documentation recommends.
    import osmnx as ox
    import pyproj

    projected = ox.project_graph(G)
    to_xy = pyproj.Transformer.from_crs(4326, projected.graph["crs"], always_xy=True)
    queries = [
        (int(s), int(d))
        for d, row in zip(destinations, origins, strict=True)
        for s in row
    ]
    queries = queries[:OSMNX_QUERIES]
    started = time.perf_counter()
    for source, destination in queries:
        ox_, oy = to_xy.transform(graph.node_lon[source], graph.node_lat[source])
        dx, dy = to_xy.transform(
            graph.node_lon[destination], graph.node_lat[destination]
        )
        origin_node = ox.distance.nearest_nodes(projected, ox_, oy)
        dest_node = ox.distance.nearest_nodes(projected, dx, dy)
        route = ox.routing.shortest_path(
            G, origin_node, dest_node, weight="travel_time"
        )
        if route is not None:
            nx.path_weight(G, route, weight="travel_time")
    return 1000 * (time.perf_counter() - started) / len(queries)


def synthetic_grid(side: int, seed: int) -> nx.MultiDiGraph:
    """Build an osmnx-style street grid of ``side * side`` nodes, 10 % one-way streets."""
    rng = np.random.default_rng(seed)
    G = nx.MultiDiGraph(crs="epsg:4326")
    ids = np.arange(side * side).reshape(side, side) + 1
    lat = 60.0 + 0.0015 * np.arange(side)
    lon = 24.0 + 0.003 * np.arange(side)
    G.add_nodes_from(
        (int(ids[r, c]), {"y": float(lat[r]), "x": float(lon[c])})
        for r in range(side)
        for c in range(side)
    )
    u = np.concatenate((ids[:, :-1].ravel(), ids[:-1, :].ravel()))
    v = np.concatenate((ids[:, 1:].ravel(), ids[1:, :].ravel()))
    length_m = rng.uniform(150, 200, len(u))
    speed_mps = rng.choice([25 / 3.6, 40 / 3.6, 60 / 3.6], len(u))
    one_way = rng.uniform(size=len(u)) < 0.1
    for a, b, length, speed, single in zip(
        u.tolist(), v.tolist(), length_m, speed_mps, one_way, strict=True
    ):
        data = {
            "length": float(length),
            "travel_time": float(length / speed),
            "highway": "residential",
        }
        G.add_edge(a, b, **data)
        if not single:
            G.add_edge(b, a, **data)
    return G


def bench_grid(side: int, rng: np.random.Generator) -> dict[str, Any]:
    """Measure the reverse search on a synthetic grid of ``side * side`` nodes."""
    G = synthetic_grid(side, seed=int(rng.integers(1 << 31)))
    largest = max(nx.strongly_connected_components(G), key=len)
    G = nx.MultiDiGraph(G.subgraph(largest))
    graph, compile_s = _timed(lambda: compile_graph(G, source_hash="grid"))
    _, index_s = _timed(
        lambda: build_tree(graph, float(graph.node_lat[0]), float(graph.node_lon[0]))
    )
    destinations = rng.integers(graph.num_nodes, size=GRID_TREES)
    origins = rng.integers(graph.num_nodes, size=(GRID_TREES, 1000))
    tree_s, batch_s = [], 0.0
    for destination, sources in zip(destinations, origins, strict=True):
        dest_lat = float(graph.node_lat[destination])
        dest_lon = float(graph.node_lon[destination])
        tree, seconds = _timed(build_tree, graph, dest_lat, dest_lon)
        tree_s.append(seconds)
        lats, lons = random_points_on_graph(graph, len(sources), rng)
        _, seconds = _timed(tree.eta_many, lats, lons)
        batch_s += seconds

    # networkx on a few pairs only: each query takes about a second here
    tree = build_tree(
        graph,
        float(graph.node_lat[destinations[0]]),
        float(graph.node_lon[destinations[0]]),
    )
    target = int(graph.node_osmid[destinations[0]])
    worst, networkx_s = 0.0, 0.0
    for source in origins[0][:GRID_NETWORKX_QUERIES]:
        origin = int(graph.node_osmid[source])
        expected, seconds = _timed(
            nx.shortest_path_length, G, origin, target, weight="travel_time"
        )
        networkx_s += seconds
        worst = max(worst, abs(float(tree.node_eta_s[source]) - expected))
    batch_us = 1e6 * batch_s / origins.size
    networkx_ms = 1000 * networkx_s / GRID_NETWORKX_QUERIES
    return {
        "graph": f"synthetic grid {side}x{side}",
        "nodes": graph.num_nodes,
        "edges": graph.num_edges,
        "build_s": round(compile_s, 2),
        "load_ms": "",
        "cold_start_s": "",
        "index_ms": round(1000 * index_s, 1),
        "tree_ms": round(1000 * statistics.median(tree_s), 2),
        "batch_us": round(batch_us, 2),
        "single_us": "",
        "networkx_ms": round(networkx_ms, 1),
        "osmnx_ms": "",
        "speedup_batch": round(networkx_ms * 1000 / batch_us),
        "speedup_single": "",
        "max_diff_s": float(f"{worst:.1e}"),
        "pairs": origins.size,
    }


def run(
    osm_paths: Sequence[Path] = (),
    *,
    pairs: int = 1000,
    grid_side: int = GRID_SIDE,
    cache_dir: Path | None = None,
    seed: int = 12345,
) -> list[dict[str, Any]]:
    """Run the benchmark and return one result row per graph.

    Parameters
    ----------
    osm_paths
        Extra OSM files, measured after the bundled Helsinki extract.
    pairs
        Origin/destination pairs per graph (100 origins per destination).
    grid_side
        Side of the synthetic grid; 0 skips it.
    cache_dir
        Graph cache folder; a temporary folder when None, so no cache is
        written next to the data.
    seed
        Seed of the random pairs.
    """
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="enroute-bench-") as tmp:
        folder = cache_dir or Path(tmp)
        rows = [
            bench_graph("Helsinki (bundled)", default_source_path(), pairs, folder, rng)
        ]
        rows += [bench_graph(path.name, path, pairs, folder, rng) for path in osm_paths]
    if grid_side:
        rows.append(bench_grid(grid_side, rng))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Return the rows as a Markdown table."""
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join(" --- " for _ in COLUMNS) + "|"
    lines = [header, rule]
    lines += [
        "| " + " | ".join(str(row.get(key, "")) for key, _ in COLUMNS) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def targets_summary(rows: list[dict[str, Any]]) -> list[str]:
    """Return one line per target with the measured figure and whether it is met."""

    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    lines = []
    for row in rows:
        if row["load_ms"] == "":
            lines.append(
                f"- {row['graph']}: tree {row['tree_ms']} ms on {row['nodes']:,} "
                f"nodes (target <= 50 ms: {verdict(row['tree_ms'] <= 50)})"
            )
            continue
        speedup = row["speedup_batch"]
        lines.append(
            f"- {row['graph']}: batch ping {row['batch_us']} µs (target <= 20 µs: "
            f"{verdict(row['batch_us'] <= 20)}), {speedup}x networkx per query "
            f"(target >= 1000x: {verdict(speedup >= 1000)}), cached load "
            f"{row['load_ms']} ms (target <= 1 s: {verdict(row['load_ms'] <= 1000)})"
        )
    return lines


def results_section(rows: list[dict[str, Any]], command: str, load: str) -> str:
    """Return the body of the "ETA" section of the results page."""
    return "\n".join(
        [
            f"Command: `{command}`  ",
            f"Date: {today()}  ",
            f"Machine: {machine_description()}  ",
            f"Load average (1 min) at start: {load}",
            "",
            format_table(rows),
            "",
            "Targets:",
            "",
            *targets_summary(rows),
            "",
            "Notes:",
            "",
            "- *tree ms*: one reverse Dijkstra search per destination (median).",
            "- *ping µs*: snap plus lookup per ping, tree build excluded: `eta_many` over "
            "all origins of the run per destination (batch), and `eta_s` (single).",
            "- *networkx ms/query*: `networkx.shortest_path_length` on the osmnx graph per "
            "pair; *osmnx ms/query*: two `nearest_nodes` plus `shortest_path` (first "
            f"{OSMNX_QUERIES} pairs).",
            "- *speedup*: networkx time per query divided by enroute's time per ping.",
            "- *max |Δt| s*: largest difference between enroute's and networkx's travel "
            "times over all pairs.",
            "- *first snap ms*: the first tree build, which also builds the segment index.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; print and record the results."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.eta", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--osm",
        type=Path,
        action="append",
        default=[],
        help="extra OSM file to measure (repeatable)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=1000,
        help="origin/destination pairs per graph (default 1000)",
    )
    parser.add_argument(
        "--grid-side",
        type=int,
        default=GRID_SIDE,
        help="side of the synthetic grid in nodes; 0 skips it",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="graph cache folder (default: a temporary folder)",
    )
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="print only; leave RESULTS.md unchanged",
    )
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error(f"--pairs must be at least 1, got {args.pairs}")
    for path in args.osm:
        if not path.is_file():
            parser.error(f"--osm file not found: {path}")

    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    load = f"{os.getloadavg()[0]:.2f}"
    rows = run(
        args.osm, pairs=args.pairs, grid_side=args.grid_side, cache_dir=args.cache_dir
    )
    print(format_table(rows))
    print("\n".join(targets_summary(rows)))
    if not args.no_record:
        command = command_line(
            "benchmarks.eta", list(argv if argv is not None else sys.argv[1:])
        )
        update_section("ETA", lambda _old: results_section(rows, command, load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
