"""Candle utilities: slots, checks, normalising, gaps and resampling, against brute force."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.candles import (
    concat,
    find_gaps,
    find_problem,
    merge,
    misaligned,
    normalize,
    resample,
    slot_index,
    slot_open,
    whole_candles,
)
from trader.errors import ModelError
from trader.interfaces import Gap
from trader.model import DAY_MS, HOUR_MS, MAX_TIME_MS, MINUTE_MS, CandleArrays, Timeframe

TIMEFRAMES = [
    Timeframe.parse(text)
    for text in ["1m", "3m", "5m", "15m", "1h", "4h", "1d", "3d", "1w", "2w", "1M", "3M"]
]
#: 2020-01-01 .. 2040-01-01: times the property tests draw from.
EARLY, LATE = 1_577_836_800_000, 2_208_988_800_000


def candles_at(times: list[int], seed: int = 0, closed: list[bool] | None = None) -> CandleArrays:
    """Sound candles at ``times`` whose prices and volumes vary with position and ``seed``."""
    rng = np.random.default_rng(seed)
    size = len(times)
    open_ = 100 + rng.random(size) * 10
    close = 100 + rng.random(size) * 10
    high = np.maximum(open_, close) + rng.random(size)
    low = np.minimum(open_, close) - rng.random(size)
    volume = rng.random(size) * 5
    flags = np.ones(size, np.bool_) if closed is None else np.asarray(closed, np.bool_)
    return CandleArrays(np.asarray(times, np.int64), open_, high, low, close, volume, flags)


@st.composite
def source_candles(draw: st.DrawFn, timeframe: Timeframe, max_slots: int = 400) -> CandleArrays:
    """Candles of ``timeframe`` on a random subset of consecutive slots."""
    first = draw(st.integers(int(slot_index(EARLY, timeframe)), int(slot_index(LATE, timeframe))))
    offsets = draw(st.sets(st.integers(0, max_slots), max_size=120))
    slots = np.array(sorted(first + o for o in offsets), np.int64)
    closed = draw(st.lists(st.booleans(), min_size=len(slots), max_size=len(slots)))
    seed = draw(st.integers(0, 2**16))
    return candles_at(slot_open(slots, timeframe).tolist(), seed, closed)


# -- slots ------------------------------------------------------------------------------------


@given(time=st.integers(0, LATE), timeframe=st.sampled_from(TIMEFRAMES))
def test_slots_agree_with_timeframe_floor_and_next_open(time: int, timeframe: Timeframe) -> None:
    slot = int(slot_index(time, timeframe))
    assert int(slot_open(slot, timeframe)) == timeframe.floor(time)
    assert int(slot_open(slot + 1, timeframe)) == timeframe.next_open(time)
    assert bool(misaligned(np.array([time]), timeframe)[0]) == (not timeframe.is_aligned(time))


def test_weekly_slots_open_on_monday() -> None:
    monday = 1_700_438_400_000  # 2023-11-20, a Monday
    week = Timeframe.parse("1w")
    assert int(slot_open(slot_index(monday + 3 * DAY_MS, week), week)) == monday


# -- checks, normalising, merging ---------------------------------------------------------------


def test_find_problem_names_the_first_bad_row() -> None:
    candles = candles_at([0, 60_000, 120_000, 180_000])
    assert find_problem(candles, Timeframe.parse("1m")) is None
    candles.time[2] = 150_000
    candles.volume[3] = -1.0
    row, message = find_problem(candles, Timeframe.parse("1m")) or (None, "")
    assert row == 2
    assert "not aligned to 1m" in message and "opens at 120000" in message
    assert find_problem(candles) == (3, "volume -1.0 is not a finite amount >= 0 (time 180000)")
    candles.open[0] = float("nan")
    assert find_problem(candles) is not None and find_problem(candles)[0] == 0  # type: ignore[index]


@pytest.mark.parametrize("name", ["1m", "1w", "1M"])
def test_find_problem_rejects_times_after_the_year_9999(name: str) -> None:
    timeframe = Timeframe.parse(name)
    last_open = timeframe.floor(MAX_TIME_MS)
    assert find_problem(candles_at([last_open]), timeframe) is None
    for late in (MAX_TIME_MS + 1, 9_007_199_254_740_960_000, 2**63 - 1):
        found = find_problem(candles_at([1_704_067_200_000, late]), timeframe)  # 2024-01-01
        assert found is not None and found[0] == 1 and "after the year 9999" in found[1]


def test_whole_candles_widens_bounds_to_the_candles_they_cut() -> None:
    hour = Timeframe.parse("1h")
    t0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
    assert whole_candles(hour, t0 + 30 * MINUTE_MS, t0 + 90 * MINUTE_MS) == (t0, t0 + 2 * HOUR_MS)
    assert whole_candles(hour, t0, t0 + HOUR_MS) == (t0, t0 + HOUR_MS)  # aligned: unchanged
    assert whole_candles(hour, None, t0 + 1) == (None, t0 + HOUR_MS)
    assert whole_candles(hour, t0 + 1, None) == (t0, None)
    month = Timeframe.parse("1M")
    feb = 1_706_745_600_000  # 2024-02-01
    assert whole_candles(month, t0 + DAY_MS, feb + 1) == (t0, 1_709_251_200_000)  # .. 03-01
    low, high = whole_candles(hour, -(10**30), 10**30)  # any integer is accepted
    assert low == 0 and high is not None and high >= MAX_TIME_MS


@given(
    name=st.sampled_from(["1m", "5m", "1h", "4h", "1d", "1w", "1M", "3M"]),
    start=st.integers(0, 2_000_000_000_000),
    length=st.integers(1, 400 * DAY_MS),
)
def test_whole_candles_covers_the_range_with_aligned_bounds(
    name: str, start: int, length: int
) -> None:
    timeframe = Timeframe.parse(name)
    low, high = whole_candles(timeframe, start, start + length)
    assert low == timeframe.floor(start)
    assert high == timeframe.next_open(start + length - 1)


@given(rows=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 1000)), min_size=1, max_size=60))
def test_normalize_sorts_and_keeps_the_last_row_for_each_time(
    rows: list[tuple[int, int]],
) -> None:
    times = [slot * MINUTE_MS for slot, _ in rows]
    candles = candles_at(times)
    candles.volume[:] = [marker for _, marker in rows]
    result = normalize(candles)
    last = {slot * MINUTE_MS: marker for slot, marker in rows}
    assert result.time.tolist() == sorted(last)
    assert result.volume.tolist() == [float(last[t]) for t in sorted(last)]


def test_normalize_returns_sorted_input_unchanged() -> None:
    candles = candles_at([0, 60_000])
    assert normalize(candles) is candles


def test_merge_lets_the_update_win_and_concat_keeps_order() -> None:
    base = candles_at([0, 60_000, 120_000], seed=1)
    update = candles_at([120_000, 60_000 * 5], seed=2)
    merged = merge(base, update)
    assert merged.time.tolist() == [0, 60_000, 120_000, 300_000]
    assert merged[2] == update[0] and merged[0] == base[0]
    assert concat([update, base]).time.tolist() == [120_000, 300_000, 0, 60_000, 120_000]
    assert len(concat([])) == 0


# -- gaps ---------------------------------------------------------------------------------------


def brute_force_gaps(
    present: set[int], timeframe: Timeframe, start: int | None, end: int | None
) -> list[Gap]:
    if start is None:
        if not present:
            return []
        start = min(present)
    if end is None:
        if not present:
            return []
        end = max(present) + 1
    gaps: list[Gap] = []
    run: list[int] = []
    for time in [*timeframe.open_times(start, end), None]:
        if time is not None and time not in present:
            run.append(time)
            continue
        if run:
            gaps.append(Gap(run[0], timeframe.next_open(run[-1]), len(run)))
            run = []
    return gaps


@given(
    timeframe=st.sampled_from(TIMEFRAMES),
    data=st.data(),
)
def test_find_gaps_matches_brute_force(timeframe: Timeframe, data: st.DataObject) -> None:
    candles = data.draw(source_candles(timeframe, max_slots=60))
    times = candles.time.tolist()
    around = [*times, EARLY, LATE] if times else [EARLY, LATE]
    low, high = min(around), max(around)
    span = timeframe.nominal_ms * 70
    bound = st.none() | st.integers(max(low - span, 0), min(high, low + span) + span)
    start, end = data.draw(bound), data.draw(bound)
    if start is not None and end is not None and end - start > span * 3:
        end = start + span * 3
    shuffled = data.draw(st.permutations(times + times[:3]))
    got = find_gaps(np.array(shuffled, np.int64), timeframe, start, end)
    assert got == brute_force_gaps(set(times), timeframe, start, end)
    for gap in got:
        assert gap.missing == len(timeframe.open_times(gap.start, gap.end))


def test_find_gaps_examples() -> None:
    hour = Timeframe.parse("1h")
    times = np.array([0, HOUR_MS, 4 * HOUR_MS], np.int64)
    assert find_gaps(times, hour) == [Gap(2 * HOUR_MS, 4 * HOUR_MS, 2)]
    assert find_gaps(times, hour, None, 6 * HOUR_MS + 1) == [
        Gap(2 * HOUR_MS, 4 * HOUR_MS, 2),
        Gap(5 * HOUR_MS, 7 * HOUR_MS, 2),
    ]
    assert find_gaps(times, hour, HOUR_MS + 1, 3 * HOUR_MS) == [Gap(2 * HOUR_MS, 3 * HOUR_MS, 1)]
    assert find_gaps(np.array([], np.int64), hour, 0, 2 * HOUR_MS) == [Gap(0, 2 * HOUR_MS, 2)]
    assert find_gaps(np.array([], np.int64), hour, 0) == []
    assert find_gaps(times, hour, 5 * HOUR_MS, 5 * HOUR_MS) == []
    with pytest.raises(ModelError, match="not aligned to 1h"):
        find_gaps(np.array([1], np.int64), hour)


# -- resampling ---------------------------------------------------------------------------------

PAIRS = [
    ("1m", "5m", "1h"),
    ("1m", "15m", "4h"),
    ("5m", "1h", "1d"),
    ("1h", "1d", "1M"),
    ("1h", "1d", "1w"),
    ("1d", "1M", "3M"),
    ("1h", "4h", "1d"),
]


def brute_force_resample(
    candles: CandleArrays, source: Timeframe, target: Timeframe
) -> list[tuple[int, float, float, float, float, bool]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for row, time in enumerate(candles.time.tolist()):
        groups[target.floor(time)].append(row)
    built = []
    last_time = int(candles.time[-1]) if len(candles) else -1
    for opens in sorted(groups):
        rows = groups[opens]
        end = target.next_open(opens)
        last_slot = source.floor(end - 1)
        closed = last_time >= end or (
            int(candles.time[rows[-1]]) == last_slot and bool(candles.closed[rows[-1]])
        )
        built.append(
            (
                opens,
                float(candles.open[rows[0]]),
                max(float(candles.high[r]) for r in rows),
                min(float(candles.low[r]) for r in rows),
                float(candles.close[rows[-1]]),
                closed,
            )
        )
    return built


@given(names=st.sampled_from(PAIRS), data=st.data())
def test_resample_matches_brute_force(names: tuple[str, str, str], data: st.DataObject) -> None:
    source, _, target = (Timeframe.parse(n) for n in names)
    candles = data.draw(source_candles(source))
    result = resample(candles, source, target)
    expected = brute_force_resample(candles, source, target)
    got = [(c.time, c.open, c.high, c.low, c.close, c.closed) for c in result.to_candles()]
    assert got == expected
    assert np.isclose(result.volume.sum(), candles.volume.sum(), rtol=1e-12)


@given(names=st.sampled_from(PAIRS), data=st.data())
def test_resampling_in_two_steps_equals_one_step(
    names: tuple[str, str, str], data: st.DataObject
) -> None:
    source, middle, target = (Timeframe.parse(n) for n in names)
    candles = data.draw(source_candles(source))
    direct = resample(candles, source, target)
    stepped = resample(resample(candles, source, middle), middle, target)
    for column in ("time", "open", "high", "low", "close", "closed"):
        assert np.array_equal(getattr(stepped, column), getattr(direct, column)), column
    assert np.allclose(stepped.volume, direct.volume, rtol=1e-12)


@given(data=st.data())
def test_resample_accepts_unsorted_input_with_repeats(data: st.DataObject) -> None:
    minute, hour = Timeframe.parse("1m"), Timeframe.parse("1h")
    candles = data.draw(source_candles(minute))
    order = data.draw(st.permutations(range(len(candles))))
    shuffled = CandleArrays(*(getattr(candles, c)[list(order)] for c in CandleArrays.COLUMNS))
    doubled = concat([candles_at(candles.time.tolist(), seed=99), shuffled])
    assert resample(doubled, minute, hour) == resample(candles, minute, hour)


def test_resample_closed_rule_examples() -> None:
    minute, hour = Timeframe.parse("1m"), Timeframe.parse("1h")
    whole = candles_at([i * MINUTE_MS for i in range(60)], closed=[True] * 59 + [False])
    assert resample(whole, minute, hour).closed.tolist() == [False]
    whole.closed[-1] = True
    assert resample(whole, minute, hour).closed.tolist() == [True]
    partial = candles_at([i * MINUTE_MS for i in range(30)])
    assert resample(partial, minute, hour).closed.tolist() == [False]
    later = concat([partial, candles_at([HOUR_MS + 5 * MINUTE_MS])])
    assert resample(later, minute, hour).closed.tolist() == [True, False]
    at_the_end = concat([partial, candles_at([HOUR_MS], closed=[False])])
    assert resample(at_the_end, minute, hour).closed.tolist() == [True, False]


def test_resample_refuses_targets_the_source_does_not_divide() -> None:
    with pytest.raises(ModelError, match="cannot resample 1w candles to 1M"):
        resample(candles_at([]), Timeframe.parse("1w"), Timeframe.parse("1M"))
    with pytest.raises(ModelError, match="not aligned to the source timeframe 1h"):
        resample(candles_at([60_000]), Timeframe.parse("1h"), Timeframe.parse("1d"))
    assert len(resample(candles_at([]), Timeframe.parse("1m"), Timeframe.parse("1h"))) == 0
