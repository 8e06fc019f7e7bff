"""Fences around job sites, their H3 covers, and arrival and departure detection.

A pure core: values in, values or events out, with no I/O. The modules:

- ``fences``: build and validate fences (``circle_fence``, ``polygon_fence``,
  ``fence_from_site``) and locate fixes against them (``Fence.zone``).
- ``detection``: the visit state machine (``step``, ``detect``,
  ``DetectionState``, ``DetectionConfig``, ``Arrived``, ``Departed``).
- ``cover``: a fence's H3 cells split into interior and boundary cells.
- ``index``: ``FenceIndex``, many fences queried by point.
- ``rings``: pentagon-safe grid rings for expanding searches.
- ``projection``, ``shapes``, ``validation``: the local metric projection,
  fence geometry in metres and input checks.
- ``errors``: the exception tree; ``types``: shared type aliases.
"""

from geofence.detection import (
    Arrived,
    Departed,
    DetectionConfig,
    DetectionState,
    Fix,
    VisitEvent,
    VisitState,
    detect,
    step,
)
from geofence.errors import (
    FenceTooLargeError,
    GeofenceError,
    InvalidArgumentError,
    InvalidConfigError,
    InvalidFenceError,
    InvalidStateError,
    UnknownFenceError,
)
from geofence.fences import Fence, Zone, circle_fence, fence_from_site, polygon_fence
from geofence.index import FenceIndex, FenceMatches
from geofence.rings import disk_by_rings, ring_cells

__all__ = [
    "Arrived",
    "Departed",
    "DetectionConfig",
    "DetectionState",
    "Fence",
    "FenceIndex",
    "FenceMatches",
    "FenceTooLargeError",
    "Fix",
    "GeofenceError",
    "InvalidArgumentError",
    "InvalidConfigError",
    "InvalidFenceError",
    "InvalidStateError",
    "UnknownFenceError",
    "VisitEvent",
    "VisitState",
    "Zone",
    "circle_fence",
    "detect",
    "disk_by_rings",
    "fence_from_site",
    "polygon_fence",
    "ring_cells",
    "step",
]
