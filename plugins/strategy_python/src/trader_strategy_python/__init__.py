"""Python strategies for trader: the ``python`` strategy runtime, with the Lua runtime's API."""

from trader.interfaces import DecisionBatch
from trader_strategy_python import ta
from trader_strategy_python.errors import PythonStrategyError
from trader_strategy_python.runtime import (
    Candles,
    Context,
    PythonStrategy,
    PythonStrategyRuntime,
)
from trader_strategy_python.worker import WorkerStrategy

__version__ = "0.1.0.dev0"

__all__ = [
    "Candles",
    "Context",
    "DecisionBatch",
    "PythonStrategy",
    "PythonStrategyError",
    "PythonStrategyRuntime",
    "WorkerStrategy",
    "ta",
]
