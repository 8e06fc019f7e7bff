"""Read drivable ways from OSM files and write them as OSM XML for osmnx.

pyosmium reads every format enroute accepts (``.osm``, ``.osm.gz``,
``.osm.bz2``, ``.osm.pbf``) with node locations attached to ways. Only ways
that a car may use are kept, with the tag rules of osmnx's ``drive``
network, because ``osmnx.graph_from_xml`` itself keeps every way with a
highway tag (footways included). The kept ways are written to a small OSM
XML file that ``osmnx.graph_from_xml`` turns into a graph.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import osmium

from eta.errors import GraphSourceError
from eta.speeds import HIGHWAY_SPEEDS_KPH, infer_country

logger = logging.getLogger(__name__)

# Tag rules of osmnx 2.1's "drive" network (osmnx._overpass._get_network_filter
# and settings.default_access): a way is dropped when the tag is present and
# the pattern matches anywhere in its value, as Overpass's `!~` filter does.
DRIVE_EXCLUDED_TAG_PATTERNS: dict[str, re.Pattern[str]] = {
    "area": re.compile("yes"),
    "access": re.compile("private"),
    "highway": re.compile(
        "abandoned|bridleway|bus_guideway|construction|corridor|cycleway|elevator|"
        "escalator|footway|no|path|pedestrian|planned|platform|proposed|raceway|"
        "razed|rest_area|service|services|steps|track"
    ),
    "motor_vehicle": re.compile("no"),
    "motorcar": re.compile("no"),
    "service": re.compile(
        "alley|driveway|emergency_access|parking|parking_aisle|private"
    ),
}

# Highway values kept at all. This allow-list is stricter than osmnx, whose
# filter only drops listed values, so that values such as "trail" or
# "crossing" (both in the bundled Helsinki extract) stay out of the car network.
DRIVABLE_HIGHWAYS: frozenset[str] = frozenset(HIGHWAY_SPEEDS_KPH) | {"road"}

# Tags whose values may carry implicit speed limits such as "FI:urban",
# read to tell which country's default limits apply.
COUNTRY_HINT_TAGS = (
    "maxspeed",
    "source:maxspeed",
    "maxspeed:type",
    "zone:maxspeed",
    "zone:traffic",
)


@dataclass
class OsmWay:
    """One drivable way: its id, node ids in order and tags."""

    way_id: int
    node_ids: list[int]
    tags: dict[str, str]


@dataclass
class OsmExtract:
    """Drivable ways and the locations of their nodes, read from one file.

    Attributes
    ----------
    ways
        Kept ways, cut to the nodes present in the file.
    node_latlon
        Node id to (lat, lon) in degrees, for every node of ``ways``.
    ways_read
        Ways in the file.
    highway_ways
        Ways with a highway tag.
    truncated_ways
        Kept ways that referenced nodes missing from the file (extracts cut
        at their boundary); they are split into runs of present nodes.
    excluded_highways
        Count of ways per highway value dropped by the rules.
    country
        Most frequent country code in implicit speed values, or None.
    """

    ways: list[OsmWay] = field(default_factory=list)
    node_latlon: dict[int, tuple[float, float]] = field(default_factory=dict)
    ways_read: int = 0
    highway_ways: int = 0
    truncated_ways: int = 0
    excluded_highways: Counter[str] = field(default_factory=Counter)
    country: str | None = None


def is_drivable(tags: dict[str, str]) -> bool:
    """Return True when a way's tags admit cars under the drive-network rules.

    Examples
    --------
    >>> is_drivable({"highway": "residential"})
    True
    >>> is_drivable({"highway": "footway"})
    False
    >>> is_drivable({"highway": "primary", "access": "private"})
    False
    """
    highway = tags.get("highway")
    if highway is None or highway not in DRIVABLE_HIGHWAYS:
        return False
    for key, pattern in DRIVE_EXCLUDED_TAG_PATTERNS.items():
        value = tags.get(key)
        if value is not None and pattern.search(value):
            return False
    return True


def read_drivable_ways(
    path: Path, *, on_ways_read: Callable[[int], None] | None = None
) -> OsmExtract:
    """Read the drivable ways of an OSM file with their node locations.

    Parameters
    ----------
    path
        An ``.osm``, ``.osm.gz``, ``.osm.bz2`` or ``.osm.pbf`` file.
    on_ways_read
        Called now and then with the number of ways read so far, for
        progress display.

    Raises
    ------
    GraphSourceError
        If pyosmium fails to read the file.
    """
    extract = OsmExtract()
    hint_values: list[str] = []
    for way in _read_nodes_and_ways(path):
        if not isinstance(way, osmium.osm.Way):
            continue
        extract.ways_read += 1
        if on_ways_read is not None and extract.ways_read % 5000 == 0:
            on_ways_read(extract.ways_read)
        tags = dict(way.tags)
        hint_values.extend(tags[key] for key in COUNTRY_HINT_TAGS if key in tags)
        if "highway" not in tags:
            continue
        extract.highway_ways += 1
        if not is_drivable(tags):
            extract.excluded_highways[tags["highway"]] += 1
            continue
        _add_way_runs(extract, way, tags)

    extract.country = infer_country(hint_values)
    logger.info(
        "Read %s: %d ways, %d with a highway tag, %d drivable ways kept, %d nodes",
        path.name,
        extract.ways_read,
        extract.highway_ways,
        len(extract.ways),
        len(extract.node_latlon),
    )
    if extract.truncated_ways:
        logger.warning(
            "%s: %d drivable ways reference nodes missing from the file; "
            "kept the parts whose nodes are present",
            path.name,
            extract.truncated_ways,
        )
    return extract


def _read_nodes_and_ways(path: Path) -> Iterator[osmium.osm.OSMObject]:
    """Yield the nodes and ways of an OSM file, ways with node locations.

    Raises GraphSourceError for every error pyosmium raises while reading,
    so the try catches Exception. pyosmium 4.3 has no common base class for
    these errors. It raises RuntimeError for XML, PBF, decompression and
    format version errors, ValueError for an invalid id, version or
    timestamp, and osmium.InvalidLocationError (a direct subclass of
    Exception) for a coordinate such as ``lat="abc"``. Only pyosmium code
    runs inside the try, because the caller's loop body runs outside the
    generator.
    """
    try:
        processor = osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
        yield from processor.with_locations()
    except MemoryError:
        raise
    except Exception as error:
        raise GraphSourceError(path, f"could not parse {path} as OSM data: {error}") from error


def _add_way_runs(
    extract: OsmExtract, way: osmium.osm.Way, tags: dict[str, str]
) -> None:
    # split the way into runs of nodes whose locations are in the file
    runs: list[list[tuple[int, float, float]]] = [[]]
    for node in way.nodes:
        if node.location.valid():
            runs[-1].append((node.ref, node.location.lat, node.location.lon))
        elif runs[-1]:
            runs.append([])
    runs = [run for run in runs if len(run) >= 2]
    missing = sum(1 for node in way.nodes if not node.location.valid())
    if missing:
        extract.truncated_ways += 1

    # the first run keeps the way id; further runs get negative ids so that
    # every path fed to osmnx has a unique id
    for index, run in enumerate(runs):
        way_id = way.id if index == 0 else -(way.id * 100 + index)
        extract.ways.append(OsmWay(way_id, [ref for ref, _, _ in run], tags))
        for ref, lat, lon in run:
            extract.node_latlon[ref] = (lat, lon)


def write_osm_xml(extract: OsmExtract, path: Path) -> None:
    """Write the ways and nodes of an extract as an OSM XML 0.6 file.

    Coordinates are written with full float precision, so osmnx reads back
    exactly the locations pyosmium decoded.
    """
    with path.open("w", encoding="utf-8") as file:
        file.write("<?xml version='1.0' encoding='UTF-8'?>\n")
        file.write('<osm version="0.6" generator="enroute">\n')
        for node_id, (lat, lon) in extract.node_latlon.items():
            file.write(f'<node id="{node_id}" lat="{lat!r}" lon="{lon!r}"/>\n')
        for way in extract.ways:
            file.write(f'<way id="{way.way_id}">\n')
            for ref in way.node_ids:
                file.write(f'<nd ref="{ref}"/>\n')
            for key, value in way.tags.items():
                file.write(f"<tag k={quoteattr(key)} v={quoteattr(value)}/>\n")
            file.write("</way>\n")
        file.write("</osm>\n")
