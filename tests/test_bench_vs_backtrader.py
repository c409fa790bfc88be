"""`bench/bench_vs_backtrader.py` on a small series: both sides run the same strategy.

The script runs as `make bench` runs it (its own process), on 3,000 candles a side. Timings are
never asserted; what is: the figures it prints, and that our engine and backtrader took the
same trades (fill counts within the script's margin, final equity within a trade's profit).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "backtrader",
    reason="backtrader is not installed: `pip install -c requirements/constraints.txt "
    "-r requirements/bench.txt` (make bench installs it)",
)

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "bench_vs_backtrader.py"
CANDLES = 3_000


def run_bench(*args: str) -> tuple[list[dict[str, Any]], str]:
    """Run the bench script; its JSON figures (one per stdout line) and its stderr."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_bench_prints_both_figures_for_the_same_trades() -> None:
    figures, stderr = run_bench(
        "--candles", str(CANDLES), "--backtrader-candles", str(CANDLES), "--repeats", "1"
    )
    by_name = {figure["name"]: figure for figure in figures}
    assert list(by_name) == ["backtest.backtrader_cps", "backtest.vs_backtrader"]

    backtrader = by_name["backtest.backtrader_cps"]
    assert backtrader["unit"] == "candles/s"
    assert backtrader["better"] == "higher"
    assert backtrader["value"] > 0
    assert backtrader["candles"] == CANDLES
    # SMA(10/30) crossovers on 3,000 one-minute candles: dozens of round trips.
    assert backtrader["fills"] > 40
    assert abs(backtrader["fills"] - backtrader["engine_fills"]) <= 2 + 0.01 * backtrader["fills"]
    # 1,000 USD positions: one trade's profit or loss is a few dollars.
    assert backtrader["final_equity"] == pytest.approx(backtrader["engine_final_equity"], abs=25)
    assert backtrader["final_equity"] != 1_000_000  # it traded and paid fees

    ratio = by_name["backtest.vs_backtrader"]
    assert ratio["unit"] == "x"
    assert ratio["better"] == "higher"
    assert ratio["engine_candles"] == CANDLES
    assert ratio["backtrader_candles"] == CANDLES
    assert ratio["backtrader_cps"] == round(backtrader["value"])
    assert ratio["value"] == pytest.approx(ratio["engine_cps"] / ratio["backtrader_cps"], rel=1e-3)
    assert f"backtrader {backtrader['fills']:,} fills" in stderr
    assert f"{CANDLES:,} equity samples" in stderr
