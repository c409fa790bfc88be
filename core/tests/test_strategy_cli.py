"""``trader strategy new|check``: templates round trip through the real runtimes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from trader.app import open_candle_store
from trader.cli.main import main
from trader.config import load_config
from trader.model import SeriesKey, Timeframe
from trader.plugins import get_plugin_manager
from trader.synthetic import generate_candles
from trader.timeutil import parse_time

pytest.importorskip("trader_strategy_lua")
pytest.importorskip("trader_strategy_python")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "strategies"
SMA_PARAMS = [
    {"name": "fast", "default": 10, "min": 2, "max": 50, "step": 1},
    {"name": "slow", "default": 30, "min": 5, "max": 200, "step": 1},
]


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


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


def check_json(path: Path) -> dict[str, Any]:
    result = invoke("strategy", "check", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def strip(params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k != "description"} for p in params]


@pytest.mark.parametrize(("language", "suffix"), [("lua", ".lua"), ("python", ".py")])
def test_new_then_check_round_trip_and_refuses_to_overwrite(
    tmp_path: Path, language: str, suffix: str
) -> None:
    made = invoke("strategy", "new", language, "my_sma", "--directory", str(tmp_path))
    assert made.exit_code == 0, made.stderr
    path = tmp_path / f"my_sma{suffix}"
    assert f"wrote {path}" in made.stdout
    text = path.read_text()
    assert "fast SMA period" in text and "on_candle" in text

    checked = check_json(path)
    assert checked["language"] == language
    assert strip(checked["params"]) == SMA_PARAMS

    table = invoke("strategy", "check", str(path))
    assert table.exit_code == 0
    assert f"{path}: loads ({language}); 2 parameter(s)" in table.stdout
    assert "fast SMA period" in table.stdout
    assert "2 .. 50" in table.stdout and "5 .. 200" in table.stdout

    path.write_text("edited by hand\n")
    again = invoke("strategy", "new", language, f"my_sma{suffix}", "--directory", str(tmp_path))
    assert again.exit_code == 1
    assert f"{path} already exists" in again.stderr
    assert path.read_text() == "edited by hand\n"


def test_templates_backtest_like_the_examples(tmp_path: Path) -> None:
    """The templates are the examples' SMA crossover: same decisions, so the same backtest."""
    m1 = Timeframe.parse("1m")
    candles = generate_candles(m1, parse_time("2024-01-01"), 1_500, seed=3)

    async def write() -> None:
        config = load_config(None, host=get_plugin_manager(), components=["storage.candles"])
        async with open_candle_store(config) as store:
            await store.write(SeriesKey("demo", "BTC/USD", m1), candles)

    asyncio.run(write())
    series = ["-e", "demo", "-s", "BTC/USD", "-t", "1m", "--json"]
    outputs = []
    for language, suffix in (("lua", ".lua"), ("python", ".py")):
        assert invoke("strategy", "new", language, "t", "-d", str(tmp_path)).exit_code == 0
        for path in (tmp_path / f"t{suffix}", EXAMPLES / f"sma_cross{suffix}"):
            result = invoke("backtest", str(path), *series)
            assert result.exit_code == 0, result.stderr
            outputs.append(json.loads(result.stdout))
    assert all(o == outputs[0] for o in outputs)


def test_examples_check() -> None:
    for suffix in (".lua", ".py"):
        assert strip(check_json(EXAMPLES / f"sma_cross{suffix}")["params"]) == SMA_PARAMS


@pytest.mark.parametrize(
    ("name", "source", "line"),
    [
        ("bad.lua", "params = {a = 1}\nfunction on_candle(ctx, c)\n  return 1 +\nend\n", 4),
        ("bad.py", "params = {'a': 1}\n\n\ndef on_candle(ctx, c):\n    return 1 +\n", 5),
        ("raises.py", "x = 1\nraise ValueError('nope')\n", 2),
        ("raises.lua", "local x = 1\nerror('nope')\n", 2),
    ],
)
def test_check_reports_errors_with_their_line(
    tmp_path: Path, name: str, source: str, line: int
) -> None:
    path = tmp_path / name
    path.write_text(source)
    result = invoke("strategy", "check", str(path))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {path}:{line}:"), lines[0]


def test_check_reports_bad_declarations(tmp_path: Path) -> None:
    path = tmp_path / "decl.lua"
    path.write_text("params = {fast = {default = 100, max = 50}}\nfunction on_candle() end\n")
    result = invoke("strategy", "check", str(path))
    assert result.exit_code == 1
    assert "default 100 is above max 50" in result.stderr


def test_new_refuses_bad_names_and_languages(tmp_path: Path) -> None:
    bad = invoke("strategy", "new", "lua", "../escape", "-d", str(tmp_path))
    assert bad.exit_code == 2
    assert "is not a usable name" in bad.stderr
    unknown = invoke("strategy", "new", "ruby", "x", "-d", str(tmp_path))
    assert unknown.exit_code == 2
    assert list(tmp_path.iterdir()) == []
