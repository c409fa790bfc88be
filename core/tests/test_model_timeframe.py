import itertools
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.errors import ModelError
from trader.model import DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS, Timeframe

ALL = [
    *(f"{n}m" for n in (1, 2, 3, 5, 10, 15, 30)),
    *(f"{n}h" for n in (1, 2, 3, 4, 6, 8, 12)),
    "1d",
    "3d",
    "14d",
    "1w",
    "2w",
    "1M",
    "3M",
    "6M",
    "12M",
]
timeframes = st.sampled_from(ALL).map(Timeframe.parse)
times = st.integers(min_value=0, max_value=4_102_444_800_000)  # 1970 .. 2100


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.mark.parametrize("text", ALL)
def test_parse_round_trips_canonical_spelling(text: str) -> None:
    assert str(Timeframe.parse(text)) == text


@pytest.mark.parametrize(("text", "canonical"), [("1D", "1d"), ("1W", "1w"), (" 4h ", "4h")])
def test_parse_accepts_exchange_spellings(text: str, canonical: str) -> None:
    assert str(Timeframe.parse(text)) == canonical


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected a count and a unit"),
        ("m", "expected a count and a unit"),
        ("0m", "expected a count and a unit"),
        ("5x", "expected a count and a unit"),
        ("1.5h", "expected a count and a unit"),
        ("7m", "must be one of 1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30"),
        ("60m", "did you mean 1h?"),
        ("24h", "did you mean 1d?"),
        ("5M", "month timeframe must be one of 1, 2, 3, 4, 6, 12"),
    ],
)
def test_parse_rejects_with_a_helpful_message(text: str, fragment: str) -> None:
    with pytest.raises(ModelError, match="invalid timeframe") as raised:
        Timeframe.parse(text)
    assert fragment in str(raised.value)


def test_fixed_durations() -> None:
    assert Timeframe.parse("15m").duration_ms == 15 * MINUTE_MS
    assert Timeframe.parse("4h").duration_ms == 4 * HOUR_MS
    assert Timeframe.parse("1d").duration_ms == DAY_MS
    assert Timeframe.parse("1w").duration_ms == WEEK_MS
    with pytest.raises(ModelError, match="no fixed length"):
        _ = Timeframe.parse("1M").duration_ms


def test_weeks_open_on_monday_and_months_on_the_first() -> None:
    wednesday_noon = utc(2024, 1, 3, 12)
    assert Timeframe.parse("1w").floor(wednesday_noon) == utc(2024, 1, 1)  # a Monday
    assert Timeframe.parse("1M").floor(utc(2024, 2, 29, 23, 59)) == utc(2024, 2, 1)
    assert Timeframe.parse("1M").next_open(utc(2024, 2, 10)) == utc(2024, 3, 1)
    assert Timeframe.parse("3M").floor(utc(2024, 5, 5)) == utc(2024, 4, 1)
    assert Timeframe.parse("12M").next_open(utc(2023, 12, 31)) == utc(2024, 1, 1)


@given(timeframes, times)
def test_floor_contains_time_and_next_open_follows(tf: Timeframe, time: int) -> None:
    start = tf.floor(time)
    end = tf.next_open(time)
    assert start <= time < end
    assert tf.is_aligned(start)
    assert tf.floor(end) == end
    assert tf.floor(end - 1) == start
    if not tf.is_calendar:
        assert end - start == tf.duration_ms


@given(timeframes, timeframes, times)
def test_divides_means_every_higher_boundary_is_a_lower_boundary(
    low: Timeframe, high: Timeframe, time: int
) -> None:
    if low.divides(high):
        assert low.is_aligned(high.floor(time))
        assert low.is_aligned(high.next_open(time))


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        ("1m", "1h", True),
        ("5m", "15m", True),
        ("15m", "5m", False),
        ("1h", "1d", True),
        ("1d", "1w", True),
        ("1d", "1M", True),
        ("1w", "1M", False),
        ("1w", "14d", False),
        ("1M", "3M", True),
        ("2M", "3M", False),
        ("3d", "1w", False),
        ("1h", "1w", True),
    ],
)
def test_divides(low: str, high: str, expected: bool) -> None:
    assert Timeframe.parse(low).divides(Timeframe.parse(high)) is expected


def test_candles_per_and_ordering() -> None:
    assert Timeframe.parse("1m").candles_per(Timeframe.parse("1h")) == 60
    with pytest.raises(ModelError, match="do not tile"):
        Timeframe.parse("1w").candles_per(Timeframe.parse("1M"))
    ordered = sorted(Timeframe.parse(t) for t in ("1M", "1h", "1m", "1w", "4h", "1d"))
    assert [str(t) for t in ordered] == ["1m", "1h", "4h", "1d", "1w", "1M"]


@given(timeframes, times, st.integers(min_value=0, max_value=50))
def test_open_times_are_consecutive_candles(tf: Timeframe, start: int, count: int) -> None:
    first = tf.floor(start)
    end = first
    for _ in range(count):
        end = tf.next_open(end)
    opens = tf.open_times(first, end)
    assert len(opens) == count
    for a, b in itertools.pairwise(opens):
        assert tf.next_open(a) == b
