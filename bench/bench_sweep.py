"""Bench parameter sweeps: the same 64-combination sweep on two local workers against one.

The sweep backtests the Python SMA crossover of ``examples/strategies/sma_cross.py`` (fast 4..11
by slow 20..55 step 5: 64 combinations) on ``--candles`` one-minute candles (a seeded random
walk) stored in a fresh SQLite candle store, through :func:`trader.backtest.sweep.run_sweep`:
a private broker, local ``trader worker backtest`` processes, and every job a task in a fresh
SQLite state store. It runs once on one worker and once on two, ``--repeats`` times each (default
3), and keeps the fastest run of each (on a shared machine other jobs only ever slow a run down,
so the fastest is the truest; the medians are printed too). One JSON line per figure:

* ``backtest.sweep_speedup_2w``: the one-worker sweep time over the two-worker one, timed from
  the first job sent to the last result (worker start-up excluded; target ≥ 1.8 on 2 cores);
* ``backtest.sweep_speedup_2w_with_startup``: the same with start-up (process start, imports,
  connecting) included, as a user waits for ``trader backtest --sweep``;
* ``backtest.sweep_job_overhead_ms``: per job, the one-worker sweep time minus the time the
  worker spent running the backtests (a job's own ``seconds``), i.e. what the coordinator,
  the bus and the task steps add between jobs.

    .venv/bin/python bench/bench_sweep.py [--candles 250000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STRATEGY = ROOT / "examples" / "strategies" / "sma_cross.py"
START = 1_577_836_800_000  # 2020-01-01 00:00 UTC


def emit(name: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=250_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="trader-bench-sweep-")
    os.environ["TRADER_HOME"] = home  # before trader reads its settings
    try:
        return bench(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def bench(args: argparse.Namespace, home: str) -> int:

    from trader.app import open_candle_store
    from trader.backtest.jobs import RunSettings, StrategySource
    from trader.backtest.sweep import SweepPlan, run_sweep
    from trader.config import load_config
    from trader.model import SeriesKey, Timeframe
    from trader.plugins import get_plugin_manager
    from trader.synthetic import generate_candles

    timeframe = Timeframe.parse("1m")
    series = SeriesKey("bench", "BTC/USD", timeframe)
    config = load_config(
        None, host=get_plugin_manager(), components=["storage.candles", "storage.state"]
    )

    async def store() -> None:
        async with open_candle_store(config) as candles:
            await candles.write(series, generate_candles(timeframe, START, args.candles, seed=42))

    asyncio.run(store())
    combinations: list[dict[str, bool | int | float | str]] = [
        {"fast": fast, "slow": slow} for fast in range(4, 12) for slow in range(20, 60, 5)
    ]
    plan = SweepPlan(
        StrategySource.of("python", str(STRATEGY), STRATEGY.read_text(encoding="utf-8")),
        series,
        None,
        None,
        RunSettings(assignment="sma_cross", timeframe_ms=timeframe.nominal_ms),
        combinations,
    )

    runs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    rows_of_one: list[Any] = []
    for _ in range(args.repeats):
        for workers in (1, 2):
            outcome = run_sweep(plan, config, local_workers=workers)
            if outcome.done != len(combinations):
                failed = [row.error for row in outcome.rows if row.status != "done"]
                raise SystemExit(f"the bench sweep failed: {failed[:3]}")
            seconds, total = outcome.seconds, outcome.total_seconds
            runs[workers].append((seconds, total))
            if workers == 1:
                rows_of_one = outcome.rows
            print(
                f"note: {workers} worker(s): {seconds:.2f} s sweeping, {total:.2f} s with start-up",
                file=sys.stderr,
                flush=True,
            )
    one, two = min(s for s, _ in runs[1]), min(s for s, _ in runs[2])
    one_total, two_total = min(t for _, t in runs[1]), min(t for _, t in runs[2])
    one_median = statistics.median(s for s, _ in runs[1])
    two_median = statistics.median(s for s, _ in runs[2])
    common = {"combinations": len(combinations), "candles": args.candles, "runs": args.repeats}
    emit(
        "backtest.sweep_speedup_2w",
        one / two,
        "x",
        one_worker_s=round(one, 2),
        two_workers_s=round(two, 2),
        median_ratio=round(one_median / two_median, 3),
        target=1.8,
        **common,
    )
    emit(
        "backtest.sweep_speedup_2w_with_startup",
        one_total / two_total,
        "x",
        one_worker_s=round(one_total, 2),
        two_workers_s=round(two_total, 2),
        **common,
    )
    job_seconds = _job_seconds(home, {row.task_id for row in rows_of_one})
    last_one = runs[1][-1][0]  # the run whose jobs' seconds were read
    overhead = (last_one - job_seconds) / len(combinations) * 1000 if job_seconds else math.nan
    emit("backtest.sweep_job_overhead_ms", overhead, "ms", **common)
    return 0


def _job_seconds(home: str, task_ids: set[Any]) -> float:
    """The run time the workers reported for these jobs, summed (from the state store)."""
    from trader.app import open_state_store
    from trader.config import load_config
    from trader.plugins import get_plugin_manager

    config = load_config(None, host=get_plugin_manager(), components=["storage.state"])

    async def read() -> float:
        async with open_state_store(config) as store:
            tasks = await store.list_tasks(task_type="backtest_job")
        return sum(
            float(task.payload.get("seconds", 0.0)) for task in tasks if task.task_id in task_ids
        )

    return asyncio.run(read())


if __name__ == "__main__":
    sys.exit(main())
