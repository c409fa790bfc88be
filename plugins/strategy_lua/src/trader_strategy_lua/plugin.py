"""Entry point of ``trader-strategy-lua`` (group ``trader``, name ``strategy_lua``).

Registers the strategy runtime ``lua``: sandboxed Lua 5.4 strategies (LuaJIT for strategies
marked trusted). Its options set the history window, the batch size of backtests and the limits
used when an assignment names none.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from trader.hookspecs import hookimpl
from trader.interfaces import Limits, PluginContext
from trader.registry import Register
from trader_strategy_lua.runtime import LuaStrategyRuntime

__all__ = ["LuaRuntimeOptions", "build_lua_runtime", "register_strategy_runtimes"]


class LuaRuntimeOptions(BaseModel):
    """Options of the ``lua`` strategy runtime."""

    model_config = ConfigDict(extra="forbid")

    history: int = Field(2000, ge=1, le=1_000_000)
    """Candles ``on_candle`` sees at least (the window holds up to twice as many)."""
    batch_size: int = Field(65_536, ge=1, le=1_048_576)
    """Candles staged into Lua at once by the batch path of backtests."""
    max_orders: int = Field(100, ge=1, le=10_000)
    """Explicit orders one decision may hold."""
    luajit: bool = True
    """Run trusted strategies on LuaJIT (when the lupa wheel has it); else on Lua 5.4."""
    instructions_per_call: int | None = Field(10_000_000, ge=1000)
    """Default instruction budget per call (per candle); ``None`` for none."""
    memory_mib: float | None = Field(64, gt=0)
    """Default memory cap of a strategy in MiB; ``None`` for none."""
    wall_seconds_per_call: float | None = Field(1.0, gt=0)
    """Default wall-clock limit per call (per candle); ``None`` for none."""
    cpu_seconds_per_call: float | None = Field(0.025, gt=0)
    """CPU-time limit per call (per candle) of every untrusted strategy; ``None`` for none. The
    default keeps the promise that a runaway loop stops within 50 ms whatever it runs."""

    def limits(self) -> Limits:
        """The default limits these options describe."""
        memory = None if self.memory_mib is None else int(self.memory_mib * 1024 * 1024)
        return Limits(self.instructions_per_call, memory, self.wall_seconds_per_call)


def build_lua_runtime(options: LuaRuntimeOptions, context: PluginContext) -> LuaStrategyRuntime:
    """The ``lua`` runtime configured by ``options``."""
    return LuaStrategyRuntime(
        history=options.history,
        batch_size=options.batch_size,
        max_orders=options.max_orders,
        luajit=options.luajit,
        default_limits=options.limits(),
        cpu_seconds_per_call=options.cpu_seconds_per_call,
    )


@hookimpl
def register_strategy_runtimes(register: Register) -> None:
    """Register ``lua``."""
    register(
        "lua",
        build_lua_runtime,
        options=LuaRuntimeOptions,
        summary="sandboxed Lua 5.4 strategies (LuaJIT when trusted), with a ta library",
    )
