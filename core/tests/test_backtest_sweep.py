"""Sweeps: the grid, ranking, the backtest service, and the coordinator over a real bus.

The coordinator tests run a real broker (on a thread), real ``backtest`` services (in this
process, called through the broker), a real SQLite state store and the real Python strategy
runtime; ``tests/test_sweep_workers.py`` does the same with worker processes and kills them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import Awaitable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.app import open_candle_store, open_state_store
from trader.backtest.jobs import (
    SERVICE,
    BacktestJob,
    BacktestService,
    CandleCache,
    JobAck,
    JobOutcome,
    JobProgress,
    JobStarted,
    RunSettings,
    StrategySource,
    job_summary,
    run_job,
)
from trader.backtest.sweep import (
    LOWER_IS_BETTER,
    MAX_COMBINATIONS,
    METRICS,
    LocalCluster,
    SweepAxis,
    SweepCoordinator,
    SweepError,
    SweepOptions,
    SweepOutcome,
    SweepPlan,
    SweepProgress,
    SweepRow,
    build_axes,
    check_metric,
    combination_count,
    describe_exit,
    expand_grid,
    higher_is_better,
    sort_rows,
    sweep_axis,
)
from trader.bus.broker import Broker
from trader.bus.client import Client
from trader.bus.service import Service, ServiceHost, handler
from trader.config import load_config
from trader.errors import DataError, TraderError
from trader.interfaces import TaskRecord, TaskTransition
from trader.interfaces.strategy import Parameter
from trader.model import SeriesKey, Timeframe
from trader.plugins import get_plugin_manager
from trader.registry import Kind
from trader.synthetic import generate_candles
from trader.tasks import new_task_id

pytest.importorskip("trader_strategy_python")

T = TypeVar("T")
M1 = Timeframe.parse("1m")
SERIES = SeriesKey("demo", "BTC/USD", M1)
START = 1_704_067_200_000
COUNT = 3_000
HEARTBEAT = 0.2

#: An SMA crossover that raises in ``init`` when ``fast`` equals ``fail_fast``.
STRATEGY = """
params = {
    "fast": {"default": 10, "min": 2, "max": 50, "step": 1},
    "slow": {"default": 30, "min": 5, "max": 200, "step": 1},
    "fail_fast": {"default": 0},
}


def init(ctx):
    if ctx.params.fail_fast and ctx.params.fast == ctx.params.fail_fast:
        raise ValueError("fast %d is refused" % ctx.params.fast)
    ctx.state["fast"] = ta.sma(ctx.params.fast)
    ctx.state["slow"] = ta.sma(ctx.params.slow)


def on_candle(ctx, candles):
    fast = ctx.state["fast"].update(candles.close[-1])
    slow = ctx.state["slow"].update(candles.close[-1])
    if slow is None:
        return None
    return 1 if fast > slow else -1
"""


#: The line of STRATEGY that raises.
RAISE_LINE = 1 + STRATEGY.splitlines().index(
    '        raise ValueError("fast %d is refused" % ctx.params.fast)'
)


def run(coroutine: Awaitable[T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


def param(
    name: str, default: Any, low: Any = None, high: Any = None, step: Any = None
) -> Parameter:
    return Parameter(name, default, low, high, step)


FAST = param("fast", 10, 2, 50, 1)
SLOW = param("slow", 30, 5, 200, 1)
RATIO = param("ratio", 0.5, 0.0, 1.0, 0.05)
FLAG = param("flag", True)
MODE = param("mode", "long")
DECLARED = [FAST, SLOW, RATIO, FLAG, MODE]


# the grid --------------------------------------------------------------------------------------


def test_an_int_range_includes_stop_and_stays_int() -> None:
    axis = sweep_axis(FAST, "5:20:5")
    assert axis.values == (5, 10, 15, 20)
    assert all(type(v) is int for v in axis.values)
    assert sweep_axis(FAST, "5:21:5").values == (5, 10, 15, 20)  # 25 would pass the stop
    assert sweep_axis(FAST, "7:7:3").values == (7,)


def test_a_float_range_is_counted_in_decimals() -> None:
    assert sweep_axis(RATIO, "0.1:0.3:0.1").values == (0.1, 0.2, 0.3)
    values = sweep_axis(RATIO, "0:1:0.05").values
    assert len(values) == 21 and values[-1] == 1.0 and values[7] == 0.35
    assert all(type(v) is float for v in values)


@given(
    start=st.integers(0, 500),
    step=st.integers(1, 500),
    count=st.integers(1, 60),
    places=st.integers(1, 4),
)
def test_range_values_are_exact_decimals(start: int, step: int, count: int, places: int) -> None:
    scale = Decimal(10) ** -places
    low, delta = Decimal(start) * scale, Decimal(step) * scale
    high = low + delta * (count - 1)
    wide = param("x", 0.5, 0.0, 100_000.0)
    axis = sweep_axis(wide, f"{low}:{high}:{delta}")
    assert axis.values == tuple(float(low + i * delta) for i in range(count))
    assert axis.values[-1] == float(high)  # no drift past or short of the stop


def test_the_declared_step_and_range_are_used_when_not_given() -> None:
    assert sweep_axis(FAST, "5:8").values == (5, 6, 7, 8)
    narrow = param("fast", 10, 8, 12, 2)
    assert sweep_axis(narrow, None).values == (8, 10, 12)
    with pytest.raises(SweepError, match=r"declares none; write n=1:5:STEP"):
        sweep_axis(param("n", 3, 1, 10), "1:5")
    with pytest.raises(SweepError, match=r"needs params.n to declare min, max and step \(step"):
        sweep_axis(param("n", 3, 1, 10), None)


def test_lists_take_any_type_and_convert_each_value() -> None:
    assert sweep_axis(FAST, "5, 8,13").values == (5, 8, 13)
    assert sweep_axis(RATIO, "0.1,0.25").values == (0.1, 0.25)
    assert sweep_axis(FLAG, "true,false").values == (True, False)
    assert sweep_axis(MODE, "long,both").values == ("long", "both")


@pytest.mark.parametrize(
    ("parameter", "spec", "message"),
    [
        (FAST, "5:20:0", "the step must be above zero"),
        (FAST, "20:5:1", "START 20 is above STOP 5"),
        (FAST, "5:20:2.5", "fast takes whole numbers"),
        (FAST, "5:x:1", "STOP 'x' is not a number"),
        (FAST, "1:2:3:4", "a range is START:STOP:STEP"),
        (FAST, "1:20:1", "1 is below params.fast's min 2"),
        (FAST, "40:60:5", r"55 is above params.fast's max 50 \(2 values are\)"),
        (FAST, "5,5", "5 is listed twice"),
        (FAST, "5,,6", "an empty value"),
        (FAST, "5,6.5", "'6.5' is not a whole number"),
        (FLAG, "0:1:1", "flag is a bool parameter, so it has no range"),
        (FLAG, "maybe", "'maybe' is not true or false"),
        (MODE, "a:b", "mode is a str parameter"),
        (param("wide", 5, 0, 10**9), "0:1000000000:1", "more than the 10,000 combinations"),
    ],
)
def test_a_bad_axis_says_what_is_wrong(parameter: Parameter, spec: str, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        sweep_axis(parameter, spec)


def test_build_axes_checks_names_and_the_combination_cap() -> None:
    axes = build_axes(["fast=5:7", "flag=true,false"], DECLARED)
    assert [(a.name, a.values) for a in axes] == [("fast", (5, 6, 7)), ("flag", (True, False))]
    assert combination_count(axes) == 6
    with pytest.raises(SweepError, match=r"unknown parameter 'fsat' \(declared: fast, flag"):
        build_axes(["fsat=1:2"], DECLARED)
    with pytest.raises(SweepError, match="fast is given twice"):
        build_axes(["fast=5:7", "fast=9"], DECLARED)
    with pytest.raises(SweepError, match="both set with --param and swept"):
        build_axes(["fast=5:7"], DECLARED, fixed=["fast"])
    with pytest.raises(SweepError, match="is not NAME=START:STOP:STEP"):
        build_axes(["fast="], DECLARED)
    with pytest.raises(
        SweepError, match=r"19,012 combinations \(fast: 97 × slow: 196\); at most 10,000"
    ):
        build_axes(["fast=2:50:0.5", "slow=5:200"], [param("fast", 10.0, 2, 50), SLOW])
    assert len(build_axes(["slow=5:200", "fast=2:50"], DECLARED, limit=MAX_COMBINATIONS)) == 2


def test_expand_grid_varies_the_first_axis_slowest_over_the_base() -> None:
    base: dict[str, Any] = {"fast": 10, "slow": 30, "mode": "long"}
    axes = [SweepAxis("slow", (20, 40)), SweepAxis("fast", (3, 4, 5))]
    grid = expand_grid(axes, base)
    assert [(c["slow"], c["fast"]) for c in grid] == list(itertools.product((20, 40), (3, 4, 5)))
    assert all(list(c) == ["fast", "slow", "mode"] and c["mode"] == "long" for c in grid)
    assert expand_grid([], base) == [base]


# ranking ---------------------------------------------------------------------------------------


def row(index: int, status: str = "done", **metrics: Any) -> SweepRow:
    return SweepRow(index, {"i": index}, status, metrics if status == "done" else None)


def test_sort_rows_puts_the_best_first_and_missing_and_failed_last() -> None:
    rows = [
        row(0, sharpe=1.0, max_drawdown=0.3),
        row(1, "failed"),
        row(2, sharpe=None, max_drawdown=0.1),
        row(3, sharpe=2.5, max_drawdown=0.5),
        row(4, sharpe=math.nan, max_drawdown=None),
        row(5, sharpe=1.0, max_drawdown=0.2),
    ]
    assert [r.index for r in sort_rows(rows, "sharpe")] == [3, 0, 5, 2, 4, 1]
    assert [r.index for r in sort_rows(rows, "max_drawdown")] == [2, 5, 0, 3, 4, 1]


def test_metric_names_and_directions() -> None:
    assert "sharpe" in METRICS and "max_drawdown" in METRICS and "final_equity" in METRICS
    assert set(METRICS) >= LOWER_IS_BETTER
    assert higher_is_better("sharpe") and higher_is_better("worst_trade")
    assert not higher_is_better("max_drawdown") and not higher_is_better("fees")
    with pytest.raises(SweepError, match="unknown metric 'sharp'; sort by one of: initial"):
        check_metric("sharp")


def test_rows_as_json_and_the_outcome_counts() -> None:
    done = SweepRow(0, {"fast": 5}, "done", {"sharpe": 1.5}, 3, "10.5", attempts=2)
    failed = SweepRow(1, {"fast": 6}, "failed", error="x.py:3: ValueError: no")
    assert done.as_dict()["final_equity"] == "10.5" and "error" not in done.as_dict()
    assert failed.as_dict()["error"] == "x.py:3: ValueError: no"
    assert "metrics" not in failed.as_dict()
    outcome = SweepOutcome(
        [done, failed], requeued=1, reruns=1, seconds=1, total_seconds=2, workers=2
    )
    assert (outcome.done, outcome.failed) == (1, 1)
    assert outcome.sorted("sharpe")[0] is done
    assert describe_exit(-9) == "killed by SIGKILL" and describe_exit(3) == "exit status 3"


def test_options_and_clusters_refuse_nonsense() -> None:
    with pytest.raises(SweepError, match="lease must be above zero"):
        SweepOptions(lease=0)
    with pytest.raises(SweepError, match="at least one worker"):
        LocalCluster(0)


# the backtest service --------------------------------------------------------------------------


def write_candles(count: int = COUNT) -> Any:
    config = load_config(
        None, host=get_plugin_manager(), components=["storage.candles", "storage.state"]
    )
    candles = generate_candles(M1, START, count, seed=11)

    async def write() -> None:
        async with open_candle_store(config) as store:
            await store.write(SERIES, candles)

    asyncio.run(write())
    return config


def strategy_source(tmp_path: Path, text: str = STRATEGY) -> StrategySource:
    path = tmp_path / "cross.py"
    path.write_text(text)
    return StrategySource.of("python", str(path), text)


SETTINGS = RunSettings(assignment="cross", timeframe_ms=M1.nominal_ms, taker_fee=Decimal("0.001"))


def direct(strategy: StrategySource, params: dict[str, Any], config: Any) -> dict[str, Any]:
    """The summary of one combination run alone in this process, as ``trader backtest``."""

    async def read() -> Any:
        async with open_candle_store(config) as store:
            return await store.read(SERIES)

    runtime = get_plugin_manager().build(Kind.STRATEGY_RUNTIME, "python", None, None)
    result = run_job(runtime, strategy, params, asyncio.run(read()), "BTC/USD", SETTINGS)
    return job_summary(result)


def test_run_settings_travel_exactly() -> None:
    wire = SETTINGS.to_wire()
    assert RunSettings.from_wire(wire) == SETTINGS
    assert SETTINGS.backtest_settings().fills.taker_fee == Decimal("0.001")
    assert SETTINGS.backtest_settings().fills.maker_fee == Decimal("0.001")  # the default kept
    with pytest.raises(TraderError, match="unknown fields"):
        RunSettings.from_wire({**wire, "leverage": 3})
    with pytest.raises(TraderError, match="not a table"):
        RunSettings.from_wire([1, 2])


def test_the_candle_cache_reads_a_range_once(tmp_path: Path) -> None:
    config = write_candles()

    async def scenario() -> tuple[int, int, int]:
        async with open_candle_store(config) as store:
            cache = CandleCache(store, size=1)
            first = await cache.get(SERIES, None, None)
            again = await cache.get(SERIES, None, None)
            assert first is again
            await cache.get(SERIES, START, START + 60_000 * 10)
            await cache.get(SERIES, None, None)  # evicted by the second range: read again
            with pytest.raises(DataError, match="no stored candles for demo:BTC/USD:1m from"):
                await cache.get(SERIES, START - 10 * 60_000, START)
            return cache.hits, cache.misses, len(first)

    assert run(scenario()) == (1, 4, COUNT)


def job(strategy: StrategySource, params: dict[str, Any], **changes: Any) -> BacktestJob:
    fields: dict[str, Any] = {
        "sweep": "s",
        "task_id": "t",
        "attempt": 1,
        "report_to": "",
        "progress_interval": 0.0,
        "language": strategy.language,
        "filename": strategy.filename,
        "source": strategy.source,
        "source_hash": strategy.sha256,
        "params": params,
        "series": SERIES,
        "start": None,
        "end": None,
        "settings": SETTINGS.to_wire(),
    }
    fields.update(changes)
    return BacktestJob(**fields)


def test_the_service_runs_a_job_as_a_single_backtest_does(tmp_path: Path) -> None:
    config = write_candles()
    strategy = strategy_source(tmp_path)
    params = {"fast": 7, "slow": 25, "fail_fast": 0}

    async def scenario() -> list[JobOutcome]:
        async with open_candle_store(config) as store:
            service = BacktestService(CandleCache(store), None, worker="here")
            return [
                await service.run(job(strategy, params)),
                await service.run(job(strategy, {**params, "fail_fast": 7})),
                await service.run(job(strategy, params, source_hash="0" * 64)),
                await service.run(job(strategy, params, series=SeriesKey("x", "A/B", M1))),
            ]

    done, refused, damaged, empty = run(scenario())
    assert done.status == "done" and done.worker == "here"
    assert done.summary == direct(strategy, params, config)
    assert refused.status == "failed"
    assert refused.error == f"{strategy.filename}:{RAISE_LINE}: ValueError: fast 7 is refused"
    assert damaged.status == "failed" and "does not match its SHA-256" in damaged.error
    assert empty.status == "failed" and empty.error.startswith("no stored candles for x:A/B:1m")


# the coordinator -------------------------------------------------------------------------------


class SilentWorker(Service):
    """A broken ``backtest`` worker: it starts every job and then never says a word again.

    On its second job it first reports progress for the first, to check that the coordinator
    turns stale attempts away.
    """

    name = SERVICE

    def __init__(self, reporter: Client) -> None:
        self.reporter = reporter
        self.stale_acks: list[bool] = []
        self.jobs: list[tuple[str, int]] = []

    @handler
    async def run(self, job: BacktestJob) -> JobOutcome:
        self.jobs.append((job.task_id, job.attempt))
        if job.attempt > 1:
            stale = JobProgress(job.sweep, job.task_id, job.attempt - 1, "silent")
            ack = await self.reporter.call(job.report_to, stale, expect=JobAck)
            self.stale_acks.append(ack.proceed)
        started = JobStarted(job.sweep, job.task_id, job.attempt, "silent", "nowhere", 1)
        await self.reporter.call(job.report_to, started, expect=JobAck)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def sweep_in_process(
    config: Any,
    plan: SweepPlan,
    *,
    workers: Sequence[str] = ("w1", "w2"),
    silent: bool = False,
    options: SweepOptions | None = None,
    listeners: Sequence[Any] = (),
    on_progress: Any = None,
) -> tuple[SweepOutcome, list[Service]]:
    """Run ``plan`` on in-process services behind a real broker (calls go through it)."""
    endpoint = f"inproc://sweep-test-{new_task_id()}"
    broker = Broker(endpoint, heartbeat_interval=HEARTBEAT)
    broker.start()
    services: list[Service] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            candles = await stack.enter_async_context(open_candle_store(config))
            state = await stack.enter_async_context(open_state_store(config))
            reporter = await stack.enter_async_context(Client(endpoint, local_calls=False))
            for name in workers:
                service: Service = (
                    SilentWorker(reporter)
                    if silent
                    else BacktestService(CandleCache(candles), reporter, worker=name)
                )
                services.append(service)
                host = ServiceHost(
                    endpoint,
                    [service],
                    concurrency=8 if silent else 1,
                    heartbeat_interval=HEARTBEAT,
                    local_calls=False,
                )
                await stack.enter_async_context(host)
            coordinator = SweepCoordinator(
                plan,
                state,
                endpoint,
                options=options or SweepOptions(heartbeat=HEARTBEAT, worker_wait=10),
                listeners=listeners,
                on_progress=on_progress,
            )
            return await coordinator.run(), services
    finally:
        broker.stop()


async def histories(config: Any, rows: Sequence[SweepRow]) -> dict[int, list[TaskTransition]]:
    async with open_state_store(config) as store:
        return {r.index: await store.task_history(r.task_id or "") for r in rows}


def steps(history: list[TaskTransition]) -> list[tuple[str, str, str]]:
    return [(s.source, s.trigger, s.dest) for s in history]


HAPPY = [
    ("queued", "dispatch", "dispatched"),
    ("dispatched", "start", "running"),
    ("running", "finish", "done"),
]


def test_every_combination_runs_once_as_a_task_and_equals_a_single_run(tmp_path: Path) -> None:
    config = write_candles()
    strategy = strategy_source(tmp_path)
    base = {"fast": 10, "slow": 30, "fail_fast": 6}
    grid = expand_grid(build_axes(["fast=5:8", "slow=20,40"], DECLARED[:2]), base)
    plan = SweepPlan(strategy, SERIES, None, None, SETTINGS, grid)

    async def scenario() -> tuple[SweepOutcome, dict[int, list[TaskTransition]]]:
        outcome, _ = await sweep_in_process(config, plan)
        return outcome, await histories(config, outcome.rows)

    outcome, history = run(scenario())
    assert [r.index for r in outcome.rows] == list(range(8))
    assert (outcome.done, outcome.failed, outcome.requeued) == (6, 2, 0)
    assert outcome.workers == 2  # both in-process workers took jobs
    for r in outcome.rows:
        assert r.params == grid[r.index]
        if r.params["fast"] == 6:  # a strategy error: failed with its message, never retried
            refused = f"{strategy.filename}:{RAISE_LINE}: ValueError: fast 6 is refused"
            assert r.status == "failed" and r.error == refused
            assert steps(history[r.index]) == [*HAPPY[:2], ("running", "fail", "failed")]
            continue
        assert r.status == "done" and r.attempts == 1 and r.worker in ("w1", "w2")
        assert steps(history[r.index]) == HAPPY
        summary = direct(strategy, r.params, config)
        assert (r.metrics, r.trades, r.final_equity) == (
            summary["metrics"],
            summary["trades"],
            summary["final_equity"],
        )


def test_progress_is_reported_per_finished_combination(tmp_path: Path) -> None:
    config = write_candles(500)
    strategy = strategy_source(tmp_path)
    grid = expand_grid(build_axes(["fast=5:7"], DECLARED[:2]), {"fast": 10, "slow": 30})
    plan = SweepPlan(strategy, SERIES, None, None, SETTINGS, grid)
    seen: list[tuple[int, int]] = []

    def progress(state: SweepProgress) -> None:
        seen.append((state.finished, state.total))

    outcome, _ = run(sweep_in_process(config, plan, workers=["w1"], on_progress=progress))
    assert outcome.done == 3 and seen == [(1, 3), (2, 3), (3, 3)]


def test_a_worker_that_goes_quiet_loses_its_job_and_is_given_up_on(tmp_path: Path) -> None:
    config = write_candles(500)
    strategy = strategy_source(tmp_path)
    plan = SweepPlan(strategy, SERIES, None, None, SETTINGS, [{"fast": 5, "slow": 20}])
    options = SweepOptions(
        heartbeat=HEARTBEAT, lease=0.4, progress_interval=0.1, max_attempts=2, worker_wait=10
    )

    async def scenario() -> tuple[SweepOutcome, dict[int, list[TaskTransition]], list[Service]]:
        outcome, services = await sweep_in_process(
            config, plan, workers=["silent"], silent=True, options=options
        )
        return outcome, await histories(config, outcome.rows), services

    outcome, history, services = run(scenario())
    (only,) = outcome.rows
    assert only.status == "failed" and only.attempts == 2
    assert "its worker was lost 2 times while running it; given up" in (only.error or "")
    assert steps(history[0]) == [
        ("queued", "dispatch", "dispatched"),
        ("dispatched", "start", "running"),
        ("running", "timeout", "queued"),  # no progress within the lease
        ("queued", "dispatch", "dispatched"),
        ("dispatched", "start", "running"),
        ("running", "timeout", "queued"),
        ("queued", "fail", "failed"),
    ]
    assert (outcome.requeued, outcome.reruns) == (2, 2)
    silent = services[0]
    assert isinstance(silent, SilentWorker)
    assert silent.stale_acks == [False]  # progress for the lost attempt was turned away


def test_without_any_worker_the_sweep_fails_clearly_in_bounded_time(tmp_path: Path) -> None:
    config = write_candles(500)
    plan = SweepPlan(strategy_source(tmp_path), SERIES, None, None, SETTINGS, [{"fast": 5}])
    options = SweepOptions(heartbeat=HEARTBEAT, worker_wait=0.5)

    with pytest.raises(
        SweepError, match=r"no worker serves 'backtest' at inproc://.* within 0.5 s"
    ):
        run(sweep_in_process(config, plan, workers=[], options=options), timeout=20)


def test_a_listener_sees_each_step_after_the_coordinator(tmp_path: Path) -> None:
    config = write_candles(500)
    plan = SweepPlan(
        strategy_source(tmp_path), SERIES, None, None, SETTINGS, [{"fast": 5}, {"fast": 6}]
    )
    seen: dict[str, list[str]] = {}
    sweeps: set[str] = set()

    def listen(task: TaskRecord, step: TaskTransition) -> None:
        sweeps.add(task.payload["sweep"])
        seen.setdefault(task.task_id, []).append(step.dest)

    outcome, _ = run(sweep_in_process(config, plan, workers=["w1"], listeners=[listen]))
    assert outcome.done == 2
    assert sorted(seen) == sorted(r.task_id for r in outcome.rows)
    assert all(dests == ["dispatched", "running", "done"] for dests in seen.values())
    assert sweeps == {outcome.sweep_id}
