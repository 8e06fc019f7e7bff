"""Tests for the arrival-window error model, smoother and coverage."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eta.windows import (
    DEFAULT_FLOOR_S,
    ArrivalWindow,
    ErrorModel,
    WindowSmoother,
    measure_coverage,
)

SEED = 4242

trips = st.lists(
    st.tuples(st.floats(0, 7200), st.floats(0, 10_000)),
    max_size=60,
)


def calibrated(observations: list[tuple[float, float]]) -> ErrorModel:
    model = ErrorModel()
    for predicted_s, actual_s in observations:
        model.observe(predicted_s, actual_s)
    return model


def synthetic_trips(
    rng: np.random.Generator, n: int, bias: float, sigma: float
) -> list[tuple[float, float]]:
    """Trips whose actual time is the prediction times a log-normal factor."""
    predicted = rng.uniform(60, 3000, n)
    actual = (predicted + 30) * np.exp(rng.normal(math.log(bias), sigma, n)) - 30
    return list(zip(predicted.tolist(), np.maximum(actual, 0).tolist(), strict=True))


@settings(max_examples=80, deadline=None)
@given(trips, st.floats(0, 20_000), st.floats(0.05, 0.99))
def test_window_contains_prediction(
    observations: list[tuple[float, float]], eta_s: float, confidence: float
) -> None:
    window = calibrated(observations).window(1_000_000.0, eta_s, confidence)
    assert window.earliest_t <= window.arrival_t <= window.latest_t
    assert window.arrival_t == 1_000_000.0 + eta_s


@settings(max_examples=80, deadline=None)
@given(trips, st.floats(0, 20_000), st.floats(0, 20_000))
def test_window_narrows_as_eta_shrinks(
    observations: list[tuple[float, float]], eta_a: float, eta_b: float
) -> None:
    model = calibrated(observations)
    shorter, longer = sorted((eta_a, eta_b))
    low_short, high_short = model.interval_s(shorter)
    low_long, high_long = model.interval_s(longer)
    assert shorter - low_short <= longer - low_long + 1e-9
    assert high_short - shorter <= high_long - longer + 1e-9


def test_window_never_before_now() -> None:
    window = ErrorModel().window(500.0, 10.0)
    assert window.earliest_t == 500.0


def test_window_floor_near_arrival() -> None:
    low_s, high_s = ErrorModel().interval_s(120.0)
    assert 120.0 - low_s >= DEFAULT_FLOOR_S
    assert high_s - 120.0 >= DEFAULT_FLOOR_S


def test_prior_window_ten_minutes() -> None:
    low_s, high_s = ErrorModel().interval_s(600.0)
    assert low_s == pytest.approx(457.5, abs=1.0)
    assert high_s == pytest.approx(784.2, abs=1.0)


def test_higher_confidence_wider() -> None:
    model = ErrorModel()
    low_80, high_80 = model.interval_s(900.0, 0.8)
    low_95, high_95 = model.interval_s(900.0, 0.95)
    assert low_95 < low_80
    assert high_95 > high_80


def test_calibrated_coverage_near_confidence() -> None:
    print(f"seed={SEED}")
    rng = np.random.default_rng(SEED)
    model = calibrated(synthetic_trips(rng, 3000, bias=1.25, sigma=0.3))
    pairs = [
        (model.window(0.0, p), a)
        for p, a in synthetic_trips(rng, 3000, bias=1.25, sigma=0.3)
    ]
    coverage = measure_coverage(pairs)
    assert 0.74 <= coverage.rate <= 0.88


def test_prior_coverage_poor_on_biased_trips() -> None:
    # the same trips without calibration: the prior misses most late arrivals
    rng = np.random.default_rng(SEED)
    pairs = [
        (ErrorModel().window(0.0, p), a)
        for p, a in synthetic_trips(rng, 3000, bias=1.25, sigma=0.3)
    ]
    coverage = measure_coverage(pairs)
    assert coverage.rate < 0.6
    assert coverage.late > coverage.early


def test_calibration_shifts_window_late() -> None:
    rng = np.random.default_rng(SEED)
    model = calibrated(synthetic_trips(rng, 2000, bias=1.4, sigma=0.1))
    _, high_s = model.interval_s(1500.0)
    _, prior_high_s = ErrorModel().interval_s(1500.0)
    assert high_s > prior_high_s


def test_model_roundtrip_through_json() -> None:
    rng = np.random.default_rng(SEED)
    model = calibrated(synthetic_trips(rng, 500, bias=1.1, sigma=0.2))
    restored = ErrorModel.from_dict(json.loads(json.dumps(model.to_dict())))
    for eta_s in (0.0, 90.0, 600.0, 5000.0):
        assert restored.interval_s(eta_s) == model.interval_s(eta_s)
    assert restored.observations.tolist() == model.observations.tolist()


def test_model_rejects_other_version() -> None:
    state = ErrorModel().to_dict()
    state["version"] = 99
    with pytest.raises(ValueError, match="version must be 1, got 99"):
        ErrorModel.from_dict(state)


@pytest.mark.parametrize(
    ("predicted", "actual", "message"),
    [
        (
            -1.0,
            10.0,
            "predicted_remaining_s must be a non-negative finite number, got -1.0",
        ),
        (
            10.0,
            float("nan"),
            "actual_remaining_s must be a non-negative finite number, got nan",
        ),
    ],
)
def test_observe_rejects_bad_times(
    predicted: float, actual: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ErrorModel().observe(predicted, actual)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_window_rejects_bad_confidence(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence must be strictly between 0 and 1"):
        ErrorModel().window(0.0, 100.0, confidence)


def test_window_rejects_negative_eta() -> None:
    with pytest.raises(
        ValueError, match=r"eta_s must be a non-negative finite number, got -5\.0"
    ):
        ErrorModel().window(0.0, -5.0)


def test_halflife_forgets_old_trips() -> None:
    model = ErrorModel(halflife_trips=50.0)
    for _ in range(300):
        model.observe(900.0, 2000.0)
    for _ in range(300):
        model.observe(900.0, 900.0)
    _, high_s = model.interval_s(900.0)
    assert high_s < 1400.0


def drive(
    smoother: WindowSmoother, model: ErrorModel, etas: list[float], step_s: float
) -> list[ArrivalWindow]:
    return [smoother.update(i * step_s, eta, model) for i, eta in enumerate(etas)]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 5000), min_size=1, max_size=40), st.floats(1, 60))
def test_smoother_contains_prediction(etas: list[float], step_s: float) -> None:
    for i, window in enumerate(drive(WindowSmoother(), ErrorModel(), etas, step_s)):
        assert window.earliest_t <= window.arrival_t <= window.latest_t
        assert window.earliest_t >= i * step_s


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 5000), min_size=2, max_size=40), st.floats(1, 60))
def test_smoother_limits_moves_inside_window(etas: list[float], step_s: float) -> None:
    windows = drive(WindowSmoother(max_rate=1.0), ErrorModel(), etas, step_s)
    for i, (old, new) in enumerate(itertools.pairwise(windows)):
        if old.contains(new.arrival_t) and new.earliest_t > (i + 1) * step_s:
            assert abs(new.earliest_t - old.earliest_t) <= step_s + 1e-6
            assert abs(new.latest_t - old.latest_t) <= step_s + 1e-6


def test_smoother_steady_eta_keeps_window_steady() -> None:
    # a contractor on schedule: the ETA falls by 10 s every 10 s
    windows = drive(
        WindowSmoother(), ErrorModel(), [1200.0 - 10.0 * i for i in range(60)], 10.0
    )
    latest = [w.latest_t for w in windows]
    assert max(np.diff(latest)) <= 10.0
    assert windows[-1].width_s < windows[0].width_s


def test_smoother_jumps_when_prediction_leaves_window() -> None:
    smoother = WindowSmoother()
    model = ErrorModel()
    first = smoother.update(0.0, 600.0, model)
    jammed = smoother.update(10.0, 1500.0, model)
    assert not first.contains(jammed.arrival_t)
    assert jammed == model.window(10.0, 1500.0)


def test_smoother_ignores_late_ping() -> None:
    smoother = WindowSmoother()
    model = ErrorModel()
    smoother.update(0.0, 600.0, model)
    current = smoother.update(10.0, 590.0, model)
    assert smoother.update(5.0, 2000.0, model) == current


def test_smoother_roundtrip_through_json() -> None:
    smoother = WindowSmoother()
    model = ErrorModel()
    smoother.update(0.0, 600.0, model)
    restored = WindowSmoother.from_dict(json.loads(json.dumps(smoother.to_dict())))
    assert restored.update(10.0, 595.0, model) == smoother.update(10.0, 595.0, model)


def test_coverage_counts() -> None:
    window = ArrivalWindow(100.0, 200.0, 0.8, 150.0)
    coverage = measure_coverage(
        [(window, 50.0), (window, 100.0), (window, 200.0), (window, 250.0)]
    )
    assert (coverage.count, coverage.covered, coverage.early, coverage.late) == (
        4,
        2,
        1,
        1,
    )
    assert coverage.rate == 0.5
    assert coverage.mean_width_s == 100.0


def test_coverage_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one"):
        measure_coverage([])
