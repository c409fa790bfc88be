"""``trader backtest``: both example strategies over a real SQLite store, with real runtimes."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from trader.app import open_candle_store
from trader.backtest import BacktestSettings, Sizing, SizingMode, run_backtest
from trader.cli.main import main
from trader.config import load_config
from trader.interfaces import Limits
from trader.model import CandleArrays, Market, SeriesKey, Timeframe
from trader.model.market import Precision, PrecisionMode
from trader.paper import FillSettings, FillTiming
from trader.plugins import get_plugin_manager
from trader.registry import Kind
from trader.synthetic import generate_candles
from trader.timeutil import parse_time

pytest.importorskip("trader_strategy_lua")
pytest.importorskip("trader_strategy_python")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "strategies"
M1 = Timeframe.parse("1m")
START = parse_time("2024-01-01")
SERIES = ["--exchange", "demo", "--symbol", "BTC/USD", "--timeframe", "1m"]
COUNT = 3_000


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


def store_candles(count: int = COUNT, seed: int = 7) -> CandleArrays:
    """Generate candles and write them into the configured (SQLite) store through its API."""
    candles = generate_candles(M1, START, count, seed=seed)

    async def write() -> None:
        config = load_config(None, host=get_plugin_manager(), components=["storage.candles"])
        async with open_candle_store(config) as store:
            await store.write(SeriesKey("demo", "BTC/USD", M1), candles)

    asyncio.run(write())
    return candles


def direct(
    path: Path,
    candles: CandleArrays,
    params: dict[str, Any],
    settings: BacktestSettings,
) -> dict[str, Any]:
    """What ``--json`` should print, computed with run_backtest on a freshly loaded instance."""
    language = {".lua": "lua", ".py": "python"}[path.suffix]
    runtime = get_plugin_manager().build(Kind.STRATEGY_RUNTIME, language, None, None)
    strategy = runtime.load(path.read_text(), str(path), params, Limits())
    market = Market(
        "BTC/USD",
        Precision(PrecisionMode.DECIMALS, Decimal(8)),
        Precision(PrecisionMode.DECIMALS, Decimal(8)),
    )
    result = run_backtest(strategy, candles, market, settings)
    metrics = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in result.metrics.as_dict().items()
    }
    return {
        "metrics": metrics,
        "trades": len(result.trades),
        "final_equity": str(result.final_equity),
    }


def run_json(*args: str) -> dict[str, Any]:
    result = invoke("backtest", *args, "--json")
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_json_equals_run_backtest_and_lua_equals_python() -> None:
    candles = store_candles()
    settings = BacktestSettings(
        initial_cash=Decimal(10_000), assignment="sma_cross", timeframe_ms=M1.nominal_ms
    )
    outputs = {}
    for suffix in (".lua", ".py"):
        path = EXAMPLES / f"sma_cross{suffix}"
        outputs[suffix] = run_json(str(path), *SERIES)
        assert outputs[suffix] == direct(path, candles, {}, settings)
    assert outputs[".lua"] == outputs[".py"]
    assert outputs[".lua"]["trades"] > 10  # the crossover really traded
    assert outputs[".lua"]["metrics"]["initial_equity"] == 10_000.0


def test_options_reach_the_engine() -> None:
    candles = store_candles()
    start, end = START + 500 * 60_000, START + 2_500 * 60_000
    args = [
        *SERIES,
        "--start",
        str(start),
        "--end",
        str(end),
        "--param",
        "fast=5",
        "-p",
        "slow=20",
        "--cash",
        "5000",
        "--fee",
        "0.0005",
        "--fill-timing",
        "close",
        "--sizing",
        "quote:1000",
    ]
    settings = BacktestSettings(
        initial_cash=Decimal(5_000),
        fills=FillSettings(
            timing=FillTiming.CLOSE, maker_fee=Decimal("0.0005"), taker_fee=Decimal("0.0005")
        ),
        sizing=Sizing(SizingMode.FIXED_QUOTE, Decimal(1_000)),
        assignment="sma_cross",
        timeframe_ms=M1.nominal_ms,
    )
    window = candles.slice(500, 2_500)
    for suffix in (".lua", ".py"):
        path = EXAMPLES / f"sma_cross{suffix}"
        got = run_json(str(path), *args)
        assert got == direct(path, window, {"fast": 5, "slow": 20}, settings)
        assert got["metrics"]["initial_equity"] == 5_000.0


def test_summary_table_and_phase_progress() -> None:
    store_candles()
    result = invoke("backtest", str(EXAMPLES / "sma_cross.lua"), *SERIES, "-p", "fast=12")
    assert result.exit_code == 0, result.output
    assert f"sma_cross.lua on demo:BTC/USD:1m: {COUNT:,} candles" in result.stdout
    for label in ("total return", "Sharpe", "max drawdown", "win rate", "fees"):
        assert label in result.stdout
    assert "fast=12, slow=30" in result.stdout
    for phase in ("loading candles", f"deciding on {COUNT:,} candles", "filling and measuring"):
        assert f"sma_cross.lua: {phase}: done in" in result.stderr


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("zzz=1", "unknown parameter 'zzz' (declared: fast, slow)"),
        ("fast=abc", "parameter fast: 'abc' is not a number"),
        ("fast=500", "parameter fast = 500 is above its max 50"),
        ("fast", "'fast' is not NAME=VALUE"),
    ],
)
def test_bad_params_are_usage_errors_naming_them(param: str, message: str) -> None:
    store_candles(100)
    for suffix in (".lua", ".py"):
        result = invoke("backtest", str(EXAMPLES / f"sma_cross{suffix}"), *SERIES, "-p", param)
        assert result.exit_code == 2, result.output
        assert message in result.stderr
        assert result.stdout == ""


def test_bad_sizing_is_a_usage_error() -> None:
    result = invoke("backtest", str(EXAMPLES / "sma_cross.py"), *SERIES, "--sizing", "lots:3")
    assert result.exit_code == 2
    assert "'lots:3' is not one of fraction:N, quote:N, base:N" in result.stderr


def test_missing_data_says_how_to_get_some() -> None:
    store_candles(100)
    result = invoke("backtest", str(EXAMPLES / "sma_cross.lua"), *SERIES, "--start", "2025-01-01")
    assert result.exit_code == 1
    assert (
        "no stored candles for demo:BTC/USD:1m from 2025-01-01T00:00:00Z to the end; fill the "
        "store with `trader data import` or `trader data download`" in result.stderr
    )
    other = invoke(
        "backtest", str(EXAMPLES / "sma_cross.py"), "-e", "demo", "-s", "ETH/USD", "-t", "1m"
    )
    assert other.exit_code == 1
    assert "no stored candles for demo:ETH/USD:1m;" in other.stderr


def test_strategy_errors_show_file_and_line_in_one_line(tmp_path: Path) -> None:
    store_candles(200)
    broken = tmp_path / "broken.lua"
    broken.write_text("params = {a = 1}\nfunction on_candle(ctx, c)\n  return 1 +\nend\n")
    result = invoke("backtest", str(broken), *SERIES)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {broken}:4: syntax error: unexpected symbol near 'end'"
    ]
    failing = tmp_path / "failing.py"
    failing.write_text("def on_candle(ctx, candles):\n    return 1 / 0\n")
    result = invoke("backtest", str(failing), *SERIES)
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {failing}:2: ZeroDivisionError"), result.stderr


def test_missing_runtime_names_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADER_DISABLE_PLUGINS", "trader-strategy-lua")
    from trader.plugins import reset_plugin_manager

    reset_plugin_manager()
    result = invoke("backtest", str(EXAMPLES / "sma_cross.lua"), *SERIES)
    assert result.exit_code == 1
    assert "no strategy runtime named 'lua' is installed" in result.stderr
    assert "pip install trader-strategy-lua" in result.stderr


def test_unknown_suffix_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "strategy.js"
    path.write_text("function on_candle() {}\n")
    result = invoke("backtest", str(path), *SERIES)
    assert result.exit_code == 2
    assert "cannot tell the strategy language from the suffix '.js'" in result.stderr
