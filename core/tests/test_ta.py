"""``trader.ta`` against TA-Lib (the ``ta-lib`` wheel, a test dependency) to 1e-9 relative.

Each indicator is fed one candle at a time and compared, reading by reading, with TA-Lib's
function over the whole array: the same warm-up (``None`` exactly where TA-Lib has NaN) and the
same values within 1e-9 relative. A reading whose true value is near zero (a MACD crossing zero,
an oscillator at its floor) is compared to 1e-9 of the indicator's scale instead (the price level,
100 for oscillators, the volume traded for OBV): both implementations subtract running sums there,
and a relative comparison of two rounding residues means nothing. VWAP and the crossings, which
TA-Lib lacks, are checked against direct NumPy computations. Hypothesis drives random price series
(tick-rounded random walks with flat stretches and zero volumes) through every comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader import ta
from trader.ta import Indicator

talib: Any = pytest.importorskip(
    "talib",
    reason="TA-Lib's Python wheel is not installed (pip install ta-lib, see requirements/dev.txt)",
)

Columns = dict[str, np.ndarray]


def series(seed: int, size: int = 1500) -> Columns:
    """A random walk around 100 with a flat stretch, a spike and a run of zero volumes."""
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.normal(0, 1, size))
    close[100:140] = close[99]  # flat: zero deviation, RSI with no gains or losses
    close[300] *= 1.5  # a spike
    high = close + rng.random(size)
    low = close - rng.random(size)
    high[100:140] = low[100:140] = close[99]
    volume = rng.random(size) * 10
    volume[200:215] = 0.0
    opens = close + rng.normal(0, 0.5, size)
    return {"open": opens, "high": high, "low": low, "close": close, "volume": volume}


def feed(indicator: Any, inputs: Sequence[np.ndarray]) -> list[Any]:
    """Feed rows one at a time (NumPy scalars, as strategies do); the readings."""
    out = []
    for row in zip(*inputs, strict=True):
        reading = indicator.update(*row)
        assert reading == indicator.value or isinstance(reading, tuple) or reading is None
        out.append(reading)
    return out


def component(readings: list[Any], index: int | None) -> list[float | None]:
    if index is None:
        return readings
    return [None if r is None else r[index] for r in readings]


def assert_matches(got: list[Any], expected: np.ndarray, scale: float, what: str) -> None:
    """``None`` exactly where ``expected`` is NaN; 1e-9 relative elsewhere (of ``scale`` near 0)."""
    assert len(got) == len(expected)
    warm = [i for i, v in enumerate(got) if v is None]
    assert warm == [int(i) for i in np.flatnonzero(np.isnan(expected))], what
    for i, (a, b) in enumerate(zip(got, expected.tolist(), strict=True)):
        if a is not None:
            assert abs(a - b) <= 1e-9 * max(abs(b), scale), (what, i, a, b)


def scale_of(columns: Columns) -> float:
    return float(np.max(np.abs(columns["close"])))


# (name, factory, TA-Lib call, inputs, outputs (index or None), scale)
Case = tuple[
    str,
    Callable[[], Indicator],
    Callable[[Columns], Any],
    tuple[str, ...],
    tuple[int | None, ...],
    Callable[[Columns], float],
]

PRICE = scale_of


def hundred(columns: Columns) -> float:
    return 100.0


def volume_scale(columns: Columns) -> float:
    return float(np.sum(columns["volume"]))


def cases(p: int, q: int, r: int) -> list[Case]:
    """Every indicator TA-Lib has, with periods built from ``p < q`` and ``r``."""
    close: tuple[str, ...] = ("close",)
    hlc = ("high", "low", "close")
    return [
        ("sma", lambda: ta.sma(p), lambda c: talib.SMA(c["close"], p), close, (None,), PRICE),
        ("ema", lambda: ta.ema(p), lambda c: talib.EMA(c["close"], p), close, (None,), PRICE),
        ("wma", lambda: ta.wma(p), lambda c: talib.WMA(c["close"], p), close, (None,), PRICE),
        ("rsi", lambda: ta.rsi(p), lambda c: talib.RSI(c["close"], p), close, (None,), hundred),
        (
            "macd",
            lambda: ta.macd(p, q, r),
            lambda c: talib.MACD(c["close"], p, q, r),
            close,
            (0, 1, 2),
            PRICE,
        ),
        (
            "stddev",
            lambda: ta.stddev(p, 1.5),
            lambda c: talib.STDDEV(c["close"], p, 1.5),
            close,
            (None,),
            PRICE,
        ),
        (
            "bbands",
            lambda: ta.bbands(p, 2.0, 1.5),
            lambda c: talib.BBANDS(c["close"], p, 2.0, 1.5, 0),
            close,
            (0, 1, 2),
            PRICE,
        ),
        (
            "atr",
            lambda: ta.atr(p),
            lambda c: talib.ATR(c["high"], c["low"], c["close"], p),
            hlc,
            (None,),
            PRICE,
        ),
        (
            "highest",
            lambda: ta.highest(p),
            lambda c: talib.MAX(c["close"], p),
            close,
            (None,),
            PRICE,
        ),
        ("lowest", lambda: ta.lowest(p), lambda c: talib.MIN(c["close"], p), close, (None,), PRICE),
        ("roc", lambda: ta.roc(p), lambda c: talib.ROC(c["close"], p), close, (None,), hundred),
        (
            "stoch",
            lambda: ta.stoch(q, r, p),
            lambda c: talib.STOCH(c["high"], c["low"], c["close"], q, r, 0, p, 0),
            hlc,
            (0, 1),
            hundred,
        ),
        (
            "obv",
            ta.obv,
            lambda c: talib.OBV(c["close"], c["volume"]),
            ("close", "volume"),
            (None,),
            volume_scale,
        ),
    ]


def check(case: Case, columns: Columns) -> None:
    name, factory, call, inputs, outputs, scale = case
    expected = call(columns)
    if not isinstance(expected, tuple):
        expected = (expected,)
    readings = feed(factory(), [columns[k] for k in inputs])
    for index, want in zip(outputs, expected, strict=True):
        assert_matches(component(readings, index), want, scale(columns), f"{name}[{index}]")


PARAMETERS = [(2, 3, 1), (5, 12, 3), (14, 26, 9), (30, 31, 5)]


@pytest.mark.parametrize(("p", "q", "r"), PARAMETERS)
@pytest.mark.parametrize("name", [case[0] for case in cases(2, 3, 1)])
def test_indicator_matches_talib(name: str, p: int, q: int, r: int) -> None:
    case = next(c for c in cases(p, q, r) if c[0] == name)
    check(case, series(p * 100 + q))


def test_period_one_matches_talib_where_talib_allows_it() -> None:
    columns = series(1)
    c = columns["close"]
    assert_matches(feed(ta.roc(1), [c]), talib.ROC(c, 1), 100.0, "roc(1)")
    hlc = [columns["high"], columns["low"], columns["close"]]
    assert_matches(feed(ta.atr(1), hlc), talib.ATR(*hlc, 1), 100.0, "atr(1)")
    assert_matches(feed(ta.ema(1), [c]), talib.EMA(c, 1), 100.0, "ema(1)")
    # TA-Lib refuses period 1 for these; it is the identity (and zero deviation)
    for factory in (ta.sma, ta.wma, ta.highest, ta.lowest):
        assert feed(factory(1), [c]) == c.tolist()
    assert set(feed(ta.stddev(1), [c])) == {0.0}


def test_macd_swaps_fast_and_slow_like_talib() -> None:
    c = series(2)["close"]
    got = feed(ta.macd(26, 12, 9), [c])
    assert_matches(component(got, 0), talib.MACD(c, 26, 12, 9)[0], 100.0, "macd swapped")
    assert got == feed(ta.macd(12, 26, 9), [c])


@st.composite
def price_series(draw: st.DrawFn) -> Columns:
    """Tick-rounded random walks (0.01 ticks) with many unchanged closes, any level."""
    size = draw(st.integers(1, 250))
    start = draw(st.integers(100, 10**7))
    steps = draw(st.lists(st.sampled_from([0, 0, 0, 1, -1, 7, -7, 150, -150]), min_size=size))
    ticks = np.maximum(start + np.cumsum(np.array(steps[:size], dtype=np.int64)), 1)
    spread = np.array(draw(st.lists(st.integers(0, 40), min_size=size, max_size=size)))
    volume = np.array(draw(st.lists(st.integers(0, 1000), min_size=size, max_size=size)))
    close = ticks * 0.01
    return {
        "open": np.roll(close, 1),
        "high": (ticks + spread) * 0.01,
        "low": np.maximum(ticks - spread, 1) * 0.01,
        "close": close,
        "volume": volume * 0.5,
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    columns=price_series(),
    p=st.integers(2, 30),
    q=st.integers(2, 30),
    r=st.integers(1, 12),
)
def test_every_indicator_matches_talib_on_random_series(
    columns: Columns, p: int, q: int, r: int
) -> None:
    if q == p:
        q += 1
    for case in cases(min(p, q), max(p, q), r):
        check(case, columns)


def reference_vwap(columns: Columns, period: int | None) -> np.ndarray:
    tp = (columns["high"] + columns["low"] + columns["close"]) / 3.0
    pv = tp * columns["volume"]
    out = np.full(len(tp), np.nan)
    for i in range(len(tp)):
        lo = 0 if period is None else i + 1 - period
        if lo < 0:
            continue
        vol = math.fsum(columns["volume"][lo : i + 1])
        out[i] = math.fsum(pv[lo : i + 1]) / vol if vol else tp[i]
    return out


@settings(max_examples=60, deadline=None)
@given(columns=price_series(), period=st.one_of(st.none(), st.integers(1, 30)))
def test_vwap_matches_its_definition(columns: Columns, period: int | None) -> None:
    inputs = [columns[k] for k in ("high", "low", "close", "volume")]
    got = feed(ta.vwap(period), inputs)
    assert_matches(got, reference_vwap(columns, period), scale_of(columns), f"vwap({period})")


def test_vwap_of_a_window_without_volume_is_the_typical_price() -> None:
    vwap = ta.vwap(2)
    assert vwap.update(3, 1, 2, 5) is None
    assert vwap.update(6, 3, 3, 5) == (2.0 * 5 + 4.0 * 5) / 10
    assert vwap.update(6, 3, 3, 0) == 4.0  # still the window's volume of 5
    assert vwap.update(9, 3, 6, 0) == 6.0  # no volume left in the window


@settings(max_examples=100, deadline=None)
@given(
    a=st.lists(st.one_of(st.none(), st.integers(-3, 3).map(float)), max_size=60),
    b=st.lists(st.integers(-3, 3).map(float), min_size=60, max_size=60),
)
def test_crossings_match_their_definition(a: list[float | None], b: list[float]) -> None:
    over, under = ta.crossover(), ta.crossunder()
    prev: tuple[float, float] | None = None
    for x, y in zip(a, b, strict=False):
        got_over, got_under = over.update(x, y), under.update(x, y)
        if x is None or prev is None:
            assert got_over is None and got_under is None
        else:
            assert got_over == (x > y and prev[0] <= prev[1])
            assert got_under == (x < y and prev[0] >= prev[1])
        prev = None if x is None else (x, y)


ALL = [
    ("sma", (7,), 1),
    ("ema", (7,), 1),
    ("wma", (7,), 1),
    ("rsi", (7,), 1),
    ("macd", (3, 7, 4), 1),
    ("stddev", (7, 2.0), 1),
    ("bbands", (7, 2.0, 1.0), 1),
    ("atr", (7,), 3),
    ("highest", (7,), 1),
    ("lowest", (7,), 1),
    ("crossover", (), 2),
    ("crossunder", (), 2),
    ("roc", (7,), 1),
    ("stoch", (7, 3, 2), 3),
    ("obv", (), 2),
    ("vwap", (7,), 4),
    ("vwap", (), 4),
]
INPUTS = {1: ("close",), 2: ("close", "open"), 3: ("high", "low", "close")}
INPUTS[4] = ("high", "low", "close", "volume")


@pytest.mark.parametrize(("name", "args", "arity"), ALL)
def test_a_dumped_and_loaded_indicator_continues_identically(
    name: str, args: tuple[float, ...], arity: int
) -> None:
    columns = series(9, 400)
    keys = ("close", "volume") if name == "obv" else INPUTS[arity]
    rows = list(zip(*[columns[k].tolist() for k in keys], strict=True))
    indicator = getattr(ta, name)(*args)
    whole = [indicator.update(*row) for row in rows]
    first = getattr(ta, name)(*args)
    for row in rows[:157]:
        first.update(*row)
    restored = Indicator.load(first.kind, first.dump())
    assert type(restored) is type(first) and restored.value == first.value
    assert [restored.update(*row) for row in rows[157:]] == whole[157:]


def test_every_indicator_is_registered_and_documented() -> None:
    kinds = {name for name, _, _ in ALL}
    assert set(Indicator.registry) == kinds
    for name in kinds:
        assert callable(getattr(ta, name)) and getattr(ta, name).__doc__


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ta.sma(0), r"ta\.sma: period must be a whole number from 1"),
        (lambda: ta.macd(1, 26, 9), r"ta\.macd: fast must be a whole number from 2"),
        (lambda: ta.macd(12, 26, 0), r"ta\.macd: signal must be a whole number from 1"),
        (lambda: ta.bbands(20, -1.0), r"ta\.bbands: up must be a finite number >= 0"),
        (lambda: ta.stddev(5, math.inf), r"ta\.stddev: nbdev must be a finite number >= 0"),
        (lambda: ta.stoch(5, 2.5, 3), r"ta\.stoch: slowk must be a whole number"),
        (lambda: ta.vwap(True), r"ta\.vwap: period must be a whole number"),
    ],
)
def test_bad_arguments_are_refused_with_the_indicator_and_argument_named(
    call: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_load_refuses_unknown_kinds_and_wrong_fields() -> None:
    with pytest.raises(ValueError, match="unknown indicator kind 'nope'"):
        Indicator.load("nope", {})
    with pytest.raises(ValueError, match=r"the fields of a ta\.sma are not"):
        Indicator.load("sma", {"period": 3})
    fields = ta.stoch().dump()
    fields["kma"] = ["ema", fields["kma"][1]]
    with pytest.raises(ValueError, match=r"the kma of a ta\.stoch is not a ta\.sma"):
        Indicator.load("stoch", fields)


def test_highest_and_lowest_keep_at_most_period_candidates() -> None:
    high, low = ta.highest(5), ta.lowest(5)
    for x in range(1000):  # rising: the lowest deque would grow without its window bound
        high.update(float(x))
        low.update(float(x))
        assert high.size <= 5 and low.size <= 5
    assert (high.value, low.value) == (999.0, 995.0)


def test_reprs_name_the_indicator_and_its_arguments() -> None:
    assert repr(ta.ema(3)) == "ta.ema(3) value=None"
    assert repr(ta.macd()) == "ta.macd(12, 26, 9) value=None"
    assert repr(ta.bbands(10, 2.0)) == "ta.bbands(10, 2.0, 2.0) value=None"
    assert repr(ta.crossover()) == "ta.crossover() value=None"
    assert repr(ta.stoch()) == "ta.stoch(5, 3, 3) value=None"
