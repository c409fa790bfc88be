"""Candle timeframes: ``1m`` … ``1M``, candle boundaries and conversions.

Minutes, hours and days are fixed durations aligned to the Unix epoch; weeks open on Monday 00:00
UTC; months open on the first day of a calendar month, 00:00 UTC. All times are integer
milliseconds since the epoch, UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import total_ordering
from typing import Final

from trader.errors import ModelError

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
WEEK_MS: Final = 7 * DAY_MS
#: 1970-01-05, the first Monday after the epoch: weekly candles are aligned to it.
_MONDAY_MS: Final = 4 * DAY_MS

_UNIT_MS: Final = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": WEEK_MS}
_UNIT_RANK: Final = {"m": 0, "h": 1, "d": 2, "w": 3, "M": 4}
_UNIT_NAMES: Final = {"m": "minute", "h": "hour", "d": "day", "w": "week", "M": "month"}
_PATTERN: Final = re.compile(r"^([1-9][0-9]{0,3})([mhdDwWM])$")
#: Allowed multiples per unit: each must tile the next unit up so candles stay aligned.
_ALLOWED: Final = {
    "m": frozenset(n for n in range(1, 60) if 60 % n == 0),
    "h": frozenset(n for n in range(1, 24) if 24 % n == 0),
    "d": frozenset(range(1, 32)),
    "w": frozenset(range(1, 5)),
    "M": frozenset(n for n in range(1, 13) if 12 % n == 0),
}
_HINT: Final = {"m": (60, "h"), "h": (24, "d"), "d": (7, "w")}


@total_ordering
@dataclass(frozen=True, slots=True)
class Timeframe:
    """A candle width such as ``5m``, ``4h``, ``1d``, ``1w`` or ``1M``.

    Build one with :meth:`parse`; ``str(tf)`` gives the canonical spelling back. Timeframes
    order by their nominal length (a month counts as 30 days for ordering only).
    """

    count: int
    unit: str

    @classmethod
    def parse(cls, text: str | Timeframe) -> Timeframe:
        """Parse ``"15m"``, ``"1h"``, ``"1D"`` (Bitfinex spelling of ``1d``), ``"1M"``.

        Raises :class:`~trader.errors.ModelError` naming the allowed values when ``text`` is not
        a timeframe, or is one that does not tile evenly (``7m``; use ``5m``), or has a canonical
        spelling in a larger unit (``60m``; use ``1h``).
        """
        if isinstance(text, Timeframe):
            return text
        match = _PATTERN.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ModelError(
                f"invalid timeframe {text!r}: expected a count and a unit, such as 1m, 15m, 1h, "
                "4h, 1d, 1w or 1M (m minute, h hour, d day, w week, M month)"
            )
        count, unit = int(match.group(1)), match.group(2)
        unit = {"D": "d", "W": "w"}.get(unit, unit)
        if count not in _ALLOWED[unit]:
            hint = ""
            if unit in _HINT and count % _HINT[unit][0] == 0:
                hint = f"; did you mean {count // _HINT[unit][0]}{_HINT[unit][1]}?"
            allowed = ", ".join(str(n) for n in sorted(_ALLOWED[unit]))
            raise ModelError(
                f"invalid timeframe {text!r}: a {_UNIT_NAMES[unit]} timeframe must be one of "
                f"{allowed} {_UNIT_NAMES[unit]}s so candles tile evenly{hint}"
            )
        return cls(count, unit)

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    def __repr__(self) -> str:
        return f"Timeframe({str(self)!r})"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Timeframe):
            return NotImplemented
        return self._sort_key() < other._sort_key()

    def _sort_key(self) -> tuple[int, int]:
        return (self.nominal_ms, _UNIT_RANK[self.unit])

    @property
    def is_calendar(self) -> bool:
        """True for months, whose length varies; every other timeframe has a fixed length."""
        return self.unit == "M"

    @property
    def duration_ms(self) -> int:
        """The fixed length in milliseconds. Raises for months: use :meth:`next_open`."""
        if self.unit == "M":
            raise ModelError(f"{self} has no fixed length; use next_open() to step months")
        return self.count * _UNIT_MS[self.unit]

    @property
    def nominal_ms(self) -> int:
        """The length in milliseconds, taking a month as 30 days (for ordering and estimates)."""
        if self.unit == "M":
            return self.count * 30 * DAY_MS
        return self.count * _UNIT_MS[self.unit]

    def floor(self, time_ms: int) -> int:
        """Return the open time of the candle that contains ``time_ms``."""
        if self.unit == "M":
            moment = datetime.fromtimestamp(time_ms // 1000, tz=timezone.utc)
            index = (moment.year - 1970) * 12 + moment.month - 1
            index -= index % self.count
            return _month_start_ms(index)
        if self.unit == "w":
            size = self.duration_ms
            return time_ms - (time_ms - _MONDAY_MS) % size
        return time_ms - time_ms % self.duration_ms

    def next_open(self, time_ms: int) -> int:
        """Return the open time of the candle after the one that contains ``time_ms``.

        This is also the close time of the candle that contains ``time_ms``.
        """
        start = self.floor(time_ms)
        if self.unit == "M":
            moment = datetime.fromtimestamp(start // 1000, tz=timezone.utc)
            index = (moment.year - 1970) * 12 + moment.month - 1 + self.count
            return _month_start_ms(index)
        return start + self.duration_ms

    def is_aligned(self, time_ms: int) -> bool:
        """True when ``time_ms`` is the open time of a candle of this timeframe."""
        return self.floor(time_ms) == time_ms

    def open_times(self, start_ms: int, end_ms: int) -> list[int]:
        """Every candle open time in ``[start_ms, end_ms)``, starting at the first aligned one."""
        first = self.floor(start_ms)
        if first < start_ms:
            first = self.next_open(first)
        if self.unit != "M":
            return list(range(first, end_ms, self.duration_ms)) if first < end_ms else []
        times = []
        while first < end_ms:
            times.append(first)
            first = self.next_open(first)
        return times

    def divides(self, higher: Timeframe) -> bool:
        """True when candles of ``higher`` can be built exactly from candles of this timeframe.

        That holds when every ``higher`` boundary is also a boundary of this timeframe: ``1m``
        divides ``1h``; ``1d`` divides ``1w`` and ``1M``; ``1w`` divides neither ``1M`` nor
        ``14d``.
        """
        if higher.unit == "M":
            if self.unit == "M":
                return higher.count % self.count == 0
            return self.unit != "w" and DAY_MS % self.duration_ms == 0
        if self.unit == "M":
            return False
        if higher.unit == "w" and self.unit != "w":
            return DAY_MS % self.duration_ms == 0
        if self.unit == "w" and higher.unit != "w":
            return False
        return higher.duration_ms % self.duration_ms == 0

    def candles_per(self, higher: Timeframe) -> int:
        """How many candles of this timeframe make one ``higher`` candle (fixed lengths only)."""
        if not self.divides(higher):
            raise ModelError(f"{self} candles do not tile {higher} candles")
        return higher.duration_ms // self.duration_ms


def _month_start_ms(month_index: int) -> int:
    year, month = divmod(month_index, 12)
    start = datetime(1970 + year, month + 1, 1, tzinfo=timezone.utc)
    return int(start.timestamp()) * 1000


def parse_timeframe(text: str | Timeframe) -> Timeframe:
    """Shorthand for :meth:`Timeframe.parse`."""
    return Timeframe.parse(text)
