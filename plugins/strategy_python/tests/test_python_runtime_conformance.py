"""The ``python`` runtime against the strategy-runtime conformance suite: strategies in this
process (the backtest path, no limits) and in worker processes under limits."""

from __future__ import annotations

from typing import ClassVar

import pytest

from trader.interfaces import Limits, StrategyRuntime
from trader_sdk.testing.strategy_runtime import StrategyRuntimeConformance
from trader_strategy_python import PythonStrategy, PythonStrategyRuntime, WorkerStrategy

# The scenarios of trader_sdk.testing.strategy_runtime.SCENARIOS, in Python.
SOURCES = {
    "params": """
params = {
    "period": {"default": 10, "min": 2, "max": 50, "step": 1, "description": "lookback period"},
    "factor": {"default": 0.5, "min": 0.1, "max": 2.0},
    "label": {"default": "x"},
    "enabled": True,
}


def on_candle(ctx, candles):
    return {
        "side": "buy" if ctx.params.enabled else "sell",
        "type": "limit",
        "amount": ctx.params.period,
        "price": ctx.params.factor,
        "tag": ctx.params.label,
    }
""",
    "bad_params": """
params = {"period": {"default": 60, "min": 2, "max": 50}}


def on_candle(ctx, candles):
    return None
""",
    "history": """
def init(ctx):
    ctx.state["calls"] = 0


def on_candle(ctx, candles):
    ctx.state["calls"] += 1
    seen = {
        "calls": ctx.state["calls"],
        "n": len(candles),
        "first_time": candles.time[0],
        "time": candles.time[-1],
        "open": candles.open[-1],
        "high": candles.high[-1],
        "low": candles.low[-1],
        "close": candles.close[-1],
        "volume": candles.volume[-1],
    }
    if len(candles) > 1:
        seen["prev_time"] = candles.time[-2]
        seen["prev_close"] = candles.close[-2]
    tag = " ".join(f"{name}={float(value)!r}" for name, value in seen.items())
    return {"side": "buy", "type": "market", "amount": 1, "tag": tag}
""",
    "targets": """
CYCLE = [None, 0, 1, -1, 0.5, -0.25]


def init(ctx):
    ctx.state["calls"] = 0


def on_candle(ctx, candles):
    ctx.state["calls"] += 1
    return CYCLE[(ctx.state["calls"] - 1) % 6]
""",
    "fixed_target": """
params = {"value": 0.25, "offset": 0.0}


def on_candle(ctx, candles):
    return ctx.params.value + ctx.params.offset
""",
    "orders": """
def init(ctx):
    ctx.state["calls"] = 0


def on_candle(ctx, candles):
    ctx.state["calls"] += 1
    close = candles.close[-1]
    k = (ctx.state["calls"] - 1) % 4
    if k == 0:
        return {"side": "buy", "type": "market", "amount": 0.5}
    if k == 1:
        return {"side": "sell", "type": "limit", "amount": 1.25, "price": close + 1, "tag": "take"}
    if k == 2:
        return {"side": "sell", "type": "stop", "amount": 2, "stop_price": close - 1, "tag": "stop"}
    return [
        {"side": "buy", "type": "limit", "amount": 1, "price": close - 2, "tag": "a"},
        {"side": "buy", "type": "stop", "amount": 3, "stop_price": close + 2, "tag": "b"},
    ]
""",
    "bad_order": """
params = {"case": "none"}
ORDERS = {
    "amount": {"side": "buy", "type": "market", "amount": 0},
    "side": {"side": "hold", "type": "market", "amount": 1},
    "limit": {"side": "buy", "type": "limit", "amount": 1},
    "stop": {"side": "sell", "type": "stop", "amount": 1},
}


def on_candle(ctx, candles):
    return ORDERS.get(ctx.params.case)
""",
    "error": """
def init(ctx):
    ctx.state["calls"] = 0


def on_candle(ctx, candles):
    ctx.state["calls"] += 1
    if ctx.state["calls"] == 3:
        raise ValueError("boom")
    return 0
""",
    "syntax_error": """
def on_candle(ctx, candles):
    return 0

broken = = 1
""",
    "runaway": """
def on_candle(ctx, candles):
    while True:
        pass
""",
    "mixed": """
params = {
    "fast": {"default": 3, "min": 1, "max": 50, "step": 1},
    "slow": {"default": 8, "min": 2, "max": 200, "step": 1},
}


def init(ctx):
    ctx.state["calls"] = 0
    ctx.state["fast"] = ta.sma(ctx.params.fast)
    ctx.state["slow"] = ta.sma(ctx.params.slow)


def on_candle(ctx, candles):
    s = ctx.state
    s["calls"] += 1
    close = candles.close[-1]
    fast = s["fast"].update(close)
    slow = s["slow"].update(close)
    if slow is None or s["calls"] % 5 == 0:
        return None
    if s["calls"] % 7 == 0:
        return [
            {"side": "buy", "type": "limit", "amount": 1, "price": candles.low[-1], "tag": "dip"},
            {"side": "sell", "type": "stop", "amount": 1, "stop_price": candles.close[-2],
             "tag": "guard"},
        ]
    if fast > slow:
        return 1
    if close > candles.close[-2]:
        return 0.5
    return -1
""",
    "ta": """
INDICATORS = {
    "sma": (lambda: ta.sma(5), ("close",)),
    "ema": (lambda: ta.ema(5), ("close",)),
    "wma": (lambda: ta.wma(5), ("close",)),
    "rsi": (lambda: ta.rsi(5), ("close",)),
    "roc": (lambda: ta.roc(5), ("close",)),
    "highest": (lambda: ta.highest(5), ("close",)),
    "lowest": (lambda: ta.lowest(5), ("close",)),
    "stddev": (lambda: ta.stddev(5, 2), ("close",)),
    "macd": (lambda: ta.macd(3, 6, 2), ("close",)),
    "bbands": (lambda: ta.bbands(5, 2, 1.5), ("close",)),
    "atr": (lambda: ta.atr(5), ("high", "low", "close")),
    "stoch": (lambda: ta.stoch(5, 3, 3), ("high", "low", "close")),
    "obv": (lambda: ta.obv(), ("close", "volume")),
    "vwap": (lambda: ta.vwap(5), ("high", "low", "close", "volume")),
    "crossover": (lambda: ta.crossover(), ("close", "open")),
    "crossunder": (lambda: ta.crossunder(), ("close", "open")),
}
NAMES = {
    "macd": ("macd", "macd_signal", "macd_hist"),
    "bbands": ("bb_upper", "bb_middle", "bb_lower"),
    "stoch": ("stoch_k", "stoch_d"),
}


def init(ctx):
    for name, (make, _) in INDICATORS.items():
        ctx.state[name] = make()


def on_candle(ctx, candles):
    parts = []
    for name, (_, columns) in INDICATORS.items():
        reading = ctx.state[name].update(*(getattr(candles, c)[-1] for c in columns))
        if reading is None:
            continue
        readings = reading if isinstance(reading, tuple) else (reading,)
        for label, value in zip(NAMES.get(name, (name,)), readings):
            parts.append(f"{label}={float(value)!r}")
    return {"side": "buy", "type": "market", "amount": 1, "tag": " ".join(parts)}
""",
}


class PythonSources:
    """The Python scenario sources, shared by both configurations."""

    suffix: ClassVar[str] = ".py"

    def strategy_source(self, scenario: str) -> str:
        return SOURCES[scenario]


class TestPythonInProcessConformance(PythonSources, StrategyRuntimeConformance):
    """Strategies in this process, as backtests run them (a small window and batch size, so
    the suite's 400 candles cross the window's compaction and several batches)."""

    unlimited_reason: ClassVar[str | None] = (
        "Python strategies in this process are trusted code without limits; the worker "
        "configuration (TestPythonWorkerConformance) runs this test"
    )

    @pytest.fixture
    def strategy_runtime(self) -> StrategyRuntime:
        return PythonStrategyRuntime(history=40, batch_size=97)

    def test_strategies_run_in_this_process(self, strategy_runtime: StrategyRuntime) -> None:
        instance = strategy_runtime.load(SOURCES["targets"], "t.py", {}, Limits())
        assert isinstance(instance, PythonStrategy)


class TestPythonWorkerConformance(PythonSources, StrategyRuntimeConformance):
    """Strategies not marked trusted in worker processes (``isolate``), under the runtime's
    default limits: 0.25 s of CPU and 1 s of wall clock per candle, 256 MiB."""

    limits: ClassVar[Limits] = Limits(None, 256 * 1024 * 1024, 1.0)
    runaway_limits: ClassVar[Limits] = Limits(None, 256 * 1024 * 1024, 1.0)

    @pytest.fixture
    def strategy_runtime(self) -> StrategyRuntime:
        return PythonStrategyRuntime(history=40, batch_size=97, isolate=True)

    def test_strategies_run_in_worker_processes(self, strategy_runtime: StrategyRuntime) -> None:
        instance = strategy_runtime.load(SOURCES["targets"], "t.py", {}, self.limits)
        try:
            assert isinstance(instance, WorkerStrategy) and instance.pid is not None
        finally:
            instance.close()
