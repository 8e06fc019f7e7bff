"""Ping validation and frame parsing, without Redis."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.pings import (
    MAX_BATCH_PINGS,
    FrameError,
    Ping,
    TimeRules,
    parse_frame,
    validate_ping,
)

NOW = 1_793_606_400.0
RULES = TimeRules(now=NOW, max_future_s=60.0, history_s=7 * 86400.0)
GOOD = {"t": NOW - 10, "lat": 60.1699, "lon": 24.9384, "acc": 8.0}


def rejection(ping: object) -> str:
    parsed = parse_frame(orjson.dumps({"pings": [ping]}), RULES)
    assert not parsed.pings
    return parsed.rejected[0].error


BAD_PINGS = [
    ({**GOOD, "lat": 91.2}, "lat must be within -90..90, got 91.2"),
    ({**GOOD, "lat": -90.5}, "lat must be within -90..90, got -90.5"),
    ({**GOOD, "lon": 180.5}, "lon must be within -180..180, got 180.5"),
    ({**GOOD, "lon": -270.60823}, "lon must be within -180..180, got -270.60823"),
    ({**GOOD, "lat": "60.1"}, "lat must be a finite number, got '60.1' (a string)"),
    ({**GOOD, "lat": ""}, "lat must be a finite number, got '' (a string)"),
    ({**GOOD, "lat": "NaN"}, "lat must be a finite number, got 'NaN' (a string)"),
    ({**GOOD, "lat": None}, "lat must be a finite number, got null"),
    ({**GOOD, "lat": True}, "lat must be a finite number, got true (a boolean)"),
    ({**GOOD, "lat": [60]}, "lat must be a finite number, got a JSON array"),
    ({"t": NOW, "lon": 24.9}, "lat is missing"),
    ({"t": NOW, "lat": 60.1}, "lon is missing"),
    ({"lat": 60.1, "lon": 24.9}, "t is missing"),
    ({**GOOD, "t": "1793606400"}, "t must be a finite number, got '1793606400' (a string)"),
    ({**GOOD, "t": 1_793_606_380_000}, "t must be Unix seconds, got 1793606380000, which looks like milliseconds"),
    ({**GOOD, "t": 1e300}, "t must be Unix seconds, got 1e+300, which is out of range"),
    ({**GOOD, "t": 1_793_606.39}, "t must be after 2000-01-01 (946684800), got 1793606.39; send Unix seconds"),
    ({**GOOD, "t": NOW + 3600}, "t must be at most 60 s ahead of the server clock, got 1793610000.0 (3600 s ahead)"),
    ({**GOOD, "t": NOW - 8 * 86400}, "t must be within the 7-day history window, got 1792915200.0 (8.0 days old)"),
    ({**GOOD, "acc": -1}, "acc must be >= 0 m, got -1.0"),
    ({**GOOD, "spd": -0.1}, "spd must be >= 0 m/s, got -0.1"),
    ({**GOOD, "hdg": 361}, "hdg must be within 0..360 degrees, got 361.0"),
    ({**GOOD, "bat": 1.5}, "bat must be within 0..1, got 1.5"),
    ({**GOOD, "lat": 0, "lon": 0}, "lat and lon must not both be 0, which receivers send for no fix"),
    ([1, 2], "ping must be a JSON object, got a JSON array"),
    ("ping", "ping must be a JSON object, got 'ping' (a string)"),
]


@pytest.mark.parametrize(("ping", "message"), BAD_PINGS)
def test_validate_bad_ping_message(ping: object, message: str) -> None:
    assert rejection(ping) == message


def test_parse_huge_integer_rejected() -> None:
    frame = f'{{"t": {NOW}, "lat": 1{"0" * 400}, "lon": 24.9}}'
    parsed = parse_frame(frame, RULES)
    assert parsed.rejected[0].error == "lat must be a finite number, got an integer of 401 digits"


@pytest.mark.parametrize(
    ("field", "number", "described"),
    [
        ("t", "9" * 5000, "an integer of 5000 digits"),
        ("lat", "-1e400", "-1e400, which is beyond the range of a double"),
        ("lon", "2." + "5" * 100 + "e999", "2." + "5" * 38 + "..., which is beyond the range of a double"),
    ],
)
def test_parse_out_of_range_number_named(field: str, number: str, described: str) -> None:
    raw = {"t": str(NOW), "lat": "60.1", "lon": "24.9", field: number}
    frame = "{" + ", ".join(f'"{name}": {value}' for name, value in raw.items()) + "}"
    parsed = parse_frame(frame, RULES)
    assert parsed.rejected[0].error == f"{field} must be a finite number, got {described}"


def test_parse_long_string_echo_truncated() -> None:
    parsed = parse_frame(orjson.dumps({**GOOD, "lat": "x" * 500_000}), RULES)
    assert len(parsed.rejected[0].error) < 200


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_parse_nonfinite_token_rejects_ping(token: str) -> None:
    frame = f'{{"t": {NOW}, "lat": {token}, "lon": 24.9}}'
    parsed = parse_frame(frame, RULES)
    assert parsed.pings == []
    assert parsed.rejected[0].error.startswith("lat must be a finite number, got ")


@pytest.mark.parametrize("digits", [500, 5000])
def test_parse_huge_number_rejects_its_ping(digits: int) -> None:
    frame = f'{{"pings": [{{"t": {NOW}, "lat": {"9" * digits}, "lon": 24.9}}, {orjson.dumps(GOOD).decode()}]}}'
    parsed = parse_frame(frame, RULES)
    assert [index for index, _ in parsed.pings] == [1]
    assert parsed.rejected[0].error.startswith("lat must be")


def test_parse_batch_keeps_valid_beside_invalid() -> None:
    frame = {"pings": [GOOD, {**GOOD, "lat": 91.2}, {**GOOD, "t": NOW - 5}]}
    parsed = parse_frame(orjson.dumps(frame), RULES)
    assert [index for index, _ in parsed.pings] == [0, 2]
    assert [r.index for r in parsed.rejected] == [1]


def test_validate_reports_every_bad_field() -> None:
    message = rejection({"t": "soon", "lat": 91.2, "lon": 24.9, "acc": -1, "bat": 2})
    assert "t must be a finite number, got 'soon' (a string)" in message
    assert "lat must be within -90..90, got 91.2" in message
    assert "acc must be >= 0 m, got -1.0" in message
    assert "bat must be within 0..1, got 2.0" in message


# One bad value per field; any set of them must name each of those fields.
BAD_VALUES = {"t": "soon", "lat": 91.2, "lon": -200.0, "acc": -1, "spd": -2, "hdg": 400, "bat": 2}


@given(st.sets(st.sampled_from(sorted(BAD_VALUES)), min_size=1))
def test_validate_names_each_bad_field(bad: set[str]) -> None:
    message = rejection({**GOOD, **{name: BAD_VALUES[name] for name in bad}})
    named = {part.split(" ", 1)[0] for part in message.split("; ")}
    assert named == bad


def test_parse_batch_with_top_level_ping_warns() -> None:
    frame = {"pings": [GOOD], "t": NOW - 3, "lat": 60.17, "lon": 24.94}
    parsed = parse_frame(orjson.dumps(frame), RULES)
    assert len(parsed.pings) == 1
    assert parsed.warnings == [
        "top-level t, lat, lon ignored: a frame with pings carries every ping "
        "inside pings; move that ping into the array"
    ]


def test_parse_bad_pings_names_unstored_top_level() -> None:
    frame = {"pings": None, "t": NOW - 3, "lat": 60.17, "lon": 24.94}
    with pytest.raises(FrameError) as raised:
        parse_frame(orjson.dumps(frame), RULES)
    assert str(raised.value) == "pings must be a JSON array, got null; top-level t, lat, lon not stored either"


def test_parse_fractional_seconds_kept() -> None:
    parsed = parse_frame(orjson.dumps({**GOOD, "t": NOW - 4.75}), RULES)
    assert parsed.pings[0][1].t == NOW - 4.75


def test_parse_twenty_second_skew_accepted() -> None:
    parsed = parse_frame(orjson.dumps({**GOOD, "t": NOW + 20}), RULES)
    assert len(parsed.pings) == 1


def test_validate_heading_dropped_when_standing() -> None:
    ping = validate_ping({**GOOD, "spd": 0.0, "hdg": 187.0}, RULES)
    assert ping.hdg is None


def test_validate_heading_kept_when_moving() -> None:
    ping = validate_ping({**GOOD, "spd": 4.2, "hdg": 91.0}, RULES)
    assert ping.hdg == 91.0


def test_validate_null_optional_is_absent() -> None:
    ping = validate_ping({**GOOD, "acc": None, "hdg": None}, RULES)
    assert ping.acc is None


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("nope", "invalid JSON"),
        ("[1, 2]", 'frame must be a ping object or {"pings": [...]}, got a JSON array'),
        ('{"x": 1}', 'frame must be a ping object or {"pings": [...]}, got a JSON object'),
        ('{"pings": []}', "pings must contain at least one ping, got an empty array"),
        ('{"pings": 3}', "pings must be a JSON array, got 3"),
    ],
)
def test_parse_bad_frame_error(frame: str, message: str) -> None:
    with pytest.raises(FrameError) as raised:
        parse_frame(frame, RULES)
    assert str(raised.value).startswith(message)


def test_parse_oversized_batch_error() -> None:
    frame = orjson.dumps({"pings": [GOOD] * (MAX_BATCH_PINGS + 1)})
    with pytest.raises(FrameError, match="at most 10000 pings, got 10001"):
        parse_frame(frame, RULES)


def test_ping_json_round_trip() -> None:
    ping = Ping(NOW, 60.1, 24.9, acc=5.0, spd=1.5)
    assert Ping.from_json(ping.to_json()) == ping


any_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["t", "lat", "lon", "acc", "spd", "hdg", "x"]), children, max_size=6),
    max_leaves=12,
)


@given(any_json)
def test_parse_any_json_never_crashes(body: object) -> None:
    text = json.dumps({"pings": [body]} if not isinstance(body, dict) else body)
    try:
        parsed = parse_frame(text, RULES)
    except FrameError:
        return
    for _, ping in parsed.pings:
        assert math.isfinite(ping.t)
        assert -90 <= ping.lat <= 90
        assert -180 <= ping.lon <= 180
