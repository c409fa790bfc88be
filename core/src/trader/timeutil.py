"""Parsing and formatting of times given by users: milliseconds since the epoch, UTC."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from trader.errors import DataError

_DIGITS = re.compile(r"^-?[0-9]+$")
#: Integers below this are taken as seconds when the unit is ``auto`` (1e11 s is year 5138,
#: 1e11 ms is March 1973, before any exchange's history).
_SECONDS_BELOW = 100_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_time(text: str, *, unit: str = "auto") -> int:
    """Parse a time as ms since the epoch, UTC.

    Accepts integers (``unit`` ``ms``, ``s``, or ``auto``: below 1e11 means seconds) and ISO
    8601 dates or date-times (``2024-01-01``, ``2024-01-01T12:30``, ``2024-01-01 12:30:00Z``,
    with an offset or naive meaning UTC). Raises :class:`~trader.errors.DataError` otherwise.
    """
    value = text.strip()
    if _DIGITS.match(value):
        number = int(value)
        if unit == "s" or (unit == "auto" and abs(number) < _SECONDS_BELOW):
            return number * 1000
        return number
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        delta = moment - _EPOCH
    except (ValueError, OverflowError):
        raise DataError(
            f"invalid time {text!r}: use an ISO date such as 2024-01-01 or 2024-01-01T12:00, "
            "or milliseconds since the epoch"
        ) from None
    return (delta.days * 86_400 + delta.seconds) * 1000 + round(delta.microseconds / 1000)


def format_time(time_ms: int) -> str:
    """Format ms since the epoch as ISO 8601 in UTC (``2024-01-01T00:00:00Z``).

    Never raises: a time outside the years 1..9999 comes back as its plain number of ms.
    """
    try:
        moment = _EPOCH + timedelta(milliseconds=int(time_ms))
    except (OverflowError, ValueError, TypeError):
        return str(time_ms)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")
