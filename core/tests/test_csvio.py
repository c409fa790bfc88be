from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader.csvio import read_candle_csv, write_candle_csv
from trader.errors import DataError
from trader.model import Candle, CandleArrays, Timeframe
from trader.synthetic import generate_candles
from trader.timeutil import format_time, parse_time

M1 = Timeframe.parse("1m")


def read_all(
    path: Path, timeframe: Timeframe = M1, **kwargs: object
) -> tuple[CandleArrays, list[str]]:
    rows: list[Candle] = []
    problems: list[str] = []
    for chunk in read_candle_csv(path, timeframe, **kwargs):  # type: ignore[arg-type]
        rows.extend(chunk.candles)
        problems.extend(str(p) for p in chunk.problems)
    return CandleArrays.from_candles(rows), problems


def test_parse_time_accepts_milliseconds_seconds_and_iso() -> None:
    assert parse_time("1704067200000") == 1_704_067_200_000
    assert parse_time("1704067200") == 1_704_067_200_000
    assert parse_time("1704067200", unit="ms") == 1_704_067_200
    assert parse_time("2024-01-01") == 1_704_067_200_000
    assert parse_time("2024-01-01T00:01:00Z") == 1_704_067_260_000
    assert parse_time("2024-01-01T02:00:00+02:00") == 1_704_067_200_000
    assert format_time(1_704_067_260_000) == "2024-01-01T00:01:00Z"
    assert format_time(1_704_067_260_500) == "2024-01-01T00:01:00.500Z"
    with pytest.raises(DataError, match="invalid time 'yesterday'"):
        parse_time("yesterday")


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    count=st.integers(min_value=1, max_value=300),
    seed=st.integers(min_value=0, max_value=2**32),
    iso=st.booleans(),
    chunk=st.integers(min_value=1, max_value=500),
)
def test_write_then_read_is_lossless(
    tmp_path: Path, count: int, seed: int, iso: bool, chunk: int
) -> None:
    candles = generate_candles(M1, 1_704_067_200_000, count, seed=seed)
    path = tmp_path / f"c{seed}-{count}-{iso}.csv"
    with path.open("w", newline="") as handle:
        write_candle_csv(handle, candles, iso=iso)
    read, problems = read_all(path, chunk_rows=chunk)
    assert problems == []
    assert read == candles


def test_headerless_files_and_column_aliases(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("1704067200000,1,2,0.5,1.5,10\n1704067260000,1.5,2,1,1.8,3\n")
    candles, problems = read_all(plain)
    assert problems == [] and candles.time.tolist() == [1_704_067_200_000, 1_704_067_260_000]

    aliased = tmp_path / "aliased.csv"
    aliased.write_text("Timestamp,Volume,Open,High,Low,Close,extra\n2024-01-01,10,1,2,0.5,1.5,x\n")
    candles, problems = read_all(aliased)
    assert problems == []
    assert candles[0] == Candle(1_704_067_200_000, 1, 2, 0.5, 1.5, 10)


def test_malformed_rows_are_reported_by_line_and_good_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        "2024-01-01T00:00,1,2,0.5,1.5,10\n"  # line 2: good
        "2024-01-01T00:01,1,2,0.5\n"  # line 3: too few fields
        "2024-01-01T00:02,1,abc,0.5,1.5,10\n"  # line 4: not a number
        "2024-01-01T00:03,1,2,3,1.5,10\n"  # line 5: low above high
        "2024-01-01T00:04:30,1,2,0.5,1.5,10\n"  # line 6: not aligned
        "soon,1,2,0.5,1.5,10\n"  # line 7: bad time
        "2024-01-01T00:05,1,2,0.5,1.5,-1\n"  # line 8: negative volume
        "\n"  # line 9: blank, ignored
        "2024-01-01T00:06,1,2,0.5,1.5,10\n"  # line 10: good
    )
    candles, problems = read_all(path)
    assert candles.time.tolist() == [parse_time("2024-01-01T00:00"), parse_time("2024-01-01T00:06")]
    assert problems == [
        "line 3: expected at least 6 fields, got 4",
        "line 4: high 'abc' is not a number",
        "line 5: low 3.0 is above high 2.0",
        "line 6: time 2024-01-01T00:04:30Z is not the open of a 1m candle "
        "(nearest open: 2024-01-01T00:04:00Z)",
        "line 7: invalid time 'soon': use an ISO date such as 2024-01-01 or 2024-01-01T12:00, "
        "or milliseconds since the epoch",
        "line 8: volume -1.0 is not a finite amount >= 0",
    ]


def test_a_header_without_required_columns_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,o,h,l,c\n1,2,3,4,5\n")
    with pytest.raises(DataError, match="the header lacks time, open, high, low, close, volume"):
        read_all(path)


def test_closed_column_is_read(tmp_path: Path) -> None:
    path = tmp_path / "closed.csv"
    path.write_text(
        "time,open,high,low,close,volume,closed\n0,1,2,0.5,1.5,1,true\n60000,1,2,0.5,1.5,1,false\n"
        "120000,1,2,0.5,1.5,1,maybe\n"
    )
    candles, problems = read_all(path, time_unit="ms")
    assert candles.closed.tolist() == [True, False]
    assert problems == ["line 4: closed 'maybe' is not true or false"]


def test_progress_is_reported_in_bytes(tmp_path: Path) -> None:
    candles = generate_candles(M1, 0, 1000)
    path = tmp_path / "p.csv"
    buffer = io.StringIO()
    write_candle_csv(buffer, candles)
    path.write_text(buffer.getvalue())
    seen = [chunk.bytes_read for chunk in read_candle_csv(path, M1, chunk_rows=100)]
    assert seen == sorted(seen) and len(seen) == 10
    assert seen[-1] == path.stat().st_size
