"""``trader backtest --sweep`` and ``--report``, and ``trader worker``, as a user runs them.

Sweeps here run on real local worker processes (``trader worker backtest``) behind a private
broker, over the real SQLite candle and state stores of the test's TRADER_HOME.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from trader.app import open_candle_store, open_state_store
from trader.backtest.jobs import RunSettings, StrategySource, job_summary, run_job
from trader.cli.main import main
from trader.config import load_config
from trader.model import CandleArrays, SeriesKey, Timeframe
from trader.plugins import get_plugin_manager
from trader.registry import Kind
from trader.synthetic import generate_candles
from trader.timeutil import parse_time

pytest.importorskip("trader_strategy_python")

M1 = Timeframe.parse("1m")
START = parse_time("2024-01-01")
SERIES_KEY = SeriesKey("demo", "BTC/USD", M1)
SERIES = ["--exchange", "demo", "--symbol", "BTC/USD", "--timeframe", "1m"]

#: An SMA crossover that raises in ``init`` when ``fast`` equals ``fail_fast``.
STRATEGY = """
params = {
    "fast": {"default": 10, "min": 2, "max": 50, "step": 1},
    "slow": {"default": 30, "min": 5, "max": 200, "step": 1},
    "fail_fast": {"default": 0},
    "far": {"default": 1, "min": 0, "max": 1000000, "step": 1},
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


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(*args: str) -> Outcome:
    """Run the ``trader`` entry point as a user would (its error handling included)."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main(list(args))
        except SystemExit as done:
            code = done.code
        else:
            code = 0
    return Outcome(int(code or 0), out.getvalue().decode(), err.getvalue().decode())


def store_candles(count: int = 2_000) -> CandleArrays:
    candles = generate_candles(M1, START, count, seed=5)

    async def write() -> None:
        config = load_config(None, host=get_plugin_manager(), components=["storage.candles"])
        async with open_candle_store(config) as store:
            await store.write(SERIES_KEY, candles)

    asyncio.run(write())
    return candles


@pytest.fixture
def strategy(tmp_path: Path) -> Path:
    path = tmp_path / "cross.py"
    path.write_text(STRATEGY)
    return path


def direct(path: Path, candles: CandleArrays, params: dict[str, Any]) -> dict[str, Any]:
    """One combination run alone in this process, with the CLI's default settings."""
    runtime = get_plugin_manager().build(Kind.STRATEGY_RUNTIME, "python", None, None)
    settings = RunSettings(assignment=path.stem, timeframe_ms=M1.nominal_ms)
    source = StrategySource.of("python", str(path), path.read_text())
    return job_summary(run_job(runtime, source, params, candles, "BTC/USD", settings))


def sweep_json(*args: str) -> dict[str, Any]:
    result = invoke("backtest", *args, "--json")
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_a_sweep_runs_every_combination_on_workers_and_ranks_them(strategy: Path) -> None:
    candles = store_candles()
    output = sweep_json(
        str(strategy), *SERIES, "--sweep", "fast=5:7", "--sweep", "slow=20,40", "--workers", "2"
    )
    rows = output["rows"]
    assert (output["combinations"], output["done"], output["failed"]) == (6, 6, 0)
    assert output["sort_by"] == "sharpe" and output["workers"] in (1, 2)
    assert sorted(row["index"] for row in rows) == list(range(6))
    sharpes = [row["metrics"]["sharpe"] for row in rows]
    assert sharpes == sorted(sharpes, reverse=True)
    for row in rows:
        params = row["params"]
        assert type(params["fast"]) is int and params["fail_fast"] == 0
        summary = direct(strategy, candles, params)
        assert {k: row[k] for k in ("metrics", "trades", "final_equity")} == summary
        assert row["status"] == "done" and row["attempts"] == 1


def test_ranking_by_drawdown_is_lowest_first_and_failures_come_last(strategy: Path) -> None:
    store_candles()
    output = sweep_json(
        str(strategy),
        *SERIES,
        "--sweep",
        "fast=5,6,8",
        "-p",
        "fail_fast=6",
        "--sort-by",
        "max_drawdown",
        "--workers",
        "1",
    )
    rows = output["rows"]
    assert [row["status"] for row in rows] == ["done", "done", "failed"]
    assert rows[0]["metrics"]["max_drawdown"] <= rows[1]["metrics"]["max_drawdown"]
    assert rows[2]["params"]["fast"] == 6
    assert rows[2]["error"] == f"{strategy}:{RAISE_LINE}: ValueError: fast 6 is refused"


def test_the_table_shows_the_top_rows_and_the_summary(strategy: Path) -> None:
    store_candles()
    result = invoke(
        "backtest", str(strategy), *SERIES, "--sweep", "fast=5:8", "--top", "2", "--workers", "2"
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "4 combinations, ranked by sharpe (highest first)" in out
    assert "the best 2 of 4; --top N shows more, --json all" in out
    assert "sweep: 4 done, 0 failed, 0 re-run after a lost worker" in out
    assert out.count("│ 1 │") == 1 and "│ 3 │" not in out


def test_the_jobs_are_tasks_in_the_state_store(strategy: Path) -> None:
    store_candles()
    output = sweep_json(str(strategy), *SERIES, "--sweep", "fast=5,6", "--workers", "1")

    async def read() -> list[Any]:
        config = load_config(None, host=get_plugin_manager(), components=["storage.state"])
        async with open_state_store(config) as store:
            return await store.list_tasks(task_type="backtest_job")

    tasks = asyncio.run(read())
    assert {task.task_id for task in tasks} == {row["task_id"] for row in output["rows"]}
    assert all(
        task.state == "done" and task.payload["sweep"] == output["sweep_id"] for task in tasks
    )


def test_every_combination_failing_is_an_error(strategy: Path) -> None:
    store_candles()
    result = invoke(
        "backtest", str(strategy), *SERIES, "--sweep", "fast=6", "-p", "fail_fast=6", "--json"
    )
    assert result.exit_code == 1
    assert "error: no combination ran to the end; the first failed with: " in result.stderr
    assert json.loads(result.stdout)["failed"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "fast=1:5"], "1 is below params.fast's min 2"),
        (["--sweep", "speed=1:5"], "unknown parameter 'speed'"),
        (["--sweep", "fast=5:9", "-p", "fast=5"], "both set with --param and swept"),
        (["--sweep", "far=0:1000000:1"], "more than the 10,000 combinations"),
        (["--sweep", "fast=2:50", "--sweep", "slow=5:200:0.5"], "whole numbers"),
        (["--workers", "2"], "--workers only go with --sweep"),
        (["--sort-by", "sharpe", "--top", "3"], "--sort-by, --top only go with --sweep"),
        (["--sweep", "fast=5,6", "--sort-by", "sharp"], "'sharp' is not one of"),
    ],
)
def test_usage_errors_exit_2_and_start_nothing(
    strategy: Path, args: list[str], message: str
) -> None:
    result = invoke("backtest", str(strategy), *SERIES, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())


def test_an_empty_store_is_reported_before_any_worker_starts(strategy: Path) -> None:
    result = invoke("backtest", str(strategy), *SERIES, "--sweep", "fast=5,6")
    assert result.exit_code == 1
    assert "error: no stored candles for demo:BTC/USD:1m;" in result.stderr


def cluster_config(tmp_path: Path) -> Path:
    path = tmp_path / "trader.toml"
    path.write_text(f'[cluster]\ntransport = "ipc"\nbroker = "ipc://{tmp_path}/b.ipc"\n')
    return path


def test_workers_with_a_cluster_broker_is_a_usage_error(strategy: Path, tmp_path: Path) -> None:
    config = cluster_config(tmp_path)
    result = invoke(
        "--config",
        str(config),
        "backtest",
        str(strategy),
        *SERIES,
        "--sweep",
        "fast=5,6",
        "--workers",
        "2",
    )
    assert result.exit_code == 2
    assert "--workers starts local workers, but [cluster] names the broker at ipc://" in (
        " ".join(result.stderr.split())
    )


def test_a_worker_refuses_an_in_process_broker() -> None:
    result = invoke("worker", "backtest")
    assert result.exit_code == 1
    assert "error: a worker process cannot reach the broker at inproc://trader-broker" in (
        result.stderr
    )


def test_report_writes_the_single_run_and_the_best_of_a_sweep(
    strategy: Path, tmp_path: Path
) -> None:
    pytest.importorskip("trader.backtest.report")
    store_candles()
    single = tmp_path / "single.html"
    result = invoke("backtest", str(strategy), *SERIES, "-p", "fast=7", "--report", str(single))
    assert result.exit_code == 0, result.output
    assert f"report: {single}" in result.stderr
    assert single.stat().st_size > 1000 and "cross.py" in single.read_text()
    best = tmp_path / "best.html"
    output = invoke(
        "backtest", str(strategy), *SERIES, "--sweep", "fast=5,9", "--json", "--report", str(best)
    )
    assert output.exit_code == 0, output.output
    top = json.loads(output.stdout)["rows"][0]["params"]
    assert best.is_file() and "cross.py" in best.read_text()
    assert f"<tr><td>fast<td>{top['fast']}" in best.read_text()  # the best run's parameters


def test_local_workers_default_to_the_cpu_count(strategy: Path) -> None:
    store_candles(500)
    output = sweep_json(
        str(strategy), *SERIES, "--sweep", f"fast=2:{1 + 2 * (os.cpu_count() or 1)}"
    )
    assert output["done"] == output["combinations"]
    assert 1 <= output["workers"] <= (os.cpu_count() or 1)


def test_fees_and_cash_reach_every_job(strategy: Path) -> None:
    candles = store_candles()
    output = sweep_json(
        str(strategy), *SERIES, "--sweep", "fast=5,7", "--cash", "5000", "--fee", "0.0005"
    )
    runtime = get_plugin_manager().build(Kind.STRATEGY_RUNTIME, "python", None, None)
    settings = RunSettings(
        initial_cash=Decimal(5000),
        maker_fee=Decimal("0.0005"),
        taker_fee=Decimal("0.0005"),
        assignment=strategy.stem,
        timeframe_ms=M1.nominal_ms,
    )
    source = StrategySource.of("python", str(strategy), strategy.read_text())
    for row in output["rows"]:
        expected = job_summary(
            run_job(runtime, source, row["params"], candles, "BTC/USD", settings)
        )
        assert row["final_equity"] == expected["final_equity"]
        assert row["metrics"]["initial_equity"] == 5000.0
