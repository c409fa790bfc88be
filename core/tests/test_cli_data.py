"""``trader data``: import, export, list, gaps, resample, generate, against the default store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from trader.cli.main import build_cli
from trader.csvio import write_candle_csv
from trader.model import Timeframe
from trader.synthetic import generate_candles
from trader.timeutil import parse_time

M1 = Timeframe.parse("1m")
START = parse_time("2024-01-01")
SERIES = ["--exchange", "demo", "--symbol", "BTC/USD"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(build_cli(), list(args), catch_exceptions=False)


def write_csv(path: Path, count: int, *, seed: int = 1, start: int = START) -> Path:
    with path.open("w", newline="") as handle:
        write_candle_csv(handle, generate_candles(M1, start, count, seed=seed))
    return path


@pytest.mark.slow
def test_import_of_a_million_rows_shows_progress_is_idempotent_and_reports_bad_lines(
    tmp_path: Path,
) -> None:
    """The issue's acceptance: 1,000,000 rows, progress, an idempotent re-import, and malformed
    rows reported by line number and not stored while the good rows are."""
    path = write_csv(tmp_path / "big.csv", 1_000_000)
    lines = path.read_text().splitlines(keepends=True)
    # Corrupt three rows in place (file lines 11, 500001, 1000001) and keep the rest good.
    bad_lines = {11: "not-a-time,1,2,3,4,5,true\n", 500_001: None, 1_000_001: None}
    time_500k = lines[500_000].split(",")[0]
    bad_lines[500_001] = f"{time_500k},1,2,3,4,5,true\n"  # low above high
    bad_lines[1_000_001] = lines[1_000_000].rsplit(",", 2)[0] + ",-7,true\n"  # negative volume
    for number, text in bad_lines.items():
        lines[number - 1] = text
    path.write_text("".join(lines))
    command = [sys.executable, "-m", "trader", "data", "import", str(path), *SERIES, "-t", "1m"]

    first = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 1, first.stderr  # rows were rejected
    assert (
        "read 1,000,000 rows; stored 999,997 new, 0 changed, 0 unchanged; rejected 3"
        in first.stdout
    )
    assert "importing big.csv: 50%" in first.stderr  # progress, in plain lines off a terminal
    assert f"{path}: line 11: invalid time 'not-a-time'" in first.stderr
    assert f"{path}: line 500001: low 3.0 is above high 2.0" in first.stderr
    assert f"{path}: line 1000001: volume -7.0 is not a finite amount >= 0" in first.stderr

    second = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert "stored 0 new, 0 changed, 999,997 unchanged; rejected 3" in second.stdout

    listed = json.loads(invoke("data", "list", "--json").output)
    assert listed == [
        {
            "exchange": "demo",
            "symbol": "BTC/USD",
            "timeframe": "1m",
            "count": 999_997,
            "first": START,
            "last": START + (1_000_000 - 2) * 60_000,  # the last row was rejected
        }
    ]
    # The rejected rows' times are absent, so the store reports them as gaps.
    gaps = json.loads(invoke("data", "gaps", *SERIES, "-t", "1m", "--json").output)
    assert [g["start"] for g in gaps] == [
        START + 9 * 60_000,
        START + 499_999 * 60_000,
    ]  # the rejected last row shortens the data; it is not a gap


def test_export_reproduces_what_was_imported(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", 500)
    assert invoke("data", "import", str(source), *SERIES, "-t", "1m").exit_code == 0
    out = tmp_path / "out.csv"
    result = invoke("data", "export", *SERIES, "-t", "1m", "-o", str(out))
    assert result.exit_code == 0
    assert out.read_text() == source.read_text()
    ranged = invoke(
        "data",
        "export",
        *SERIES,
        "-t",
        "1m",
        "--start",
        "2024-01-01T00:10",
        "--end",
        "2024-01-01T00:13",
    )
    assert ranged.output.splitlines()[1:] == source.read_text().splitlines()[11:14]


def test_reimporting_revised_candles_updates_them(tmp_path: Path) -> None:
    original = write_csv(tmp_path / "a.csv", 100, seed=1)
    revised = write_csv(tmp_path / "b.csv", 100, seed=2)
    invoke("data", "import", str(original), *SERIES, "-t", "1m")
    result = invoke("data", "import", str(revised), *SERIES, "-t", "1m")
    assert "stored 0 new, 100 changed, 0 unchanged" in result.output
    assert invoke("data", "export", *SERIES, "-t", "1m").output == revised.read_text()


def test_resample_builds_hourly_candles_and_is_idempotent(tmp_path: Path) -> None:
    invoke("data", "import", str(write_csv(tmp_path / "m.csv", 180)), *SERIES, "-t", "1m")
    first = invoke("data", "resample", *SERIES, "--from", "1m", "--to", "1h")
    assert first.exit_code == 0, first.output
    assert "demo:BTC/USD:1h: built 3 candles" in first.output and "3 new" in first.output
    again = invoke("data", "resample", *SERIES, "--from", "1m", "--to", "1h")
    assert "0 new, 0 changed, 3 unchanged" in again.output
    hourly = invoke("data", "export", *SERIES, "-t", "1h").output.splitlines()
    minutes = invoke("data", "export", *SERIES, "-t", "1m").output.splitlines()[1:61]
    first_hour = hourly[1].split(",")
    assert float(first_hour[2]) == max(float(row.split(",")[2]) for row in minutes)
    assert float(first_hour[5]) == pytest.approx(sum(float(r.split(",")[5]) for r in minutes))


def test_resample_rejects_timeframes_that_do_not_tile() -> None:
    result = CliRunner().invoke(
        build_cli(), ["data", "resample", *SERIES, "--from", "1w", "--to", "1M"]
    )
    assert result.exit_code == 2
    assert "1w candles do not tile 1M candles" in result.output


def test_list_on_an_empty_store_says_how_to_add_data() -> None:
    assert "no candles stored yet" in invoke("data", "list").output


def test_gaps_reports_missing_ranges(tmp_path: Path) -> None:
    path = tmp_path / "holes.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        "2024-01-01T00:00,1,2,0.5,1.5,1\n2024-01-01T00:01,1,2,0.5,1.5,1\n"
        "2024-01-01T00:05,1,2,0.5,1.5,1\n2024-01-01T00:06,1,2,0.5,1.5,1\n"
    )
    invoke("data", "import", str(path), *SERIES, "-t", "1m")
    result = invoke("data", "gaps", *SERIES, "-t", "1m")
    assert "2024-01-01T00:02:00Z .. 2024-01-01T00:05:00Z  3 missing" in result.output
    assert "1 gaps, 3 candles missing" in result.output


def test_generate_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    invoke("data", "generate", "-n", "50", "--seed", "7", "-o", str(a))
    invoke("data", "generate", "-n", "50", "--seed", "7", "-o", str(b))
    assert a.read_text() == b.read_text() and len(a.read_text().splitlines()) == 51


def test_a_config_file_chooses_where_candles_go(tmp_path: Path) -> None:
    config = tmp_path / "trader.toml"
    config.write_text('[storage.candles]\nplugin = "sqlite"\npath = "my-candles.sqlite"\n')
    source = write_csv(tmp_path / "in.csv", 10)
    env_before = dict(os.environ)
    result = invoke("--config", str(config), "data", "import", str(source), *SERIES, "-t", "1m")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "my-candles.sqlite").exists()
    assert dict(os.environ) == env_before
