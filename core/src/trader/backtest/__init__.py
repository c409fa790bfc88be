"""The backtest engine: strategy decisions over candles, sized, filled, accounted and measured.

Start with :func:`run_backtest`; see docs/backtesting.md.
"""

from trader.backtest.accounting import (
    Account,
    Trade,
    closed_trade_figures,
    fill_market,
    round_trips,
)
from trader.backtest.engine import (
    BacktestSettings,
    DecisionRows,
    Decisions,
    decide,
    run_backtest,
    run_decisions,
)
from trader.backtest.metrics import Metrics, compute_metrics, drawdown, periods_per_year
from trader.backtest.result import BacktestResult
from trader.backtest.sizing import (
    Sizing,
    SizingMode,
    intent_order,
    order_for_delta,
    plan_delta,
    target_quantity,
)

__all__ = [
    "Account",
    "BacktestResult",
    "BacktestSettings",
    "DecisionRows",
    "Decisions",
    "Metrics",
    "Sizing",
    "SizingMode",
    "Trade",
    "closed_trade_figures",
    "compute_metrics",
    "decide",
    "drawdown",
    "fill_market",
    "intent_order",
    "order_for_delta",
    "periods_per_year",
    "plan_delta",
    "round_trips",
    "run_backtest",
    "run_decisions",
    "target_quantity",
]
