"""Accounting invariants of the backtest engine, as hypothesis properties.

Over random candles, random target schedules and random fill settings and sizing:
cash + position value = equity on every candle; the fees add up (per fill, in total, and in
the round trips); no balance ever goes negative (spot, no margin); and the fast path and the
paper exchange give the same fills and equity.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader.backtest import (
    Account,
    BacktestSettings,
    Decisions,
    Sizing,
    SizingMode,
    run_decisions,
)
from trader.errors import ModelError
from trader.model import CandleArrays, Market, OrderSide
from trader.model.market import Precision
from trader.paper import FillSettings, FillTiming, SlippageMode

D = Decimal
MARKET = Market("BTC/USD", Precision("decimals", D(2)), Precision("decimals", D(5)))
MARKETS = [
    MARKET,
    Market("BTC/USD", Precision("decimals", D(2)), Precision("decimals", D(3)), D("0.01")),
    Market("BTC/USD", Precision("significant", D(4)), Precision("tick", D("0.005"))),
]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[CandleArrays, Decisions, BacktestSettings, Market]:
    size = draw(st.integers(2, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.02, size))), 2)
    open_ = np.round(np.concatenate([[100.0], close[:-1]]), 2)
    spread = np.round(np.abs(rng.normal(0, 0.01, size)) * close, 2)
    high = np.maximum(open_, close) + spread
    low = np.maximum(np.minimum(open_, close) - spread, 0.01)
    candles = CandleArrays(
        np.arange(size, dtype=np.int64) * 60_000,
        open_,
        np.round(high, 2),
        np.round(low, 2),
        close,
        np.full(size, 50.0),
    )
    choices = draw(
        st.lists(
            st.sampled_from([np.nan, np.nan, -1.0, 0.0, 0.25, 0.5, 1.0]),
            min_size=size,
            max_size=size,
        )
    )
    mode = draw(st.sampled_from(list(SizingMode)))
    value = {
        SizingMode.FRACTION_OF_EQUITY: D(draw(st.sampled_from(["1", "0.5", "0.9"]))),
        SizingMode.FIXED_QUOTE: D(draw(st.sampled_from(["100", "2500", "50000"]))),
        SizingMode.FIXED_BASE: D(draw(st.sampled_from(["0.5", "3", "500"]))),
    }[mode]
    slippage_mode = draw(st.sampled_from(list(SlippageMode)))
    slippage = {SlippageMode.NONE: D(0), SlippageMode.BPS: D(15), SlippageMode.RANGE: D("0.1")}
    fills = FillSettings(
        timing=draw(st.sampled_from(list(FillTiming))),
        maker_fee=D("0.001"),
        taker_fee=D(draw(st.sampled_from(["0", "0.001", "0.0025"]))),
        slippage_mode=slippage_mode,
        slippage=slippage[slippage_mode],
    )
    backtest = BacktestSettings(
        initial_cash=D(draw(st.sampled_from(["1000", "10000", "123.45"]))),
        fills=fills,
        sizing=Sizing(mode, value, whole_units=draw(st.booleans())),
    )
    decisions = Decisions(candles.time, np.array(choices, dtype=np.float64))
    return candles, decisions, backtest, draw(st.sampled_from(MARKETS))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_accounting_invariants(
    scenario: tuple[CandleArrays, Decisions, BacktestSettings, Market],
) -> None:
    candles, decisions, backtest, market = scenario
    result = run_decisions(decisions, candles, market, backtest)
    # replay the fills by hand in decimals: balances never negative, fees as charged
    cash, held, fees = backtest.initial_cash, D(0), D(0)
    for fill in result.fills:
        rate = backtest.fills.taker_fee
        assert fill.fee == fill.amount * fill.price * rate
        if fill.side is OrderSide.BUY:
            cash -= fill.amount * fill.price + fill.fee
            held += fill.amount
        else:
            cash += fill.amount * fill.price - fill.fee
            held -= fill.amount
        fees += fill.fee
        assert cash >= 0 and held >= 0
    assert (cash, held) == (result.final_cash, result.final_position)
    assert fees == result.fees == sum((t.fees for t in result.trades), D(0))
    assert abs(result.metrics.fees - float(fees)) <= 1e-9 * max(1.0, float(fees))
    # cash + position value = equity, every candle; nothing negative
    assert np.all(result.cash >= 0) and np.all(result.position >= 0)
    np.testing.assert_allclose(result.equity, result.cash + result.position * candles.close)
    final = float(result.final_equity)
    assert abs(final - float(result.equity[-1])) <= 1e-9 * max(1.0, final)
    # the round trips account for every euro: pnl sums to the change in equity
    pnl = sum((t.pnl for t in result.trades), D(0))
    assert pnl == result.final_equity - backtest.initial_cash
    # the fast path equals the paper exchange
    exact = run_decisions(
        decisions,
        candles,
        market,
        BacktestSettings(
            initial_cash=backtest.initial_cash,
            fills=backtest.fills,
            sizing=backtest.sizing,
            exact=True,
        ),
    )
    assert exact.fills == result.fills
    np.testing.assert_array_equal(exact.equity, result.equity)


def test_account_refuses_a_negative_balance() -> None:
    account = Account(D(100))
    account.apply(OrderSide.BUY, D(1), D(99), D("0.5"))
    assert (account.cash, account.position, account.fees) == (D("0.5"), D(1), D("0.5"))
    with pytest.raises(ModelError, match="cannot go negative"):
        account.apply(OrderSide.BUY, D(1), D(1), D(0))
    with pytest.raises(ModelError, match="cannot go negative"):
        account.apply(OrderSide.SELL, D(2), D(99), D(0))
    assert (account.cash, account.position) == (D("0.5"), D(1))


def test_closed_trade_figures_agree_with_the_round_trips() -> None:
    from trader.backtest import closed_trade_figures
    from trader.backtest.engine import Decisions as Columns

    data = CandleArrays(
        np.arange(200, dtype=np.int64) * 60_000,
        *(np.round(100 + 10 * np.sin(np.arange(200) / 7.0), 2) for _ in range(4)),
        np.full(200, 5.0),
    )
    target = np.where(np.arange(200) % 9 < 4, 1.0, 0.0)
    result = run_decisions(Columns(data.time, target), data, MARKET, BacktestSettings())
    closed = [t for t in result.trades if not t.open]
    pnl, cost = closed_trade_figures(result.fill_rows.rows)
    assert len(closed) > 10
    np.testing.assert_allclose(pnl, [float(t.pnl) for t in closed], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(cost, [float(t.cost) for t in closed], rtol=1e-12)
    assert result.metrics.trades == len(closed)
