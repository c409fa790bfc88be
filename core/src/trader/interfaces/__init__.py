"""The interfaces plugins implement (ARCHITECTURE §4), with their contracts in the docstrings."""

from trader.interfaces.base import Component, PluginContext
from trader.interfaces.candle_store import CandleStore, Gap, SeriesInfo, WriteResult
from trader.interfaces.exchange import CandleUpdate, Exchange, ExchangeCapabilities
from trader.interfaces.scheduler import Schedule
from trader.interfaces.state_store import (
    Assignment,
    Evaluation,
    Report,
    ScheduleRecord,
    StateStore,
    StrategyVersion,
    TaskRecord,
    TaskTransition,
    TradingAccount,
    User,
)
from trader.interfaces.strategy import (
    DecisionBatch,
    Limits,
    Parameter,
    StrategyInstance,
    StrategyRuntime,
)

__all__ = [
    "Assignment",
    "CandleStore",
    "CandleUpdate",
    "Component",
    "DecisionBatch",
    "Evaluation",
    "Exchange",
    "ExchangeCapabilities",
    "Gap",
    "Limits",
    "Parameter",
    "PluginContext",
    "Report",
    "Schedule",
    "ScheduleRecord",
    "SeriesInfo",
    "StateStore",
    "StrategyInstance",
    "StrategyRuntime",
    "StrategyVersion",
    "TaskRecord",
    "TaskTransition",
    "TradingAccount",
    "User",
    "WriteResult",
]
