"""Bench the backtest engine: candles per second for a whole backtest; one JSON line a figure.

An SMA(10)/SMA(30) crossover (the strategy plugins' bench strategies: target 1 above, -1
below, i.e. long or flat on spot) over 1,000,000 one-minute candles (a seeded random walk),
through :func:`trader.backtest.run_backtest`: decisions, sizing, fills with a 0.1 % taker
fee, decimal accounting and an equity sample per candle, then the metrics (all timed). The
engine keeps fills as decimal tuples and makes ``Fill`` objects only when asked;
``backtest.python_fill_objects_cps`` times a Python run that also builds them. Sizing is a
fixed 1,000 USD a position from 1,000,000 USD, so the account trades on every crossover all
the way through (with all-in sizing, fees would shrink the account below the minimum amount
part way).

Figures (median of ``--repeats``):

* ``backtest.python_cps``: the Python strategy, in process (its batch path);
* ``backtest.lua_cps``: the Lua strategy on Lua 5.4, sandboxed, default limits on;
* ``backtest.luajit_cps``: the Lua strategy marked trusted (LuaJIT);
* ``backtest.python_fill_objects_cps``: the Python run plus building every ``Fill`` object;
* ``backtest.peak_rss_mb``: peak resident memory of a child process that runs one Python-
  strategy backtest of the same million candles (``resource.getrusage`` ``ru_maxrss``).

A figure whose plugin is not installed is skipped with a note on stderr.

    .venv/bin/python bench/bench_backtest.py [--candles 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import numpy as np

from trader.backtest import BacktestSettings, Sizing, SizingMode, run_backtest
from trader.model import MINUTE_MS, CandleArrays, Market
from trader.model.market import Precision
from trader.paper import FillSettings

START = 1_577_836_800_000  # 2020-01-01 00:00 UTC

LUA_SMA_CROSS = """
params = {fast = {default = 10, min = 2, max = 100}, slow = {default = 30, min = 5, max = 400}}

function init(ctx)
  ctx.state.fast = ta.sma(ctx.params.fast)
  ctx.state.slow = ta.sma(ctx.params.slow)
end

function on_candle(ctx, candles)
  local close = candles.close[candles.n]
  local fast = ctx.state.fast:update(close)
  local slow = ctx.state.slow:update(close)
  if not slow then return nil end
  if fast > slow then return 1 end
  return -1
end
"""

PYTHON_SMA_CROSS = """
params = {
    "fast": {"default": 10, "min": 2, "max": 100},
    "slow": {"default": 30, "min": 5, "max": 400},
}


def init(ctx):
    ctx.state["fast"] = ta.sma(ctx.params.fast)
    ctx.state["slow"] = ta.sma(ctx.params.slow)


def on_candle(ctx, candles):
    close = candles.close[-1]
    fast = ctx.state["fast"].update(close)
    slow = ctx.state["slow"].update(close)
    if slow is None:
        return None
    if fast > slow:
        return 1
    return -1
"""

MARKET = Market("BTC/USD", Precision("decimals", Decimal(2)), Precision("decimals", Decimal(8)))
SETTINGS = BacktestSettings(
    initial_cash=Decimal(1_000_000),
    fills=FillSettings(maker_fee=Decimal("0.001"), taker_fee=Decimal("0.001")),
    sizing=Sizing(SizingMode.FIXED_QUOTE, Decimal(1_000)),
    assignment="bench",
)


def synthetic_candles(rows: int, seed: int = 7) -> CandleArrays:
    """A random walk of ``rows`` one-minute candles, prices rounded to cents."""
    rng = np.random.default_rng(seed)
    close = np.round(100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, rows))), 2)
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, 0.0005, rows)) * close
    high = np.round(np.maximum(open_, close) + spread, 2)
    low = np.round(np.minimum(open_, close) - spread, 2)
    volume = np.round(rng.gamma(2.0, 5.0, rows), 6)
    time_ = START + np.arange(rows, dtype=np.int64) * MINUTE_MS
    return CandleArrays(time_, open_, high, low, close, volume)


def emit(name: str, value: float, unit: str, better: str, **extra: Any) -> None:
    print(
        json.dumps(
            {"name": name, "value": round(value, 4), "unit": unit, "better": better, **extra}
        ),
        flush=True,
    )


def note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def load(language: str, trusted: bool = False) -> Any:
    """A fresh SMA-crossover instance of ``language``, or ``None`` without its plugin."""
    if language == "python":
        try:
            from trader_strategy_python import PythonStrategyRuntime
        except ImportError:
            return None
        return PythonStrategyRuntime().load_in_process(PYTHON_SMA_CROSS, "sma_cross.py", {})
    try:
        from trader_strategy_lua import LuaStrategyRuntime
    except ImportError:
        return None
    runtime = LuaStrategyRuntime()
    return runtime.load(LUA_SMA_CROSS, "sma_cross.lua", {}, runtime.default_limits, trusted=trusted)


def one_run(
    candles: CandleArrays, language: str, trusted: bool = False, objects: bool = False
) -> tuple[float, int]:
    """Seconds for one whole backtest (metrics computed; ``Fill`` objects built when
    ``objects``), and its number of fills."""
    instance = load(language, trusted)
    if instance is None:
        raise ImportError(language)
    began = time.perf_counter()
    result = run_backtest(instance, candles, MARKET, SETTINGS)
    _ = result.metrics
    if objects:
        _ = result.fills
    elapsed = time.perf_counter() - began
    fills = len(result.fill_rows.rows)
    close = getattr(instance, "close", None)
    if callable(close):
        close()
    return elapsed, fills


def cps(
    candles: CandleArrays,
    language: str,
    repeats: int,
    trusted: bool = False,
    objects: bool = False,
) -> None:
    name = {"python": "python", "lua": "luajit" if trusted else "lua"}[language]
    if objects:
        name += "_fill_objects"
    try:
        runs = [one_run(candles, language, trusted, objects) for _ in range(repeats)]
    except ImportError:
        note(f"backtest.{name}_cps skipped: the strategy_{language} plugin is not installed")
        return
    rate = len(candles) / statistics.median(seconds for seconds, _ in runs)
    engine = ""
    if language == "lua":
        instance = load("lua", trusted)
        engine = str(getattr(instance, "engine", ""))
        instance.close()
    emit(
        f"backtest.{name}_cps", rate, "candles/s", "higher", fills=runs[0][1], engine=engine or None
    )


def child(rows: int) -> None:
    """Run one Python-strategy backtest and print the peak RSS in MiB."""
    candles = synthetic_candles(rows)
    elapsed, fills = one_run(candles, "python")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mb": peak_kib / 1024, "fills": fills, "seconds": elapsed}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.candles)
        return
    candles = synthetic_candles(args.candles)
    cps(candles, "python", args.repeats)
    cps(candles, "lua", args.repeats)
    cps(candles, "lua", args.repeats, trusted=True)
    cps(candles, "python", args.repeats, objects=True)
    if load("python") is None:
        note("backtest.peak_rss_mb skipped: the strategy_python plugin is not installed")
        return
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--candles", str(args.candles)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    emit("backtest.peak_rss_mb", json.loads(out.splitlines()[-1])["peak_rss_mb"], "MiB", "lower")


if __name__ == "__main__":
    main()
