"""Incremental indicators for Python strategies, the same as the Lua runtime's ``ta``.

``ta.sma(period)``, ``ta.ema(period)`` and ``ta.rsi(period)`` return an indicator;
``indicator.update(x)`` feeds one value in O(1) and returns the current reading, or ``None``
while the indicator is warming up; ``indicator.value`` holds the last reading. The arithmetic is
done in the same order as the Lua versions, so both runtimes give the same numbers bit for bit.
Values are taken as Python floats (``float(x)``: exact for NumPy scalars) and readings are
Python floats.
EMA is seeded with the simple average of the first ``period`` values and RSI uses Wilder's
smoothing, both as TA-Lib computes them.

Indicators keep their state in plain numbers and lists, so they can live in ``ctx.state`` and
travel in snapshots.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["EMA", "RSI", "SMA", "Indicator", "ema", "rsi", "sma"]


def _period(name: str, period: object) -> int:
    if (
        isinstance(period, bool)
        or not isinstance(period, (int, float))
        or not 1 <= period <= 1_000_000
        or period % 1 != 0
    ):
        raise ValueError(f"ta.{name}: period must be a whole number from 1 to 1000000")
    return int(period)


class Indicator:
    """Base of the ``ta`` indicators: a kind name and the fields a snapshot carries."""

    __slots__ = ("period", "value")
    kind: ClassVar[str] = ""
    #: the attributes saved by snapshots, in order
    fields: ClassVar[tuple[str, ...]] = ()
    registry: ClassVar[dict[str, type[Indicator]]] = {}

    period: int
    value: float | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Indicator.registry[cls.kind] = cls

    def update(self, x: float) -> float | None:  # pragma: no cover - every kind overrides it
        """Feed one value; the current reading, or ``None`` while warming up."""
        raise NotImplementedError

    def dump(self) -> dict[str, Any]:
        """The indicator's fields (plain numbers and lists), for snapshots."""
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
        return indicator

    def __repr__(self) -> str:
        return f"ta.{self.kind}({self.period}) value={self.value!r}"


class SMA(Indicator):
    """Simple moving average: a running sum over a ring buffer (the way TA-Lib sums)."""

    __slots__ = ("buf", "count", "pos", "sum")
    kind = "sma"
    fields = ("period", "value", "pos", "count", "sum", "buf")

    def __init__(self, period: int) -> None:
        self.period = _period("sma", period)
        self.value = None
        self.pos = 0
        self.count = 0
        self.sum = 0.0
        self.buf: list[float] = [0.0] * self.period

    def update(self, x: float) -> float | None:
        """Feed one value; the average of the last ``period`` values, ``None`` before that."""
        x = float(x)  # NumPy scalars (candles.close[-1]) compute several times slower
        p = self.period
        pos = self.pos
        buf = self.buf
        old = buf[pos]
        buf[pos] = x
        pos += 1
        self.pos = 0 if pos == p else pos
        if self.count >= p:
            self.sum = total = self.sum - old + x
            v = total / p
            self.value = v
            return v
        self.count = count = self.count + 1
        self.sum = total = self.sum + x
        if count == p:
            v = total / p
            self.value = v
            return v
        return None


class EMA(Indicator):
    """Exponential moving average seeded with the simple average of the first ``period`` values,
    then ``value = (x - value) * k + value`` with ``k = 2 / (period + 1)``."""

    __slots__ = ("count", "k", "sum")
    kind = "ema"
    fields = ("period", "value", "k", "count", "sum")

    def __init__(self, period: int) -> None:
        self.period = _period("ema", period)
        self.value = None
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


class RSI(Indicator):
    """Relative strength index with Wilder's smoothing as TA-Lib computes it; the first reading
    needs ``period + 1`` values."""

    __slots__ = ("count", "gain", "loss", "prev")
    kind = "rsi"
    fields = ("period", "value", "prev", "count", "gain", "loss")

    def __init__(self, period: int) -> None:
        self.period = _period("rsi", period)
        self.value = None
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
        if total != 0:
            v = 100 * (gain / total)
        self.value = v
        return v


def sma(period: int) -> SMA:
    """A simple moving average over ``period`` values."""
    return SMA(period)


def ema(period: int) -> EMA:
    """An exponential moving average over ``period`` values."""
    return EMA(period)


def rsi(period: int) -> RSI:
    """Wilder's relative strength index over ``period`` changes."""
    return RSI(period)
