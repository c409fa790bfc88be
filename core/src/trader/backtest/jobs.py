"""Backtest jobs on the bus: the ``backtest`` service a worker runs, and its messages.

A sweep coordinator (:mod:`trader.backtest.sweep`) sends one :class:`BacktestJob` per parameter
combination to the ``backtest`` service. The job carries everything a worker needs except the
candles: the strategy's source (with its SHA-256, checked on arrival), the bound parameters, the
series and time range, and the run's settings (:class:`RunSettings`). The worker reads the
candles from *its own* configured candle store, keeping the last few ranges it read in memory
(:class:`CandleCache`), so a sweep loads its candles once per worker, not once per job.

The protocol of one job, from the worker's side:

1. It tells the coordinator it is starting (:class:`JobStarted`, a call to the coordinator's
   own service named in ``report_to``) and runs the job only if the coordinator answers
   ``proceed`` (a job the coordinator has meanwhile given to another worker is skipped).
2. It runs the backtest on a thread of its own, so the worker's event loop keeps answering the
   broker's heartbeats, and sends :class:`JobProgress` every ``progress_interval`` seconds while
   the backtest runs (how the coordinator knows a remote worker is alive).
3. It replies with a :class:`JobOutcome`: ``done`` with a compact summary (the metrics, the
   number of trades and the final equity, exactly what ``trader backtest --json`` prints),
   ``failed`` with a one-line message (a strategy or data error another worker would hit too),
   or ``skipped``.

A worker process runs :func:`serve_backtest_worker` (``trader worker backtest``);
:func:`worker_argv` is the command line a coordinator uses to start local ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from trader.bus.codec import Message
from trader.bus.errors import BusError
from trader.bus.service import Service, handler
from trader.errors import DataError, TraderError
from trader.model import CandleArrays, Market, SeriesKey
from trader.timeutil import format_time

if TYPE_CHECKING:
    from trader.backtest.engine import BacktestSettings
    from trader.backtest.result import BacktestResult
    from trader.bus.client import Client
    from trader.bus.transport import Security
    from trader.interfaces import CandleStore, StrategyRuntime

__all__ = [
    "SERVICE",
    "BacktestJob",
    "BacktestService",
    "CandleCache",
    "JobAck",
    "JobOutcome",
    "JobProgress",
    "JobStarted",
    "RunSettings",
    "StrategySource",
    "job_summary",
    "no_candles_message",
    "run_job",
    "serve_backtest_worker",
    "worker_argv",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The bus service backtest workers serve.
SERVICE: Final = "backtest"
#: Seconds a worker waits for the coordinator to answer its start report.
REPORT_TIMEOUT: Final = 10.0
#: Candle ranges a worker keeps in memory (least recently used is dropped first).
CANDLE_CACHE_SIZE: Final = 4


# what a job carries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategySource:
    """A strategy file as jobs ship it: language, file name, source text and its SHA-256."""

    language: str
    filename: str
    source: str
    sha256: str

    @classmethod
    def of(cls, language: str, filename: str, source: str) -> StrategySource:
        """The source with its hash computed."""
        return cls(language, filename, source, source_hash(source))


def source_hash(source: str) -> str:
    """The SHA-256 of a strategy's source text (UTF-8), as hex."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RunSettings:
    """How one backtest runs, as ``trader backtest`` options set it; travels with every job.

    ``maker_fee``/``taker_fee`` of ``None`` keep the paper exchange's defaults. Prices and
    amounts are kept to ``decimals`` places with no minimum order size (stored candles do not
    carry an exchange's rules).
    """

    initial_cash: Decimal = Decimal(10_000)
    maker_fee: Decimal | None = None
    taker_fee: Decimal | None = None
    fill_timing: str = "next_open"
    sizing_mode: str = "fraction_of_equity"
    sizing_value: Decimal = Decimal(1)
    whole_units: bool = False
    assignment: str = "backtest"
    timeframe_ms: int | None = None
    decimals: int = 8

    def backtest_settings(self) -> BacktestSettings:
        """The engine's settings; a :class:`~trader.errors.ModelError` when a value is invalid."""
        from trader.backtest.engine import BacktestSettings
        from trader.backtest.sizing import Sizing, SizingMode
        from trader.paper import FillSettings, FillTiming

        timing = FillTiming(self.fill_timing)
        fills = FillSettings(timing=timing)
        if self.maker_fee is not None or self.taker_fee is not None:
            fills = FillSettings(
                timing=timing,
                maker_fee=fills.maker_fee if self.maker_fee is None else self.maker_fee,
                taker_fee=fills.taker_fee if self.taker_fee is None else self.taker_fee,
            )
        return BacktestSettings(
            initial_cash=self.initial_cash,
            fills=fills,
            sizing=Sizing(SizingMode(self.sizing_mode), self.sizing_value, self.whole_units),
            assignment=self.assignment,
            timeframe_ms=self.timeframe_ms,
        )

    def market(self, symbol: str) -> Market:
        """The market the run trades: ``symbol`` with ``decimals`` places for prices and amounts."""
        from trader.model.market import Precision, PrecisionMode

        places = Precision(PrecisionMode.DECIMALS, Decimal(self.decimals))
        return Market(symbol, places, places)

    def to_wire(self) -> dict[str, Any]:
        """The settings as a plain dict (decimals stay exact on the bus)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_wire(cls, data: Any) -> RunSettings:
        """Settings from :meth:`to_wire`'s dict; a :class:`TraderError` for a malformed one."""
        if not isinstance(data, Mapping):
            raise TraderError(
                "the job's settings are not a table; is the coordinator the same version?"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TraderError(
                f"the job's settings have unknown fields {unknown}; upgrade this worker to the "
                "coordinator's version"
            )
        try:
            values = dict(data)
            for name in ("initial_cash", "sizing_value", "maker_fee", "taker_fee"):
                if values.get(name) is not None:
                    values[name] = Decimal(values[name])
            return cls(**values)
        except (TypeError, ValueError, InvalidOperation) as error:
            raise TraderError(f"the job's settings are malformed: {error}") from None


# messages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestJob(Message, type_name="backtest.job"):
    """Run one backtest: a request to the ``backtest`` service.

    ``task_id`` and ``attempt`` name the coordinator's task and this try at it; ``report_to`` is
    the coordinator's service that takes :class:`JobStarted` and :class:`JobProgress` (empty:
    run without reporting). ``params`` are the bound strategy parameters; ``start``/``end`` the
    half-open range of candle open times (``None``: unbounded); ``settings`` a
    :meth:`RunSettings.to_wire` dict.
    """

    sweep: str
    task_id: str
    attempt: int
    report_to: str
    progress_interval: float
    language: str
    filename: str
    source: str
    source_hash: str
    params: dict[str, Any]
    series: SeriesKey
    start: int | None
    end: int | None
    settings: dict[str, Any]


@dataclass(frozen=True)
class JobOutcome(Message, type_name="backtest.outcome"):
    """A worker's answer to a :class:`BacktestJob`.

    ``status`` is ``done`` (``summary`` holds :func:`job_summary`), ``failed`` (``error`` says
    why in one line; another worker would fail the same way) or ``skipped`` (the worker did not
    run it: the coordinator gave it to another worker, or could not be reached).
    """

    task_id: str
    attempt: int
    status: str
    summary: dict[str, Any] | None
    error: str
    worker: str
    seconds: float


@dataclass(frozen=True)
class JobStarted(Message, type_name="backtest.job_started"):
    """A worker is about to run attempt ``attempt`` of task ``task_id`` (to the coordinator)."""

    sweep: str
    task_id: str
    attempt: int
    worker: str
    host: str
    pid: int


@dataclass(frozen=True)
class JobProgress(Message, type_name="backtest.job_progress"):
    """A worker still runs attempt ``attempt`` of task ``task_id`` (to the coordinator)."""

    sweep: str
    task_id: str
    attempt: int
    worker: str


@dataclass(frozen=True)
class JobAck(Message, type_name="backtest.job_ack"):
    """The coordinator's answer to a report: ``proceed`` is False when the attempt is stale."""

    proceed: bool


# running one job -------------------------------------------------------------------------------


def job_summary(result: BacktestResult) -> dict[str, Any]:
    """A run's compact summary: its metrics, number of trades and final equity (an exact
    decimal string). Non-finite figures (a profit factor without losses) become ``None``.

    This is what ``trader backtest --json`` prints and what a job sends back."""
    metrics = {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in result.metrics.as_dict().items()
    }
    return {
        "metrics": metrics,
        "trades": len(result.trades),
        "final_equity": str(result.final_equity),
    }


def no_candles_message(series: SeriesKey, start: int | None, end: int | None) -> str:
    """The error for a series with no stored candles in ``[start, end)``."""
    where = ""
    if start is not None or end is not None:
        low = "the start" if start is None else format_time(start)
        high = "the end" if end is None else format_time(end)
        where = f" from {low} to {high}"
    return (
        f"no stored candles for {series}{where}; fill the store with `trader data import` or "
        "`trader data download` (`trader data list` shows what is stored)"
    )


def one_line(error: BaseException) -> str:
    """An error's message cut to its first line (strategy errors read ``file:line: what``)."""
    text = str(error)
    first = text.splitlines()[0] if text else ""
    return first or type(error).__name__


def run_job(
    runtime: StrategyRuntime,
    strategy: StrategySource,
    params: Mapping[str, Any],
    candles: CandleArrays,
    symbol: str,
    settings: RunSettings,
) -> BacktestResult:
    """Load a fresh instance of ``strategy`` with ``params`` and backtest it on ``candles``.

    The same steps as a single ``trader backtest`` run (default limits, untrusted), so a job's
    result equals that run's. Strategy errors raise :class:`~trader.errors.StrategyError`.
    """
    from trader.backtest.engine import decide, run_decisions
    from trader.interfaces import Limits

    run = settings.backtest_settings()
    instance = runtime.load(strategy.source, strategy.filename, params, Limits(), trusted=False)
    try:
        rows = decide(instance, candles, run.assignment)
        return run_decisions(rows, candles, settings.market(symbol), run)
    finally:
        instance.close()


class CandleCache:
    """Candles read from a candle store, the last ``size`` ranges kept in memory.

    Keyed by (series, start, end): the jobs of a sweep share one range, so a worker reads it
    once. An empty range is a :class:`~trader.errors.DataError` (and is not kept).
    """

    def __init__(self, store: CandleStore, size: int = CANDLE_CACHE_SIZE) -> None:
        self.store = store
        self.size = max(1, size)
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[tuple[SeriesKey, int | None, int | None], CandleArrays] = (
            OrderedDict()
        )
        self._lock = asyncio.Lock()

    async def get(self, series: SeriesKey, start: int | None, end: int | None) -> CandleArrays:
        """The candles of ``series`` in ``[start, end)``, oldest first."""
        key = (series, start, end)
        async with self._lock:  # two jobs asking for one range read it once
            candles = self._cache.get(key)
            if candles is not None:
                self.hits += 1
                self._cache.move_to_end(key)
                return candles
            self.misses += 1
            candles = await self.store.read(series, start, end)
            if not len(candles):
                raise DataError(no_candles_message(series, start, end))
            self._cache[key] = candles
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
            return candles


def _runtime(language: str) -> StrategyRuntime:
    from trader.cli.strategy_cmd import build_runtime

    return build_runtime(language)


class BacktestService(Service):
    """The ``backtest`` bus service: runs :class:`BacktestJob` requests, one at a time.

    ``candles`` supplies the candles (the worker's own store, cached); ``reporter`` is a bus
    client used to report to the coordinator (``None``: never report, run every job).
    ``worker`` names this worker in reports (default ``HOST:PID``). The strategy runtime of
    each language is built once; every job loads a fresh strategy instance from its source
    (checked against its SHA-256), since instances keep state.
    """

    name = SERVICE

    def __init__(
        self,
        candles: CandleCache,
        reporter: Client | None = None,
        *,
        worker: str | None = None,
        runtime_factory: Callable[[str], StrategyRuntime] = _runtime,
    ) -> None:
        self.candles = candles
        self.reporter = reporter
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker = worker or f"{self.host}:{self.pid}"
        self.jobs_run = 0
        self._runtime_factory = runtime_factory
        self._runtimes: dict[str, StrategyRuntime] = {}

    @handler
    async def run(self, job: BacktestJob) -> JobOutcome:
        """Run ``job`` (see the module docstring for the reports around it)."""
        began = time.perf_counter()
        if job.report_to:
            report = JobStarted(
                job.sweep, job.task_id, job.attempt, self.worker, self.host, self.pid
            )
            ack = await self._report(job.report_to, report, REPORT_TIMEOUT)
            if ack is None:
                return self._outcome(job, "skipped", began, error="the coordinator did not answer")
            if not ack.proceed:
                return self._outcome(job, "skipped", began, error="the coordinator gave it away")
        try:
            strategy, runtime = self._strategy(job)
            settings = RunSettings.from_wire(job.settings)
            candles = await self.candles.get(job.series, job.start, job.end)
        except TraderError as error:
            return self._outcome(job, "failed", began, error=one_line(error))
        work = _in_thread(
            run_job, runtime, strategy, job.params, candles, job.series.symbol, settings
        )
        interval = job.progress_interval
        reporting = bool(job.report_to) and 0 < interval < math.inf
        while True:
            done, _ = await asyncio.wait({work}, timeout=interval if reporting else None)
            if done:
                break
            progress = JobProgress(job.sweep, job.task_id, job.attempt, self.worker)
            await self._report(job.report_to, progress, max(interval, 1.0))
        self.jobs_run += 1
        try:
            result = work.result()
            summary = job_summary(result)
        except TraderError as error:  # StrategyError with file:line, DataError...
            return self._outcome(job, "failed", began, error=one_line(error))
        except Exception as error:  # a bug, not the user's: say which, keep serving
            log.exception("backtest job %s failed unexpectedly", job.task_id)
            return self._outcome(job, "failed", began, error=f"{type(error).__name__}: {error}")
        return self._outcome(job, "done", began, summary=summary)

    def _strategy(self, job: BacktestJob) -> tuple[StrategySource, StrategyRuntime]:
        if source_hash(job.source) != job.source_hash:  # microseconds: checked every time
            raise TraderError(
                f"{job.filename}: the source does not match its SHA-256; the job was damaged "
                "on the way"
            )
        runtime = self._runtimes.get(job.language)
        if runtime is None:
            runtime = self._runtimes[job.language] = self._runtime_factory(job.language)
        return StrategySource(job.language, job.filename, job.source, job.source_hash), runtime

    async def _report(self, service: str, message: Message, timeout: float) -> JobAck | None:
        if self.reporter is None:
            return JobAck(True)
        try:
            return await self.reporter.call(service, message, timeout=timeout, expect=JobAck)
        except BusError as error:
            log.warning("backtest worker %s: report to %s failed: %s", self.worker, service, error)
            return None

    def _outcome(
        self,
        job: BacktestJob,
        status: str,
        began: float,
        *,
        summary: dict[str, Any] | None = None,
        error: str = "",
    ) -> JobOutcome:
        seconds = time.perf_counter() - began
        return JobOutcome(job.task_id, job.attempt, status, summary, error, self.worker, seconds)


def _in_thread(function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run ``function(*args)`` on a new daemon thread; its result as a future of this loop.

    A daemon thread, unlike an executor's, never holds up the process's exit: a worker told to
    stop while a strategy hangs still ends.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            value = function(*args)
        except BaseException as error:  # handed to the loop, which re-raises it to the caller
            _post(loop, future, None, error)
        else:
            _post(loop, future, value, None)

    threading.Thread(target=target, name="backtest-job", daemon=True).start()
    return future


def _post(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    value: Any,
    error: BaseException | None,
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, value, error)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


# the worker process ----------------------------------------------------------------------------


async def serve_backtest_worker(
    endpoint: str,
    store: CandleStore,
    *,
    security: Security | None = None,
    worker: str | None = None,
    heartbeat: float = 1.0,
    stop: asyncio.Event | None = None,
    ready: Callable[[BacktestService], None] | None = None,
) -> BacktestService:
    """Serve the ``backtest`` service for the broker at ``endpoint`` until ``stop`` is set.

    Candles come from ``store`` (cached per range); one job runs at a time. ``ready`` is called
    once the worker is started (it announces itself to the broker in the background). Returns
    the service (its counters) after stopping.
    """
    from trader.bus.client import Client
    from trader.bus.service import ServiceHost

    stop = stop or asyncio.Event()
    async with Client(endpoint, security=security, heartbeat_interval=heartbeat) as reporter:
        service = BacktestService(CandleCache(store), reporter, worker=worker)
        async with ServiceHost(
            endpoint,
            [service],
            security=security,
            concurrency=1,
            heartbeat_interval=heartbeat,
            local_calls=False,
        ):
            if ready is not None:
                ready(service)
            await stop.wait()
    return service


def worker_argv(
    endpoint: str,
    *,
    name: str,
    config_path: Path | None = None,
    heartbeat: float = 1.0,
    python: str = sys.executable,
) -> list[str]:
    """The command line of a local backtest worker process for the broker at ``endpoint``.

    ``trader worker backtest`` with ``--watch-stdin``: the worker stops when its standard input
    closes, so it ends with the coordinator that started it (with a pipe as its stdin), however
    that one ends.
    """
    argv = [python, "-m", "trader"]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    argv += [
        "worker",
        "backtest",
        "--broker",
        endpoint,
        "--name",
        name,
        "--heartbeat",
        repr(heartbeat),
        "--watch-stdin",
        "--quiet",
    ]
    return argv
