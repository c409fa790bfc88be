"""A 30-minute session on the fake, time accelerated, with every fault of a seeded plan.

A small consumer (websocket candles, REST backfill after each reconnect, orders looked up by
client order id before any retry) must end with exactly the fake's ground truth. This proves the
fake gives a client everything it needs to recover from each fault, and that the plan, the
clock and the ground-truth export work together; the real adapter gets its own such test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import numpy as np
import pytest

from trader.model import DAY_MS, MINUTE_MS, CandleArrays
from trader_exchange_bitfinex.testing import (
    FAULT_KINDS,
    FakeBitfinex,
    FakeSettings,
    Fault,
    random_faults,
    schedule_faults,
)
from trader_exchange_bitfinex.testing.wire import ConnectionDropped, WireClient

pytestmark = pytest.mark.timeout(60)

KEY, SECRET = "session-key", "session-secret"
CANDLE_KEY = "trade:1m:tBTCUSD"


class Collector:
    """Websocket candles (last write wins per MTS) plus a REST backfill after each connect."""

    def __init__(self, fake: FakeBitfinex, since: int) -> None:
        self.fake = fake
        self.since = since
        self.candles: dict[int, list[float]] = {}
        self.client: WireClient | None = None
        self.chan_id = 0
        self.marker = 0
        self.connects = 0
        self.needs_backfill = True
        self.resume_from = since
        self.infos: list[int] = []

    async def connect(self) -> None:
        if self.client is not None:
            return
        client = WireClient(self.fake.ws_url)
        try:
            await client.connect()
        except aiohttp.WSServerHandshakeError:
            return  # refused while the server restarts: try again on the next step
        await client.receive()
        self.chan_id = await client.subscribe_candles(CANDLE_KEY)
        self.client = client
        self.connects += 1
        self.needs_backfill = True

    async def disconnect(self) -> None:
        if self.client is not None:
            await self.client.close()
            # Bitfinex may revise recent candles while we are away: refetch a margin too.
            self.resume_from = max(self.since, max(self.candles, default=0) - 15 * MINUTE_MS)
        self.client = None

    async def drain(self) -> None:
        """Read every frame sent so far: up to the pong of a ping sent now."""
        if self.client is None:
            return
        self.marker += 1
        try:
            await self.client.send({"event": "ping", "cid": self.marker})
            while True:
                frame = await self.client.receive(timeout=0.5)
                if isinstance(frame, dict):
                    if frame.get("event") == "pong" and frame.get("cid") == self.marker:
                        return
                    if frame.get("event") == "info" and "code" in frame:
                        self.infos.append(frame["code"])
                elif frame[0] == self.chan_id and frame[1] != "hb":
                    rows = frame[1] if frame[1] and isinstance(frame[1][0], list) else [frame[1]]
                    for row in rows:
                        self.candles[row[0]] = row
        except (ConnectionDropped, ConnectionError, TimeoutError):
            await self.disconnect()  # dropped, or silent past the watchdog

    async def backfill(self, http: aiohttp.ClientSession) -> None:
        if not self.needs_backfill or self.client is None:
            return
        start = self.resume_from
        url = f"{self.fake.rest_url}/v2/candles/{CANDLE_KEY}/hist"
        params = {"start": str(start), "sort": "1", "limit": "10000"}
        try:
            async with http.get(url, params=params) as reply:
                if reply.status != 200:
                    return  # 429 during a block: retry on the next step
                rows = await reply.json()
        except (asyncio.TimeoutError, aiohttp.ClientError):
            return  # slow reply
        for row in rows:
            self.candles[row[0]] = row
        self.needs_backfill = False

    def closed(self, now: int) -> CandleArrays:
        minute = now - now % MINUTE_MS
        rows = [
            (t, r[1], r[3], r[4], r[2], r[5])
            for t, r in sorted(self.candles.items())
            if self.since <= t < minute
        ]
        return CandleArrays.from_rows(rows)


async def place_once(exchange: Any, cid: int, price: float) -> bool:
    """Place a resting buy with ``cid`` unless the exchange already has it; True when done."""
    try:
        known = await exchange.fetch_open_orders("BTC/USD")
        known += await exchange.fetch_closed_orders("BTC/USD")
        if any(order["clientOrderId"] == str(cid) for order in known):
            return True
        await exchange.create_order("BTC/USD", "limit", "buy", 0.001, price, {"cid": cid})
        return True
    except (ccxt_async.NetworkError, ccxt_async.InvalidNonce, ccxt_async.OnMaintenance):
        return False  # outcome unknown or refused: look it up again on the next step


def test_random_fault_plans_are_seeded_and_cover_every_kind() -> None:
    plan = random_faults(3, 1_000, 30 * MINUTE_MS)
    assert plan == random_faults(3, 1_000, 30 * MINUTE_MS)
    assert plan != random_faults(4, 1_000, 30 * MINUTE_MS)
    assert sorted(f.kind for f in plan) == sorted(FAULT_KINDS)
    times = [f.at_ms for f in plan]
    assert times == sorted(times) and times[0] >= 1_000 and times[-1] < 1_000 + 30 * MINUTE_MS
    ends = [f.at_ms + f.duration_ms for f in plan]
    assert all(end <= start for end, start in zip(ends, times[1:], strict=False))
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault(0, "meteor")


def test_thirty_minute_session_with_every_fault_ends_on_the_ground_truth() -> None:
    async def main() -> dict[str, Any]:
        settings = FakeSettings(seed=21, history_ms=DAY_MS, snapshot_size=2)
        async with FakeBitfinex(settings) as fake:
            fake.add_account(KEY, SECRET, {"USD": 10_000})
            start = fake.clock.now_ms()
            plan = random_faults(21, start + MINUTE_MS, 28 * MINUTE_MS)
            schedule_faults(fake, plan)
            collector = Collector(fake, since=start - 60 * MINUTE_MS)
            exchange = ccxt_async.bitfinex(
                {**fake.ccxt_config(KEY, SECRET), "enableRateLimit": False, "timeout": 150}
            )
            low = float(f"{fake.price('BTC/USD') * 0.5:.5g}")
            pending = {1_000 + n: start + n * 3 * MINUTE_MS for n in range(10)}
            timeout = aiohttp.ClientTimeout(total=0.15)
            try:
                async with aiohttp.ClientSession(timeout=timeout) as http:
                    while fake.clock.now_ms() < start + 30 * MINUTE_MS:
                        await fake.advance(5_000)
                        await collector.connect()
                        await collector.drain()
                        await collector.backfill(http)
                        now = fake.clock.now_ms()
                        for cid, due in list(pending.items()):
                            if due <= now and await place_once(exchange, cid, low):
                                del pending[cid]
                    while collector.client is None or collector.needs_backfill:
                        await fake.advance(5_000)
                        await collector.connect()
                        await collector.drain()
                        await collector.backfill(http)
                    await collector.drain()
                    while pending:
                        await fake.advance(5_000)
                        for cid in list(pending):
                            if await place_once(exchange, cid, low):
                                del pending[cid]
            finally:
                await exchange.close()
                await collector.disconnect()
            now = fake.clock.now_ms()
            truth = fake.ground_truth("BTC/USD", "1m")
            return {
                "plan": plan,
                "start": start,
                "collected": collector.closed(now),
                "truth": truth.slice(int(np.searchsorted(truth.time, collector.since)), len(truth)),
                "connects": collector.connects,
                "infos": collector.infos,
                "orders": {cid: len(fake.orders_with_cid(KEY, cid)) for cid in range(1000, 1010)},
            }

    result = asyncio.run(main())
    truth, collected = result["truth"], result["collected"]
    assert len(truth) > 80
    assert collected == truth  # zero missing, zero duplicated, revisions applied
    skip = next(f for f in result["plan"] if f.kind == "skip")
    minutes = set(truth.time.tolist())
    first_skipped = skip.at_ms - skip.at_ms % MINUTE_MS + MINUTE_MS
    assert first_skipped not in minutes  # a skipped period has no candle at all
    assert result["connects"] >= 5  # drop, reset, close, restart and silence each cost one
    assert {20051, 20060, 20061} <= set(result["infos"])
    assert result["orders"] == dict.fromkeys(range(1000, 1010), 1)
