"""Default plugin ``schedulers``: the built-in ``interval``, ``cron`` and ``candle_close``.

Each is selected in a ``[schedules.<name>]`` table by ``scheduler = "<name>"``; the rest of the
table is the scheduler's options, checked on load (unknown keys are errors). Every scheduler also
takes an optional ``start`` and ``end`` (ms since the epoch, an ISO 8601 time, or a TOML
date-time; naive means UTC): firings before ``start`` or after ``end`` are dropped, and after
``end`` the schedule is over (:meth:`~trader.interfaces.Schedule.next_after` returns ``None``).

* ``interval``: ``every = "5m"`` fires at every multiple of ``every`` since the Unix epoch, plus
  ``offset`` (``every = "1h", offset = "5m"`` fires at 00:05, 01:05, ...).
* ``cron``: ``expression = "0 9 * * mon-fri"`` in ``timezone`` (IANA name, default UTC). Five
  fields (minute hour day-of-month month day-of-week), or six with seconds first.
* ``candle_close``: ``timeframe = "1h"`` fires when each candle closes (its successor opens),
  plus ``delay`` (give the exchange a moment to publish the final candle).
"""

from __future__ import annotations

import difflib
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Annotated, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator, model_validator
from typing_extensions import Self

from trader.durations import DAY_MS, format_duration_ms, parse_duration_ms
from trader.errors import DataError, ModelError
from trader.hookspecs import hookimpl
from trader.interfaces import PluginContext, Schedule
from trader.model import Timeframe
from trader.registry import Register
from trader.timeutil import format_time, parse_time

__all__ = [
    "CandleCloseOptions",
    "CandleCloseSchedule",
    "CronOptions",
    "CronSchedule",
    "IntervalOptions",
    "IntervalSchedule",
    "build_candle_close",
    "build_cron",
    "build_interval",
    "register_schedulers",
]


@hookimpl
def register_schedulers(register: Register) -> None:
    """Register ``interval``, ``cron`` and ``candle_close``."""
    register(
        "interval",
        build_interval,
        options=IntervalOptions,
        summary="fire every fixed duration, aligned to the epoch plus an offset",
    )
    register(
        "cron",
        build_cron,
        options=CronOptions,
        summary="fire on a cron expression in an IANA time zone (daylight-saving aware)",
    )
    register(
        "candle_close",
        build_candle_close,
        options=CandleCloseOptions,
        summary="fire when each candle of a timeframe closes, plus a delay",
    )


# time windows ------------------------------------------------------------------------------


def _time_ms(value: object) -> object:
    """Read ``start``/``end``: ms since the epoch, an ISO 8601 string, or a TOML date-time."""
    if value is None:
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected ms since the epoch or an ISO 8601 time, not {value!r}")
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return round(moment.timestamp() * 1000)
    if isinstance(value, date):
        midnight = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
        return round(midnight.timestamp() * 1000)
    if isinstance(value, str):
        try:
            return parse_time(value, unit="ms")
        except DataError as error:
            raise ValueError(str(error)) from None
    return value


TimeMs = Annotated[int, BeforeValidator(_time_ms)]


class _WindowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: TimeMs | None = None
    """No firing before this time (inclusive)."""
    end: TimeMs | None = None
    """No firing after this time (inclusive); the schedule is over afterwards."""

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(
                f"end ({format_time(self.end)}) is before start ({format_time(self.start)}); "
                "swap them or drop one"
            )
        return self


class _WindowedSchedule(Schedule):
    """A schedule whose firings are cut to ``[start_ms, end_ms]``."""

    def __init__(self, start_ms: int | None, end_ms: int | None) -> None:
        if start_ms is not None and end_ms is not None and end_ms < start_ms:
            raise ModelError(f"schedule end {end_ms} is before its start {start_ms}")
        self.start_ms = start_ms
        self.end_ms = end_ms

    def next_after(self, time_ms: int) -> int | None:
        """The first firing strictly after ``time_ms`` within the window, or ``None``."""
        if self.start_ms is not None and time_ms < self.start_ms:
            time_ms = self.start_ms - 1
        if self.end_ms is not None and time_ms >= self.end_ms:
            return None
        found = self._next_unbounded(time_ms)
        if found is None or (self.end_ms is not None and found > self.end_ms):
            return None
        return found

    def _next_unbounded(self, time_ms: int) -> int | None:
        raise NotImplementedError

    def _window_text(self) -> str:
        text = ""
        if self.start_ms is not None:
            text += f" from {format_time(self.start_ms)}"
        if self.end_ms is not None:
            text += f" until {format_time(self.end_ms)}"
        return text


def _duration(value: object, *, what: str, positive: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string such as '30s', '5m' or '1h', not {value!r}")
    length = parse_duration_ms(value)
    if positive and length == 0:
        raise ValueError(f"{what} must be longer than zero, not {value!r}")
    return value


# interval ------------------------------------------------------------------------------------


class IntervalOptions(_WindowOptions):
    """Options of the ``interval`` scheduler."""

    every: str
    """How often to fire: a duration such as ``"500ms"``, ``"30s"``, ``"5m"`` or ``"1h30m"``."""
    offset: str = "0s"
    """Shift from the epoch-aligned multiples of ``every``; shorter than ``every``."""

    @field_validator("every", mode="before")
    @classmethod
    def _check_every(cls, value: object) -> str:
        return _duration(value, what="every", positive=True)

    @field_validator("offset", mode="before")
    @classmethod
    def _check_offset(cls, value: object) -> str:
        return _duration(value, what="offset", positive=False)

    @model_validator(mode="after")
    def _offset_within_period(self) -> Self:
        if self.offset_ms >= self.every_ms:
            raise ValueError(
                f"offset {self.offset!r} must be shorter than every {self.every!r}: "
                "firings repeat every period, so use the remainder"
            )
        return self

    @property
    def every_ms(self) -> int:
        """``every`` in milliseconds."""
        return parse_duration_ms(self.every)

    @property
    def offset_ms(self) -> int:
        """``offset`` in milliseconds."""
        return parse_duration_ms(self.offset)


class IntervalSchedule(_WindowedSchedule):
    """Fire at ``k * every_ms + offset_ms`` for every integer ``k`` (ms since the epoch)."""

    def __init__(
        self,
        every_ms: int,
        offset_ms: int = 0,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> None:
        if every_ms <= 0:
            raise ModelError(f"interval must be longer than zero, not {every_ms} ms")
        if not 0 <= offset_ms < every_ms:
            raise ModelError(f"interval offset {offset_ms} ms must be in [0, {every_ms}) ms")
        super().__init__(start_ms, end_ms)
        self.every_ms = every_ms
        self.offset_ms = offset_ms

    def _next_unbounded(self, time_ms: int) -> int:
        return time_ms - (time_ms - self.offset_ms) % self.every_ms + self.every_ms

    def describe(self) -> str:
        """``every 5m``, with the offset and window when set."""
        text = f"every {format_duration_ms(self.every_ms)}"
        if self.offset_ms:
            text += f" + {format_duration_ms(self.offset_ms)}"
        return text + self._window_text()


def build_interval(options: IntervalOptions, context: PluginContext) -> IntervalSchedule:
    """Build an :class:`IntervalSchedule` from validated options."""
    return IntervalSchedule(
        options.every_ms, options.offset_ms, start_ms=options.start, end_ms=options.end
    )


# candle_close --------------------------------------------------------------------------------


class CandleCloseOptions(_WindowOptions):
    """Options of the ``candle_close`` scheduler."""

    timeframe: str
    """The candles whose close fires the schedule: ``"1m"`` … ``"1d"``, ``"1w"``, ``"1M"``."""
    delay: str = "0s"
    """How long after each close to fire, such as ``"5s"``."""

    @field_validator("timeframe", mode="before")
    @classmethod
    def _check_timeframe(cls, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"timeframe must be a string such as '1h', not {value!r}")
        return str(Timeframe.parse(value))

    @field_validator("delay", mode="before")
    @classmethod
    def _check_delay(cls, value: object) -> str:
        return _duration(value, what="delay", positive=False)

    @property
    def delay_ms(self) -> int:
        """``delay`` in milliseconds."""
        return parse_duration_ms(self.delay)


class CandleCloseSchedule(_WindowedSchedule):
    """Fire at each candle close of ``timeframe`` (the next candle's open) plus ``delay_ms``.

    Weekly candles close on Monday 00:00 UTC and monthly ones on the first of the month,
    00:00 UTC, as :class:`~trader.model.Timeframe` defines them.
    """

    def __init__(
        self,
        timeframe: Timeframe | str,
        delay_ms: int = 0,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> None:
        if delay_ms < 0:
            raise ModelError(f"candle close delay must not be negative, not {delay_ms} ms")
        super().__init__(start_ms, end_ms)
        self.timeframe = Timeframe.parse(timeframe)
        self.delay_ms = delay_ms

    def _next_unbounded(self, time_ms: int) -> int:
        return self.timeframe.next_open(time_ms - self.delay_ms) + self.delay_ms

    def describe(self) -> str:
        """``at each 1h candle close``, with the delay and window when set."""
        text = f"at each {self.timeframe} candle close"
        if self.delay_ms:
            text += f" + {format_duration_ms(self.delay_ms)}"
        return text + self._window_text()


def build_candle_close(options: CandleCloseOptions, context: PluginContext) -> CandleCloseSchedule:
    """Build a :class:`CandleCloseSchedule` from validated options."""
    return CandleCloseSchedule(
        options.timeframe, options.delay_ms, start_ms=options.start, end_ms=options.end
    )


# cron ----------------------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1)
#: Cron schedules fire between these times (years 1900 and 9000); beyond them there is no
#: firing, which keeps every calendar computation inside what ``datetime`` can represent.
_CRON_FIRST_MS: Final = -2_208_988_800_000
_CRON_LAST_MS: Final = 221_845_392_000_000
_FIELDS_HELP: Final = (
    "expected 5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, "
    "or @hourly, @daily, @weekly, @monthly, @yearly"
)
_UTC_NAMES: Final = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Etc/Universal", "Zulu"})


class CronOptions(_WindowOptions):
    """Options of the ``cron`` scheduler."""

    expression: str
    """Five fields (``"*/15 * * * *"``), or six with seconds first (``"30 0 * * * *"``)."""
    timezone: str = "UTC"
    """The IANA time zone the expression's wall-clock times are in, such as ``"Europe/London"``."""

    @field_validator("timezone", mode="before")
    @classmethod
    def _check_timezone(cls, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(
                f"timezone must be an IANA name such as 'Europe/London', not {value!r}"
            )
        _zone(value)
        return value

    @field_validator("expression", mode="before")
    @classmethod
    def _check_expression(cls, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expression must be a string such as '0 * * * *', not {value!r}")
        _compile(value)
        return value.strip()


def _zone(name: str) -> ZoneInfo:
    """The zone called ``name``, or a ``ModelError`` suggesting the closest real name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    from zoneinfo import available_timezones

    close = difflib.get_close_matches(name, sorted(available_timezones()), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "use an IANA name such as 'Europe/London'"
    raise ModelError(f"unknown time zone {name!r}: {hint}")


@lru_cache(maxsize=256)
def _compile(expression: str) -> tuple[bool, bool]:
    """Check a cron expression; return (has a seconds field, runs in every hour of the day)."""
    from croniter import CroniterError, croniter

    text = expression.strip()
    count = len(text.split())
    if not text.startswith("@") and count not in (5, 6):
        raise ModelError(
            f"invalid cron expression {expression!r}: it has {count} fields; {_FIELDS_HELP}"
        )
    try:
        expanded, _ = croniter.expand(text, second_at_beginning=True)
    except (CroniterError, ValueError, TypeError) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"invalid cron expression {expression!r}: {reason}; {_FIELDS_HELP}"
        ) from None
    hours = expanded[1]
    every_hour = hours == ["*"] or set(hours) == set(range(24))
    with_seconds = count == 6
    if _naive_next(text, with_seconds, 946_684_800_000) is None:
        raise ModelError(
            f"invalid cron expression {expression!r}: it never fires (no date matches it, "
            "such as 30 February)"
        )
    return with_seconds, every_hour


def _naive_next(expression: str, with_seconds: bool, wall_ms: int) -> int | None:
    """The first wall-clock time at or after ``wall_ms`` that the expression names.

    Wall-clock times are naive local times written as ms since 1970-01-01 00:00 (as if UTC).
    """
    from croniter import CroniterBadDateError, croniter

    start = _EPOCH + timedelta(milliseconds=wall_ms - 1)
    try:
        found = croniter(
            expression, start, ret_type=datetime, second_at_beginning=with_seconds
        ).get_next(datetime)
    except (CroniterBadDateError, OverflowError):
        return None
    return (found - _EPOCH) // timedelta(milliseconds=1)


class CronSchedule(_WindowedSchedule):
    """Fire at the wall-clock times a cron expression names, in an IANA time zone.

    Day-of-month and day-of-week combine as in classic cron (either matches when both are
    restricted). Daylight-saving changes follow the long-standing cron rules:

    * An expression that runs in every hour of the day (``*`` or ``*/1`` in the hour field)
      follows the clock: it fires in both copies of an hour that repeats when clocks go back,
      and not at all in an hour skipped when clocks go forward, so it keeps its rhythm in UTC.
    * An expression restricted to some hours fires each matching local time exactly once: at
      its first occurrence when the time repeats, and at the moment clocks go forward when the
      time is skipped (``30 1 * * *`` in Europe/London fires at 02:00 BST on the day clocks go
      forward).

    Firings lie between the years 1900 and 9000.
    """

    def __init__(
        self,
        expression: str,
        timezone: str = "UTC",
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> None:
        super().__init__(start_ms, end_ms)
        self.expression = expression.strip()
        self.timezone = timezone
        self._with_seconds, self._every_hour = _compile(self.expression)
        self._zone = _zone(timezone)
        self._fixed_offset = timezone in _UTC_NAMES

    def describe(self) -> str:
        """``cron '0 * * * *' (UTC)``, with the window when set."""
        return f"cron {self.expression!r} ({self.timezone})" + self._window_text()

    # The search walks forward through spans of constant UTC offset. Inside a span, a wall
    # time L maps to the instant L - offset; the span boundaries (offset changes) get the
    # daylight-saving rules of the class docstring.

    def _next_unbounded(self, time_ms: int) -> int | None:
        if time_ms >= _CRON_LAST_MS:
            return None
        span_start = max(time_ms, _CRON_FIRST_MS - 1) + 1
        offset = self._offset(span_start)
        wall = span_start + offset
        previous = self._last_change(span_start)
        if previous is not None and not self._every_hour:
            change, before = previous
            if before > offset:
                # Clocks went back just before: wall times up to the old clock already fired.
                wall = max(wall, change + before)
            elif change == span_start:
                # Clocks go forward right now: skipped wall times fire at this instant.
                skipped = self._match(change + before)
                if skipped is not None and skipped < change + offset:
                    return change
        while True:
            local = self._match(wall)
            if local is None:
                return None
            instant = local - offset
            if instant >= _CRON_LAST_MS:
                return None
            moved = self._next_change(span_start, instant, offset)
            if moved is None:
                return instant
            after = self._offset(moved)
            if after > offset:  # clocks go forward: wall times in [moved+offset, moved+after)
                if not self._every_hour and local < moved + after:
                    return moved
                wall = moved + after
            else:  # clocks go back: wall times in [moved+after, moved+offset) repeat
                wall = moved + (after if self._every_hour else offset)
            span_start, offset = moved, after

    def _match(self, wall_ms: int) -> int | None:
        return _naive_next(self.expression, self._with_seconds, wall_ms)

    def _offset(self, instant_ms: int) -> int:
        moment = datetime.fromtimestamp(instant_ms // 1000, tz=self._zone)
        delta = moment.utcoffset()
        return 0 if delta is None else delta // timedelta(milliseconds=1)

    def _next_change(self, after_ms: int, until_ms: int, offset: int) -> int | None:
        """The first instant in ``(after_ms, until_ms]`` whose offset differs from ``offset``.

        Probes a day apart, so it assumes a zone never changes its offset twice within a day
        (true of every zone in the tz database).
        """
        if self._fixed_offset:
            return None
        probe = after_ms
        while probe < until_ms:
            step = min(probe + DAY_MS, until_ms)
            if self._offset(step) != offset:
                return self._change_point(probe, step)
            probe = step
        return None

    def _last_change(self, instant_ms: int) -> tuple[int, int] | None:
        """The last offset change at or before ``instant_ms`` within two days, with the offset
        before it; ``None`` when the offset has not changed in that time."""
        if self._fixed_offset:
            return None
        earlier = instant_ms - 2 * DAY_MS
        before = self._offset(earlier)
        if before == self._offset(instant_ms):
            return None
        change = self._change_point(earlier, instant_ms)
        return change, self._offset(change - 1)

    def _change_point(self, low: int, high: int) -> int:
        """An instant in ``(low, high]`` where the offset becomes the offset at ``high``."""
        target = self._offset(high)
        while high - low > 1:
            middle = (low + high) // 2
            if self._offset(middle) == target:
                high = middle
            else:
                low = middle
        return high


def build_cron(options: CronOptions, context: PluginContext) -> CronSchedule:
    """Build a :class:`CronSchedule` from validated options."""
    return CronSchedule(
        options.expression, options.timezone, start_ms=options.start, end_ms=options.end
    )
