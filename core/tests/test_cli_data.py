"""``trader data``: import, export, list, gaps, resample, generate, against the default store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from trader.cli.main import build_cli, main
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


def test_resample_from_a_start_inside_a_candle_rebuilds_it_whole(tmp_path: Path) -> None:
    """A --start or --end inside a target candle widens to all of it: a partial candle never
    replaces a complete one."""
    invoke("data", "import", str(write_csv(tmp_path / "m.csv", 120)), *SERIES, "-t", "1m")
    first = invoke("data", "resample", *SERIES, "--from", "1m", "--to", "1h")
    assert "2 new, 0 changed, 0 unchanged" in first.output
    hourly = invoke("data", "export", *SERIES, "-t", "1h").output
    for bounds in (
        ["--start", "2024-01-01T00:30"],
        ["--start", "2024-01-01T00:30", "--end", "2024-01-01T01:30"],
        ["--end", "2024-01-01T00:01"],
    ):
        again = invoke("data", "resample", *SERIES, "--from", "1m", "--to", "1h", *bounds)
        assert again.exit_code == 0, again.output
        assert "0 new, 0 changed" in again.output, (bounds, again.output)
        assert invoke("data", "export", *SERIES, "-t", "1h").output == hourly


@pytest.mark.parametrize("size", ["0", "-1"])
def test_batch_size_must_be_positive(tmp_path: Path, size: str) -> None:
    source = write_csv(tmp_path / "in.csv", 10)
    result = invoke("data", "import", str(source), *SERIES, "-t", "1m", "--batch-size", size)
    assert result.exit_code == 2
    assert "Invalid value for '--batch-size'" in result.output and ">=1" in result.output


def test_reimporting_a_file_with_repeated_times_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "repeats.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        "2024-01-01T00:00,1,2,0.5,1.5,10\n"
        "2024-01-01T00:01,1,2,0.5,1.5,10\n"
        "2024-01-01T00:02,1,2,0.5,1.5,10\n"
        "2024-01-01T00:00,1,3,0.5,1.5,99\n"  # line 5: a later chunk repeats line 2
    )
    command = ["data", "import", str(path), *SERIES, "-t", "1m", "--batch-size", "2"]
    first = invoke(*command)
    assert first.exit_code == 1
    assert "stored 3 new, 0 changed, 0 unchanged; rejected 1" in first.stdout
    assert (
        f"{path}: line 5: open time 2024-01-01T00:00:00Z already appears on line 2; row skipped"
        in first.stderr
    )
    second = invoke(*command)
    assert "stored 0 new, 0 changed, 3 unchanged; rejected 1" in second.stdout
    exported = invoke("data", "export", *SERIES, "-t", "1m").output.splitlines()
    assert exported[1] == f"{START},1.0,2.0,0.5,1.5,10.0,true"


def test_far_future_times_are_reported_and_the_good_rows_stored(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        f"{START},1,2,0.5,1.5,10\n"
        "9007199254740960000,1,2,0.5,1.5,10\n"
        "10000000000000000000,1,2,0.5,1.5,10\n"
        "253402300800001,1,2,0.5,1.5,10\n"
        f"{START + 60_000},1,2,0.5,1.5,10\n"
    )
    result = invoke("data", "import", str(path), *SERIES, "-t", "1m")
    assert result.exit_code == 1, result.output
    assert "read 5 rows; stored 2 new, 0 changed, 0 unchanged; rejected 3" in result.stdout
    for line in (3, 4, 5):
        assert f"{path}: line {line}: time " in result.stderr
    assert "after the year 9999" in result.stderr and "internal error" not in result.output
    listed = json.loads(invoke("data", "list", "--json").output)
    assert [(s["count"], s["first"], s["last"]) for s in listed] == [(2, START, START + 60_000)]


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the ``trader`` entry point as a user would; return its exit status and stderr."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    return int(done.value.code or 0), capsys.readouterr().err


def test_unwritable_errors_and_output_paths_fail_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", 10)
    missing = tmp_path / "no" / "such" / "folder" / "file.txt"
    status, err = run_main(
        capsys, "data", "import", str(source), *SERIES, "-t", "1m", "--errors", str(missing)
    )
    assert status == 1
    assert err == (
        f"error: cannot write --errors file {missing}: No such file or directory; "
        "pick a path in an existing, writable folder\n"
    )
    assert "no candles stored yet" in invoke("data", "list").output  # nothing was imported
    for command in (["data", "export", *SERIES, "-t", "1m"], ["data", "generate", "-n", "5"]):
        status, err = run_main(capsys, *command, "-o", str(missing))
        assert status == 1
        assert err.startswith(f"error: cannot write --output file {missing}: "), err
        assert len(err.splitlines()) == 1


def test_errors_file_lists_every_rejected_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,open,high,low,close,volume\n" + "soon,1,2,0.5,1.5,1\n" * 3)
    errors = tmp_path / "errors.txt"
    result = invoke("data", "import", str(path), *SERIES, "-t", "1m", "--errors", str(errors))
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in errors.read_text().splitlines()] == [
        "line 2",
        "line 3",
        "line 4",
    ]


def test_export_to_a_file_reports_progress_and_writes_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trader.cli.data_cmd as data_cmd

    source = write_csv(tmp_path / "in.csv", 500)
    invoke("data", "import", str(source), *SERIES, "-t", "1m")
    monkeypatch.setattr(data_cmd, "EXPORT_CHUNK", 100)
    out = tmp_path / "out.csv"
    result = invoke("data", "export", *SERIES, "-t", "1m", "-o", str(out))
    assert result.exit_code == 0
    assert out.read_text() == source.read_text()  # one header, every row, in order
    assert "exporting demo:BTC/USD:1m: 20% (100 of 500 candles)" in result.stderr
    assert "exporting demo:BTC/USD:1m: 80% (400 of 500 candles)" in result.stderr
    assert "exporting demo:BTC/USD:1m: done in" in result.stderr
    to_stdout = invoke("data", "export", *SERIES, "-t", "1m")
    assert to_stdout.stdout == source.read_text() and "exporting" not in to_stdout.stderr
