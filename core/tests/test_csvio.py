from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader.csvio import read_candle_csv, write_candle_csv
from trader.errors import DataError
from trader.model import MAX_TIME_MS, Candle, CandleArrays, Timeframe
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


def test_format_time_never_raises() -> None:
    assert format_time(MAX_TIME_MS) == "9999-12-31T23:59:59.999Z"
    assert format_time(-1) == "1969-12-31T23:59:59.999Z"
    for number in (MAX_TIME_MS + 1, 9_007_199_254_740_960_001, 10**19, -(10**30), 2**63):
        assert format_time(number) == str(number)


def test_times_beyond_the_year_9999_are_reported_and_good_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        "1704067200000,1,2,0.5,1.5,10\n"  # line 2: good
        "9007199254740960000,1,2,0.5,1.5,10\n"  # line 3: int64, after 9999
        "10000000000000000000,1,2,0.5,1.5,10\n"  # line 4: beyond int64
        "253402300800001,1,2,0.5,1.5,10\n"  # line 5: just after 9999, not aligned
        "-9223372036854775808,1,2,0.5,1.5,10\n"  # line 6: would wrap to 0 as seconds
        "1704067260000,1,2,0.5,1.5,10\n"  # line 7: good
    )
    for chunk_rows in (100, 1):
        candles, problems = read_all(path, chunk_rows=chunk_rows)
        assert candles.time.tolist() == [1_704_067_200_000, 1_704_067_260_000]
        assert problems == [
            f"line 3: time 9007199254740960000 is after the year 9999 (the latest time is "
            f"{MAX_TIME_MS})",
            f"line 4: time 10000000000000000000 is after the year 9999 (the latest time is "
            f"{MAX_TIME_MS})",
            f"line 5: time 253402300800001 is after the year 9999 (the latest time is "
            f"{MAX_TIME_MS})",
            "line 6: time -9223372036854775808 is before 1970",
        ]


def test_seconds_that_would_overflow_as_milliseconds_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "seconds.csv"
    big = 2**64 // 1000 + 60  # times 1000 wraps around int64 to a small, aligned time
    path.write_text(f"time,open,high,low,close,volume\n{big},1,2,0.5,1.5,1\n1704067200,1,2,1,1,1\n")
    candles, problems = read_all(path, time_unit="s")
    assert candles.time.tolist() == [1_704_067_200_000]
    assert problems == [
        f"line 2: time {big * 1000} is after the year 9999 (the latest time is {MAX_TIME_MS})"
    ]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 100])
def test_repeated_open_times_keep_the_first_row_and_report_the_rest(
    tmp_path: Path, chunk_rows: int
) -> None:
    path = tmp_path / "repeats.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        "2024-01-01T00:00,1,2,0.5,1.5,10\n"  # line 2
        "2024-01-01T00:02,1,2,0.5,1.5,10\n"  # line 3
        "2024-01-01T00:01,1,2,0.5,1.5,10\n"  # line 4
        "2024-01-01T00:02,1,3,0.5,1.5,10\n"  # line 5: repeats line 3
        "2024-01-01T00:00,1,2,0.5,1.5,99\n"  # line 6: repeats line 2
        "2024-01-01T00:03,1,2,0.5,1.5,10\n"  # line 7
        "2024-01-01T00:02,1,4,0.5,1.5,10\n"  # line 8: repeats line 3 again
    )
    candles, problems = read_all(path, chunk_rows=chunk_rows)
    start = parse_time("2024-01-01")
    assert candles.time.tolist() == [start + m * 60_000 for m in (0, 2, 1, 3)]
    assert candles.high.tolist() == [2, 2, 2, 2] and candles.volume.tolist() == [10] * 4
    assert problems == [
        "line 5: open time 2024-01-01T00:02:00Z already appears on line 3; row skipped",
        "line 6: open time 2024-01-01T00:00:00Z already appears on line 2; row skipped",
        "line 8: open time 2024-01-01T00:02:00Z already appears on line 3; row skipped",
    ]


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.lists(st.integers(0, 40), min_size=1, max_size=80),
    chunk_rows=st.integers(1, 30),
)
def test_repeats_match_a_first_row_wins_model(minutes: list[int], chunk_rows: int) -> None:
    first_line: dict[int, int] = {}
    expected: list[str] = []
    for line, minute in enumerate(minutes, start=2):
        if minute in first_line:
            expected.append(
                f"line {line}: open time {format_time(minute * 60_000)} already appears on line "
                f"{first_line[minute]}; row skipped"
            )
        else:
            first_line[minute] = line
    text = "time,open,high,low,close,volume\n" + "".join(
        f"{minute * 60_000},1,2,0.5,1.5,{line}\n" for line, minute in enumerate(minutes, start=2)
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.csv"
        path.write_text(text)
        candles, problems = read_all(path, time_unit="ms", chunk_rows=chunk_rows)
    assert problems == expected
    assert candles.time.tolist() == [minute * 60_000 for minute in first_line]
    assert candles.volume.tolist() == [float(line) for line in first_line.values()]


def test_progress_counts_bytes_exactly_in_non_ascii_files(tmp_path: Path) -> None:
    rows = [f"2024-01-01T00:{m:02d},1,2,0.5,1.5,10,€ naïve ✓ {m}\n" for m in range(50)]
    data = ("\ufefftime,open,high,low,close,volume,note\n" + "".join(rows)).encode()
    path = tmp_path / "utf8.csv"
    path.write_bytes(data)
    chunks = list(read_candle_csv(path, M1, chunk_rows=7))
    header = len("\ufefftime,open,high,low,close,volume,note\n".encode())
    ends = [header + sum(len(r.encode()) for r in rows[: 7 * (i + 1)]) for i in range(8)]
    assert [chunk.bytes_read for chunk in chunks] == ends
    assert chunks[-1].bytes_read == len(data)
    assert sum(len(chunk.candles) for chunk in chunks) == 50
    assert all(not chunk.problems for chunk in chunks)


def test_text_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    head = b"time,open,high,low,close,volume\n2024-01-01T00:00,1,2,0.5,1.5,10\n"
    path.write_bytes(head + b"2024-01-01T00:01,1,2,0.5,1.5,10 caf\xe9\n")
    at = len(head) + len(b"2024-01-01T00:01,1,2,0.5,1.5,10 caf")
    with pytest.raises(DataError, match=rf"line 3: not UTF-8 text at byte {at}\b"):
        read_all(path)
    path.write_bytes(b"\xef\xbb\xbftime,op\xffen\n")
    with pytest.raises(DataError, match=r"line 1: not UTF-8 text at byte 10\b"):
        read_all(path)
