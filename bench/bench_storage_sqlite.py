"""Benchmark the SQLite candle store through its public API, on a real file.

Prints one JSON line per figure: ``{"name", "value", "unit", "better"}``. Each figure is the
median of ``--repeats`` runs. Targets (issue 2): ``storage.sqlite_ingest_cps`` >= 500,000 and
``storage.sqlite_read_1m_s`` <= 1.0 (with ``--rows`` other than a million, the read time is
scaled to a million candles).

    .venv/bin/python bench/bench_storage_sqlite.py [--rows 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import numpy as np

from trader.interfaces import PluginContext
from trader.model import MINUTE_MS, CandleArrays, SeriesKey, Timeframe
from trader.stores.sqlite_candles import SqliteCandleOptions, SqliteCandleStore

START = 1_577_836_800_000  # 2020-01-01 00:00 UTC


def synthetic_candles(rows: int, seed: int = 7) -> CandleArrays:
    """A random walk of ``rows`` one-minute candles, every one sound."""
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


async def timed(call: Awaitable[object]) -> float:
    """Seconds ``call`` (a coroutine not yet started) takes to finish."""
    began = time.perf_counter()
    await call
    return time.perf_counter() - began


async def main(rows: int, repeats: int) -> None:
    candles = synthetic_candles(rows)
    minute = Timeframe.parse("1m")
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as folder:
        context = PluginContext(data_dir=Path(folder), config_dir=Path(folder))
        options = SqliteCandleOptions(path="candles.sqlite")
        ingest, rewrite, read, resample, gaps, batched, latest = ([] for _ in range(7))
        for run in range(repeats):
            series = SeriesKey("bench", f"R{run}/USDT", minute)
            async with SqliteCandleStore(options, context) as store:
                ingest.append(rows / await timed(store.write(series, candles)))
                rewrite.append(rows / await timed(store.write(series, candles)))
            async with SqliteCandleStore(options, context) as store:  # a fresh connection
                read.append(await timed(store.read(series)))
                resample.append(await timed(store.resample(series, Timeframe.parse("1h"))))
                gaps.append(await timed(store.gaps(series)))
                began = time.perf_counter()
                for _ in range(200):
                    await store.latest(series, 500)
                latest.append((time.perf_counter() - began) / 200 * 1000)
                small = SeriesKey("bench", f"B{run}/USDT", minute)
                chunk = 1000
                parts = [candles.slice(i, i + chunk) for i in range(0, min(rows, 200_000), chunk)]
                began = time.perf_counter()
                for part in parts:
                    await store.write(small, part)
                batched.append(sum(len(p) for p in parts) / (time.perf_counter() - began))
    emit("storage.sqlite_ingest_cps", statistics.median(ingest), "candles/s", "higher")
    emit("storage.sqlite_read_1m_s", statistics.median(read) * 1e6 / rows, "s", "lower")
    emit("storage.sqlite_rewrite_unchanged_cps", statistics.median(rewrite), "candles/s", "higher")
    emit("storage.sqlite_ingest_1k_batches_cps", statistics.median(batched), "candles/s", "higher")
    emit("storage.sqlite_resample_1m_to_1h_s", statistics.median(resample), "s", "lower")
    emit("storage.sqlite_gaps_1m_s", statistics.median(gaps), "s", "lower")
    emit("storage.sqlite_latest_500_ms", statistics.median(latest), "ms", "lower")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="candles per bulk write")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rows, arguments.repeats))
