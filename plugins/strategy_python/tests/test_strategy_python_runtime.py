"""The ``python`` runtime in this process: the API, errors with lines, snapshots, the batch
path, and the README's worked example (also against the Lua runtime when lupa is installed)."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import numpy as np
import pytest

from trader.errors import DataError, StrategyError
from trader.interfaces import Limits, Parameter
from trader.model import MINUTE_MS, CandleArrays, Decision, OrderIntent
from trader_strategy_python import PythonStrategy, PythonStrategyError, PythonStrategyRuntime

README = Path(__file__).parents[1] / "README.md"
START = 1_577_836_800_000


def readme_strategy() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    (example,) = [b for b in blocks if b.startswith("# sma_cross.py")]
    return example


def walk(rows: int, seed: int = 7) -> CandleArrays:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, rows)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, 0.0005, rows)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    time_ = START + np.arange(rows, dtype=np.int64) * MINUTE_MS
    return CandleArrays(time_, open_, high, low, close, rng.gamma(2.0, 5.0, rows))


def load(source: str, params: dict[str, object] | None = None, **options: int) -> PythonStrategy:
    return PythonStrategyRuntime(**options).load_in_process(source, "s.py", params or {})  # type: ignore[arg-type]


def sma_reference(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    def sma(p: int) -> np.ndarray:
        out = np.full(len(close), np.nan)
        sums = np.convolve(close, np.ones(p), "valid") / p
        out[p - 1 :] = sums
        return out

    f, s = sma(fast), sma(slow)
    return np.where(np.isnan(s), np.nan, np.where(f > s, 1.0, -1.0))


# the worked example ---------------------------------------------------------------------------


def test_the_readme_example_declares_its_parameters_and_crosses_like_a_reference() -> None:
    source = readme_strategy()
    runtime = PythonStrategyRuntime()
    assert runtime.parameters(source, "sma_cross.py") == [
        Parameter("fast", 10, 2, 50, 1, "fast SMA period"),
        Parameter("slow", 30, 5, 200, 1, "slow SMA period"),
    ]
    candles = walk(20_000)
    strategy = runtime.load(source, "sma_cross.py", {"fast": 12}, Limits())
    assert isinstance(strategy, PythonStrategy)
    batch = strategy.on_candles("btc-sma", candles)
    expected = sma_reference(candles.close, 12, 30)
    # the running sum and numpy's convolution may differ in the last bit right at a cross
    agree = np.isnan(batch.target) == np.isnan(expected)
    assert agree.all()
    differ = np.flatnonzero(batch.target[~np.isnan(expected)] != expected[~np.isnan(expected)])
    assert len(differ) <= 2, differ
    assert np.isnan(batch.target[:29]).all() and not np.isnan(batch.target[29:]).any()
    decisions = list(batch)
    assert decisions[0] == Decision("btc-sma", int(candles.time[0]), None)
    assert {d.target for d in decisions[29:]} == {1.0, -1.0}


def test_the_readme_example_matches_the_lua_one_on_100000_candles() -> None:
    pytest.importorskip("lupa")
    from trader_strategy_lua import LuaStrategyRuntime

    lua_readme = Path(__file__).parents[2] / "strategy_lua" / "README.md"
    (lua_source,) = re.findall(r"```lua\n(.*?)```", lua_readme.read_text(), re.DOTALL)
    candles = walk(100_000, seed=11)
    for params in ({}, {"fast": 7, "slow": 50}):
        lua = LuaStrategyRuntime().load(lua_source, "sma_cross.lua", params, Limits())
        python = load(readme_strategy(), params)
        lua_batch = lua.on_candles("a", candles, warmup=100)
        python_batch = python.on_candles("a", candles, warmup=100)
        assert np.array_equal(lua_batch.time, python_batch.time)
        assert np.array_equal(lua_batch.target, python_batch.target, equal_nan=True)
        # and one candle at a time, live
        more = walk(100_300, seed=11)
        for i in range(100_000, 100_300):
            window = more.slice(i - 50, i + 1)
            assert lua.on_candle("a", window) == python.on_candle("a", window)
        lua.close()


LUA_ORDERS = """
function on_candle(ctx, candles)
  local n = candles.n
  local k = (candles.time[n] // 60000) % 9
  if k == 0 then return {side = "buy", type = "limit", amount = 0.5, price = candles.low[n]} end
  if k == 1 then
    return {{side = "sell", amount = 1}, {side = "buy", type = "stop", amount = 2,
            stop = candles.high[n], tag = "x"}}
  end
  if k == 2 then return {} end
  if k == 3 then return nil end
  if k < 6 then return 0.25 end
  return -1
end
"""
PYTHON_ORDERS = """
def on_candle(ctx, candles):
    k = candles.time[-1] // 60000 % 9
    if k == 0:
        return {"side": "buy", "type": "limit", "amount": 0.5, "price": candles.low[-1]}
    if k == 1:
        return [{"side": "sell", "amount": 1},
                {"side": "buy", "type": "stop", "amount": 2, "stop": candles.high[-1], "tag": "x"}]
    if k == 2:
        return []
    if k == 3:
        return None
    if k < 6:
        return 0.25
    return -1
"""


def test_orders_holds_and_targets_decide_the_same_in_lua_and_python() -> None:
    pytest.importorskip("lupa")
    from trader_strategy_lua import LuaStrategyRuntime

    candles = walk(3000, seed=5)
    lua = LuaStrategyRuntime().load(LUA_ORDERS, "o.lua", {}, Limits())
    python = load(PYTHON_ORDERS)
    lua_batch = list(lua.on_candles("a", candles.slice(0, 2000)))
    assert lua_batch == list(python.on_candles("a", candles.slice(0, 2000)))
    assert {len(d.orders) for d in lua_batch} == {0, 1, 2}
    for i in range(2000, 2100):
        window = candles.slice(i - 3, i + 1)
        assert lua.on_candle("a", window) == python.on_candle("a", window)
    lua.close()


# the API --------------------------------------------------------------------------------------

ORDERS = """
params = {"every": 3}

def on_candle(ctx, candles):
    n = ctx.state.get("n", 10) + 1  # the candle's number: the first decided on is the 11th
    ctx.state["n"] = n
    if n % 7 == 0:
        return [{"side": "buy", "type": "limit", "amount": 0.5, "price": float(candles.low[-1]),
                 "tag": "entry"},
                {"side": "sell", "type": "stop", "amount": 1, "stop": candles.low[-1] * 0.9}]
    if n % 5 == 0:
        return {"side": "sell", "amount": 2}
    if n % ctx.params.every == 0:
        return None
    if n % 4 == 0:
        return []
    return np.float64(0.5) if n % 2 else -1
"""


def test_on_candle_one_at_a_time_decides_like_the_batch_path_orders_included() -> None:
    candles = walk(700)
    source = "import numpy as np\n" + ORDERS
    batch = load(source, batch_size=64, history=50).on_candles("a", candles, warmup=10)
    single = load(source, history=50)
    one_by_one = [single.on_candle("a", candles.slice(0, i + 1)) for i in range(10, 700)]
    assert list(batch) == one_by_one
    assert len(batch) == 690
    seventh = one_by_one[7 * 10 - 1 - 10]
    assert seventh.orders == (
        OrderIntent("buy", "limit", 0.5, float(candles.low[69]), None, "entry"),
        OrderIntent("sell", "stop", 1.0, None, float(candles.low[69]) * 0.9, ""),
    )
    assert one_by_one[4].orders == (OrderIntent("sell", "market", 2.0),)  # n = 15
    assert one_by_one[0].target == 0.5 and one_by_one[1].is_hold  # n = 11 and 12
    assert one_by_one[5].is_hold and one_by_one[11].target == -1.0  # n = 16 ([]) and 22


def test_candles_are_read_only_views_ending_at_the_current_candle() -> None:
    source = """
def on_candle(ctx, candles):
    seen = ctx.state.setdefault("seen", [])
    seen.append([len(candles), candles.n, len(candles.close), float(candles.close[-1]),
                 int(candles.time[-1]), float(candles.high.max())])
    if len(seen) == 3:
        candles.close[-1] = 0.0
"""
    candles = walk(50)
    strategy = load(source, history=5)
    strategy.on_candles("a", candles.slice(0, 2))
    with pytest.raises(PythonStrategyError, match=r"s\.py:7: ValueError: .*read-only"):
        strategy.on_candles("a", candles.slice(2, 50))
    state = msgpack.unpackb(strategy.snapshot(), raw=False)["state"]
    seen = state["seen"]
    assert [row[0] for row in seen] == [1, 2, 3]
    for i, (n, n2, n3, close, time_, high) in enumerate(seen):
        assert n == n2 == n3 == i + 1
        assert close == candles.close[i] and time_ == candles.time[i]
        assert high == candles.high[: i + 1].max()  # nothing later is visible
    # the failing candle counts as seen: the next batch starts after it
    assert strategy.on_candles("a", candles.slice(3, 10)).time[0] == candles.time[3]


def test_the_window_holds_at_least_history_candles_across_calls() -> None:
    source = (
        "def on_candle(ctx, candles):\n"
        "    ctx.state['sizes'] = ctx.state.get('sizes', []) + [len(candles)]\n"
        "    ctx.state['first'] = int(candles.time[0])\n"
    )
    candles = walk(300)
    strategy = load(source, history=20, batch_size=16)
    strategy.on_candles("a", candles.slice(0, 100), warmup=50)
    for i in range(100, 130):
        strategy.on_candle("a", candles.slice(i - 1, i + 1))  # only one older candle passed
    state = msgpack.unpackb(strategy.snapshot(), raw=False)["state"]
    assert min(state["sizes"][-60:]) >= 20
    assert state["first"] <= int(candles.time[129 - 19])


def test_the_live_path_shows_the_right_last_candles_through_compactions() -> None:
    source = """
def on_candle(ctx, candles):
    ctx.state["closes"] = [float(x) for x in candles.close[-5:]]
    ctx.state["times"] = [int(x) for x in candles.time[-5:]]
    ctx.state["n"] = candles.n
"""
    candles = walk(1400)
    strategy = load(source, history=5, batch_size=100)
    strategy.on_candles("a", candles.slice(0, 300), warmup=3)
    for i in range(300, 1400):
        if i == 900:
            strategy.on_candles("a", candles.slice(900, 1000))  # a batch in between
        if 900 <= i < 1000:
            continue
        strategy.on_candle("a", candles.slice(i - 1, i + 1))
        state = msgpack.unpackb(strategy.snapshot(), raw=False)["state"]
        assert state["closes"] == candles.close[i - 4 : i + 1].tolist()
        assert state["times"] == candles.time[i - 4 : i + 1].tolist()
        assert 5 <= state["n"] <= 5 + 256


def test_params_declarations_shorthand_binding_and_mistakes() -> None:
    source = (
        'params = {"n": 3, "ratio": {"default": 0.5, "min": 0, "max": 1}, "name": "x", '
        '"on": True}\n'
    )
    runtime = PythonStrategyRuntime()
    assert runtime.parameters(source, "p.py") == [
        Parameter("n", 3),
        Parameter("name", "x"),
        Parameter("on", True),
        Parameter("ratio", 0.5, 0, 1),
    ]
    strategy = runtime.load_in_process(source, "p.py", {"n": "7", "on": "no", "ratio": "0.25"})
    assert strategy.params == {"n": 7, "name": "x", "on": False, "ratio": 0.25}
    with pytest.raises(PythonStrategyError) as caught:
        runtime.load_in_process(source, "p.py", {"n": 2.5, "ratio": 2, "bogus": 1})
    message = str(caught.value)
    assert "unknown parameter 'bogus' (declared: n, name, on, ratio)" in message
    assert "parameter n: 2.5 is not a whole number" in message
    assert "parameter ratio = 2.0 is above its max 1" in message
    bad = 'params = {"a": {"default": 5, "min": 10, "dflt": 1}, "b": {"min": 1}, "c": [1]}\n'
    with pytest.raises(PythonStrategyError) as caught:
        runtime.parameters(bad, "bad.py")
    message = str(caught.value)
    assert message.startswith("bad.py: invalid params declaration: ")
    for part in (
        "params.a has unknown fields dflt",
        "params.a: default 5 is below min 10",
        "params.b has no default",
        "params.c is a list",
    ):
        assert part in message
    with pytest.raises(PythonStrategyError, match="params must be a dict, not a list"):
        runtime.parameters("params = [1]\n", "l.py")


def test_ctx_params_are_read_only_and_ctx_holds_the_assignment() -> None:
    source = """
params = {"fast": 3}
def on_candle(ctx, candles):
    ctx.state["seen"] = [ctx.assignment, ctx.params.fast, ctx.params["fast"], dict(ctx.params)]
    ctx.params.fast = 4
"""
    strategy = load(source)
    with pytest.raises(PythonStrategyError, match=r"s\.py:5: AttributeError: ctx.params is read"):
        strategy.on_candle("btc", walk(1))
    state = msgpack.unpackb(strategy.snapshot(), raw=False)["state"]
    assert state["seen"] == ["btc", 3, 3, {"fast": 3}]


# errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "pattern"),
    [
        ("x = 1\ndef on_candle(ctx, candles)\n    return 0\n", 2, "SyntaxError: "),
        ("import nonexistent_module_xyz\n", 1, "ModuleNotFoundError: No module named"),
        ("def init(ctx):\n    ctx.state['x'] = ta.sma(0)\n", 2, r"ValueError: ta\.sma: period"),
        ("def helper():\n    return 1 / 0\n\ndef init(ctx):\n    helper()\n", 2, "ZeroDivision"),
        ("import sys\nsys.exit(3)\n", 2, "SystemExit: 3"),
        ("init = 5\n", None, "init is a int, not a function"),
    ],
)
def test_load_errors_name_the_file_and_line(source: str, line: int | None, pattern: str) -> None:
    with pytest.raises(PythonStrategyError, match=pattern) as caught:
        PythonStrategyRuntime().load(source, "strategies/x.py", {}, Limits())
    error = caught.value
    assert isinstance(error, StrategyError)
    assert (error.filename, error.line, error.limit, error.stopped) == (
        "strategies/x.py",
        line,
        None,
        False,
    )
    assert str(error).startswith(f"strategies/x.py:{line}: " if line else "strategies/x.py: ")


def test_a_runtime_error_has_the_innermost_line_of_the_file_and_the_instance_goes_on() -> None:
    source = """
def check(x):
    if x > 3:
        raise RuntimeError(f"too big: {x}")
    return 0

def on_candle(ctx, candles):
    return check(len(candles))
"""
    candles = walk(10)
    strategy = load(source)
    decisions = strategy.on_candles("a", candles.slice(0, 3))
    assert [d.target for d in decisions] == [0.0, 0.0, 0.0]
    with pytest.raises(PythonStrategyError) as caught:
        strategy.on_candle("a", candles.slice(0, 4))
    assert str(caught.value) == "s.py:4: RuntimeError: too big: 4"
    assert caught.value.line == 4 and not caught.value.stopped
    with pytest.raises(PythonStrategyError, match="already failed on the candle"):
        strategy.on_candle("a", candles.slice(0, 4))
    with pytest.raises(PythonStrategyError, match="too big: 5"):
        strategy.on_candle("a", candles.slice(0, 5))
    with pytest.raises(DataError, match="older than the last one"):
        strategy.on_candle("a", candles.slice(0, 2))
    with pytest.raises(DataError, match="strictly increasing"):
        strategy.on_candles("a", candles.slice(2, 8))


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("1.5", "on_candle returned 1.5; a target position must be within [-1, 1]"),
        ("float('nan')", "on_candle returned nan; a target position must be within [-1, 1]"),
        ("True", "on_candle returned a bool; return a number in [-1, 1]"),
        ("'buy'", "on_candle returned a str; return a number in [-1, 1]"),
        ("{'side': 'hold', 'amount': 1}", 'order 1: side must be "buy" or "sell"'),
        ("{'side': 'buy'}", "order 1: amount is missing"),
        ("[{'side': 'buy', 'amount': 1}, 3]", "order 2 is a int, not a dict"),
        ("{'side': 'buy', 'amount': -1}", "order 1: amount must be a finite number above zero"),
        ("{'side': 'buy', 'amount': 1, 'type': 'limit'}", "a limit order needs a price"),
        ("{'side': 'buy', 'amount': 1, 'type': 'stop'}", "a stop order needs stop_price"),
        ("{'side': 'buy', 'amount': 1, 'type': 'iceberg'}", "type must be"),
        ("{'side': 'buy', 'amount': 1, 'tag': 5}", "order 1: tag must be a string"),
        ("[{'side': 'buy', 'amount': 1}] * 101", "more than 100 orders in one decision"),
    ],
)
def test_a_result_that_is_no_decision_is_an_error(result: str, message: str) -> None:
    strategy = load(f"def on_candle(ctx, candles):\n    return {result}\n")
    with pytest.raises(PythonStrategyError) as caught:
        strategy.on_candles("a", walk(3))
    assert str(caught.value) == f"s.py: {message}" or message in str(caught.value)
    assert not caught.value.stopped


def test_no_on_candle_is_an_error() -> None:
    with pytest.raises(PythonStrategyError, match="defines no function on_candle"):
        load("x = 1\n").on_candles("a", walk(3))


# snapshots ------------------------------------------------------------------------------------


def test_a_snapshot_moves_a_run_to_another_instance_with_indicators_and_the_last_decision() -> None:
    source = readme_strategy().replace(
        "return -1", "return -1 if ctx.state['fast'].value < slow else 0"
    )
    candles = walk(5000)
    whole = load(source).on_candles("a", candles)
    first = load(source)
    head = first.on_candles("a", candles.slice(0, 2500))
    state = first.snapshot()
    second = load(source)
    second.restore(state)
    assert second.on_candle("b", candles.slice(0, 2500)) == Decision(
        "b", int(candles.time[2499]), head.decision(2499).target
    )
    tail = second.on_candles("a", candles.slice(2500, 5000))
    assert np.array_equal(np.concatenate([head.target, tail.target]), whole.target, equal_nan=True)


def test_state_that_cannot_be_saved_is_named_by_its_path() -> None:
    cases = {
        "ctx.state['signals'] = {'fn': len}": "ctx.state['signals']['fn'] is a callable",
        "ctx.state['f'] = lambda: 1": "ctx.state['f'] is a function",
        "ctx.state['a'] = [1, np.zeros(2)]": "ctx.state['a'][1] is a numpy.ndarray",
        "ctx.state['k'] = {(1, 2): 3}": "ctx.state['k'] has a key of type tuple",
        "x = []; x.append(x); ctx.state['loop'] = x": "nested deeper than 64 levels (or is a",
    }
    for statement, message in cases.items():
        source = f"import numpy as np\ndef init(ctx):\n    {statement}\n"
        with pytest.raises(PythonStrategyError) as caught:
            load(source).snapshot()
        assert message in str(caught.value), statement
        assert caught.value.filename == "s.py"


def test_state_round_trips_plain_values() -> None:
    source = """import numpy as np
def init(ctx):
    ctx.state.update({"i": 2**40, "f": 0.1, "s": "é", "b": b"\\x00\\xff", "n": None, "t": True,
                      "l": [1, (2, 3)], "d": {1: "one", "x": {"y": np.float64(1.5)}},
                      "np": np.int64(7), "rsi": ta.rsi(3)})
"""
    first = load(source)
    second = load(source)
    second.restore(first.snapshot())
    state = msgpack.unpackb(second.snapshot(), raw=False, strict_map_key=False)["state"]
    assert state["l"] == [1, [2, 3]] and state["d"] == {1: "one", "x": {"y": 1.5}}
    assert (state["i"], state["s"], state["b"], state["np"]) == (2**40, "é", b"\x00\xff", 7)


def test_restore_refuses_other_parameters_and_broken_snapshots() -> None:
    source = 'params = {"n": 3}\n'
    state = load(source).snapshot()
    with pytest.raises(PythonStrategyError, match="taken with parameters"):
        load(source, {"n": 4}).restore(state)
    with pytest.raises(PythonStrategyError, match="not valid msgpack"):
        load(source).restore(b"\xc1")
    with pytest.raises(PythonStrategyError, match="not a Python strategy snapshot"):
        load(source).restore(msgpack.packb({"format": 1, "language": "lua"}))
    broken = msgpack.unpackb(state, raw=False)
    broken["state"] = {"x": msgpack.ExtType(1, msgpack.packb(["nope", {}]))}
    with pytest.raises(PythonStrategyError, match="unknown indicator kind 'nope'"):
        load(source).restore(msgpack.packb(broken))


def test_a_memory_error_stops_the_instance() -> None:
    source = "def on_candle(ctx, candles):\n    raise MemoryError()\n"
    strategy = load(source)
    with pytest.raises(PythonStrategyError) as caught:
        strategy.on_candles("a", walk(2))
    assert (caught.value.line, caught.value.limit, caught.value.stopped) == (2, "memory", True)
    with pytest.raises(PythonStrategyError, match="instance is stopped"):
        strategy.on_candle("a", walk(3))
