"""Metrics against hand computations (conventions in trader.backtest.metrics)."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from trader.backtest import closed_trade_figures, compute_metrics, periods_per_year, round_trips
from trader.model import Fill, OrderSide

D = Decimal
DAY = 86_400_000


def fill(n: int, side: OrderSide, amount: str, price: str, fee: str) -> Fill:
    return Fill(f"f{n}", f"c{n}", "paper", "BTC/USD", side, D(amount), D(price), D(fee), "USD", n)


BUY, SELL = OrderSide.BUY, OrderSide.SELL
FILLS = [
    fill(1, BUY, "1", "100", "0.1"),
    fill(2, SELL, "1", "110", "0.11"),  # +10 - 0.21 = 9.79
    fill(3, BUY, "2", "50", "0.1"),
    fill(4, SELL, "1", "46", "0.046"),
    fill(5, SELL, "1", "44", "0.044"),  # 90 - 100 - 0.19 = -10.19
    fill(6, BUY, "1", "10", "0"),
    fill(7, SELL, "1", "12", "0"),  # +2
    fill(8, BUY, "1", "20", "0.02"),  # still open
]


def test_round_trips_by_hand() -> None:
    trades = round_trips(FILLS, last_price=D(25))
    assert [t.pnl for t in trades] == [D("9.79"), D("-10.19"), D(2), D("4.98")]
    assert [t.open for t in trades] == [False, False, False, True]
    second = trades[1]
    assert (second.entry_price, second.exit_price, second.amount) == (D(50), D(45), D(2))
    assert (second.cost, second.proceeds, second.fees, second.fills) == (
        D("100.1"),
        D(90),
        D("0.19"),
        3,
    )
    assert second.return_ == D("-10.19") / D("100.1")
    assert (trades[1].entry_time, trades[1].exit_time, trades[3].exit_time) == (3, 5, None)


def test_metrics_by_hand() -> None:
    equity = np.array([100.0, 110.0, 99.0, 99.0, 121.0])
    position = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    rows = [(f.time, f.side is BUY, f.amount, f.price, f.fee) for f in FILLS]
    pnl, cost = closed_trade_figures(rows)
    # the closed trades of test_round_trips_by_hand
    np.testing.assert_allclose(pnl, [9.79, -10.19, 2.0])
    np.testing.assert_allclose(cost, [100.1, 100.1, 10.0])
    m = compute_metrics(equity, position, np.arange(5) * DAY, 100.0, pnl, cost, D("0.51"), DAY)
    # daily candles: 365 periods a year
    assert m.periods_per_year == 365 == periods_per_year(DAY)
    # returns: 100/100-1 = 0, 110/100-1 = 0.1, 99/110-1 = -0.1, 0, 121/99-1 = 0.2222...
    r = [0.0, 0.1, -0.1, 0.0, 121 / 99 - 1]
    mean = sum(r) / 5
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 4)
    downside = math.sqrt((0.1**2) / 5)
    assert m.total_return == pytest.approx(0.21)
    assert m.final_equity == 121.0
    assert m.sharpe == pytest.approx(mean / std * math.sqrt(365))
    assert m.sortino == pytest.approx(mean / downside * math.sqrt(365))
    assert m.cagr == pytest.approx(1.21 ** (365 / 5) - 1)
    # peak 110 on day 1; 99 on days 2 and 3 is 10 % below it; 121 recovers
    assert m.max_drawdown == pytest.approx(0.1)
    assert (m.max_drawdown_candles, m.max_drawdown_ms) == (2, 2 * DAY)
    assert m.calmar == pytest.approx((1.21 ** (365 / 5) - 1) / 0.1)
    assert m.exposure == pytest.approx(3 / 5)
    # closed trades: 9.79, -10.19, 2 (the open one does not count)
    assert m.trades == 3
    assert m.win_rate == pytest.approx(2 / 3)
    assert m.profit_factor == pytest.approx((9.79 + 2) / 10.19)
    assert m.average_trade == pytest.approx((9.79 - 10.19 + 2) / 3)
    assert (m.best_trade, m.worst_trade) == (pytest.approx(9.79), pytest.approx(-10.19))
    returns = [9.79 / 100.1, -10.19 / 100.1, 2 / 10]
    assert m.average_trade_return == pytest.approx(sum(returns) / 3)
    assert m.fees == pytest.approx(0.51)
    assert m.as_dict()["trades"] == 3


def test_undefined_ratios_are_none() -> None:
    flat = np.full(4, 100.0)
    none = np.empty(0)
    m = compute_metrics(flat, np.zeros(4), np.arange(4) * 60_000, 100.0, none, none, D(0), 60_000)
    assert m.periods_per_year == 525_600
    assert (m.sharpe, m.sortino, m.calmar, m.win_rate, m.profit_factor) == (None,) * 5
    assert (m.total_return, m.max_drawdown, m.max_drawdown_candles, m.trades) == (0, 0, 0, 0)
    assert m.average_trade is None and m.exposure == 0
    # a loss that never recovers: the drawdown lasts to the end
    falling = np.array([100.0, 90.0, 80.0])
    m = compute_metrics(falling, np.ones(3), np.arange(3) * DAY, 100.0, none, none, D(0), DAY)
    assert m.max_drawdown == pytest.approx(0.2) and m.max_drawdown_candles == 2
    assert m.sortino is not None and m.sortino < 0
