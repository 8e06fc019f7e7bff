"""Parse OSM ``maxspeed`` values and assign free-flow speeds to road edges.

Most OSM extracts tag ``maxspeed`` on few ways (one edge in a thousand in
some towns), so the speed of most edges comes from a default per highway
type. osmnx's ``add_edge_speeds`` would instead give untagged edges the mean
of the tagged edges of the same type, so a handful of tags could set the
speed of a whole town. This module replaces that step.

Speeds are used as edge weights without a further reduction: a tagged limit
is taken as the driving speed, and the defaults for untagged roads are
already typical free-flow speeds below the legal limits. The systematic gap
between these figures and real driving is learned per organisation by the
arrival-window error model (`eta.windows.ErrorModel`), so no fixed urban
factor is applied here. (OSRM's car profile instead multiplies tagged limits
by 0.8.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import networkx as nx

logger = logging.getLogger(__name__)

MIN_SPEED_KPH = 5.0
MAX_SPEED_KPH = 150.0

# Parsed limits above this are treated as corrupt values (such as "70100"
# from a lost "|" separator) rather than clamped to MAX_SPEED_KPH.
IMPLAUSIBLE_SPEED_KPH = 300.0

MPH_TO_KPH = 1.609344
KNOTS_TO_KPH = 1.852

# Typical free-flow car speeds per OSM highway type, in km/h, from OSRM's
# car profile (profiles/car.lua, api_version 4, `speeds.highway`).
HIGHWAY_SPEEDS_KPH: dict[str, float] = {
    "motorway": 90.0,
    "motorway_link": 45.0,
    "trunk": 85.0,
    "trunk_link": 40.0,
    "primary": 65.0,
    "primary_link": 30.0,
    "secondary": 55.0,
    "secondary_link": 25.0,
    "tertiary": 40.0,
    "tertiary_link": 20.0,
    "unclassified": 25.0,
    "residential": 25.0,
    "living_street": 10.0,
    "service": 15.0,
}

# Speed for drivable highway types missing from HIGHWAY_SPEEDS_KPH (such as
# "road", a way whose class is not yet known), from OSRM's car profile
# `default_speed`.
FALLBACK_SPEED_KPH = 10.0

# Walking pace for maxspeed=walk, from OSRM's car profile, which uses 7 km/h
# for DE:living_street, where the legal limit is walking pace.
WALKING_PACE_KPH = 7.0

# Legal limits in km/h behind implicit maxspeed values "<country>:<context>".
# Sources: the OSM wiki page Key:maxspeed as tabulated in osmnx 2.1.1
# (routing._IMPLICIT_MAXSPEEDS), and OSRM's car profile `maxspeed_table`
# where the two differ (DE:rural, DE:living_street, FR:motorway, NO:motorway,
# PL:*). GB values are the statutory 30, 60 and 70 mph.
IMPLICIT_MAXSPEEDS_KPH: dict[str, float] = {
    "AT:urban": 50.0, "AT:rural": 100.0, "AT:trunk": 100.0, "AT:motorway": 130.0,
    "AT:bicycle_road": 30.0,
    "BE:living_street": 20.0, "BE:trunk": 120.0, "BE:motorway": 120.0,
    "BE-BRU:urban": 30.0, "BE-BRU:rural": 70.0,
    "BE-VLG:urban": 50.0, "BE-VLG:rural": 70.0,
    "BE-WAL:urban": 50.0, "BE-WAL:rural": 90.0,
    "BY:living_street": 20.0, "BY:urban": 60.0, "BY:rural": 90.0, "BY:motorway": 110.0,
    "CH:urban": 50.0, "CH:rural": 80.0, "CH:trunk": 100.0, "CH:motorway": 120.0,
    "CZ:living_street": 20.0, "CZ:urban": 50.0, "CZ:rural": 90.0, "CZ:trunk": 110.0,
    "CZ:motorway": 130.0,
    "DE:living_street": WALKING_PACE_KPH, "DE:bicycle_road": 30.0,
    "DE:urban": 50.0, "DE:rural": 100.0,
    "DK:urban": 50.0, "DK:rural": 80.0, "DK:motorway": 130.0,
    "EE:urban": 50.0, "EE:rural": 90.0,
    "ES:living_street": 20.0, "ES:urban": 50.0, "ES:rural": 90.0, "ES:trunk": 90.0,
    "ES:motorway": 120.0,
    "FI:urban": 50.0, "FI:rural": 80.0, "FI:trunk": 100.0, "FI:motorway": 120.0,
    "FR:urban": 50.0, "FR:rural": 80.0, "FR:motorway": 130.0,
    "GB:nsl_restricted": 30 * MPH_TO_KPH, "GB:nsl_single": 60 * MPH_TO_KPH,
    "GB:nsl_dual": 70 * MPH_TO_KPH, "GB:motorway": 70 * MPH_TO_KPH,
    "GR:urban": 50.0, "GR:rural": 90.0, "GR:trunk": 110.0, "GR:motorway": 130.0,
    "HU:living_street": 20.0, "HU:urban": 50.0, "HU:rural": 90.0, "HU:trunk": 110.0,
    "HU:motorway": 130.0,
    "IT:urban": 50.0, "IT:rural": 90.0, "IT:trunk": 110.0, "IT:motorway": 130.0,
    "LT:urban": 50.0, "LT:rural": 90.0,
    "NL:urban": 50.0, "NL:rural": 80.0, "NL:trunk": 100.0,
    "NO:urban": 50.0, "NO:rural": 80.0, "NO:motorway": 110.0,
    "PL:urban": 50.0, "PL:rural": 100.0, "PL:trunk": 120.0, "PL:motorway": 140.0,
    "PT:urban": 50.0, "PT:rural": 90.0, "PT:trunk": 100.0, "PT:motorway": 120.0,
    "RO:urban": 50.0, "RO:rural": 90.0, "RO:trunk": 100.0, "RO:motorway": 130.0,
    "RU:living_street": 20.0, "RU:urban": 60.0, "RU:rural": 90.0, "RU:motorway": 110.0,
    "SE:urban": 50.0, "SE:rural": 70.0,
    "SI:urban": 50.0, "SI:rural": 90.0, "SI:trunk": 110.0, "SI:motorway": 130.0,
    "SK:living_street": 20.0, "SK:urban": 50.0, "SK:rural": 90.0, "SK:trunk": 90.0,
    "SK:motorway": 130.0,
    "TR:living_street": 20.0, "TR:urban": 50.0, "TR:rural": 90.0, "TR:trunk": 110.0,
    "TR:motorway": 130.0,
    "UA:living_street": 20.0, "UA:urban": 50.0, "UA:rural": 90.0, "UA:trunk": 110.0,
    "UA:motorway": 130.0,
    "ZA:urban": 60.0, "ZA:rural": 100.0,
}  # fmt: skip

# Implicit values that state there is no numeric limit (OSRM's car profile
# maps DE:motorway to "no limit"). Edges with them keep the highway default.
NO_LIMIT_VALUES: frozenset[str] = frozenset({"none", "DE:motorway"})

# Limits for a context when the country is unknown or missing from
# IMPLICIT_MAXSPEEDS_KPH, from OSRM's car profile `maxspeed_table_default`.
# The living_street figure is the one most countries above use.
GENERIC_CONTEXT_SPEEDS_KPH: dict[str, float] = {
    "urban": 50.0,
    "rural": 90.0,
    "trunk": 110.0,
    "motorway": 130.0,
    "living_street": 20.0,
}

# Values that name a real but non-numeric limit: they parse to None (so the
# highway default applies) without an "unknown value" warning.
KNOWN_NON_NUMERIC_VALUES: frozenset[str] = frozenset({"signals", "variable", "none"})

# The context whose legal limit caps the free-flow default of each highway
# type when the graph's country is known. Roads of the other types get the
# "urban" limit, because they are mostly in built-up areas.
HIGHWAY_CONTEXTS: dict[str, str] = {
    "motorway": "motorway",
    "motorway_link": "motorway",
    "trunk": "trunk",
    "trunk_link": "trunk",
    "primary": "rural",
    "primary_link": "rural",
    "secondary": "rural",
    "secondary_link": "rural",
    "living_street": "living_street",
}

_NUMBER_RE = re.compile(
    r"^\s*(\d+(?:[.,]\d+)?)\s*(km/h|kmh|kph|mph|knots|kn)?\s*$", re.IGNORECASE
)
_IMPLICIT_RE = re.compile(r"^([A-Z]{2})(-[A-Z0-9]{1,3})?:([a-z_]+?)(?::?(\d+))?$")
_COUNTRY_PREFIX_RE = re.compile(r"^([A-Z]{2})(?:-[A-Z0-9]{1,3})?:")


def _table_digest() -> str:
    tables = [
        HIGHWAY_SPEEDS_KPH,
        FALLBACK_SPEED_KPH,
        WALKING_PACE_KPH,
        IMPLICIT_MAXSPEEDS_KPH,
        sorted(NO_LIMIT_VALUES),
        GENERIC_CONTEXT_SPEEDS_KPH,
        HIGHWAY_CONTEXTS,
        [MIN_SPEED_KPH, MAX_SPEED_KPH, IMPLAUSIBLE_SPEED_KPH],
    ]
    text = json.dumps(tables, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# Digest of every table above: a cached graph built with other tables is
# rebuilt, so editing a figure here takes effect on the next load.
SPEED_TABLE_VERSION = _table_digest()


class ParsedMaxspeed(NamedTuple):
    """Result of parsing one ``maxspeed`` value.

    Attributes
    ----------
    speed_kph
        Limit in km/h within MIN_SPEED_KPH..MAX_SPEED_KPH, or None.
    known
        False when the value follows no recognised format, so the caller
        should warn about it.
    """

    speed_kph: float | None
    known: bool


def parse_maxspeed(value: Any, country: str | None = None) -> float | None:
    """Parse an OSM ``maxspeed`` value into km/h.

    Parameters
    ----------
    value
        The tag value, such as ``"50"``, ``"30 mph"``, ``"70|100"``,
        ``"50;30"`` or ``"FI:urban"``. Non-strings give None.
    country
        ISO 3166-1 alpha-2 code used for implicit values without a country
        prefix (``"urban"``) and for nothing else.

    Returns
    -------
    float or None
        The limit in km/h, always finite and within 5..150, or None when the
        value gives no numeric limit (``"none"``, ``"signals"``,
        ``"variable"``, unknown text), so the highway default should apply.

    Notes
    -----
    - ``"a;b"`` lists alternative limits (by time, vehicle or direction):
      the lowest is taken, so a route is never planned on the faster one.
    - ``"a|b"`` gives one limit per lane: the mean is taken, as osmnx does,
      because traffic spreads over the lanes.
    - Units ``mph`` and ``knots`` are converted; bare numbers are km/h.
    - Values below 5 km/h are raised to 5. Values above 150 km/h are lowered
      to 150, and values above 300 km/h are rejected as corrupt.
    - ``"walk"`` is walking pace, 7 km/h.

    Examples
    --------
    >>> parse_maxspeed("30 mph")
    48.28032
    >>> parse_maxspeed("50;30")
    30.0
    >>> parse_maxspeed("RU:urban")
    60.0
    >>> parse_maxspeed("signals") is None
    True
    """
    return parse_maxspeed_detail(value, country).speed_kph


def parse_maxspeed_detail(value: Any, country: str | None = None) -> ParsedMaxspeed:
    """Parse a ``maxspeed`` value and report whether its format is known.

    See `parse_maxspeed` for the rules. Callers that log unknown values use
    this form to tell "no numeric limit" from "unrecognised text".
    """
    if not isinstance(value, str):
        return ParsedMaxspeed(None, known=False)
    text = value.strip()
    if not text:
        return ParsedMaxspeed(None, known=False)

    # alternatives first: the lowest parsable alternative wins
    if ";" in text:
        parts = [_parse_lanes(part, country) for part in text.split(";")]
        speeds = [part.speed_kph for part in parts if part.speed_kph is not None]
        known = all(part.known for part in parts)
        return ParsedMaxspeed(min(speeds) if speeds else None, known)
    return _parse_lanes(text, country)


def _parse_lanes(text: str, country: str | None) -> ParsedMaxspeed:
    if "|" not in text:
        return _parse_single(text.strip(), country)
    lanes = [_parse_single(lane.strip(), country) for lane in text.split("|")]
    speeds = [lane.speed_kph for lane in lanes if lane.speed_kph is not None]
    known = all(lane.known for lane in lanes)
    return ParsedMaxspeed(sum(speeds) / len(speeds) if speeds else None, known)


def _parse_single(text: str, country: str | None) -> ParsedMaxspeed:
    match = _NUMBER_RE.match(text)
    if match:
        number = float(match.group(1).replace(",", "."))
        unit = (match.group(2) or "").lower()
        if unit == "mph":
            number *= MPH_TO_KPH
        elif unit in ("knots", "kn"):
            number *= KNOTS_TO_KPH
        return _bounded(number)
    if text in KNOWN_NON_NUMERIC_VALUES or text in NO_LIMIT_VALUES:
        return ParsedMaxspeed(None, known=True)
    if text == "walk":
        return ParsedMaxspeed(WALKING_PACE_KPH, known=True)
    return _parse_implicit(text, country)


def _parse_implicit(text: str, country: str | None) -> ParsedMaxspeed:
    if ":" not in text:
        if country is None:
            speed = GENERIC_CONTEXT_SPEEDS_KPH.get(text)
            return ParsedMaxspeed(speed, known=speed is not None)
        text = f"{country.upper()}:{text}"
    match = _IMPLICIT_RE.match(text)
    if match is None:
        return ParsedMaxspeed(None, known=False)
    code, region, context, zone_kph = match.groups()

    # zone values carry their own number: "DE:zone30", "DE:zone:30"
    if zone_kph is not None:
        if context == "zone":
            return _bounded(float(zone_kph))
        return ParsedMaxspeed(None, known=False)
    if text in NO_LIMIT_VALUES:
        return ParsedMaxspeed(None, known=True)
    for key in (f"{code}{region or ''}:{context}", f"{code}:{context}"):
        if key in IMPLICIT_MAXSPEEDS_KPH:
            return ParsedMaxspeed(IMPLICIT_MAXSPEEDS_KPH[key], known=True)
    speed = GENERIC_CONTEXT_SPEEDS_KPH.get(context)
    return ParsedMaxspeed(speed, known=speed is not None)


def _bounded(speed_kph: float) -> ParsedMaxspeed:
    if (
        not math.isfinite(speed_kph)
        or speed_kph <= 0
        or speed_kph > IMPLAUSIBLE_SPEED_KPH
    ):
        return ParsedMaxspeed(None, known=False)
    return ParsedMaxspeed(min(max(speed_kph, MIN_SPEED_KPH), MAX_SPEED_KPH), known=True)


def default_speed_kph(highway: Any, country: str | None = None) -> float:
    """Return the free-flow speed in km/h for a highway type without a limit tag.

    Parameters
    ----------
    highway
        OSM highway value, or a list of them (simplified edges spanning
        several ways); for a list, the fastest type's default is used.
    country
        ISO 3166-1 alpha-2 code. When given, the country's legal limit for
        the road's usual context caps the default.

    Examples
    --------
    >>> default_speed_kph("residential")
    25.0
    >>> default_speed_kph("road")
    10.0
    """
    highways = highway if isinstance(highway, list) else [highway]
    speeds = [_default_one(str(value), country) for value in highways]
    return max(speeds) if speeds else FALLBACK_SPEED_KPH


def _default_one(highway: str, country: str | None) -> float:
    speed = HIGHWAY_SPEEDS_KPH.get(highway, FALLBACK_SPEED_KPH)
    if country is None:
        return speed
    context = HIGHWAY_CONTEXTS.get(highway, "urban")
    limit = IMPLICIT_MAXSPEEDS_KPH.get(f"{country.upper()}:{context}")
    return min(speed, limit) if limit is not None else speed


class EdgeSpeed(NamedTuple):
    """Speed chosen for one edge.

    Attributes
    ----------
    speed_kph
        Speed in km/h, within MIN_SPEED_KPH..MAX_SPEED_KPH.
    from_tag
        True when a ``maxspeed`` value gave the speed, False for a default.
    unknown_values
        ``maxspeed`` values of the edge that follow no recognised format.
    """

    speed_kph: float
    from_tag: bool
    unknown_values: tuple[str, ...]


def edge_speed_kph(
    maxspeed: Any, highway: Any, country: str | None = None
) -> EdgeSpeed:
    """Choose an edge's speed from its ``maxspeed`` and highway type.

    Parameters
    ----------
    maxspeed
        The edge's ``maxspeed`` value: a string, a list of strings (a
        simplified edge spanning ways with different limits, whose mean is
        used), or None/NaN when untagged.
    highway
        The edge's highway type (or list), for the untagged default.
    country
        ISO 3166-1 alpha-2 code, or None.

    Examples
    --------
    >>> edge_speed_kph("FI:urban", "residential").speed_kph
    50.0
    >>> edge_speed_kph(None, "residential").from_tag
    False
    """
    values = maxspeed if isinstance(maxspeed, list) else [maxspeed]
    speeds = []
    unknown = []
    for value in values:
        if not isinstance(value, str):
            continue
        parsed = parse_maxspeed_detail(value, country)
        if parsed.speed_kph is not None:
            speeds.append(parsed.speed_kph)
        if not parsed.known:
            unknown.append(value)
    if speeds:
        return EdgeSpeed(sum(speeds) / len(speeds), True, tuple(unknown))
    return EdgeSpeed(default_speed_kph(highway, country), False, tuple(unknown))


def infer_country(tag_values: Iterable[str]) -> str | None:
    """Return the most frequent country code among implicit speed values.

    Parameters
    ----------
    tag_values
        Values of tags such as ``maxspeed``, ``source:maxspeed``,
        ``maxspeed:type`` and ``zone:traffic`` (``"FI:urban"``,
        ``"DE-BY:rural"``).

    Examples
    --------
    >>> infer_country(["50", "FI:urban", "FI:rural", "sign"])
    'FI'
    >>> infer_country(["50"]) is None
    True
    """
    counts: Counter[str] = Counter()
    for value in tag_values:
        match = _COUNTRY_PREFIX_RE.match(value)
        if match:
            counts[match.group(1)] += 1
    if not counts:
        return None
    return counts.most_common(1)[0][0]


@dataclass
class SpeedSummary:
    """Counts from assigning speeds to a graph's edges.

    Attributes
    ----------
    edges
        Edges that received a speed.
    tagged_edges
        Edges with at least one ``maxspeed`` value.
    parsed_edges
        Edges whose speed came from a parsable ``maxspeed`` value.
    unknown_values
        Edges per ``maxspeed`` value that follows no recognised format.
    """

    edges: int = 0
    tagged_edges: int = 0
    parsed_edges: int = 0
    unknown_values: Counter[str] = field(default_factory=Counter)


def assign_edge_speeds(G: nx.MultiDiGraph, country: str | None = None) -> SpeedSummary:
    """Set each edge's ``speed_kph`` from its ``maxspeed`` and highway type.

    Parameters
    ----------
    G
        osmnx-style graph, modified in place.
    country
        ISO 3166-1 alpha-2 code for implicit values and default caps.

    Notes
    -----
    Each distinct unrecognised ``maxspeed`` value is logged once at WARNING
    with the number of edges carrying it, not once per edge.
    """
    summary = SpeedSummary()
    for _u, _v, data in G.edges(data=True):
        maxspeed = data.get("maxspeed")
        speed = edge_speed_kph(maxspeed, data.get("highway"), country)
        data["speed_kph"] = speed.speed_kph
        summary.edges += 1
        if isinstance(maxspeed, (str, list)):
            summary.tagged_edges += 1
        if speed.from_tag:
            summary.parsed_edges += 1
        summary.unknown_values.update(speed.unknown_values)
    for value, count in sorted(summary.unknown_values.items()):
        logger.warning(
            "Unrecognised maxspeed value %r on %d edges; using the highway-type default",
            value,
            count,
        )
    return summary
