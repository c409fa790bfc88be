"""A hand-worked backtest: 12 candles, four decisions, every fill, fee and equity by hand.

Market: prices to 2 decimals, amounts to 4 decimals (rounded down). Taker fee 0.2 %, no
slippage, 1,000 USD to start. Decisions: target 1 on candle 1, -1 (flat on spot) on candle 4,
0.5 on candle 7, 0 on candle 10. The arithmetic of each case is written out below.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

import numpy as np
import pytest

from trader.backtest import BacktestSettings, Decisions, Sizing, SizingMode, run_decisions
from trader.model import CandleArrays, Market, OrderSide
from trader.model.market import Precision
from trader.model.order import client_order_id
from trader.paper import FillSettings, FillTiming

D = Decimal
MIN = 60_000
#            open   high   low    close
ROWS = [
    (100.0, 101.0, 99.0, 100.0),  # 0
    (100.0, 103.0, 100.0, 102.0),  # 1  target 1
    (102.0, 105.0, 101.0, 104.0),  # 2
    (104.0, 106.0, 103.0, 105.0),  # 3
    (105.0, 105.0, 100.0, 101.0),  # 4  target -1 (flat)
    (101.0, 102.0, 98.0, 99.0),  # 5
    (99.0, 100.0, 95.0, 96.0),  # 6
    (96.0, 98.0, 94.0, 97.0),  # 7  target 0.5
    (97.0, 101.0, 96.0, 100.0),  # 8
    (100.0, 104.0, 99.0, 103.0),  # 9
    (103.0, 108.0, 102.0, 107.0),  # 10 target 0
    (107.0, 109.0, 105.0, 108.0),  # 11
]
CANDLES = CandleArrays(
    np.arange(12, dtype=np.int64) * MIN,
    np.array([r[0] for r in ROWS]),
    np.array([r[1] for r in ROWS]),
    np.array([r[2] for r in ROWS]),
    np.array([r[3] for r in ROWS]),
    np.full(12, 1000.0),
)
TARGET = np.full(12, np.nan)
TARGET[[1, 4, 7, 10]] = [1.0, -1.0, 0.5, 0.0]
MARKET = Market("ETH/USD", Precision("decimals", D(2)), Precision("decimals", D(4)))
FEE = D("0.002")


def floor4(value: Decimal) -> Decimal:
    return value.quantize(D("0.0001"), rounding=ROUND_DOWN)


def run(timing: FillTiming, sizing: Sizing, exact: bool = False):  # type: ignore[no-untyped-def]
    settings = BacktestSettings(
        initial_cash=D(1000),
        fills=FillSettings(timing=timing, maker_fee=D("0.001"), taker_fee=FEE),
        sizing=sizing,
        assignment="hand",
        exact=exact,
    )
    return run_decisions(Decisions(CANDLES.time, TARGET), CANDLES, MARKET, settings)


def check(result, fills, equity_by_row):  # type: ignore[no-untyped-def]
    """``fills``: (decision row, fill row, side, amount, price); fees and cash by hand."""
    assert len(result.fills) == len(fills)
    cash = D(1000)
    for fill, (decided, filled, side, amount, price) in zip(result.fills, fills, strict=True):
        fee = amount * price * FEE
        assert (fill.side, fill.amount, fill.price, fill.fee) == (side, amount, price, fee)
        assert fill.client_order_id == client_order_id("hand", decided * MIN, "target")
        assert fill.time == max(filled * MIN, (decided + 1) * MIN)
        cash += -amount * price - fee if side is OrderSide.BUY else amount * price - fee
    assert result.final_cash == cash
    assert result.fees == sum((amount * price * FEE for *_, amount, price in fills), D(0))
    for row, value in equity_by_row.items():
        assert abs(D(repr(float(result.equity[row]))) - value) < D("0.000001"), row


@pytest.mark.parametrize("exact", [False, True], ids=["fast", "paper-exchange"])
def test_next_open_fraction_of_equity(exact: bool) -> None:
    result = run(FillTiming.NEXT_OPEN, Sizing(SizingMode.FRACTION_OF_EQUITY, D(1)), exact)
    # candle 1 (close 102): equity 1000 wants 1000 / 102 = 9.80392 -> 9.8039; the cash pays
    # for 1000 / (102 * 1.002) = 9.78435 -> 9.7843: buy 9.7843 at candle 2's open, 102.
    buy1 = D("9.7843")
    assert floor4(D(1000) / (D(102) * D("1.002"))) == buy1
    # cost 9.7843 * 102 = 997.9986, fee 1.9959972, cash 1000 - 999.9945972 = 0.0054028
    cash1 = D(1000) - buy1 * 102 - buy1 * 102 * FEE
    assert cash1 == D("0.0054028")
    # candle 4: flat -> sell 9.7843 at candle 5's open, 101: 988.2143, fee 1.9764286
    cash2 = cash1 + buy1 * 101 - buy1 * 101 * FEE
    assert cash2 == D("986.2432742")
    # candle 7 (close 97): equity 986.2432742 * 0.5 / 97 = 5.08373 -> 5.0837 (cash covers
    # 986.2432742 / (97 * 1.002) = 10.147 of it): buy 5.0837 at candle 8's open, 97
    buy2 = floor4(cash2 * D("0.5") / 97)
    assert buy2 == D("5.0837")
    cash3 = cash2 - buy2 * 97 - buy2 * 97 * FEE
    assert cash3 == D("492.1381364")  # 986.2432742 - 493.1189 - 0.9862378
    # candle 10: flat -> sell 5.0837 at candle 11's open, 107
    cash4 = cash3 + buy2 * 107 - buy2 * 107 * FEE
    assert cash4 == D("1035.0061246")  # + 543.9559 - 1.0879118
    fills = [
        (1, 2, OrderSide.BUY, buy1, D(102)),
        (4, 5, OrderSide.SELL, buy1, D(101)),
        (7, 8, OrderSide.BUY, buy2, D(97)),
        (10, 11, OrderSide.SELL, buy2, D(107)),
    ]
    equity = {
        0: D(1000),
        1: D(1000),  # decided, not yet filled
        2: cash1 + buy1 * 104,  # 1017.5726028
        4: cash1 + buy1 * 101,  # 988.2197028
        5: cash2,
        7: cash2,
        8: cash3 + buy2 * 100,
        10: cash3 + buy2 * 107,
        11: cash4,
    }
    check(result, fills, equity)
    assert result.final_position == 0
    assert result.final_equity == D("1035.0061246")


@pytest.mark.parametrize("exact", [False, True], ids=["fast", "paper-exchange"])
def test_close_fraction_of_equity(exact: bool) -> None:
    result = run(FillTiming.CLOSE, Sizing(SizingMode.FRACTION_OF_EQUITY, D(1)), exact)
    # candle 1: buy at its own close 102: the same 9.7843, cash 0.0054028
    buy1 = D("9.7843")
    cash1 = D(1000) - buy1 * 102 * (1 + FEE)
    # candle 4: sell at its close 101
    cash2 = cash1 + buy1 * 101 * (1 - FEE)
    assert cash2 == D("986.2432742")
    # candle 7: half of 986.2432742 at 97 -> 5.0837, filled at 97
    buy2 = D("5.0837")
    cash3 = cash2 - buy2 * 97 * (1 + FEE)
    # candle 10: sell at its close 107
    cash4 = cash3 + buy2 * 107 * (1 - FEE)
    fills = [
        (1, 1, OrderSide.BUY, buy1, D(102)),
        (4, 4, OrderSide.SELL, buy1, D(101)),
        (7, 7, OrderSide.BUY, buy2, D(97)),
        (10, 10, OrderSide.SELL, buy2, D(107)),
    ]
    equity = {
        0: D(1000),
        1: cash1 + buy1 * 102,  # 997.9986 + 0.0054028 = 998.0040028: the fee is gone
        3: cash1 + buy1 * 105,
        4: cash2,
        7: cash3 + buy2 * 97,
        9: cash3 + buy2 * 103,
        10: cash4,
        11: cash4,
    }
    assert equity[1] == D("998.0040028")
    check(result, fills, equity)


@pytest.mark.parametrize("timing", list(FillTiming))
@pytest.mark.parametrize("exact", [False, True], ids=["fast", "paper-exchange"])
def test_fixed_quote(timing: FillTiming, exact: bool) -> None:
    result = run(timing, Sizing(SizingMode.FIXED_QUOTE, D(500)), exact)
    nxt = timing is FillTiming.NEXT_OPEN
    # candle 1: 500 / 102 = 4.90196 -> 4.9019 (the decision's close prices the quantity)
    buy1 = D("4.9019")
    assert floor4(D(500) / 102) == buy1
    p1 = D(102)  # next open of candle 2 is 102, the close of candle 1 is 102 too
    p2 = D(101)  # open of candle 5 = close of candle 4 = 101
    # candle 7: 0.5 * 500 / 97 = 2.57731 -> 2.5773
    buy2 = floor4(D(250) / 97)
    assert buy2 == D("2.5773")
    p3, p4 = D(97), D(107)
    cash = D(1000) - buy1 * p1 * (1 + FEE)
    assert cash == D("499.0062124")  # 1000 - 499.9938 - 0.9999876
    e2 = cash + buy1 * 104
    cash = cash + buy1 * p2 * (1 - FEE)
    cash3 = cash - buy2 * p3 * (1 + FEE)
    cash4 = cash3 + buy2 * p4 * (1 - FEE)
    fills = [
        (1, 2 if nxt else 1, OrderSide.BUY, buy1, p1),
        (4, 5 if nxt else 4, OrderSide.SELL, buy1, p2),
        (7, 8 if nxt else 7, OrderSide.BUY, buy2, p3),
        (10, 11 if nxt else 10, OrderSide.SELL, buy2, p4),
    ]
    check(result, fills, {2: e2, 8: cash3 + buy2 * 100, 11: cash4})


@pytest.mark.parametrize("timing", list(FillTiming))
@pytest.mark.parametrize("exact", [False, True], ids=["fast", "paper-exchange"])
def test_fixed_base_and_whole_units(timing: FillTiming, exact: bool) -> None:
    nxt = timing is FillTiming.NEXT_OPEN
    result = run(timing, Sizing(SizingMode.FIXED_BASE, D(3)), exact)
    # target 1 -> 3 units; target 0.5 -> 1.5 units
    fills = [
        (1, 2 if nxt else 1, OrderSide.BUY, D(3), D(102)),
        (4, 5 if nxt else 4, OrderSide.SELL, D(3), D(101)),
        (7, 8 if nxt else 7, OrderSide.BUY, D("1.5"), D(97)),
        (10, 11 if nxt else 10, OrderSide.SELL, D("1.5"), D(107)),
    ]
    # 1000 - 306.612 + 302.394 - 145.791 + 160.179 = 1010.17
    check(result, fills, {11: D("1010.17")})
    # whole units: 500 USD at 102 is 4.90 -> 4 units; half of 500 at 97 is 2.58 -> 2 units
    result = run(timing, Sizing(SizingMode.FIXED_QUOTE, D(500), whole_units=True), exact)
    fills = [
        (1, 2 if nxt else 1, OrderSide.BUY, D(4), D(102)),
        (4, 5 if nxt else 4, OrderSide.SELL, D(4), D(101)),
        (7, 8 if nxt else 7, OrderSide.BUY, D(2), D(97)),
        (10, 11 if nxt else 10, OrderSide.SELL, D(2), D(107)),
    ]
    # 1000 - 408.816 + 403.192 - 194.388 + 213.572 = 1013.56
    check(result, fills, {11: D("1013.56")})
