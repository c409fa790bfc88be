"""Benchmark the bitfinex adapter's live candles against the fake Bitfinex over real sockets.

The fake runs in a child process (its clock driven through its admin API), the adapter in this
one, so each has a core. Prints one JSON line per figure: ``{"name", "value", "unit",
"better"}``. Targets (issue 6): ``bitfinex.stream_ups`` >= 20,000 candle updates/s from the
fake through the adapter into an ingest queue; ``bitfinex.reconnect_s`` <= 1.0 from the fake
coming back (an abrupt drop of every socket) to all channels resubscribed. Also
``bitfinex.stream_ups_per_cpu_s``: updates per CPU second of this process, the adapter's own
capacity (the fake's process is the slower side). Medians of ``--repeats``.

    .venv/bin/python bench/bench_bitfinex.py [--minutes 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp

from trader.interfaces.exchange import CandleUpdate
from trader.model import SeriesKey, Timeframe
from trader_exchange_bitfinex.codes import TIMEFRAMES
from trader_exchange_bitfinex.exchange import BitfinexExchange
from trader_exchange_bitfinex.options import BitfinexOptions

SERVER = """
import asyncio, json
from trader_exchange_bitfinex.testing import FakeBitfinex, FakeSettings
async def main():
    settings = FakeSettings(seed=1, trade_interval_ms=1_000, heartbeat_ms=600_000,
                            snapshot_size=1, history_ms=3_600_000, rate_limits=None)
    async with FakeBitfinex(settings) as fake:
        print(json.dumps({"rest": fake.rest_url, "ws": fake.ws_url}), flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""
SYMBOLS = ("BTC/USD", "ETH/USD", "BTC/USDT", "ETH/BTC")


def emit(name: str, value: float, unit: str, better: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit, "better": better}))


async def main(minutes: int, repeats: int) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        options = BitfinexOptions(
            public_url=urls["rest"],
            private_url=urls["rest"],
            ws_url=urls["ws"],
            reconnect_initial_s=0.02,
            rate_limit_block_s=1.0,
        )
        series = [
            SeriesKey("bench", symbol, Timeframe.parse(tf))
            for symbol in SYMBOLS
            for tf in TIMEFRAMES
        ]
        ingest: asyncio.Queue[CandleUpdate] = asyncio.Queue()
        arrivals: list[float] = []
        async with BitfinexExchange(options) as exchange, aiohttp.ClientSession() as http:
            stream = exchange.stream_candles(series)

            async def pump() -> None:
                async for update in stream:
                    ingest.put_nowait(update)
                    arrivals.append(time.perf_counter())

            task = asyncio.create_task(pump())
            while exchange.last_stream is None or exchange.last_stream.active_channels() < len(
                series
            ):
                await asyncio.sleep(0.01)
            admin = urls["rest"] + "/_fake"
            rates, capacity = [], []
            for _ in range(repeats):
                await asyncio.sleep(0.3)
                arrivals.clear()
                cpu = time.process_time()
                async with http.post(f"{admin}/advance", json={"ms": minutes * 60_000}) as reply:
                    reply.raise_for_status()
                count = -1
                while count != len(arrivals):  # until nothing more arrives
                    count = len(arrivals)
                    await asyncio.sleep(0.3)
                rates.append((count - 1) / (arrivals[-1] - arrivals[0]))
                capacity.append(count / (time.process_time() - cpu))
            emit("bitfinex.stream_ups", statistics.median(rates), "updates/s", "higher")
            # the adapter's own cost: updates per CPU second of this process (the fake runs in
            # another process, so this is what the adapter could take from a faster source)
            emit(
                "bitfinex.stream_ups_per_cpu_s",
                statistics.median(capacity),
                "updates/cpu-s",
                "higher",
            )
            waits = []
            stream_state = exchange.last_stream
            for _ in range(max(repeats, 5)):
                began = time.perf_counter()
                body = {"kind": "drop", "duration_ms": 0}
                async with http.post(f"{admin}/fault", json=body) as reply:
                    reply.raise_for_status()
                while stream_state.active_channels() == len(series):
                    await asyncio.sleep(0.001)
                while stream_state.active_channels() < len(series):
                    await asyncio.sleep(0.001)
                waits.append(time.perf_counter() - began)
            emit("bitfinex.reconnect_s", statistics.median(waits), "s", "lower")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await stream.aclose()  # type: ignore[attr-defined]
            print(
                json.dumps({"note": f"{len(series)} channels, {ingest.qsize():,} updates queued"}),
                file=sys.stderr,
            )
    finally:
        child.terminate()
        child.wait(10)


def _args(argv: Any = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=30, help="simulated minutes per run")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _args()
    asyncio.run(main(arguments.minutes, arguments.repeats))
