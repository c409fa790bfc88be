"""Candle CSV files: a streaming, validating reader and a lossless writer.

The reader takes a header naming the columns (``time`` or one of its aliases, ``open``, ``high``,
``low``, ``close``, ``volume``, optionally ``closed``; other columns are ignored) or, without a
header, assumes ``time,open,high,low,close,volume``. Times are milliseconds or seconds since the
epoch, or ISO 8601. Rows that are malformed are reported with their line number and left out;
every good row is kept.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from trader.errors import DataError
from trader.model import CandleArrays, Timeframe, candle_problem
from trader.timeutil import format_time, parse_time

TIME_ALIASES = ("time", "timestamp", "open_time", "date", "datetime", "mts", "t")
VALUE_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A rejected row: its line number in the file (1-based) and what was wrong."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class CsvChunk:
    """A batch of good candles read from a file, the rows rejected in it, and how far we are."""

    candles: CandleArrays
    problems: list[RowProblem] = field(default_factory=list)
    rows: int = 0
    bytes_read: int = 0


class _CountingLines:
    """Iterate a text file's lines while counting the characters read (for progress)."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.handle:
            self.count += len(line)
            yield line


def read_candle_csv(
    path: Path,
    timeframe: Timeframe,
    *,
    chunk_rows: int = 100_000,
    time_unit: str = "auto",
) -> Iterator[CsvChunk]:
    """Read ``path`` in chunks of up to ``chunk_rows`` rows.

    Raises :class:`~trader.errors.DataError` when the file cannot be read at all or its header
    lacks a required column; row-level problems are reported in each chunk instead.
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        lines = _CountingLines(handle)
        reader = csv.reader(lines)
        try:
            first = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as error:
            raise DataError(f"{path}: line 1: {error}") from None
        if first is None:
            return
        columns, pending = _columns(first, path)
        width = max(columns) + 1
        batch: list[tuple[int, list[str]]] = [] if pending is None else [(1, pending)]
        problems: list[RowProblem] = []
        rows = len(batch)
        while True:
            try:
                row = next(reader, None)
            except (csv.Error, UnicodeDecodeError) as error:
                problems.append(RowProblem(reader.line_num, f"unreadable row: {error}"))
                continue
            if row is None:
                break
            rows += 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < width:
                problems.append(
                    RowProblem(reader.line_num, f"expected at least {width} fields, got {len(row)}")
                )
                continue
            batch.append((reader.line_num, row))
            if len(batch) >= chunk_rows:
                yield _parse(batch, columns, timeframe, time_unit, problems, rows, lines.count)
                batch, problems, rows = [], [], 0
        if batch or problems or rows:
            yield _parse(batch, columns, timeframe, time_unit, problems, rows, lines.count)


def _columns(first: list[str], path: Path) -> tuple[list[int], list[str] | None]:
    """Column indexes of time, open, high, low, close, volume[, closed]; and the first row if it
    is data rather than a header."""
    names = [cell.strip().lower() for cell in first]
    if names and (_is_float(names[0]) or _is_iso(first[0])):
        if len(first) < 6:
            raise DataError(
                f"{path}: line 1: a file without a header needs the columns "
                "time,open,high,low,close,volume"
            )
        return [0, 1, 2, 3, 4, 5], first
    time_index = next((names.index(a) for a in TIME_ALIASES if a in names), -1)
    missing = [name for name in VALUE_COLUMNS if name not in names]
    if time_index < 0:
        missing.insert(0, "time")
    if missing:
        raise DataError(
            f"{path}: line 1: the header lacks {', '.join(missing)} "
            f"(found: {', '.join(names) or 'nothing'}); expected time,open,high,low,close,volume"
        )
    indexes = [time_index, *(names.index(name) for name in VALUE_COLUMNS)]
    if "closed" in names:
        indexes.append(names.index("closed"))
    return indexes, None


def _is_iso(text: str) -> bool:
    try:
        parse_time(text)
    except DataError:
        return False
    return True


def _parse(
    batch: list[tuple[int, list[str]]],
    columns: list[int],
    timeframe: Timeframe,
    time_unit: str,
    problems: list[RowProblem],
    rows: int,
    bytes_read: int,
) -> CsvChunk:
    good: list[tuple[int, float, float, float, float, float, bool]] = []
    t_i, o_i, h_i, l_i, c_i, v_i = columns[:6]
    closed_i = columns[6] if len(columns) > 6 else None
    for line, row in batch:
        try:
            time = parse_time(row[t_i], unit=time_unit)
        except DataError as error:
            problems.append(RowProblem(line, str(error)))
            continue
        try:
            values = [float(row[i]) for i in (o_i, h_i, l_i, c_i, v_i)]
        except ValueError:
            bad = next(
                (n, row[i])
                for n, i in zip(VALUE_COLUMNS, (o_i, h_i, l_i, c_i, v_i), strict=True)
                if not _is_float(row[i])
            )
            problems.append(RowProblem(line, f"{bad[0]} {bad[1]!r} is not a number"))
            continue
        problem = candle_problem(time, *values)
        if problem is None and not timeframe.is_aligned(time):
            problem = (
                f"time {format_time(time)} is not the open of a {timeframe} candle "
                f"(nearest open: {format_time(timeframe.floor(time))})"
            )
        if problem is not None:
            problems.append(RowProblem(line, problem))
            continue
        closed = True
        if closed_i is not None:
            flag = row[closed_i].strip().lower()
            if flag not in ("1", "0", "true", "false", "yes", "no", ""):
                problems.append(RowProblem(line, f"closed {row[closed_i]!r} is not true or false"))
                continue
            closed = flag not in ("0", "false", "no")
        good.append((time, values[0], values[1], values[2], values[3], values[4], closed))
    problems.sort(key=lambda p: p.line)
    return CsvChunk(CandleArrays.from_rows(good), problems, rows, bytes_read)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_candle_csv(handle: IO[str], candles: CandleArrays, *, iso: bool = False) -> int:
    """Write ``candles`` with a header; floats in shortest round-trip form. Return rows written."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["time", "open", "high", "low", "close", "volume", "closed"])
    times = [format_time(t) for t in candles.time.tolist()] if iso else candles.time.tolist()
    writer.writerows(
        zip(
            times,
            map(repr, candles.open.tolist()),
            map(repr, candles.high.tolist()),
            map(repr, candles.low.tolist()),
            map(repr, candles.close.tolist()),
            map(repr, candles.volume.tolist()),
            ("true" if c else "false" for c in candles.closed.tolist()),
            strict=True,
        )
    )
    return len(candles)
