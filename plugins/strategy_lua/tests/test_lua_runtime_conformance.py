"""The ``lua`` runtime against the strategy-runtime conformance suite: sandboxed Lua 5.4 with
limits, and trusted strategies on LuaJIT without them."""

from __future__ import annotations

from typing import ClassVar

import pytest

from trader.interfaces import Limits, StrategyRuntime
from trader_sdk.testing.strategy_runtime import StrategyRuntimeConformance
from trader_strategy_lua import LuaStrategy, LuaStrategyRuntime
from trader_strategy_lua.sandbox import luajit_module

# The scenarios of trader_sdk.testing.strategy_runtime.SCENARIOS, in Lua (no `//` and no
# integer-only features, so the same sources run on LuaJIT).
SOURCES = {
    "params": """
params = {
  period = {default = 10, min = 2, max = 50, step = 1, description = "lookback period"},
  factor = {default = 0.5, min = 0.1, max = 2.0},
  label = {default = "x"},
  enabled = true,
}

function on_candle(ctx, candles)
  local side = "sell"
  if ctx.params.enabled then side = "buy" end
  return {side = side, type = "limit", amount = ctx.params.period, price = ctx.params.factor,
          tag = ctx.params.label}
end
""",
    "bad_params": """
params = {period = {default = 60, min = 2, max = 50}}
function on_candle(ctx, candles) return nil end
""",
    "history": """
local function num(v) return string.format("%.17g", v) end

function init(ctx) ctx.state.calls = 0 end

function on_candle(ctx, candles)
  ctx.state.calls = ctx.state.calls + 1
  local n = candles.n
  local parts = {
    "calls=" .. num(ctx.state.calls), "n=" .. num(n), "first_time=" .. num(candles.time[1]),
    "time=" .. num(candles.time[n]), "open=" .. num(candles.open[n]),
    "high=" .. num(candles.high[n]), "low=" .. num(candles.low[n]),
    "close=" .. num(candles.close[n]), "volume=" .. num(candles.volume[n]),
  }
  if n > 1 then
    parts[#parts + 1] = "prev_time=" .. num(candles.time[n - 1])
    parts[#parts + 1] = "prev_close=" .. num(candles.close[n - 1])
  end
  return {side = "buy", type = "market", amount = 1, tag = table.concat(parts, " ")}
end
""",
    "targets": """
local CYCLE = {false, 0, 1, -1, 0.5, -0.25}  -- false: hold

function init(ctx) ctx.state.calls = 0 end

function on_candle(ctx, candles)
  ctx.state.calls = ctx.state.calls + 1
  local target = CYCLE[(ctx.state.calls - 1) % 6 + 1]
  if target == false then return nil end
  return target
end
""",
    "fixed_target": """
params = {value = 0.25, offset = 0.0}
function on_candle(ctx, candles) return ctx.params.value + ctx.params.offset end
""",
    "orders": """
function init(ctx) ctx.state.calls = 0 end

function on_candle(ctx, candles)
  local s = ctx.state
  s.calls = s.calls + 1
  local close = candles.close[candles.n]
  local k = (s.calls - 1) % 4
  if k == 0 then return {side = "buy", type = "market", amount = 0.5} end
  if k == 1 then
    return {side = "sell", type = "limit", amount = 1.25, price = close + 1, tag = "take"}
  end
  if k == 2 then
    return {side = "sell", type = "stop", amount = 2, stop_price = close - 1, tag = "stop"}
  end
  return {
    {side = "buy", type = "limit", amount = 1, price = close - 2, tag = "a"},
    {side = "buy", type = "stop", amount = 3, stop_price = close + 2, tag = "b"},
  }
end
""",
    "bad_order": """
params = {case = "none"}

function on_candle(ctx, candles)
  local case = ctx.params.case
  if case == "amount" then return {side = "buy", type = "market", amount = 0} end
  if case == "side" then return {side = "hold", type = "market", amount = 1} end
  if case == "limit" then return {side = "buy", type = "limit", amount = 1} end
  if case == "stop" then return {side = "sell", type = "stop", amount = 1} end
  return nil
end
""",
    "error": """
function init(ctx) ctx.state.calls = 0 end

function on_candle(ctx, candles)
  ctx.state.calls = ctx.state.calls + 1
  if ctx.state.calls == 3 then
    error("boom")
  end
  return 0
end
""",
    "syntax_error": """
function on_candle(ctx, candles)
  return 0
end
local broken = = 1
""",
    "runaway": """
function on_candle(ctx, candles)
  while true do end
end
""",
    "mixed": """
params = {
  fast = {default = 3, min = 1, max = 50, step = 1},
  slow = {default = 8, min = 2, max = 200, step = 1},
}

function init(ctx)
  ctx.state.calls = 0
  ctx.state.fast = ta.sma(ctx.params.fast)
  ctx.state.slow = ta.sma(ctx.params.slow)
end

function on_candle(ctx, candles)
  local s, n = ctx.state, candles.n
  s.calls = s.calls + 1
  local close = candles.close[n]
  local fast = s.fast:update(close)
  local slow = s.slow:update(close)
  if slow == nil or s.calls % 5 == 0 then return nil end
  if s.calls % 7 == 0 then
    return {
      {side = "buy", type = "limit", amount = 1, price = candles.low[n], tag = "dip"},
      {side = "sell", type = "stop", amount = 1, stop_price = candles.close[n - 1], tag = "guard"},
    }
  end
  if fast > slow then return 1 end
  if close > candles.close[n - 1] then return 0.5 end
  return -1
end
""",
    "ta": """
function init(ctx)
  local s = ctx.state
  s.sma, s.ema, s.wma, s.rsi, s.roc = ta.sma(5), ta.ema(5), ta.wma(5), ta.rsi(5), ta.roc(5)
  s.highest, s.lowest, s.stddev = ta.highest(5), ta.lowest(5), ta.stddev(5, 2)
  s.macd, s.bbands, s.atr = ta.macd(3, 6, 2), ta.bbands(5, 2, 1.5), ta.atr(5)
  s.stoch, s.obv, s.vwap = ta.stoch(5, 3, 3), ta.obv(), ta.vwap(5)
  s.crossover, s.crossunder = ta.crossover(), ta.crossunder()
end

local function put(parts, name, v)
  if v == true then v = 1 elseif v == false then v = 0 end
  if v ~= nil then parts[#parts + 1] = name .. "=" .. string.format("%.17g", v) end
end

function on_candle(ctx, candles)
  local s, n, parts = ctx.state, candles.n, {}
  local o, h, l = candles.open[n], candles.high[n], candles.low[n]
  local c, v = candles.close[n], candles.volume[n]
  for _, name in ipairs({"sma", "ema", "wma", "rsi", "roc", "highest", "lowest", "stddev"}) do
    put(parts, name, s[name]:update(c))
  end
  local macd, signal, hist = s.macd:update(c)
  put(parts, "macd", macd); put(parts, "macd_signal", signal); put(parts, "macd_hist", hist)
  local upper, middle, lower = s.bbands:update(c)
  put(parts, "bb_upper", upper); put(parts, "bb_middle", middle); put(parts, "bb_lower", lower)
  put(parts, "atr", s.atr:update(h, l, c))
  local k, d = s.stoch:update(h, l, c)
  put(parts, "stoch_k", k); put(parts, "stoch_d", d)
  put(parts, "obv", s.obv:update(c, v))
  put(parts, "vwap", s.vwap:update(h, l, c, v))
  put(parts, "crossover", s.crossover:update(c, o))
  put(parts, "crossunder", s.crossunder:update(c, o))
  return {side = "buy", type = "market", amount = 1, tag = table.concat(parts, " ")}
end
""",
}


class LuaSources:
    """The Lua scenario sources, shared by both configurations."""

    suffix: ClassVar[str] = ".lua"

    def strategy_source(self, scenario: str) -> str:
        return SOURCES[scenario]


class TestLuaSandboxedConformance(LuaSources, StrategyRuntimeConformance):
    """Untrusted strategies: Lua 5.4 under the default limits (a small window and batch size,
    so the suite's 400 candles cross the window's compaction and several batches)."""

    # the sandbox's own tests check the 50 ms promise; here leave room for a busy machine
    runaway_seconds: ClassVar[float] = 1.0

    @pytest.fixture
    def strategy_runtime(self) -> StrategyRuntime:
        return LuaStrategyRuntime(history=40, batch_size=97)

    def test_strategies_run_on_lua54(self, strategy_runtime: StrategyRuntime) -> None:
        instance = strategy_runtime.load(SOURCES["targets"], "t.lua", {}, Limits())
        assert isinstance(instance, LuaStrategy) and instance.engine == "lua54"


@pytest.mark.skipif(luajit_module() is None, reason="this platform's lupa wheel has no LuaJIT")
class TestLuaTrustedConformance(LuaSources, StrategyRuntimeConformance):
    """Trusted strategies: LuaJIT with the JIT on and no limits."""

    trusted: ClassVar[bool] = True
    unlimited_reason: ClassVar[str | None] = (
        "trusted Lua strategies run on LuaJIT without limits (its JIT skips count hooks)"
    )

    @pytest.fixture
    def strategy_runtime(self) -> StrategyRuntime:
        return LuaStrategyRuntime(history=40, batch_size=97)

    def test_strategies_run_on_luajit(self, strategy_runtime: StrategyRuntime) -> None:
        instance = strategy_runtime.load(SOURCES["targets"], "t.lua", {}, Limits(), trusted=True)
        assert isinstance(instance, LuaStrategy) and instance.engine == "luajit"
