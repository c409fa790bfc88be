"""Entry point of ``trader-strategy-python`` (group ``trader``, name ``strategy_python``).

Registers the strategy runtime ``python``: strategies are ``.py`` files with the API of the Lua
runtime. Backtests run them in the engine's process; with ``isolate`` (live and paper
evaluation) each strategy not marked trusted runs in a worker process under resource limits.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from trader.hookspecs import hookimpl
from trader.interfaces import Limits, PluginContext
from trader.registry import Register
from trader_strategy_python.runtime import PythonStrategyRuntime

__all__ = ["PythonRuntimeOptions", "build_python_runtime", "register_strategy_runtimes"]


class PythonRuntimeOptions(BaseModel):
    """Options of the ``python`` strategy runtime."""

    model_config = ConfigDict(extra="forbid")

    history: int = Field(2000, ge=1, le=1_000_000)
    """Candles ``on_candle`` sees at least."""
    batch_size: int = Field(65_536, ge=1, le=1_048_576)
    """Candles staged at once by the batch path of backtests."""
    max_orders: int = Field(100, ge=1, le=10_000)
    """Explicit orders one decision may hold."""
    isolate: bool = False
    """Run every strategy not marked trusted in a worker process under the limits below."""
    memory_mib: float | None = Field(256, gt=0)
    """Default memory a worker's strategy may allocate, in MiB; ``None`` for no limit."""
    wall_seconds_per_call: float | None = Field(1.0, gt=0)
    """Default wall-clock limit per call (per candle) in a worker; ``None`` for none."""
    cpu_seconds_per_call: float | None = Field(0.25, gt=0)
    """CPU-time limit per call (per candle) in a worker; ``None`` for none."""

    def limits(self) -> Limits:
        """The default worker limits these options describe (no instruction budget)."""
        memory = None if self.memory_mib is None else int(self.memory_mib * 1024 * 1024)
        return Limits(None, memory, self.wall_seconds_per_call)


def build_python_runtime(
    options: PythonRuntimeOptions, context: PluginContext
) -> PythonStrategyRuntime:
    """The ``python`` runtime configured by ``options``."""
    return PythonStrategyRuntime(
        history=options.history,
        batch_size=options.batch_size,
        max_orders=options.max_orders,
        isolate=options.isolate,
        default_limits=options.limits(),
        cpu_seconds_per_call=options.cpu_seconds_per_call,
    )


@hookimpl
def register_strategy_runtimes(register: Register) -> None:
    """Register ``python``."""
    register(
        "python",
        build_python_runtime,
        options=PythonRuntimeOptions,
        summary="Python strategies (worker processes with CPU and memory limits), with ta",
    )
