"""Conformance suite for exchanges: the :class:`~trader.interfaces.Exchange` contract.

Every first-party exchange (the simulated ``paper`` exchange, the Bitfinex adapter against its
fake) runs this suite, and a third-party adapter passes it before it claims to be one. Subclass
:class:`ExchangeConformance` in a test module (the class name must start with ``Test``) and
override three fixtures::

    import pytest
    from trader_sdk.testing.exchange import ExchangeConformance


    class TestMyExchange(ExchangeConformance):
        @pytest.fixture
        def exchange_factory(self, my_fake_server):
            return lambda: MyExchange(MyOptions(url=my_fake_server.url, key=..., secret=...))

        @pytest.fixture
        def tradable_symbol(self):
            return "BTC/USD"

        @pytest.fixture
        def advance_market(self, my_fake_server):
            async def advance(exchange):
                my_fake_server.clock.advance(60_000)  # let a minute pass, trades happen
                return my_fake_server.last_price("BTC/USD")

            return advance

* ``exchange_factory`` returns a zero-argument callable building a **new, unopened** exchange
  whose account is **funded**: its free balance in the quote currency of ``tradable_symbol``
  buys at least 20 orders of twice the market's minimum size at the current price. The suite
  only buys, so no base currency is needed. Orders are never shared between tests (each uses
  fresh client order ids), so one account may serve every test.
* ``tradable_symbol`` is a unified symbol (``BASE/QUOTE``) the account can trade.
* ``advance_market`` returns an async callable ``advance(exchange) -> Decimal``: let time and
  prices move one step (feed a candle, advance a fake exchange's clock) and return the current
  price of ``tradable_symbol``. The suite calls it once before trading to learn the price, and
  again while it waits for an order to fill. It promises: a market order submitted before is
  filled within :data:`ADVANCE_LIMIT` calls, and a buy limit order at half the returned price
  stays unfilled over those calls (so keep each step's price move well under 50 %).

The tests are plain synchronous functions, each running its scenario with :func:`asyncio.run`
(no async test plugin needed). Their names carry stable ids (``test_ex01_...``): refer to them in
bug reports, and to skip one on purpose override it in your subclass with a ``pytest.mark.skip``
that says why.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

import pytest

from trader.errors import OrderRejected
from trader.interfaces import Exchange, ExchangeCapabilities
from trader.model import (
    Balance,
    Market,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Precision,
    PrecisionMode,
    client_order_id,
)

__all__ = [
    "ADVANCE_LIMIT",
    "AdvanceMarket",
    "ExchangeConformance",
    "ExchangeFactory",
    "off_grid",
    "order_amount",
]

T = TypeVar("T")

#: Builds a new, unopened exchange over a funded account.
ExchangeFactory = Callable[[], Exchange]
#: Lets the market move one step; returns the current price of the tradable symbol.
AdvanceMarket = Callable[[Exchange], Awaitable[Decimal]]

#: How many ``advance_market`` steps a market order may take to fill completely.
ADVANCE_LIMIT = 5


def off_grid(value: Decimal, precision: Precision) -> Decimal:
    """Return a number just above ``value`` that does not fit ``precision``."""
    if precision.mode is PrecisionMode.TICK:
        candidate = value + precision.value / 10
    elif precision.mode is PrecisionMode.DECIMALS:
        candidate = value + Decimal(1).scaleb(-(int(precision.value) + 1))
    else:
        candidate = value + Decimal(1).scaleb(value.adjusted() - int(precision.value))
    assert precision.round(candidate) != candidate, f"{candidate} fits {precision}"
    return candidate


def order_amount(market: Market, price: Decimal) -> Decimal:
    """An amount on the market's grid, about twice its minimum size at ``price``."""
    need = Decimal(0)
    if market.min_amount is not None:
        need = market.min_amount
    if market.min_cost is not None:
        need = max(need, market.min_cost / price)
    if need == 0:
        need = Decimal(10) / price
    target = need * 2
    for _ in range(100):
        amount = market.amount_precision.round(target)
        if amount > 0 and market.check_order_size(amount, price) is None:
            return amount
        target *= Decimal("1.5")
    raise AssertionError(f"no valid amount found for {market.symbol} at {price}")


def _new_id(purpose: str) -> str:
    return client_order_id(f"conformance-{uuid.uuid4().hex}", int(time.time() * 1000), purpose)


class _Session:
    """One scenario's exchange, market and helpers."""

    def __init__(
        self,
        exchange: Exchange,
        symbol: str,
        market: Market,
        price: Decimal,
        advance: AdvanceMarket,
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.market = market
        self.price = price
        self.advance = advance
        self.far_price = market.round_price(price / 2)
        self.amount = order_amount(market, self.far_price)

    def order(
        self,
        type_: OrderType = OrderType.LIMIT,
        *,
        amount: Decimal | None = None,
        price: Decimal | None = None,
        purpose: str = "test",
    ) -> Order:
        """A buy order with a fresh client order id (a limit far below the market by default)."""
        return Order(
            client_order_id=_new_id(purpose),
            exchange=self.exchange.name,
            symbol=self.symbol,
            side=OrderSide.BUY,
            type=type_,
            amount=amount if amount is not None else self.amount,
            price=(price or self.far_price) if type_ is OrderType.LIMIT else None,
        )

    async def until_final(self, cid: str) -> Order:
        """Advance the market until the order ends; fail after :data:`ADVANCE_LIMIT` steps."""
        status = await self.exchange.order_status(cid)
        for _ in range(ADVANCE_LIMIT):
            if status is not None and status.status.is_final:
                return status
            self.price = await self.advance(self.exchange)
            status = await self.exchange.order_status(cid)
        assert status is not None, f"order {cid} vanished"
        assert status.status.is_final, (
            f"order {cid} still {status.status.value} after {ADVANCE_LIMIT} market steps "
            f"(filled {status.filled} of {status.amount})"
        )
        return status


def run_with_exchange(
    factory: ExchangeFactory,
    symbol: str,
    advance: AdvanceMarket,
    scenario: Callable[[_Session], Awaitable[T]],
) -> T:
    """Open a new exchange, learn the price, run ``scenario``, close the exchange."""

    async def main() -> T:
        exchange = factory()
        await exchange.open()
        try:
            markets = await exchange.markets()
            assert symbol in markets, f"tradable symbol {symbol} not among {sorted(markets)}"
            price = Decimal(await advance(exchange))
            assert price > 0, f"advance_market returned the price {price}"
            return await scenario(_Session(exchange, symbol, markets[symbol], price, advance))
        finally:
            await exchange.close()

    return asyncio.run(main())


class ExchangeConformance:
    """The exchange contract as tests. Subclass it and override the three fixtures."""

    @pytest.fixture
    def exchange_factory(self) -> ExchangeFactory:
        """Override: return a callable building a new, unopened exchange with a funded account."""
        pytest.fail(
            "override the exchange_factory fixture in your ExchangeConformance subclass: return "
            "a zero-argument callable that builds a new, unopened exchange each call"
        )

    @pytest.fixture
    def tradable_symbol(self) -> str:
        """Override: return a unified symbol the account can trade."""
        pytest.fail("override the tradable_symbol fixture: return a symbol such as 'BTC/USD'")

    @pytest.fixture
    def advance_market(self) -> AdvanceMarket:
        """Override: return ``async advance(exchange) -> Decimal`` (see the module docs)."""
        pytest.fail(
            "override the advance_market fixture: return an async callable that lets the "
            "market move one step and returns the current price of the tradable symbol"
        )

    def _run(
        self,
        factory: ExchangeFactory,
        symbol: str,
        advance: AdvanceMarket,
        scenario: Callable[[_Session], Awaitable[T]],
    ) -> T:
        return run_with_exchange(factory, symbol, advance, scenario)

    # -- markets and balances ----------------------------------------------------------------------

    def test_ex01_markets_have_precision_and_minimums(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """Every market is keyed by its unified symbol and states its precision; the tradable
        one is active and states a minimum order size."""

        async def scenario(s: _Session) -> None:
            markets = await s.exchange.markets()
            for symbol, market in markets.items():
                assert isinstance(market, Market), f"{symbol}: {market!r} is not a Market"
                assert market.symbol == symbol, f"market {market.symbol} filed under {symbol}"
                assert isinstance(market.price_precision, Precision)
                assert isinstance(market.amount_precision, Precision)
            market = markets[s.symbol]
            assert market.active, f"{s.symbol} is not active"
            assert market.min_amount is not None or market.min_cost is not None, (
                f"{s.symbol} states neither min_amount nor min_cost"
            )
            for value in (market.min_amount, market.min_cost):
                assert value is None or value > 0

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    def test_ex02_balances_are_consistent_and_funded(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """Balances are keyed by currency with ``total >= free >= 0``; the quote currency of
        the tradable market is funded."""

        async def scenario(s: _Session) -> None:
            balances = await s.exchange.balances()
            for currency, balance in balances.items():
                assert isinstance(balance, Balance)
                assert balance.currency == currency
                assert balance.total >= balance.free >= 0, balance
            quote = balances.get(s.market.quote)
            assert quote is not None, f"no {s.market.quote} balance: fund the test account"
            assert quote.free >= 20 * s.amount * s.price, (
                f"{s.market.quote} free {quote.free} cannot buy 20 orders of {s.amount} at "
                f"{s.price}: fund the test account"
            )

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    def test_ex03_capabilities_are_declared(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """The capability table names market and limit orders and sane request limits."""

        async def scenario(s: _Session) -> None:
            capabilities = s.exchange.capabilities
            assert isinstance(capabilities, ExchangeCapabilities)
            assert {OrderType.MARKET, OrderType.LIMIT} <= capabilities.order_types
            assert capabilities.max_candles_per_request > 0
            assert capabilities.requests_per_minute > 0

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    # -- orders ------------------------------------------------------------------------------------

    def test_ex04_market_order_fills_and_shows_in_own_trades(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """A market buy fills completely; its fills are in ``own_trades`` and add up to it."""

        async def scenario(s: _Session) -> None:
            before = await s.exchange.balances()
            order = s.order(OrderType.MARKET)
            placed = await s.exchange.submit_order(order)
            assert placed.client_order_id == order.client_order_id
            assert placed.symbol == s.symbol and placed.amount == order.amount
            final = await s.until_final(order.client_order_id)
            assert final.status is OrderStatus.FILLED, final
            assert final.filled == order.amount
            assert final.average_price is not None and final.average_price > 0
            fills = [
                f
                for f in await s.exchange.own_trades(0, s.symbol)
                if f.client_order_id == order.client_order_id
            ]
            assert fills, "own_trades shows no fill of the filled order"
            assert sum((f.amount for f in fills), Decimal(0)) == order.amount
            for fill in fills:
                assert fill.symbol == s.symbol and fill.side is OrderSide.BUY
                assert fill.price > 0 and fill.fee >= 0
            assert [f.time for f in fills] == sorted(f.time for f in fills)
            after = await s.exchange.balances()
            assert after[s.market.quote].total < before[s.market.quote].total
            still_open = await s.exchange.open_orders(s.symbol)
            assert order.client_order_id not in {o.client_order_id for o in still_open}

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    def test_ex05_limit_order_rests_then_cancels(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """A buy limit far below the market stays open as the market moves, then cancels."""

        async def scenario(s: _Session) -> None:
            order = s.order()
            placed = await s.exchange.submit_order(order)
            assert not placed.status.is_final, placed
            for _ in range(2):
                await s.advance(s.exchange)
            resting = await s.exchange.order_status(order.client_order_id)
            assert resting is not None and not resting.status.is_final, resting
            assert resting.filled == 0
            cancelled = await s.exchange.cancel_order(order.client_order_id)
            assert cancelled.status is OrderStatus.CANCELLED, cancelled
            assert cancelled.filled == 0
            status = await s.exchange.order_status(order.client_order_id)
            assert status is not None and status.status is OrderStatus.CANCELLED
            assert order.client_order_id not in {
                o.client_order_id for o in await s.exchange.open_orders()
            }

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    def test_ex06_open_orders_lists_resting_orders(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """``open_orders`` lists every resting order, with or without a symbol filter."""

        async def scenario(s: _Session) -> None:
            first, second = (
                s.order(),
                s.order(price=s.market.round_price(s.far_price * Decimal("0.9"))),
            )
            for order in (first, second):
                await s.exchange.submit_order(order)
            ids = {first.client_order_id, second.client_order_id}
            listed = await s.exchange.open_orders(s.symbol)
            assert ids <= {o.client_order_id for o in listed}
            assert all(o.symbol == s.symbol for o in listed)
            assert all(not o.status.is_final for o in listed)
            assert ids <= {o.client_order_id for o in await s.exchange.open_orders()}
            for order in (first, second):
                await s.exchange.cancel_order(order.client_order_id)
            remaining = {o.client_order_id for o in await s.exchange.open_orders(s.symbol)}
            assert not ids & remaining

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    def test_ex07_same_client_order_id_makes_one_order(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """Submitting a client order id twice returns the first order and creates no second:
        one resting limit order, and a market order filled once, not twice."""

        async def scenario(s: _Session) -> None:
            limit = s.order()
            first = await s.exchange.submit_order(limit)
            again = await s.exchange.submit_order(limit)
            assert again.client_order_id == first.client_order_id
            assert again.exchange_order_id == first.exchange_order_id
            listed = [
                o
                for o in await s.exchange.open_orders(s.symbol)
                if o.client_order_id == limit.client_order_id
            ]
            assert len(listed) == 1, listed
            await s.exchange.cancel_order(limit.client_order_id)

            market = s.order(OrderType.MARKET)
            await s.exchange.submit_order(market)
            await s.exchange.submit_order(market)
            final = await s.until_final(market.client_order_id)
            await s.exchange.submit_order(market)
            for _ in range(2):
                await s.advance(s.exchange)
            assert final.filled == market.amount
            fills = [
                f
                for f in await s.exchange.own_trades(0, s.symbol)
                if f.client_order_id == market.client_order_id
            ]
            assert sum((f.amount for f in fills), Decimal(0)) == market.amount, fills

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    def test_ex08_status_of_unknown_order_is_none(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """``order_status`` of a client order id never submitted is ``None``."""

        async def scenario(s: _Session) -> None:
            assert await s.exchange.order_status(_new_id("never-sent")) is None

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    # -- refusals ----------------------------------------------------------------------------------

    async def _assert_rejected(self, s: _Session, order: Order, what: str) -> None:
        with pytest.raises(OrderRejected):
            await s.exchange.submit_order(order)
        status = await s.exchange.order_status(order.client_order_id)
        assert status is None or status.status is OrderStatus.REJECTED, (
            f"{what}: the refused order exists as {status}"
        )
        assert order.client_order_id not in {
            o.client_order_id for o in await s.exchange.open_orders()
        }, f"{what}: the refused order is open"

    def test_ex09_price_off_precision_is_rejected(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """A price that does not fit the market's precision is refused, not re-rounded."""

        async def scenario(s: _Session) -> None:
            price = off_grid(s.far_price, s.market.price_precision)
            await self._assert_rejected(s, s.order(price=price), f"price {price}")

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    def test_ex10_amount_off_precision_is_rejected(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """An amount that does not fit the market's precision is refused, not re-rounded."""

        async def scenario(s: _Session) -> None:
            amount = off_grid(s.amount, s.market.amount_precision)
            await self._assert_rejected(s, s.order(amount=amount), f"amount {amount}")

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    def test_ex11_order_below_minimum_size_is_rejected(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """An order below the market's minimum amount or value is refused."""

        async def scenario(s: _Session) -> None:
            market, price = s.market, s.far_price
            limits = [market.min_amount] if market.min_amount is not None else []
            if market.min_cost is not None:
                limits.append(market.min_cost / price)
            if not limits:
                pytest.skip(f"{s.symbol} states no minimum order size")
            smallest = max(limits)
            amount = market.amount_precision.round(smallest / 3, down=True)
            if amount <= 0:
                pytest.skip(f"no amount below the minimum fits the precision of {s.symbol}")
            assert market.check_order_size(amount, price) is not None
            await self._assert_rejected(s, s.order(amount=amount), f"amount {amount}")

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    def test_ex12_cancel_of_a_finished_order_is_not_an_error(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """Cancelling a filled or an already cancelled order returns its final state."""

        async def scenario(s: _Session) -> None:
            market = s.order(OrderType.MARKET)
            await s.exchange.submit_order(market)
            await s.until_final(market.client_order_id)
            after = await s.exchange.cancel_order(market.client_order_id)
            assert after.status is OrderStatus.FILLED and after.filled == market.amount, after

            limit = s.order()
            await s.exchange.submit_order(limit)
            await s.exchange.cancel_order(limit.client_order_id)
            again = await s.exchange.cancel_order(limit.client_order_id)
            assert again.status is OrderStatus.CANCELLED, again

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)

    def test_ex13_resting_order_reserves_funds_until_cancelled(
        self,
        exchange_factory: ExchangeFactory,
        tradable_symbol: str,
        advance_market: AdvanceMarket,
    ) -> None:
        """A resting buy holds its cost out of the free quote balance; cancelling frees it."""

        async def scenario(s: _Session) -> None:
            quote = s.market.quote
            before = (await s.exchange.balances())[quote]
            order = s.order()
            await s.exchange.submit_order(order)
            during = (await s.exchange.balances())[quote]
            assert during.total == before.total
            assert during.free <= before.free - order.amount * s.far_price, (before, during)
            await s.exchange.cancel_order(order.client_order_id)
            after = (await s.exchange.balances())[quote]
            assert after.free == before.free and after.total == before.total, (before, after)

        self._run(exchange_factory, tradable_symbol, advance_market, scenario)
