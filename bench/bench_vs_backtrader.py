"""Bench the backtest engine against backtrader on the same candles and strategy.

Both sides run an SMA(10)/SMA(30) crossover on the same seeded ``trader.synthetic`` one-minute
candles: buy a fixed 1,000 USD of the base currency (from 1,000,000 USD, amount rounded down to
8 decimals, sized at the decision candle's close) when the fast average crosses above the slow
one, sell everything when it crosses below; market orders fill at the next candle's open with a
0.1 % fee on the traded value, and the equity is sampled at every candle.

* Ours: :func:`trader.backtest.run_backtest` with the Python strategy runtime, exactly as
  ``bench_backtest.py`` runs it (its strategy, market and settings are imported from there),
  on ``--candles`` (1,000,000). Timed: the backtest and its metrics.
* backtrader: ``bt.indicators.SMA`` and ``bt.indicators.CrossOver``, ``buy(size=...)`` and
  ``close()``, ``setcommission(commission=0.001)``, cheat-on-open off (orders decided on a
  candle fill at the next open), an analyzer that records ``broker.getvalue()`` on every
  candle, on ``--backtrader-candles`` (100,000; backtrader's side is slow). The candles come
  from an in-memory ``DataBase`` subclass (no pandas). Cerebro runs with its defaults
  (``preload``, ``runonce``) except ``stdstats=False``: the plotting observers are not needed,
  and leaving them out makes backtrader faster, so the ratio is not flattered. Timed: building
  Cerebro, loading the feed, the run.

The runs alternate (ours, backtrader, ours, ...) so load from other jobs hits both sides alike;
each figure is the median of ``--repeats`` runs. Figures, one JSON line each:

* ``backtest.backtrader_cps``: backtrader's candles per second (with its fill count and final
  equity, and ours on the same candles, as a check that both ran the same strategy);
* ``backtest.vs_backtrader``: our candles per second over backtrader's.

The script stops with an error when the two sides' fill counts on backtrader's candles differ
by more than a small margin (see :func:`similar_fills`). Without backtrader installed
(``requirements/bench.txt``) or the strategy_python plugin, the figures are skipped with a note.

    .venv/bin/python bench/bench_vs_backtrader.py [--candles 1000000]
        [--backtrader-candles 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import Any

from bench_backtest import MARKET, SETTINGS, emit, load, note, one_run

from trader.backtest import run_backtest
from trader.model import CandleArrays, Timeframe
from trader.synthetic import generate_candles

START = 1_577_836_800_000  # 2020-01-01 00:00 UTC
SEED = 7
FAST, SLOW = 10, 30
# backtrader's date numbers are days since 0001-01-01 (day 1) as floats; 1970-01-01 is this one.
BT_EPOCH_DAY = 719_163.0
MS_PER_DAY = 86_400_000


def candles(rows: int) -> CandleArrays:
    """``rows`` seeded one-minute candles from 2020-01-01 (the same for both sides)."""
    return generate_candles(Timeframe.parse("1m"), START, rows, seed=SEED)


def feed_rows(data: CandleArrays) -> list[tuple[float, float, float, float, float, float]]:
    """The candles as backtrader rows: (date number, open, high, low, close, volume).

    Made before the timing starts, as ours gets its ``CandleArrays`` ready-made.
    """
    days = (data.time / MS_PER_DAY + BT_EPOCH_DAY).tolist()
    return list(
        zip(
            days,
            data.open.tolist(),
            data.high.tolist(),
            data.low.tolist(),
            data.close.tolist(),
            data.volume.tolist(),
            strict=True,
        )
    )


def similar_fills(ours: int, theirs: int) -> bool:
    """Whether two fill counts are close enough to be the same strategy.

    Exact equality is not promised, only likely. Our strategy targets "long while fast > slow,
    flat otherwise", so it can buy on the first candle both averages exist without a cross,
    and it sells when the averages are exactly equal; backtrader's ``CrossOver`` needs a cross
    from a non-zero difference of the other sign. Our SMA (``trader.ta``, running sum) and
    backtrader's (sum of the window) can round differently in the last bit, which flips a
    crossover only when the averages tie to the last bit. Ours sizes in decimals, backtrader in
    floats. Each difference moves a handful of fills at most, so allow 2 fills plus 1 %.
    """
    return abs(ours - theirs) <= 2 + 0.01 * max(ours, theirs)


def backtrader_run(
    rows: list[tuple[float, float, float, float, float, float]],
) -> tuple[float, int, float, int]:
    """One backtrader run: (seconds, fills, final equity, equity samples)."""
    import backtrader as bt  # only the bench environment has it

    class ArrayFeed(bt.feeds.DataBase):
        """Candles from a list of rows in memory, one bar per ``_load``."""

        def __init__(self, rows: list[tuple[float, float, float, float, float, float]]) -> None:
            self.rows = rows

        def start(self) -> None:
            super().start()
            self.next_row = iter(self.rows)

        def _load(self) -> bool:
            row = next(self.next_row, None)
            if row is None:
                return False
            lines = self.lines
            (
                lines.datetime[0],
                lines.open[0],
                lines.high[0],
                lines.low[0],
                lines.close[0],
                lines.volume[0],
            ) = row
            lines.openinterest[0] = 0.0
            return True

    class EquityCurve(bt.Analyzer):
        """The broker's value (cash + position at the close) for every candle."""

        def start(self) -> None:
            self.values: list[float] = []

        def next(self) -> None:  # also called for the candles before the averages exist
            self.values.append(self.strategy.broker.getvalue())

    class SmaCross(bt.Strategy):
        """Buy a fixed quote amount on a cross up, close the position on a cross down."""

        params = (("fast", FAST), ("slow", SLOW), ("quote", 1_000.0))

        def __init__(self) -> None:
            fast = bt.indicators.SMA(self.data.close, period=self.p.fast)
            slow = bt.indicators.SMA(self.data.close, period=self.p.slow)
            self.cross = bt.indicators.CrossOver(fast, slow)
            self.fills = 0

        def notify_order(self, order: Any) -> None:
            if order.status == order.Completed:
                self.fills += 1

        def next(self) -> None:
            if not self.position:
                if self.cross[0] > 0:
                    size = math.floor(self.p.quote / self.data.close[0] * 1e8) / 1e8
                    self.buy(size=size)
            elif self.cross[0] < 0:
                self.close()

    began = time.perf_counter()
    cerebro = bt.Cerebro(stdstats=False, cheat_on_open=False)
    cerebro.adddata(ArrayFeed(rows))
    cerebro.addstrategy(SmaCross)
    cerebro.addanalyzer(EquityCurve, _name="equity")
    cerebro.broker.setcash(float(SETTINGS.initial_cash))
    cerebro.broker.setcommission(commission=float(SETTINGS.fills.taker_fee))
    strategy = cerebro.run()[0]
    elapsed = time.perf_counter() - began
    values = strategy.analyzers.equity.values
    return elapsed, strategy.fills, cerebro.broker.getvalue(), len(values)


def main(argv: list[str] | None = None) -> int:
    """Run both sides, print the figures; 1 when the fill counts disagree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--backtrader-candles", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        import backtrader  # noqa: F401
    except ImportError:
        note("backtest.vs_backtrader skipped: backtrader is not installed (requirements/bench.txt)")
        return 0
    if load("python") is None:
        note("backtest.vs_backtrader skipped: the strategy_python plugin is not installed")
        return 0

    ours_data = candles(args.candles)
    bt_data = candles(args.backtrader_candles)
    rows = feed_rows(bt_data)

    # The check first: both sides on backtrader's candles.
    check = run_backtest(load("python"), bt_data, MARKET, SETTINGS)
    ours_fills = len(check.fill_rows.rows)
    _, bt_fills, bt_equity, samples = backtrader_run(rows)
    note(
        f"on {len(bt_data):,} candles: ours {ours_fills:,} fills, final equity "
        f"{float(check.final_equity):,.2f}; backtrader {bt_fills:,} fills, final equity "
        f"{bt_equity:,.2f}, {samples:,} equity samples"
    )
    if samples != len(bt_data):
        note(f"backtrader recorded {samples:,} equity samples for {len(bt_data):,} candles")
        return 1
    if not similar_fills(ours_fills, bt_fills):
        note("the fill counts differ too much: the two sides did not run the same strategy")
        return 1

    ours_seconds: list[float] = []
    bt_seconds: list[float] = []
    for _ in range(args.repeats):
        ours_seconds.append(one_run(ours_data, "python")[0])
        bt_seconds.append(backtrader_run(rows)[0])
    ours_cps = len(ours_data) / statistics.median(ours_seconds)
    bt_cps = len(bt_data) / statistics.median(bt_seconds)
    emit(
        "backtest.backtrader_cps",
        bt_cps,
        "candles/s",
        "higher",
        candles=len(bt_data),
        fills=bt_fills,
        final_equity=round(bt_equity, 2),
        engine_fills=ours_fills,
        engine_final_equity=round(float(check.final_equity), 2),
    )
    emit(
        "backtest.vs_backtrader",
        ours_cps / bt_cps,
        "x",
        "higher",
        engine_cps=round(ours_cps),
        engine_candles=len(ours_data),
        backtrader_cps=round(bt_cps),
        backtrader_candles=len(bt_data),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
