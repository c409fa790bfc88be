"""The Lua strategy API: parameters, history, decisions, errors, batches, snapshots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from trader.errors import DataError, StrategyError
from trader.interfaces import Limits, Parameter
from trader.model import CandleArrays, OrderSide, OrderType
from trader_strategy_lua import LuaStrategyError, LuaStrategyRuntime

SMA_CROSS = """
params = {
  fast = {default = 10, min = 2, max = 50, step = 1, description = "fast SMA period"},
  slow = {default = 30, min = 5, max = 200, step = 1},
}

function init(ctx)
  ctx.state.fast = ta.sma(ctx.params.fast)
  ctx.state.slow = ta.sma(ctx.params.slow)
  ctx.state.seen = 0
end

function on_candle(ctx, candles)
  local close = candles.close[candles.n]
  ctx.state.seen = ctx.state.seen + 1
  local fast = ctx.state.fast:update(close)
  local slow = ctx.state.slow:update(close)
  if not slow then return nil end
  if fast > slow then return 1 else return -1 end
end
"""

# Orders, targets and holds mixed, with state that needs the history window.
MIXED = """
params = {every = {default = 7, min = 1}, size = {default = 0.5}, label = "x", on = true}

function init(ctx) ctx.state.count = 0; ctx.state.log = {} end

function on_candle(ctx, candles)
  local n = candles.n
  assert(#candles.close == n and #candles.time == n, "window length")
  local s = ctx.state
  s.count = s.count + 1
  s.log[#s.log % 5 + 1] = candles.close[n]
  local c = candles.close[n]
  if s.count % ctx.params.every == 0 then
    return {
      {side = "buy", type = "limit", amount = ctx.params.size, price = c * 0.99,
       tag = ctx.params.label},
      {side = "sell", type = "stop", amount = 1, stop = c * 0.9},
    }
  elseif s.count % 5 == 0 then
    return {side = "sell", amount = 2}
  elseif n > 3 and candles.close[n - 3] < c then
    return 0.25
  elseif s.count % 3 == 0 then
    return nil
  end
  return -0.5
end
"""


def walk(size: int, seed: int = 3, start: int = 0) -> CandleArrays:
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.normal(0, 1, size))
    times = start + np.arange(size, dtype=np.int64) * 60_000
    return CandleArrays(times, close, close + 1, close - 1, close, rng.uniform(1, 5, size))


@pytest.fixture
def runtime() -> LuaStrategyRuntime:
    return LuaStrategyRuntime(history=50, batch_size=700)


def test_parameters_are_read_with_ranges_and_sorted(runtime: LuaStrategyRuntime) -> None:
    assert runtime.parameters(SMA_CROSS, "sma.lua") == [
        Parameter("fast", 10, 2, 50, 1, "fast SMA period"),
        Parameter("slow", 30, 5, 200, 1, ""),
    ]
    shorthand = runtime.parameters(MIXED, "mixed.lua")
    assert [(p.name, p.default) for p in shorthand] == [
        ("every", 7),
        ("label", "x"),
        ("on", True),
        ("size", 0.5),
    ]


def test_bad_declarations_are_reported_together(runtime: LuaStrategyRuntime) -> None:
    source = "params = {a = {min = 1}, b = {default = 5, max = 2}, c = {default = 'x', min = 1}}"
    with pytest.raises(LuaStrategyError) as caught:
        runtime.parameters(source, "bad.lua")
    message = str(caught.value)
    assert message.startswith("bad.lua: invalid params declaration")
    assert "params.a has no default" in message
    assert "params.b: default 5 is above max 2" in message
    assert "params.c.min must be a number" in message


def test_a_misspelt_declaration_field_is_refused(runtime: LuaStrategyRuntime) -> None:
    source = "params = {fast = {default = 10, mni = 2, maximum = 5}}"
    with pytest.raises(LuaStrategyError, match=r"params\.fast has unknown fields maximum, mni"):
        runtime.parameters(source, "typo.lua")


def test_parameters_are_bound_coerced_and_checked(runtime: LuaStrategyRuntime) -> None:
    instance = runtime.load(MIXED, "mixed.lua", {"every": "3", "on": "no"}, Limits())
    assert instance._params == {"every": 3, "label": "x", "on": False, "size": 0.5}
    with pytest.raises(LuaStrategyError, match=r"unknown parameter 'evry' \(declared: every"):
        runtime.load(MIXED, "mixed.lua", {"evry": 3}, Limits())
    with pytest.raises(LuaStrategyError, match="parameter fast = 60 is above its max 50"):
        runtime.load(SMA_CROSS, "sma.lua", {"fast": 60}, Limits())
    with pytest.raises(LuaStrategyError, match=r"parameter fast: 2\.5 is not a whole number"):
        runtime.load(SMA_CROSS, "sma.lua", {"fast": 2.5}, Limits())


def test_syntax_and_runtime_errors_carry_file_and_line(runtime: LuaStrategyRuntime) -> None:
    with pytest.raises(LuaStrategyError) as caught:
        runtime.load("x = 1\nfunction on_candle(\n  return 1\nend\n", "broken.lua", {}, Limits())
    assert caught.value.line == 3
    assert str(caught.value).startswith("broken.lua:3: syntax error:")
    source = "function on_candle(ctx, candles)\n  local t = nil\n  return t.x\nend\n"
    instance = runtime.load(source, "oops.lua", {}, Limits())
    with pytest.raises(StrategyError, match=r"^oops\.lua:3: attempt to index a nil value"):
        instance.on_candle("a", walk(3))


def test_a_missing_on_candle_is_reported(runtime: LuaStrategyRuntime) -> None:
    instance = runtime.load("x = 1", "empty.lua", {}, Limits())
    with pytest.raises(LuaStrategyError, match="defines no function on_candle"):
        instance.on_candle("a", walk(2))


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("1.5", r"returned 1\.5; a target position must be within \[-1, 1\]"),
        ("0/0", "returned nan"),
        ("'buy'", "returned a string"),
        ("{side = 'hold', amount = 1}", 'side must be "buy" or "sell"'),
        ("{side = 'buy'}", "amount is missing"),
        ("{side = 'buy', amount = -1}", "amount must be a finite number above zero"),
        ("{side = 'buy', type = 'limit', amount = 1}", "a limit order needs a price"),
        ("{side = 'buy', type = 'stop', amount = 1}", "a stop order needs stop_price"),
        ("{side = 'buy', type = 'iceberg', amount = 1}", 'type must be "market"'),
    ],
)
def test_results_that_are_not_decisions_are_refused(
    runtime: LuaStrategyRuntime, returned: str, message: str
) -> None:
    source = f"function on_candle(ctx, candles) return {returned} end"
    instance = runtime.load(source, "r.lua", {}, Limits())
    with pytest.raises(LuaStrategyError, match=message) as caught:
        instance.on_candle("a", walk(2))
    assert not caught.value.stopped


def test_on_candle_sees_history_newest_last_and_decides(runtime: LuaStrategyRuntime) -> None:
    source = """
    function on_candle(ctx, candles)
      local n = candles.n
      ctx.state.n = n
      ctx.state.close = candles.close[n]
      ctx.state.prev = candles.close[n - 1]
      ctx.state.time = candles.time[n]
      ctx.state.assignment = ctx.assignment
      return {side = "buy", type = "limit", amount = 2, price = candles.low[n], tag = "entry"}
    end
    """
    candles = walk(10)
    instance = runtime.load(source, "h.lua", {}, Limits())
    decision = instance.on_candle("btc-1", candles)
    assert decision.assignment == "btc-1" and decision.time == int(candles.time[-1])
    assert decision.target is None
    (order,) = decision.orders
    assert order.side is OrderSide.BUY and order.type is OrderType.LIMIT
    assert order.amount == 2.0 and order.price == float(candles.low[-1]) and order.tag == "entry"
    state = _state(instance.snapshot())
    assert state[b"n"] == 10
    assert state[b"close"] == float(candles.close[-1])
    assert state[b"prev"] == float(candles.close[-2])
    assert state[b"time"] == int(candles.time[-1])
    assert state[b"assignment"] == b"btc-1"


def test_each_candle_reaches_on_candle_exactly_once(runtime: LuaStrategyRuntime) -> None:
    instance = runtime.load(SMA_CROSS, "sma.lua", {"fast": 2, "slow": 5}, Limits())
    candles = walk(40)
    first = instance.on_candle("a", candles.slice(0, 20))  # 19 candles of history, 1 decided
    again = instance.on_candle("b", candles.slice(0, 20))  # the same newest candle: no Lua call
    assert again == type(first)("b", first.time, first.target, first.orders)
    instance.on_candle("a", candles.slice(5, 24))  # four new candles, fed one by one
    assert _state(instance.snapshot())[b"seen"] == 5
    with pytest.raises(DataError, match="older than the last one decided on"):
        instance.on_candle("a", candles.slice(0, 10))


def test_the_batch_path_decides_exactly_like_candle_by_candle(
    runtime: LuaStrategyRuntime,
) -> None:
    candles = walk(3000)
    stepped = runtime.load(MIXED, "mixed.lua", {}, Limits())
    one_by_one = [stepped.on_candle("a", candles.slice(max(0, i - 60), i + 1)) for i in range(3000)]
    batched = runtime.load(MIXED, "mixed.lua", {}, Limits())
    batch = batched.on_candles("a", candles)  # chunks of 700, window of 50..100
    assert list(batch) == one_by_one
    assert {o.type for d in batch for o in d.orders} == {
        OrderType.LIMIT,
        OrderType.STOP,
        OrderType.MARKET,
    }
    assert {d.target for d in batch} >= {0.25, -0.5, None}


def test_snapshot_and_restore_continue_identically(runtime: LuaStrategyRuntime) -> None:
    candles = walk(600)
    original = runtime.load(SMA_CROSS, "sma.lua", {"fast": 5}, Limits())
    original.on_candles("a", candles.slice(0, 300))
    snapshot = original.snapshot()
    moved = runtime.load(SMA_CROSS, "sma.lua", {"fast": 5}, Limits())
    moved.restore(snapshot)
    ahead = original.on_candles("a", candles.slice(300, 600))
    # the restored instance gets the engine's usual history and rebuilds its window from it
    after = [moved.on_candle("a", candles.slice(i - 80, i + 1)) for i in range(299, 600)]
    assert after[0] == original_last_at(candles, 299)
    assert after[1:] == list(ahead)
    assert _state(moved.snapshot()) == _state(original.snapshot())


def original_last_at(candles: CandleArrays, index: int) -> object:
    runtime = LuaStrategyRuntime()
    fresh = runtime.load(SMA_CROSS, "sma.lua", {"fast": 5}, Limits())
    return fresh.on_candles("a", candles.slice(0, index + 1)).decision(index)


def test_state_keeps_its_types_and_refuses_what_cannot_move(
    runtime: LuaStrategyRuntime,
) -> None:
    source = """
    function init(ctx)
      local s = ctx.state
      s.int, s.float, s.big = 3, 2.5, 9007199254740993
      s.bytes = "\\0\\255binary"
      s.flags = {[true] = "yes", [1] = "one", [2.5] = false}
      s.nested = {a = {b = {c = {1, 2, 3}}}}
      s.rsi = ta.rsi(3)
      s.rsi:update(1); s.rsi:update(2)
    end
    function on_candle(ctx, candles)
      if ctx.params.bad == "fn" then ctx.state.f = print end
      if ctx.params.bad == "meta" then ctx.state.m = setmetatable({}, {}) end
      if ctx.params.bad == "co" then ctx.state.c = {{coroutine.create(print)}} end
      return ctx.state.rsi:update(candles.close[candles.n]) and 0 or nil
    end
    params = {bad = ""}
    """
    instance = runtime.load(source, "s.lua", {}, Limits())
    copy = runtime.load(source, "s.lua", {}, Limits())
    copy.restore(instance.snapshot())
    state = _state(copy.snapshot())
    assert state[b"int"] == 3 and isinstance(state[b"int"], int)
    assert state[b"float"] == 2.5 and state[b"big"] == 9007199254740993
    assert state[b"bytes"] == b"\x00\xffbinary"
    flags = _raw_state(copy.snapshot())[b"flags"]  # a dict would merge true and 1
    pairs = {(type(flags[i]), flags[i], flags[i + 1]) for i in range(0, len(flags), 2)}
    assert pairs == {(bool, True, b"yes"), (int, 1, b"one"), (float, 2.5, False)}
    assert state[b"nested"] == {b"a": {b"b": {b"c": {1: 1, 2: 2, 3: 3}}}}
    assert copy.on_candle("a", walk(1)) == instance.on_candle("a", walk(1))  # the ta object moved
    for bad, path in (("fn", "ctx.state.f is a function"), ("meta", "ctx.state.m has a metatable")):
        broken = runtime.load(source, "s.lua", {"bad": bad}, Limits())
        broken.on_candle("a", walk(1))
        with pytest.raises(LuaStrategyError, match=path):
            broken.snapshot()
    broken = runtime.load(source, "s.lua", {"bad": "co"}, Limits())
    broken.on_candle("a", walk(1))
    with pytest.raises(LuaStrategyError, match=r"ctx\.state\.c\.\[1\]\.\[1\] is a coroutine"):
        broken.snapshot()


def test_a_snapshot_only_restores_into_the_same_parameters(runtime: LuaStrategyRuntime) -> None:
    snapshot = runtime.load(SMA_CROSS, "sma.lua", {"fast": 5}, Limits()).snapshot()
    other = runtime.load(SMA_CROSS, "sma.lua", {"fast": 6}, Limits())
    with pytest.raises(LuaStrategyError, match="taken with parameters"):
        other.restore(snapshot)
    with pytest.raises(LuaStrategyError, match="not valid msgpack"):
        other.restore(b"\xc1")
    foreign = msgpack.unpackb(snapshot)
    foreign["language"] = "python"
    with pytest.raises(LuaStrategyError, match="not a Lua strategy snapshot"):
        runtime.load(SMA_CROSS, "sma.lua", {"fast": 5}, Limits()).restore(msgpack.packb(foreign))


def test_trusted_strategies_run_on_luajit_with_the_same_decisions() -> None:
    runtime = LuaStrategyRuntime()
    candles = walk(5000)
    sandboxed = runtime.load(MIXED, "m.lua", {}, Limits())
    trusted = runtime.load(MIXED, "m.lua", {}, Limits(), trusted=True)
    assert (sandboxed.engine, trusted.engine) == ("lua54", "luajit")
    assert list(trusted.on_candles("a", candles)) == list(sandboxed.on_candles("a", candles))


def test_print_goes_to_the_instance_log(runtime: LuaStrategyRuntime) -> None:
    source = "function on_candle(ctx, c) print('close', c.close[c.n], nil, true) end"
    instance = runtime.load(source, "p.lua", {}, Limits())
    instance.on_candle("a", CandleArrays([0], [1.0], [1.0], [1.0], [2.5], [1.0]))
    assert instance.logs() == ["close\t2.5\tnil\ttrue"]
    assert instance.logs() == []


def _raw_state(snapshot: bytes) -> Any:
    """``ctx.state`` of a snapshot as one level of key/value pairs."""
    flat = msgpack.unpackb(snapshot, raw=False, strict_map_key=False)["state"]
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _state(snapshot: bytes) -> Any:
    """``ctx.state`` of a snapshot as Python dicts (tables are flat key/value lists)."""

    def tables(value: object) -> object:
        if isinstance(value, list):
            return {value[i]: tables(value[i + 1]) for i in range(0, len(value), 2)}
        if isinstance(value, msgpack.ExtType):
            kind, fields = msgpack.unpackb(value.data, raw=False, strict_map_key=False)
            return (kind, tables(fields))
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        return value

    document = msgpack.unpackb(snapshot, raw=False, strict_map_key=False)
    return tables(document["state"])


def test_the_readme_example_runs_as_documented() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    source = readme.split("```lua\n", 1)[1].split("```", 1)[0]
    runtime = LuaStrategyRuntime()
    assert [p.name for p in runtime.parameters(source, "sma_cross.lua")] == ["fast", "slow"]
    strategy = runtime.load(source, "sma_cross.lua", {"fast": 12}, runtime.default_limits)
    candles = walk(500)
    batch = strategy.on_candles("btc-sma", candles)
    assert np.isnan(batch.target[:29]).all()  # the slow average needs 30 closes
    assert set(batch.target[29:]) == {1.0, -1.0}
    closes = candles.close
    fast, slow = closes[-12:].mean(), closes[-30:].mean()
    assert batch.decision(499).target == (1.0 if fast > slow else -1.0)


def test_init_must_be_a_function(runtime: LuaStrategyRuntime) -> None:
    with pytest.raises(LuaStrategyError, match="init is a number, not a function"):
        runtime.load("init = 5", "i.lua", {}, Limits())
