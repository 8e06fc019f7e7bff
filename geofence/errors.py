"""Exceptions raised by the geofence package.

All of them derive from one base class and also from the built-in exception
they resemble, so callers may catch either::

    GeofenceError(Exception)
     ├── InvalidFenceError(GeofenceError, ValueError)
     │    └── FenceTooLargeError(InvalidFenceError)
     ├── InvalidConfigError(GeofenceError, ValueError)
     ├── InvalidStateError(GeofenceError, ValueError)
     ├── InvalidArgumentError(GeofenceError, ValueError)
     └── UnknownFenceError(GeofenceError, LookupError)

Each carries the offending field and value as attributes, and its message
names the field, shows the value and states the rule.
"""

from __future__ import annotations

from typing import Any


class GeofenceError(Exception):
    """Base class of every error raised by the geofence package."""


class InvalidFenceError(GeofenceError, ValueError):
    """A fence definition that breaks a validation rule.

    Attributes
    ----------
    field : str
        Dotted name of the offending input field, such as ``site.radius_m``.
    value : Any
        The offending value as given.
    """

    def __init__(self, message: str, *, field: str, value: Any) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class FenceTooLargeError(InvalidFenceError):
    """A fence larger than the supported size.

    Attributes
    ----------
    limit : float
        The limit that the fence exceeds, in the unit named by the message.
    """

    def __init__(self, message: str, *, field: str, value: Any, limit: float) -> None:
        super().__init__(message, field=field, value=value)
        self.limit = limit


class InvalidConfigError(GeofenceError, ValueError):
    """A detection setting outside its allowed range.

    Attributes
    ----------
    field : str
        Name of the ``DetectionConfig`` field.
    value : Any
        The offending value.
    """

    def __init__(self, message: str, *, field: str, value: Any) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class InvalidStateError(GeofenceError, ValueError):
    """A stored detection state that cannot be read back.

    Attributes
    ----------
    field : str
        The key of the stored state that is missing or malformed.
    value : Any
        The stored value, or None when the key is missing.
    """

    def __init__(self, message: str, *, field: str, value: Any) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class InvalidArgumentError(GeofenceError, ValueError):
    """A function argument outside its allowed range, such as a negative ring index.

    Attributes
    ----------
    field : str
        Name of the argument.
    value : Any
        The offending value.
    """

    def __init__(self, message: str, *, field: str, value: Any) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class UnknownFenceError(GeofenceError, LookupError):
    """A fence id that a ``FenceIndex`` does not contain.

    Attributes
    ----------
    fence_id : str
        The id that was looked up.
    """

    def __init__(self, fence_id: str) -> None:
        super().__init__(f"fence {fence_id!r} not found in the index")
        self.fence_id = fence_id
