"""Parameter sweeps: a grid of parameter combinations backtested as jobs on bus workers.

Three parts:

* **The grid.** :func:`build_axes` reads ``--sweep`` values against the strategy's declared
  parameters: ``NAME=START:STOP:STEP`` (``STOP`` included when the steps land on it; counted in
  decimals, so ``0.1:0.3:0.1`` is exactly 0.1, 0.2, 0.3), ``NAME=START:STOP`` (the declared
  step), ``NAME=V1,V2,...`` (a list, for any type), or ``NAME`` alone (the declared
  ``min:max:step``). Whole-number parameters stay ``int``; every value is checked against the
  declared ``min``/``max``. :func:`expand_grid` makes the combinations (the first axis varies
  slowest); more than :data:`MAX_COMBINATIONS` is an error, not an hour-long surprise.
* **Sorting.** :func:`sort_rows` orders results by a :class:`~trader.backtest.Metrics` field:
  higher first, except for the figures where lower is better (:data:`LOWER_IS_BETTER`:
  drawdown, its duration, fees). Runs without that figure (``None``, NaN) come after, failed
  runs last; ties keep grid order.
* **The coordinator.** :class:`SweepCoordinator` turns each combination into a
  ``backtest_job`` task (:data:`~trader.tasks.BACKTEST_JOB_TASK`) held by a
  :class:`~trader.tasks.TaskOwner` over the state store, and sends it to the ``backtest`` bus
  service (:mod:`trader.backtest.jobs`), keeping at most one job in flight per worker so work
  balances. Each step is stored before it counts: ``queued → dispatched → running → done`` or
  ``failed``. A worker lost while it holds a job sends the job back to ``queued`` for another
  worker: ``worker_lost`` when a local worker process exits or a call fails, ``timeout`` when a
  worker stops reporting progress (remote workers). A strategy or data error fails the job
  (``fail``) with its message, without retrying it. :class:`LocalCluster` provides the workers when
  none are configured: a private broker on an ``ipc`` socket in a temporary folder and N
  worker processes, all ended when the sweep ends, however it ends.

See ``docs/sweeps.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final, cast

from typing_extensions import Self

from trader.backtest.jobs import (
    SERVICE,
    BacktestJob,
    JobAck,
    JobOutcome,
    JobProgress,
    JobStarted,
    RunSettings,
    StrategySource,
    worker_argv,
)
from trader.backtest.metrics import Metrics
from trader.bus.errors import BusError, CallTimeout, NotUnderstood, RemoteError, ServiceUnavailable
from trader.bus.service import Service, handler
from trader.errors import StorageError, TraderError
from trader.interfaces.strategy import Parameter
from trader.model import SeriesKey
from trader.strategy_support import ParamValue, coerce_parameter
from trader.tasks import BACKTEST_JOB_TASK, TaskError, TaskOwner, TransitionListener, new_task_id

if TYPE_CHECKING:
    from trader.bus.broker import Broker
    from trader.bus.client import Client
    from trader.bus.transport import Security
    from trader.config import Config
    from trader.interfaces import StateStore, TaskRecord, TaskTransition

__all__ = [
    "LOWER_IS_BETTER",
    "MAX_COMBINATIONS",
    "METRICS",
    "LocalCluster",
    "SweepAxis",
    "SweepControl",
    "SweepCoordinator",
    "SweepError",
    "SweepOptions",
    "SweepOutcome",
    "SweepPlan",
    "SweepProgress",
    "SweepRow",
    "build_axes",
    "check_metric",
    "combination_count",
    "control_service",
    "describe_exit",
    "expand_grid",
    "higher_is_better",
    "parse_sweep",
    "run_sweep",
    "sort_rows",
    "sweep_axis",
]

log = logging.getLogger(__name__)

#: The most combinations one sweep runs.
MAX_COMBINATIONS: Final = 10_000
#: The metrics a sweep can sort by: the fields of :class:`~trader.backtest.Metrics`.
METRICS: Final = tuple(f.name for f in dataclasses.fields(Metrics))
#: Metrics where a lower value is the better run (sorted ascending); all others sort descending.
LOWER_IS_BETTER: Final = frozenset(
    {"max_drawdown", "max_drawdown_candles", "max_drawdown_ms", "fees"}
)

_OPEN_STATES: Final = ("queued", "dispatched", "running")
_HELD_STATES: Final = ("dispatched", "running")


class SweepError(TraderError):
    """A sweep that cannot run as asked: a bad grid, too many combinations, no workers."""


# the grid --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepAxis:
    """One swept parameter and its values, in order (``spec`` as the user wrote it)."""

    name: str
    values: tuple[ParamValue, ...]
    spec: str = ""


def parse_sweep(text: str) -> tuple[str, str | None]:
    """``"fast=5:20:5"`` as ``("fast", "5:20:5")``; ``"fast"`` as ``("fast", None)`` (the
    declared range). Raises :class:`SweepError` for a missing name or empty values."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not name or (sep and not spec.strip()):
        raise SweepError(
            f"--sweep {text!r} is not NAME=START:STOP:STEP, NAME=V1,V2,... or NAME (the "
            "declared min:max:step)"
        )
    return name, spec.strip() if sep else None


def _kind(parameter: Parameter) -> str:
    default = parameter.default
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, str):
        return "str"
    whole = isinstance(default, int) and (
        parameter.step is None or float(parameter.step).is_integer()
    )
    return "int" if whole else "float"


def _decimal(value: float | int) -> Decimal:
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _number(text: str, where: str, label: str) -> Decimal:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise SweepError(f"--sweep {where}: {label} {text.strip()!r} is not a number") from None
    if not number.is_finite():
        raise SweepError(f"--sweep {where}: {label} {text.strip()!r} is not a finite number")
    return number


def _show(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sweep_axis(
    parameter: Parameter, spec: str | None, *, limit: int = MAX_COMBINATIONS
) -> SweepAxis:
    """The values ``spec`` (see :func:`parse_sweep`) gives ``parameter``.

    Ranges are counted in decimals (no float drift) and need a numeric parameter; a
    whole-number parameter takes whole bounds and steps and keeps ``int`` values. Every value
    must convert to the parameter's type and lie within its ``min``/``max``; a list may not
    repeat a value; an axis may not hold more than ``limit`` values. Raises
    :class:`SweepError` saying which.
    """
    name = parameter.name
    kind = _kind(parameter)
    where = name if spec is None else f"{name}={spec}"
    values: list[ParamValue]
    if spec is None or ":" in spec:
        if kind in ("bool", "str"):
            raise SweepError(
                f"--sweep {where}: {name} is a {kind} parameter, so it has no range; list its "
                f"values instead: {name}=V1,V2"
            )
        if spec is None:
            missing = [
                label
                for label, value in (
                    ("min", parameter.minimum),
                    ("max", parameter.maximum),
                    ("step", parameter.step),
                )
                if value is None
            ]
            if missing:
                raise SweepError(
                    f"--sweep {name}: sweeping the declared range needs params.{name} to "
                    f"declare min, max and step ({', '.join(missing)} missing); give the values "
                    f"instead: {name}=START:STOP:STEP or {name}=V1,V2"
                )
            assert parameter.minimum is not None and parameter.maximum is not None
            assert parameter.step is not None
            start = _decimal(parameter.minimum)
            stop = _decimal(parameter.maximum)
            step = _decimal(parameter.step)
        else:
            parts = spec.split(":")
            if len(parts) not in (2, 3):
                raise SweepError(
                    f"--sweep {where}: a range is START:STOP:STEP (or START:STOP with the "
                    "declared step)"
                )
            start = _number(parts[0], where, "START")
            stop = _number(parts[1], where, "STOP")
            if len(parts) == 3:
                step = _number(parts[2], where, "STEP")
            elif parameter.step is not None:
                step = _decimal(parameter.step)
            else:
                raise SweepError(
                    f"--sweep {where}: no STEP given and params.{name} declares none; write "
                    f"{name}={parts[0].strip()}:{parts[1].strip()}:STEP"
                )
        if step <= 0:
            raise SweepError(f"--sweep {where}: the step must be above zero, not {step}")
        if start > stop:
            raise SweepError(f"--sweep {where}: START {start} is above STOP {stop}")
        if kind == "int" and any(v != v.to_integral_value() for v in (start, stop, step)):
            raise SweepError(
                f"--sweep {where}: {name} takes whole numbers, so START, STOP and STEP must be "
                "whole too"
            )
        count = int((stop - start) // step) + 1
        if count > limit:
            raise SweepError(
                f"--sweep {where} gives {count:,} values, more than the {limit:,} combinations "
                "a sweep may run; use a coarser step or a narrower range"
            )
        points = [start + i * step for i in range(count)]
        values = [int(p) if kind == "int" else float(p) for p in points]
    else:
        texts = [item.strip() for item in spec.split(",")]
        if any(not item for item in texts):
            raise SweepError(f"--sweep {where}: an empty value in the list")
        if len(texts) > limit:
            raise SweepError(
                f"--sweep {where} lists {len(texts):,} values, more than the {limit:,} "
                "combinations a sweep may run"
            )
        values = []
        for item in texts:
            try:
                values.append(coerce_parameter(parameter, item))
            except ValueError as error:
                raise SweepError(f"--sweep {where}: {error}") from None
        seen: set[ParamValue] = set()
        for value in values:
            if value in seen:
                raise SweepError(f"--sweep {where}: {_show(value)} is listed twice")
            seen.add(value)
    if kind in ("int", "float"):
        low, high = parameter.minimum, parameter.maximum
        numbers = [v for v in values if isinstance(v, (int, float))]
        below = [v for v in numbers if low is not None and v < low]
        above = [v for v in numbers if high is not None and v > high]
        if below:
            raise SweepError(
                f"--sweep {where}: {_show(below[0])} is below params.{name}'s min {low}"
                + (f" ({len(below)} values are)" if len(below) > 1 else "")
            )
        if above:
            raise SweepError(
                f"--sweep {where}: {_show(above[0])} is above params.{name}'s max {high}"
                + (f" ({len(above)} values are)" if len(above) > 1 else "")
            )
    return SweepAxis(name, tuple(values), spec or "")


def combination_count(axes: Sequence[SweepAxis]) -> int:
    """How many combinations ``axes`` make (1 for no axes)."""
    return math.prod(len(axis.values) for axis in axes)


def build_axes(
    specs: Sequence[str],
    declared: Sequence[Parameter],
    *,
    fixed: Iterable[str] = (),
    limit: int = MAX_COMBINATIONS,
) -> list[SweepAxis]:
    """The axes the ``--sweep`` values ``specs`` give the ``declared`` parameters.

    A name must be declared, swept once, and not also set with ``--param`` (``fixed``); the
    combinations may not exceed ``limit``. Raises :class:`SweepError` with the first problem.
    """
    by_name = {p.name: p for p in declared}
    pinned = set(fixed)
    axes: list[SweepAxis] = []
    for text in specs:
        name, spec = parse_sweep(text)
        parameter = by_name.get(name)
        if parameter is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise SweepError(f"--sweep {text}: unknown parameter {name!r} (declared: {known})")
        if any(axis.name == name for axis in axes):
            raise SweepError(f"--sweep {name} is given twice; give all its values in one")
        if name in pinned:
            raise SweepError(
                f"{name} is both set with --param and swept with --sweep; drop one of them"
            )
        axes.append(sweep_axis(parameter, spec, limit=limit))
    count = combination_count(axes)
    if count > limit:
        shape = " × ".join(f"{axis.name}: {len(axis.values):,}" for axis in axes)
        raise SweepError(
            f"the sweep has {count:,} combinations ({shape}); at most {limit:,} run in one "
            "sweep: narrow the ranges or use coarser steps"
        )
    return axes


def expand_grid(
    axes: Sequence[SweepAxis], base: Mapping[str, ParamValue]
) -> list[dict[str, ParamValue]]:
    """Every combination of ``axes`` over the ``base`` parameters (bound values of all
    declared parameters), the first axis varying slowest. Keys keep ``base``'s order."""
    names = [axis.name for axis in axes]
    combinations: list[dict[str, ParamValue]] = []
    for values in itertools.product(*(axis.values for axis in axes)):
        combination = dict(base)
        combination.update(zip(names, values, strict=True))
        combinations.append(combination)
    return combinations


# results ---------------------------------------------------------------------------------------


def check_metric(metric: str) -> str:
    """``metric`` if it names a :class:`~trader.backtest.Metrics` field, else
    :class:`SweepError` listing them."""
    if metric not in METRICS:
        raise SweepError(f"unknown metric {metric!r}; sort by one of: {', '.join(METRICS)}")
    return metric


def higher_is_better(metric: str) -> bool:
    """Whether a higher ``metric`` is the better run (False for :data:`LOWER_IS_BETTER`)."""
    return check_metric(metric) not in LOWER_IS_BETTER


@dataclass(frozen=True)
class SweepRow:
    """One combination's result: its parameters and either its summary (``done``) or the
    reason it failed (``failed``)."""

    index: int
    params: dict[str, ParamValue]
    status: str
    metrics: dict[str, Any] | None = None
    trades: int | None = None
    final_equity: str | None = None
    error: str | None = None
    attempts: int = 1
    worker: str | None = None
    task_id: str | None = None

    def metric(self, name: str) -> float | None:
        """The value of metric ``name`` (``None`` when failed or undefined)."""
        if self.metrics is None:
            return None
        value = self.metrics.get(name)
        return float(value) if isinstance(value, (int, float)) else None

    def as_dict(self) -> dict[str, Any]:
        """The row for JSON: params, status, and the summary or the error."""
        row: dict[str, Any] = {"index": self.index, "params": dict(self.params)}
        row["status"] = self.status
        if self.status == "done":
            row.update(metrics=self.metrics, trades=self.trades, final_equity=self.final_equity)
        else:
            row["error"] = self.error
        row.update(attempts=self.attempts, worker=self.worker, task_id=self.task_id)
        return row


def sort_rows(rows: Iterable[SweepRow], metric: str) -> list[SweepRow]:
    """``rows`` best first by ``metric`` (see :func:`higher_is_better`); rows without the
    figure (None, NaN) next, failed rows last; ties in grid order."""
    sign = -1.0 if higher_is_better(metric) else 1.0

    def key(row: SweepRow) -> tuple[int, float, int]:
        if row.status != "done":
            return (2, 0.0, row.index)
        value = row.metric(metric)
        if value is None or math.isnan(value):
            return (1, 0.0, row.index)
        return (0, sign * value, row.index)

    return sorted(rows, key=key)


@dataclass(frozen=True)
class SweepProgress:
    """Where a sweep is: combinations in all, finished ones, and jobs sent back to the queue."""

    total: int
    done: int
    failed: int
    requeued: int

    @property
    def finished(self) -> int:
        """Combinations with a result (done or failed)."""
        return self.done + self.failed


@dataclass(frozen=True)
class SweepOutcome:
    """A finished sweep: one row per combination (grid order) and how it went.

    ``requeued`` counts jobs sent back to the queue (a lost worker, no word in time);
    ``reruns`` those of them that had started running; ``seconds`` runs from the first job
    sent to the last result, ``total_seconds`` includes waiting for workers.
    """

    rows: list[SweepRow]
    requeued: int
    reruns: int
    seconds: float
    total_seconds: float
    workers: int
    sweep_id: str = ""

    @property
    def done(self) -> int:
        """Combinations that ran to the end."""
        return sum(1 for row in self.rows if row.status == "done")

    @property
    def failed(self) -> int:
        """Combinations that failed (strategy or data errors, or given up)."""
        return len(self.rows) - self.done

    def sorted(self, metric: str) -> list[SweepRow]:
        """The rows best first by ``metric`` (:func:`sort_rows`)."""
        return sort_rows(self.rows, metric)


# the coordinator -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepOptions:
    """Timing of a sweep (seconds).

    ``dispatch_timeout``: a job sent but not started by a worker in this time is queued again.
    ``lease``: a running job whose worker sent no progress in this time is queued again
    (workers report every ``progress_interval``; the owner stores at most one progress step
    per quarter lease). ``call_timeout`` bounds one job's run. ``worker_wait``: how long to
    wait for a first worker (and, mid-sweep, for any worker). ``max_attempts``: a job whose
    running worker was lost this many times fails. ``heartbeat``: the bus heartbeat.
    """

    dispatch_timeout: float = 30.0
    lease: float = 20.0
    progress_interval: float = 2.0
    call_timeout: float = 86_400.0
    worker_wait: float = 30.0
    max_attempts: int = 3
    heartbeat: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) <= 0:
                raise SweepError(f"sweep option {f.name} must be above zero")


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep runs: a strategy on one series and range, with these settings, once per
    combination of parameters (each a full set of bound parameters)."""

    strategy: StrategySource
    series: SeriesKey
    start: int | None
    end: int | None
    settings: RunSettings
    combinations: list[dict[str, ParamValue]]


@dataclass(eq=False)
class _Job:
    index: int
    params: dict[str, ParamValue]
    task_id: str | None = None
    state: str = "new"
    attempt: int = 0
    call: asyncio.Task[None] | None = None
    worker: str | None = None
    host: str | None = None
    pid: int | None = None
    losses: int = 0
    row: SweepRow | None = None


class SweepControl(Service):
    """The coordinator's own bus service: workers report the start and progress of jobs.

    Each coordinator serves it under a name of its own (``backtest.sweep.<sweep id>``), which
    every job names in ``report_to``; see :func:`control_service`.
    """

    name = "backtest.sweep"

    def __init__(self, coordinator: SweepCoordinator) -> None:
        self.coordinator = coordinator

    @handler
    async def started(self, report: JobStarted) -> JobAck:
        """A worker starts a job: record ``start``; ``proceed`` if the attempt is current."""
        return await self.coordinator._started(report)

    @handler
    async def progress(self, report: JobProgress) -> JobAck:
        """A worker still runs a job: record ``progress`` (at most once per quarter lease)."""
        return await self.coordinator._progress(report)


def control_service(name: str, coordinator: SweepCoordinator) -> SweepControl:
    """A :class:`SweepControl` for ``coordinator`` served under ``name``."""
    cls = cast(type[SweepControl], type("SweepControl", (SweepControl,), {"name": name}))
    return cls(coordinator)


ProgressCallback = Callable[[SweepProgress], None]


class SweepCoordinator:
    """Run a :class:`SweepPlan` on the ``backtest`` workers of the broker at ``endpoint``.

    Every combination is a ``backtest_job`` task owned (under ``owner_name``) in ``store``:
    created and dispatched when a worker is free, moved by the workers' reports and replies,
    re-queued when its worker is lost, failed (never retried) on a strategy or data error.
    ``cluster`` is the :class:`LocalCluster` whose workers these are, if any: the window is one
    job per live local worker, and a worker process that exits loses its job at once. Without
    it (remote workers) the window is one job per worker seen so far, plus one. ``on_progress``
    is called after each finished job; ``listeners`` are added to the task owner (after the
    coordinator's own). Use :meth:`run` once.
    """

    def __init__(
        self,
        plan: SweepPlan,
        store: StateStore,
        endpoint: str,
        *,
        security: Security | None = None,
        cluster: LocalCluster | None = None,
        options: SweepOptions | None = None,
        on_progress: ProgressCallback | None = None,
        listeners: Sequence[TransitionListener] = (),
        owner_name: str | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self.endpoint = endpoint
        self.security = security
        self.cluster = cluster
        self.options = options or SweepOptions()
        self.on_progress = on_progress
        self.sweep_id = new_task_id()
        self.control_name = f"{SERVICE}.sweep.{self.sweep_id}"
        self.host = socket.gethostname()
        self.owner_name = owner_name or f"backtest-sweep@{self.host}:{os.getpid()}"
        self._listeners = list(listeners)
        self._jobs = [_Job(i, dict(p)) for i, p in enumerate(plan.combinations)]
        self._fresh: deque[_Job] = deque(self._jobs)
        self._queue: deque[_Job] = deque()
        self._active: set[_Job] = set()
        self._by_task: dict[str, _Job] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._seen_workers: set[str] = set()
        self._busy_workers: dict[str, int] = {}
        self._exited: dict[int, int | None] = {}
        self._done = self._failed = self._requeued = self._reruns = 0
        self._fatal: BaseException | None = None
        self._no_worker_since: float | None = None
        self._closing = False
        self._wake: asyncio.Event | None = None
        self._owner: TaskOwner | None = None
        self._client: Client | None = None
        self._job_message = _JobTemplate(self)

    # ------------------------------------------------------------------ running

    async def run(self) -> SweepOutcome:
        """Run every combination; return the outcome once each is done or failed.

        Raises :class:`SweepError` when no worker serves in time or every local worker
        exited, and :class:`~trader.errors.StorageError` when the state store fails. However
        it ends, the jobs still open are failed with the reason, and the coordinator's bus
        client and service are closed.
        """
        from trader.bus.client import Client
        from trader.bus.service import ServiceHost

        loop = asyncio.get_running_loop()
        began = loop.time()
        options = self.options
        self._wake = asyncio.Event()
        definition = BACKTEST_JOB_TASK.with_timeouts(
            dispatched=options.dispatch_timeout, running=options.lease
        )
        owner = TaskOwner(self.store, self.owner_name, [definition])
        owner.add_listener(self._on_step)
        for listener in self._listeners:
            owner.add_listener(listener)
        # One attempt is one call, never resent: a lost worker is the task machine's business
        # (re-queue, re-dispatch with a new attempt), so the bus must not re-route it by itself.
        client = Client(
            self.endpoint,
            security=self.security,
            timeout=options.call_timeout,
            retry_interval=options.call_timeout,
            heartbeat_interval=options.heartbeat,
            local_calls=False,
        )
        control = ServiceHost(
            self.endpoint,
            [control_service(self.control_name, self)],
            security=self.security,
            concurrency=64,
            heartbeat_interval=options.heartbeat,
            local_calls=False,
        )
        self._owner, self._client = owner, client
        reason = "it was interrupted"
        try:
            await client.open()
            await control.start()
            if self.cluster is not None:
                self.cluster.watch(self._exit_notifier(loop))
            await self._wait_for_workers()
            first = loop.time()
            await self._run_jobs()
            now = loop.time()
            return SweepOutcome(
                rows=[job.row for job in self._jobs if job.row is not None],
                requeued=self._requeued,
                reruns=self._reruns,
                seconds=now - first,
                total_seconds=now - began,
                workers=len(self._seen_workers),
                sweep_id=self.sweep_id,
            )
        except BaseException as error:
            if isinstance(error, TraderError):
                reason = str(error)
            elif isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
                reason = "it was interrupted"
            else:
                reason = f"{type(error).__name__}: {error}"
            raise
        finally:
            self._closing = True
            await self._wind_down(reason)
            await control.stop()
            await client.close()
            await owner.close()

    async def _wait_for_workers(self) -> None:
        """Return once the ``backtest`` service and this coordinator's own service are served."""
        client = self._client
        assert client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.worker_wait
        for service in (self.control_name, SERVICE):
            while True:
                self._check()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise SweepError(self._no_worker_message(service))
                with contextlib.suppress(CallTimeout):
                    if await client.service_available(service, timeout=min(1.0, remaining)):
                        break
                assert self._wake is not None
                self._wake.clear()
                await self._pause(0.05)  # the broker has no push notice for a new worker

    def _no_worker_message(self, service: str = SERVICE) -> str:
        wait = f"{self.options.worker_wait:g} s"
        if service != SERVICE:
            return f"the sweep's own bus service did not come up at {self.endpoint} within {wait}"
        if self.cluster is not None:
            return (
                f"the {len(self.cluster.pids)} local backtest workers did not serve within "
                f"{wait}; see their errors above (run `trader worker backtest` alone to check)"
            )
        return (
            f"no worker serves {SERVICE!r} at {self.endpoint} within {wait}: start workers with "
            "`trader worker backtest` on hosts that reach the broker (and check that `trader "
            "broker` runs), or drop [cluster] from the configuration to use local workers"
        )

    async def _pause(self, seconds: float) -> None:
        wake = self._wake
        assert wake is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    async def _run_jobs(self) -> None:
        wake = self._wake
        assert wake is not None
        total = len(self._jobs)
        while self._done + self._failed < total:
            wake.clear()
            self._check()
            # Tasks are created as they are dispatched, not ahead: work done here while every
            # worker computes would take a core from one of them.
            while (self._queue or self._fresh) and len(self._active) < self._window():
                await self._dispatch_next()
            self._check()
            if self._done + self._failed >= total:
                break
            await self._pause(1.0)

    def _check(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        since = self._no_worker_since
        if since is not None and time.monotonic() - since > self.options.worker_wait:
            raise SweepError(self._no_worker_message())

    def _window(self) -> int:
        if self.cluster is not None:
            return len(self.cluster.pids) - len(self._exited)
        return len(self._busy_workers) + 1

    async def _create(self, job: _Job) -> _Job:
        """Store ``job``'s task (in ``queued``)."""
        owner = self._owner
        assert owner is not None
        plan = self.plan
        record = await owner.create(
            BACKTEST_JOB_TASK.type,
            {
                "sweep": self.sweep_id,
                "index": job.index,
                "params": job.params,
                "strategy": plan.strategy.filename,
                "sha256": plan.strategy.sha256,
                "series": str(plan.series),
                "start": plan.start,
                "end": plan.end,
            },
        )
        job.task_id = record.task_id
        job.state = record.state
        self._by_task[record.task_id] = job
        return job

    async def _dispatch_next(self) -> None:
        """Dispatch the next job: one sent back to the queue first, then in grid order."""
        owner = self._owner
        assert owner is not None
        if self._queue:
            job = self._queue.popleft()
        else:
            job = await self._create(self._fresh.popleft())
        assert job.task_id is not None
        attempt = job.attempt + 1
        job.attempt = attempt
        job.worker = job.host = None
        job.pid = None
        await owner.fire(
            job.task_id, "dispatch", update={"attempt": attempt}, note=f"attempt {attempt}"
        )
        call = asyncio.create_task(self._call(job, attempt), name=f"backtest job {job.task_id}")
        job.call = call
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _call(self, job: _Job, attempt: int) -> None:
        client = self._client
        assert client is not None and job.task_id is not None
        try:
            outcome = await client.call(
                SERVICE,
                self._job_message(job, attempt),
                timeout=self.options.call_timeout,
                expect=JobOutcome,
            )
        except ServiceUnavailable as error:
            if self._no_worker_since is None:
                self._no_worker_since = time.monotonic()
            await self._settle(job, attempt, "worker_lost", f"no worker took it: {error}")
        except (RemoteError, NotUnderstood) as error:
            await self._settle(job, attempt, "fail", str(error), {"error": str(error)})
        except BusError as error:  # CallTimeout, or the client failing
            await self._settle(job, attempt, "worker_lost", str(error))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug: stop the sweep rather than hang
            self._set_fatal(error)
        else:
            if outcome.status == "done":
                update = {"result": outcome.summary, "seconds": round(outcome.seconds, 3)}
                note = f"on {outcome.worker} in {outcome.seconds:.2f} s"
                await self._settle(job, attempt, "finish", note, update)
            elif outcome.status == "failed":
                await self._settle(job, attempt, "fail", outcome.error, {"error": outcome.error})
            else:
                note = f"{outcome.worker} skipped it: {outcome.error}"
                await self._settle(job, attempt, "worker_lost", note)

    async def _settle(
        self,
        job: _Job,
        attempt: int,
        trigger: str,
        note: str,
        update: Mapping[str, Any] | None = None,
    ) -> None:
        """Fire ``trigger`` on ``job`` if ``attempt`` is still its current one and its state
        allows it; a step lost to a race (a timeout, a lost worker) is let go."""
        owner = self._owner
        assert owner is not None
        allowed = ("running",) if trigger == "finish" else _HELD_STATES
        if job.attempt != attempt or job.state not in allowed or job.task_id is None:
            return
        try:
            await owner.fire(job.task_id, trigger, note=note, update=update)
        except TaskError:
            return
        except StorageError as error:
            self._set_fatal(error)

    def _set_fatal(self, error: BaseException) -> None:
        if self._fatal is None:
            self._fatal = error
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ task steps

    async def _on_step(self, task: TaskRecord, step: TaskTransition) -> None:
        """The owner's listener: keep the job's mirror, queue, window and rows in step."""
        job = self._by_task.get(task.task_id)
        if job is None:
            return
        job.state = step.dest
        dest = step.dest
        if dest == "dispatched":
            self._active.add(job)
        elif dest == "running":
            payload = task.payload
            job.worker = _text(payload.get("worker"))
            job.host = _text(payload.get("host"))
            pid = payload.get("pid")
            job.pid = pid if isinstance(pid, int) else None
            if job.worker is not None:
                self._seen_workers.add(job.worker)
                self._busy_workers[job.worker] = self._busy_workers.get(job.worker, 0) + 1
        elif dest == "queued":
            self._release(job, step.source)
            self._requeued += 1
            if step.source == "running":
                self._reruns += 1
                job.losses += 1
            if job.losses >= self.options.max_attempts and not self._closing:
                assert self._owner is not None
                message = (
                    f"its worker was lost {job.losses} times while running it; given up (does "
                    "the strategy crash or exhaust its worker?)"
                )
                try:
                    await self._owner.fire(
                        task.task_id, "fail", note=message, update={"error": message}
                    )
                except TraderError as error:  # the store failed: the sweep cannot go on
                    self._set_fatal(error)
            elif not self._closing:
                self._queue.append(job)
        elif dest in ("done", "failed"):
            self._release(job, step.source)
            job.row = _row(job, task, step)
            if dest == "done":
                self._done += 1
            else:
                self._failed += 1
            if self.on_progress is not None and not self._closing:
                self.on_progress(
                    SweepProgress(len(self._jobs), self._done, self._failed, self._requeued)
                )
        if self._wake is not None:
            self._wake.set()

    def _release(self, job: _Job, source: str) -> None:
        self._active.discard(job)
        if source == "running" and job.worker is not None:
            count = self._busy_workers.get(job.worker, 0) - 1
            if count > 0:
                self._busy_workers[job.worker] = count
            else:
                self._busy_workers.pop(job.worker, None)
        call = job.call
        if call is not None and call is not asyncio.current_task() and not call.done():
            call.cancel()  # the attempt is over: stop waiting for its reply
        job.call = None

    # ------------------------------------------------------------------ worker reports

    def _current(self, task_id: str, attempt: int, sweep: str, state: str) -> _Job | None:
        job = self._by_task.get(task_id)
        if job is None or sweep != self.sweep_id or self._closing:
            return None
        if job.attempt != attempt or job.state != state:
            return None
        return job

    async def _started(self, report: JobStarted) -> JobAck:
        job = self._current(report.task_id, report.attempt, report.sweep, "dispatched")
        if job is None:
            return JobAck(False)
        assert self._owner is not None
        try:
            await self._owner.fire(
                report.task_id,
                "start",
                note=f"on {report.worker} ({report.host}, pid {report.pid})",
                update={"worker": report.worker, "host": report.host, "pid": report.pid},
            )
        except TaskError:
            return JobAck(False)
        except StorageError as error:
            self._set_fatal(error)
            return JobAck(False)
        self._no_worker_since = None
        return JobAck(True)

    async def _progress(self, report: JobProgress) -> JobAck:
        job = self._current(report.task_id, report.attempt, report.sweep, "running")
        if job is None:
            return JobAck(False)
        owner = self._owner
        assert owner is not None
        try:
            quiet_ms = int(time.time() * 1000) - owner.get(report.task_id).updated_at
            if quiet_ms >= self.options.lease * 250:  # a quarter lease, in ms
                await owner.fire(report.task_id, "progress", note=f"{report.worker} runs it")
        except TaskError:
            return JobAck(False)
        except StorageError as error:
            self._set_fatal(error)
        return JobAck(True)

    # ------------------------------------------------------------------ local workers

    def _exit_notifier(self, loop: asyncio.AbstractEventLoop) -> Callable[[int, int | None], None]:
        def notify(pid: int, code: int | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the sweep is over
                loop.call_soon_threadsafe(self._on_worker_exit, pid, code)

        return notify

    def _on_worker_exit(self, pid: int, code: int | None) -> None:
        if pid in self._exited:
            return
        self._exited[pid] = code
        if self._closing:
            return
        how = describe_exit(code)
        log.warning("local backtest worker %d exited (%s)", pid, how)
        for job in list(self._active):
            if job.pid == pid and job.host == self.host:
                note = f"worker process {pid} exited ({how})"
                self._spawn(self._settle(job, job.attempt, "worker_lost", note))
        assert self.cluster is not None
        if len(self._exited) >= len(self.cluster.pids):
            self._set_fatal(
                SweepError(
                    f"all {len(self.cluster.pids)} local backtest workers exited (the last: "
                    f"{how}); see their errors above"
                )
            )
        if self._wake is not None:
            self._wake.set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ the end

    async def _wind_down(self, reason: str) -> None:
        """Stop waiting for replies and fail the jobs still open, noting ``reason``."""
        pending = [*self._calls, *self._background]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        owner = self._owner
        if owner is None:
            return
        note = f"the sweep stopped before this job finished: {reason}"
        for job in self._jobs:
            if job.task_id is None or job.state not in _OPEN_STATES:
                continue
            try:
                await owner.fire(job.task_id, "fail", note=note, update={"error": note})
            except TraderError as error:
                log.warning("could not close backtest job %s: %s", job.task_id, error)


class _JobTemplate:
    """Builds a coordinator's job messages (the parts shared by every job made once)."""

    def __init__(self, coordinator: SweepCoordinator) -> None:
        plan = coordinator.plan
        self.coordinator = coordinator
        self.settings = plan.settings.to_wire()

    def __call__(self, job: _Job, attempt: int) -> BacktestJob:
        coordinator = self.coordinator
        plan = coordinator.plan
        strategy = plan.strategy
        assert job.task_id is not None
        return BacktestJob(
            sweep=coordinator.sweep_id,
            task_id=job.task_id,
            attempt=attempt,
            report_to=coordinator.control_name,
            progress_interval=coordinator.options.progress_interval,
            language=strategy.language,
            filename=strategy.filename,
            source=strategy.source,
            source_hash=strategy.sha256,
            params=job.params,
            series=plan.series,
            start=plan.start,
            end=plan.end,
            settings=self.settings,
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _row(job: _Job, task: TaskRecord, step: TaskTransition) -> SweepRow:
    payload = task.payload
    worker = _text(payload.get("worker"))
    if step.dest == "done":
        result = payload.get("result")
        summary = result if isinstance(result, dict) else {}
        return SweepRow(
            index=job.index,
            params=job.params,
            status="done",
            metrics=summary.get("metrics"),
            trades=summary.get("trades"),
            final_equity=summary.get("final_equity"),
            attempts=job.attempt,
            worker=worker,
            task_id=task.task_id,
        )
    error = payload.get("error")
    return SweepRow(
        index=job.index,
        params=job.params,
        status="failed",
        error=error if isinstance(error, str) and error else step.note,
        attempts=job.attempt,
        worker=worker,
        task_id=task.task_id,
    )


def describe_exit(code: int | None) -> str:
    """A process's exit status in words (``killed by SIGKILL``, ``exit status 1``)."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


# local workers ---------------------------------------------------------------------------------


def _short_temp_dir() -> str:
    """A folder for ipc sockets: the temp folder unless its path is too long for one."""
    base = tempfile.gettempdir()
    # mkdtemp makes the folder private, so a well-known parent is safe
    if len(base) > 60 and os.path.isdir("/tmp"):  # noqa: S108
        return "/tmp"  # noqa: S108
    return base


def _stderr_fd() -> int:
    stream = sys.__stderr__
    try:
        return stream.fileno() if stream is not None else subprocess.DEVNULL
    except (OSError, ValueError):
        return subprocess.DEVNULL


class LocalCluster:
    """A private broker and ``workers`` local backtest worker processes; a context manager.

    :meth:`start` binds a broker (on a thread of this process) to an ``ipc`` socket in a new
    temporary folder and starts the workers (``trader worker backtest``, see
    :func:`~trader.backtest.jobs.worker_argv`) with ``config_path`` (``None``: the same
    environment finds the same configuration). Each worker gets a pipe as standard input and
    stops when it closes, so workers end with this process even when it is killed; their
    output goes to this process's standard error (never its standard output). :meth:`stop`
    ends them (SIGTERM, then SIGKILL after ``stop_timeout``), stops the broker and removes the
    folder; it runs on leaving the ``with`` block however it is left.
    """

    def __init__(
        self,
        workers: int,
        *,
        config_path: Path | None = None,
        heartbeat: float = 1.0,
        stop_timeout: float = 5.0,
        output: int | IO[Any] | None = None,
    ) -> None:
        if workers < 1:
            raise SweepError(f"a sweep needs at least one worker, not {workers}")
        self.workers = workers
        self.config_path = config_path
        self.heartbeat = heartbeat
        self.stop_timeout = stop_timeout
        self.output = output
        self.processes: list[subprocess.Popen[bytes]] = []
        self._endpoint: str | None = None
        self._broker: Broker | None = None
        self._folder: Path | None = None
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def endpoint(self) -> str:
        """The broker's address (after :meth:`start`)."""
        if self._endpoint is None:
            raise SweepError("the local cluster is not started")
        return self._endpoint

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return [process.pid for process in self.processes]

    def start(self) -> str:
        """Start the broker and the workers (who connect in the background); return the
        broker's address. On failure, whatever started is stopped again."""
        from trader.bus.broker import Broker

        self._folder = Path(tempfile.mkdtemp(prefix="trader-sweep-", dir=_short_temp_dir()))
        try:
            broker = Broker(
                f"ipc://{self._folder / 'broker.ipc'}", heartbeat_interval=self.heartbeat
            )
            self._broker = broker
            self._endpoint = broker.start()
            output = self.output if self.output is not None else _stderr_fd()
            for number in range(1, self.workers + 1):
                argv = worker_argv(
                    self._endpoint,
                    name=f"local-{number}",
                    config_path=self.config_path,
                    heartbeat=self.heartbeat,
                )
                self.processes.append(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=output,
                        # Its own session: a Ctrl-C in the terminal reaches this process,
                        # which stops the workers in order, not the workers behind its back.
                        start_new_session=True,
                    )
                )
        except BaseException:
            self.stop()
            raise
        return self._endpoint

    def watch(self, callback: Callable[[int, int | None], None]) -> None:
        """Call ``callback(pid, exit status)`` (on a thread of its own) when a worker exits."""
        for process in self.processes:

            def wait(process: subprocess.Popen[bytes] = process) -> None:
                code = process.wait()
                callback(process.pid, code)

            threading.Thread(target=wait, name=f"watch-worker-{process.pid}", daemon=True).start()

    def stop(self) -> None:
        """End the workers and the broker and remove the folder. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for process in self.processes:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("local backtest worker %d did not stop; killing it", process.pid)
                process.kill()
                process.wait()
        if self._broker is not None:
            self._broker.stop()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def run_sweep(
    plan: SweepPlan,
    config: Config,
    *,
    local_workers: int | None,
    config_path: Path | None = None,
    options: SweepOptions | None = None,
    on_progress: ProgressCallback | None = None,
) -> SweepOutcome:
    """Run ``plan`` to the end and return its outcome (blocking; runs its own event loop).

    With ``local_workers`` set, on that many local worker processes behind a private broker
    (:class:`LocalCluster`); otherwise on the workers of the broker ``config``'s ``[cluster]``
    names (``inproc`` is refused: nothing outside this process could serve it). Jobs are tasks
    in ``config``'s state store; ``on_progress`` is called after each finished combination.
    """
    from trader.app import open_state_store
    from trader.bus.topology import BusSettings

    options = options or SweepOptions()

    async def coordinate(
        endpoint: str, security: Security | None, cluster: LocalCluster | None
    ) -> SweepOutcome:
        async with open_state_store(config) as store:
            coordinator = SweepCoordinator(
                plan,
                store,
                endpoint,
                security=security,
                cluster=cluster,
                options=options,
                on_progress=on_progress,
            )
            return await coordinator.run()

    if local_workers is not None:
        with LocalCluster(
            local_workers, config_path=config_path, heartbeat=options.heartbeat
        ) as cluster:
            return asyncio.run(coordinate(cluster.endpoint, None, cluster))
    settings = BusSettings.from_config(config)
    if settings.in_process:
        raise SweepError(
            '[cluster] transport is "inproc": no remote worker can reach it; use local workers '
            'or set transport = "ipc" or "tcp" with `trader broker` and `trader worker '
            "backtest` running"
        )
    security = settings.client_security()
    return asyncio.run(coordinate(settings.broker, security, None))
