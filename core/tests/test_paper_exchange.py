"""The simulated exchange: the fill model worked by hand, its accounting as properties, the
``paper`` plugin, and the exchange conformance suite run against it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trader.errors import ConfigError, ExchangeError, ModelError, OrderRejected
from trader.interfaces import CandleUpdate, Exchange, PluginContext
from trader.model import (
    Candle,
    Fill,
    Market,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Precision,
    PrecisionMode,
    SeriesKey,
    Timeframe,
)
from trader.paper import (
    FillSettings,
    FillTiming,
    PaperEngine,
    PaperExchange,
    PaperMarketOptions,
    PaperOptions,
    SlippageMode,
)
from trader.plugins import PluginHost
from trader.registry import Kind
from trader.stores.sqlite_candles import SqliteCandleOptions, SqliteCandleStore
from trader_sdk.testing.exchange import AdvanceMarket, ExchangeConformance, ExchangeFactory

D = Decimal
M = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % M
SERIES = SeriesKey("paper", "BTC/USD", Timeframe.parse("1m"))
BTC = Market(
    "BTC/USD",
    Precision(PrecisionMode.TICK, D("0.01")),
    Precision(PrecisionMode.TICK, D("0.0001")),
    min_amount=D("0.001"),
    min_cost=D("5"),
)


def candle(i: int, o: float, h: float, low: float, c: float, v: float = 100.0) -> Candle:
    return Candle(T0 + i * M, o, h, low, c, v)


def order(
    cid: str,
    side: str = "buy",
    type_: str = "market",
    amount: str = "1",
    price: str | None = None,
    stop: str | None = None,
    post_only: bool = False,
    symbol: str = "BTC/USD",
) -> Order:
    return Order(
        client_order_id=cid,
        exchange="paper",
        symbol=symbol,
        side=OrderSide(side),
        type=OrderType(type_),
        amount=D(amount),
        price=D(price) if price else None,
        stop_price=D(stop) if stop else None,
        post_only=post_only,
    )


def engine(
    usd: str = "1000",
    btc: str | None = None,
    markets: dict[str, Market] | None = None,
    **settings_: Any,
) -> PaperEngine:
    balances = {"USD": D(usd)}
    if btc is not None:
        balances["BTC"] = D(btc)
    defaults: dict[str, Any] = {"maker_fee": D("0.001"), "taker_fee": D("0.002")}
    defaults.update(settings_)
    return PaperEngine(markets or {"BTC/USD": BTC}, balances, FillSettings(**defaults))


def totals(e: PaperEngine) -> dict[str, tuple[Decimal, Decimal]]:
    return {c: (b.total, b.free) for c, b in e.balances().items()}


# -- the fill model, worked by hand ------------------------------------------------------------


def test_market_buy_fills_at_next_open_with_slippage_and_taker_fee() -> None:
    e = engine(slippage_mode=SlippageMode.BPS, slippage=D(10))
    assert e.on_candle("BTC/USD", candle(0, 100, 110, 90, 105), M) == []
    placed, fills = e.submit(order("a", amount="2"))
    assert fills == [] and placed.status is OrderStatus.ACKNOWLEDGED
    assert placed.created_at == T0 + M
    # reserved at the last close plus slippage and the taker fee
    assert e.reserved("a") == D(2) * D(105) * D("1.001") * D("1.002")
    assert totals(e)["USD"] == (D(1000), D(1000) - e.reserved("a"))
    (fill,) = e.on_candle("BTC/USD", candle(1, 106, 108, 104, 107), M)
    # 106 × 1.001 = 106.106, rounded to the 0.01 tick: 106.11
    assert (fill.price, fill.amount, fill.maker, fill.time) == (D("106.11"), D(2), False, T0 + M)
    assert fill.fee == D("212.22") * D("0.002") == D("0.42444")
    assert totals(e) == {"BTC": (D(2), D(2)), "USD": (D("787.35556"), D("787.35556"))}
    status = e.order("a")
    assert status is not None and status.status is OrderStatus.FILLED
    assert status.average_price == D("106.11") and status.filled == D(2)
    assert e.reserved("a") == 0 and e.open_orders() == []


def test_market_order_with_close_timing_fills_at_once_at_the_current_close() -> None:
    e = engine(timing=FillTiming.CLOSE)
    e.on_candle("BTC/USD", candle(0, 100, 110, 90, 105), M)
    placed, (fill,) = e.submit(order("a", amount="2"))
    assert placed.status is OrderStatus.FILLED
    assert (fill.price, fill.fee, fill.time) == (D(105), D("0.42"), T0 + M)
    assert totals(e)["USD"] == (D("789.58"), D("789.58"))


def test_market_order_before_any_candle_waits_for_one() -> None:
    for timing, price in ((FillTiming.NEXT_OPEN, D(100)), (FillTiming.CLOSE, D(105))):
        e = engine(timing=timing)
        _, fills = e.submit(order("a"))
        assert fills == [] and e.reserved("a") == 0
        (fill,) = e.on_candle("BTC/USD", candle(0, 100, 110, 90, 105), M)
        assert fill.price == price


def test_range_slippage_moves_takers_by_a_fraction_of_the_candle_range() -> None:
    e = engine(btc="1", slippage_mode=SlippageMode.RANGE, slippage=D("0.1"))
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    e.submit(order("buy", amount="1"))
    e.submit(order("sell", side="sell", amount="1"))
    fills = e.on_candle("BTC/USD", candle(1, 100, 110, 90, 100), M)
    assert [(f.side, f.price) for f in fills] == [(OrderSide.BUY, D(102)), (OrderSide.SELL, D(98))]
    # buy 1 at 102 (fee .204), sell 1 at 98 (fee .196)
    assert totals(e) == {"BTC": (D(1), D(1)), "USD": (D("995.600"), D("995.600"))}


def test_limit_buy_rests_then_fills_at_its_price_as_maker() -> None:
    e = engine()
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    e.submit(order("a", type_="limit", amount="1", price="95"))
    assert e.reserved("a") == D(95) * D("1.002")
    assert e.on_candle("BTC/USD", candle(1, 100, 101, 96, 97), M) == []
    (fill,) = e.on_candle("BTC/USD", candle(2, 97, 98, 95, 96), M)
    assert (fill.price, fill.maker, fill.fee) == (D(95), True, D("0.095"))
    assert totals(e) == {"BTC": (D(1), D(1)), "USD": (D("904.905"), D("904.905"))}


def test_limit_buy_gapped_through_fills_at_the_open_as_taker() -> None:
    e = engine()
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    e.submit(order("a", type_="limit", amount="1", price="95"))
    (fill,) = e.on_candle("BTC/USD", candle(1, 90, 92, 88, 91), M)
    assert (fill.price, fill.maker, fill.fee) == (D(90), False, D("0.180"))


def test_limit_sell_fills_when_the_high_reaches_it() -> None:
    e = engine(btc="2")
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    e.submit(order("a", side="sell", type_="limit", amount="2", price="105"))
    assert totals(e)["BTC"] == (D(2), D(0))
    (fill,) = e.on_candle("BTC/USD", candle(1, 100, 105, 99, 104), M)
    assert (fill.price, fill.maker) == (D(105), True)
    assert totals(e) == {"BTC": (D(0), D(0)), "USD": (D("1209.790"), D("1209.790"))}


def test_marketable_limit_with_close_timing_fills_at_the_close() -> None:
    e = engine(timing=FillTiming.CLOSE)
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    _, (fill,) = e.submit(order("a", type_="limit", amount="1", price="101"))
    assert (fill.price, fill.maker) == (D(100), False)


def test_post_only_that_would_take_is_rejected_and_otherwise_fills_as_maker() -> None:
    e = engine()
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    with pytest.raises(OrderRejected, match="post-only order at 100 would take"):
        e.submit(order("a", type_="limit", price="100", post_only=True))
    assert e.order("a") is None
    e.submit(order("b", type_="limit", price="95", post_only=True))
    (fill,) = e.on_candle("BTC/USD", candle(1, 90, 92, 88, 91), M)
    assert (fill.price, fill.maker) == (D(95), True)


def test_stop_buy_triggers_at_its_price_and_a_gap_fills_at_the_open() -> None:
    e = engine(slippage_mode=SlippageMode.BPS, slippage=D(100))
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    e.submit(order("a", type_="stop", amount="1", stop="105"))
    e.submit(order("b", type_="stop", amount="1", stop="120"))
    assert e.on_candle("BTC/USD", candle(1, 100, 104, 99, 103), M) == []
    (fill,) = e.on_candle("BTC/USD", candle(2, 103, 106, 102, 106), M)
    assert (fill.client_order_id, fill.price, fill.maker) == ("a", D("106.05"), False)
    (fill,) = e.on_candle("BTC/USD", candle(3, 125, 130, 124, 128), M)
    assert (fill.client_order_id, fill.price) == ("b", D("126.25"))


def test_stop_sell_triggers_when_the_low_reaches_it() -> None:
    e = engine(btc="1")
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    e.submit(order("a", side="sell", type_="stop", amount="1", stop="95"))
    (fill,) = e.on_candle("BTC/USD", candle(1, 99, 100, 94, 95), M)
    assert fill.price == D(95) and fill.fee == D("0.190")
    assert totals(e)["USD"] == (D("1094.810"), D("1094.810"))


def test_stop_already_reached_with_close_timing_fills_at_the_close() -> None:
    e = engine(timing=FillTiming.CLOSE, btc="1")
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    _, (fill,) = e.submit(order("a", side="sell", type_="stop", amount="1", stop="101"))
    assert fill.price == D(100)


def test_partial_fills_are_capped_at_a_fraction_of_candle_volume() -> None:
    e = engine(volume_fraction=D("0.1"), usd="10000")
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100, v=10), M)
    e.submit(order("a", amount="2.5"))
    e.submit(order("b", amount="0.5"))
    fills = e.on_candle("BTC/USD", candle(1, 100, 101, 99, 100, v=10), M)
    assert [(f.client_order_id, f.amount) for f in fills] == [("a", D(1))]
    status = e.order("a")
    assert status is not None and status.status is OrderStatus.PARTIALLY_FILLED
    fills = e.on_candle("BTC/USD", candle(2, 110, 111, 109, 110, v=10), M)
    assert [(f.client_order_id, f.amount) for f in fills] == [("a", D(1))]
    fills = e.on_candle("BTC/USD", candle(3, 120, 121, 119, 120, v=7), M)
    assert [(f.client_order_id, f.amount) for f in fills] == [("a", D("0.5")), ("b", D("0.2"))]
    status = e.order("a")
    assert status is not None and status.status is OrderStatus.FILLED
    assert status.average_price == (D(100) + D(110) + D(60)) / D("2.5")
    assert e.open_orders() == [e.order("b")]


def test_market_buy_short_of_funds_fills_what_it_can_and_cancels_the_rest() -> None:
    e = engine(usd="1000", taker_fee=D(0))
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    e.submit(order("a", amount="9"))
    (fill,) = e.on_candle("BTC/USD", candle(1, 200, 201, 199, 200), M)
    assert fill.amount == D(5) and fill.price == D(200)
    status = e.order("a")
    assert status is not None and status.status is OrderStatus.CANCELLED
    assert status.filled == D(5)
    assert totals(e) == {"BTC": (D(5), D(5)), "USD": (D(0), D(0))}


def test_forming_candles_and_other_timeframes_fill_nothing() -> None:
    e = engine()
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    e.submit(order("a"))
    forming = Candle(T0 + M, 100, 101, 99, 100, 5, closed=False)
    assert e.on_candle("BTC/USD", forming, M) == []
    assert e.on_candle("BTC/USD", Candle(T0 + 60 * M, 100, 101, 99, 100, 5), 60 * M) == []
    assert e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M) == []  # not newer
    assert len(e.on_candle("BTC/USD", candle(1, 100, 101, 99, 100), M)) == 1


@pytest.mark.parametrize(
    ("made", "message"),
    [
        (order("x", symbol="ETH/USD"), "no market ETH/USD"),
        (order("x", amount="0.0005"), "amount 0.0005 is below the minimum 0.001"),
        (order("x", amount="0.12345"), "amount 0.12345 is not a multiple of the amount"),
        (order("x", type_="limit", price="100.001"), "price 100.001 does not fit"),
        (order("x", type_="stop", stop="100.001"), "stop_price 100.001 does not fit"),
        (order("x", type_="limit", amount="0.01", price="100"), "order value 1.00 is below"),
        (order("x", type_="limit", amount="20", price="100"), "insufficient funds, needs"),
        (order("x", side="sell", amount="1"), "insufficient funds, needs 1 BTC"),
    ],
)
def test_orders_that_break_the_rules_are_rejected_with_a_reason(made: Order, message: str) -> None:
    e = engine()
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    before = totals(e)
    with pytest.raises(OrderRejected, match=message):
        e.submit(made)
    assert e.order("x") is None and totals(e) == before


def test_inactive_market_rejects_orders() -> None:
    closed = Market("BTC/USD", BTC.price_precision, BTC.amount_precision, active=False)
    with pytest.raises(OrderRejected, match="not active"):
        engine(markets={"BTC/USD": closed}).submit(order("x"))


def test_submit_is_idempotent_and_cancel_releases_the_reservation() -> None:
    e = engine()
    e.on_candle("BTC/USD", candle(0, 100, 101, 99, 100), M)
    first, _ = e.submit(order("a", type_="limit", price="90"))
    again, _ = e.submit(order("a", type_="limit", amount="3", price="80"))
    assert again == first and len(e.open_orders()) == 1
    cancelled = e.cancel("a")
    assert cancelled.status is OrderStatus.CANCELLED
    assert totals(e) == {"USD": (D(1000), D(1000))}
    assert e.cancel("a") == cancelled
    with pytest.raises(ExchangeError, match="no order with client order id 'zz'"):
        e.cancel("zz")


def test_fill_settings_refuse_nonsense() -> None:
    with pytest.raises(ModelError, match="taker_fee"):
        FillSettings(taker_fee=D(1))
    with pytest.raises(ModelError, match="volume_fraction"):
        FillSettings(volume_fraction=D(0))
    with pytest.raises(ModelError, match="initial balance"):
        PaperEngine({}, {"USD": D(-1)})


# -- accounting invariants, as properties ------------------------------------------------------

_prices = st.integers(min_value=50, max_value=150)


@st.composite
def _candles(draw: st.DrawFn) -> tuple[float, float, float, float, float]:
    a, b, c, d = (draw(_prices) for _ in range(4))
    low, high = min(a, b, c, d), max(a, b, c, d)
    return float(b), float(high), float(low), float(c), float(draw(st.integers(0, 20)))


_actions = st.one_of(
    st.tuples(st.just("candle"), _candles()),
    st.tuples(st.just("candle"), _candles()),
    st.tuples(
        st.just("order"),
        st.sampled_from(["buy", "sell"]),
        st.sampled_from(["market", "limit", "stop"]),
        st.integers(min_value=1, max_value=150),  # amount in 0.01 units
        _prices,
    ),
    st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=30)),
)


@settings(max_examples=200)
@given(
    actions=st.lists(_actions, min_size=4, max_size=40),
    timing=st.sampled_from(list(FillTiming)),
    slippage=st.sampled_from(
        [(SlippageMode.NONE, D(0)), (SlippageMode.BPS, D(25)), (SlippageMode.RANGE, D("0.2"))]
    ),
    volume_fraction=st.sampled_from([None, D("0.5"), D("0.05")]),
    fees=st.sampled_from([(D(0), D(0)), (D("0.001"), D("0.002")), (D("0.0025"), D("0.001"))]),
)
def test_accounting_invariants_hold_for_any_orders_and_candles(
    actions: list[tuple[Any, ...]],
    timing: FillTiming,
    slippage: tuple[SlippageMode, Decimal],
    volume_fraction: Decimal | None,
    fees: tuple[Decimal, Decimal],
) -> None:
    market = Market(
        "BTC/USD",
        Precision(PrecisionMode.TICK, D("0.01")),
        Precision(PrecisionMode.TICK, D("0.01")),
        min_amount=D("0.01"),
    )
    e = PaperEngine(
        {"BTC/USD": market},
        {"USD": D(1000), "BTC": D(2)},
        FillSettings(timing, fees[0], fees[1], slippage[0], slippage[1], volume_fraction),
    )
    start = {"USD": D(1000), "BTC": D(2)}
    ids: list[str] = []
    all_fills: list[Fill] = []
    step = 0
    for action in actions:
        before = {c: b.total for c, b in e.balances().items()}
        if action[0] == "candle":
            step += 1
            fills = e.on_candle("BTC/USD", Candle(T0 + step * M, *action[1]), M)
        elif action[0] == "order":
            _, side, type_, amount, price = action
            cid = f"o{len(ids)}"
            made = Order(
                cid,
                "paper",
                "BTC/USD",
                OrderSide(side),
                OrderType(type_),
                D(amount) / 100,
                price=D(price) if type_ == "limit" else None,
                stop_price=D(price) if type_ == "stop" else None,
            )
            try:
                _, fills = e.submit(made)
            except OrderRejected:
                assert e.order(cid) is None
                fills = []
            else:
                ids.append(cid)
        else:
            fills = []
            if ids:
                cid = ids[action[1] % len(ids)]
                e.cancel(cid)
                assert e.reserved(cid) == 0
        all_fills.extend(fills)
        after = {c: b.total for c, b in e.balances().items()}
        # each call's fills explain the change of cash and position exactly
        flow = {"USD": D(0), "BTC": D(0)}
        for fill in fills:
            sign = 1 if fill.side is OrderSide.BUY else -1
            flow["USD"] -= sign * fill.cost + fill.fee
            flow["BTC"] += sign * fill.amount
            rate = fees[0] if fill.maker else fees[1]
            assert fill.fee == fill.cost * rate
        for currency in ("USD", "BTC"):
            assert after.get(currency, D(0)) == before.get(currency, D(0)) + flow[currency]
        if len(fills) == 1:
            # cash + position value = equity at the fill price, less the fee
            p = fills[0].price
            equity_before = before.get("USD", D(0)) + before.get("BTC", D(0)) * p
            equity_after = after.get("USD", D(0)) + after.get("BTC", D(0)) * p
            assert equity_after == equity_before - fills[0].fee
        # never negative; reserved exactly what open orders hold
        held = {"USD": D(0), "BTC": D(0)}
        for open_order in e.open_orders():
            currency = "USD" if open_order.side is OrderSide.BUY else "BTC"
            held[currency] += e.reserved(open_order.client_order_id)
            assert not open_order.status.is_final
        for currency, balance in e.balances().items():
            assert balance.total >= 0 and balance.free >= 0, balance
            assert balance.used == held[currency], (currency, balance, held)
        for cid in ids:
            status = e.order(cid)
            assert status is not None
            assert 0 <= status.filled <= status.amount
            if status.status.is_final:
                assert e.reserved(cid) == 0
    event(f"fills: {'none' if not all_fills else '1-5' if len(all_fills) <= 5 else 'over 5'}")
    partial = any(o.status is OrderStatus.PARTIALLY_FILLED for o in e.orders())
    event(f"partially filled: {partial}")
    # fees add up: what left the account is the trades' net cost plus every fee
    fees_paid = sum((f.fee for f in all_fills), D(0))
    net_buys = sum((f.cost if f.side is OrderSide.BUY else -f.cost for f in all_fills), D(0))
    final = e.balances()
    assert final["USD"].total == start["USD"] - net_buys - fees_paid
    filled = {
        cid: sum((f.amount for f in all_fills if f.client_order_id == cid), D(0)) for cid in ids
    }
    for cid in ids:
        status = e.order(cid)
        assert status is not None and status.filled == filled[cid]
    for cid in ids:
        e.cancel(cid)
    assert all(b.used == 0 for b in e.balances().values())


def test_the_same_inputs_give_the_same_fills() -> None:
    def run() -> list[Fill]:
        e = engine(volume_fraction=D("0.3"), slippage_mode=SlippageMode.RANGE, slippage=D("0.1"))
        out: list[Fill] = []
        for i in range(30):
            if i % 4 == 0:
                out += e.submit(order(f"o{i}", amount="0.5"))[1]
            out += e.on_candle("BTC/USD", candle(i, 100 + i, 102 + i, 99 + i, 101 + i, 3), M)
        return out

    assert run() == run() and len(run()) > 5


# -- the paper plugin ----------------------------------------------------------------------------


def test_the_default_plugin_registers_paper_and_builds_it_from_options(tmp_path: Path) -> None:
    host = PluginHost().load()
    registration = host.registry.get(Kind.EXCHANGE, "paper")
    assert registration.plugin == "paper" and registration.distribution == "trader"
    context = PluginContext(data_dir=tmp_path, config_dir=tmp_path)
    exchange = host.build(
        Kind.EXCHANGE,
        "paper",
        {
            "markets": {"ETH/EUR": {"price_precision": {"mode": "significant", "value": 5}}},
            "balances": {"EUR": 500},
            "taker_fee": 0.0015,
            "fill_timing": "close",
        },
        context,
    )
    assert isinstance(exchange, PaperExchange)
    markets = asyncio.run(exchange.markets())
    assert list(markets) == ["ETH/EUR"]
    assert markets["ETH/EUR"].price_precision == Precision(PrecisionMode.SIGNIFICANT, D(5))
    assert markets["ETH/EUR"].amount_precision == Precision(PrecisionMode.TICK, D("0.00000001"))
    assert exchange.engine.settings.taker_fee == D("0.0015")
    assert exchange.engine.settings.timing is FillTiming.CLOSE
    balances = asyncio.run(exchange.balances())
    assert balances["EUR"].total == D(500)
    with pytest.raises(ConfigError, match="slipage"):
        host.build(Kind.EXCHANGE, "paper", {"slipage_bps": 5}, context)


def test_options_report_mistakes() -> None:
    with pytest.raises(ValidationError, match="not both"):
        PaperOptions(slippage_bps=D(5), slippage_range=D("0.1"))
    with pytest.raises(ValidationError, match="invalid symbol"):
        PaperOptions(markets={"btcusd": PaperMarketOptions()})
    with pytest.raises(ValidationError, match="tick"):
        PaperMarketOptions.model_validate({"price_precision": 0})
    assert PaperMarketOptions.model_validate({"price_precision": "0.5"}).price_precision.value == D(
        "0.5"
    )
    assert PaperOptions(slippage_range=D("0.1")).fill_settings().slippage_mode is SlippageMode.RANGE


def _feed(exchange: PaperExchange, series: SeriesKey, count: int) -> None:
    for i in range(count):
        exchange.on_candle(series, candle(i, 100 + i, 101 + i, 99 + i, 100.5 + i, 10))


async def _collect(exchange: PaperExchange, symbol: str, start: int, end: int) -> list[int]:
    pages = [p async for p in exchange.fetch_candles(symbol, "1m", start, end)]
    return [int(t) for page in pages for t in page.time]


def test_market_data_comes_from_the_candles_fed() -> None:
    exchange = PaperExchange(PaperOptions(keep_candles=1000))
    _feed(exchange, SERIES, 2500)
    exchange.on_candle(SERIES, Candle(T0 + 2500 * M, 1, 1, 1, 1, 1, closed=False))

    async def main() -> list[int]:
        pages = [p async for p in exchange.fetch_candles("BTC/USD", "1m", T0, T0 + 9999 * M)]
        assert all(len(p) <= 1000 for p in pages)
        return [int(t) for page in pages for t in page.time]

    times = asyncio.run(main())
    # the latest keep_candles..2×keep_candles are kept; the forming candle is not returned
    assert times == [T0 + i * M for i in range(2500 - len(times), 2500)]
    assert 1000 <= len(times) <= 2000
    assert asyncio.run(_collect(exchange, "ETH/USD", T0, T0 + M)) == []


def test_market_data_comes_from_the_candle_store_when_given(tmp_path: Path) -> None:
    context = PluginContext(data_dir=tmp_path, config_dir=tmp_path)
    store = SqliteCandleStore(SqliteCandleOptions(path=str(tmp_path / "c.db")), context)
    stored = SeriesKey("bitfinex", "BTC/USD", Timeframe.parse("1m"))

    async def main() -> list[int]:
        async with store:
            await store.write(stored, [candle(i, 100, 101, 99, 100) for i in range(1500)])
            exchange = PaperExchange(
                PaperOptions(candle_exchange="bitfinex"), context, candle_store=store
            )
            return await _collect(exchange, "BTC/USD", T0 + 10 * M, T0 + 1210 * M)

    assert asyncio.run(main()) == [T0 + i * M for i in range(10, 1210)]


def test_stream_candles_sees_what_is_fed_until_closed() -> None:
    async def main() -> list[CandleUpdate]:
        exchange = PaperExchange()
        other = SeriesKey("paper", "ETH/USD", Timeframe.parse("1m"))
        seen: list[CandleUpdate] = []

        async def listen() -> None:
            async for update in exchange.stream_candles([SERIES]):
                seen.append(update)

        task = asyncio.create_task(listen())
        await asyncio.sleep(0)
        _feed(exchange, SERIES, 3)
        _feed(exchange, other, 2)
        await exchange.close()
        await asyncio.wait_for(task, 5)
        return seen

    seen = asyncio.run(main())
    assert [(u.series, u.candle.time) for u in seen] == [(SERIES, T0 + i * M) for i in range(3)]


def test_paper_exchange_fills_through_the_interface() -> None:
    async def main() -> None:
        async with PaperExchange() as exchange:
            exchange.on_candle(SERIES, candle(0, 100, 101, 99, 100))
            placed = await exchange.submit_order(order("a", amount="0.5"))
            assert placed.exchange == "paper" and placed.exchange_order_id == "paper-1"
            (fill,) = exchange.on_candle(SERIES, candle(1, 102, 103, 101, 102))
            assert await exchange.own_trades(T0 + M) == [fill]
            assert await exchange.own_trades(T0 + 2 * M) == []
            assert await exchange.own_trades(0, "ETH/USD") == []
            status = await exchange.order_status("a")
            assert status is not None and status.status is OrderStatus.FILLED

    asyncio.run(main())


# -- the exchange conformance suite, against paper -----------------------------------------------


def _advance_paper(price_step: float = 0.5) -> AdvanceMarket:
    async def advance(exchange: Exchange) -> Decimal:
        assert isinstance(exchange, PaperExchange)
        series = SeriesKey("paper", "BTC/USD", Timeframe.parse("1m"))
        step = (exchange.engine.now - T0) // M if exchange.engine.now else 0
        close = 100 + price_step * (step % 4)
        exchange.on_candle(series, Candle(T0 + step * M, 100, close + 1, 99, close, 10))
        return Decimal(repr(close))

    return advance


def _factory(**options: Any) -> Callable[[Any], ExchangeFactory]:
    def fixture(self: Any) -> ExchangeFactory:
        return lambda: PaperExchange(PaperOptions(**options))

    return fixture


class TestPaperConformance(ExchangeConformance):
    """Defaults: market orders at the next open."""

    exchange_factory = pytest.fixture(_factory())

    @pytest.fixture
    def tradable_symbol(self) -> str:
        return "BTC/USD"

    @pytest.fixture
    def advance_market(self) -> AdvanceMarket:
        return _advance_paper()


class TestPaperCloseTimingConformance(TestPaperConformance):
    """Market orders fill at once at the current close."""

    exchange_factory = pytest.fixture(_factory(fill_timing="close", slippage_bps=D(5)))


class TestPaperPartialFillConformance(TestPaperConformance):
    """A volume cap makes market orders fill over several candles."""

    exchange_factory = pytest.fixture(_factory(volume_fraction=D("0.002")))


class TestPaperBitfinexLikeConformance(TestPaperConformance):
    """Bitfinex-like precision: 5 significant digits for prices, 8 decimals for amounts."""

    exchange_factory = pytest.fixture(
        _factory(
            markets={
                "BTC/USD": PaperMarketOptions.model_validate(
                    {
                        "price_precision": {"mode": "significant", "value": 5},
                        "amount_precision": {"mode": "decimals", "value": 8},
                        "min_amount": "0.0002",
                        "min_cost": None,
                    }
                )
            }
        )
    )
