"""The bitfinex adapter's REST side against the fake Bitfinex over real sockets: markets,
currency codes, paged candle backfill within rate limits, balances, orders and fills."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from trader.config.secrets import SecretRef
from trader.errors import ModelError, OrderRejected
from trader.model import DAY_MS, MINUTE_MS, Order, OrderStatus, PrecisionMode, client_order_id
from trader_exchange_bitfinex.codes import bitfinex_code, common_code, pair_id_of, symbol_of
from trader_exchange_bitfinex.exchange import BitfinexExchange, cid_date, order_status
from trader_exchange_bitfinex.options import BitfinexOptions
from trader_exchange_bitfinex.testing import FakeBitfinex, FakeSettings

pytestmark = pytest.mark.timeout(60)

KEY, SECRET = "adapter-key", "adapter-secret"
T = TypeVar("T")


def adapter(fake: FakeBitfinex, **options: Any) -> BitfinexExchange:
    """The adapter pointed at ``fake``, on the fake's clock, with keys from references."""
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


def run(
    body: Callable[[FakeBitfinex, BitfinexExchange], Awaitable[T]],
    settings: FakeSettings | None = None,
    balances: dict[str, float | str | Decimal] | None = None,
    *,
    speed: float | None = None,
    **options: Any,
) -> T:
    async def main() -> T:
        async with FakeBitfinex(settings or FakeSettings(seed=5)) as fake:
            fake.add_account(KEY, SECRET, balances or {"USD": 10_000, "BTC": 1, "UST": 500})
            if speed is not None:
                await fake.run_clock(speed)
            try:
                async with adapter(fake, **options) as exchange:
                    return await body(fake, exchange)
            finally:
                await fake.stop_clock()

    return asyncio.run(main())


def order(symbol: str, side: str, kind: str, amount: str, **fields: Any) -> Order:
    tag = f"{symbol}{side}{kind}{amount}{sorted(fields.items())}"
    return Order(
        client_order_id=client_order_id("test", 1, tag),
        exchange="bitfinex",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        type=kind,  # type: ignore[arg-type]
        amount=Decimal(amount),
        created_at=1_735_689_600_000,
        **fields,
    )


def test_currency_codes_and_symbols_map_both_ways() -> None:
    assert common_code("UST") == "USDT" and bitfinex_code("USDT") == "UST"
    assert common_code("UDC") == "USDC" and bitfinex_code("USDC") == "UDC"
    assert common_code("BTC") == "BTC" and bitfinex_code("BTC") == "BTC"
    assert symbol_of("tBTCUST") == "BTC/USDT" and pair_id_of("BTC/USDT") == "tBTCUST"
    assert symbol_of("tDOGE:USD") == "DOGE/USD" and pair_id_of("DOGE/USD") == "tDOGE:USD"
    assert cid_date(1_735_689_600_000 + DAY_MS - 1) == "2025-01-01"
    assert order_status("EXECUTED @ 107.6(-0.2)") is OrderStatus.FILLED
    assert order_status("CANCELED was: PARTIALLY FILLED @ 1(0.1)") is OrderStatus.CANCELLED
    assert order_status("POSTONLY CANCELED") is OrderStatus.REJECTED
    assert order_status("PARTIALLY FILLED @ 5(0.1)") is OrderStatus.PARTIALLY_FILLED
    assert order_status("ACTIVE") is OrderStatus.ACKNOWLEDGED


def test_markets_have_precision_minimums_and_unified_symbols() -> None:
    async def body(fake: FakeBitfinex, exchange: BitfinexExchange) -> None:
        markets = await exchange.markets()
        assert {"BTC/USD", "ETH/USD", "BTC/USDT", "ETH/BTC"} <= set(markets)
        eth = markets["ETH/USD"]
        assert eth.min_amount == Decimal("0.001")
        assert eth.price_precision.mode is PrecisionMode.SIGNIFICANT
        assert eth.round_price(Decimal("2000.55")) == Decimal("2000.6")
        assert eth.round_amount(Decimal("0.123456789")) == Decimal("0.12345678")
        assert exchange.capabilities.post_only and exchange.capabilities.websocket

    run(body)


def test_candle_backfill_pages_and_matches_the_ground_truth() -> None:
    async def body(fake: FakeBitfinex, exchange: BitfinexExchange) -> None:
        now = fake.clock.now_ms()
        start = now - DAY_MS
        pages = [page async for page in exchange.fetch_candles("BTC/USD", "1m", start, now)]
        times = [int(t) for page in pages for t in page.time]
        assert times == sorted(set(times))  # oldest first, no duplicate
        truth = fake.ground_truth("BTC/USD", "1m")
        truth_rows = [r for r in truth.rows() if start <= r[0] < now]
        assert [r for page in pages for r in page.rows()] == truth_rows
        assert 1_100 < len(truth_rows) < 1_440  # quiet minutes have no candle
        assert len(pages) == -(-len(truth_rows) // 100)
        assert all(page.closed.all() for page in pages)
        candle_calls = [p for _, p in fake.requests if "/candles/" in p]
        assert len(candle_calls) == len(pages) + (1 if len(truth_rows) % 100 == 0 else 0)

    run(body, FakeSettings(seed=5, quiet_probability=0.1), candles_per_request=100)


def test_backfill_paces_itself_and_waits_out_a_429_block() -> None:
    async def body(fake: FakeBitfinex, exchange: BitfinexExchange) -> int:
        now = fake.clock.now_ms()
        began = fake.clock.now_ms()
        fake.block_rest(duration_ms=60_000)
        rows = 0
        async for page in exchange.fetch_candles("BTC/USD", "1m", now - 1_000 * MINUTE_MS, now):
            rows += len(page)
        assert rows == 1_000
        waited = fake.clock.now_ms() - began
        # 10 pages at 4 a minute after a 60 s block: at least 60 s + 2 minutes of pacing
        assert waited >= 60_000 + 2 * 60_000
        return waited

    run(body, speed=3_000, candles_per_request=100, public_requests_per_minute=4)


def test_balances_come_from_the_exchange_wallet_in_common_codes() -> None:
    async def body(fake: FakeBitfinex, exchange: BitfinexExchange) -> None:
        balances = await exchange.balances()
        assert balances["USDT"].total == Decimal(500)
        assert balances["USD"].free == Decimal(10_000)
        assert "UST" not in balances

    run(body)


def test_orders_market_limit_post_only_stop_cancel_status_and_fills() -> None:
    async def body(fake: FakeBitfinex, exchange: BitfinexExchange) -> None:
        price = Decimal(f"{fake.price('BTC/USD'):.5g}")
        far_below = Decimal(f"{float(price) * 0.5:.5g}")
        far_above = Decimal(f"{float(price) * 1.5:.5g}")
        bought = await exchange.submit_order(order("BTC/USD", "buy", "market", "0.01"))
        assert bought.exchange_order_id  # the reply says ACTIVE, as on Bitfinex; then:
        filled = await exchange.order_status(bought.client_order_id)
        assert filled is not None and filled.status is OrderStatus.FILLED
        assert filled.filled == Decimal("0.01") and filled.average_price
        resting = order("BTC/USD", "buy", "limit", "0.01", price=far_below, post_only=True)
        placed = await exchange.submit_order(resting)
        assert placed.status is OrderStatus.ACKNOWLEDGED and placed.exchange_order_id
        crossing = order("BTC/USD", "buy", "limit", "0.01", price=far_above, post_only=True)
        await exchange.submit_order(crossing)
        refused = await exchange.order_status(crossing.client_order_id)
        assert refused is not None and refused.status is OrderStatus.REJECTED  # POSTONLY CANCELED
        stop = order("BTC/USD", "sell", "stop", "0.01", stop_price=far_below)
        assert (await exchange.submit_order(stop)).status is OrderStatus.ACKNOWLEDGED
        opened = await exchange.open_orders("BTC/USD")
        assert {o.client_order_id for o in opened} == {
            resting.client_order_id,
            stop.client_order_id,
        }
        assert all(o.symbol == "BTC/USD" for o in opened)
        cancelled = await exchange.cancel_order(resting.client_order_id)
        assert cancelled.status is OrderStatus.CANCELLED
        again = await exchange.cancel_order(resting.client_order_id)  # finished: not an error
        assert again.status is OrderStatus.CANCELLED
        status = await exchange.order_status(stop.client_order_id)
        assert status is not None and status.status is OrderStatus.ACKNOWLEDGED
        assert await exchange.order_status(client_order_id("never", 1, "seen")) is None
        fills = await exchange.own_trades(fake.clock.now_ms() - DAY_MS)
        assert [f.client_order_id for f in fills] == [bought.client_order_id]
        assert fills[0].fee > 0 and fills[0].fee_currency == "BTC" and not fills[0].maker
        # idempotent: the same client order id again returns the order, no second one
        twice = await exchange.submit_order(resting)
        assert twice.exchange_order_id == placed.exchange_order_id
        from trader.model import client_order_number

        assert len(fake.orders_with_cid(KEY, client_order_number(resting.client_order_id))) == 1

    run(body)


def test_refusals_raise_order_rejected_with_bitfinex_reason() -> None:
    async def body(fake: FakeBitfinex, exchange: BitfinexExchange) -> None:
        with pytest.raises(OrderRejected, match="not enough exchange balance"):
            await exchange.submit_order(order("BTC/USD", "buy", "market", "5"))
        with pytest.raises(OrderRejected, match="below the minimum"):
            await exchange.submit_order(order("ETH/USD", "buy", "market", "0.0001"))
        with pytest.raises(OrderRejected, match="significant digits"):
            await exchange.submit_order(
                order("BTC/USD", "buy", "limit", "0.01", price=Decimal("12345.67"))
            )
        with pytest.raises(ModelError, match="no spot market"):
            await exchange.submit_order(order("XRP/USD", "buy", "market", "1"))

    run(body)


def test_submit_across_lost_replies_nonce_errors_and_maintenance_exists_once() -> None:
    from trader.model import client_order_number

    async def body(fake: FakeBitfinex, exchange: BitfinexExchange) -> None:
        low = Decimal(f"{fake.price('BTC/USD') * 0.5:.5g}")
        slow = order("BTC/USD", "buy", "limit", "0.01", price=low)
        fake.slow_replies(0.5, path_prefix="/v2/auth/w/order/submit")
        placed = await exchange.submit_order(slow)  # reply lost; found by cid, not resent
        assert placed.status is OrderStatus.ACKNOWLEDGED
        fake.fail_nonces(1)
        noncy = order("BTC/USD", "buy", "limit", "0.02", price=low)
        assert (await exchange.submit_order(noncy)).status is OrderStatus.ACKNOWLEDGED
        await fake.start_maintenance()
        fake.at(fake.clock.now_ms() + 5_000, lambda f: f.end_maintenance())
        paused = order("BTC/USD", "buy", "limit", "0.03", price=low)
        assert (await exchange.submit_order(paused)).status is OrderStatus.ACKNOWLEDGED
        await fake.wait_idle()
        for each in (slow, noncy, paused):
            assert len(fake.orders_with_cid(KEY, client_order_number(each.client_order_id))) == 1

    run(body, speed=100, request_timeout_s=0.2)


def test_a_wrong_secret_is_an_exchange_error_that_never_shows_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from trader.errors import ExchangeError

    async def main() -> str:
        async with FakeBitfinex(FakeSettings(seed=5)) as fake:
            fake.add_account(KEY, "another-secret", {"USD": 100})
            async with adapter(fake) as exchange:
                with pytest.raises(ExchangeError, match="check api_key and api_secret") as caught:
                    await exchange.balances()
                return str(caught.value)

    with caplog.at_level("DEBUG"):
        message = asyncio.run(main())
    assert SECRET not in message and SECRET not in caplog.text
