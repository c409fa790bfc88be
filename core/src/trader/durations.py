"""Durations as people write them: ``500ms``, ``30s``, ``5m``, ``1h30m``, ``2d``, ``1w``.

Units are ``ms`` (milliseconds), ``s`` (seconds), ``m`` (minutes), ``h`` (hours), ``d`` (days)
and ``w`` (weeks), all fixed lengths. Months have no fixed length and are refused: schedule by
month with a cron expression or a ``1M`` candle close instead.
"""

from __future__ import annotations

import re
from typing import Final

from trader.errors import ModelError

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
WEEK_MS: Final = 7 * DAY_MS

_UNIT_MS: Final = {
    "ms": 1,
    "s": SECOND_MS,
    "m": MINUTE_MS,
    "h": HOUR_MS,
    "d": DAY_MS,
    "w": WEEK_MS,
}
_PART: Final = re.compile(r"\s*([0-9]+)\s*(ms|s|m|h|d|w)\s*")
_EXAMPLES: Final = "such as 500ms, 30s, 5m, 1h30m, 2d or 1w"
#: Beyond this a duration is certainly a typo (about 30,000 years).
_MAX_MS: Final = 10**15


def parse_duration_ms(text: str) -> int:
    """Return the length of ``text`` in milliseconds (zero allowed, never negative).

    ``text`` is one or more number-and-unit parts, largest first or not: ``"90s"``, ``"1h30m"``
    and ``"1d 12h"`` all work. Raises :class:`~trader.errors.ModelError` saying what was wrong
    and what a valid duration looks like when ``text`` is anything else (an empty string, a
    negative or fractional number, a month ``M`` or an unknown unit).
    """
    if not isinstance(text, str):
        raise ModelError(f"invalid duration {text!r}: expected a string {_EXAMPLES}")
    stripped = text.strip()
    if not stripped:
        raise ModelError(f"invalid duration {text!r}: it is empty; write one {_EXAMPLES}")
    total = 0
    position = 0
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            raise ModelError(_explain(text, stripped[position:], at_start=position == 0))
        total += int(match.group(1)) * _UNIT_MS[match.group(2)]
        position = match.end()
    if total > _MAX_MS:
        raise ModelError(f"invalid duration {text!r}: it is too long to be meant")
    return total


def _explain(text: str, rest: str, *, at_start: bool) -> str:
    if re.search(r"[0-9]\s*(M|mo|mon|months?)\b", text):
        reason = "months have no fixed length; use a cron expression or a 1M candle close"
    elif at_start and rest.lstrip().startswith("-"):
        reason = "durations cannot be negative"
    elif re.match(r"\s*[0-9]*\.[0-9]", rest):
        reason = "use whole numbers of a smaller unit instead of fractions (90m, not 1.5h)"
    elif re.match(r"\s*[0-9]+\s*$", rest):
        reason = "a unit is missing"
    else:
        reason = f"cannot read {rest.strip()!r}"
    return f"invalid duration {text!r}: {reason}; write a count and a unit {_EXAMPLES}"


def format_duration_ms(duration_ms: int) -> str:
    """Write ``duration_ms`` back in the shortest form :func:`parse_duration_ms` reads.

    ``90_000`` gives ``"1m30s"``, ``3_600_000`` gives ``"1h"`` and ``0`` gives ``"0s"``.
    """
    if duration_ms < 0:
        raise ModelError(f"cannot format a negative duration ({duration_ms} ms)")
    if duration_ms == 0:
        return "0s"
    parts: list[str] = []
    remaining = duration_ms
    for unit in ("w", "d", "h", "m", "s", "ms"):
        count, remaining = divmod(remaining, _UNIT_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
