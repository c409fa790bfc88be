"""Python ``ta``: the module is core's ``trader.ta`` (one Python implementation; TA-Lib checks in
core/tests/test_ta.py); against straightforward references (1e-9 relative); every indicator, run
by a Python strategy, bit for bit against the same strategy in Lua (when lupa is installed); and
through snapshots mid-stream."""

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


def test_ta_is_trader_ta_under_the_lua_names() -> None:
    import trader.ta

    for name in trader.ta.__all__:
        assert getattr(ta, name) is getattr(trader.ta, name)
    lua_names = {"sma", "ema", "wma", "rsi", "macd", "stddev", "bbands", "atr", "highest"}
    lua_names |= {"lowest", "crossover", "crossunder", "roc", "stoch", "obv", "vwap"}
    assert lua_names <= set(ta.__all__)


# every indicator: a Python strategy against the same strategy in Lua ---------------------------

PY_GENERIC = """
params = {"kind": "sma", "a": -1.5, "b": -1.5, "c": -1.5, "inputs": "c"}  # -1.5: not given


def init(ctx):
    p = ctx.params
    args = [v for v in (p.a, p.b, p.c) if v != -1.5]
    ctx.state["ind"] = getattr(ta, p.kind)(*args)
    ctx.state["out"] = [[], [], []]


def on_candle(ctx, c):
    ins = ctx.params.inputs
    ind = ctx.state["ind"]
    if ins == "c":
        r = ind.update(c.close[-1])
    elif ins == "hlc":
        r = ind.update(c.high[-1], c.low[-1], c.close[-1])
    elif ins == "cv":
        r = ind.update(c.close[-1], c.volume[-1])
    elif ins == "hlcv":
        r = ind.update(c.high[-1], c.low[-1], c.close[-1], c.volume[-1])
    else:
        r = ind.update(c.close[-1], c.open[-1])
    values = list(r) if isinstance(r, tuple) else [r]
    values += [None] * (3 - len(values))
    for out, v in zip(ctx.state["out"], values):
        out.append(v)
"""

LUA_GENERIC = """
params = {kind = "sma", a = -1.5, b = -1.5, c = -1.5, inputs = "c"}  -- -1.5: not given
function init(ctx)
  local p = ctx.params
  local args = {}
  for _, name in ipairs({"a", "b", "c"}) do
    if p[name] ~= -1.5 then args[#args + 1] = p[name] end
  end
  ctx.state.ind = ta[p.kind](table.unpack(args))
  ctx.state.o1, ctx.state.o2, ctx.state.o3 = {}, {}, {}
end
local function keep(t, v)
  if v == nil then v = "none" end
  t[#t + 1] = v
end
function on_candle(ctx, c)
  local n = c.n
  local ins = ctx.params.inputs
  local ind = ctx.state.ind
  local r1, r2, r3
  if ins == "c" then r1, r2, r3 = ind:update(c.close[n])
  elseif ins == "hlc" then r1, r2, r3 = ind:update(c.high[n], c.low[n], c.close[n])
  elseif ins == "cv" then r1, r2, r3 = ind:update(c.close[n], c.volume[n])
  elseif ins == "hlcv" then r1, r2, r3 = ind:update(c.high[n], c.low[n], c.close[n], c.volume[n])
  else r1, r2, r3 = ind:update(c.close[n], c.open[n]) end
  keep(ctx.state.o1, r1); keep(ctx.state.o2, r2); keep(ctx.state.o3, r3)
end
"""

EVERY = [
    ("sma", (20,), "c"),
    ("ema", (9,), "c"),
    ("wma", (9,), "c"),
    ("rsi", (), "c"),
    ("macd", (), "c"),
    ("macd", (5, 3, 1), "c"),
    ("stddev", (20, 1.5), "c"),
    ("bbands", (), "c"),
    ("bbands", (10, 2.5, 1.0), "c"),
    ("atr", (), "hlc"),
    ("highest", (10,), "c"),
    ("lowest", (10,), "c"),
    ("crossover", (), "co"),
    ("crossunder", (), "co"),
    ("roc", (), "c"),
    ("stoch", (), "hlc"),
    ("stoch", (9, 2, 4), "hlc"),
    ("obv", (), "cv"),
    ("vwap", (), "hlcv"),
    ("vwap", (30,), "hlcv"),
]


def generic_candles(seed: int, size: int) -> CandleArrays:
    rng = np.random.default_rng(seed)
    close = closes_for(seed, size)
    volume = rng.random(size) * 10
    volume[200:215] = 0.0
    times = np.arange(size, dtype=np.int64) * 60_000
    opens = close + rng.normal(0, 0.5, size)
    return CandleArrays(
        times, opens, close + rng.random(size), close - rng.random(size), close, volume
    )


def generic_params(kind: str, args: tuple[float, ...], inputs: str) -> dict[str, object]:
    params: dict[str, object] = {"kind": kind, "inputs": inputs}
    for name, value in zip("abc", args, strict=False):
        params[name] = float(value)
    return params


@pytest.mark.parametrize(("kind", "args", "inputs"), EVERY)
def test_every_indicator_in_a_python_strategy_equals_the_lua_one(
    kind: str, args: tuple[float, ...], inputs: str
) -> None:
    pytest.importorskip("lupa")
    from trader_strategy_lua import LuaStrategyRuntime

    candles = generic_candles(len(kind) * 7 + len(args), 1500)
    params = generic_params(kind, args, inputs)
    strategy = PythonStrategyRuntime().load_in_process(PY_GENERIC, "g.py", params)
    strategy.on_candles("a", candles)
    python = msgpack.unpackb(strategy.snapshot(), raw=False)["state"]["out"]
    lua_instance = LuaStrategyRuntime().load(LUA_GENERIC, "g.lua", params, Limits())
    lua_instance.on_candles("a", candles)
    state = msgpack.unpackb(lua_instance.snapshot(), raw=False, strict_map_key=False)["state"]
    fields = {state[i]: state[i + 1] for i in range(0, len(state), 2)}
    lua_instance.close()
    lua = []
    for key in (b"o1", b"o2", b"o3"):
        flat = fields[key]
        values = dict(zip(flat[::2], flat[1::2], strict=True))
        lua.append([None if values[i] == b"none" else values[i] for i in range(1, 1501)])
    assert sum(v is not None for v in python[0]) > 1400
    assert python == lua  # exact, every reading of every output


@pytest.mark.parametrize(("kind", "args", "inputs"), EVERY)
def test_every_indicator_survives_a_strategy_snapshot_mid_stream(
    kind: str, args: tuple[float, ...], inputs: str
) -> None:
    candles = generic_candles(11, 500)
    params = generic_params(kind, args, inputs)
    runtime = PythonStrategyRuntime()
    whole = runtime.load_in_process(PY_GENERIC, "g.py", params)
    whole.on_candles("a", candles)
    first = runtime.load_in_process(PY_GENERIC, "g.py", params)
    first.on_candles("a", candles.slice(0, 233))
    second = runtime.load_in_process(PY_GENERIC, "g.py", params)
    second.restore(first.snapshot())
    second.on_candles("a", candles.slice(233, 500))
    assert second.snapshot() == whole.snapshot()


def test_the_docs_macd_example_decides_the_same_in_both_languages() -> None:
    pytest.importorskip("lupa")
    import re
    from pathlib import Path

    from trader_strategy_lua import LuaStrategyRuntime

    text = (Path(__file__).parents[3] / "docs" / "ta.md").read_text()
    (lua_source,) = re.findall(r"```lua\n(-- macd_cross.lua.*?)```", text, re.DOTALL)
    (py_source,) = re.findall(r"```python\n(# macd_cross.py.*?)```", text, re.DOTALL)
    candles = generic_candles(5, 3000)
    python = PythonStrategyRuntime().load_in_process(py_source, "macd_cross.py", {})
    lua = LuaStrategyRuntime().load(lua_source, "macd_cross.lua", {}, Limits())
    python_batch = python.on_candles("a", candles)
    lua_batch = lua.on_candles("a", candles)
    lua.close()
    assert np.array_equal(python_batch.time, lua_batch.time)
    assert np.array_equal(python_batch.target, lua_batch.target, equal_nan=True)
    assert len(python_batch.time) > 20  # it did trade: entries and exits
    # and the bands example runs
    (bands,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "bbands" in b]
    batch = PythonStrategyRuntime().load_in_process(bands, "bands.py", {}).on_candles("a", candles)
    assert len(batch.time) > 0
