"""The bitfinex adapter's live candles against the fake Bitfinex over real websockets.

Each fault the fake offers is injected on its own, then all of them together in the issue's
acceptance scenario: a 30-minute session (simulated, accelerated) whose candle store (trader's
SQLite store) ends identical to the fake's ground truth, with orders submitted across the faults
existing exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from trader.config.secrets import SecretRef
from trader.interfaces import PluginContext
from trader.interfaces.exchange import CandleUpdate
from trader.model import (
    DAY_MS,
    MINUTE_MS,
    CandleArrays,
    Order,
    SeriesKey,
    Timeframe,
    client_order_id,
    client_order_number,
)
from trader.stores.sqlite_candles import SqliteCandleOptions, SqliteCandleStore
from trader_exchange_bitfinex.exchange import BitfinexExchange
from trader_exchange_bitfinex.options import BitfinexOptions
from trader_exchange_bitfinex.testing import (
    FAULT_KINDS,
    FakeBitfinex,
    FakeSettings,
    random_faults,
    schedule_faults,
)

pytestmark = pytest.mark.timeout(60)

KEY, SECRET = "stream-key", "stream-secret"


def adapter(fake: FakeBitfinex, **options: Any) -> BitfinexExchange:
    environ = {"BFX_KEY": KEY, "BFX_SECRET": SECRET}
    settings = BitfinexOptions(
        api_key=SecretRef("env", "BFX_KEY", environ=environ),
        api_secret=SecretRef("env", "BFX_SECRET", environ=environ),
        public_url=fake.rest_url,
        private_url=fake.rest_url,
        ws_url=fake.ws_url,
        **options,
    )
    return BitfinexExchange(settings, clock=fake.clock)


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for ``condition`` (checked on every loop turn) or fail saying ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


class Collector:
    """Reads the adapter's stream in a task and keeps every update."""

    def __init__(self, exchange: BitfinexExchange, series: list[SeriesKey]) -> None:
        self.updates: list[CandleUpdate] = []
        self.stream = exchange.stream_candles(series)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for update in self.stream:
            self.updates.append(update)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.stream.aclose()  # type: ignore[attr-defined]

    def final(self, series: SeriesKey) -> dict[int, tuple[Any, ...]]:
        rows: dict[int, tuple[Any, ...]] = {}
        for update in self.updates:
            if update.series == series:
                c = update.candle
                rows[c.time] = (c.time, c.open, c.high, c.low, c.close, c.volume, c.closed)
        return rows


def test_stream_tells_forming_from_closed_and_reads_trailing_fields() -> None:
    async def main() -> None:
        settings = FakeSettings(seed=3, trailing_nulls=True, snapshot_size=3)
        async with FakeBitfinex(settings) as fake, adapter(fake) as exchange:
            series = SeriesKey("bitfinex", "BTC/USD", Timeframe.parse("1m"))
            collector = Collector(exchange, [series])
            await until(lambda: len(collector.updates) >= 3, "the snapshot")
            start = fake.clock.now_ms()
            for _ in range(20):
                await fake.advance(15_000)
                await until(
                    lambda: (
                        max(u.candle.time for u in collector.updates)
                        == fake.ground_truth("BTC/USD", "1m", include_forming=True).time[-1]
                    ),
                    "the newest candle",
                )
            await collector.close()
            forming = [u.candle for u in collector.updates if not u.candle.closed]
            assert forming and all(c.time >= start - MINUTE_MS for c in forming)
            truth = fake.ground_truth("BTC/USD", "1m")
            final = collector.final(series)
            closed_rows = [row for t, row in sorted(final.items()) if row[6]]
            first, newest = closed_rows[0][0], max(final)
            # final once a later candle has started (Bitfinex sends nothing at a period's end)
            assert closed_rows == [r for r in truth.rows() if first <= r[0] < newest]
            assert final[newest][6] is False  # the forming candle is not final yet

    asyncio.run(main())


def test_series_are_sharded_at_most_25_per_connection() -> None:
    async def main() -> None:
        settings = FakeSettings(seed=4, max_subscriptions=25, snapshot_size=1)
        async with FakeBitfinex(settings) as fake, adapter(fake) as exchange:
            timeframes = ["1m", "5m", "15m", "30m", "1h", "3h", "6h", "12h", "1d", "1w", "1M"]
            symbols = ["BTC/USD", "ETH/USD", "BTC/USDT"]
            series = [
                SeriesKey("bitfinex", s, Timeframe.parse(tf)) for s in symbols for tf in timeframes
            ]
            collector = Collector(exchange, series)
            await until(lambda: len(fake.subscribed()) == 33, "33 subscriptions")
            assert fake.connection_count == 2
            assert "trade:7D:tBTCUST" in fake.subscribed()
            stream = exchange.last_stream
            assert stream is not None
            await until(lambda: stream.active_channels() == 33, "33 channels")
            await collector.close()
            assert fake.connection_count == 0 or stream.active_channels() == 0

    asyncio.run(main())


async def run_session(
    tmp_path: Path,
    kinds: list[str],
    minutes: int,
    seed: int,
    *,
    orders: int = 0,
) -> dict[str, Any]:
    """Stream into a SQLite candle store through the faults of ``kinds`` for ``minutes``."""
    settings = FakeSettings(seed=seed, history_ms=DAY_MS, snapshot_size=1)
    series = [
        SeriesKey("bitfinex", "BTC/USD", Timeframe.parse("1m")),
        SeriesKey("bitfinex", "BTC/USD", Timeframe.parse("5m")),
        SeriesKey("bitfinex", "ETH/USD", Timeframe.parse("1m")),
    ]
    context = PluginContext(data_dir=tmp_path, config_dir=tmp_path)
    store = SqliteCandleStore(SqliteCandleOptions(path=str(tmp_path / "c.sqlite")), context)
    async with FakeBitfinex(settings) as fake, store:
        fake.add_account(KEY, SECRET, {"USD": 100_000})
        start = fake.clock.now_ms()
        since = start - 60 * MINUTE_MS
        plan = random_faults(seed, start + MINUTE_MS, (minutes - 2) * MINUTE_MS, kinds)
        schedule_faults(fake, plan)
        async with adapter(fake, request_timeout_s=0.3) as exchange:
            for key in series:
                async for page in exchange.fetch_candles(
                    key.symbol, str(key.timeframe), since, start
                ):
                    await store.write(key, page)
            written = asyncio.Event()

            async def consume() -> None:
                async for update in exchange.stream_candles(series):
                    await store.write(update.series, [update.candle])
                    written.set()

            consumer = asyncio.create_task(consume())
            low = Decimal(f"{fake.price('BTC/USD') * 0.5:.5g}")
            placed: list[Order] = []
            submits: list[asyncio.Task[Order]] = []
            every = max(1, minutes // max(orders, 1))
            try:
                for step in range(minutes * 12):
                    now = fake.clock.now_ms()
                    if orders and step % (every * 12) == 6 and len(placed) < orders:
                        order = Order(
                            client_order_id=client_order_id("session", now, "entry"),
                            exchange="bitfinex",
                            symbol="BTC/USD",
                            side="buy",  # type: ignore[arg-type]
                            type="limit",  # type: ignore[arg-type]
                            amount=Decimal("0.001"),
                            price=low,
                            created_at=now,
                        )
                        placed.append(order)
                        if len(placed) % 2:  # every other reply gets lost
                            fake.slow_replies(0.5, path_prefix="/v2/auth/w/order/submit")
                        submits.append(asyncio.create_task(exchange.submit_order(order)))
                    await fake.advance(5_000)
                    await asyncio.sleep(0.001)
                # every candle opened before the session's last 5m boundary must end up stored
                cutoff = fake.clock.now_ms() - fake.clock.now_ms() % (5 * MINUTE_MS)

                def truth(key: SeriesKey) -> CandleArrays:
                    rows = fake.ground_truth(key.symbol, key.timeframe).rows()
                    return CandleArrays.from_rows([r for r in rows if since <= r[0] < cutoff])

                stored: dict[SeriesKey, CandleArrays] = {}
                for _ in range(200):
                    for key in series:
                        stored[key] = await store.read(key, since, cutoff)
                    if all(stored[key] == truth(key) for key in series) and all(
                        t.done() for t in submits
                    ):
                        break
                    await fake.advance(5_000)
                    await asyncio.sleep(0.005)
                results = [await task for task in submits]
            finally:
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
            stream = exchange.last_stream
            assert stream is not None
            await fake.wait_idle()
            return {
                "plan": plan,
                "stored": stored,
                "truth": {key: truth(key) for key in series},
                "connects": stream.connects,
                "orders": [
                    len(fake.orders_with_cid(KEY, client_order_number(o.client_order_id)))
                    for o in placed
                ],
                "results": results,
            }


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
def test_each_fault_ends_with_the_ground_truth(tmp_path: Path, kind: str) -> None:
    result = asyncio.run(run_session(tmp_path, [kind], 6, seed=11, orders=2))
    for key, truth in result["truth"].items():
        assert len(truth) > 10
        assert result["stored"][key] == truth, f"{key} after {kind}"
    assert result["orders"] == [1, 1]
    if kind in ("drop", "reset", "close", "restart", "maintenance", "silence"):
        assert result["connects"] >= 2  # it reconnected


def test_thirty_minute_session_with_every_fault_matches_the_ground_truth(tmp_path: Path) -> None:
    result = asyncio.run(run_session(tmp_path, sorted(FAULT_KINDS), 30, seed=21, orders=10))
    assert sorted(f.kind for f in result["plan"]) == sorted(FAULT_KINDS)
    for key, truth in result["truth"].items():
        assert len(truth) > 12
        assert result["stored"][key] == truth, key  # zero missing, duplicated, stale
    assert result["connects"] >= 6  # drop, reset, close, restart, maintenance, silence
    assert result["orders"] == [1] * 10  # submitted across lost replies: exactly once each


def test_refused_upgrades_back_off_until_the_connection_ban_ends() -> None:
    async def main() -> tuple[int, int]:
        settings = FakeSettings(seed=6, ws_connections_per_minute=2, snapshot_size=1)
        async with FakeBitfinex(settings) as fake, adapter(fake) as exchange:
            collector = Collector(
                exchange, [SeriesKey("bitfinex", "ETH/USD", Timeframe.parse("1m"))]
            )
            await until(lambda: len(fake.subscribed()) == 1, "the first subscription")
            began = fake.clock.now_ms()
            for _ in range(2):
                await fake.drop_connections("abort")
                for _ in range(100):
                    await fake.advance(1_000)
                    await asyncio.sleep(0.002)
                    if fake.subscribed():
                        break
            stream = exchange.last_stream
            assert stream is not None
            await collector.close()
            return stream.connects, fake.clock.now_ms() - began

    connects, waited = asyncio.run(main())
    assert connects == 3  # refused upgrades are not connections
    assert waited >= 50_000  # the third connection had to wait for the one-minute window


def test_an_empty_snapshot_yields_nothing_until_the_first_trade() -> None:
    async def main() -> list[CandleUpdate]:
        settings = FakeSettings(seed=8, history_ms=0, trade_interval_ms=20_000)
        async with FakeBitfinex(settings) as fake, adapter(fake) as exchange:
            key = SeriesKey("bitfinex", "BTC/USD", Timeframe.parse("1h"))
            collector = Collector(exchange, [key])
            await until(lambda: len(fake.subscribed()) == 1, "the subscription")
            stream = exchange.last_stream
            assert stream is not None
            await until(lambda: stream.active_channels() == 1, "the subscribed reply")
            assert collector.updates == []  # [chanId, []] is no candle (ccxt.pro makes one)
            for _ in range(40):  # small steps: frames reach the adapter in simulated time
                await fake.advance(5_000)
                await asyncio.sleep(0.002)
                if collector.updates:
                    break
            await collector.close()
            return collector.updates

    updates = asyncio.run(main())
    assert updates and all(u.candle.problem() is None for u in updates)
