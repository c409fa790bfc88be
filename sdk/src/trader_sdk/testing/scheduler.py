"""The scheduler conformance suite: the contract of :class:`trader.interfaces.Schedule`.

Subclass :class:`SchedulerConformance` in a test module and override two fixtures::

    import pytest
    from trader_sdk.testing.scheduler import SchedulerConformance

    class TestMyScheduler(SchedulerConformance):
        @pytest.fixture
        def schedule_factory(self):
            return lambda spec: MySchedule(**spec)

        @pytest.fixture
        def valid_specs(self):
            return [{"every": "5m"}, {"every": "1h", "end": 1_900_000_000_000}]

Every test runs against every spec. Test ids (``test_sc01_...``) are stable: cite them in bug
reports and never reuse a number for a different check. Properties are checked with hypothesis
over times in :attr:`SchedulerConformance.time_range_ms`; include a spec that ends inside that
range so the end-of-schedule checks run (otherwise ``test_sc07`` is skipped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader.interfaces import Schedule

__all__ = ["ScheduleFactory", "SchedulerConformance"]

#: Builds a schedule from one spec (the options a user writes in ``[schedules.<name>]``).
ScheduleFactory = Callable[[dict[str, Any]], Schedule]


class SchedulerConformance:
    """Checks a scheduler against the :class:`~trader.interfaces.Schedule` contract."""

    #: The times the properties are checked over: 2000-01-01 to 2100-01-01 (ms, UTC).
    time_range_ms: ClassVar[tuple[int, int]] = (946_684_800_000, 4_102_444_800_000)
    #: Hypothesis examples per spec and property.
    examples: ClassVar[int] = 60
    #: The most firings a window check looks at.
    window_limit: ClassVar[int] = 300

    @pytest.fixture
    def schedule_factory(self) -> ScheduleFactory:
        """Override: return a callable building a schedule from a spec dict."""
        pytest.fail("override the schedule_factory fixture to build your schedules")

    @pytest.fixture
    def valid_specs(self) -> list[dict[str, Any]]:
        """Override: return specs that must build, covering the scheduler's options."""
        pytest.fail("override the valid_specs fixture with specs of your scheduler")

    # helpers ---------------------------------------------------------------------------------

    def _schedules(
        self, schedule_factory: ScheduleFactory, valid_specs: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], Schedule]]:
        assert valid_specs, "valid_specs must name at least one spec"
        return [(spec, schedule_factory(dict(spec))) for spec in valid_specs]

    def _times(self) -> st.SearchStrategy[int]:
        low, high = self.time_range_ms
        return st.integers(min_value=low, max_value=high)

    def _settings(self) -> settings:
        return settings(
            max_examples=self.examples,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            deadline=None,
        )

    # tests -----------------------------------------------------------------------------------

    def test_sc01_every_valid_spec_builds_a_schedule(
        self, schedule_factory: ScheduleFactory, valid_specs: list[dict[str, Any]]
    ) -> None:
        for spec, schedule in self._schedules(schedule_factory, valid_specs):
            assert isinstance(schedule, Schedule), f"{spec}: built {schedule!r}, not a Schedule"

    def test_sc02_describe_is_one_non_empty_line(
        self, schedule_factory: ScheduleFactory, valid_specs: list[dict[str, Any]]
    ) -> None:
        for spec, schedule in self._schedules(schedule_factory, valid_specs):
            text = schedule.describe()
            assert isinstance(text, str), f"{spec}: describe() returned {text!r}"
            assert text.strip(), f"{spec}: describe() is empty"
            assert "\n" not in text, f"{spec}: describe() spans lines: {text!r}"

    def test_sc03_next_after_is_an_int_strictly_later(
        self, schedule_factory: ScheduleFactory, valid_specs: list[dict[str, Any]]
    ) -> None:
        for spec, schedule in self._schedules(schedule_factory, valid_specs):
            self._check_strictly_later(spec, schedule)

    def test_sc04_next_after_is_deterministic(
        self, schedule_factory: ScheduleFactory, valid_specs: list[dict[str, Any]]
    ) -> None:
        for spec, schedule in self._schedules(schedule_factory, valid_specs):
            self._check_deterministic(spec, schedule, schedule_factory(dict(spec)))

    def test_sc05_no_firing_is_skipped(
        self, schedule_factory: ScheduleFactory, valid_specs: list[dict[str, Any]]
    ) -> None:
        """For any t between two consecutive firings, next_after(t) is the second one; and
        once next_after gives None (ended), it does so for every later time."""
        for spec, schedule in self._schedules(schedule_factory, valid_specs):
            self._check_no_skips(spec, schedule)

    def test_sc06_firings_agree_with_next_after(
        self, schedule_factory: ScheduleFactory, valid_specs: list[dict[str, Any]]
    ) -> None:
        for spec, schedule in self._schedules(schedule_factory, valid_specs):
            self._check_firings(spec, schedule)

    def test_sc07_an_ended_schedule_stays_ended(
        self, schedule_factory: ScheduleFactory, valid_specs: list[dict[str, Any]]
    ) -> None:
        """Once next_after returns None it does so for every later time, and the last firing
        is found from just before the end."""
        ending = 0
        for spec, schedule in self._schedules(schedule_factory, valid_specs):
            if schedule.next_after(self.time_range_ms[1]) is None:
                ending += 1
                self._check_end(spec, schedule)
        if not ending:
            pytest.skip("no spec in valid_specs ends within time_range_ms")

    # the properties, one schedule at a time --------------------------------------------------

    def _check_strictly_later(self, spec: dict[str, Any], schedule: Schedule) -> None:
        @self._settings()
        @given(time=self._times())
        def check(time: int) -> None:
            found = schedule.next_after(time)
            if found is None:
                return
            assert type(found) is int, f"{spec}: next_after({time}) = {found!r}, not an int"
            assert found > time, f"{spec}: next_after({time}) = {found} is not later"

        check()

    def _check_deterministic(
        self, spec: dict[str, Any], schedule: Schedule, twin: Schedule
    ) -> None:
        @self._settings()
        @given(times=st.lists(self._times(), min_size=1, max_size=5))
        def check(times: list[int]) -> None:
            first = [schedule.next_after(t) for t in times]
            again = [schedule.next_after(t) for t in reversed(times)][::-1]
            other = [twin.next_after(t) for t in times]
            assert first == again, f"{spec}: answers depend on the order of calls"
            assert first == other, f"{spec}: two schedules built from one spec disagree"

        check()

    def _check_no_skips(self, spec: dict[str, Any], schedule: Schedule) -> None:
        high = self.time_range_ms[1]

        @self._settings()
        @given(time=self._times(), data=st.data())
        def check(time: int, data: st.DataObject) -> None:
            first = schedule.next_after(time)
            if first is None:
                later = data.draw(st.integers(min_value=time, max_value=high), "later")
                assert schedule.next_after(later) is None, (
                    f"{spec}: next_after({time}) is None (ended) but next_after({later}) = "
                    f"{schedule.next_after(later)}"
                )
                return
            before = data.draw(st.integers(min_value=time, max_value=first - 1), "before")
            assert schedule.next_after(before) == first, (
                f"{spec}: next_after({time}) = {first} but next_after({before}) = "
                f"{schedule.next_after(before)}"
            )
            second = schedule.next_after(first)
            if second is None:
                return
            assert second > first, f"{spec}: next_after({first}) = {second} is not later"
            between = data.draw(st.integers(min_value=first, max_value=second - 1), "between")
            assert schedule.next_after(between) == second, (
                f"{spec}: firings {first} and {second} are consecutive but "
                f"next_after({between}) = {schedule.next_after(between)}"
            )

        check()

    def _check_firings(self, spec: dict[str, Any], schedule: Schedule) -> None:
        limit = self.window_limit

        @self._settings()
        @given(
            start=self._times(),
            span=st.integers(min_value=0, max_value=40 * 86_400_000),
            data=st.data(),
        )
        def check(start: int, span: int, data: st.DataObject) -> None:
            end = start + span
            times = schedule.firings(start, end, limit=limit)
            expected: list[int] = []
            current = schedule.next_after(start)
            while current is not None and current <= end and len(expected) < limit:
                expected.append(current)
                current = schedule.next_after(current)
            assert times == expected, f"{spec}: firings({start}, {end}) disagree with next_after"
            assert all(start < t <= end for t in times), f"{spec}: firing outside ({start}, {end}]"
            assert times == sorted(set(times)), f"{spec}: firings are not strictly increasing"
            if len(times) < limit:
                middle = data.draw(st.integers(min_value=start, max_value=end), "middle")
                joined = schedule.firings(start, middle) + schedule.firings(middle, end)
                assert joined == times, f"{spec}: firings split at {middle} lose or repeat some"

        check()

    def _check_end(self, spec: dict[str, Any], schedule: Schedule) -> None:
        low, high = self.time_range_ms
        if schedule.next_after(low) is None:
            over = low
        else:
            # Bisect for the first time from which the schedule is over; "over" must be
            # monotonic in time, which the property below then tests beyond it.
            before, over = low, high
            while over - before > 1:
                middle = (before + over) // 2
                if schedule.next_after(middle) is None:
                    over = middle
                else:
                    before = middle
            last = schedule.next_after(over - 1)
            assert last == over, (
                f"{spec}: next_after({over - 1}) = {last}, yet next_after({over}) is None: "
                "the last firing is skipped or the end is not final"
            )
            assert schedule.firings(over - 1, high) == [over], f"{spec}: firings after the end"

        @self._settings()
        @given(time=st.integers(min_value=over, max_value=high + 10 * 365 * 86_400_000))
        def check(time: int) -> None:
            assert schedule.next_after(time) is None, (
                f"{spec}: next_after({time}) is not None after the schedule ended at {over}"
            )
            assert schedule.firings(time, time + 86_400_000) == [], f"{spec}: fires after its end"

        check()
