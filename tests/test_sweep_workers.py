"""Sweeps on real worker processes: a worker killed or frozen mid-job, Ctrl-C, a killed coordinator.

Every test runs real ``trader worker backtest`` processes (local ones a
:class:`~trader.backtest.sweep.LocalCluster` starts, or remote ones behind a broker process
started here), real SQLite stores and the real Python strategy runtime. The strategy hangs on
purpose where a test needs a job that is provably running when its worker is killed: the first
run of the chosen combination creates a marker file (O_EXCL, so exactly one run does) with its
process id and then waits for ever; later runs find the marker and trade normally. Waits are on
task steps, process lines or files, each bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from trader.app import open_candle_store, open_state_store
from trader.backtest.jobs import RunSettings, StrategySource, job_summary, run_job
from trader.backtest.sweep import (
    LocalCluster,
    SweepCoordinator,
    SweepOptions,
    SweepOutcome,
    SweepPlan,
)
from trader.config import load_config
from trader.interfaces import TaskRecord, TaskTransition
from trader.model import CandleArrays, SeriesKey, Timeframe
from trader.plugins import get_plugin_manager
from trader.registry import Kind
from trader.synthetic import generate_candles
from trader_sdk.testing.processes import ProcessGroup

pytest.importorskip("trader_strategy_python")

T = TypeVar("T")
M1 = Timeframe.parse("1m")
SERIES = SeriesKey("demo", "BTC/USD", M1)
START = 1_704_067_200_000
HANG_FAST = 6
SETTINGS = RunSettings(assignment="hang", timeframe_ms=M1.nominal_ms)

#: An SMA crossover whose first run with ``fast == hang_fast`` hangs (see the module docstring);
#: with ``hang_dir`` set, every run writes its pid there and hangs.
STRATEGY = """
import os
import threading

params = {
    "fast": {"default": 10, "min": 2, "max": 50, "step": 1},
    "slow": {"default": 30, "min": 5, "max": 200, "step": 1},
    "hang_fast": {"default": 0},
    "marker": {"default": ""},
    "hang_dir": {"default": ""},
}


def _hang(path):
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    threading.Event().wait()


def init(ctx):
    if ctx.params.hang_dir:
        _hang(os.path.join(ctx.params.hang_dir, "%d-%d" % (os.getpid(), ctx.params.fast)))
    if ctx.params.marker and ctx.params.fast == ctx.params.hang_fast:
        _hang(ctx.params.marker)
    ctx.state["fast"] = ta.sma(ctx.params.fast)
    ctx.state["slow"] = ta.sma(ctx.params.slow)


def on_candle(ctx, candles):
    fast = ctx.state["fast"].update(candles.close[-1])
    slow = ctx.state["slow"].update(candles.close[-1])
    if slow is None:
        return None
    return 1 if fast > slow else -1
"""


def run(coroutine: Awaitable[T], timeout: float = 120.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


async def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@pytest.fixture
def config() -> Any:
    if not Path("/proc/self/stat").exists():
        pytest.skip("these tests read process states from /proc")
    return load_config(
        None, host=get_plugin_manager(), components=["storage.candles", "storage.state"]
    )


@pytest.fixture
def candles(config: Any) -> CandleArrays:
    stored = generate_candles(M1, START, 3_000, seed=23)

    async def write() -> None:
        async with open_candle_store(config) as store:
            await store.write(SERIES, stored)

    asyncio.run(write())
    return stored


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path (ipc socket paths are limited to about 100 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="sweep-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def strategy_file(folder: Path) -> StrategySource:
    path = folder / "hang.py"
    path.write_text(STRATEGY)
    return StrategySource.of("python", str(path), STRATEGY)


def grid(marker: Path) -> list[dict[str, Any]]:
    base = {"slow": 20, "hang_fast": HANG_FAST, "marker": str(marker), "hang_dir": ""}
    return [{"fast": fast, **base} for fast in (5, 6, 7, 8)]


def direct(strategy: StrategySource, params: dict[str, Any], candles: CandleArrays) -> Any:
    runtime = get_plugin_manager().build(Kind.STRATEGY_RUNTIME, "python", None, None)
    return job_summary(run_job(runtime, strategy, params, candles, "BTC/USD", SETTINGS))


class Saboteur:
    """A task listener that stops the worker running the hanging job once it provably hangs.

    Workers report progress while a job runs; on a ``progress`` step of the hanging
    combination's first attempt, once the marker file holds the hanging process's id, it
    sends that process ``sig``.
    """

    def __init__(self, marker: Path, sig: signal.Signals) -> None:
        self.marker = marker
        self.sig = sig
        self.victim: int | None = None
        self.steps: dict[str, list[tuple[str, str, str]]] = {}

    def __call__(self, task: TaskRecord, step: TaskTransition) -> None:
        self.steps.setdefault(task.task_id, []).append((step.source, step.trigger, step.dest))
        if self.victim is not None or step.trigger != "progress":
            return
        if task.payload["params"]["fast"] != HANG_FAST or task.payload["attempt"] != 1:
            return
        if not self.marker.exists() or not self.marker.read_text():
            return  # not hanging yet: wait for the next progress step
        pid = int(self.marker.read_text())
        assert pid == task.payload["pid"]  # the worker the task says runs it
        self.victim = pid
        os.kill(pid, self.sig)


def rows_of(outcome: SweepOutcome) -> list[Any]:
    """The rows, each with its task id (every row of a finished sweep has one)."""
    assert all(row.task_id for row in outcome.rows)
    return list(outcome.rows)


async def history_of(config: Any, task_id: str) -> list[tuple[str, str, str]]:
    async with open_state_store(config) as store:
        return [(s.source, s.trigger, s.dest) for s in await store.task_history(task_id)]


def final_pid(config: Any, task_id: str | None) -> int:
    """The pid of the worker that finished task ``task_id`` (from its stored payload)."""

    async def read() -> int:
        async with open_state_store(config) as store:
            task = await store.get_task(task_id or "")
        assert task is not None and task.state == "done"
        return int(task.payload["pid"])

    return run(read())


def check_results(
    outcome: SweepOutcome,
    histories: dict[str, list[tuple[str, str, str]]],
    strategy: StrategySource,
    candles: CandleArrays,
    lost: tuple[str, str, str],
    victim: int | None,
) -> None:
    """Every combination done exactly once, equal to running it alone; the hanging one was
    sent back to the queue by ``lost`` and finished by another worker."""
    assert victim is not None
    assert [row.status for row in outcome.rows] == ["done"] * 4, [r.error for r in outcome.rows]
    for row in outcome.rows:
        steps = histories[row.task_id or ""]
        assert sum(1 for step in steps if step[1] == "finish") == 1
        assert row.metrics == direct(strategy, row.params, candles)["metrics"]
        assert (row.trades, row.final_equity) == tuple(
            direct(strategy, row.params, candles)[k] for k in ("trades", "final_equity")
        )
        if row.params["fast"] != HANG_FAST:
            assert row.attempts == 1 and "queued" not in [s[2] for s in steps[1:]]
            continue
        assert row.attempts == 2
        assert steps[:3] == [
            ("queued", "dispatch", "dispatched"),
            ("dispatched", "start", "running"),
            ("running", "progress", "running"),
        ]
        assert lost in steps
        assert steps[-3:] == [
            ("queued", "dispatch", "dispatched"),
            ("dispatched", "start", "running"),
            ("running", "finish", "done"),
        ]
    assert outcome.reruns == 1


def test_a_local_worker_killed_mid_job_has_its_job_run_by_another(
    config: Any, candles: CandleArrays, short_dir: Path
) -> None:
    strategy = strategy_file(short_dir)
    marker = short_dir / "hung"
    plan = SweepPlan(strategy, SERIES, None, None, SETTINGS, grid(marker))
    saboteur = Saboteur(marker, signal.SIGKILL)
    options = SweepOptions(lease=2.0, progress_interval=0.1, heartbeat=0.5, worker_wait=60)

    async def sweep() -> tuple[SweepOutcome, dict[str, list[tuple[str, str, str]]], list[int]]:
        with LocalCluster(2, heartbeat=0.5) as cluster:
            async with open_state_store(config) as store:
                coordinator = SweepCoordinator(
                    plan,
                    store,
                    cluster.endpoint,
                    cluster=cluster,
                    options=options,
                    listeners=[saboteur],
                )
                outcome = await coordinator.run()
            histories = {r.task_id: await history_of(config, r.task_id) for r in rows_of(outcome)}
        return outcome, histories, cluster.pids

    outcome, histories, pids = run(sweep())
    lost = ("running", "worker_lost", "queued")
    check_results(outcome, histories, strategy, candles, lost, saboteur.victim)
    hung = next(row for row in outcome.rows if row.params["fast"] == HANG_FAST)
    lost_note = [s for s in histories[hung.task_id or ""] if s[1] == "worker_lost"]
    assert len(lost_note) == 1
    assert saboteur.victim in pids and hung.worker is not None
    assert final_pid(config, hung.task_id) in set(pids) - {saboteur.victim}  # done elsewhere
    assert not any(alive(pid) for pid in pids)  # the cluster ended its workers


def test_a_frozen_remote_worker_times_out_and_its_job_runs_elsewhere(
    config: Any, candles: CandleArrays, short_dir: Path
) -> None:
    strategy = strategy_file(short_dir)
    marker = short_dir / "hung"
    endpoint = f"ipc://{short_dir}/broker.ipc"
    settings = short_dir / "trader.toml"
    settings.write_text(f'[cluster]\ntransport = "ipc"\nbroker = "{endpoint}"\n')
    plan = SweepPlan(strategy, SERIES, None, None, SETTINGS, grid(marker))
    saboteur = Saboteur(marker, signal.SIGSTOP)
    options = SweepOptions(lease=1.5, progress_interval=0.1, heartbeat=0.5, worker_wait=60)
    group = ProcessGroup(short_dir)

    async def sweep() -> tuple[SweepOutcome, dict[str, list[tuple[str, str, str]]]]:
        group.start("-m", "trader.bus.broker", endpoint, "--heartbeat", "0.5")
        await group.line("ipc://")
        for name in ("remote-1", "remote-2"):
            group.start(
                "-m", "trader", "--config", str(settings), "worker", "backtest",
                "--name", name, "--heartbeat", "0.5",
            )  # fmt: skip
        await group.line("worker remote-")
        await group.line("worker remote-")
        async with open_state_store(config) as store:
            coordinator = SweepCoordinator(
                plan, store, endpoint, options=options, listeners=[saboteur]
            )
            outcome = await coordinator.run()
        histories = {r.task_id: await history_of(config, r.task_id) for r in rows_of(outcome)}
        return outcome, histories

    try:
        outcome, histories = run(sweep())
    finally:
        if saboteur.victim is not None:
            os.kill(saboteur.victim, signal.SIGKILL)  # a stopped process ignores SIGTERM
        group.stop_all()
    lost = ("running", "timeout", "queued")
    check_results(outcome, histories, strategy, candles, lost, saboteur.victim)
    hung = next(row for row in outcome.rows if row.params["fast"] == HANG_FAST)
    assert hung.worker in ("remote-1", "remote-2")
    assert final_pid(config, hung.task_id) != saboteur.victim  # done elsewhere
    assert outcome.workers == 2


def start_cli_sweep(group: ProcessGroup, folder: Path, hang_dir: Path) -> subprocess.Popen[str]:
    path = folder / "hang.py"
    path.write_text(STRATEGY)
    return group.start(
        "-m", "trader", "backtest", str(path), "-e", "demo", "-s", "BTC/USD", "-t", "1m",
        "--sweep", "fast=5:8", "--workers", "2", "-p", f"hang_dir={hang_dir}", "--json",
    )  # fmt: skip


def hung_pids(hang_dir: Path) -> list[int]:
    return sorted({int(path.name.split("-")[0]) for path in hang_dir.iterdir()})


def test_ctrl_c_ends_the_sweep_its_workers_and_its_open_jobs(
    config: Any, candles: CandleArrays, short_dir: Path
) -> None:
    hang_dir = short_dir / "hangs"
    hang_dir.mkdir()
    group = ProcessGroup(short_dir)

    async def scenario() -> tuple[int, list[int]]:
        coordinator = start_cli_sweep(group, short_dir, hang_dir)
        await eventually(lambda: len(hung_pids(hang_dir)) == 2)  # both workers are running jobs
        workers = hung_pids(hang_dir)
        coordinator.send_signal(signal.SIGINT)
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, coordinator.wait, 30)
        return code, workers

    try:
        code, workers = run(scenario())
    finally:
        group.stop_all()
    assert code == 130  # Ctrl-C's usual status
    assert not any(alive(pid) for pid in workers)  # stopped and reaped before the exit

    async def jobs() -> list[TaskRecord]:
        async with open_state_store(config) as store:
            return await store.list_tasks(task_type="backtest_job")

    tasks = run(jobs())
    assert tasks and all(task.state == "failed" for task in tasks)
    stopped = "the sweep stopped before this job finished: it was interrupted"
    assert all(task.payload["error"] == stopped for task in tasks)


def test_a_killed_coordinator_takes_its_workers_with_it(
    config: Any, candles: CandleArrays, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(short_dir))  # the broker's folder, which a kill leaves
    hang_dir = short_dir / "hangs"
    hang_dir.mkdir()
    group = ProcessGroup(short_dir)

    async def scenario() -> list[int]:
        coordinator = start_cli_sweep(group, short_dir, hang_dir)
        await eventually(lambda: len(hung_pids(hang_dir)) == 2)
        workers = hung_pids(hang_dir)
        coordinator.kill()  # no chance to clean up: the workers see their stdin close
        await eventually(lambda: not any(alive(pid) for pid in workers))
        return workers

    try:
        workers = run(scenario())
    finally:
        group.stop_all()
    assert len(workers) == 2


def test_the_json_of_a_sweep_is_one_document(
    config: Any, candles: CandleArrays, short_dir: Path
) -> None:
    """Worker output never reaches the sweep's stdout: the strategy prints, JSON stays valid."""
    path = short_dir / "loud.py"
    path.write_text(STRATEGY.replace("def init(ctx):\n", "def init(ctx):\n    print('hello')\n"))
    result = subprocess.run(
        [
            sys.executable,
            "-m", "trader", "backtest", str(path), "-e", "demo", "-s", "BTC/USD", "-t", "1m",
            "--sweep", "fast=5:6", "--workers", "2", "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["done"] == 2
    assert "hello" in result.stderr
