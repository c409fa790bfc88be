"""The Lua ``ta`` indicators: against straightforward reference computations (1e-9 relative),
bit for bit against the Python reference implementation ``trader.ta`` (which core/tests/test_ta.py
checks against TA-Lib) for every indicator, on Lua 5.4 and on LuaJIT, and through snapshots."""

from __future__ import annotations

import itertools
import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader import ta
from trader.interfaces import Limits
from trader.model import CandleArrays
from trader_strategy_lua import LuaStrategyError, LuaStrategyRuntime

SOURCE = """
params = {kind = "sma", period = 14}
function init(ctx)
  ctx.state.ind = ta[ctx.params.kind](ctx.params.period)
  ctx.state.out = {}
end
function on_candle(ctx, candles)
  local v = ctx.state.ind:update(candles.close[candles.n])
  local out = ctx.state.out
  out[#out + 1] = v or -1   -- -1 marks "not ready yet" (every real value here is >= 0)
  assert(v == ctx.state.ind.value or v == nil, "value field follows update")
end
"""


def reference_sma(x: list[float], p: int) -> list[float | None]:
    return [None if i + 1 < p else sum(x[i + 1 - p : i + 1]) / p for i in range(len(x))]


def reference_ema(x: list[float], p: int) -> list[float | None]:
    out: list[float | None] = []
    k = 2 / (p + 1)
    value: float | None = None
    for i, v in enumerate(x):
        if i + 1 < p:
            out.append(None)
            continue
        value = sum(x[:p]) / p if i + 1 == p else value + k * (v - value)  # type: ignore[operator]
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


def run(kind: str, period: int, closes: np.ndarray, trusted: bool = False) -> list[float | None]:
    runtime = LuaStrategyRuntime()
    instance = runtime.load(SOURCE, "ta.lua", {"kind": kind, "period": period}, Limits(), trusted)
    ones = np.ones(len(closes))
    times = np.arange(len(closes), dtype=np.int64) * 60_000
    instance.on_candles("a", CandleArrays(times, closes, ones, ones, closes, ones))
    state = msgpack.unpackb(instance.snapshot(), raw=False, strict_map_key=False)["state"]
    fields = {state[i]: state[i + 1] for i in range(0, len(state), 2)}
    out = fields[b"out"]
    values = dict(zip(out[::2], out[1::2], strict=True))
    return [None if values[i] == -1 else values[i] for i in range(1, len(closes) + 1)]


@pytest.mark.parametrize("kind", ["sma", "ema", "rsi"])
@pytest.mark.parametrize("period", [1, 2, 14, 50])
def test_indicator_matches_the_reference(kind: str, period: int) -> None:
    rng = np.random.default_rng(period)
    closes = 100.0 + np.cumsum(rng.normal(0, 1, 2000))
    closes[100:130] = closes[99]  # a flat stretch: RSI with no gains and no losses
    expected = REFERENCES[kind](closes.tolist(), period)
    got = run(kind, period, closes)
    assert [v is None for v in got] == [v is None for v in expected]
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        if a is not None and b is not None:
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (i, a, b)


def test_indicators_agree_on_luajit() -> None:
    closes = 100.0 + np.cumsum(np.random.default_rng(5).normal(0, 1, 500))
    for kind in REFERENCES:
        assert run(kind, 9, closes, trusted=True) == run(kind, 9, closes)


@pytest.mark.parametrize("period", ["0", "2.5", "'x'", "nil"])
def test_a_bad_period_is_an_error_at_the_callers_line(period: str) -> None:
    source = f"function init(ctx)\n  ctx.state.x = ta.sma({period})\nend\n"
    with pytest.raises(LuaStrategyError, match=r"ta\.sma: period must be a whole number") as caught:
        LuaStrategyRuntime().load(source, "p.lua", {}, Limits())
    assert caught.value.line == 2


# every indicator, Lua against trader.ta ------------------------------------------------------

GENERIC = """
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
  local main = r1
  if ctx.params.kind == "bbands" then main = r2 end  -- the middle band
  if ind.value ~= main and not (ind.value == nil and main == nil) then
    error("value is not the last reading")
  end
end
"""

# (kind, arguments, inputs); the arguments cover defaults (none given) and odd periods
EVERY = [
    ("sma", (14,), "c"),
    ("sma", (1,), "c"),
    ("ema", (9,), "c"),
    ("wma", (9,), "c"),
    ("wma", (1,), "c"),
    ("rsi", (), "c"),
    ("rsi", (3,), "c"),
    ("macd", (), "c"),
    ("macd", (26, 5, 1), "c"),
    ("stddev", (20,), "c"),
    ("stddev", (2, 1.5), "c"),
    ("bbands", (), "c"),
    ("bbands", (7, 2.5, 1.0), "c"),
    ("atr", (), "hlc"),
    ("atr", (1,), "hlc"),
    ("highest", (10,), "c"),
    ("lowest", (10,), "c"),
    ("crossover", (), "co"),
    ("crossunder", (), "co"),
    ("roc", (), "c"),
    ("stoch", (), "hlc"),
    ("stoch", (14, 1, 4), "hlc"),
    ("obv", (), "cv"),
    ("vwap", (), "hlcv"),
    ("vwap", (20,), "hlcv"),
]
COLUMNS = {
    "c": ("close",),
    "hlc": ("high", "low", "close"),
    "cv": ("close", "volume"),
    "hlcv": ("high", "low", "close", "volume"),
    "co": ("close", "open"),
}


def candles(seed: int, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.normal(0, 1, size))
    close[100:140] = close[99]  # flat: zero deviation, no gains or losses
    high = close + rng.random(size)
    low = close - rng.random(size)
    volume = rng.random(size) * 10
    volume[200:215] = 0.0
    return {
        "open": close + rng.normal(0, 0.5, size),
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
    }


def python_readings(
    kind: str, args: tuple[float, ...], inputs: str, cols: dict[str, np.ndarray]
) -> list[list[object]]:
    indicator = getattr(ta, kind)(*args)
    out: list[list[object]] = [[], [], []]
    for row in zip(*[cols[k] for k in COLUMNS[inputs]], strict=True):
        r = indicator.update(*row)
        values = list(r) if isinstance(r, tuple) else [r]
        values += [None] * (3 - len(values))
        for k in range(3):
            out[k].append(values[k])
    return out


def generic_params(kind: str, args: tuple[float, ...], inputs: str) -> dict[str, object]:
    params: dict[str, object] = {"kind": kind, "inputs": inputs}
    for name, value in zip("abc", args, strict=False):
        params[name] = float(value)
    return params


def lua_outputs(instance: object) -> list[list[object]]:
    state = msgpack.unpackb(instance.snapshot(), raw=False, strict_map_key=False)["state"]  # type: ignore[attr-defined]
    fields = {state[i]: state[i + 1] for i in range(0, len(state), 2)}
    outs = []
    for key in (b"o1", b"o2", b"o3"):
        flat = fields[key]
        values = dict(zip(flat[::2], flat[1::2], strict=True))
        outs.append(
            [None if values[i] == b"none" else values[i] for i in range(1, len(values) + 1)]
        )
    return outs


def arrays(cols: dict[str, np.ndarray], lo: int = 0, hi: int | None = None) -> CandleArrays:
    hi = len(cols["close"]) if hi is None else hi
    times = np.arange(lo, hi, dtype=np.int64) * 60_000
    return CandleArrays(
        times,
        cols["open"][lo:hi],
        cols["high"][lo:hi],
        cols["low"][lo:hi],
        cols["close"][lo:hi],
        cols["volume"][lo:hi],
    )


@pytest.mark.parametrize("trusted", [False, True], ids=["lua54", "luajit"])
@pytest.mark.parametrize(("kind", "args", "inputs"), EVERY)
def test_every_indicator_equals_the_python_one_bit_for_bit(
    kind: str, args: tuple[float, ...], inputs: str, trusted: bool
) -> None:
    cols = candles(len(kind) + len(args), 1200)
    runtime = LuaStrategyRuntime()
    instance = runtime.load(
        GENERIC, "ta.lua", generic_params(kind, args, inputs), Limits(), trusted
    )
    instance.on_candles("a", arrays(cols))
    lua = lua_outputs(instance)
    python = python_readings(kind, args, inputs, cols)
    assert sum(v is not None for v in python[0]) > 1000
    assert lua == python  # exact: the same operations in the same order


@pytest.mark.parametrize(("kind", "args", "inputs"), EVERY[::2])
def test_every_indicator_continues_identically_after_snapshot_and_restore(
    kind: str, args: tuple[float, ...], inputs: str
) -> None:
    cols = candles(77, 600)
    params = generic_params(kind, args, inputs)
    runtime = LuaStrategyRuntime()
    whole = runtime.load(GENERIC, "ta.lua", params, Limits())
    whole.on_candles("a", arrays(cols))
    first = runtime.load(GENERIC, "ta.lua", params, Limits())
    first.on_candles("a", arrays(cols, 0, 257))
    second = runtime.load(GENERIC, "ta.lua", params, Limits())
    second.restore(first.snapshot())
    second.on_candles("a", arrays(cols, 257))
    assert lua_outputs(second) == lua_outputs(whole)


def test_integer_arguments_compute_like_floats() -> None:
    source = """
function init(ctx)
  local a, b = ta.stddev(3), ta.stddev(3)
  local w, v = ta.wma(4), ta.wma(4)
  for i = 1, 10 do
    local x = 3037000500 + i * i   -- x * x overflows Lua integers
    a:update(x); b:update(x * 1.0); w:update(x); v:update(x + 0.0)
  end
  ctx.state.same = a.value == b.value and w.value == v.value and math.type(a.value) == "float"
end
"""
    instance = LuaStrategyRuntime().load(source, "i.lua", {}, Limits())
    state = msgpack.unpackb(instance.snapshot(), raw=False, strict_map_key=False)["state"]
    assert state == [b"same", True]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("ta.macd(1, 26, 9)", r"ta\.macd: fast must be a whole number from 2"),
        ("ta.bbands(20, -1)", r"ta\.bbands: up must be a finite number >= 0"),
        ("ta.stddev(5, 0/0)", r"ta\.stddev: nbdev must be a finite number >= 0"),
        ("ta.stoch(5, 2.5)", r"ta\.stoch: slowk must be a whole number"),
        ("ta.vwap('x')", r"ta\.vwap: period must be a whole number"),
        ("ta.atr(0)", r"ta\.atr: period must be a whole number from 1"),
    ],
)
def test_bad_arguments_name_the_indicator_at_the_callers_line(call: str, message: str) -> None:
    source = f"function init(ctx)\n  ctx.state.x = {call}\nend\n"
    with pytest.raises(LuaStrategyError, match=message) as caught:
        LuaStrategyRuntime().load(source, "p.lua", {}, Limits())
    assert caught.value.line == 2


def test_a_missing_input_is_an_error_at_the_callers_line() -> None:
    source = "function init(ctx)\n  local a = ta.atr(3)\n  a:update(1, 2)\nend\n"
    with pytest.raises(LuaStrategyError, match="arithmetic on a nil value") as caught:
        LuaStrategyRuntime().load(source, "m.lua", {}, Limits())
    assert caught.value.line == 3


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from(EVERY),
    steps=st.lists(st.sampled_from([0, 0, 0, 1, -1, 9, -9, 400, -400]), min_size=1, max_size=300),
    start=st.integers(1, 10**7),
)
def test_lua_equals_python_on_random_series(
    case: tuple[str, tuple[float, ...], str], steps: list[int], start: int
) -> None:
    kind, args, inputs = case
    ticks = np.maximum(start + np.cumsum(np.array(steps, dtype=np.int64)), 1)
    close = ticks * 0.01
    size = len(close)
    spread = (np.arange(size) * 7919 % 13) * 0.01
    cols = {
        "open": np.roll(close, 1),
        "high": close + spread,
        "low": np.maximum(close - spread, 0.01),
        "close": close,
        "volume": (np.arange(size) * 104729 % 5) * 0.5,
    }
    instance = LuaStrategyRuntime().load(
        GENERIC, "ta.lua", generic_params(kind, args, inputs), Limits()
    )
    instance.on_candles("a", arrays(cols))
    assert lua_outputs(instance) == python_readings(kind, args, inputs, cols)
    instance.close()
