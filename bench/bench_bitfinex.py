"""Benchmark the bitfinex adapter's live candles against the fake Bitfinex over real sockets.

Two set-ups. First the fake runs in a child process (its clock driven through its admin API),
the adapter in this one, so each has a core: ``bitfinex.stream_ups`` (target, issue 6: >= 20,000
candle updates/s from the fake through the adapter into an ingest queue), ``bitfinex.reconnect_s``
(target <= 1.0: from the fake coming back after an abrupt drop of every socket to all channels
resubscribed) and ``bitfinex.stream_ups_per_cpu_s`` (updates per CPU second of this process, the
adapter's own capacity; the fake's process is the slower side). Then the fake runs in this
process and event loop, sharing one core with the adapter: ``bitfinex.stream_ups_same_process``.
Prints one JSON line per figure: ``{"name", "value", "unit", "better"}``, medians of
``--repeats``; each run's figure goes to stderr.

    .venv/bin/python bench/bench_bitfinex.py [--minutes 30] [--repeats 3] [--mode process|same]
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from trader.interfaces.exchange import CandleUpdate
from trader.model import SeriesKey, Timeframe
from trader_exchange_bitfinex.codes import TIMEFRAMES
from trader_exchange_bitfinex.exchange import BitfinexExchange
from trader_exchange_bitfinex.options import BitfinexOptions
from trader_exchange_bitfinex.testing import FakeBitfinex, FakeSettings

SERVER = """
import asyncio, json
from trader_exchange_bitfinex.testing import FakeBitfinex
from bench_bitfinex import fake_settings
async def main():
    async with FakeBitfinex(fake_settings()) as fake:
        print(json.dumps({"rest": fake.rest_url, "ws": fake.ws_url}), flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""
SYMBOLS = ("BTC/USD", "ETH/USD", "BTC/USDT", "ETH/BTC")


def fake_settings() -> FakeSettings:
    """A trade every simulated second on 4 pairs; no rate limits, quiet heartbeats."""
    return FakeSettings(
        seed=1,
        trade_interval_ms=1_000,
        heartbeat_ms=600_000,
        snapshot_size=1,
        history_ms=3_600_000,
        rate_limits=None,
    )


def emit(name: str, value: float, unit: str, better: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit, "better": better}))


def note(text: str) -> None:
    print(json.dumps({"note": text}), file=sys.stderr)


def series_keys() -> list[SeriesKey]:
    """4 pairs x 12 timeframes: 48 candle channels, sharded over 2 websockets."""
    return [
        SeriesKey("bench", symbol, Timeframe.parse(tf)) for symbol in SYMBOLS for tf in TIMEFRAMES
    ]


def adapter_options(rest_url: str, ws_url: str) -> BitfinexOptions:
    return BitfinexOptions(
        public_url=rest_url,
        private_url=rest_url,
        ws_url=ws_url,
        reconnect_initial_s=0.02,
        rate_limit_block_s=1.0,
    )


class Streaming:
    """The adapter streaming every series into an ingest queue, arrival times recorded."""

    def __init__(self, exchange: BitfinexExchange, series: list[SeriesKey]) -> None:
        self.exchange = exchange
        self.series = series
        self.ingest: asyncio.Queue[CandleUpdate] = asyncio.Queue()
        self.arrivals: list[float] = []
        self.stream = exchange.stream_candles(series)
        self.task: asyncio.Task[None] | None = None
        self.from_start: list[float] = []

    async def start(self) -> None:
        async def pump() -> None:
            async for update in self.stream:
                self.ingest.put_nowait(update)
                self.arrivals.append(time.perf_counter())

        self.task = asyncio.create_task(pump())
        while (
            self.exchange.last_stream is None
            or self.exchange.last_stream.active_channels() < len(self.series)
        ):
            await asyncio.sleep(0.01)

    async def measure(
        self, advance: Callable[[], Awaitable[None]], repeats: int
    ) -> tuple[list[float], list[float]]:
        """Per run: updates/s from first to last arrival, and updates per CPU second here.

        :attr:`from_start` gets each run's updates/s from the start of ``advance`` instead (it
        also counts the time before the first update arrives).
        """
        rates, capacity = [], []
        self.from_start = []
        for _ in range(repeats):
            await asyncio.sleep(0.3)
            self.arrivals.clear()
            cpu = time.process_time()
            began = time.perf_counter()
            await advance()
            count = -1
            while count != len(self.arrivals):  # until nothing more arrives
                count = len(self.arrivals)
                await asyncio.sleep(0.3)
            rates.append((count - 1) / (self.arrivals[-1] - self.arrivals[0]))
            self.from_start.append(count / (self.arrivals[-1] - began))
            capacity.append(count / (time.process_time() - cpu))
        return rates, capacity

    def describe(self, name: str, rates: list[float]) -> str:
        """Each run's figure, and the same counted from the start of the advance."""
        first = ", ".join(f"{rate:,.0f}" for rate in rates)
        start = ", ".join(f"{rate:,.0f}" for rate in self.from_start)
        return f"{name} runs: {first} updates/s (from the start of the advance: {start})"

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.stream.aclose()  # type: ignore[attr-defined]


async def own_process(minutes: int, repeats: int) -> None:
    """The fake in a child process: each side gets a core (what a real deployment sees)."""
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        cwd=Path(__file__).resolve().parent,  # the child imports fake_settings from here
    )
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        series = series_keys()
        options = adapter_options(urls["rest"], urls["ws"])
        async with BitfinexExchange(options) as exchange, aiohttp.ClientSession() as http:
            streaming = Streaming(exchange, series)
            await streaming.start()
            admin = urls["rest"] + "/_fake"

            async def advance() -> None:
                async with http.post(f"{admin}/advance", json={"ms": minutes * 60_000}) as reply:
                    reply.raise_for_status()

            rates, capacity = await streaming.measure(advance, repeats)
            note(streaming.describe("stream_ups", rates))
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
            assert stream_state is not None
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
            await streaming.stop()
            note(f"{len(series)} channels, {streaming.ingest.qsize():,} updates queued")
    finally:
        child.terminate()
        child.wait(10)


async def same_process(minutes: int, repeats: int) -> None:
    """The fake in this process and event loop: fake and adapter share one core."""
    async with FakeBitfinex(fake_settings()) as fake:
        series = series_keys()
        async with BitfinexExchange(adapter_options(fake.rest_url, fake.ws_url)) as exchange:
            streaming = Streaming(exchange, series)
            await streaming.start()

            async def advance() -> None:
                await fake.advance(minutes * 60_000)

            rates, _ = await streaming.measure(advance, repeats)
            note(streaming.describe("stream_ups_same_process", rates))
            emit(
                "bitfinex.stream_ups_same_process", statistics.median(rates), "updates/s", "higher"
            )
            await streaming.stop()


async def main(minutes: int, repeats: int, modes: list[str]) -> None:
    if "process" in modes:
        await own_process(minutes, repeats)
    if "same" in modes:
        await same_process(minutes, repeats)


def _args(argv: Any = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=30, help="simulated minutes per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--mode",
        action="append",
        choices=("process", "same"),
        help="process: the fake in a child process (bitfinex.stream_ups, reconnect_s); same: "
        "the fake in this process (bitfinex.stream_ups_same_process); default both",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _args()
    asyncio.run(main(arguments.minutes, arguments.repeats, arguments.mode or ["process", "same"]))
