"""The fake Bitfinex's public REST API, driven by ccxt and by a bare HTTP client over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import numpy as np
import pytest

from trader.model import DAY_MS, MINUTE_MS, Timeframe
from trader_exchange_bitfinex.testing import FakeBitfinex, FakePair, FakeSettings

pytestmark = pytest.mark.timeout(30)

Scenario = Callable[[FakeBitfinex], Awaitable[Any]]


def run(scenario: Scenario, settings: FakeSettings | None = None) -> Any:
    async def main() -> Any:
        async with FakeBitfinex(settings or FakeSettings(seed=3, history_ms=DAY_MS)) as fake:
            return await scenario(fake)

    return asyncio.run(main())


def client(fake: FakeBitfinex, **options: Any) -> Any:
    """A ccxt client on the fake; its own throttle off (the fake enforces the limits)."""
    return ccxt_async.bitfinex({**fake.ccxt_config(), "enableRateLimit": False, **options})


async def get(fake: FakeBitfinex, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(fake.rest_url + path) as response,
    ):
        return response.status, await response.json(content_type=None)


def test_fake_listens_on_loopback_only_and_stops_cleanly() -> None:
    async def scenario(fake: FakeBitfinex) -> None:
        assert fake.rest_url.startswith("http://127.0.0.1:") and fake.port > 0
        assert fake.ws_url == f"ws://127.0.0.1:{fake.port}/ws/2"
        assert await get(fake, "/v2/platform/status") == (200, [1])

    async def main() -> int:
        fake = FakeBitfinex(FakeSettings(seed=1))
        await fake.start()
        port = fake.port
        await scenario(fake)
        await fake.close()
        return port

    port = asyncio.run(main())

    async def refused() -> None:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as session:
                await session.get(f"http://127.0.0.1:{port}/v2/platform/status")

    asyncio.run(refused())


def test_ccxt_loads_markets_status_and_currencies_from_the_fake() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        exchange = client(fake)
        try:
            markets = await exchange.load_markets()
            status = await exchange.fetch_status()
        finally:
            await exchange.close()
        return markets, exchange.currencies, status, fake.requests

    markets, currencies, status, requests = run(scenario)
    assert set(markets) == {"BTC/USD", "ETH/USD", "BTC/USDT", "ETH/BTC"}
    assert markets["BTC/USDT"]["id"] == "tBTCUST"
    assert markets["ETH/USD"]["limits"]["amount"] == {"min": 0.001, "max": 2000.0}
    assert markets["BTC/USD"]["precision"]["price"] == 5
    assert "USDT" in currencies and "UST" not in currencies
    assert status["status"] == "ok"
    conf_calls = [path for _, path in requests if path.startswith("/v2/conf/")]
    assert len(conf_calls) == 2


def test_conf_answers_each_item_in_order_and_unknown_items_empty() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        return await get(fake, "/v2/conf/pub:list:pair:exchange%2Cpub:nope%2Cpub:map:currency:sym")

    status, body = run(scenario)
    assert status == 200
    assert body == [["BTCUSD", "BTCUST", "ETHBTC", "ETHUSD"], [], [["UST", "USDt"]]]


def test_candles_hist_filters_sorts_and_limits_like_bitfinex() -> None:
    async def scenario(fake: FakeBitfinex) -> dict[str, Any]:
        key = "/v2/candles/trade:1m:tBTCUSD"
        now = fake.clock.now_ms()
        start = now - 30 * MINUTE_MS
        return {
            "default": await get(fake, f"{key}/hist"),
            "newest3": await get(fake, f"{key}/hist?limit=3"),
            "oldest3": await get(fake, f"{key}/hist?limit=3&start={start}&sort=1"),
            "window": await get(fake, f"{key}/hist?start={start}&end={start + 4 * MINUTE_MS}"),
            "last": await get(fake, f"{key}/last"),
            "now": now,
            "start": start,
        }

    result = run(scenario)
    status, default = result["default"]
    assert status == 200 and len(default) == 100
    times = [row[0] for row in default]
    assert times == sorted(times, reverse=True)
    assert result["newest3"][1] == default[:3]
    oldest = result["oldest3"][1]
    assert [row[0] for row in oldest] == [result["start"] + i * MINUTE_MS for i in range(3)]
    assert [row[0] for row in result["window"][1]] == [
        result["start"] + i * MINUTE_MS for i in range(4, -1, -1)
    ]
    assert result["last"][1] == default[0]
    for mts, open_, close, high, low, volume in default:
        assert low <= min(open_, close) <= max(open_, close) <= high and volume > 0
        assert mts % MINUTE_MS == 0 and mts < result["now"]


def test_candles_reject_bad_limit_symbol_and_key_with_bitfinex_error_bodies() -> None:
    async def scenario(fake: FakeBitfinex) -> list[tuple[int, Any]]:
        return [
            await get(fake, "/v2/candles/trade:1m:tBTCUSD/hist?limit=10001"),
            await get(fake, "/v2/candles/trade:1m:tNOPE/hist"),
            await get(fake, "/v2/candles/trade:2m:tBTCUSD/hist"),
            await get(fake, "/v2/candles/trade:1m:tBTCUSD/hist?limit=10000"),
        ]

    too_many, bad_symbol, bad_key, most = run(scenario)
    assert too_many == (500, ["error", 10020, "limit: invalid"])
    assert bad_symbol == (500, ["error", 10020, "symbol: invalid"])
    assert bad_key == (500, ["error", 10020, "key: invalid"])
    assert most[0] == 200 and len(most[1]) == 24 * 60


def test_ccxt_pages_a_backfill_with_start_and_sort_and_gets_the_ground_truth() -> None:
    async def scenario(fake: FakeBitfinex) -> tuple[list[list[float]], Any, int]:
        exchange = client(fake)
        since = fake.clock.now_ms() - 6 * 60 * MINUTE_MS
        rows: list[list[float]] = []
        try:
            while True:
                page = await exchange.fetch_ohlcv("BTC/USD", "5m", since=since, limit=20)
                rows.extend(page)
                if len(page) < 20:
                    break
                since = int(page[-1][0]) + 1
        finally:
            await exchange.close()
        truth = fake.ground_truth("BTC/USD", "5m", include_forming=True)
        calls = [p for _, p in fake.requests if p.startswith("/v2/candles/")]
        return rows, truth, len(calls)

    rows, truth, calls = run(scenario)
    assert calls == 4  # 72 candles in pages of 20
    tail = truth.slice(len(truth) - len(rows), len(truth))
    assert [int(r[0]) for r in rows] == tail.time.tolist()
    ccxt_columns = np.array([r[1:] for r in rows])
    np.testing.assert_array_equal(
        ccxt_columns, np.column_stack([tail.open, tail.high, tail.low, tail.close, tail.volume])
    )


def test_higher_timeframes_aggregate_the_minute_candles_and_accept_bitfinex_spellings() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        hourly = await get(fake, "/v2/candles/trade:1h:tETHUSD/hist?limit=5&sort=-1")
        daily = await get(fake, "/v2/candles/trade:1D:tETHUSD/hist?end=1735603200000")
        weekly = await get(fake, "/v2/candles/trade:7D:tETHUSD/hist")
        weekly_w = await get(fake, "/v2/candles/trade:1W:tETHUSD/hist")
        minutes = fake.ground_truth("tETHUSD", "1m", include_forming=True)
        return hourly, daily, weekly, weekly_w, minutes

    hourly, daily, weekly, weekly_w, minutes = run(scenario)
    assert weekly == weekly_w and weekly[0] == 200
    assert [row[0] for row in daily[1]] == [1735603200000]
    newest = hourly[1][1]
    inside = (minutes.time >= newest[0]) & (minutes.time < newest[0] + 3_600_000)
    assert newest[1] == minutes.open[inside][0] and newest[2] == minutes.close[inside][-1]
    assert newest[3] == minutes.high[inside].max() and newest[4] == minutes.low[inside].min()
    assert newest[5] == pytest.approx(minutes.volume[inside].sum(), abs=1e-8)


def test_tickers_and_public_trades_have_bitfinex_shapes() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        return (
            await get(fake, "/v2/ticker/tBTCUSD"),
            await get(fake, "/v2/tickers?symbols=tBTCUSD,tETHUSD,tNOPE"),
            await get(fake, "/v2/trades/tBTCUSD/hist?limit=5"),
            fake.price("BTC/USD"),
        )

    ticker, tickers, trades, price = run(scenario)
    assert ticker[0] == 200 and len(ticker[1]) == 10 and ticker[1][6] == price
    assert [row[0] for row in tickers[1]] == ["tBTCUSD", "tETHUSD"]
    assert tickers[1][0][1:] == ticker[1]
    rows = trades[1]
    assert len(rows) == 5 and rows[0][3] == price
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


def test_the_market_is_a_function_of_the_seed_not_of_how_the_clock_moves() -> None:
    async def stepped(fake: FakeBitfinex) -> Any:
        for _ in range(40):
            await fake.advance(4_500)
        return fake.ground_truth("BTC/USD", "1m", include_forming=True)

    async def at_once(fake: FakeBitfinex) -> Any:
        await fake.advance(180_000)
        return fake.ground_truth("BTC/USD", "1m", include_forming=True)

    first = run(stepped, FakeSettings(seed=11, history_ms=DAY_MS))
    second = run(at_once, FakeSettings(seed=11, history_ms=DAY_MS))
    other = run(at_once, FakeSettings(seed=12, history_ms=DAY_MS))
    assert first == second
    assert not np.array_equal(first.close, other.close)


def test_quiet_minutes_and_skipped_periods_leave_no_candle() -> None:
    settings = FakeSettings(seed=5, quiet_probability=0.1, history_ms=6 * 3_600_000)

    async def scenario(fake: FakeBitfinex) -> Any:
        start = fake.clock.now_ms()
        fake.skip_period("BTC/USD", start + 2 * MINUTE_MS, start + 5 * MINUTE_MS)
        await fake.advance(10 * MINUTE_MS)
        rest = await get(fake, f"/v2/candles/trade:1m:tBTCUSD/hist?start={start}&sort=1")
        return start, rest[1], fake.ground_truth("BTC/USD", "1m")

    start, rows, truth = run(scenario, settings)
    times = [row[0] for row in rows]
    assert not {start + m * MINUTE_MS for m in (2, 3, 4)} & set(times)
    gaps = np.diff(truth.time)
    assert (gaps > MINUTE_MS).sum() > 10  # about 10 % of 360 minutes are quiet
    assert (gaps % MINUTE_MS == 0).all()


def test_trailing_nulls_are_appended_when_asked() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        return await get(fake, "/v2/candles/trade:1m:tBTCUSD/hist?limit=1")

    _, rows = run(scenario, FakeSettings(seed=1, trailing_nulls=True))
    assert len(rows[0]) == 7 and rows[0][6] is None


def test_rate_limit_answers_429_then_blocks_the_ip_for_60_simulated_seconds() -> None:
    settings = FakeSettings(seed=1, rate_limits={"candles": 3, "platform": 30})

    async def scenario(fake: FakeBitfinex) -> list[Any]:
        exchange = client(fake)
        key = "/v2/candles/trade:1m:tBTCUSD/last"
        seen: list[Any] = [await get(fake, key) for _ in range(3)]
        seen.append(await get(fake, key))
        seen.append(await get(fake, "/v2/platform/status"))  # the whole IP is blocked
        try:
            with pytest.raises(ccxt_async.RateLimitExceeded):
                await exchange.fetch_ohlcv("BTC/USD", "1m", limit=1)
            await fake.advance(59_999)
            seen.append(await get(fake, "/v2/platform/status"))
            await fake.advance(1)
            seen.append(await get(fake, "/v2/platform/status"))
            fake.block_rest(duration_ms=1_000)
            seen.append(await get(fake, "/v2/platform/status"))
        finally:
            await exchange.close()
        return seen

    seen = run(scenario, settings)
    assert [status for status, _ in seen[:3]] == [200, 200, 200]
    assert seen[3] == (429, ["error", 11010, "ratelimit: error"])
    assert seen[4][0] == 429
    assert seen[5][0] == 429
    assert seen[6] == (200, [1])
    assert seen[7][0] == 429


def test_slow_replies_trip_the_client_timeout() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        exchange = client(fake, timeout=100)
        fake.slow_replies(0.5, count=1, path_prefix="/v2/platform")
        try:
            with pytest.raises(ccxt_async.RequestTimeout):
                await exchange.fetch_status()
            return await exchange.fetch_status()
        finally:
            await exchange.close()

    assert run(scenario)["status"] == "ok"


def test_maintenance_switches_platform_status_to_zero_and_stops_candles() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        exchange = client(fake)
        try:
            start = fake.clock.now_ms()
            await fake.start_maintenance()
            during = await exchange.fetch_status()
            await fake.advance(5 * MINUTE_MS)
            await fake.end_maintenance()
            await fake.advance(3 * MINUTE_MS)
            after = await exchange.fetch_status()
        finally:
            await exchange.close()
        truth = fake.ground_truth("BTC/USD", "1m")
        return start, during, after, truth

    start, during, after, truth = run(scenario)
    assert during["status"] == "maintenance" and after["status"] == "ok"
    recent = truth.time[truth.time >= start].tolist()
    assert recent == [start + m * MINUTE_MS for m in (5, 6, 7)]


def test_pairs_with_long_codes_use_a_colon() -> None:
    settings = FakeSettings(seed=2, pairs=(FakePair("DOGE:UST", 0.1, min_order_size="10"),))

    async def scenario(fake: FakeBitfinex) -> Any:
        exchange = client(fake)
        try:
            markets = await exchange.load_markets()
            candles = await exchange.fetch_ohlcv("DOGE/USDT", "1h", limit=2)
        finally:
            await exchange.close()
        return markets, candles, fake.pair_id("DOGE/USDT")

    markets, candles, pair = run(scenario, settings)
    assert markets["DOGE/USDT"]["id"] == "tDOGE:UST" and pair == "DOGE:UST"
    assert len(candles) == 2 and Timeframe.parse("1h").is_aligned(int(candles[0][0]))


@pytest.mark.parametrize(
    ("field", "value"),
    [("heartbeat_ms", 0), ("trade_interval_ms", -1), ("snapshot_size", -1), ("pairs", ())],
)
def test_settings_that_would_stall_the_fake_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        FakeSettings(**{field: value})
