"""Conformance suite for strategy languages: the :class:`~trader.interfaces.StrategyRuntime` API.

One strategy API exists in every language (ARCHITECTURE §9): declared parameters, ``init``, an
``on_candle`` that sees the candle history (newest last) and persistent state, the ``ta``
indicators, and a decision per candle (a target position in [-1, 1], explicit orders, or hold)
whose state can be snapshotted and restored elsewhere. Both first-party runtimes (``lua`` and
``python``) run this suite, and a third-party strategy language passes it before it claims to
implement that API. Subclass :class:`StrategyRuntimeConformance` in a test module (the class
name must start with ``Test``), override the ``strategy_runtime`` fixture and the
:meth:`~StrategyRuntimeConformance.strategy_source` method, and set :attr:`suffix`::

    import pytest
    from trader.interfaces import StrategyRuntime
    from trader_sdk.testing.strategy_runtime import StrategyRuntimeConformance

    from my_plugin import MyRuntime

    SOURCES = {"params": "...", "history": "...", ...}  # every name in SCENARIOS


    class TestMyRuntime(StrategyRuntimeConformance):
        suffix = ".my"

        @pytest.fixture
        def strategy_runtime(self) -> StrategyRuntime:
            return MyRuntime()

        def strategy_source(self, scenario: str) -> str:
            return SOURCES[scenario]

**Scenarios.** The suite drives small strategies written in your language, one per name of
:data:`SCENARIOS`; that mapping says what each must do (the first-party test modules,
``plugins/strategy_lua/tests/test_lua_runtime_conformance.py`` and
``plugins/strategy_python/tests/test_python_runtime_conformance.py``, hold them in Lua and
Python to copy from). ``calls`` below means a count kept in the strategy's persistent state: set
to 0 by ``init``, raised by 1 at the start of every ``on_candle``. A *report* is one market buy
order of amount 1 whose tag is ``name=value`` pairs separated by single spaces, each value a
number written so that it reads back exactly (Lua ``string.format("%.17g", v)``, Python
``repr(float(v))``): that is how a scenario shows the suite what it saw.

**What is checked.** Parameters are declared with defaults, types (of the default) and ranges,
and bound by the rules of :mod:`trader.strategy_support` (use its ``declare_parameter`` and
``bind_parameters`` to get them): given values are converted to the default's type and checked
against ``min`` and ``max``, unknown names refused. ``init`` runs once at load; ``on_candle``
sees the history newest last (no later candle, ever) and state persists between calls.
Decisions carry the candle's time and the assignment. A target outside [-1, 1] and a malformed
order are a :class:`~trader.errors.StrategyError` (the API's answer, not a clamp), as is an
error in strategy code, whose message names the file and the line; after an ordinary error the
instance decides on the next candle, unless the error says the instance is stopped (an attribute
``stopped`` that is true). A runaway loop is stopped by the runtime's limits with a
``StrategyError`` within :attr:`~StrategyRuntimeConformance.runaway_seconds` (skipped, with the
reason, when :attr:`~StrategyRuntimeConformance.unlimited_reason` says the configuration has no
limits, e.g. trusted LuaJIT). A snapshot restored into a freshly loaded instance continues
exactly as the uninterrupted instance. The optional batch path ``on_candles(assignment,
candles)`` (what the backtest engine calls when an instance has it) returns a
:class:`~trader.interfaces.DecisionBatch` equal to deciding candle by candle. ``ta`` has the
names of :mod:`trader.ta` and agrees with it to 1e-9 relative. Two runs decide identically.

**How candles are fed.** The suite calls ``on_candle(assignment, history)`` once per new candle
with the last :attr:`~StrategyRuntimeConformance.window` candles (fewer at the start) as
``history``, the newest being the one to decide on: the way the engine feeds a live strategy.
After a restore it goes on the same way, so the restored instance gets its history from the
caller, not from the snapshot.

The tests are plain synchronous functions. Their names carry stable ids (``test_sr01_...``):
refer to them in bug reports, and to skip one on purpose override it in your subclass with a
``pytest.mark.skip`` that says why.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from trader import ta as reference_ta
from trader.errors import StrategyError
from trader.interfaces import DecisionBatch, Limits, Parameter, StrategyInstance, StrategyRuntime
from trader.model import MINUTE_MS, CandleArrays, Decision, OrderIntent, OrderSide, OrderType

__all__ = [
    "ASSIGNMENT",
    "SCENARIOS",
    "TA_INDICATORS",
    "TA_READINGS",
    "StrategyLoader",
    "StrategyRuntimeConformance",
    "conformance_candles",
    "read_report",
]

#: The assignment name every decision of the suite is asked for.
ASSIGNMENT = "conformance"
#: 2020-01-01 00:00 UTC, the open time of the first candle of :func:`conformance_candles`.
T0 = 1_577_836_800_000

#: What each scenario strategy must do; :meth:`StrategyRuntimeConformance.strategy_source`
#: returns its source in the runtime's language.
SCENARIOS: Mapping[str, str] = {
    "params": (
        "Declares four parameters: period (default 10, min 2, max 50, step 1, description "
        '"lookback period"), factor (default 0.5, min 0.1, max 2.0), label (default "x") and '
        "enabled (default true). on_candle returns one limit order: side buy when enabled is "
        "true else sell, amount = period, price = factor, tag = label."
    ),
    "bad_params": (
        "Declares a parameter period with default 60, min 2 and max 50 (a default outside its "
        "range); on_candle holds."
    ),
    "history": (
        "init sets calls to 0. on_candle raises calls and returns a report with calls; n, the "
        "number of candles it sees; time, open, high, low, close and volume of the newest "
        "candle; first_time, the time of the oldest candle it sees; and, when it sees more than "
        "one, prev_time and prev_close of the candle before the newest."
    ),
    "targets": (
        "init sets calls to 0. on_candle raises calls and, by (calls - 1) mod 6, holds (0), or "
        "returns the target 0 (1), 1 (2), -1 (3), 0.5 (4) or -0.25 (5)."
    ),
    "fixed_target": (
        "Declares two parameters without min or max, value (default 0.25) and offset (default "
        "0.0, written as a float); on_candle returns value + offset as the target position."
    ),
    "orders": (
        "init sets calls to 0. on_candle raises calls and, with close the newest close, by "
        "(calls - 1) mod 4 returns: (0) a market buy of 0.5; (1) a limit sell of 1.25 at "
        'close + 1 tagged "take"; (2) a stop sell of 2 with stop price close - 1 tagged "stop"; '
        '(3) two orders: a limit buy of 1 at close - 2 tagged "a", then a stop buy of 3 with '
        'stop price close + 2 tagged "b".'
    ),
    "bad_order": (
        'Declares a parameter case (default "none"). on_candle returns, by case: "amount" a '
        'market buy of amount 0; "side" an order with side "hold" (amount 1); "limit" a limit '
        'buy of 1 without a price; "stop" a stop sell of 1 without a stop price; "none" holds.'
    ),
    "error": (
        "init sets calls to 0. on_candle raises calls; on the third call it raises an error "
        'with the message "boom" (Lua error("boom"), Python raise ValueError("boom")) on a line '
        "that holds the word boom, the first line of the source to do so; otherwise it returns "
        "the target 0."
    ),
    "syntax_error": (
        "Does not compile: its only syntax error is on the first line holding the word broken "
        "(Lua local broken = = 1, Python broken = = 1)."
    ),
    "runaway": "on_candle loops forever (Lua while true do end; Python while True: pass).",
    "mixed": (
        "Declares fast (default 3, min 1, max 50, step 1) and slow (default 8, min 2, max 200, "
        "step 1). init sets calls to 0 and keeps ta.sma(fast) and ta.sma(slow) in the state. "
        "on_candle raises calls, updates both averages with the newest close and: holds when "
        "the slow average is still warming up or calls is a multiple of 5; else when calls is "
        "a multiple of 7 returns two orders, a limit buy of 1 at the newest low tagged "
        '"dip" and a stop sell of 1 with stop price the previous close tagged "guard"; else '
        "returns 1 when the fast average is above the slow one, 0.5 when the close rose from "
        "the previous close, -1 otherwise."
    ),
    "ta": (
        "init keeps each indicator of TA_INDICATORS in the state (ta.sma(5), ta.macd(3, 6, "
        "2), ...); on_candle feeds each the newest candle's columns TA_INDICATORS lists "
        "(close; high, low, close; ...) and returns a report of every reading that is not "
        "nil/None under its name in TA_READINGS (a crossing reads 1 for true, 0 for false)."
    ),
}

#: The indicators of the ``ta`` scenario: key -> (``ta`` function, its arguments, the candle
#: columns each ``update`` is fed, in order).
TA_INDICATORS: Mapping[str, tuple[str, tuple[float, ...], tuple[str, ...]]] = {
    "sma": ("sma", (5,), ("close",)),
    "ema": ("ema", (5,), ("close",)),
    "wma": ("wma", (5,), ("close",)),
    "rsi": ("rsi", (5,), ("close",)),
    "roc": ("roc", (5,), ("close",)),
    "highest": ("highest", (5,), ("close",)),
    "lowest": ("lowest", (5,), ("close",)),
    "stddev": ("stddev", (5, 2), ("close",)),
    "macd": ("macd", (3, 6, 2), ("close",)),
    "bbands": ("bbands", (5, 2, 1.5), ("close",)),
    "atr": ("atr", (5,), ("high", "low", "close")),
    "stoch": ("stoch", (5, 3, 3), ("high", "low", "close")),
    "obv": ("obv", (), ("close", "volume")),
    "vwap": ("vwap", (5,), ("high", "low", "close", "volume")),
    "crossover": ("crossover", (), ("close", "open")),
    "crossunder": ("crossunder", (), ("close", "open")),
}

#: What the ``ta`` scenario reports: report name -> (key of :data:`TA_INDICATORS`, which output
#: of an indicator that gives several, counted from 0: MACD gives macd, signal, hist; Bollinger
#: bands upper, middle, lower; the stochastic k, d; ``None`` for the others).
TA_READINGS: Mapping[str, tuple[str, int | None]] = {
    "sma": ("sma", None),
    "ema": ("ema", None),
    "wma": ("wma", None),
    "rsi": ("rsi", None),
    "roc": ("roc", None),
    "highest": ("highest", None),
    "lowest": ("lowest", None),
    "stddev": ("stddev", None),
    "macd": ("macd", 0),
    "macd_signal": ("macd", 1),
    "macd_hist": ("macd", 2),
    "bb_upper": ("bbands", 0),
    "bb_middle": ("bbands", 1),
    "bb_lower": ("bbands", 2),
    "atr": ("atr", None),
    "stoch_k": ("stoch", 0),
    "stoch_d": ("stoch", 1),
    "obv": ("obv", None),
    "vwap": ("vwap", None),
    "crossover": ("crossover", None),
    "crossunder": ("crossunder", None),
}

#: Loads a scenario: ``load(scenario, params=None, *, limits=None)`` -> a new instance, closed
#: when the test ends.
StrategyLoader = Callable[..., StrategyInstance]


def conformance_candles(size: int = 400, seed: int = 7) -> CandleArrays:
    """Return ``size`` one-minute candles from :data:`T0`: a random walk near 100 (every price
    far above 2, every close distinct), open at the previous close, volume above 0.

    The same arguments always give the same candles.
    """
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, size)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.001, size)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    times = T0 + np.arange(size, dtype=np.int64) * MINUTE_MS
    return CandleArrays(times, open_, high, low, close, rng.uniform(1.0, 50.0, size))


def read_report(decision: Decision) -> dict[str, float]:
    """The ``name=value`` pairs of a report decision (one market buy of 1; see the module)."""
    assert len(decision.orders) == 1 and decision.target is None, (
        f"a report is one order and no target, not {decision!r}"
    )
    (order,) = decision.orders
    assert order.side is OrderSide.BUY and order.type is OrderType.MARKET, (
        f"a report is a market buy, not {order!r}"
    )
    assert order.amount == 1.0, f"a report has amount 1, not {order.amount}"
    values: dict[str, float] = {}
    for pair in order.tag.split():
        name, sep, text = pair.partition("=")
        assert sep and name, f"the report tag {order.tag!r} holds {pair!r}, not name=value"
        try:
            values[name] = float(text)
        except ValueError:
            raise AssertionError(f"the report value {pair!r} is not a number") from None
    return values


def _ta_reference(candles: CandleArrays) -> list[dict[str, float]]:
    """What the ``ta`` scenario must report on every candle, computed with :mod:`trader.ta`."""
    made = {
        key: getattr(reference_ta, function)(*arguments)
        for key, (function, arguments, _) in TA_INDICATORS.items()
    }
    rows: list[dict[str, float]] = []
    for i in range(len(candles)):
        readings = {
            key: made[key].update(*(float(getattr(candles, c)[i]) for c in columns))
            for key, (_, _, columns) in TA_INDICATORS.items()
        }
        row: dict[str, float] = {}
        for name, (key, output) in TA_READINGS.items():
            reading = readings[key]
            if reading is not None and output is not None:
                reading = reading[output]
            if reading is not None:
                row[name] = float(reading)
        rows.append(row)
    return rows


class _Run:
    """The outcome of a call made on a watched thread."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.result: object = None
        self.seconds: float | None = None


class StrategyRuntimeConformance:
    """The strategy runtime contract as tests. Subclass it, override ``strategy_runtime`` and
    :meth:`strategy_source`, and set :attr:`suffix`."""

    #: The file name suffix of strategies in this language (``".lua"``, ``".py"``); the suite
    #: loads scenario ``name`` as ``conformance_<name><suffix>``.
    suffix: ClassVar[str] = ""
    #: Passed as ``trusted`` to every ``load``: run the suite once per trust level that
    #: changes how strategies run (the Lua runtime runs trusted ones on LuaJIT).
    trusted: ClassVar[bool] = False
    #: The limits every scenario is loaded with.
    limits: ClassVar[Limits] = Limits()
    #: The limits the runaway loop is loaded with.
    runaway_limits: ClassVar[Limits] = Limits()
    #: Seconds (wall clock) within which a runaway loop must end in a ``StrategyError``.
    runaway_seconds: ClassVar[float] = 3.0
    #: Why this configuration enforces no limits (the runaway test is then skipped with this
    #: reason); ``None`` when it does.
    unlimited_reason: ClassVar[str | None] = None
    #: How many candles each ``on_candle`` call passes as history (the newest included); the
    #: strategy must see at least these.
    window: ClassVar[int] = 30
    #: How many candles the scenarios are run over.
    candle_count: ClassVar[int] = 400

    @pytest.fixture
    def strategy_runtime(self) -> StrategyRuntime:
        """Override: return the runtime under test (a new one for each test)."""
        pytest.fail(
            "override the strategy_runtime fixture in your StrategyRuntimeConformance subclass: "
            "return the StrategyRuntime to test"
        )

    def strategy_source(self, scenario: str) -> str:
        """Override: return the source of ``scenario`` (a name of :data:`SCENARIOS`) in the
        runtime's language, doing what :data:`SCENARIOS` says."""
        pytest.fail(
            "override strategy_source(scenario) in your StrategyRuntimeConformance subclass: "
            "return the source of each scenario of SCENARIOS in your language"
        )

    @pytest.fixture
    def strategy_loader(self, strategy_runtime: StrategyRuntime) -> Iterator[StrategyLoader]:
        """Loads scenarios into new instances and closes them all when the test ends."""
        loaded: list[StrategyInstance] = []

        def load(
            scenario: str, params: Mapping[str, Any] | None = None, *, limits: Limits | None = None
        ) -> StrategyInstance:
            instance = strategy_runtime.load(
                self.strategy_source(scenario),
                self.filename(scenario),
                dict(params or {}),
                limits or self.limits,
                trusted=self.trusted,
            )
            assert isinstance(instance, StrategyInstance), (
                f"load returned {instance!r}, not a StrategyInstance"
            )
            loaded.append(instance)
            return instance

        yield load
        for instance in loaded:
            instance.close()

    # helpers ----------------------------------------------------------------------------------

    def filename(self, scenario: str) -> str:
        """The file name scenario ``scenario`` is loaded as."""
        return f"conformance_{scenario}{self.suffix}"

    def candles(self) -> CandleArrays:
        """The candles the scenarios are run over."""
        return conformance_candles(self.candle_count)

    def decide_each(
        self,
        instance: StrategyInstance,
        candles: CandleArrays,
        start: int = 0,
        stop: int | None = None,
    ) -> list[Decision]:
        """Decide on candles ``start`` to ``stop`` one call each, passing the last
        :attr:`window` candles as history."""
        stop = len(candles) if stop is None else stop
        decisions = []
        for i in range(start, stop):
            history = candles.slice(max(0, i - self.window + 1), i + 1)
            decision = instance.on_candle(ASSIGNMENT, history)
            assert isinstance(decision, Decision), f"on_candle returned {decision!r}"
            decisions.append(decision)
        return decisions

    def decide_batch(self, instance: StrategyInstance, candles: CandleArrays) -> list[Decision]:
        """Decide on ``candles`` through the instance's batch path (skip when it has none)."""
        on_candles = getattr(instance, "on_candles", None)
        if not callable(on_candles):
            pytest.skip(
                "the instance has no batch path on_candles(assignment, candles): the engine "
                "calls on_candle per candle"
            )
        batch = on_candles(ASSIGNMENT, candles)
        assert isinstance(batch, DecisionBatch), f"on_candles returned {batch!r}"
        assert batch.assignment == ASSIGNMENT, f"the batch is for {batch.assignment!r}"
        assert len(batch) == len(candles), f"{len(batch)} decisions for {len(candles)} candles"
        assert np.array_equal(batch.time, candles.time), "the batch's times are not the candles'"
        return list(batch)

    def error_line(self, scenario: str, word: str) -> int:
        """The number of the first line of ``scenario``'s source holding ``word``."""
        for number, line in enumerate(self.strategy_source(scenario).splitlines(), 1):
            if word in line:
                return number
        raise AssertionError(f"the {scenario} scenario has no line holding {word!r}")

    def _assert_located(self, error: StrategyError, scenario: str, line: int | None) -> None:
        """``error`` names the scenario's file and, when given, ``line``."""
        message = str(error)
        assert self.filename(scenario) in message, (
            f"the error {message!r} does not name the file {self.filename(scenario)}"
        )
        if line is None:
            return
        assert re.search(rf"(?<!\d){line}(?!\d)", message), (
            f"the error {message!r} does not give the line {line}"
        )
        found = getattr(error, "line", line)
        assert found == line, f"the error's line attribute is {found}, not {line}"

    # the runtime ------------------------------------------------------------------------------

    def test_sr00_every_scenario_has_a_source(self, strategy_runtime: StrategyRuntime) -> None:
        """The runtime names its language and the subclass gives every scenario's source."""
        assert isinstance(strategy_runtime, StrategyRuntime), f"{strategy_runtime!r}"
        language = strategy_runtime.language
        assert isinstance(language, str) and language, f"language is {language!r}"
        assert self.suffix, "set suffix (the strategies' file name suffix, such as '.lua')"
        for scenario in SCENARIOS:
            source = self.strategy_source(scenario)
            assert isinstance(source, str) and source.strip(), f"no source for {scenario!r}"

    # parameters -------------------------------------------------------------------------------

    def test_sr01_parameters_are_declared_with_defaults_types_and_ranges(
        self, strategy_runtime: StrategyRuntime
    ) -> None:
        """``parameters`` lists every declared parameter with its default (of its type), range,
        step and description."""
        found = strategy_runtime.parameters(self.strategy_source("params"), self.filename("params"))
        assert all(isinstance(p, Parameter) for p in found), f"not Parameters: {found!r}"
        by_name = {p.name: p for p in found}
        assert len(by_name) == len(found), f"a parameter is listed twice: {found!r}"
        assert by_name == {
            "period": Parameter("period", 10, 2, 50, 1, "lookback period"),
            "factor": Parameter("factor", 0.5, 0.1, 2.0, None, ""),
            "label": Parameter("label", "x"),
            "enabled": Parameter("enabled", True),
        }
        types = {name: type(p.default) for name, p in by_name.items()}
        assert types == {"period": int, "factor": float, "label": str, "enabled": bool}, types

    def test_sr02_parameters_bind_defaults_and_given_values(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """Undeclared values take their defaults; given values reach ``ctx.params``."""
        candles = self.candles().slice(0, 3)
        cases = [
            ({}, OrderIntent(OrderSide.BUY, OrderType.LIMIT, 10, 0.5, None, "x")),
            (
                {"period": 20, "factor": 1.5, "label": "abc", "enabled": False},
                OrderIntent(OrderSide.SELL, OrderType.LIMIT, 20, 1.5, None, "abc"),
            ),
            ({"period": 2}, OrderIntent(OrderSide.BUY, OrderType.LIMIT, 2, 0.5, None, "x")),
            ({"factor": 2.0}, OrderIntent(OrderSide.BUY, OrderType.LIMIT, 10, 2.0, None, "x")),
        ]
        for params, expected in cases:
            (decision,) = self.decide_each(strategy_loader("params", params), candles, 2)
            assert decision.orders == (expected,), f"with {params}: {decision!r}"

    def test_sr03_given_values_are_converted_to_the_parameters_type(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """Values arrive as text (``--param period=20``) or as floats from a sweep: they are
        converted to the type of the default (as :mod:`trader.strategy_support` does)."""
        candles = self.candles().slice(0, 3)
        cases = [
            (
                {"period": "20", "factor": "1.5", "enabled": "false"},
                OrderIntent(OrderSide.SELL, OrderType.LIMIT, 20, 1.5, None, "x"),
            ),
            (
                {"period": 30.0, "factor": 1, "enabled": "true"},
                OrderIntent(OrderSide.BUY, OrderType.LIMIT, 30, 1.0, None, "x"),
            ),
        ]
        for params, expected in cases:
            (decision,) = self.decide_each(strategy_loader("params", params), candles, 2)
            assert decision.orders == (expected,), f"with {params}: {decision!r}"

    @pytest.mark.parametrize(
        ("params", "named"),
        [
            ({"nope": 1}, "nope"),
            ({"period": 60}, "period"),
            ({"period": 1}, "period"),
            ({"period": 2.5}, "period"),
            ({"period": "abc"}, "period"),
            ({"factor": 3.0}, "factor"),
            ({"factor": 0.05}, "factor"),
            ({"factor": float("nan")}, "factor"),
            ({"enabled": "maybe"}, "enabled"),
            ({"label": 5}, "label"),
        ],
        ids=[
            "unknown",
            "above-max",
            "below-min",
            "not-whole",
            "not-a-number",
            "float-above-max",
            "float-below-min",
            "nan",
            "not-a-bool",
            "not-a-string",
        ],
    )
    def test_sr04_bad_parameter_values_are_refused(
        self, strategy_loader: StrategyLoader, params: dict[str, Any], named: str
    ) -> None:
        """An unknown name, a value outside min..max, or one that does not convert to the
        parameter's type is a ``StrategyError`` naming the parameter and the file."""
        with pytest.raises(StrategyError) as caught:
            strategy_loader("params", params)
        assert named in str(caught.value), f"{caught.value} does not name {named!r}"
        self._assert_located(caught.value, "params", None)

    def test_sr05_a_default_outside_its_range_is_refused(
        self, strategy_runtime: StrategyRuntime, strategy_loader: StrategyLoader
    ) -> None:
        """A declaration whose default lies outside min..max is a ``StrategyError`` from
        ``parameters`` and from ``load``."""
        with pytest.raises(StrategyError) as caught:
            strategy_runtime.parameters(
                self.strategy_source("bad_params"), self.filename("bad_params")
            )
        assert "period" in str(caught.value), f"{caught.value} does not name period"
        self._assert_located(caught.value, "bad_params", None)
        with pytest.raises(StrategyError):
            strategy_loader("bad_params")

    def test_sr06_a_whole_number_float_default_declares_a_float_parameter(
        self, strategy_runtime: StrategyRuntime, strategy_loader: StrategyLoader
    ) -> None:
        """A default written as a float (``0.0``) makes a float parameter, whatever engine runs
        the strategy: it takes fractions."""
        source, filename = self.strategy_source("fixed_target"), self.filename("fixed_target")
        declared = {p.name: p for p in strategy_runtime.parameters(source, filename)}
        assert set(declared) == {"value", "offset"}, f"fixed_target declares {declared}"
        assert type(declared["offset"].default) is float, f"{declared['offset']!r}"
        assert type(declared["value"].default) is float, f"{declared['value']!r}"
        instance = strategy_loader("fixed_target", {"offset": 0.5})
        (decision,) = self.decide_each(instance, self.candles().slice(0, 2), 1)
        assert decision.target == 0.75, f"value 0.25 + offset 0.5 gave {decision!r}"

    # deciding ---------------------------------------------------------------------------------

    def test_sr07_on_candle_sees_history_newest_last_and_keeps_state(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """``init`` runs once; each call sees a contiguous run of candles ending at the one
        decided on (newest last), at least the history passed; state persists between calls."""
        candles = self.candles()
        start = self.window - 1
        decisions = self.decide_each(strategy_loader("history"), candles, start)
        for calls, (i, decision) in enumerate(
            zip(range(start, len(candles)), decisions, strict=True), 1
        ):
            self._check_history(candles, i, decision, calls, self.window)

    def _check_history(
        self, candles: CandleArrays, i: int, decision: Decision, calls: int, least: int
    ) -> None:
        """The ``history`` scenario's report on candle ``i``."""
        assert decision.time == int(candles.time[i]), f"candle {i}: decision at {decision.time}"
        seen = read_report(decision)
        where = f"candle {i}"
        assert seen.get("calls") == calls, f"{where}: calls is {seen.get('calls')}, not {calls}"
        for column in ("time", "open", "high", "low", "close", "volume"):
            expected = float(getattr(candles, column)[i])
            assert seen.get(column) == expected, (
                f"{where}: the newest candle's {column} is {seen.get(column)}, not {expected}"
            )
        n = seen.get("n")
        assert n is not None and n == int(n) and 1 <= n <= i + 1, f"{where}: sees n = {n}"
        assert n >= min(least, i + 1), f"{where}: sees {n:g} candles, fewer than {least} given"
        first = int(n) - 1
        assert seen.get("first_time") == float(candles.time[i - first]), (
            f"{where}: the oldest of the {n:g} candles seen is at {seen.get('first_time')}, "
            f"not {int(candles.time[i - first])}: the history is not the run ending at the "
            "newest candle"
        )
        if n > 1:
            assert seen.get("prev_time") == float(candles.time[i - 1]), (
                f"{where}: the candle before the newest is at {seen.get('prev_time')}"
            )
            assert seen.get("prev_close") == float(candles.close[i - 1]), (
                f"{where}: the previous close is {seen.get('prev_close')}"
            )

    def test_sr08_decisions_carry_time_assignment_target_or_hold(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """A returned number is the target position; nothing returned is a hold."""
        candles = self.candles().slice(0, 24)
        decisions = self.decide_each(strategy_loader("targets"), candles)
        cycle = [None, 0.0, 1.0, -1.0, 0.5, -0.25]
        for i, decision in enumerate(decisions):
            assert decision.assignment == ASSIGNMENT, f"candle {i}: {decision.assignment!r}"
            assert decision.time == int(candles.time[i]), f"candle {i}: at {decision.time}"
            assert decision.orders == (), f"candle {i}: orders {decision.orders}"
            expected = cycle[i % 6]
            assert decision.target == expected, f"candle {i}: {decision.target}, not {expected}"
            if expected is None:
                assert decision.is_hold, f"candle {i}: {decision!r} is not a hold"
            else:
                assert isinstance(decision.target, float), f"candle {i}: {decision.target!r}"

    def test_sr09_targets_outside_minus_one_to_one_are_refused(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """-1 and 1 are targets; anything beyond is a ``StrategyError`` (not clamped)."""
        candles = self.candles().slice(0, 2)
        for value in (1.0, -1.0, 0.0):
            instance = strategy_loader("fixed_target", {"value": value})
            (decision,) = self.decide_each(instance, candles, 1)
            assert decision.target == value, f"value {value}: {decision!r}"
        for value in (1.5, -1.5, 1.000001):
            instance = strategy_loader("fixed_target", {"value": value})
            with pytest.raises(StrategyError) as caught:
                self.decide_each(instance, candles, 1)
            self._assert_located(caught.value, "fixed_target", None)

    def test_sr10_explicit_orders_become_order_intents(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """Market, limit and stop orders arrive as ``OrderIntent``s in the order given."""
        candles = self.candles().slice(0, 12)
        decisions = self.decide_each(strategy_loader("orders"), candles)
        for i, decision in enumerate(decisions):
            close = float(candles.close[i])
            expected = [
                (OrderIntent(OrderSide.BUY, OrderType.MARKET, 0.5),),
                (OrderIntent(OrderSide.SELL, OrderType.LIMIT, 1.25, close + 1, None, "take"),),
                (OrderIntent(OrderSide.SELL, OrderType.STOP, 2.0, None, close - 1, "stop"),),
                (
                    OrderIntent(OrderSide.BUY, OrderType.LIMIT, 1.0, close - 2, None, "a"),
                    OrderIntent(OrderSide.BUY, OrderType.STOP, 3.0, None, close + 2, "b"),
                ),
            ][i % 4]
            assert decision.target is None, f"candle {i}: orders and a target {decision!r}"
            assert decision.orders == expected, f"candle {i}: {decision.orders}, not {expected}"
            for order in decision.orders:
                assert isinstance(order, OrderIntent), f"candle {i}: {order!r}"
                assert isinstance(order.side, OrderSide) and isinstance(order.type, OrderType)

    @pytest.mark.parametrize("case", ["amount", "side", "limit", "stop"])
    def test_sr11_malformed_orders_are_refused(
        self, strategy_loader: StrategyLoader, case: str
    ) -> None:
        """An order with no positive amount, an unknown side, a limit without a price or a stop
        without a stop price is a ``StrategyError`` naming the file."""
        candles = self.candles().slice(0, 2)
        (decision,) = self.decide_each(strategy_loader("bad_order", {"case": "none"}), candles, 1)
        assert decision.is_hold, f"the bad_order scenario with case none gave {decision!r}"
        instance = strategy_loader("bad_order", {"case": case})
        with pytest.raises(StrategyError) as caught:
            self.decide_each(instance, candles, 1)
        self._assert_located(caught.value, "bad_order", None)

    # errors and limits ------------------------------------------------------------------------

    def test_sr12_an_error_in_strategy_code_names_file_and_line(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """The error is a ``StrategyError`` with the file, the line and the strategy's message;
        the instance then decides on the next candle (unless the error says it is stopped)."""
        candles = self.candles().slice(0, 4)
        instance = strategy_loader("error")
        assert [d.target for d in self.decide_each(instance, candles, 0, 2)] == [0.0, 0.0]
        with pytest.raises(StrategyError) as caught:
            self.decide_each(instance, candles, 2, 3)
        self._assert_located(caught.value, "error", self.error_line("error", "boom"))
        assert "boom" in str(caught.value), f"{caught.value} lost the strategy's message"
        if getattr(caught.value, "stopped", False):
            return
        (after,) = self.decide_each(instance, candles, 3, 4)
        assert after.target == 0.0 and after.time == int(candles.time[3]), (
            f"after an ordinary error the next candle gave {after!r}"
        )

    def test_sr13_a_syntax_error_names_file_and_line(
        self, strategy_runtime: StrategyRuntime, strategy_loader: StrategyLoader
    ) -> None:
        """A source that does not compile is a ``StrategyError`` with its file and line, from
        ``parameters`` and from ``load``."""
        line = self.error_line("syntax_error", "broken")
        with pytest.raises(StrategyError) as caught:
            strategy_runtime.parameters(
                self.strategy_source("syntax_error"), self.filename("syntax_error")
            )
        self._assert_located(caught.value, "syntax_error", line)
        with pytest.raises(StrategyError) as caught:
            strategy_loader("syntax_error")
        self._assert_located(caught.value, "syntax_error", line)

    def test_sr14_a_runaway_loop_is_stopped_by_the_limits(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """Under :attr:`runaway_limits` a loop that never ends raises a ``StrategyError`` within
        :attr:`runaway_seconds`; another instance of the runtime then decides as usual."""
        if self.unlimited_reason is not None:
            pytest.skip(self.unlimited_reason)
        candles = self.candles().slice(0, 2)
        instance = strategy_loader("runaway", limits=self.runaway_limits)
        run = self._watched(lambda: instance.on_candle(ASSIGNMENT, candles))
        assert isinstance(run.error, StrategyError), (
            f"the runaway loop ended with {run.error!r}, not a StrategyError"
            if run.error is not None
            else f"the runaway loop returned {run.result!r}"
        )
        assert run.seconds is not None and run.seconds <= self.runaway_seconds, (
            f"the runaway loop ran {run.seconds:.3f} s, over {self.runaway_seconds} s"
        )
        self._assert_located(run.error, "runaway", None)
        (decision,) = self.decide_each(strategy_loader("targets"), candles, 1)
        assert decision.is_hold, f"a fresh instance after the runaway decided {decision!r}"

    def _watched(self, call: Callable[[], object]) -> _Run:
        """Run ``call`` on a daemon thread; fail if it is still running well after
        :attr:`runaway_seconds` (the thread is then left behind)."""
        run = _Run()

        def target() -> None:
            began = time.perf_counter()
            try:
                run.result = call()
            except BaseException as error:
                run.error = error
            run.seconds = time.perf_counter() - began

        thread = threading.Thread(target=target, name="conformance-runaway", daemon=True)
        thread.start()
        thread.join(self.runaway_seconds + 10.0)
        if thread.is_alive():
            pytest.fail(
                f"the runaway loop was still running after {self.runaway_seconds + 10:.0f} s: "
                "the runtime's limits did not stop it"
            )
        return run

    # state ------------------------------------------------------------------------------------

    @pytest.mark.parametrize("scenario", ["mixed", "ta", "history"])
    def test_sr15_a_restored_snapshot_continues_identically(
        self, strategy_loader: StrategyLoader, scenario: str
    ) -> None:
        """A snapshot (bytes) restored into a freshly loaded instance decides every later candle
        exactly as the instance it was taken from."""
        candles = self.candles()
        middle = len(candles) // 2
        original = strategy_loader(scenario)
        self.decide_each(original, candles, 0, middle)
        state = original.snapshot()
        assert isinstance(state, bytes), f"snapshot returned {type(state).__name__}, not bytes"
        moved = strategy_loader(scenario)
        moved.restore(state)
        after = self.decide_each(moved, candles, middle)
        expected = self.decide_each(original, candles, middle)
        assert len(after) == len(expected) == len(candles) - middle
        for i, (got, want) in enumerate(zip(after, expected, strict=True), middle):
            if scenario == "history":
                # how much history the restored instance sees depends on what the caller passed
                # since the restore; the calls count and the candles themselves may not differ
                self._check_history(candles, i, got, i + 1, self.window)
            else:
                assert got == want, (
                    f"candle {i}: the restored instance decided {got!r}, not {want!r}"
                )

    def test_sr16_a_snapshot_of_a_fresh_instance_restores(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """A snapshot taken right after ``init`` restores into another instance, which then
        decides like one that was never moved."""
        candles = self.candles()
        moved = strategy_loader("mixed")
        moved.restore(strategy_loader("mixed").snapshot())
        assert self.decide_each(moved, candles) == self.decide_each(
            strategy_loader("mixed"), candles
        )

    # the batch path ---------------------------------------------------------------------------

    @pytest.mark.parametrize("scenario", ["mixed", "orders", "targets", "ta"])
    def test_sr17_the_batch_path_decides_like_candle_by_candle(
        self, strategy_loader: StrategyLoader, scenario: str
    ) -> None:
        """``on_candles`` (when the instance has it) returns the decisions ``on_candle`` gives
        one candle at a time, orders included."""
        candles = self.candles()
        batch = self.decide_batch(strategy_loader(scenario), candles)
        stepped = self.decide_each(strategy_loader(scenario), candles)
        for i, (got, want) in enumerate(zip(batch, stepped, strict=True)):
            assert got == want, f"candle {i}: the batch path decided {got!r}, on_candle {want!r}"

    def test_sr18_the_batch_path_sees_no_later_candle(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """In a batch, each candle's ``on_candle`` sees a run of candles ending at it."""
        candles = self.candles()
        decisions = self.decide_batch(strategy_loader("history"), candles)
        for i, decision in enumerate(decisions):
            self._check_history(candles, i, decision, i + 1, 1)

    def test_sr19_consecutive_batches_decide_like_one(
        self, strategy_loader: StrategyLoader
    ) -> None:
        """Two batches, one after the other, decide like one batch over both."""
        candles = self.candles()
        whole = self.decide_batch(strategy_loader("mixed"), candles)
        split = strategy_loader("mixed")
        middle = len(candles) // 3
        parts = self.decide_batch(split, candles.slice(0, middle))
        parts += self.decide_batch(split, candles.slice(middle, len(candles)))
        assert parts == whole

    # ta and determinism -----------------------------------------------------------------------

    def test_sr20_ta_agrees_with_trader_ta(self, strategy_loader: StrategyLoader) -> None:
        """Every indicator of :data:`TA_READINGS` exists under its name, warms up when
        :mod:`trader.ta`'s does, and reads the same to 1e-9 relative."""
        candles = self.candles()
        decisions = self.decide_each(strategy_loader("ta"), candles)
        for i, (decision, expected) in enumerate(
            zip(decisions, _ta_reference(candles), strict=True)
        ):
            seen = read_report(decision)
            assert seen.keys() == expected.keys(), (
                f"candle {i}: readings {sorted(seen)}, trader.ta has {sorted(expected)}"
            )
            for name, value in expected.items():
                assert math.isclose(seen[name], value, rel_tol=1e-9, abs_tol=1e-9), (
                    f"candle {i}: {name} reads {seen[name]!r}, trader.ta {value!r}"
                )

    @pytest.mark.parametrize("scenario", ["mixed", "ta"])
    def test_sr21_two_runs_decide_identically(
        self, strategy_loader: StrategyLoader, scenario: str
    ) -> None:
        """Two instances of one strategy fed the same candles decide the same."""
        candles = self.candles()
        first = self.decide_each(strategy_loader(scenario), candles)
        assert first == self.decide_each(strategy_loader(scenario), candles)
