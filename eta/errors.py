"""Exceptions raised by the ETA engine.

Every class also inherits the built-in exception it resembles, so callers
can catch either the specific class or the familiar built-in::

    EtaError (Exception)
    ├── InvalidCoordinateError (EtaError, ValueError)
    ├── GraphSourceError (EtaError, ValueError)
    │   └── GraphSourceNotFoundError (GraphSourceError, FileNotFoundError)
    ├── OffNetworkError (EtaError, LookupError)
    └── UnreachableError (EtaError, LookupError)

A normal miss while tracking (a ping far from any road, a ping with no
route to the job site) is a return value plus a WARNING log, not one of
these exceptions. They are raised for bad input, for graph sources that
cannot be read, and where no useful value can be returned at all (a job
site far from every road, a path request between disconnected nodes).
"""

from __future__ import annotations

from pathlib import Path


class EtaError(Exception):
    """Base class of all errors raised by the `eta` package."""


class InvalidCoordinateError(EtaError, ValueError):
    """A latitude or longitude is not a finite number in its valid range.

    Attributes
    ----------
    name
        Parameter name, with the index for array input (``"lats[3]"``).
    value
        The rejected value.
    """

    def __init__(self, name: str, value: float, rule: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"{name} must be {rule}, got {value!r}")


class GraphSourceError(EtaError, ValueError):
    """A road graph source cannot be used (format, content, argument or download).

    Attributes
    ----------
    source
        The source as given: a file path or a place name.
    """

    def __init__(self, source: str | Path, message: str) -> None:
        self.source = source
        super().__init__(message)


class GraphSourceNotFoundError(GraphSourceError, FileNotFoundError):
    """A road graph source names a file that does not exist."""


class OffNetworkError(EtaError, LookupError):
    """A point lies farther than the snapping distance from every road.

    Attributes
    ----------
    lat, lon
        The point in degrees, in the order the caller passed them.
    distance_m
        Distance from the point to the nearest road, or to the graph's
        bounding box when the point lies outside it; None when unknown.
    max_distance_m
        The snapping distance that was exceeded.
    possible_swap
        True when exchanging lat and lon would put the point inside the
        graph's area, which suggests the caller passed (lon, lat).
    """

    def __init__(
        self,
        lat: float,
        lon: float,
        distance_m: float | None,
        max_distance_m: float,
        message: str,
        *,
        possible_swap: bool = False,
    ) -> None:
        self.lat = lat
        self.lon = lon
        self.distance_m = distance_m
        self.max_distance_m = max_distance_m
        self.possible_swap = possible_swap
        super().__init__(message)


class UnreachableError(EtaError, LookupError):
    """No drivable path joins an origin to a destination.

    Attributes
    ----------
    origin, destination
        Node indices, or (lat, lon) tuples, of the two ends.
    """

    def __init__(
        self,
        origin: int | tuple[float, float],
        destination: int | tuple[float, float],
        message: str | None = None,
    ) -> None:
        self.origin = origin
        self.destination = destination
        if message is None:
            message = f"no drivable path from {origin} to {destination}"
        super().__init__(message)
