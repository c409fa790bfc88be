"""The ``ta`` indicators against straightforward reference computations (1e-9 relative)."""

from __future__ import annotations

import itertools
import math

import msgpack
import numpy as np
import pytest

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
