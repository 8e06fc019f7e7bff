"""Ping model, frame parsing and validation: the pure front of the ingest path.

A frame is the text of one WebSocket message or one ``POST /v1/pings`` body:
either one ping object or ``{"pings": [...]}``. Parsing never raises on bad
pings: each invalid ping becomes a rejection that names the field, the value
and the rule, and the valid pings beside it go on to the store.

Rules for a ping (``t`` in Unix seconds, ``lat``/``lon`` in WGS84 degrees):

- ``t``, ``lat`` and ``lon`` are required finite numbers (not strings, not
  booleans); optional ``acc``, ``spd``, ``hdg``, ``bat`` and ``alt`` are
  finite numbers or null;
- ``lat`` within -90..90, ``lon`` within -180..180, and not both exactly 0
  (the "null island" fix that receivers send when they have no fix);
- ``t`` above 1e11 is a millisecond clock and rejected; ``t`` before
  2000-01-01 is a unit mistake or an unset clock and rejected; ``t`` more
  than ``max_future_s`` ahead of the server clock is rejected; ``t`` older
  than the history retention is rejected, since it would be trimmed at once;
- ``acc`` >= 0 m, ``spd`` >= 0 m/s, ``hdg`` within 0..360 degrees, ``bat``
  within 0..1;
- a heading sent with a speed below 0.5 m/s is dropped: receivers report
  a stale or zero bearing when standing still.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import isfinite
from typing import Any, NamedTuple

import orjson

MAX_BATCH_PINGS = 10_000
MILLISECONDS_THRESHOLD_T = 1e11  # 5138-11-16 in seconds; 1973-03-03 in ms
# Above this a time is neither seconds nor milliseconds (5138-11-16 in ms).
OUT_OF_RANGE_T = 1e14
EARLIEST_T = 946_684_800.0  # 2000-01-01T00:00:00Z
STANDING_SPEED_MPS = 0.5

_OPTIONAL_FIELDS = ("acc", "spd", "hdg", "bat", "alt")


class Ping(NamedTuple):
    """One accepted fix of a device; units: s, degrees, m, m/s, 0..1.

    A named tuple rather than a frozen dataclass because building one costs
    about a fifth as much, and the ingest path builds one per ping.
    """

    t: float
    lat: float
    lon: float
    acc: float | None = None
    spd: float | None = None
    hdg: float | None = None
    bat: float | None = None
    alt: float | None = None

    def to_json(self) -> bytes:
        """Serialize compactly, leaving out absent optional fields."""
        # Unrolled: this runs for every stored ping.
        body: dict[str, float] = {"t": self.t, "lat": self.lat, "lon": self.lon}
        if self.acc is not None:
            body["acc"] = self.acc
        if self.spd is not None:
            body["spd"] = self.spd
        if self.hdg is not None:
            body["hdg"] = self.hdg
        if self.bat is not None:
            body["bat"] = self.bat
        if self.alt is not None:
            body["alt"] = self.alt
        return orjson.dumps(body)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Ping:
        """Rebuild a ping stored by :meth:`to_json`."""
        body = orjson.loads(raw)
        return cls(**body)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A ping that failed validation, by its index in the frame."""

    index: int
    error: str


@dataclass(frozen=True, slots=True)
class ParsedFrame:
    """The valid pings of a frame in frame order, and the rejected ones."""

    pings: list[tuple[int, Ping]]
    rejected: list[Rejection]
    #: Problems of the frame itself that lost no ping, for the ack's "warnings".
    warnings: list[str] = field(default_factory=list)


class FrameError(ValueError):
    """The frame as a whole is unusable: bad JSON, or an unknown shape."""


@dataclass(frozen=True, slots=True)
class TimeRules:
    """Server clock and limits that a ping's ``t`` is checked against."""

    now: float
    max_future_s: float = 60.0
    history_s: float = 7 * 86400.0


MAX_ECHOED_CHARS = 40


class _OutOfRange(str):
    """The text of a JSON number that no double holds, kept for the rejection message."""


def _describe(value: Any) -> str:
    if isinstance(value, _OutOfRange):
        if "." in value or "e" in value or "E" in value:
            echoed = value if len(value) <= MAX_ECHOED_CHARS else f"{value[:MAX_ECHOED_CHARS]}..."
            return f"{echoed}, which is beyond the range of a double"
        return f"an integer of {len(value.lstrip('-'))} digits"
    if isinstance(value, str):
        if len(value) > MAX_ECHOED_CHARS:
            return f"{value[:MAX_ECHOED_CHARS]!r}... (a string of {len(value)} characters)"
        return f"{value!r} (a string)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return repr(value)


def _number(ping: dict[str, Any], name: str, required: bool) -> float | None:
    """Return the field as a finite float, None when absent, or raise ValueError."""
    value = ping.get(name)
    if value is None:
        if required:
            if name in ping:
                raise ValueError(f"{name} must be a finite number, got null")
            raise ValueError(f"{name} is missing")
        return None
    if type(value) is float or type(value) is int:  # bool is not a number here
        try:
            number = float(value)
        except OverflowError:
            digits = len(str(abs(value)))
            raise ValueError(
                f"{name} must be a finite number, got an integer of {digits} digits"
            ) from None
        if math.isfinite(number):
            return number
        raise ValueError(f"{name} must be a finite number, got {number}")
    raise ValueError(f"{name} must be a finite number, got {_describe(value)}")


def _number_or_none(ping: dict[str, Any], name: str, required: bool, errors: list[str]) -> float | None:
    """Return the field as :func:`_number` does; on an error, add its message to ``errors`` and return None."""
    try:
        return _number(ping, name, required)
    except ValueError as error:
        errors.append(str(error))
        return None


def _check_t(t: float, rules: TimeRules) -> None:
    if t > OUT_OF_RANGE_T:
        raise ValueError(f"t must be Unix seconds, got {t:g}, which is out of range")
    if t > MILLISECONDS_THRESHOLD_T:
        raise ValueError(
            f"t must be Unix seconds, got {t:.0f}, which looks like milliseconds"
        )
    if t < EARLIEST_T:
        raise ValueError(
            f"t must be after 2000-01-01 ({EARLIEST_T:.0f}), got {t}; "
            "send Unix seconds"
        )
    ahead_s = t - rules.now
    if ahead_s > rules.max_future_s:
        raise ValueError(
            f"t must be at most {rules.max_future_s:.0f} s ahead of the server "
            f"clock, got {t} ({ahead_s:.0f} s ahead)"
        )
    if rules.now - t > rules.history_s:
        raise ValueError(
            f"t must be within the {rules.history_s / 86400:g}-day history "
            f"window, got {t} ({(rules.now - t) / 86400:.1f} days old)"
        )


def validate_ping(raw: Any, rules: TimeRules) -> Ping:
    """Check one decoded ping against the rules of this module.

    Raises
    ------
    ValueError
        With a message that names the field, the value and the rule.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"ping must be a JSON object, got {_describe(raw)}")
    # Every invalid field is reported, joined with "; ", so one reply lists
    # all of a device's mistakes.
    errors: list[str] = []
    # Finite floats, the common case, skip the checks in _number.
    t = raw.get("t")
    if type(t) is not float or not isfinite(t):
        t = _number_or_none(raw, "t", True, errors)
    lat = raw.get("lat")
    if type(lat) is not float or not isfinite(lat):
        lat = _number_or_none(raw, "lat", True, errors)
    lon = raw.get("lon")
    if type(lon) is not float or not isfinite(lon):
        lon = _number_or_none(raw, "lon", True, errors)
    if lat is not None and not -90.0 <= lat <= 90.0:
        errors.append(f"lat must be within -90..90, got {lat}")
    if lon is not None and not -180.0 <= lon <= 180.0:
        errors.append(f"lon must be within -180..180, got {lon}")
    if lat == 0.0 and lon == 0.0:
        errors.append("lat and lon must not both be 0, which receivers send for no fix")
    if t is not None:
        try:
            _check_t(t, rules)
        except ValueError as error:
            errors.append(str(error))

    # Optional fields are looked at only when present: most pings carry few.
    acc = _number_or_none(raw, "acc", False, errors) if "acc" in raw else None
    if acc is not None and acc < 0:
        errors.append(f"acc must be >= 0 m, got {acc}")
    spd = _number_or_none(raw, "spd", False, errors) if "spd" in raw else None
    if spd is not None and spd < 0:
        errors.append(f"spd must be >= 0 m/s, got {spd}")
    hdg = _number_or_none(raw, "hdg", False, errors) if "hdg" in raw else None
    if hdg is not None and not 0.0 <= hdg <= 360.0:
        errors.append(f"hdg must be within 0..360 degrees, got {hdg}")
    bat = _number_or_none(raw, "bat", False, errors) if "bat" in raw else None
    if bat is not None and not 0.0 <= bat <= 1.0:
        errors.append(f"bat must be within 0..1, got {bat}")
    alt = _number_or_none(raw, "alt", False, errors) if "alt" in raw else None
    if errors:
        raise ValueError("; ".join(errors))
    assert t is not None
    assert lat is not None
    assert lon is not None

    if hdg is not None and spd is not None and spd < STANDING_SPEED_MPS:
        hdg = None
    return Ping(t, lat, lon, acc, spd, hdg, bat, alt)


def decode_frame(text: str | bytes) -> Any:
    """Decode a frame's JSON; raise :class:`FrameError` when it is not JSON.

    orjson rejects the non-standard ``NaN`` and ``Infinity`` tokens and
    numbers beyond the range of a double, so the standard library decoder
    gets a second try. The ping is then rejected for its non-finite field,
    with the field named, and not as bad JSON, so the valid pings beside
    it are kept.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as fast_error:
        try:
            return json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
        except (ValueError, RecursionError):
            raise FrameError(f"invalid JSON: {fast_error}") from None


def _parse_int(text: str) -> int | _OutOfRange:
    # Python refuses to convert integers longer than its limit, 4,300 digits
    # by default (0 means none); the message needs only their length.
    limit = sys.get_int_max_str_digits()
    return _OutOfRange(text) if limit and len(text.lstrip("-")) > limit else int(text)


def _parse_float(text: str) -> float | _OutOfRange:
    number = float(text)
    return number if isfinite(number) else _OutOfRange(text)


def split_frame(text: str | bytes) -> tuple[list[Any], list[str]]:
    """Return a frame's ping items, not yet validated, and its warnings.

    Raises
    ------
    FrameError
        When the text is not JSON, the shape is neither a ping nor a batch,
        or the batch is empty or contains more than ``MAX_BATCH_PINGS`` pings.
    """
    body = decode_frame(text)
    warnings: list[str] = []
    if isinstance(body, dict) and "pings" in body:
        items = body["pings"]
        stray = [name for name in ("t", "lat", "lon") if name in body]
        if stray:
            warnings.append(
                f"top-level {', '.join(stray)} ignored: a frame with pings carries every "
                "ping inside pings; move that ping into the array"
            )
        # The frame is rejected whole, so the stray ping is not stored either.
        unstored = f"; top-level {', '.join(stray)} not stored either" if stray else ""
        if not isinstance(items, list):
            raise FrameError(f"pings must be a JSON array, got {_describe(items)}{unstored}")
        if not items:
            raise FrameError(f"pings must contain at least one ping, got an empty array{unstored}")
        if len(items) > MAX_BATCH_PINGS:
            raise FrameError(
                f"pings must contain at most {MAX_BATCH_PINGS} pings, got "
                f"{len(items)}; split the batch"
            )
        return items, warnings
    if isinstance(body, dict) and not body.keys().isdisjoint(("t", "lat", "lon")):
        return [body], warnings
    raise FrameError(
        'frame must be a ping object or {"pings": [...]}, got '
        f"{_describe(body)}"
    )


def validate_items(
    items: Sequence[Any], rules: TimeRules, first_index: int = 0
) -> tuple[list[tuple[int, Ping]], list[Rejection]]:
    """Validate ping items numbered from ``first_index``; return the valid pings and the rejections."""
    pings: list[tuple[int, Ping]] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items, first_index):
        try:
            pings.append((index, validate_ping(item, rules)))
        except ValueError as error:
            rejected.append(Rejection(index, str(error)))
    return pings, rejected


def parse_frame(text: str | bytes, rules: TimeRules) -> ParsedFrame:
    """Split a frame into valid pings and per-ping rejections.

    Raises
    ------
    FrameError
        As :func:`split_frame` does.
    """
    items, warnings = split_frame(text)
    pings, rejected = validate_items(items, rules)
    return ParsedFrame(pings, rejected, warnings)
