"""Incremental technical indicators: the reference implementation behind ``ta`` in strategies.

Every indicator is an object: ``indicator.update(...)`` feeds one candle's inputs in O(1)
(amortised for :class:`Highest`, :class:`Lowest`, :class:`StdDev`, :class:`BBands`) and returns
the current reading, or ``None`` while the indicator is warming up; ``indicator.value`` holds the
last reading. Indicators with several outputs (:class:`MACD`, :class:`BBands`, :class:`Stoch`)
return a tuple and keep each output in its own attribute as well; ``value`` is their main line.

The definitions are TA-Lib's, with its default (non-Metastock) compatibility, and the arithmetic
is done in TA-Lib's order: running sums are added to before a reading and subtracted from after
it, EMAs are seeded with the simple average of their first ``period`` values, RSI and ATR use
Wilder's smoothing; standard deviation is the population one, kept (as TA-Lib 0.8 keeps it) with
running sums of deviations from a shift that is re-anchored at the window's mean. The
Lua runtime's ``ta`` does the same operations in the same order, so Lua and Python strategies get
the same numbers bit for bit. Inputs are taken as Python floats (``float(x)``: exact for NumPy
scalars); readings are Python floats. VWAP and the crossings have no TA-Lib counterpart; their
definitions are in ``docs/ta.md``.

Indicators keep their state in plain numbers and lists (:meth:`Indicator.dump`), so they can live
in a strategy's state and travel in snapshots (:meth:`Indicator.load`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

__all__ = [
    "ATR",
    "EMA",
    "MACD",
    "OBV",
    "ROC",
    "RSI",
    "SMA",
    "VWAP",
    "WMA",
    "BBands",
    "Crossover",
    "Crossunder",
    "Highest",
    "Indicator",
    "Lowest",
    "StdDev",
    "Stoch",
    "atr",
    "bbands",
    "crossover",
    "crossunder",
    "ema",
    "highest",
    "lowest",
    "macd",
    "obv",
    "roc",
    "rsi",
    "sma",
    "stddev",
    "stoch",
    "vwap",
    "wma",
]


def _period(name: str, period: object, low: int = 1, what: str = "period") -> int:
    if (
        isinstance(period, bool)
        or not isinstance(period, (int, float))
        or not low <= period <= 1_000_000
        or period % 1 != 0
    ):
        raise ValueError(f"ta.{name}: {what} must be a whole number from {low} to 1000000")
    return int(period)


def _factor(name: str, value: object, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"ta.{name}: {what} must be a finite number >= 0")
    return float(value)


class Indicator:
    """Base of the ``ta`` indicators: a kind name and the fields a snapshot carries."""

    __slots__ = ("value",)
    kind: ClassVar[str] = ""
    #: the attributes saved by snapshots, in order
    fields: ClassVar[tuple[str, ...]] = ()
    registry: ClassVar[dict[str, type[Indicator]]] = {}

    value: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Indicator.registry[cls.kind] = cls

    def dump(self) -> dict[str, Any]:
        """The indicator's fields (plain numbers, booleans, ``None`` and lists), for snapshots."""
        return {name: getattr(self, name) for name in self.fields}

    @classmethod
    def load(cls, kind: str, fields: dict[str, Any]) -> Indicator:
        """An indicator of ``kind`` with ``fields`` (from :meth:`dump`); ``ValueError`` if not."""
        if kind not in cls.registry:
            raise ValueError(f"unknown indicator kind {kind!r}")
        target = cls.registry[kind]
        if not isinstance(fields, dict) or set(fields) != set(target.fields):
            raise ValueError(f"the fields of a ta.{kind} are not {sorted(target.fields)}")
        indicator = target.__new__(target)
        for name in target.fields:
            setattr(indicator, name, fields[name])
        indicator._restored()
        return indicator

    def _restored(self) -> None:
        """Rebuild what :meth:`dump` flattened (nested indicators); plain kinds need nothing."""

    def _arguments(self) -> str:
        return str(getattr(self, "period", ""))

    def __repr__(self) -> str:
        return f"ta.{self.kind}({self._arguments()}) value={self.value!r}"


class SMA(Indicator):
    """Simple moving average over ``period`` values; first reading at the ``period``-th value."""

    __slots__ = ("buf", "count", "period", "pos", "sum")
    kind = "sma"
    fields = ("period", "value", "pos", "count", "sum", "buf")

    def __init__(self, period: int) -> None:
        self.period = _period("sma", period)
        self.value: float | None = None
        self.pos = 0
        self.count = 0
        #: the running total of the newest ``period - 1`` values (TA-Lib's periodTotal)
        self.sum = 0.0
        self.buf: list[float] = [0.0] * self.period

    def update(self, x: float) -> float | None:
        """Feed one value; the average of the last ``period`` values, ``None`` before that."""
        x = float(x)  # NumPy scalars (candles.close[-1]) compute several times slower
        p = self.period
        buf = self.buf
        pos = self.pos
        buf[pos] = x
        pos += 1
        if pos == p:
            pos = 0
        self.pos = pos
        total = self.sum + x
        if self.count < p:
            self.count = count = self.count + 1
            if count < p:
                self.sum = total
                return None
        self.sum = total - buf[pos]  # buf[pos]: the oldest value of the window
        v = total / p
        self.value = v
        return v


class EMA(Indicator):
    """Exponential moving average seeded with the simple average of the first ``period`` values,
    then ``value = (x - value) * k + value`` with ``k = 2 / (period + 1)``."""

    __slots__ = ("count", "k", "period", "sum")
    kind = "ema"
    fields = ("period", "value", "k", "count", "sum")

    def __init__(self, period: int) -> None:
        self.period = _period("ema", period)
        self.value: float | None = None
        self.k = 2 / (self.period + 1)
        self.count = 0
        self.sum = 0.0

    def update(self, x: float) -> float | None:
        """Feed one value; the current average, ``None`` until ``period`` values were seen."""
        x = float(x)
        v = self.value
        if v is not None:
            v = (x - v) * self.k + v
            self.value = v
            return v
        self.count = count = self.count + 1
        self.sum = total = self.sum + x
        if count == self.period:
            v = total / count
            self.value = v
            return v
        return None


class WMA(Indicator):
    """Linearly weighted moving average (weights 1..period, newest heaviest), kept with TA-Lib's
    two running sums; first reading at the ``period``-th value."""

    __slots__ = ("buf", "count", "period", "pos", "sub", "sum", "trailing")
    kind = "wma"
    fields = ("period", "value", "pos", "count", "sum", "sub", "trailing", "buf")

    def __init__(self, period: int) -> None:
        self.period = _period("wma", period)
        self.value: float | None = None
        self.pos = 0
        self.count = 0
        self.sum = 0.0  # TA-Lib's periodSum (weighted)
        self.sub = 0.0  # TA-Lib's periodSub (plain)
        self.trailing = 0.0
        self.buf: list[float] = [0.0] * self.period

    def update(self, x: float) -> float | None:
        """Feed one value; the weighted average of the last ``period`` values, else ``None``."""
        x = float(x)
        p = self.period
        if p == 1:  # TA-Lib copies the input
            self.value = x
            return x
        buf = self.buf
        pos = self.pos
        buf[pos] = x
        pos += 1
        if pos == p:
            pos = 0
        self.pos = pos
        if self.count < p:
            self.count = count = self.count + 1
            if count < p:
                self.sub += x
                self.sum += x * count
                return None
        sub = self.sub + x
        sub = sub - self.trailing
        total = self.sum + x * p
        self.trailing = buf[pos]
        v = total / ((p * (p + 1)) // 2)
        self.sum = total - sub
        self.sub = sub
        self.value = v
        return v


class RSI(Indicator):
    """Relative strength index with Wilder's smoothing as TA-Lib computes it; the first reading
    needs ``period + 1`` values."""

    __slots__ = ("count", "gain", "loss", "period", "prev")
    kind = "rsi"
    fields = ("period", "value", "prev", "count", "gain", "loss")

    def __init__(self, period: int) -> None:
        self.period = _period("rsi", period)
        self.value: float | None = None
        self.prev: float | None = None
        self.count = 0
        self.gain = 0.0
        self.loss = 0.0

    def update(self, x: float) -> float | None:
        """Feed one value; the current RSI in [0, 100], ``None`` while warming up."""
        x = float(x)
        prev = self.prev
        self.prev = x
        if prev is None:
            return None
        p = self.period
        diff = x - prev
        self.count = count = self.count + 1
        gain, loss = self.gain, self.loss
        if count > p:
            gain = gain * (p - 1)
            loss = loss * (p - 1)
        if diff < 0:
            loss = loss - diff
        else:
            gain = gain + diff
        if count < p:
            self.gain, self.loss = gain, loss
            return None
        gain = gain / p
        loss = loss / p
        self.gain, self.loss = gain, loss
        total = gain + loss
        v = 0.0
        if total != 0.0:
            v = 100 * (gain / total)
        self.value = v
        return v


class MACD(Indicator):
    """MACD as TA-Lib computes it: fast EMA minus slow EMA (both seeded, like TA-Lib, with a
    simple average ending at the ``slow``-th value), its signal EMA and the histogram. The first
    reading comes at value ``slow + signal - 1``; ``update`` returns ``(macd, signal, hist)``."""

    __slots__ = (
        "buf",
        "count",
        "fast",
        "fast_ema",
        "hist",
        "kf",
        "ks",
        "ksig",
        "macd",
        "signal",
        "signal_period",
        "signal_sum",
        "slow",
        "slow_ema",
        "slow_sum",
    )
    kind = "macd"
    fields = (
        "fast",
        "slow",
        "signal_period",
        "value",
        "macd",
        "signal",
        "hist",
        "kf",
        "ks",
        "ksig",
        "count",
        "slow_sum",
        "fast_ema",
        "slow_ema",
        "signal_sum",
        "buf",
    )

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        fast = _period("macd", fast, 2, "fast")
        slow = _period("macd", slow, 2, "slow")
        if slow < fast:
            fast, slow = slow, fast  # as TA-Lib does
        self.fast = fast
        self.slow = slow
        self.signal_period = _period("macd", signal, 1, "signal")
        self.value: float | None = None
        self.macd: float | None = None
        self.signal: float | None = None
        self.hist: float | None = None
        self.kf = 2 / (fast + 1)
        self.ks = 2 / (slow + 1)
        self.ksig = 2 / (self.signal_period + 1)
        self.count = 0
        self.slow_sum = 0.0
        self.fast_ema = 0.0
        self.slow_ema = 0.0
        self.signal_sum = 0.0
        #: the newest ``fast`` values until the EMAs are seeded
        self.buf: list[float] = [0.0] * fast

    def update(self, x: float) -> tuple[float, float, float] | None:
        """Feed one value; ``(macd, signal, hist)``, or ``None`` while warming up."""
        x = float(x)
        self.count = count = self.count + 1
        slow = self.slow
        if count > slow:
            f = (x - self.fast_ema) * self.kf + self.fast_ema
            s = (x - self.slow_ema) * self.ks + self.slow_ema
            self.fast_ema, self.slow_ema = f, s
        else:
            fast = self.fast
            self.buf[(count - 1) % fast] = x
            self.slow_sum = total = self.slow_sum + x
            if count < slow:
                return None
            s = total / slow
            start = count % fast  # the oldest of the last `fast` values
            buf = self.buf
            fsum = 0.0
            for i in range(fast):
                fsum += buf[(start + i) % fast]
            f = fsum / fast
            self.fast_ema, self.slow_ema = f, s
            self.buf = []
        m = f - s
        n = self.signal_period
        sig = self.signal
        if sig is not None:
            sig = (m - sig) * self.ksig + sig
        else:
            seen = count - slow + 1
            self.signal_sum = total = self.signal_sum + m
            if seen < n:
                return None
            sig = total / n
        hist = m - sig
        self.value = self.macd = m
        self.signal = sig
        self.hist = hist
        return m, sig, hist

    def _arguments(self) -> str:
        return f"{self.fast}, {self.slow}, {self.signal_period}"


class _Deviation(Indicator):
    """The population variance of a window of ``period`` values in O(1) amortised.

    Running sums of deviations from a shift ``K`` (``s1 = sum(x - K)``, ``s2 = sum((x - K)**2)``)
    keep both terms at the scale of the variance; ``K`` is re-anchored at the window's mean (a
    fresh pass over the window) when the variance falls below 1e-3 of ``s2 / period`` or every
    ``32 * period`` values, so the cancellation of ``E[x**2] - E[x]**2`` cannot build up (the
    design of TA-Lib 0.8's VAR, with a tighter trigger). ``period`` equal values give exactly 0.
    """

    __slots__ = ("buf", "count", "last", "period", "pos", "run", "s1", "s2", "shift", "since")
    fields: ClassVar[tuple[str, ...]] = (
        "period",
        "value",
        "pos",
        "count",
        "shift",
        "s1",
        "s2",
        "since",
        "last",
        "run",
        "buf",
    )

    def _start(self, name: str, period: object) -> None:
        self.period = _period(name, period)
        self.value: Any = None
        self.pos = 0
        self.count = 0
        self.shift = 0.0
        self.s1 = 0.0
        self.s2 = 0.0
        self.since = 0
        self.last: float | None = None
        self.run = 0
        self.buf: list[float] = [0.0] * self.period

    def _variance(self, x: float) -> float | None:
        p = self.period
        buf = self.buf
        pos = self.pos
        buf[pos] = x
        pos += 1
        if pos == p:
            pos = 0
        self.pos = pos
        if x == self.last:
            if self.run < p:
                self.run += 1
        else:
            self.last = x
            self.run = 1
        if self.count == 0:
            self.shift = x
        d = x - self.shift
        s1 = self.s1 + d
        s2 = self.s2 + d * d
        if self.count < p:
            self.count = count = self.count + 1
            if count < p:
                self.s1, self.s2 = s1, s2
                return None
        if self.run >= p:
            var = 0.0  # a flat window
        else:
            m1 = s1 / p
            m2 = s2 / p
            var = m2 - m1 * m1
            self.since = since = self.since + 1
            if var < 1e-3 * m2 or since >= 32 * p:
                total = 0.0
                for v in buf:
                    total += v
                k = total / p
                s1 = s2 = 0.0
                for v in buf:
                    d = v - k
                    s1 += d
                    s2 += d * d
                self.shift = k
                self.since = 0
                m1 = s1 / p
                var = s2 / p - m1 * m1
            if var < 0.0:
                var = 0.0
        old = buf[pos] - self.shift
        self.s1 = s1 - old
        self.s2 = s2 - old * old
        return var


class StdDev(_Deviation):
    """Population standard deviation over ``period`` values times ``nbdev`` (TA-Lib's STDDEV);
    first reading at the ``period``-th value."""

    __slots__ = ("nbdev",)
    kind = "stddev"
    fields = (*_Deviation.fields, "nbdev")

    def __init__(self, period: int, nbdev: float = 1.0) -> None:
        self._start("stddev", period)
        self.nbdev = _factor("stddev", nbdev, "nbdev")

    def update(self, x: float) -> float | None:
        """Feed one value; the deviation of the last ``period`` values, ``None`` before that."""
        var = self._variance(float(x))
        if var is None:
            return None
        v = math.sqrt(var) * self.nbdev
        self.value = v
        return v

    def _arguments(self) -> str:
        return f"{self.period}, {self.nbdev!r}"


class BBands(_Deviation):
    """Bollinger bands as TA-Lib's BBANDS with a simple average: the middle band is the SMA of
    ``period`` values (TA-Lib's running total), the bands ``up`` and ``down`` population
    deviations away. ``update`` returns ``(upper, middle, lower)``; ``value`` is the middle."""

    __slots__ = ("down", "lower", "middle", "sum", "up", "upper")
    kind = "bbands"
    fields = (*_Deviation.fields, "up", "down", "upper", "middle", "lower", "sum")

    def __init__(self, period: int = 20, up: float = 2.0, down: float | None = None) -> None:
        self._start("bbands", period)
        self.up = _factor("bbands", up, "up")
        self.down = self.up if down is None else _factor("bbands", down, "down")
        self.upper: float | None = None
        self.middle: float | None = None
        self.lower: float | None = None
        self.sum = 0.0

    def update(self, x: float) -> tuple[float, float, float] | None:
        """Feed one value; ``(upper, middle, lower)``, or ``None`` while warming up."""
        x = float(x)
        var = self._variance(x)
        total = self.sum + x
        if var is None:
            self.sum = total
            return None
        p = self.period
        self.sum = total - self.buf[self.pos]
        mid = total / p
        dev = math.sqrt(var)
        upper = mid + dev * self.up
        lower = mid - dev * self.down
        self.value = self.middle = mid
        self.upper, self.lower = upper, lower
        return upper, mid, lower

    def _arguments(self) -> str:
        return f"{self.period}, {self.up!r}, {self.down!r}"


class ATR(Indicator):
    """Average true range with Wilder's smoothing, seeded like TA-Lib with the simple average of
    the first ``period`` true ranges; the first reading needs ``period + 1`` candles."""

    __slots__ = ("count", "period", "prev_close", "sum")
    kind = "atr"
    fields = ("period", "value", "prev_close", "count", "sum")

    def __init__(self, period: int = 14) -> None:
        self.period = _period("atr", period)
        self.value: float | None = None
        self.prev_close: float | None = None
        self.count = 0
        self.sum = 0.0

    def update(self, high: float, low: float, close: float) -> float | None:
        """Feed one candle; the current ATR, ``None`` while warming up."""
        high, low, close = float(high), float(low), float(close)
        prev = self.prev_close
        self.prev_close = close
        if prev is None:
            return None
        tr = high - low
        d = abs(prev - high)
        if d > tr:
            tr = d
        d = abs(prev - low)
        if d > tr:
            tr = d
        p = self.period
        v = self.value
        if v is not None:
            v = v * (p - 1)
            v = v + tr
            v = v / p
            self.value = v
            return v
        self.count = count = self.count + 1
        self.sum = total = self.sum + tr
        if count < p:
            return None
        v = total / p
        self.value = v
        return v


class _Extreme(Indicator):
    """A monotonic deque over a ring of ``period`` slots: amortised O(1) per value."""

    __slots__ = ("count", "head", "indexes", "period", "size", "values")
    fields = ("period", "value", "count", "head", "size", "values", "indexes")

    def __init__(self, period: int) -> None:
        self.period = _period(self.kind, period)
        self.value: float | None = None
        self.count = 0
        self.head = 0
        self.size = 0
        self.values: list[float] = [0.0] * self.period
        self.indexes: list[int] = [0] * self.period

    def _update(self, x: float, highest: bool) -> float | None:
        p = self.period
        values, indexes = self.values, self.indexes
        self.count = n = self.count + 1
        head, size = self.head, self.size
        if size and indexes[head] <= n - p:  # the front left the window
            head = head + 1 if head + 1 < p else 0
            size -= 1
        while size:
            back = head + size - 1
            if back >= p:
                back -= p
            b = values[back]
            if (b <= x) if highest else (b >= x):
                size -= 1
            else:
                break
        back = head + size
        if back >= p:
            back -= p
        values[back] = x
        indexes[back] = n
        self.head, self.size = head, size + 1
        if n < p:
            return None
        v = values[head]
        self.value = v
        return v


class Highest(_Extreme):
    """The highest of the last ``period`` values (TA-Lib's MAX)."""

    __slots__ = ()
    kind = "highest"

    def update(self, x: float) -> float | None:
        """Feed one value; the highest of the last ``period``, ``None`` before ``period``."""
        return self._update(float(x), True)


class Lowest(_Extreme):
    """The lowest of the last ``period`` values (TA-Lib's MIN)."""

    __slots__ = ()
    kind = "lowest"

    def update(self, x: float) -> float | None:
        """Feed one value; the lowest of the last ``period``, ``None`` before ``period``."""
        return self._update(float(x), False)


class Crossover(Indicator):
    """``a`` crossing above ``b``: true when ``a > b`` now and ``a <= b`` at the previous update.

    ``update(a, b)`` returns ``None`` on the first pair and after a pair holding ``None`` (so the
    readings of warming-up indicators can be fed directly), else ``True`` or ``False``."""

    __slots__ = ("prev_a", "prev_b")
    kind = "crossover"
    fields = ("value", "prev_a", "prev_b")

    def __init__(self) -> None:
        self.value: bool | None = None
        self.prev_a: float | None = None
        self.prev_b: float | None = None

    def update(self, a: float | None, b: float | None) -> bool | None:
        """Feed the current pair; whether ``a`` just crossed above ``b``."""
        if a is None or b is None:
            self.prev_a = self.prev_b = None
            self.value = None
            return None
        a, b = float(a), float(b)
        pa, pb = self.prev_a, self.prev_b
        self.prev_a, self.prev_b = a, b
        if pa is None or pb is None:
            self.value = None
            return None
        v = a > b and pa <= pb
        self.value = v
        return v

    def _arguments(self) -> str:
        return ""


class Crossunder(Crossover):
    """``a`` crossing below ``b``: true when ``a < b`` now and ``a >= b`` at the previous
    update; ``None`` as for :class:`Crossover`."""

    __slots__ = ()
    kind = "crossunder"

    def update(self, a: float | None, b: float | None) -> bool | None:
        """Feed the current pair; whether ``a`` just crossed below ``b``."""
        if a is None or b is None:
            self.prev_a = self.prev_b = None
            self.value = None
            return None
        a, b = float(a), float(b)
        pa, pb = self.prev_a, self.prev_b
        self.prev_a, self.prev_b = a, b
        if pa is None or pb is None:
            self.value = None
            return None
        v = a < b and pa >= pb
        self.value = v
        return v


class ROC(Indicator):
    """Rate of change in percent, ``(x / x[period ago] - 1) * 100`` (TA-Lib's ROC; 0 when the old
    value is 0); the first reading needs ``period + 1`` values."""

    __slots__ = ("buf", "count", "period", "pos")
    kind = "roc"
    fields = ("period", "value", "pos", "count", "buf")

    def __init__(self, period: int = 10) -> None:
        self.period = _period("roc", period)
        self.value: float | None = None
        self.pos = 0
        self.count = 0
        self.buf: list[float] = [0.0] * self.period

    def update(self, x: float) -> float | None:
        """Feed one value; the change against ``period`` values ago, ``None`` before that."""
        x = float(x)
        p = self.period
        buf = self.buf
        pos = self.pos
        old = buf[pos]
        buf[pos] = x
        pos += 1
        self.pos = 0 if pos == p else pos
        if self.count < p:
            self.count += 1
            return None
        v = 0.0
        if old != 0.0:
            v = (x / old - 1.0) * 100.0
        self.value = v
        return v


class Stoch(Indicator):
    """The slow stochastic oscillator as TA-Lib's STOCH with simple averages: fast %K over
    ``fastk`` candles, %K its ``slowk`` SMA, %D the ``slowd`` SMA of %K. ``update`` returns
    ``(k, d)``; ``value`` is %K. The first reading needs ``fastk + slowk + slowd - 2`` candles."""

    __slots__ = ("d", "dma", "high", "k", "kma", "low")
    kind = "stoch"
    fields = ("value", "k", "d", "high", "low", "kma", "dma")

    def __init__(self, fastk: int = 5, slowk: int = 3, slowd: int = 3) -> None:
        self.value: float | None = None
        self.k: float | None = None
        self.d: float | None = None
        self.high = Highest(_period("stoch", fastk, 1, "fastk"))
        self.low = Lowest(fastk)
        self.kma = SMA(_period("stoch", slowk, 1, "slowk"))
        self.dma = SMA(_period("stoch", slowd, 1, "slowd"))

    def dump(self) -> dict[str, Any]:
        """The fields, the inner indicators as ``[kind, fields]`` pairs."""
        out = super().dump()
        for name in ("high", "low", "kma", "dma"):
            inner: Indicator = out[name]
            out[name] = [inner.kind, inner.dump()]
        return out

    def _restored(self) -> None:
        for name, kind in (("high", "highest"), ("low", "lowest"), ("kma", "sma"), ("dma", "sma")):
            pair = getattr(self, name)
            if not isinstance(pair, list) or len(pair) != 2 or pair[0] != kind:
                raise ValueError(f"the {name} of a ta.stoch is not a ta.{kind}")
            setattr(self, name, Indicator.load(kind, pair[1]))

    def update(self, high: float, low: float, close: float) -> tuple[float, float] | None:
        """Feed one candle; ``(k, d)``, or ``None`` while warming up."""
        hi = self.high.update(high)
        lo = self.low.update(low)
        if hi is None or lo is None:
            return None
        diff = (hi - lo) / 100.0
        fast = 0.0
        if diff != 0.0:
            fast = (float(close) - lo) / diff
        k = self.kma.update(fast)
        if k is None:
            return None
        d = self.dma.update(k)
        if d is None:
            return None
        self.value = self.k = k
        self.d = d
        return k, d

    def _arguments(self) -> str:
        return f"{self.high.period}, {self.kma.period}, {self.dma.period}"


class OBV(Indicator):
    """On-balance volume (TA-Lib's OBV): starts at the first candle's volume, then adds the
    volume when the close rose and subtracts it when it fell."""

    __slots__ = ("prev",)
    kind = "obv"
    fields = ("value", "prev")

    def __init__(self) -> None:
        self.value: float | None = None
        self.prev: float | None = None

    def update(self, close: float, volume: float) -> float:
        """Feed one candle; the running on-balance volume."""
        close, volume = float(close), float(volume)
        prev = self.prev
        self.prev = close
        v = self.value
        if v is None or prev is None:
            v = volume
        elif close > prev:
            v = v + volume
        elif close < prev:
            v = v - volume
        self.value = v
        return v

    def _arguments(self) -> str:
        return ""


class VWAP(Indicator):
    """Volume-weighted average of the typical price ``(high + low + close) / 3``: since the first
    candle when ``period`` is ``None``, else over the last ``period`` candles (running sums,
    TA-Lib's order). While the volume summed is 0 the reading is the latest typical price."""

    __slots__ = ("buf_pv", "buf_v", "count", "period", "pos", "pv", "vol")
    kind = "vwap"
    fields = ("period", "value", "pos", "count", "pv", "vol", "buf_pv", "buf_v")

    def __init__(self, period: int | None = None) -> None:
        self.period = None if period is None else _period("vwap", period)
        self.value: float | None = None
        self.pos = 0
        self.count = 0
        self.pv = 0.0
        self.vol = 0.0
        size = 0 if self.period is None else self.period
        self.buf_pv: list[float] = [0.0] * size
        self.buf_v: list[float] = [0.0] * size

    def update(self, high: float, low: float, close: float, volume: float) -> float | None:
        """Feed one candle; the current VWAP, ``None`` before ``period`` candles."""
        tp = (float(high) + float(low) + float(close)) / 3.0
        volume = float(volume)
        pv = tp * volume
        total_pv = self.pv + pv
        total_v = self.vol + volume
        p = self.period
        if p is None:
            self.pv, self.vol = total_pv, total_v
        else:
            pos = self.pos
            self.buf_pv[pos] = pv
            self.buf_v[pos] = volume
            pos += 1
            if pos == p:
                pos = 0
            self.pos = pos
            if self.count < p:
                self.count = count = self.count + 1
                if count < p:
                    self.pv, self.vol = total_pv, total_v
                    return None
            self.pv = total_pv - self.buf_pv[pos]
            self.vol = total_v - self.buf_v[pos]
        v = tp
        if total_v != 0.0:
            v = total_pv / total_v
        self.value = v
        return v

    def _arguments(self) -> str:
        return "" if self.period is None else str(self.period)


Indicator.registry.pop("", None)  # the private bases _Extreme and _Deviation


def sma(period: int) -> SMA:
    """A simple moving average over ``period`` values."""
    return SMA(period)


def ema(period: int) -> EMA:
    """An exponential moving average over ``period`` values."""
    return EMA(period)


def wma(period: int) -> WMA:
    """A linearly weighted moving average over ``period`` values."""
    return WMA(period)


def rsi(period: int = 14) -> RSI:
    """Wilder's relative strength index over ``period`` changes."""
    return RSI(period)


def macd(fast: int = 12, slow: int = 26, signal: int = 9) -> MACD:
    """MACD with ``fast``/``slow`` EMAs and a ``signal`` EMA; update returns three values."""
    return MACD(fast, slow, signal)


def stddev(period: int, nbdev: float = 1.0) -> StdDev:
    """The population standard deviation over ``period`` values, times ``nbdev``."""
    return StdDev(period, nbdev)


def bbands(period: int = 20, up: float = 2.0, down: float | None = None) -> BBands:
    """Bollinger bands over ``period`` values, ``up``/``down`` deviations from the middle."""
    return BBands(period, up, down)


def atr(period: int = 14) -> ATR:
    """Wilder's average true range over ``period`` candles; update takes high, low, close."""
    return ATR(period)


def highest(period: int) -> Highest:
    """The highest of the last ``period`` values."""
    return Highest(period)


def lowest(period: int) -> Lowest:
    """The lowest of the last ``period`` values."""
    return Lowest(period)


def crossover() -> Crossover:
    """A detector of ``a`` crossing above ``b``; update takes ``a, b``."""
    return Crossover()


def crossunder() -> Crossunder:
    """A detector of ``a`` crossing below ``b``; update takes ``a, b``."""
    return Crossunder()


def roc(period: int = 10) -> ROC:
    """The rate of change in percent against ``period`` values ago."""
    return ROC(period)


def stoch(fastk: int = 5, slowk: int = 3, slowd: int = 3) -> Stoch:
    """The slow stochastic (%K, %D); update takes high, low, close."""
    return Stoch(fastk, slowk, slowd)


def obv() -> OBV:
    """On-balance volume; update takes close, volume."""
    return OBV()


def vwap(period: int | None = None) -> VWAP:
    """Volume-weighted average price, anchored at the first candle or over ``period`` candles;
    update takes high, low, close, volume."""
    return VWAP(period)
