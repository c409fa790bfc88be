"""The built-in schedulers: ``interval``, ``cron`` and ``candle_close`` (default plugin)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trader.default_plugins.schedulers import (
    CandleCloseOptions,
    CandleCloseSchedule,
    CronOptions,
    CronSchedule,
    IntervalOptions,
    IntervalSchedule,
)
from trader.durations import format_duration_ms, parse_duration_ms
from trader.errors import ModelError
from trader.interfaces import PluginContext, Schedule
from trader.plugins import PluginHost, get_plugin_manager
from trader.registry import Kind
from trader_sdk.testing.scheduler import ScheduleFactory, SchedulerConformance

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def factory_for(name: str, tmp_path: Path) -> ScheduleFactory:
    """Build schedules the way the host does: the registered options model, then the factory."""
    registration = get_plugin_manager().registry.get(Kind.SCHEDULER, name)
    context = PluginContext(data_dir=tmp_path, config_dir=tmp_path)
    assert registration.options is not None

    def build(spec: dict[str, Any]) -> Schedule:
        options = registration.options.model_validate(spec)  # type: ignore[union-attr]
        schedule = registration.build(options, context)
        assert isinstance(schedule, Schedule)
        return schedule

    return build


# the conformance suite, for each built-in --------------------------------------------------


class TestIntervalConformance(SchedulerConformance):
    @pytest.fixture
    def schedule_factory(self, tmp_path: Path) -> ScheduleFactory:
        return factory_for("interval", tmp_path)

    @pytest.fixture
    def valid_specs(self) -> list[dict[str, Any]]:
        return [
            {"every": "5m"},
            {"every": "1h", "offset": "15m"},
            {"every": "500ms"},
            {"every": "7s", "offset": "3s"},
            {"every": "1w"},
            {"every": "90m", "end": 2_000_000_000_000},
            {"every": "1d", "start": "2030-01-01", "end": "2040-06-01T12:00:00Z"},
        ]


class TestCronConformance(SchedulerConformance):
    @pytest.fixture
    def schedule_factory(self, tmp_path: Path) -> ScheduleFactory:
        return factory_for("cron", tmp_path)

    @pytest.fixture
    def valid_specs(self) -> list[dict[str, Any]]:
        return [
            {"expression": "*/15 * * * *"},
            {"expression": "30 1 * * *", "timezone": "Europe/London"},
            {"expression": "0 * * * *", "timezone": "Europe/London"},
            {"expression": "*/20 1-2 * * *", "timezone": "America/New_York"},
            {"expression": "0 0 * * *", "timezone": "America/Sao_Paulo"},
            {"expression": "30 2 * * *", "timezone": "Australia/Lord_Howe"},
            {"expression": "0 0 29 2 *"},
            {"expression": "*/10 0 1 * * *", "timezone": "Europe/Berlin"},
            {"expression": "@daily", "timezone": "Asia/Kolkata"},
            {"expression": "0 9 * * mon-fri", "timezone": "Europe/London", "end": "2035-01-01"},
        ]


class TestCandleCloseConformance(SchedulerConformance):
    @pytest.fixture
    def schedule_factory(self, tmp_path: Path) -> ScheduleFactory:
        return factory_for("candle_close", tmp_path)

    @pytest.fixture
    def valid_specs(self) -> list[dict[str, Any]]:
        return [
            {"timeframe": "1m"},
            {"timeframe": "4h", "delay": "10s"},
            {"timeframe": "1d", "delay": "1m"},
            {"timeframe": "1w", "delay": "500ms"},
            {"timeframe": "1M", "delay": "30s"},
            {"timeframe": "3M"},
            {"timeframe": "1h", "start": 1_800_000_000_000, "end": 1_900_000_000_000},
        ]


# registration through the plugin host -----------------------------------------------------


def test_the_default_plugin_registers_the_three_schedulers() -> None:
    host = get_plugin_manager()
    schedulers = host.registry.entries[Kind.SCHEDULER]
    assert {"interval", "cron", "candle_close"} <= set(schedulers)
    expected: dict[str, type[Any]] = {
        "interval": IntervalOptions,
        "cron": CronOptions,
        "candle_close": CandleCloseOptions,
    }
    for name, options in expected.items():
        registration = schedulers[name]
        assert registration.plugin == "schedulers"
        assert registration.distribution == "trader"
        assert registration.options is options
        assert registration.summary
    info = host.plugin_info("schedulers")
    assert info is not None and info.problems == []
    assert info.registers == {"scheduler": ["candle_close", "cron", "interval"]}


def test_disabling_the_default_plugin_removes_the_schedulers() -> None:
    host = PluginHost(environ={"TRADER_DISABLE_PLUGINS": "schedulers"}).load()
    assert host.registry.names(Kind.SCHEDULER) == []


def test_factories_build_the_schedules(tmp_path: Path) -> None:
    assert isinstance(factory_for("interval", tmp_path)({"every": "5m"}), IntervalSchedule)
    assert isinstance(factory_for("cron", tmp_path)({"expression": "* * * * *"}), CronSchedule)
    built = factory_for("candle_close", tmp_path)({"timeframe": "1h"})
    assert isinstance(built, CandleCloseSchedule)


# durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", 500),
        ("30s", 30 * SECOND),
        ("5m", 5 * MINUTE),
        ("1h", HOUR),
        ("2d", 2 * DAY),
        ("1w", 7 * DAY),
        ("1h30m", 90 * MINUTE),
        (" 1d 12h ", 36 * HOUR),
        ("0s", 0),
    ],
)
def test_parse_duration_reads_counts_and_units(text: str, expected: int) -> None:
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "it is empty"),
        ("5", "a unit is missing"),
        ("1.5h", "use whole numbers"),
        ("-5m", "cannot be negative"),
        ("1M", "months have no fixed length"),
        ("5x", "cannot read '5x'"),
        ("5 minutes", "cannot read"),
    ],
)
def test_parse_duration_explains_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(ModelError, match="invalid duration") as raised:
        parse_duration_ms(text)
    assert fragment in str(raised.value)
    assert "\n" not in str(raised.value)


@given(st.integers(min_value=0, max_value=10**13))
def test_format_duration_round_trips(duration: int) -> None:
    assert parse_duration_ms(format_duration_ms(duration)) == duration


# interval ----------------------------------------------------------------------------------


def test_interval_fires_at_epoch_aligned_multiples() -> None:
    schedule = IntervalSchedule(5 * MINUTE)
    assert schedule.next_after(utc(2024, 1, 1, 0, 2)) == utc(2024, 1, 1, 0, 5)
    assert schedule.next_after(utc(2024, 1, 1, 0, 5)) == utc(2024, 1, 1, 0, 10)
    assert schedule.next_after(utc(2024, 1, 1, 0, 5) - 1) == utc(2024, 1, 1, 0, 5)
    # 7 minutes do not divide an hour: alignment is to the epoch, not to the hour.
    seven = IntervalSchedule(7 * MINUTE)
    fired = seven.next_after(utc(2024, 1, 1))
    assert fired is not None and fired % (7 * MINUTE) == 0
    assert fired - utc(2024, 1, 1) < 7 * MINUTE


def test_interval_offset_shifts_every_firing() -> None:
    schedule = IntervalSchedule(HOUR, 5 * MINUTE)
    start = utc(2024, 3, 1, 10, 30)
    assert schedule.firings(start, utc(2024, 3, 1, 13, 30)) == [
        utc(2024, 3, 1, 11, 5),
        utc(2024, 3, 1, 12, 5),
        utc(2024, 3, 1, 13, 5),
    ]
    assert schedule.next_after(utc(2024, 3, 1, 11, 4, 59)) == utc(2024, 3, 1, 11, 5)


def test_interval_options_accept_sub_second_and_compound_durations() -> None:
    options = IntervalOptions.model_validate({"every": "1h30m", "offset": "500ms"})
    assert (options.every_ms, options.offset_ms) == (90 * MINUTE, 500)
    schedule = IntervalSchedule(options.every_ms, options.offset_ms)
    assert schedule.describe() == "every 1h30m + 500ms"


def test_interval_start_and_end_are_inclusive_and_end_is_final() -> None:
    options = IntervalOptions.model_validate(
        {"every": "5m", "start": "2024-01-01T00:03:00Z", "end": "2024-01-01T00:20:00Z"}
    )
    schedule = IntervalSchedule(5 * MINUTE, start_ms=options.start, end_ms=options.end)
    assert schedule.firings(utc(2023, 12, 31), utc(2024, 1, 2)) == [
        utc(2024, 1, 1, 0, 5),
        utc(2024, 1, 1, 0, 10),
        utc(2024, 1, 1, 0, 15),
        utc(2024, 1, 1, 0, 20),
    ]
    assert schedule.next_after(utc(2024, 1, 1, 0, 20)) is None
    assert schedule.next_after(utc(2030, 1, 1)) is None
    aligned = IntervalSchedule(5 * MINUTE, start_ms=utc(2024, 1, 1, 0, 5))
    assert aligned.next_after(utc(2020, 1, 1)) == utc(2024, 1, 1, 0, 5)
    assert "from 2024-01-01T00:03:00Z until 2024-01-01T00:20:00Z" in schedule.describe()


@pytest.mark.parametrize(
    "value",
    [
        1_704_067_200_000,
        "2024-01-01",
        "2024-01-01T00:00:00Z",
        "2024-01-01T01:00:00+01:00",
        datetime(2024, 1, 1, tzinfo=timezone.utc),
        datetime(2024, 1, 1),
    ],
)
def test_window_times_accept_ms_iso_and_toml_datetimes(value: object) -> None:
    options = IntervalOptions.model_validate({"every": "1h", "start": value})
    assert options.start == utc(2024, 1, 1)


def test_window_times_accept_toml_dates() -> None:
    from datetime import date

    options = CronOptions.model_validate({"expression": "* * * * *", "end": date(2024, 1, 2)})
    assert options.end == utc(2024, 1, 2)


# candle_close ------------------------------------------------------------------------------


def test_candle_close_hourly_with_delay() -> None:
    schedule = CandleCloseSchedule("1h", 30 * SECOND)
    # At 00:00:00 the 23:00 candle has just closed: it fires 30 s later.
    assert schedule.next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 0, 0, 30)
    assert schedule.next_after(utc(2024, 1, 1, 0, 0, 30)) == utc(2024, 1, 1, 1, 0, 30)
    assert schedule.next_after(utc(2024, 1, 1, 0, 59, 59)) == utc(2024, 1, 1, 1, 0, 30)
    assert schedule.describe() == "at each 1h candle close + 30s"


def test_candle_close_daily() -> None:
    schedule = CandleCloseSchedule("1d", MINUTE)
    assert schedule.firings(utc(2024, 2, 28, 12), utc(2024, 3, 2, 12)) == [
        utc(2024, 2, 29, 0, 1),
        utc(2024, 3, 1, 0, 1),
        utc(2024, 3, 2, 0, 1),
    ]


def test_candle_close_weekly_closes_on_monday_utc() -> None:
    schedule = CandleCloseSchedule("1w", 5 * SECOND)
    fired = schedule.next_after(utc(2024, 1, 3, 15))  # a Wednesday
    assert fired == utc(2024, 1, 8, 0, 0, 5)
    assert datetime.fromtimestamp(fired // 1000, tz=timezone.utc).weekday() == 0
    assert schedule.next_after(fired) == utc(2024, 1, 15, 0, 0, 5)


def test_candle_close_monthly_follows_calendar_months() -> None:
    schedule = CandleCloseSchedule("1M", 30 * SECOND)
    assert schedule.firings(utc(2024, 1, 15), utc(2024, 5, 15)) == [
        utc(2024, 2, 1, 0, 0, 30),
        utc(2024, 3, 1, 0, 0, 30),
        utc(2024, 4, 1, 0, 0, 30),
        utc(2024, 5, 1, 0, 0, 30),
    ]
    # Between the close and the delay, the firing for that close is still ahead.
    assert schedule.next_after(utc(2024, 3, 1, 0, 0, 10)) == utc(2024, 3, 1, 0, 0, 30)
    quarterly = CandleCloseSchedule("3M")
    assert quarterly.next_after(utc(2024, 2, 10)) == utc(2024, 4, 1)


def test_candle_close_options_normalise_the_timeframe() -> None:
    options = CandleCloseOptions.model_validate({"timeframe": "1D", "delay": "2s"})
    assert (options.timeframe, options.delay_ms) == ("1d", 2 * SECOND)


# cron --------------------------------------------------------------------------------------


def test_cron_in_utc_fires_on_the_expression() -> None:
    schedule = CronSchedule("*/15 9-10 * * mon-fri")
    friday = utc(2024, 1, 5, 10, 50)
    assert schedule.next_after(friday) == utc(2024, 1, 8, 9, 0)
    assert schedule.firings(utc(2024, 1, 8, 9, 0), utc(2024, 1, 8, 10, 0)) == [
        utc(2024, 1, 8, 9, 15),
        utc(2024, 1, 8, 9, 30),
        utc(2024, 1, 8, 9, 45),
        utc(2024, 1, 8, 10, 0),
    ]
    assert schedule.describe() == "cron '*/15 9-10 * * mon-fri' (UTC)"


def test_cron_with_seconds_field_first() -> None:
    schedule = CronSchedule("*/20 0 12 * * *")
    assert schedule.firings(utc(2024, 6, 1), utc(2024, 6, 2)) == [
        utc(2024, 6, 1, 12, 0, 0),
        utc(2024, 6, 1, 12, 0, 20),
        utc(2024, 6, 1, 12, 0, 40),
    ]


def test_cron_daily_in_a_zone_uses_local_time() -> None:
    schedule = CronSchedule("0 9 * * *", "America/New_York")
    # 09:00 EST is 14:00 UTC in winter; 09:00 EDT is 13:00 UTC in summer.
    assert schedule.next_after(utc(2024, 1, 10)) == utc(2024, 1, 10, 14)
    assert schedule.next_after(utc(2024, 7, 10)) == utc(2024, 7, 10, 13)


def test_cron_hourly_across_london_dst_keeps_its_utc_rhythm() -> None:
    schedule = CronSchedule("0 * * * *", "Europe/London")
    # Clocks go forward at 01:00 UTC on 2024-03-31 (01:00 GMT -> 02:00 BST).
    assert schedule.firings(utc(2024, 3, 30, 23, 30), utc(2024, 3, 31, 3)) == [
        utc(2024, 3, 31, 0),  # 00:00 GMT
        utc(2024, 3, 31, 1),  # 02:00 BST (01:00 local never happens)
        utc(2024, 3, 31, 2),  # 03:00 BST
        utc(2024, 3, 31, 3),
    ]
    # Clocks go back at 01:00 UTC on 2024-10-27 (02:00 BST -> 01:00 GMT): 01:00 local
    # happens twice and the hourly job runs both times.
    assert schedule.firings(utc(2024, 10, 26, 22, 30), utc(2024, 10, 27, 3)) == [
        utc(2024, 10, 26, 23),  # 00:00 BST
        utc(2024, 10, 27, 0),  # 01:00 BST
        utc(2024, 10, 27, 1),  # 01:00 GMT
        utc(2024, 10, 27, 2),  # 02:00 GMT
        utc(2024, 10, 27, 3),
    ]


def test_cron_at_a_fixed_time_across_london_dst_fires_once_a_day() -> None:
    schedule = CronSchedule("30 1 * * *", "Europe/London")
    # Spring: 01:30 does not exist on 2024-03-31; it fires when clocks jump, 02:00 BST.
    assert schedule.firings(utc(2024, 3, 29, 12), utc(2024, 4, 2, 12)) == [
        utc(2024, 3, 30, 1, 30),  # 01:30 GMT
        utc(2024, 3, 31, 1, 0),  # 02:00 BST, the moment 01:30 is skipped
        utc(2024, 4, 1, 0, 30),  # 01:30 BST
        utc(2024, 4, 2, 0, 30),
    ]
    # Autumn: 01:30 happens twice on 2024-10-27; it fires at the first, 01:30 BST.
    assert schedule.firings(utc(2024, 10, 25, 12), utc(2024, 10, 29, 12)) == [
        utc(2024, 10, 26, 0, 30),  # 01:30 BST
        utc(2024, 10, 27, 0, 30),  # 01:30 BST; not again at 01:30 GMT
        utc(2024, 10, 28, 1, 30),  # 01:30 GMT
        utc(2024, 10, 29, 1, 30),
    ]
    # Starting inside the repeated hour, after the first 01:30, does not fire the second.
    assert schedule.next_after(utc(2024, 10, 27, 1, 0)) == utc(2024, 10, 28, 1, 30)


def test_cron_wall_times_after_a_dst_change_are_in_the_new_offset() -> None:
    schedule = CronSchedule("0 9 * * *", "Europe/London")
    assert schedule.firings(utc(2024, 3, 30), utc(2024, 4, 1, 12)) == [
        utc(2024, 3, 30, 9),  # 09:00 GMT
        utc(2024, 3, 31, 8),  # 09:00 BST
        utc(2024, 4, 1, 8),
    ]


def _offset_changes(zone: str, year: int) -> list[int]:
    """Instants (ms) at which the zone's UTC offset changes in ``year``, by brute force."""
    tz = ZoneInfo(zone)

    def offset(moment: datetime) -> timedelta | None:
        return moment.astimezone(tz).utcoffset()

    changes = []
    moment = datetime(year, 1, 1, tzinfo=timezone.utc)
    while moment.year == year:
        later = moment + timedelta(hours=1)
        if offset(later) != offset(moment):
            while offset(moment) == offset(later):  # find the minute within the hour
                moment += timedelta(minutes=1)
            changes.append(int(moment.timestamp() * 1000))
        moment = later
    return changes


DST_CASES = [
    ("Europe/London", "30 1 * * *"),
    ("Europe/London", "*/20 * * * *"),
    ("Europe/London", "*/20 1 * * *"),
    ("America/New_York", "0 2 * * *"),
    ("Australia/Lord_Howe", "*/15 1-2 * * *"),  # a 30-minute daylight-saving shift
    ("America/Havana", "0 0 * * *"),  # changes at midnight local time
    ("Pacific/Apia", "0 12 * * *"),  # skipped 2011-12-30 whole
]


@pytest.mark.parametrize(("zone", "expression"), DST_CASES)
def test_cron_is_consistent_around_every_offset_change(zone: str, expression: str) -> None:
    """Near each offset change of 2011 and 2024, next_after from every minute (and from each
    firing and the instants beside it) agrees with the firings walked from two days before:
    the no-skip property where it is hardest to keep."""
    schedule = CronSchedule(expression, zone)
    changes = [change for year in (2011, 2024) for change in _offset_changes(zone, year)]
    assert changes, zone
    for change in changes:
        walked = schedule.firings(change - 2 * DAY, change + 3 * DAY)
        assert len(walked) >= 2, (zone, expression, change)
        times = set(range(change - 14 * HOUR, change + 14 * HOUR, MINUTE))
        times.update(t + d for t in walked[:-1] for d in (-1, 0, 1))
        for time in sorted(times):
            expected = next(f for f in walked if f > time)
            assert schedule.next_after(time) == expected, (zone, expression, time)


@settings(max_examples=300)
@given(
    case=st.sampled_from(DST_CASES),
    when=st.sampled_from(["2024-03-31T01:00:00+00:00", "2024-10-27T01:00:00+00:00"]),
    shift=st.integers(min_value=-3 * DAY, max_value=3 * DAY),
    data=st.data(),
)
def test_cron_never_skips_near_london_changes(
    case: tuple[str, str], when: str, shift: int, data: st.DataObject
) -> None:
    schedule = CronSchedule(case[1], case[0])
    time = int(datetime.fromisoformat(when).timestamp() * 1000) + shift
    first = schedule.next_after(time)
    assert first is not None and first > time
    second = schedule.next_after(first)
    assert second is not None and second > first
    between = data.draw(st.integers(min_value=first, max_value=second - 1))
    assert schedule.next_after(between) == second


def test_cron_daily_fires_each_local_day_exactly_once_for_years() -> None:
    """A job restricted to some hours fires once per local day, whatever the offset does."""
    for zone in ("Europe/London", "America/New_York", "Australia/Lord_Howe", "America/Havana"):
        for expression in ("30 1 * * *", "0 2 * * *", "0 0 * * *"):
            schedule = CronSchedule(expression, zone)
            times = schedule.firings(utc(2020, 1, 1), utc(2025, 1, 1))
            days = [datetime.fromtimestamp(t // 1000, tz=ZoneInfo(zone)).date() for t in times]
            assert len(days) == len(set(days)), (zone, expression)
            assert days[-1] - days[0] == timedelta(days=len(days) - 1), (zone, expression)


# invalid specs -----------------------------------------------------------------------------


def _problem(model: type[Any], spec: dict[str, Any]) -> tuple[tuple[int | str, ...], str]:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(spec)
    errors = raised.value.errors()
    assert len(errors) == 1, errors
    return tuple(errors[0]["loc"]), errors[0]["msg"]


@pytest.mark.parametrize(
    ("model", "spec", "where", "fragment"),
    [
        (IntervalOptions, {}, ("every",), "Field required"),
        (IntervalOptions, {"every": "5x"}, ("every",), "invalid duration '5x'"),
        (IntervalOptions, {"every": "0s"}, ("every",), "longer than zero"),
        (IntervalOptions, {"every": 300}, ("every",), "must be a string such as '30s'"),
        (IntervalOptions, {"every": "1M"}, ("every",), "months have no fixed length"),
        (IntervalOptions, {"every": "5m", "offset": "1.5m"}, ("offset",), "whole numbers"),
        (IntervalOptions, {"every": "5m", "offset": "10m"}, (), "offset '10m' must be shorter"),
        (IntervalOptions, {"every": "5m", "evry": "1m"}, ("evry",), "Extra inputs"),
        (IntervalOptions, {"every": "5m", "start": "soon"}, ("start",), "invalid time 'soon'"),
        (IntervalOptions, {"every": "5m", "start": True}, ("start",), "not True"),
        (
            IntervalOptions,
            {"every": "5m", "start": "2024-02-01", "end": "2024-01-01"},
            (),
            "end (2024-01-01T00:00:00Z) is before start (2024-02-01T00:00:00Z)",
        ),
        (CronOptions, {"expression": "61 * * * *"}, ("expression",), "out of range"),
        (CronOptions, {"expression": "* * * *"}, ("expression",), "it has 4 fields; expected 5"),
        (CronOptions, {"expression": "0 0 * * * * *"}, ("expression",), "it has 7 fields"),
        (CronOptions, {"expression": "0 0 30 2 *"}, ("expression",), "it never fires"),
        (CronOptions, {"expression": "0 0 * * funday"}, ("expression",), "is not acceptable"),
        (
            CronOptions,
            {"expression": "0 * * * *", "timezone": "Europe/Lundon"},
            ("timezone",),
            "unknown time zone 'Europe/Lundon': did you mean 'Europe/London'?",
        ),
        (
            CronOptions,
            {"expression": "0 * * * *", "timezone": "../../etc/passwd"},
            ("timezone",),
            "unknown time zone",
        ),
        (CronOptions, {"expression": "0 * * * *", "tz": "UTC"}, ("tz",), "Extra inputs"),
        (CandleCloseOptions, {"timeframe": "7m"}, ("timeframe",), "invalid timeframe '7m'"),
        (CandleCloseOptions, {"timeframe": "1h", "delay": "-5s"}, ("delay",), "negative"),
    ],
)
def test_invalid_specs_name_the_problem_and_the_key(
    model: type[Any], spec: dict[str, Any], where: tuple[str, ...], fragment: str
) -> None:
    location, message = _problem(model, spec)
    assert location == where
    assert fragment in message


def test_schedule_classes_reject_bad_arguments_directly() -> None:
    with pytest.raises(ModelError):
        IntervalSchedule(0)
    with pytest.raises(ModelError):
        IntervalSchedule(MINUTE, MINUTE)
    with pytest.raises(ModelError):
        CandleCloseSchedule("1h", -1)
    with pytest.raises(ModelError, match="unknown time zone"):
        CronSchedule("* * * * *", "Mars/Olympus")
    with pytest.raises(ModelError, match="invalid cron expression"):
        CronSchedule("not a cron")
    with pytest.raises(ModelError, match="before its start"):
        IntervalSchedule(MINUTE, start_ms=10, end_ms=5)


def test_cron_schedules_end_far_in_the_future() -> None:
    schedule = CronSchedule("0 0 1 1 *")
    assert schedule.next_after(utc(8999, 6, 1)) is None
    assert schedule.next_after(utc(2024, 6, 1)) == utc(2025, 1, 1)
