"""Arrival and departure detection from GPS fixes, as a pure state machine.

One ``DetectionState`` follows one contractor's visit to one fence. The
caller feeds fixes in fix-time order to :func:`step`, stores the returned
state (``to_dict`` gives a flat JSON-safe mapping for a Redis hash) and acts
on the returned events. Time is always the fix time, never the wall clock.

Each fix is first located with :meth:`Fence.zone`, which takes its accuracy
into account. ``INSIDE`` needs the position inside the site and at least
half of the accuracy disk inside (``min_inside_share``). ``OUTSIDE`` needs
the position beyond the exit boundary and the whole disk clear of the site.
Anything else is ``UNDECIDED``, which neither counts towards a transition
nor resets one. The states and transitions::

    OUTSIDE  --INSIDE-->   ENTERING      (the run starts at this fix)
    ENTERING --INSIDE-->   ON_SITE       once the run has min_inside_fixes
                                         inside fixes spanning arrival_dwell_s;
                                         emits Arrived stamped with the run's
                                         first inside fix
    ENTERING --OUTSIDE-->  OUTSIDE
    ON_SITE  --OUTSIDE-->  EXITING       (the exit starts at this fix)
    EXITING  --INSIDE-->   ON_SITE       a trip to the van and back
    EXITING  --OUTSIDE-->  DEPARTED      once the exit has min_outside_fixes
                                         outside fixes spanning
                                         departure_grace_s, and at least
                                         min_on_site_s passed from arrival to
                                         the exit's first fix; emits Departed
                                         stamped with that first fix
    EXITING  --OUTSIDE-->  OUTSIDE       the same, but a visit too short to
                                         complete; a later return goes back
                                         ON_SITE with no second Arrived
    DEPARTED                             final: later fixes change nothing

A fix leaves the state unchanged when any of these is true:

- its time, position or accuracy is not a finite number;
- its accuracy is worse than ``max_accuracy_m``;
- its time is not after the last fix seen.

A fix that implies a jump faster than ``max_speed_mps`` from the last
accepted fix moves nothing either; it only counts towards accepting a new
position after ``jump_reanchor_fixes`` such fixes. A gap without fixes
changes nothing, so a contractor is never taken off site without evidence.
"""

from __future__ import annotations

import enum
import logging
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from geofence.errors import InvalidConfigError, InvalidStateError
from geofence.fences import Fence, Zone
from geofence.projection import MEAN_EARTH_RADIUS_M

logger = logging.getLogger(__name__)

STATE_FORMAT_VERSION = 1
"""Version of the mapping that ``DetectionState.to_dict`` writes."""


class VisitState(enum.Enum):
    """The stage of a contractor's visit to one site."""

    OUTSIDE = "outside"
    ENTERING = "entering"
    ON_SITE = "on_site"
    EXITING = "exiting"
    DEPARTED = "departed"


class Fix(NamedTuple):
    """One GPS fix, an immutable record.

    Attributes
    ----------
    t
        Fix time in Unix seconds.
    lat, lon
        Position in WGS84 degrees.
    accuracy_m
        Horizontal accuracy radius in metres; None or 0 when unknown.
    """

    t: float
    lat: float
    lon: float
    accuracy_m: float | None = None


@dataclass(frozen=True, slots=True)
class Arrived:
    """The contractor is confirmed on site.

    Attributes
    ----------
    t
        Time of the first inside fix of the run that confirmed the arrival,
        the best estimate of when the contractor actually arrived.
    fix
        That first inside fix.
    confirmed_by
        The fix that completed the confirmation.
    """

    t: float
    fix: Fix
    confirmed_by: Fix | None = None


@dataclass(frozen=True, slots=True)
class Departed:
    """The contractor is confirmed gone after a complete visit.

    Attributes
    ----------
    t
        Time of the first outside fix of the final exit, when the contractor
        left. A trip to the van that ends within the grace period never sets
        it.
    fix
        That first outside fix.
    confirmed_by
        The fix that completed the confirmation, one grace period or more
        after ``t``.
    """

    t: float
    fix: Fix
    confirmed_by: Fix | None = None


VisitEvent = Arrived | Departed


def _check_config_number(
    name: str, value: object, *, minimum: float, exclusive: bool = False
) -> None:
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_number or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise InvalidConfigError(
            f"{name} must be a finite number, got {value!r}", field=name, value=value
        )
    number = float(value)  # type: ignore[arg-type]
    if number < minimum or (exclusive and number == minimum):
        relation = "greater than" if exclusive else "at least"
        raise InvalidConfigError(
            f"{name} must be {relation} {minimum:g}, got {value!r}",
            field=name,
            value=value,
        )


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """Thresholds of arrival and departure detection.

    Phone fixes are typically accurate to about 5-20 m under open sky and
    20-50 m between tall buildings. These figures are estimates, and the
    defaults below are chosen around them.

    Attributes
    ----------
    min_inside_fixes
        Inside fixes an arrival needs (default 2): one fix is never proof.
    arrival_dwell_s
        Time from the first to the latest inside fix that an arrival needs
        (default 30 s). Driving through a 100 m fence at 10 m/s takes 10-20
        s, so passing traffic does not arrive.
    min_on_site_s
        Shortest visit that completes a job, from arrival to the first
        outside fix of the exit (default 180 s). Shorter stops, such as a
        wrong house, do not complete it.
    departure_grace_s
        How long a contractor must stay outside before departure is
        confirmed (default 300 s), so a trip to the van for a part, even
        one parked beyond the exit boundary, does not complete the job.
    min_outside_fixes
        Outside fixes a departure needs (default 2).
    max_accuracy_m
        Fixes with a worse accuracy are ignored (default 100 m). This keeps
        street-level fixes and drops cell-tower and Wi-Fi fallback fixes,
        which are off by hundreds of metres or more.
    default_accuracy_m
        Accuracy assumed for a fix without one (default 20 m, a typical
        phone figure). Android's ``Location.getAccuracy`` returns 0.0 for a
        fix with no accuracy, so 0 also means unknown.
    min_inside_share
        Share of a fix's accuracy disk that must lie inside the site when
        the disk crosses its edge (default 0.5).
    max_speed_mps
        Fastest plausible movement between accepted fixes, after taking
        off both fixes' accuracy (default 70 m/s, 252 km/h). A faster fix
        is a GPS jump and is ignored.
    jump_reanchor_fixes
        After this many consecutive jump fixes, the latest is accepted as
        the new position (default 3), in case the fix before the jumps was
        the wrong one.
    """

    min_inside_fixes: int = 2
    arrival_dwell_s: float = 30.0
    min_on_site_s: float = 180.0
    departure_grace_s: float = 300.0
    min_outside_fixes: int = 2
    max_accuracy_m: float = 100.0
    default_accuracy_m: float = 20.0
    min_inside_share: float = 0.5
    max_speed_mps: float = 70.0
    jump_reanchor_fixes: int = 3

    def __post_init__(self) -> None:
        for name in ("min_inside_fixes", "min_outside_fixes", "jump_reanchor_fixes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfigError(
                    f"{name} must be an integer of at least 1, got {value!r}",
                    field=name,
                    value=value,
                )
        for name in ("arrival_dwell_s", "min_on_site_s", "departure_grace_s"):
            _check_config_number(name, getattr(self, name), minimum=0.0)
        for name in ("max_accuracy_m", "default_accuracy_m", "max_speed_mps"):
            _check_config_number(name, getattr(self, name), minimum=0.0, exclusive=True)
        share = self.min_inside_share
        _check_config_number("min_inside_share", share, minimum=0.0, exclusive=True)
        if share > 1.0:
            raise InvalidConfigError(
                f"min_inside_share must be within 0..1, got {share!r}",
                field="min_inside_share",
                value=share,
            )


DEFAULT_CONFIG = DetectionConfig()

# Module constants for the enum members that step compares on every fix.
_OUTSIDE = VisitState.OUTSIDE
_ENTERING = VisitState.ENTERING
_ON_SITE = VisitState.ON_SITE
_DEPARTED = VisitState.DEPARTED
_INSIDE = Zone.INSIDE
_ZONE_OUTSIDE = Zone.OUTSIDE
_INVALID = Zone.INVALID

_METRES_PER_DEGREE = MEAN_EARTH_RADIUS_M * math.pi / 180.0


@dataclass(slots=True)
class DetectionState:
    """The detection state of one visit to one fence.

    A value: :func:`step` never modifies a state and returns a new one when
    anything changes. It is not frozen because a frozen dataclass costs
    several times more to build, and one is built for most fixes.

    Attributes
    ----------
    status
        Stage of the visit.
    last_t
        Time of the latest fix taken into account; older fixes are ignored.
    last_fix
        The latest accepted fix, the reference for the jump check.
    rejected_jumps
        Consecutive fixes rejected as jumps since ``last_fix``.
    run_fix
        First inside fix of the current run, while ``ENTERING``.
    inside_fixes
        Inside fixes in the current run.
    arrived_fix
        The fix that the arrival was stamped with, once arrived.
    exit_fix
        First outside fix of the current exit, while ``EXITING``, and the
        departure stamp once ``DEPARTED``.
    outside_fixes
        Outside fixes in the current exit.
    """

    status: VisitState = VisitState.OUTSIDE
    last_t: float | None = None
    last_fix: Fix | None = None
    rejected_jumps: int = 0
    run_fix: Fix | None = None
    inside_fixes: int = 0
    arrived_fix: Fix | None = None
    exit_fix: Fix | None = None
    outside_fixes: int = 0

    def to_dict(self) -> dict[str, str | int | float]:
        """Return the state as a flat mapping of JSON scalars.

        Keys whose value is None are left out, so the mapping can be
        written to a Redis hash as it is.

        Examples
        --------
        >>> sorted(DetectionState().to_dict().items())  # doctest: +NORMALIZE_WHITESPACE
        [('inside_fixes', 0), ('outside_fixes', 0), ('rejected_jumps', 0),
         ('status', 'outside'), ('v', 1)]
        """
        data: dict[str, str | int | float] = {
            "v": STATE_FORMAT_VERSION,
            "status": self.status.value,
        }
        if self.last_t is not None:
            data["last_t"] = self.last_t
        _put_fix(data, "last_fix", self.last_fix)
        data["rejected_jumps"] = self.rejected_jumps
        _put_fix(data, "run_fix", self.run_fix)
        data["inside_fixes"] = self.inside_fixes
        _put_fix(data, "arrived_fix", self.arrived_fix)
        _put_fix(data, "exit_fix", self.exit_fix)
        data["outside_fixes"] = self.outside_fixes
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str | bytes, Any]) -> DetectionState:
        """Read a state written by :meth:`to_dict`.

        Keys and values may also be the ``str`` or ``bytes`` forms that a
        Redis hash returns.

        Raises
        ------
        InvalidStateError
            When a key is missing or contains a value of the wrong kind.
        """
        text = {_decode(key): value for key, value in data.items()}
        version = _int_field(text, "v")
        if version != STATE_FORMAT_VERSION:
            raise InvalidStateError(
                f"v must be {STATE_FORMAT_VERSION}, got {version}",
                field="v",
                value=version,
            )
        status_text = _decode(_required(text, "status"))
        try:
            status = VisitState(status_text)
        except ValueError:
            allowed = ", ".join(state.value for state in VisitState)
            raise InvalidStateError(
                f"status must be one of {allowed}, got {status_text!r}",
                field="status",
                value=status_text,
            ) from None
        last_t = _float_field(text, "last_t") if "last_t" in text else None
        return cls(
            status=status,
            last_t=last_t,
            last_fix=_get_fix(text, "last_fix"),
            rejected_jumps=_int_field(text, "rejected_jumps"),
            run_fix=_get_fix(text, "run_fix"),
            inside_fixes=_int_field(text, "inside_fixes"),
            arrived_fix=_get_fix(text, "arrived_fix"),
            exit_fix=_get_fix(text, "exit_fix"),
            outside_fixes=_int_field(text, "outside_fixes"),
        )


def step(
    state: DetectionState,
    fix: Fix,
    fence: Fence,
    config: DetectionConfig = DEFAULT_CONFIG,
) -> tuple[DetectionState, list[VisitEvent]]:
    """Advance a visit's detection by one fix.

    Parameters
    ----------
    state
        The visit's state before the fix; it is not modified.
    fix
        The next fix, in fix-time order.
    fence
        The fence of the visit's site.
    config
        Detection thresholds.

    Returns
    -------
    tuple
        The new state (the same object when the fix changes nothing) and
        the events it caused: at most one ``Arrived`` or ``Departed``.

    Examples
    --------
    >>> from geofence.fences import circle_fence
    >>> fence = circle_fence("j1", 60.1711, 24.9452, 100.0)
    >>> state = DetectionState()
    >>> for t in (0.0, 15.0, 30.0):
    ...     state, events = step(state, Fix(t, 60.1711, 24.9452, 10.0), fence)
    >>> state.status, events[0].t, events[0].confirmed_by.t
    (<VisitState.ON_SITE: 'on_site'>, 0.0, 30.0)
    """
    status = state.status
    if status is _DEPARTED:
        return state, []
    t = fix.t
    try:
        if not math.isfinite(t) or (state.last_t is not None and t <= state.last_t):
            return state, []
        accuracy_m = fix.accuracy_m
        if accuracy_m is None or accuracy_m == 0.0:
            accuracy_m = config.default_accuracy_m
        elif not 0.0 < accuracy_m <= config.max_accuracy_m:
            # Also catches NaN, which fails both comparisons.
            _log_ignored(fence, fix, "its accuracy is not usable")
            return state, []
        zone = fence.zone(fix.lat, fix.lon, accuracy_m, config.min_inside_share)
    except TypeError:
        _log_ignored(fence, fix, "a field is not a number")
        return state, []
    if zone is _INVALID:
        _log_ignored(fence, fix, "its position is not finite and in range")
        return state, []

    # A fix too far from the last accepted one for the time between them is
    # a GPS jump. A few in a row mean that the earlier fix was the wrong one.
    last_fix = state.last_fix
    if last_fix is not None and _is_jump(
        last_fix, fix, accuracy_m, fence.shape.projection.cos_lat0, config
    ):
        rejected_jumps = state.rejected_jumps + 1
        if rejected_jumps < config.jump_reanchor_fixes:
            _log_ignored(fence, fix, "it jumps too far from the last accepted fix")
            return _replace(state, last_t=t, rejected_jumps=rejected_jumps), []

    # The two commonest cases, staying outside or staying on site, first.
    if status is _OUTSIDE and zone is not _INSIDE:
        return DetectionState(
            _OUTSIDE, t, fix, 0, None, 0, state.arrived_fix, None, 0
        ), []
    if status is _ON_SITE and zone is not _ZONE_OUTSIDE:
        return DetectionState(
            _ON_SITE, t, fix, 0, None, 0, state.arrived_fix, None, 0
        ), []

    if status is _OUTSIDE:
        return _from_outside(state, fix, zone, config)
    if status is _ENTERING:
        return _from_entering(state, fix, zone, config)
    if status is _ON_SITE:
        return _from_on_site(state, fix, zone, config)
    return _from_exiting(state, fix, zone, config)


def detect(
    fixes: Iterable[Fix],
    fence: Fence,
    config: DetectionConfig = DEFAULT_CONFIG,
    state: DetectionState | None = None,
) -> list[VisitEvent]:
    """Run detection over a batch of fixes in any order.

    Fixes are sorted by time. Of several fixes with the same time, the one
    with the best accuracy is kept (ties broken by position), so the result
    does not depend on the order of the input. Fixes whose time or position
    is not a finite number are dropped before sorting.

    Parameters
    ----------
    fixes
        The fixes of one contractor.
    fence
        The site's fence.
    config
        Detection thresholds.
    state
        State to continue from; a fresh ``OUTSIDE`` state by default.

    Returns
    -------
    list of VisitEvent
        The events in time order.
    """
    candidates = [fix for fix in fixes if _sortable(fix)]
    candidates.sort(
        key=lambda fix: (fix.t, _accuracy_sort_key(fix, config), fix.lat, fix.lon)
    )
    current = state if state is not None else DetectionState()
    events: list[VisitEvent] = []
    last_t = None
    for fix in candidates:
        if fix.t == last_t:
            continue
        last_t = fix.t
        current, new_events = step(current, fix, fence, config)
        events.extend(new_events)
    return events


# Transitions, one function per starting state.


def _from_outside(
    state: DetectionState, fix: Fix, zone: Zone, config: DetectionConfig
) -> tuple[DetectionState, list[VisitEvent]]:
    if state.status is not VisitState.OUTSIDE:
        raise AssertionError(f"expected OUTSIDE, got {state.status}")
    if zone is not Zone.INSIDE:
        return _replace(state, last_t=fix.t, last_fix=fix, rejected_jumps=0), []
    entering = _replace(
        state,
        status=VisitState.ENTERING,
        last_t=fix.t,
        last_fix=fix,
        rejected_jumps=0,
        run_fix=fix,
        inside_fixes=1,
    )
    return _arrive_if_confirmed(entering, fix, config)


def _from_entering(
    state: DetectionState, fix: Fix, zone: Zone, config: DetectionConfig
) -> tuple[DetectionState, list[VisitEvent]]:
    if state.status is not VisitState.ENTERING:
        raise AssertionError(f"expected ENTERING, got {state.status}")
    if zone is Zone.OUTSIDE:
        outside = _replace(
            state,
            status=VisitState.OUTSIDE,
            last_t=fix.t,
            last_fix=fix,
            rejected_jumps=0,
            run_fix=None,
            inside_fixes=0,
        )
        return outside, []
    inside_fixes = state.inside_fixes + (1 if zone is Zone.INSIDE else 0)
    entering = _replace(
        state, last_t=fix.t, last_fix=fix, rejected_jumps=0, inside_fixes=inside_fixes
    )
    if zone is not Zone.INSIDE:
        return entering, []
    return _arrive_if_confirmed(entering, fix, config)


def _arrive_if_confirmed(
    state: DetectionState, fix: Fix, config: DetectionConfig
) -> tuple[DetectionState, list[VisitEvent]]:
    run_fix = state.run_fix
    if run_fix is None:
        raise AssertionError("an ENTERING state has no run_fix")
    if (
        state.inside_fixes < config.min_inside_fixes
        or fix.t - run_fix.t < config.arrival_dwell_s
    ):
        return state, []
    on_site = _replace(state, status=VisitState.ON_SITE, run_fix=None, inside_fixes=0)
    if state.arrived_fix is not None:
        # Back from a visit too short to complete: the job arrived already.
        return on_site, []
    arrived = _replace(on_site, arrived_fix=run_fix)
    logger.debug("arrival confirmed at t=%s by the fix at t=%s", run_fix.t, fix.t)
    return arrived, [Arrived(run_fix.t, run_fix, confirmed_by=fix)]


def _from_on_site(
    state: DetectionState, fix: Fix, zone: Zone, config: DetectionConfig
) -> tuple[DetectionState, list[VisitEvent]]:
    if state.status is not VisitState.ON_SITE:
        raise AssertionError(f"expected ON_SITE, got {state.status}")
    if zone is not Zone.OUTSIDE:
        return _replace(state, last_t=fix.t, last_fix=fix, rejected_jumps=0), []
    exiting = _replace(
        state,
        status=VisitState.EXITING,
        last_t=fix.t,
        last_fix=fix,
        rejected_jumps=0,
        exit_fix=fix,
        outside_fixes=1,
    )
    return _depart_if_confirmed(exiting, fix, config)


def _from_exiting(
    state: DetectionState, fix: Fix, zone: Zone, config: DetectionConfig
) -> tuple[DetectionState, list[VisitEvent]]:
    if state.status is not VisitState.EXITING:
        raise AssertionError(f"expected EXITING, got {state.status}")
    if zone is Zone.INSIDE:
        on_site = _replace(
            state,
            status=VisitState.ON_SITE,
            last_t=fix.t,
            last_fix=fix,
            rejected_jumps=0,
            exit_fix=None,
            outside_fixes=0,
        )
        return on_site, []
    outside_fixes = state.outside_fixes + (1 if zone is Zone.OUTSIDE else 0)
    exiting = _replace(
        state, last_t=fix.t, last_fix=fix, rejected_jumps=0, outside_fixes=outside_fixes
    )
    if zone is not Zone.OUTSIDE:
        return exiting, []
    return _depart_if_confirmed(exiting, fix, config)


def _depart_if_confirmed(
    state: DetectionState, fix: Fix, config: DetectionConfig
) -> tuple[DetectionState, list[VisitEvent]]:
    exit_fix, arrived_fix = state.exit_fix, state.arrived_fix
    if exit_fix is None or arrived_fix is None:
        raise AssertionError("an EXITING state has no exit_fix or arrived_fix")
    if (
        state.outside_fixes < config.min_outside_fixes
        or fix.t - exit_fix.t < config.departure_grace_s
    ):
        return state, []
    if exit_fix.t - arrived_fix.t < config.min_on_site_s:
        # Too short a visit to complete the job; keep the arrival so that
        # coming back does not announce a second one.
        logger.debug(
            "visit from t=%s to t=%s is shorter than %s s; not completed",
            arrived_fix.t,
            exit_fix.t,
            config.min_on_site_s,
        )
        outside = _replace(
            state, status=VisitState.OUTSIDE, exit_fix=None, outside_fixes=0
        )
        return outside, []
    departed = _replace(state, status=VisitState.DEPARTED)
    logger.debug("departure confirmed at t=%s by the fix at t=%s", exit_fix.t, fix.t)
    return departed, [Departed(exit_fix.t, exit_fix, confirmed_by=fix)]


# Helpers.


def _replace(state: DetectionState, **changes: Any) -> DetectionState:
    values = {name: getattr(state, name) for name in _STATE_FIELDS}
    values.update(changes)
    return DetectionState(**values)


_STATE_FIELDS = tuple(f.name for f in fields(DetectionState))


def _usable_accuracy(accuracy_m: float | None, config: DetectionConfig) -> float | None:
    """Return the accuracy to use for a fix, or None when the fix must be ignored."""
    if accuracy_m is None or accuracy_m == 0.0:
        return config.default_accuracy_m
    if not 0.0 < accuracy_m <= config.max_accuracy_m:
        # Also catches NaN, which fails both comparisons.
        return None
    return accuracy_m


def _is_jump(
    last_fix: Fix, fix: Fix, accuracy_m: float, cos_lat: float, config: DetectionConfig
) -> bool:
    """Test whether a fix lies farther from the last accepted one than speed allows.

    Both fixes' accuracy radii are allowed on top of ``max_speed_mps`` times
    the time between them. Distances are equirectangular with the cosine of
    the fence centre's latitude, well within 1 % for fixes within 50 km of
    the fence, which is plenty for a plausibility check.
    """
    dlon_deg = fix.lon - last_fix.lon
    if dlon_deg > 180.0:
        dlon_deg -= 360.0
    elif dlon_deg < -180.0:
        dlon_deg += 360.0
    dx_m = dlon_deg * cos_lat * _METRES_PER_DEGREE
    dy_m = (fix.lat - last_fix.lat) * _METRES_PER_DEGREE
    last_accuracy_m = last_fix.accuracy_m or config.default_accuracy_m
    allowed_m = (
        config.max_speed_mps * (fix.t - last_fix.t) + accuracy_m + last_accuracy_m
    )
    return dx_m * dx_m + dy_m * dy_m > allowed_m * allowed_m


def _log_ignored(fence: Fence, fix: Fix, reason: str) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "fence %s: ignored the fix at t=%s because %s",
            fence.fence_id,
            fix.t,
            reason,
        )


def _sortable(fix: Fix) -> bool:
    try:
        return (
            math.isfinite(fix.t) and math.isfinite(fix.lat) and math.isfinite(fix.lon)
        )
    except TypeError:
        return False


def _accuracy_sort_key(fix: Fix, config: DetectionConfig) -> float:
    try:
        accuracy_m = _usable_accuracy(fix.accuracy_m, config)
    except TypeError:
        return math.inf
    return math.inf if accuracy_m is None else accuracy_m


# Reading and writing states.


def _put_fix(data: dict[str, str | int | float], prefix: str, fix: Fix | None) -> None:
    if fix is None:
        return
    data[f"{prefix}_t"] = fix.t
    data[f"{prefix}_lat"] = fix.lat
    data[f"{prefix}_lon"] = fix.lon
    if fix.accuracy_m is not None:
        data[f"{prefix}_accuracy_m"] = fix.accuracy_m


def _get_fix(data: Mapping[str, Any], prefix: str) -> Fix | None:
    if f"{prefix}_t" not in data:
        return None
    accuracy_key = f"{prefix}_accuracy_m"
    return Fix(
        t=_float_field(data, f"{prefix}_t"),
        lat=_float_field(data, f"{prefix}_lat"),
        lon=_float_field(data, f"{prefix}_lon"),
        accuracy_m=_float_field(data, accuracy_key) if accuracy_key in data else None,
    )


def _decode(value: object) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _required(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise InvalidStateError(f"{key} is missing", field=key, value=None)
    return data[key]


def _float_field(data: Mapping[str, Any], key: str) -> float:
    raw = _decode(_required(data, key))
    try:
        value = (
            float(raw)
            if isinstance(raw, (str, int, float)) and not isinstance(raw, bool)
            else None
        )
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        raise InvalidStateError(
            f"{key} must be a finite number, got {raw!r}", field=key, value=raw
        )
    return value


def _int_field(data: Mapping[str, Any], key: str) -> int:
    raw = _decode(_required(data, key))
    try:
        value = (
            int(raw)
            if isinstance(raw, (str, int)) and not isinstance(raw, bool)
            else None
        )
    except ValueError:
        value = None
    if value is None or value < 0:
        raise InvalidStateError(
            f"{key} must be a non-negative integer, got {raw!r}", field=key, value=raw
        )
    return value
