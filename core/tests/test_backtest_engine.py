"""The backtest engine end to end: strategies, explicit orders, the paper exchange path."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from trader.backtest import (
    BacktestSettings,
    Decisions,
    Sizing,
    SizingMode,
    run_backtest,
    run_decisions,
)
from trader.errors import DataError, ModelError
from trader.interfaces import StrategyInstance
from trader.model import CandleArrays, Decision, Market, OrderIntent, OrderSide, Timeframe
from trader.model.market import Precision
from trader.model.order import client_order_id
from trader.paper import FillSettings, FillTiming
from trader.synthetic import generate_candles

D = Decimal
MARKET = Market("BTC/USD", Precision("decimals", D(2)), Precision("decimals", D(6)))
START = 1_577_836_800_000

LUA_SMA = """
params = {fast = {default = 10}, slow = {default = 30}}
function init(ctx)
  ctx.state.fast = ta.sma(ctx.params.fast)
  ctx.state.slow = ta.sma(ctx.params.slow)
end
function on_candle(ctx, candles)
  local close = candles.close[candles.n]
  local fast = ctx.state.fast:update(close)
  local slow = ctx.state.slow:update(close)
  if not slow then return nil end
  if fast > slow then return 1 end
  return -1
end
"""

PY_SMA = """
params = {"fast": {"default": 10}, "slow": {"default": 30}}
def init(ctx):
    ctx.state["fast"] = ta.sma(ctx.params.fast)
    ctx.state["slow"] = ta.sma(ctx.params.slow)
def on_candle(ctx, candles):
    close = candles.close[-1]
    fast = ctx.state["fast"].update(close)
    slow = ctx.state["slow"].update(close)
    if slow is None:
        return None
    return 1 if fast > slow else -1
"""


def candles(count: int, seed: int = 3) -> CandleArrays:
    return generate_candles(Timeframe.parse("1m"), START, count, seed=seed, volatility=0.002)


class PerCandle(StrategyInstance):
    """A strategy with only the live path: long when the close rose, flat when it fell."""

    def __init__(self) -> None:
        self.calls = 0

    def on_candle(self, assignment: str, history: CandleArrays) -> Decision:
        self.calls += 1
        time = int(history.time[-1])
        if len(history) < 2:
            return Decision(assignment, time)
        return Decision(assignment, time, 1.0 if history.close[-1] > history.close[-2] else 0.0)

    def snapshot(self) -> bytes:
        return b""

    def restore(self, state: bytes) -> None:
        return None


class Scripted:
    """A strategy giving fixed decisions through the batch path."""

    def __init__(self, target: Any, orders: dict[int, tuple[OrderIntent, ...]]) -> None:
        self.target, self.orders = target, orders

    def on_candles(self, assignment: str, data: CandleArrays, warmup: int = 0) -> Decisions:
        return Decisions(data.time, np.asarray(self.target, dtype=np.float64), self.orders)


def test_per_candle_strategy_matches_the_same_decisions_in_columns() -> None:
    data = candles(300)
    strategy = PerCandle()
    result = run_backtest(strategy, data, MARKET)
    assert strategy.calls == 300
    target = np.full(300, np.nan)
    target[1:] = np.where(data.close[1:] > data.close[:-1], 1.0, 0.0)
    again = run_decisions(Decisions(data.time, target), data, MARKET, BacktestSettings())
    assert result.fills == again.fills and len(result.fills) > 20
    np.testing.assert_array_equal(result.equity, again.equity)


def test_explicit_limit_and_stop_orders_fill_through_the_paper_exchange() -> None:
    # flat prices 100 with a dip to 95 on candle 5 and a rise to 110 on candle 9
    close = np.full(12, 100.0)
    low = np.full(12, 99.5)
    high = np.full(12, 100.5)
    low[5], high[9] = 95.0, 110.0
    data = CandleArrays(
        np.arange(12, dtype=np.int64) * 60_000, close, high, low, close, np.full(12, 10.0)
    )
    orders = {
        1: (OrderIntent(OrderSide.BUY, "limit", 2.0, price=96.0, tag="dip"),),
        6: (OrderIntent(OrderSide.SELL, "stop", 1.0, stop_price=99.0),),
        7: (OrderIntent(OrderSide.SELL, "limit", 1.0, price=108.0),),
    }
    settings = BacktestSettings(
        initial_cash=D(1000),
        fills=FillSettings(maker_fee=D("0.001"), taker_fee=D("0.002")),
        assignment="orders",
    )
    result = run_backtest(Scripted(np.full(12, np.nan), orders), data, MARKET, settings)
    fills = [(f.side, f.amount, f.price, f.fee, f.maker, f.time // 60_000) for f in result.fills]
    assert fills == [
        # the limit buy rests from candle 1 and fills on candle 5's dip, at 96, maker
        (OrderSide.BUY, D(2), D(96), D("0.192"), True, 5),
        # the limit sell at 108 fills on candle 9's rise, maker; the stop sell at 99 never
        # triggers (every low after candle 5 is 99.5)
        (OrderSide.SELL, D(1), D(108), D("0.108"), True, 9),
    ]
    assert result.fills[0].client_order_id == client_order_id("orders", 60_000, "order-0-dip")
    # cash 1000 - 192.192 + 107.892; the stop (1 unit reserved) is still open at the end
    assert result.final_cash == D("915.700")
    assert result.final_position == D(1)
    assert result.equity[-1] == pytest.approx(915.7 + 100.0)
    assert result.equity[4] == pytest.approx(1000.0)
    assert result.equity[5] == pytest.approx(1000 - 192.192 + 200)


def test_volume_cap_gives_partial_fills_on_the_exchange_path() -> None:
    data = candles(50)
    data = CandleArrays(data.time, data.open, data.high, data.low, data.close, np.full(50, 0.02))
    target = np.full(50, np.nan)
    target[3] = 1.0
    settings = BacktestSettings(
        fills=FillSettings(volume_fraction=D("0.5")),
        sizing=Sizing(SizingMode.FIXED_BASE, D("0.05")),
    )
    result = run_decisions(Decisions(data.time, target), data, MARKET, settings)
    # 0.05 units at most 0.01 (half of 0.02) a candle: five fills on candles 4..8
    assert [f.amount for f in result.fills] == [D("0.01")] * 5
    assert [f.time // 60_000 - START // 60_000 for f in result.fills] == [4, 5, 6, 7, 8]
    assert result.final_position == D("0.05")


def test_negative_targets_are_flat_on_spot_and_holding_a_target_does_not_rebalance() -> None:
    data = candles(40)
    target = np.full(40, np.nan)
    target[2:10] = 1.0  # one buy at the change, none while the target holds
    target[10:20] = -1.0  # flat: one sell
    target[20:] = -0.5  # still flat: nothing
    result = run_decisions(Decisions(data.time, target), data, MARKET, BacktestSettings())
    assert [f.side for f in result.fills] == [OrderSide.BUY, OrderSide.SELL]
    assert np.all(result.position[11:] == 0)


def test_refusals_name_the_problem() -> None:
    data = candles(10)
    with pytest.raises(DataError, match="decisions cover 5 candles"):
        run_decisions(Decisions(data.time[:5], np.zeros(5)), data, MARKET, BacktestSettings())
    with pytest.raises(ModelError, match="needs margin"):
        Sizing(SizingMode.FRACTION_OF_EQUITY, D(2))
    with pytest.raises(ModelError, match="initial_cash"):
        BacktestSettings(initial_cash=D(0))


def test_lua_and_python_sma_crossover_agree_to_the_cent_over_100k_candles() -> None:
    lua = pytest.importorskip("trader_strategy_lua")
    python = pytest.importorskip("trader_strategy_python")
    data = candles(100_000, seed=11)
    settings = BacktestSettings(
        fills=FillSettings(timing=FillTiming.NEXT_OPEN, taker_fee=D("0.001")),
        sizing=Sizing(SizingMode.FIXED_QUOTE, D(1000)),
    )
    runtime = lua.LuaStrategyRuntime()
    lua_strategy = runtime.load(LUA_SMA, "sma.lua", {}, runtime.default_limits)
    py_strategy = python.PythonStrategyRuntime().load_in_process(PY_SMA, "sma.py", {})
    from_lua = run_backtest(lua_strategy, data, MARKET, settings)
    from_python = run_backtest(py_strategy, data, MARKET, settings)
    lua_strategy.close()
    assert len(from_lua.fills) > 1000
    assert from_lua.fills == from_python.fills
    np.testing.assert_array_equal(from_lua.equity, from_python.equity)
    assert from_lua.final_equity == from_python.final_equity


def test_no_candles_and_no_decisions_leave_the_cash_untouched() -> None:
    empty = CandleArrays.empty()
    result = run_decisions(Decisions(empty.time, np.empty(0)), empty, MARKET, BacktestSettings())
    assert (result.fills, result.final_equity, len(result.equity)) == ([], D(10_000), 0)
    assert result.metrics.total_return == 0 and result.metrics.trades == 0
    data = candles(20)
    held = run_decisions(
        Decisions(data.time, np.full(20, np.nan)), data, MARKET, BacktestSettings()
    )
    np.testing.assert_array_equal(held.equity, np.full(20, 10_000.0))
    assert held.metrics.exposure == 0 and held.metrics.sharpe is None
