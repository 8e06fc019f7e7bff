"""Arrival windows: intervals that contain the actual arrival with a set probability.

The error model describes how the actual remaining time relates to the
predicted one through the log ratio ``r = ln((actual_s + 30) / (predicted_s
+ 30))``. The 30 s shift makes the error multiplicative for long trips and
keeps short predictions from producing huge ratios. For each bin of
predicted remaining time the model keeps a histogram of ``r``, seeded with
a normal prior (median 0, sigma 0.2) worth 20 trips, and updated with every
completed trip of the organisation. A window at confidence ``c`` spans the
``(1 - c) / 2`` and ``(1 + c) / 2`` quantiles of ``r``, mapped back to
seconds, and is at least ``DEFAULT_FLOOR_S`` wide on each side of the prediction.

Two guarantees hold for every model state, and the tests check them:

- the window contains the predicted arrival;
- the window never gets wider as the predicted remaining time shrinks.

`WindowSmoother` then keeps the window shown to a customer from jumping
about between pings. All times are Unix seconds; all durations seconds.
The model and smoother state serialise to JSON-ready dicts, so the caller
can keep them in Redis.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from eta.geo import FloatArray

DEFAULT_CONFIDENCE = 0.8

# Upper edges of the bins of predicted remaining time, in seconds. A last,
# open bin contains longer predictions.
DEFAULT_BIN_EDGES_S = (120.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0)

# Shift in seconds added to predicted and actual times before taking their
# log ratio.
DEFAULT_SHIFT_S = 30.0

# Minimum distance in seconds from the predicted arrival to each end of the
# window: fixes come every 5-10 s and the arrival is stamped at the first
# fix inside the fence, so even the last minute is uncertain by about this
# much. A wider floor would make short-range windows cover nearly every
# arrival instead of the stated share.
DEFAULT_FLOOR_S = 15.0

# Prior spread of the log ratio, and its weight in trips per bin. sigma 0.2
# puts the 80 % interval of a 10-minute prediction at about 7.6 to 13.1
# minutes before any trip is observed.
DEFAULT_PRIOR_SIGMA = 0.2
DEFAULT_PRIOR_WEIGHT = 20.0

# Observations in a bin lose half their weight after this many newer trips
# in the same bin, so the model follows changing traffic.
DEFAULT_HALFLIFE_TRIPS = 200.0

# Histogram cells over the log ratio; values beyond the range fall in the
# end cells.
LOG_RATIO_MIN = -2.0
LOG_RATIO_MAX = 2.0
LOG_RATIO_CELLS = 200

MODEL_STATE_VERSION = 1


@dataclass(frozen=True)
class ArrivalWindow:
    """An interval expected to contain the arrival with probability ``confidence``.

    Attributes
    ----------
    earliest_t, latest_t
        Ends of the window, Unix seconds.
    confidence
        Intended probability that the arrival falls inside, 0..1.
    arrival_t
        The predicted arrival (now + ETA), Unix seconds; inside the window.
    """

    earliest_t: float
    latest_t: float
    confidence: float
    arrival_t: float

    @property
    def width_s(self) -> float:
        """Width of the window in seconds."""
        return self.latest_t - self.earliest_t

    def contains(self, t: float) -> bool:
        """Return True when Unix time ``t`` lies inside the window (ends included)."""
        return self.earliest_t <= t <= self.latest_t

    def to_dict(self) -> dict[str, float]:
        """Return the window as a JSON-ready dict."""
        return {
            "earliest_t": self.earliest_t,
            "latest_t": self.latest_t,
            "confidence": self.confidence,
            "arrival_t": self.arrival_t,
        }


class ErrorModel:
    """Calibrated distribution of ETA errors, binned by predicted remaining time.

    Parameters
    ----------
    bin_edges_s
        Increasing upper edges of the bins of predicted remaining time.
    shift_s, floor_s, prior_sigma, prior_weight, halflife_trips
        See the module constants of the same names; ``halflife_trips=None``
        keeps every observation at full weight.

    Examples
    --------
    >>> model = ErrorModel()
    >>> window = model.window(now_t=1_000.0, eta_s=600.0)
    >>> window.earliest_t < 1_600.0 < window.latest_t
    True
    """

    def __init__(
        self,
        *,
        bin_edges_s: Iterable[float] = DEFAULT_BIN_EDGES_S,
        shift_s: float = DEFAULT_SHIFT_S,
        floor_s: float = DEFAULT_FLOOR_S,
        prior_sigma: float = DEFAULT_PRIOR_SIGMA,
        prior_weight: float = DEFAULT_PRIOR_WEIGHT,
        halflife_trips: float | None = DEFAULT_HALFLIFE_TRIPS,
    ) -> None:
        self.bin_edges_s = tuple(float(edge) for edge in bin_edges_s)
        if not self.bin_edges_s or any(
            b <= a for a, b in itertools.pairwise((0.0, *self.bin_edges_s))
        ):
            raise ValueError(
                f"bin_edges_s must be positive and increasing, got {self.bin_edges_s}"
            )
        _check_positive("shift_s", shift_s)
        _check_positive("prior_sigma", prior_sigma)
        _check_positive("prior_weight", prior_weight)
        if not (math.isfinite(floor_s) and floor_s >= 0):
            raise ValueError(f"floor_s must be a non-negative number, got {floor_s!r}")
        if halflife_trips is not None:
            _check_positive("halflife_trips", halflife_trips)
        self.shift_s = float(shift_s)
        self.floor_s = float(floor_s)
        self.prior_sigma = float(prior_sigma)
        self.prior_weight = float(prior_weight)
        self.halflife_trips = None if halflife_trips is None else float(halflife_trips)
        self.counts = np.zeros((len(self.bin_edges_s) + 1, LOG_RATIO_CELLS))
        self.observations = np.zeros(len(self.bin_edges_s) + 1, dtype=np.int64)
        self._knot_cache: dict[float, tuple[FloatArray, FloatArray]] = {}

    @functools.cached_property
    def knots_s(self) -> FloatArray:
        """Representative predicted time of each bin: its midpoint, 1.5x the last edge."""
        # Cached: the bin edges never change, and every window reads the knots twice.
        lower = np.array((0.0, *self.bin_edges_s[:-1]))
        upper = np.array(self.bin_edges_s)
        return np.append((lower + upper) / 2, 1.5 * self.bin_edges_s[-1])

    def observe(self, predicted_remaining_s: float, actual_remaining_s: float) -> None:
        """Record one finished trip: the predicted and the actual remaining time.

        Parameters
        ----------
        predicted_remaining_s
            ETA in seconds given at some point of the trip.
        actual_remaining_s
            Time in seconds from that point to the actual arrival.

        Raises
        ------
        ValueError
            If a time is negative or not finite.
        """
        for name, value in (
            ("predicted_remaining_s", predicted_remaining_s),
            ("actual_remaining_s", actual_remaining_s),
        ):
            if not (
                isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
            ):
                raise ValueError(
                    f"{name} must be a non-negative finite number, got {value!r}"
                )
        index = self._bin_of(predicted_remaining_s)
        ratio = math.log(
            (actual_remaining_s + self.shift_s) / (predicted_remaining_s + self.shift_s)
        )
        if self.halflife_trips is not None:
            self.counts[index] *= 0.5 ** (1.0 / self.halflife_trips)
        self.counts[index, _cell_of(ratio)] += 1.0
        self.observations[index] += 1
        self._knot_cache.clear()

    def interval_s(
        self, eta_s: float, confidence: float = DEFAULT_CONFIDENCE
    ) -> tuple[float, float]:
        """Return the (low, high) remaining time in seconds at a confidence.

        Parameters
        ----------
        eta_s
            Predicted remaining time in seconds, finite and non-negative.
        confidence
            Probability the interval should hold, strictly between 0 and 1.

        Returns
        -------
        low_s, high_s
            With ``0 <= low_s <= eta_s <= high_s``, and both
            ``eta_s - low_s`` and ``high_s - eta_s`` non-decreasing in
            ``eta_s``.
        """
        if not (
            isinstance(eta_s, (int, float)) and math.isfinite(eta_s) and eta_s >= 0
        ):
            raise ValueError(
                f"eta_s must be a non-negative finite number, got {eta_s!r}"
            )
        below_knots, above_knots = self._knot_widths(confidence)
        below = _width_at(eta_s, self.knots_s, below_knots, self.shift_s)
        above = _width_at(eta_s, self.knots_s, above_knots, self.shift_s)
        below = min(max(below, self.floor_s), eta_s)
        above = max(above, self.floor_s)
        return eta_s - below, eta_s + above

    def window(
        self, now_t: float, eta_s: float, confidence: float = DEFAULT_CONFIDENCE
    ) -> ArrivalWindow:
        """Return the arrival window for an ETA given at Unix time ``now_t``."""
        low_s, high_s = self.interval_s(eta_s, confidence)
        return ArrivalWindow(now_t + low_s, now_t + high_s, confidence, now_t + eta_s)

    def _bin_of(self, predicted_s: float) -> int:
        return int(np.searchsorted(self.bin_edges_s, predicted_s, side="right"))

    def _knot_widths(self, confidence: float) -> tuple[FloatArray, FloatArray]:
        if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
            raise ValueError(
                f"confidence must be strictly between 0 and 1, got {confidence!r}"
            )
        cached = self._knot_cache.get(confidence)
        if cached is not None:
            return cached

        # quantiles of the log ratio per bin, from prior plus observations
        histogram = (
            self.prior_weight * _normal_cell_mass(self.prior_sigma) + self.counts
        )
        low_ratio = _quantiles(histogram, (1.0 - confidence) / 2)
        high_ratio = _quantiles(histogram, (1.0 + confidence) / 2)

        # widths below and above the prediction at each bin's knot, made
        # non-decreasing so that a shorter ETA never gets a wider window
        scale = self.knots_s + self.shift_s
        below = np.maximum.accumulate(scale * (1.0 - np.exp(low_ratio)))
        above = np.maximum.accumulate(scale * (np.exp(high_ratio) - 1.0))
        self._knot_cache[confidence] = (below, above)
        return below, above

    def to_dict(self) -> dict[str, Any]:
        """Return the model state as a JSON-ready dict (observed counts kept sparse)."""
        return {
            "version": MODEL_STATE_VERSION,
            "bin_edges_s": list(self.bin_edges_s),
            "shift_s": self.shift_s,
            "floor_s": self.floor_s,
            "prior_sigma": self.prior_sigma,
            "prior_weight": self.prior_weight,
            "halflife_trips": self.halflife_trips,
            "log_ratio_grid": [LOG_RATIO_MIN, LOG_RATIO_MAX, LOG_RATIO_CELLS],
            "observations": self.observations.tolist(),
            "counts": [
                [[int(cell), float(row[cell])] for cell in np.flatnonzero(row)]
                for row in self.counts
            ],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ErrorModel:
        """Rebuild a model from `to_dict` output.

        Raises
        ------
        ValueError
            If the state has another version or histogram grid.
        """
        if state.get("version") != MODEL_STATE_VERSION:
            raise ValueError(
                f"error model state version must be {MODEL_STATE_VERSION}, "
                f"got {state.get('version')!r}"
            )
        if state.get("log_ratio_grid") != [
            LOG_RATIO_MIN,
            LOG_RATIO_MAX,
            LOG_RATIO_CELLS,
        ]:
            raise ValueError(
                "error model state has another histogram grid: "
                f"{state.get('log_ratio_grid')!r}"
            )
        model = cls(
            bin_edges_s=state["bin_edges_s"],
            shift_s=state["shift_s"],
            floor_s=state["floor_s"],
            prior_sigma=state["prior_sigma"],
            prior_weight=state["prior_weight"],
            halflife_trips=state["halflife_trips"],
        )
        model.observations = np.array(state["observations"], dtype=np.int64)
        for index, row in enumerate(state["counts"]):
            for cell, count in row:
                model.counts[index, int(cell)] = float(count)
        return model


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _cell_of(ratio: float) -> int:
    width = (LOG_RATIO_MAX - LOG_RATIO_MIN) / LOG_RATIO_CELLS
    return min(max(int((ratio - LOG_RATIO_MIN) // width), 0), LOG_RATIO_CELLS - 1)


def _normal_cell_mass(sigma: float) -> FloatArray:
    # probability of each histogram cell under Normal(0, sigma)
    edges = np.linspace(LOG_RATIO_MIN, LOG_RATIO_MAX, LOG_RATIO_CELLS + 1)
    cdf = np.array(
        [0.5 * (1.0 + math.erf(edge / (sigma * math.sqrt(2.0)))) for edge in edges]
    )
    mass = np.diff(cdf)
    return np.asarray(mass / mass.sum())


def _quantiles(histogram: FloatArray, q: float) -> FloatArray:
    # per row, the log ratio where the cumulative mass reaches q, linear
    # inside the cell
    edges = np.linspace(LOG_RATIO_MIN, LOG_RATIO_MAX, LOG_RATIO_CELLS + 1)
    cumulative = np.cumsum(histogram, axis=1)
    cumulative = np.concatenate((np.zeros((len(histogram), 1)), cumulative), axis=1)
    cumulative /= cumulative[:, -1:]
    return np.array([np.interp(q, row, edges) for row in cumulative])


def _width_at(
    eta_s: float, knots_s: FloatArray, widths: FloatArray, shift_s: float
) -> float:
    # linear between knots; outside them, proportional to eta + shift
    if eta_s <= knots_s[0]:
        return float(widths[0] * (eta_s + shift_s) / (knots_s[0] + shift_s))
    if eta_s >= knots_s[-1]:
        return float(widths[-1] * (eta_s + shift_s) / (knots_s[-1] + shift_s))
    return float(np.interp(eta_s, knots_s, widths))


@dataclass
class WindowSmoother:
    """Keep a job's displayed window steady from ping to ping.

    While the new predicted arrival stays inside the current window, each
    end of the window moves toward the new raw window by exponential
    smoothing with time constant ``time_constant_s``. It moves by at most
    ``max_rate`` seconds per second of elapsed time. When the prediction
    leaves the window, the window moves to the new raw window at once. The
    smoothed window always contains the predicted arrival, and never starts
    before the current time.

    Attributes
    ----------
    time_constant_s
        Time for the window to move about 63 % of the way to a new value.
    max_rate
        Largest move of either end, in seconds per second of elapsed time,
        while the prediction stays inside the window.
    reset_after_s
        After a gap longer than this between updates, the raw window is
        taken as is.
    earliest_t, latest_t, updated_t
        Current state: the shown window and the time of the last update.
    """

    time_constant_s: float = 30.0
    max_rate: float = 1.0
    reset_after_s: float = 900.0
    earliest_t: float | None = None
    latest_t: float | None = None
    updated_t: float | None = None
    arrival_t: float | None = None
    confidence: float = DEFAULT_CONFIDENCE

    def update(
        self,
        now_t: float,
        eta_s: float,
        model: ErrorModel,
        confidence: float = DEFAULT_CONFIDENCE,
    ) -> ArrivalWindow:
        """Return the smoothed window for an ETA given at Unix time ``now_t``."""
        return self.smooth(model.window(now_t, eta_s, confidence), now_t)

    def smooth(self, raw: ArrivalWindow, now_t: float) -> ArrivalWindow:
        """Return the smoothed version of a raw window computed at ``now_t``.

        An update older than the last one (a late ping from an offline
        batch) changes nothing and returns the current window.
        """
        if (
            self.earliest_t is None
            or self.latest_t is None
            or self.updated_t is None
            or self.arrival_t is None
        ):
            return self._accept(raw, now_t)
        elapsed_s = now_t - self.updated_t
        if elapsed_s > self.reset_after_s or raw.confidence != self.confidence:
            return self._accept(raw, now_t)
        if elapsed_s < 0:
            return ArrivalWindow(
                self.earliest_t, self.latest_t, self.confidence, self.arrival_t
            )
        if not (self.earliest_t <= raw.arrival_t <= self.latest_t):
            return self._accept(raw, now_t)

        # move each end toward the raw window, limited by the elapsed time
        alpha = 1.0 - math.exp(-elapsed_s / self.time_constant_s)
        limit_s = self.max_rate * elapsed_s
        earliest = self.earliest_t + _clamp(
            alpha * (raw.earliest_t - self.earliest_t), limit_s
        )
        latest = self.latest_t + _clamp(alpha * (raw.latest_t - self.latest_t), limit_s)
        earliest = max(earliest, now_t)
        latest = max(latest, earliest)
        self.earliest_t, self.latest_t = earliest, latest
        self.updated_t, self.arrival_t = now_t, raw.arrival_t
        return ArrivalWindow(earliest, latest, raw.confidence, raw.arrival_t)

    def _accept(self, raw: ArrivalWindow, now_t: float) -> ArrivalWindow:
        self.earliest_t, self.latest_t = raw.earliest_t, raw.latest_t
        self.updated_t, self.arrival_t, self.confidence = (
            now_t,
            raw.arrival_t,
            raw.confidence,
        )
        return raw

    def to_dict(self) -> dict[str, Any]:
        """Return the smoother state as a JSON-ready dict."""
        return {
            "time_constant_s": self.time_constant_s,
            "max_rate": self.max_rate,
            "reset_after_s": self.reset_after_s,
            "earliest_t": self.earliest_t,
            "latest_t": self.latest_t,
            "updated_t": self.updated_t,
            "arrival_t": self.arrival_t,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> WindowSmoother:
        """Rebuild a smoother from `to_dict` output."""
        return cls(**{key: state[key] for key in cls().to_dict() if key in state})


def _clamp(value: float, limit: float) -> float:
    return max(-limit, min(limit, value))


@dataclass(frozen=True)
class Coverage:
    """How often actual arrivals fell inside their predicted windows.

    Attributes
    ----------
    count
        Number of (window, arrival) pairs.
    covered
        Arrivals inside their window.
    early, late
        Arrivals before the window's start, after its end.
    rate
        ``covered / count``; compare with the windows' confidence.
    mean_width_s
        Mean window width in seconds.
    """

    count: int
    covered: int
    early: int
    late: int
    rate: float
    mean_width_s: float


def measure_coverage(pairs: Iterable[tuple[ArrivalWindow, float]]) -> Coverage:
    """Measure how many actual arrivals fell inside their predicted windows.

    Parameters
    ----------
    pairs
        (window, actual arrival Unix time) pairs.

    Raises
    ------
    ValueError
        If ``pairs`` is empty.

    Examples
    --------
    >>> window = ArrivalWindow(100.0, 200.0, 0.8, 150.0)
    >>> measure_coverage([(window, 150.0), (window, 250.0)]).rate
    0.5
    """
    items = list(pairs)
    if not items:
        raise ValueError("pairs must contain at least one (window, arrival) pair")
    early = sum(1 for window, arrival in items if arrival < window.earliest_t)
    late = sum(1 for window, arrival in items if arrival > window.latest_t)
    covered = len(items) - early - late
    widths = [window.width_s for window, _ in items]
    return Coverage(
        len(items), covered, early, late, covered / len(items), float(np.mean(widths))
    )
