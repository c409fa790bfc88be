"""Bench the Lua strategy runtime: decisions per second; print one JSON line per figure.

The strategy is an SMA(10)/SMA(30) crossover with ``ta.sma`` returning a target position on
every candle, over a random walk of one-minute candles. Figures (median of ``--repeats``):

* ``strategy.lua_batch_cps``: Lua 5.4, sandboxed, default limits on (10M-instruction budget,
  25 ms of CPU and 1 s of wall clock per candle, 64 MiB), through the batch path
  (``on_candles``: Lua entered once per 65,536 candles; staging the columns into Lua included);
* ``strategy.lua_batch_nolimits_cps``: the same with no limits (no hook), to show their cost;
* ``strategy.luajit_batch_cps``: the same strategy marked trusted (LuaJIT, JIT on, no limits);
* ``strategy.lua_per_candle_cps``: Lua 5.4 with limits, one ``on_candle`` call per candle (the
  live path; each call gets the last 100 candles as history).

These are decisions only: no fills, fees or equity (the backtest engine's ``backtest.lua_cps``
adds those on top).

    .venv/bin/python bench/bench_lua_runtime.py [--candles 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from trader.interfaces import Limits
from trader.model import MINUTE_MS, CandleArrays
from trader_strategy_lua import LuaStrategyRuntime

START = 1_577_836_800_000  # 2020-01-01 00:00 UTC

SMA_CROSS = """
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


def synthetic_candles(rows: int, seed: int = 7) -> CandleArrays:
    """A random walk of ``rows`` one-minute candles."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, rows)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, 0.0005, rows)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = rng.gamma(2.0, 5.0, rows)
    time_ = START + np.arange(rows, dtype=np.int64) * MINUTE_MS
    return CandleArrays(time_, open_, high, low, close, volume)


def emit(name: str, value: float, unit: str, better: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit, "better": better}))


def batch_cps(
    candles: CandleArrays, limits: Limits, trusted: bool, repeats: int, cpu: float | None = 0.025
) -> float:
    runtime = LuaStrategyRuntime(cpu_seconds_per_call=cpu)
    rates = []
    for _ in range(repeats):
        instance = runtime.load(SMA_CROSS, "sma_cross.lua", {}, limits, trusted=trusted)
        began = time.perf_counter()
        batch = instance.on_candles("bench", candles)
        rates.append(len(batch) / (time.perf_counter() - began))
        instance.close()
    return statistics.median(rates)


def per_candle_cps(candles: CandleArrays, limits: Limits, repeats: int) -> float:
    runtime = LuaStrategyRuntime()
    windows = [candles.slice(max(0, i - 99), i + 1) for i in range(len(candles))]
    rates = []
    for _ in range(repeats):
        instance = runtime.load(SMA_CROSS, "sma_cross.lua", {}, limits)
        began = time.perf_counter()
        for window in windows:
            instance.on_candle("bench", window)
        rates.append(len(windows) / (time.perf_counter() - began))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--per-candle", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    candles = synthetic_candles(args.candles)
    defaults = LuaStrategyRuntime().default_limits
    unlimited = Limits(None, None, None)
    emit(
        "strategy.lua_batch_cps",
        batch_cps(candles, defaults, False, args.repeats),
        "candles/s",
        "higher",
    )
    emit(
        "strategy.lua_batch_nolimits_cps",
        batch_cps(candles, unlimited, False, args.repeats, cpu=None),
        "candles/s",
        "higher",
    )
    emit(
        "strategy.luajit_batch_cps",
        batch_cps(candles, defaults, True, args.repeats),
        "candles/s",
        "higher",
    )
    small = candles.slice(0, args.per_candle)
    emit(
        "strategy.lua_per_candle_cps",
        per_candle_cps(small, defaults, args.repeats),
        "candles/s",
        "higher",
    )


if __name__ == "__main__":
    main()
