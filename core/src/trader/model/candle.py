"""Candles (OHLCV), one at a time and in columnar form, and the series they belong to."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from trader.errors import ModelError
from trader.model.market import parse_symbol
from trader.model.timeframe import Timeframe

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: The latest open time a candle may have: the last millisecond of the year 9999 (UTC), the
#: end of what ISO 8601 dates and Python's ``datetime`` can show.
MAX_TIME_MS: Final = 253_402_300_799_999


@dataclass(frozen=True, slots=True)
class Candle:
    """One candle: open time (ms, UTC), open, high, low, close, volume, and whether it is closed.

    A candle that is still forming (``closed=False``) may change until its period ends.
    """

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool = True

    def problem(self) -> str | None:
        """Return what is wrong with this candle, or ``None`` when it is sound."""
        return candle_problem(self.time, self.open, self.high, self.low, self.close, self.volume)

    def validated(self) -> Candle:
        """Return ``self``, or raise :class:`~trader.errors.ModelError` saying what is wrong."""
        problem = self.problem()
        if problem is not None:
            raise ModelError(problem)
        return self


def candle_problem(
    time: int, open_: float, high: float, low: float, close: float, volume: float
) -> str | None:
    """Say what is wrong with these candle values, or return ``None`` when they are sound.

    Sound means: finite prices above zero, ``low <= open, close <= high``, finite volume >= 0,
    and a time that is a whole number of milliseconds from 1970 to the end of 9999
    (:data:`MAX_TIME_MS`).
    """
    if time < 0:
        return f"time {time} is before 1970"
    if time > MAX_TIME_MS:
        return f"time {time} is after the year 9999 (the latest time is {MAX_TIME_MS})"
    for name, value in (("open", open_), ("high", high), ("low", low), ("close", close)):
        if not math.isfinite(value) or value <= 0:
            return f"{name} {value} is not a finite price above zero"
    if not math.isfinite(volume) or volume < 0:
        return f"volume {volume} is not a finite amount >= 0"
    if low > high:
        return f"low {low} is above high {high}"
    if not low <= open_ <= high:
        return f"open {open_} is outside low..high ({low}..{high})"
    if not low <= close <= high:
        return f"close {close} is outside low..high ({low}..{high})"
    return None


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """Names one candle series: exchange, unified symbol and timeframe."""

    exchange: str
    symbol: str
    timeframe: Timeframe

    def __post_init__(self) -> None:
        if not isinstance(self.timeframe, Timeframe):
            object.__setattr__(self, "timeframe", Timeframe.parse(self.timeframe))
        parse_symbol(self.symbol)
        if not self.exchange or not self.exchange.replace("_", "").replace("-", "").isalnum():
            raise ModelError(
                f"invalid exchange name {self.exchange!r}: use letters, digits, - and _"
            )

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol}:{self.timeframe}"


class CandleArrays:
    """Candles in columnar form, oldest first: the form backtests and bulk writes use.

    Each column is a NumPy array of the same length: ``time`` (int64 ms), ``open``, ``high``,
    ``low``, ``close``, ``volume`` (float64) and ``closed`` (bool).
    """

    __slots__ = ("close", "closed", "high", "low", "open", "time", "volume")

    COLUMNS = ("time", "open", "high", "low", "close", "volume", "closed")

    def __init__(
        self,
        time: npt.ArrayLike,
        open: npt.ArrayLike,
        high: npt.ArrayLike,
        low: npt.ArrayLike,
        close: npt.ArrayLike,
        volume: npt.ArrayLike,
        closed: npt.ArrayLike | None = None,
    ) -> None:
        self.time: IntArray = np.asarray(time, dtype=np.int64)
        self.open: FloatArray = np.asarray(open, dtype=np.float64)
        self.high: FloatArray = np.asarray(high, dtype=np.float64)
        self.low: FloatArray = np.asarray(low, dtype=np.float64)
        self.close: FloatArray = np.asarray(close, dtype=np.float64)
        self.volume: FloatArray = np.asarray(volume, dtype=np.float64)
        size = len(self.time)
        self.closed: BoolArray = (
            np.ones(size, dtype=np.bool_) if closed is None else np.asarray(closed, dtype=np.bool_)
        )
        for name in self.COLUMNS:
            if len(getattr(self, name)) != size:
                raise ModelError(f"column {name} has {len(getattr(self, name))} rows, not {size}")

    @classmethod
    def empty(cls) -> CandleArrays:
        """An empty set of columns."""
        return cls([], [], [], [], [], [])

    @classmethod
    def from_candles(cls, candles: Iterable[Candle]) -> CandleArrays:
        """Build columns from candle objects, keeping their order."""
        rows = [(c.time, c.open, c.high, c.low, c.close, c.volume, c.closed) for c in candles]
        return cls.from_rows(rows)

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> CandleArrays:
        """Build columns from ``(time, open, high, low, close, volume[, closed])`` rows."""
        if not rows:
            return cls.empty()
        columns = list(zip(*rows, strict=True))
        size = len(rows)

        def floats(index: int) -> FloatArray:
            return np.fromiter(columns[index], np.float64, size)

        return cls(
            np.fromiter(columns[0], np.int64, size),
            floats(1),
            floats(2),
            floats(3),
            floats(4),
            floats(5),
            np.fromiter(columns[6], np.bool_, size) if len(columns) > 6 else None,
        )

    def __len__(self) -> int:
        return len(self.time)

    def __getitem__(self, index: int) -> Candle:
        return Candle(
            int(self.time[index]),
            float(self.open[index]),
            float(self.high[index]),
            float(self.low[index]),
            float(self.close[index]),
            float(self.volume[index]),
            bool(self.closed[index]),
        )

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CandleArrays):
            return NotImplemented
        return all(np.array_equal(getattr(self, c), getattr(other, c)) for c in self.COLUMNS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if not len(self):
            return "CandleArrays(<empty>)"
        return f"CandleArrays({len(self)} candles, {self.time[0]}..{self.time[-1]})"

    def slice(self, start: int, stop: int) -> CandleArrays:
        """Rows ``start:stop`` as views (no copy)."""
        columns = [getattr(self, name)[start:stop] for name in self.COLUMNS]
        return CandleArrays(*columns)

    def to_candles(self) -> list[Candle]:
        """Every row as a :class:`Candle`."""
        return list(self)

    def rows(self) -> list[tuple[int, float, float, float, float, float, bool]]:
        """Every row as a plain tuple, the form database drivers take."""
        return list(
            zip(
                self.time.tolist(),
                self.open.tolist(),
                self.high.tolist(),
                self.low.tolist(),
                self.close.tolist(),
                self.volume.tolist(),
                self.closed.tolist(),
                strict=True,
            )
        )
