"""Sandboxed Lua strategies for trader (lupa)."""

from trader.interfaces import DecisionBatch
from trader_strategy_lua.errors import LuaStrategyError
from trader_strategy_lua.runtime import LuaStrategy, LuaStrategyRuntime

__version__ = "0.1.0.dev0"

__all__ = ["DecisionBatch", "LuaStrategy", "LuaStrategyError", "LuaStrategyRuntime"]
