"""Synthetic candles: a seeded random walk for demos, tests and benchmarks.

Not market data: a geometric Brownian motion with intrabar highs and lows and a volume
process, reproducible from its seed.
"""

from __future__ import annotations

import numpy as np

from trader.model import CandleArrays, Timeframe


def generate_candles(
    timeframe: Timeframe,
    start_ms: int,
    count: int,
    *,
    seed: int = 0,
    start_price: float = 30_000.0,
    volatility: float = 0.001,
) -> CandleArrays:
    """Return ``count`` closed candles of ``timeframe`` from the candle containing ``start_ms``.

    ``volatility`` is the standard deviation of the log return per candle. Prices are rounded
    to 2 decimals and volumes to 6, so they survive a CSV round trip unchanged.
    """
    rng = np.random.default_rng(seed)
    if timeframe.is_calendar:
        times = [timeframe.floor(start_ms)]
        for _ in range(count - 1):
            times.append(timeframe.next_open(times[-1]))
        time = np.asarray(times[:count], dtype=np.int64)
    else:
        first = timeframe.floor(start_ms)
        time = first + np.arange(count, dtype=np.int64) * timeframe.duration_ms
    returns = rng.normal(0.0, volatility, count)
    close = np.round(start_price * np.exp(np.cumsum(returns)), 2)
    open_ = np.round(np.concatenate(([start_price], close[:-1])), 2)
    spread = np.abs(rng.normal(0.0, volatility, count)) * close
    high = np.round(np.maximum(open_, close) + spread, 2)
    low = np.round(np.maximum(np.minimum(open_, close) - spread, 0.01), 2)
    volume = np.round(rng.gamma(2.0, 5.0, count), 6)
    return CandleArrays(time, open_, high, low, close, volume)
