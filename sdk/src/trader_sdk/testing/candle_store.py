"""Conformance suite for candle stores: the :class:`~trader.interfaces.CandleStore` contract.

Every first-party candle store runs this suite, and a third-party store passes it before it
claims to be one. Subclass :class:`CandleStoreConformance` in a test module (the class name must
start with ``Test`` so pytest collects it) and override one fixture, ``candle_store_factory``::

    import pytest
    from trader.interfaces import PluginContext
    from trader_sdk.testing.candle_store import CandleStoreConformance

    from my_plugin.store import MyCandleOptions, MyCandleStore


    class TestMyCandleStore(CandleStoreConformance):
        @pytest.fixture
        def candle_store_factory(self, tmp_path):
            context = PluginContext(data_dir=tmp_path, config_dir=tmp_path)
            options = MyCandleOptions(path=str(tmp_path / "candles.db"))
            return lambda: MyCandleStore(options, context)

The fixture returns a zero-argument callable. Each call must build a **new, unopened** store
instance, and every instance of one test must point at the **same storage**, which starts empty
for each test: the suite closes a store and opens another to check that candles persist. For a
server-backed store, give each test its own database or schema (or empty it in the fixture).

The tests are plain synchronous functions; each runs its scenario with :func:`asyncio.run`, so
no async test plugin is needed. Their names carry stable ids (``test_cs01_...``): refer to them
in bug reports, and to skip one on purpose override it in your subclass with a
``pytest.mark.skip`` that says why.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader.candles import resample as reference_resample
from trader.candles import whole_candles
from trader.errors import ModelError, StorageError
from trader.interfaces import CandleStore, Gap, SeriesInfo, WriteResult
from trader.model import MINUTE_MS, Candle, CandleArrays, SeriesKey, Timeframe

__all__ = ["CandleStoreConformance", "CandleStoreFactory", "make_candles", "run_with_store"]

T = TypeVar("T")

#: Builds a new, unopened store over the test's storage.
CandleStoreFactory = Callable[[], CandleStore]

#: 2023-11-14 00:00 UTC: aligned to every timeframe up to a day.
T0 = 1_699_920_000_000
M = MINUTE_MS
H = 60 * MINUTE_MS
SERIES = SeriesKey("conformance", "BTC/USDT", Timeframe.parse("1m"))
OTHER_SYMBOL = SeriesKey("conformance", "ETH/USDT", Timeframe.parse("1m"))
OTHER_EXCHANGE = SeriesKey("conformance_b", "BTC/USDT", Timeframe.parse("1m"))
HOURLY = SeriesKey("conformance", "BTC/USDT", Timeframe.parse("1h"))

_unique_names = itertools.count()


def make_candles(
    times: Sequence[int], shift: float = 0.0, closed: bool | Sequence[bool] = True
) -> CandleArrays:
    """Build sound candles at ``times`` whose values depend on the time and on ``shift``.

    Two calls with the same times and shift give identical candles; another shift gives
    candles that differ in every price.
    """
    time = np.asarray(times, dtype=np.int64)
    base = 100.0 + ((time - T0) // M % 1000) * 0.01 + shift
    flags = (
        np.full(len(time), closed, dtype=np.bool_)
        if isinstance(closed, bool)
        else np.asarray(closed, dtype=np.bool_)
    )
    return CandleArrays(
        time,
        base,
        base + 1.0,
        base - 1.0,
        base + 0.5,
        1.0 + (time // M % 7).astype(np.float64),
        flags,
    )


def minutes(*offsets: int) -> list[int]:
    """Open times ``T0 + offset`` minutes."""
    return [T0 + offset * M for offset in offsets]


def run_with_store(
    factory: CandleStoreFactory, scenario: Callable[[CandleStore], Awaitable[T]]
) -> T:
    """Open a new store from ``factory``, run ``scenario`` on it, close it, return the result."""

    async def main() -> T:
        store = factory()
        await store.open()
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(main())


def assert_same_candles(actual: CandleArrays, expected: CandleArrays, what: str = "") -> None:
    """Fail with the first differing row unless ``actual`` equals ``expected`` column by column."""
    label = f"{what}: " if what else ""
    assert isinstance(actual, CandleArrays), f"{label}expected CandleArrays, got {actual!r}"
    assert len(actual) == len(expected), (
        f"{label}expected {len(expected)} candles, got {len(actual)}: "
        f"times {actual.time.tolist()[:20]} vs {expected.time.tolist()[:20]}"
    )
    for column in CandleArrays.COLUMNS:
        left, right = getattr(actual, column), getattr(expected, column)
        if not np.array_equal(left, right):
            row = int(np.flatnonzero(left != right)[0])
            raise AssertionError(
                f"{label}column {column} differs first at row {row}: "
                f"got {actual[row]}, expected {expected[row]}"
            )


class CandleStoreConformance:
    """The candle store contract as tests. Subclass it and override ``candle_store_factory``."""

    @pytest.fixture
    def candle_store_factory(self) -> CandleStoreFactory:
        """Override: return a callable building a new, unopened store over this test's storage."""
        pytest.fail(
            "override the candle_store_factory fixture in your CandleStoreConformance subclass: "
            "return a zero-argument callable that builds a new, unopened store each call"
        )

    # -- writes ---------------------------------------------------------------------------------

    def test_cs01_idempotent_rewrite(self, candle_store_factory: CandleStoreFactory) -> None:
        """Writing the same candles twice stores them once and reports the second as unchanged."""
        candles = make_candles(minutes(*range(100)))

        async def scenario(store: CandleStore) -> None:
            first = await store.write(SERIES, candles)
            assert first == WriteResult(inserted=100), f"first write reported {first}"
            second = await store.write(SERIES, candles)
            assert second == WriteResult(unchanged=100), f"rewrite reported {second}"
            assert_same_candles(await store.read(SERIES), candles, "after the rewrite")

        run_with_store(candle_store_factory, scenario)

    def test_cs02_revised_candle_updates(self, candle_store_factory: CandleStoreFactory) -> None:
        """A candle with new values for a stored open time replaces it and counts as updated."""
        original = make_candles(minutes(*range(10)), closed=[True] * 9 + [False])
        revised = make_candles(minutes(9), shift=0.25, closed=True)
        batch = _concat(
            revised,  # 9: a forming candle that closed with other prices: updated
            make_candles(minutes(3)),  # 3: identical: unchanged
            make_candles(minutes(10, 11)),  # new: inserted
        )

        async def scenario(store: CandleStore) -> None:
            await store.write(SERIES, original)
            result = await store.write(SERIES, batch)
            assert result == WriteResult(inserted=2, updated=1, unchanged=1), (
                f"a batch of one revised, one identical and two new candles reported {result}"
            )
            stored = await store.read(SERIES)
            expected = _concat(original.slice(0, 9), revised, make_candles(minutes(10, 11)))
            assert_same_candles(stored, expected, "after the revision")
            only_flag = make_candles(minutes(11), closed=False)
            flagged = await store.write(SERIES, only_flag)
            assert flagged == WriteResult(updated=1), (
                f"changing only the closed flag reported {flagged}, not one update"
            )
            latest = await store.latest(SERIES, 1)
            assert not bool(latest.closed[0]), "the closed flag was not updated"

        run_with_store(candle_store_factory, scenario)

    def test_cs03_last_row_wins_within_batch(
        self, candle_store_factory: CandleStoreFactory
    ) -> None:
        """Within one batch, the last row for an open time is the one stored."""
        batch = _concat(
            make_candles(minutes(1), shift=1.0),
            make_candles(minutes(2), shift=1.0),
            make_candles(minutes(1), shift=2.0),
            make_candles(minutes(1), shift=3.0),
        )

        async def scenario(store: CandleStore) -> None:
            result = await store.write(SERIES, batch)
            assert result.written == 2 and result.updated == 0, (
                f"a batch with 2 distinct open times reported {result}"
            )
            expected = _concat(make_candles(minutes(1), shift=3.0), make_candles(minutes(2), 1.0))
            assert_same_candles(await store.read(SERIES), expected, "repeated times in a batch")

        run_with_store(candle_store_factory, scenario)

    def test_cs04_unsorted_input(self, candle_store_factory: CandleStoreFactory) -> None:
        """Input need not be sorted; reads come back oldest first."""
        offsets = [7, 2, 9, 0, 5, 1, 8, 3, 6, 4]

        async def scenario(store: CandleStore) -> None:
            result = await store.write(SERIES, make_candles(minutes(*offsets)))
            assert result == WriteResult(inserted=10), f"unsorted write reported {result}"
            stored = await store.read(SERIES)
            assert_same_candles(stored, make_candles(minutes(*range(10))), "unsorted input")

        run_with_store(candle_store_factory, scenario)

    def test_cs05_half_open_read_ranges(self, candle_store_factory: CandleStoreFactory) -> None:
        """``read`` includes ``start``, excludes ``end``; ``None`` leaves a side unbounded."""
        candles = make_candles(minutes(*range(10)))

        async def scenario(store: CandleStore) -> None:
            await store.write(SERIES, candles)
            cases = [
                ((T0 + 2 * M, T0 + 5 * M), range(2, 5)),
                ((None, T0 + 3 * M), range(3)),
                ((T0 + 7 * M, None), range(7, 10)),
                ((None, None), range(10)),
                ((T0 + 2 * M + 1, T0 + 5 * M + 1), range(3, 6)),
                ((T0 - 60 * M, T0 + 60 * M), range(10)),
                ((T0 + 5 * M, T0 + 5 * M), range(0)),
                ((T0 + 6 * M, T0 + 2 * M), range(0)),
                ((T0 + 20 * M, None), range(0)),
            ]
            for (start, end), expected in cases:
                got = await store.read(SERIES, start, end)
                assert_same_candles(
                    got, make_candles(minutes(*expected)), f"read(start={start}, end={end})"
                )

        run_with_store(candle_store_factory, scenario)

    def test_cs06_latest_newest_last(self, candle_store_factory: CandleStoreFactory) -> None:
        """``latest(n)`` returns the newest ``n`` candles, oldest first, newest last."""
        candles = make_candles(minutes(*range(0, 100, 2)))

        async def scenario(store: CandleStore) -> None:
            await store.write(SERIES, candles)
            assert_same_candles(await store.latest(SERIES, 5), candles.slice(45, 50), "latest(5)")
            assert_same_candles(await store.latest(SERIES, 1), candles.slice(49, 50), "latest(1)")
            assert_same_candles(await store.latest(SERIES, 500), candles, "latest(500)")
            assert len(await store.latest(SERIES, 0)) == 0, "latest(0) returned candles"

        run_with_store(candle_store_factory, scenario)

    def test_cs07_series_are_isolated(self, candle_store_factory: CandleStoreFactory) -> None:
        """Series that differ in exchange, symbol or timeframe never see each other's candles."""
        minute_times = minutes(*range(5))
        hour_times = [T0 + i * H for i in range(3)]
        data = {
            SERIES: make_candles(minute_times),
            OTHER_SYMBOL: make_candles(minute_times, shift=10.0),
            OTHER_EXCHANGE: make_candles(minute_times, shift=20.0),
            HOURLY: make_candles(hour_times, shift=30.0),
        }

        async def scenario(store: CandleStore) -> None:
            for key, candles in data.items():
                result = await store.write(key, candles)
                assert result == WriteResult(inserted=len(candles)), f"{key}: wrote {result}"
            for key, candles in data.items():
                assert_same_candles(await store.read(key), candles, str(key))
            removed = await store.delete(OTHER_SYMBOL)
            assert removed == 5, f"deleting {OTHER_SYMBOL} removed {removed}, not 5"
            assert_same_candles(await store.read(SERIES), data[SERIES], "after another's delete")
            assert_same_candles(await store.read(HOURLY), data[HOURLY], "after another's delete")

        run_with_store(candle_store_factory, scenario)

    def test_cs08_list_series_extents(self, candle_store_factory: CandleStoreFactory) -> None:
        """``list_series`` lists every series with its count and extent, in key order."""

        async def scenario(store: CandleStore) -> None:
            await store.write(HOURLY, make_candles([T0 + H, T0 + 5 * H]))
            await store.write(OTHER_SYMBOL, make_candles(minutes(3, 4, 9)))
            await store.write(SERIES, make_candles(minutes(*range(10, 20))))
            await store.write(OTHER_EXCHANGE, make_candles(minutes(0)))
            listed = await store.list_series()
            expected = [
                SeriesInfo(SERIES, 10, T0 + 10 * M, T0 + 19 * M),
                SeriesInfo(HOURLY, 2, T0 + H, T0 + 5 * H),
                SeriesInfo(OTHER_SYMBOL, 3, T0 + 3 * M, T0 + 9 * M),
                SeriesInfo(OTHER_EXCHANGE, 1, T0, T0),
            ]
            assert listed == expected, f"list_series() returned {listed}"

        run_with_store(candle_store_factory, scenario)

    # -- gaps -----------------------------------------------------------------------------------

    def test_cs09_gaps_inside_extent(self, candle_store_factory: CandleStoreFactory) -> None:
        """Missing open times between stored candles come back as runs, in time order."""
        present = [i for i in range(20) if i not in (5, 6, 7, 12)]

        async def scenario(store: CandleStore) -> None:
            await store.write(SERIES, make_candles(minutes(*present)))
            gaps = await store.gaps(SERIES)
            assert gaps == [
                Gap(T0 + 5 * M, T0 + 8 * M, 3),
                Gap(T0 + 12 * M, T0 + 13 * M, 1),
            ], f"gaps() returned {gaps}"
            inside = await store.gaps(SERIES, T0 + 6 * M, T0 + 15 * M)
            assert inside == [
                Gap(T0 + 6 * M, T0 + 8 * M, 2),
                Gap(T0 + 12 * M, T0 + 13 * M, 1),
            ], f"gaps(6m, 15m) returned {inside}"
            none = await store.gaps(SERIES, T0 + 8 * M, T0 + 12 * M)
            assert none == [], f"gaps over a complete stretch returned {none}"

        run_with_store(candle_store_factory, scenario)

    def test_cs10_gap_bounds_outside_extent(self, candle_store_factory: CandleStoreFactory) -> None:
        """Bounds beyond the stored extent count the candles between them and it as missing."""

        async def scenario(store: CandleStore) -> None:
            await store.write(SERIES, make_candles(minutes(*range(10, 20))))
            assert await store.gaps(SERIES) == [], "a complete series reported gaps"
            both = await store.gaps(SERIES, T0, T0 + 25 * M)
            assert both == [
                Gap(T0, T0 + 10 * M, 10),
                Gap(T0 + 20 * M, T0 + 25 * M, 5),
            ], f"gaps(0m, 25m) returned {both}"
            before = await store.gaps(SERIES, T0 + 7 * M)
            assert before == [Gap(T0 + 7 * M, T0 + 10 * M, 3)], f"gaps(7m) returned {before}"
            after = await store.gaps(SERIES, None, T0 + 22 * M)
            assert after == [Gap(T0 + 20 * M, T0 + 22 * M, 2)], f"gaps(end=22m) returned {after}"
            empty = await store.gaps(OTHER_SYMBOL, T0, T0 + 4 * M)
            assert empty == [Gap(T0, T0 + 4 * M, 4)], (
                f"gaps between bounds of a series with no candles returned {empty}"
            )

        run_with_store(candle_store_factory, scenario)

    # -- deletes and persistence ----------------------------------------------------------------

    def test_cs11_delete_ranges(self, candle_store_factory: CandleStoreFactory) -> None:
        """``delete`` removes ``[start, end)`` and says how many candles it removed."""
        candles = make_candles(minutes(*range(20)))

        async def scenario(store: CandleStore) -> None:
            await store.write(SERIES, candles)
            assert await store.delete(SERIES, T0 + 5 * M, T0 + 10 * M) == 5
            assert await store.delete(SERIES, T0 + 5 * M, T0 + 10 * M) == 0
            assert await store.delete(SERIES, None, T0 + 2 * M) == 2
            assert await store.delete(SERIES, T0 + 18 * M, None) == 2
            remaining = [2, 3, 4, *range(10, 18)]
            assert_same_candles(await store.read(SERIES), make_candles(minutes(*remaining)))
            assert await store.delete(SERIES) == len(remaining)
            assert len(await store.read(SERIES)) == 0, "candles survived delete()"
            listed = await store.list_series()
            assert listed == [], f"an emptied series is still listed: {listed}"
            result = await store.write(SERIES, candles.slice(0, 3))
            assert result == WriteResult(inserted=3), f"rewriting deleted candles reported {result}"

        run_with_store(candle_store_factory, scenario)

    def test_cs12_persistence_across_reopen(self, candle_store_factory: CandleStoreFactory) -> None:
        """Candles written and closed are there for the next store opened on the same storage."""
        candles = make_candles(minutes(*range(50)), closed=[True] * 49 + [False])

        async def write(store: CandleStore) -> None:
            await store.write(SERIES, candles)
            await store.write(HOURLY, make_candles([T0, T0 + H]))

        async def check(store: CandleStore) -> None:
            assert_same_candles(await store.read(SERIES), candles, "after reopening")
            result = await store.write(SERIES, candles)
            assert result == WriteResult(unchanged=50), f"rewrite after reopen reported {result}"
            listed = [info.key for info in await store.list_series()]
            assert listed == [SERIES, HOURLY], f"after reopening, list_series() gave {listed}"

        run_with_store(candle_store_factory, write)
        run_with_store(candle_store_factory, check)

    def test_cs13_empty_reads(self, candle_store_factory: CandleStoreFactory) -> None:
        """A series never written reads as empty everywhere, and empty writes change nothing."""

        async def scenario(store: CandleStore) -> None:
            assert await store.list_series() == [], "fresh storage lists series"
            assert len(await store.read(SERIES)) == 0
            assert len(await store.read(SERIES, T0, T0 + H)) == 0
            assert len(await store.latest(SERIES, 10)) == 0
            assert await store.gaps(SERIES) == []
            assert await store.delete(SERIES) == 0
            assert await store.write(SERIES, CandleArrays.empty()) == WriteResult()
            assert await store.write(SERIES, []) == WriteResult()
            assert await store.list_series() == [], "an empty write created a listed series"

        run_with_store(candle_store_factory, scenario)

    def test_cs14_misaligned_open_time_rejected(
        self, candle_store_factory: CandleStoreFactory
    ) -> None:
        """A batch with an open time off the timeframe's grid fails and stores nothing of it."""
        good = make_candles(minutes(0, 1, 2))
        bad = _concat(make_candles(minutes(3, 4)), make_candles([T0 + 5 * M + 30_000]))
        hourly_bad = make_candles([T0, T0 + 30 * M])

        async def scenario(store: CandleStore) -> None:
            await store.write(SERIES, good)
            with pytest.raises((ModelError, StorageError)):
                await store.write(SERIES, bad)
            assert_same_candles(await store.read(SERIES), good, "after a rejected batch")
            with pytest.raises((ModelError, StorageError)):
                await store.write(HOURLY, hourly_bad)
            assert len(await store.read(HOURLY)) == 0, "part of a rejected batch was stored"

        run_with_store(candle_store_factory, scenario)

    # -- resampling -----------------------------------------------------------------------------

    def test_cs15_resample_matches_reference(
        self, candle_store_factory: CandleStoreFactory
    ) -> None:
        """A store that resamples itself builds what :func:`trader.candles.resample` builds from
        the candles of the bounds widened to whole target candles."""
        present = [i for i in range(0, 185) if i % 17 != 3 and not 61 <= i < 64]
        closed = [i != present[-1] for i in present]
        candles = make_candles(minutes(*present), closed=closed)
        bounds = [(None, None), (T0, T0 + 2 * H), (T0 + H, None), (T0 + 15 * M, T0 + 45 * M)]
        targets = ["5m", "15m", "1h", "1d"]

        async def scenario(store: CandleStore) -> int:
            await store.write(SERIES, candles)
            built = 0
            for target in targets:
                timeframe = Timeframe.parse(target)
                for start, end in bounds:
                    got = await store.resample(SERIES, timeframe, start, end)
                    if got is None:
                        continue
                    built += 1
                    source = await store.read(SERIES, *whole_candles(timeframe, start, end))
                    expected = reference_resample(source, SERIES.timeframe, timeframe)
                    _assert_resampled(got, expected, f"resample to {target} [{start}, {end})")
            await store.write(HOURLY, make_candles([T0, T0 + H]))
            try:
                odd = await store.resample(HOURLY, Timeframe.parse("30m"), None, None)
            except ModelError:
                odd = None
            assert odd is None, "resampling 1h candles to 30m must raise ModelError or give None"
            return built

        built = run_with_store(candle_store_factory, scenario)
        if not built:
            pytest.skip("the store has no server-side resampling (resample() returns None)")

    def test_cs22_resample_bounds_cover_whole_candles(
        self, candle_store_factory: CandleStoreFactory
    ) -> None:
        """Bounds inside a target candle widen to all of it: no partial candle marked closed."""
        candles = make_candles(minutes(*range(180)))
        hourly = reference_resample(candles, SERIES.timeframe, HOURLY.timeframe)
        cases = [
            ((T0 + 30 * M, None), hourly),
            ((T0 + 30 * M, T0 + 90 * M), hourly.slice(0, 2)),
            ((None, T0 + 61 * M), hourly.slice(0, 2)),
            ((T0 + 59 * M, T0 + 60 * M), hourly.slice(0, 1)),
            ((T0 + H, T0 + 2 * H), hourly.slice(1, 2)),
        ]

        async def scenario(store: CandleStore) -> int:
            await store.write(SERIES, candles)
            built = 0
            for (start, end), expected in cases:
                got = await store.resample(SERIES, HOURLY.timeframe, start, end)
                if got is None:
                    continue
                built += 1
                _assert_resampled(got, expected, f"resample to 1h [{start}, {end})")
            return built

        built = run_with_store(candle_store_factory, scenario)
        if not built:
            pytest.skip("the store has no server-side resampling (resample() returns None)")

    # -- input forms, volume, concurrency -------------------------------------------------------

    def test_cs16_candle_objects_accepted(self, candle_store_factory: CandleStoreFactory) -> None:
        """``write`` takes a sequence of :class:`Candle` as well as columns, with equal effect."""
        candles = make_candles(minutes(*range(6)), closed=[True] * 5 + [False])
        objects: list[Candle] = candles.to_candles()

        async def scenario(store: CandleStore) -> None:
            assert await store.write(SERIES, objects) == WriteResult(inserted=6)
            assert await store.write(SERIES, candles) == WriteResult(unchanged=6)
            assert_same_candles(await store.read(SERIES), candles, "written as Candle objects")

        run_with_store(candle_store_factory, scenario)

    def test_cs17_values_round_trip_exactly(self, candle_store_factory: CandleStoreFactory) -> None:
        """Prices and volumes read back bit for bit, so rewrites compare equal."""
        awkward = [0.1 + 0.2, 1e-8, 123456.78901234567, 3.0000000000000004, 65432.1]
        rows = [
            (T0 + i * M, value, value * 1.5, value / 3, value, value * 7e12)
            for i, value in enumerate(awkward)
        ]
        candles = CandleArrays.from_rows(rows)

        async def scenario(store: CandleStore) -> None:
            await store.write(SERIES, candles)
            assert_same_candles(await store.read(SERIES), candles, "awkward floats")
            assert await store.write(SERIES, candles) == WriteResult(unchanged=len(awkward))

        run_with_store(candle_store_factory, scenario)

    def test_cs18_large_batch_round_trip(self, candle_store_factory: CandleStoreFactory) -> None:
        """A batch of 30,000 candles is stored whole and reads back whole."""
        candles = make_candles(minutes(*range(30_000)))

        async def scenario(store: CandleStore) -> None:
            assert await store.write(SERIES, candles) == WriteResult(inserted=30_000)
            assert_same_candles(await store.read(SERIES), candles, "a large batch")
            middle = await store.read(SERIES, T0 + 10_000 * M, T0 + 20_000 * M)
            assert_same_candles(middle, candles.slice(10_000, 20_000), "a large range")
            assert await store.write(SERIES, candles) == WriteResult(unchanged=30_000)

        run_with_store(candle_store_factory, scenario)

    def test_cs19_concurrent_calls(self, candle_store_factory: CandleStoreFactory) -> None:
        """Concurrent calls on one store all take effect."""
        keys = [SeriesKey("conformance", f"C{i}/USDT", Timeframe.parse("1m")) for i in range(6)]

        async def scenario(store: CandleStore) -> None:
            writes = [
                store.write(key, make_candles(minutes(*range(i, 40, 3))))
                for i, key in enumerate(keys)
            ]
            writes += [store.write(SERIES, make_candles(minutes(i))) for i in range(20)]
            results = await asyncio.gather(*writes)
            inserted = sum(result.inserted for result in results)
            assert inserted == sum(len(range(i, 40, 3)) for i in range(6)) + 20, (
                f"concurrent writes inserted {inserted} candles in all"
            )
            reads = await asyncio.gather(*(store.read(key) for key in keys))
            for i, got in enumerate(reads):
                assert_same_candles(got, make_candles(minutes(*range(i, 40, 3))), str(keys[i]))
            assert_same_candles(await store.read(SERIES), make_candles(minutes(*range(20))))

        run_with_store(candle_store_factory, scenario)

    def test_cs20_open_and_close_are_idempotent(
        self, candle_store_factory: CandleStoreFactory
    ) -> None:
        """``open`` and ``close`` may be called twice; ``async with`` opens and closes."""

        async def scenario() -> None:
            store = candle_store_factory()
            await store.open()
            await store.open()
            await store.write(SERIES, make_candles(minutes(0)))
            await store.close()
            await store.close()
            async with candle_store_factory() as again:
                assert len(await again.read(SERIES)) == 1

        asyncio.run(scenario())

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            # A suite is subclassed once per store, so this test runs on several classes.
            HealthCheck.differing_executors,
        ],
    )
    @given(
        batches=st.lists(
            st.lists(
                st.tuples(st.integers(0, 40), st.integers(0, 3).map(float), st.booleans()),
                max_size=25,
            ),
            min_size=1,
            max_size=4,
        )
    )
    def test_cs21_writes_match_a_model(
        self,
        candle_store_factory: CandleStoreFactory,
        batches: list[list[tuple[int, float, bool]]],
    ) -> None:
        """Any sequence of batches leaves what a dictionary model predicts, with exact counts."""
        key = SeriesKey(f"model{next(_unique_names)}", "BTC/USDT", Timeframe.parse("1m"))

        async def scenario(store: CandleStore) -> None:
            model: dict[int, tuple[float, bool]] = {}
            for batch in batches:
                last = {offset: (shift, flag) for offset, shift, flag in batch}
                expected = WriteResult(
                    inserted=sum(1 for o in last if o not in model),
                    updated=sum(1 for o, v in last.items() if o in model and model[o] != v),
                    unchanged=sum(1 for o, v in last.items() if model.get(o) == v),
                )
                rows = [make_candles(minutes(o), shift, flag) for o, shift, flag in batch]
                result = await store.write(key, _concat(*rows) if rows else CandleArrays.empty())
                assert result == expected, f"batch {batch} after {model}: reported {result}"
                model.update(last)
            offsets = sorted(model)
            parts = [make_candles(minutes(o), *model[o]) for o in offsets]
            wanted = _concat(*parts) if parts else CandleArrays.empty()
            assert_same_candles(await store.read(key), wanted, "after the batches")

        run_with_store(candle_store_factory, scenario)


def _concat(*parts: CandleArrays) -> CandleArrays:
    return CandleArrays(
        *(np.concatenate([getattr(p, column) for p in parts]) for column in CandleArrays.COLUMNS)
    )


def _assert_resampled(got: CandleArrays, expected: CandleArrays, what: str) -> None:
    """Compare exactly, except volumes: sums may be added in another order."""
    assert isinstance(got, CandleArrays), f"{what}: expected CandleArrays, got {got!r}"
    assert len(got) == len(expected), (
        f"{what}: expected {len(expected)} candles, got {len(got)}: "
        f"{got.time.tolist()} vs {expected.time.tolist()}"
    )
    for column in ("time", "open", "high", "low", "close", "closed"):
        left, right = getattr(got, column), getattr(expected, column)
        if not np.array_equal(left, right):
            row = int(np.flatnonzero(left != right)[0])
            raise AssertionError(
                f"{what}: column {column} differs first at row {row}: "
                f"got {got[row]}, expected {expected[row]}"
            )
    assert np.allclose(got.volume, expected.volume, rtol=1e-9, atol=0.0), (
        f"{what}: volumes differ: {got.volume.tolist()} vs {expected.volume.tolist()}"
    )
