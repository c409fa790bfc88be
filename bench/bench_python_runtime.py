"""Bench the Python strategy runtime: decisions per second; print one JSON line per figure.

The strategy is the README's SMA(10)/SMA(30) crossover with ``ta.sma`` returning a target
position on every candle, over a random walk of one-minute candles (the Lua bench's data).
Figures (median of ``--repeats``):

* ``strategy.python_batch_cps``: in this process, through the batch path (``on_candles``: one
  Python loop over the candles, views of the history per candle);
* ``strategy.python_per_candle_cps``: in this process, one ``on_candle`` call per candle (each
  call gets the last 100 candles as history);
* ``strategy.python_worker_per_candle_cps``: in a worker process under the default limits, one
  ``on_candle`` call per candle (the live path; the request and reply cross a socket).

These are decisions only: no fills, fees or equity (the backtest engine's
``backtest.python_cps`` adds those on top).

    .venv/bin/python bench/bench_python_runtime.py [--candles 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from trader.model import MINUTE_MS, CandleArrays
from trader_strategy_python import PythonStrategyRuntime

START = 1_577_836_800_000  # 2020-01-01 00:00 UTC

SMA_CROSS = """
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


def synthetic_candles(rows: int, seed: int = 7) -> CandleArrays:
    """A random walk of ``rows`` one-minute candles (the same as the Lua bench's)."""
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


def batch_cps(candles: CandleArrays, repeats: int) -> float:
    runtime = PythonStrategyRuntime()
    rates = []
    for _ in range(repeats):
        instance = runtime.load_in_process(SMA_CROSS, "sma_cross.py", {})
        began = time.perf_counter()
        batch = instance.on_candles("bench", candles)
        rates.append(len(batch) / (time.perf_counter() - began))
    return statistics.median(rates)


def per_candle_cps(candles: CandleArrays, repeats: int, worker: bool) -> float:
    runtime = PythonStrategyRuntime()
    windows = [candles.slice(max(0, i - 99), i + 1) for i in range(len(candles))]
    rates = []
    for _ in range(repeats):
        instance = (
            runtime.start_worker(SMA_CROSS, "sma_cross.py", {})
            if worker
            else runtime.load_in_process(SMA_CROSS, "sma_cross.py", {})
        )
        began = time.perf_counter()
        for window in windows:
            instance.on_candle("bench", window)
        rates.append(len(windows) / (time.perf_counter() - began))
        instance.close()
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--per-candle", type=int, default=50_000)
    parser.add_argument("--worker-calls", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    candles = synthetic_candles(args.candles)
    emit("strategy.python_batch_cps", batch_cps(candles, args.repeats), "candles/s", "higher")
    emit(
        "strategy.python_per_candle_cps",
        per_candle_cps(candles.slice(0, args.per_candle), args.repeats, worker=False),
        "candles/s",
        "higher",
    )
    emit(
        "strategy.python_worker_per_candle_cps",
        per_candle_cps(candles.slice(0, args.worker_calls), args.repeats, worker=True),
        "candles/s",
        "higher",
    )


if __name__ == "__main__":
    main()
