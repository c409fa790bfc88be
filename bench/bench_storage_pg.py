"""Benchmark the ``timescale`` candle store on plain PostgreSQL, through its public API.

Starts its own throwaway PostgreSQL cluster (``trader_sdk.testing.postgres``; fsync off, as in
FACTS.md) and prints one JSON line per figure: ``{"name", "value", "unit", "better"}``, each the
median of ``--repeats`` runs. Targets (issue 5):

* ``storage.pg_ingest_cps`` >= 400,000: one write of 1M one-minute candles into an empty span
  (binary COPY, straight into the partitioned table);
* ``storage.pg_read_1m_s`` <= 1.0: reading them back into ``CandleArrays``;
* ``storage.pg_resample_1m_s`` <= 1.0: server-side 1m -> 1h over them (``date_bin``);
* ``storage.pg_upsert_p99_ms`` <= 5: single live candles, one ``write`` call each.

Also reported: ``storage.pg_ingest_staged_cps`` (the same first write forced through the staging
table and merge), ``storage.pg_rewrite_unchanged_cps`` (re-ingesting the same million: the merge
path, every candle found unchanged) and ``storage.pg_upsert_p50_ms``.

    .venv/bin/python bench/bench_storage_pg.py [--rows 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import numpy as np

from trader.interfaces import PluginContext
from trader.model import MINUTE_MS, CandleArrays, SeriesKey, Timeframe
from trader_sdk.testing.postgres import PostgresCluster, PostgresUnavailable
from trader_storage_timescale.candles import TimescaleCandleOptions, TimescaleCandleStore

START = 1_577_836_800_000  # 2020-01-01 00:00 UTC
#: Server settings for the bench: durability off as in the tests, and room to ingest a million
#: rows without a forced checkpoint in the middle.
SETTINGS = {"shared_buffers": "512MB", "max_wal_size": "8GB", "checkpoint_timeout": "30min"}


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


async def main(cluster: PostgresCluster, rows: int, repeats: int) -> None:
    candles = synthetic_candles(rows)
    minute = Timeframe.parse("1m")
    hour = Timeframe.parse("1h")
    database = cluster.create_database("bench")
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as folder:
        context = PluginContext(data_dir=Path(folder), config_dir=Path(folder))
        options = TimescaleCandleOptions(dsn=cluster.url(database))
        staged = TimescaleCandleOptions(dsn=cluster.url(database), direct_copy=False)
        ingest, staged_ingest, rewrite, read, resample, upserts = ([] for _ in range(6))
        for run in range(repeats):
            series = SeriesKey("bench", f"R{run}/USDT", minute)
            async with TimescaleCandleStore(staged, context) as store:
                other = SeriesKey("bench", f"S{run}/USDT", minute)
                staged_ingest.append(rows / await timed(store.write(other, candles)))
            cluster.execute("CHECKPOINT", database)
            async with TimescaleCandleStore(options, context) as store:
                ingest.append(rows / await timed(store.write(series, candles)))
                rewrite.append(rows / await timed(store.write(series, candles)))
            cluster.execute("VACUUM ANALYZE candles", database)
            async with TimescaleCandleStore(options, context) as store:  # fresh connections
                got = await store.read(series)
                assert len(got) == rows
                read.append(await timed(store.read(series)))
                built = await store.resample(series, hour)
                assert built is not None and len(built) == -(-rows // 60)
                resample.append(await timed(store.resample(series, hour)))
                live = SeriesKey("bench", f"L{run}/USDT", minute)
                await store.write(live, candles.slice(0, 1))
                for index in range(3000):
                    # A forming candle revised twice, then the next one: like a live feed.
                    one = candles.slice(index // 3, index // 3 + 1)
                    if index % 3 == 1:
                        one = CandleArrays(
                            one.time, one.open, one.high, one.low, one.low, one.volume + 1, [False]
                        )
                    began = time.perf_counter()
                    await store.write(live, one)
                    upserts.append((time.perf_counter() - began) * 1000)
    emit("storage.pg_ingest_cps", statistics.median(ingest), "candles/s", "higher")
    emit("storage.pg_read_1m_s", statistics.median(read) * 1e6 / rows, "s", "lower")
    emit("storage.pg_resample_1m_s", statistics.median(resample) * 1e6 / rows, "s", "lower")
    emit("storage.pg_upsert_p99_ms", float(np.percentile(upserts, 99)), "ms", "lower")
    emit("storage.pg_upsert_p50_ms", float(np.percentile(upserts, 50)), "ms", "lower")
    emit("storage.pg_ingest_staged_cps", statistics.median(staged_ingest), "candles/s", "higher")
    emit("storage.pg_rewrite_unchanged_cps", statistics.median(rewrite), "candles/s", "higher")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="candles per bulk write")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    arguments = parser.parse_args()
    try:
        server = PostgresCluster.start_new(settings=SETTINGS)
    except PostgresUnavailable as error:
        print(f"bench_storage_pg skipped: {error}", file=sys.stderr)
        sys.exit(0)
    with server:
        asyncio.run(main(server, arguments.rows, arguments.repeats))
