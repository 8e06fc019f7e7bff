"""Pentagon-safe H3 grid rings, for expanding searches.

``ring_cells`` and ``disk_by_rings`` walk H3 grid rings without trusting
``h3.grid_ring`` near pentagons. For rings that enclose a pentagon, h3 4.5.0
returns duplicate and missing cells (for example at res 1 around (0, 0) for
k = 12..16), so rings that may come near a pentagon are computed as
differences of ``h3.grid_disk`` sets instead.
"""

from __future__ import annotations

import logging

import h3

from geofence.cover import EDGE_LENGTH_M_BY_RES
from geofence.errors import InvalidArgumentError
from geofence.types import H3Cell

logger = logging.getLogger(__name__)


def ring_cells(origin: H3Cell, k: int) -> list[H3Cell]:
    """Return the cells at grid distance exactly ``k`` from ``origin``.

    Parameters
    ----------
    origin
        An H3 cell as a hexadecimal string.
    k
        Ring index, 0 or more; ring 0 is the origin itself.

    Returns
    -------
    list of H3Cell
        Each cell once, in no particular order; the same set as
        ``set(h3.grid_disk(origin, k)) - set(h3.grid_disk(origin, k - 1))``.

    Notes
    -----
    Uses ``h3.grid_ring`` only when no pentagon can lie within ``k + 1``
    rings of the origin and its result has the 6k distinct cells of a
    hexagonal ring. Otherwise it takes the difference of two grid disks.
    Rings around a pentagon have fewer than 6k cells; nothing here assumes
    that a cell has six neighbours.

    Examples
    --------
    >>> origin = h3.latlng_to_cell(60.1699, 24.9384, 9)
    >>> len(ring_cells(origin, 2))
    12
    """
    _check_ring_index(k, "k")
    if k == 0:
        return [origin]
    ring = _checked_grid_ring(origin, k)
    if ring is not None:
        return ring
    return list(set(h3.grid_disk(origin, k)) - set(h3.grid_disk(origin, k - 1)))


def disk_by_rings(origin: H3Cell, k_max: int) -> list[list[H3Cell]]:
    """Return the rings 0..k_max around ``origin``, for expanding searches.

    Every cell of ``h3.grid_disk(origin, k_max)`` appears in exactly one
    ring, the one at its grid distance from the origin.

    Examples
    --------
    >>> origin = h3.latlng_to_cell(60.1699, 24.9384, 9)
    >>> [len(ring) for ring in disk_by_rings(origin, 2)]
    [1, 6, 12]
    """
    _check_ring_index(k_max, "k_max")
    rings = [[origin]]
    seen = {origin}
    for k in range(1, k_max + 1):
        ring = _checked_grid_ring(origin, k)
        if ring is None or not seen.isdisjoint(ring):
            ring = [cell for cell in h3.grid_disk(origin, k) if cell not in seen]
        seen.update(ring)
        rings.append(ring)
    return rings


def _check_ring_index(k: object, name: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidArgumentError(
            f"{name} must be a non-negative integer, got {k!r}", field=name, value=k
        )


def _checked_grid_ring(origin: H3Cell, k: int) -> list[H3Cell] | None:
    """Return ``h3.grid_ring(origin, k)`` where it is known to be right, else None."""
    if _pentagon_may_be_near(origin, k):
        return None
    ring = h3.grid_ring(origin, k)
    if len(ring) != 6 * k or len(set(ring)) != 6 * k:
        return None
    return list(ring)


def _pentagon_may_be_near(origin: H3Cell, k: int) -> bool:
    # Neighbouring cell centres lie at most about 1.91 average edge lengths
    # apart (sampled over h3 4.5 cells, pentagon neighbourhoods included).
    # So a pentagon farther than 4 * (k + 1) edges is outside ring k + 1.
    res = h3.get_resolution(origin)
    reach_m = 4.0 * (k + 1) * EDGE_LENGTH_M_BY_RES[res]
    origin_latlng = h3.cell_to_latlng(origin)
    return any(
        h3.great_circle_distance(origin_latlng, h3.cell_to_latlng(pentagon), unit="m")
        <= reach_m
        for pentagon in h3.get_pentagons(res)
    )
