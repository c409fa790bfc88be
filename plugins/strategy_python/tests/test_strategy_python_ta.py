"""Python ``ta``: against straightforward references (1e-9 relative), bit for bit against the
Lua runtime's ``ta`` (when lupa is installed), and through snapshots mid-stream."""

from __future__ import annotations

import itertools
import math

import msgpack
import numpy as np
import pytest

from trader.interfaces import Limits
from trader.model import CandleArrays
from trader_strategy_python import PythonStrategyError, PythonStrategyRuntime, ta
from trader_strategy_python.state import dump_state, load_state


def reference_sma(x: list[float], p: int) -> list[float | None]:
    return [None if i + 1 < p else sum(x[i + 1 - p : i + 1]) / p for i in range(len(x))]


def reference_ema(x: list[float], p: int) -> list[float | None]:
    out: list[float | None] = []
    k = 2 / (p + 1)
    value = 0.0
    for i, v in enumerate(x):
        if i + 1 < p:
            out.append(None)
            continue
        value = sum(x[:p]) / p if i + 1 == p else value + k * (v - value)
        out.append(value)
    return out


def reference_rsi(x: list[float], p: int) -> list[float | None]:
    """Wilder's RSI: plain averages of the first ``p`` changes, then (avg * (p - 1) + new) / p."""
    out: list[float | None] = [None]
    gains = [max(b - a, 0.0) for a, b in itertools.pairwise(x)]
    losses = [max(a - b, 0.0) for a, b in itertools.pairwise(x)]
    avg_gain = avg_loss = 0.0
    for i in range(len(gains)):
        if i + 1 < p:
            out.append(None)
            continue
        if i + 1 == p:
            avg_gain, avg_loss = sum(gains[:p]) / p, sum(losses[:p]) / p
        else:
            avg_gain = (avg_gain * (p - 1) + gains[i]) / p
            avg_loss = (avg_loss * (p - 1) + losses[i]) / p
        total = avg_gain + avg_loss
        out.append(100 * avg_gain / total if total else 0.0)
    return out


REFERENCES = {"sma": reference_sma, "ema": reference_ema, "rsi": reference_rsi}
FACTORIES = {"sma": ta.sma, "ema": ta.ema, "rsi": ta.rsi}


def closes_for(seed: int, size: int = 2000) -> np.ndarray:
    closes = 100.0 + np.cumsum(np.random.default_rng(seed).normal(0, 1, size))
    closes[100:130] = closes[99]  # a flat stretch: RSI with no gains and no losses
    return closes


def run_python(kind: str, period: int, closes: np.ndarray) -> list[float | None]:
    indicator = FACTORIES[kind](period)
    out = []
    for x in closes:  # NumPy scalars, as strategies feed them from candles.close[-1]
        value = indicator.update(x)
        assert value == indicator.value or value is None
        out.append(value)
    return out


@pytest.mark.parametrize("kind", ["sma", "ema", "rsi"])
@pytest.mark.parametrize("period", [1, 2, 14, 50])
def test_indicator_matches_the_reference(kind: str, period: int) -> None:
    closes = closes_for(period)
    expected = REFERENCES[kind](closes.tolist(), period)
    got = run_python(kind, period, closes)
    assert [v is None for v in got] == [v is None for v in expected]
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        if a is not None and b is not None:
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (i, a, b)


LUA_SOURCE = """
params = {kind = "sma", period = 14}
function init(ctx)
  ctx.state.ind = ta[ctx.params.kind](ctx.params.period)
  ctx.state.out = {}
end
function on_candle(ctx, candles)
  local v = ctx.state.ind:update(candles.close[candles.n])
  local out = ctx.state.out
  out[#out + 1] = v or -1
end
"""


def run_lua(kind: str, period: int, closes: np.ndarray) -> list[float | None]:
    from trader_strategy_lua import LuaStrategyRuntime

    instance = LuaStrategyRuntime().load(
        LUA_SOURCE, "ta.lua", {"kind": kind, "period": period}, Limits()
    )
    ones = np.ones(len(closes))
    times = np.arange(len(closes), dtype=np.int64) * 60_000
    instance.on_candles("a", CandleArrays(times, closes, ones, ones, closes, ones))
    state = msgpack.unpackb(instance.snapshot(), raw=False, strict_map_key=False)["state"]
    fields = {state[i]: state[i + 1] for i in range(0, len(state), 2)}
    out = fields[b"out"]
    values = dict(zip(out[::2], out[1::2], strict=True))
    instance.close()
    return [None if values[i] == -1 else values[i] for i in range(1, len(closes) + 1)]


@pytest.mark.parametrize("kind", ["sma", "ema", "rsi"])
@pytest.mark.parametrize("period", [1, 3, 14, 200])
def test_indicator_equals_the_lua_one_bit_for_bit(kind: str, period: int) -> None:
    pytest.importorskip("lupa")
    closes = closes_for(100 + period, 3000)
    python = run_python(kind, period, closes)
    lua = run_lua(kind, period, closes)
    assert python == lua  # exact: the same operations in the same order


@pytest.mark.parametrize("kind", ["sma", "ema", "rsi"])
def test_an_indicator_saved_mid_stream_continues_identically(kind: str) -> None:
    closes = closes_for(3, 400)
    whole = run_python(kind, 20, closes)
    indicator = FACTORIES[kind](20)
    for x in closes[:157]:
        indicator.update(x)
    saved = msgpack.packb(dump_state({"ind": indicator}, "t.py"), use_bin_type=True)
    restored = load_state(msgpack.unpackb(saved, raw=False, strict_map_key=False), "t.py")["ind"]
    assert type(restored) is type(indicator) and restored.value == indicator.value
    assert [restored.update(x) for x in closes[157:]] == whole[157:]


@pytest.mark.parametrize("period", ["0", "2.5", "'x'", "None", "True", "10**7"])
def test_a_bad_period_is_an_error_at_the_callers_line(period: str) -> None:
    source = f"def init(ctx):\n    ctx.state['x'] = ta.sma({period})\n"
    with pytest.raises(PythonStrategyError, match=r"ta\.sma: period must be a whole") as caught:
        PythonStrategyRuntime().load(source, "p.py", {}, Limits())
    assert caught.value.line == 2


def test_ta_is_importable_under_its_package_name_too() -> None:
    source = (
        "from trader_strategy_python import ta as lib\n"
        "def init(ctx):\n    ctx.state['same'] = lib is ta\n"
    )
    strategy = PythonStrategyRuntime().load_in_process(source, "i.py", {})
    state = msgpack.unpackb(strategy.snapshot(), raw=False)["state"]
    assert state == {"same": True}
    assert repr(ta.ema(3)) == "ta.ema(3) value=None"
