"""Candle CSV files: a streaming, validating reader and a lossless writer.

The reader takes a header naming the columns (``time`` or one of its aliases, ``open``, ``high``,
``low``, ``close``, ``volume``, optionally ``closed``; other columns are ignored) or, without a
header, assumes ``time,open,high,low,close,volume``. Times are milliseconds or seconds since the
epoch, or ISO 8601. Rows that are malformed are reported with their line number and left out;
every good row is kept.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

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


def read_candle_csv(
    path: Path,
    timeframe: Timeframe,
    *,
    chunk_rows: int = 100_000,
    time_unit: str = "auto",
) -> Iterator[CsvChunk]:
    """Read ``path`` in chunks of up to ``chunk_rows`` lines.

    Raises :class:`~trader.errors.DataError` when the file cannot be read at all or its header
    lacks a required column; row-level problems are reported in each chunk instead.
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        bytes_read = 0
        try:
            header_line = handle.readline()
            bytes_read += len(header_line)
            first = next(csv.reader([header_line]), None)
        except (csv.Error, UnicodeDecodeError) as error:
            raise DataError(f"{path}: line 1: {error}") from None
        if first is None:
            return
        columns, pending = _columns(first, path)
        width = max(columns) + 1
        line_number = 2
        while True:
            try:
                lines = list(itertools.islice(handle, chunk_rows))
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}: not UTF-8 text after byte {bytes_read:,}: {error.reason}"
                ) from None
            if not lines and pending is None:
                break
            bytes_read += sum(map(len, lines))
            numbers, rows, problems = _split_rows(lines, line_number, width)
            line_number += len(lines)
            if pending is not None:  # a file without a header: line 1 is data
                numbers.insert(0, 1)
                rows.insert(0, pending)
                pending = None
            yield _parse(numbers, rows, columns, timeframe, time_unit, problems, bytes_read)


def _split_rows(
    lines: list[str], first_line: int, width: int
) -> tuple[list[int], list[list[str]], list[RowProblem]]:
    """Split lines into CSV rows with their line numbers; set aside blank and short rows."""
    problems: list[RowProblem] = []
    try:
        rows = list(csv.reader(lines))
        regular = len(rows) == len(lines)  # no record spans lines (a quoted newline)
    except csv.Error:
        regular = False
    if regular:
        numbers = list(range(first_line, first_line + len(lines)))
    else:  # slow path: row by row, so each record gets the number of its first line
        numbers, rows = [], []
        reader = csv.reader(lines)
        while True:
            start = first_line + reader.line_num
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                problems.append(RowProblem(start, f"unreadable row: {error}"))
                continue
            numbers.append(start)
            rows.append(row)
    if min(map(len, rows), default=width) >= width:
        return numbers, rows, problems
    kept_numbers: list[int] = []
    kept_rows: list[list[str]] = []
    for number, row in zip(numbers, rows, strict=True):
        if len(row) >= width:
            kept_numbers.append(number)
            kept_rows.append(row)
        elif row and (len(row) > 1 or row[0].strip()):
            problems.append(RowProblem(number, f"expected at least {width} fields, got {len(row)}"))
    return kept_numbers, kept_rows, problems


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
    numbers: list[int],
    rows: list[list[str]],
    columns: list[int],
    timeframe: Timeframe,
    time_unit: str,
    problems: list[RowProblem],
    bytes_read: int,
) -> CsvChunk:
    """Turn a batch of raw rows into candles, vectorised; rows that fail a check are re-parsed
    one by one to say exactly what is wrong with them."""
    count = len(rows) + len(problems)
    if not rows:
        problems.sort(key=lambda p: p.line)
        return CsvChunk(CandleArrays.empty(), problems, count, bytes_read)
    lines = np.asarray(numbers, dtype=np.int64)
    raw = list(zip(*rows, strict=False))
    ok = np.ones(len(rows), dtype=np.bool_)
    time = _times(raw[columns[0]], time_unit, ok)
    values = [_floats(raw[index], ok) for index in columns[1:6]]
    open_, high, low, close, volume = values
    closed = np.ones(len(rows), dtype=np.bool_)
    if len(columns) > 6:
        cells = raw[columns[6]]
        meaning = {cell: _FLAGS.get(cell.strip().lower()) for cell in set(cells)}
        closed = np.fromiter(map(meaning.__getitem__, cells), np.bool_, len(cells))
        if None in meaning.values():
            ok &= np.fromiter((meaning[cell] is not None for cell in cells), np.bool_, len(cells))
    with np.errstate(invalid="ignore"):
        ok &= time >= 0
        for column in (open_, high, low, close):
            ok &= np.isfinite(column) & (column > 0)
        ok &= np.isfinite(volume) & (volume >= 0)
        ok &= (low <= high) & (low <= open_) & (open_ <= high) & (low <= close) & (close <= high)
    if timeframe.is_calendar:
        ok &= np.fromiter((timeframe.is_aligned(int(t)) for t in time), np.bool_, len(time))
    else:
        ok &= time % timeframe.duration_ms == 0
    good = CandleArrays(time[ok], open_[ok], high[ok], low[ok], close[ok], volume[ok], closed[ok])
    good_lines = lines[ok]
    rescued: list[tuple[int, float, float, float, float, float, bool]] = []
    rescued_lines: list[int] = []
    for index in np.flatnonzero(~ok).tolist():
        line, row = numbers[index], rows[index]
        candle = _parse_row(line, row, columns, timeframe, time_unit, problems)
        if candle is not None:  # a row the vectorised checks doubted but that is sound
            rescued.append(candle)
            rescued_lines.append(line)
    if rescued:
        merged_lines = np.concatenate([good_lines, np.asarray(rescued_lines, dtype=np.int64)])
        order = np.argsort(merged_lines, kind="stable")
        extra = CandleArrays.from_rows(rescued)
        good = CandleArrays(
            *(
                np.concatenate([getattr(good, name), getattr(extra, name)])[order]
                for name in CandleArrays.COLUMNS
            )
        )
    problems.sort(key=lambda p: p.line)
    return CsvChunk(good, problems, count, bytes_read)


_FLAGS = {
    "1": True,
    "true": True,
    "yes": True,
    "": True,
    "0": False,
    "false": False,
    "no": False,
}


def _times(
    cells: tuple[str, ...], time_unit: str, ok: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """Integer times in one go; ISO times (or junk) cell by cell, marking failures in ``ok``."""
    try:
        times = np.array(cells, dtype=np.int64)
    except (ValueError, OverflowError):
        parsed = [_time_or_none(cell, time_unit) for cell in cells]
        ok &= np.fromiter((value is not None for value in parsed), np.bool_, len(parsed))
        return np.fromiter((value or 0 for value in parsed), np.int64, len(parsed))
    if time_unit == "s":
        return times * 1000
    if time_unit == "auto":
        return np.where(np.abs(times) < 100_000_000_000, times * 1000, times)
    return times


def _time_or_none(cell: str, time_unit: str) -> int | None:
    try:
        return parse_time(cell, unit=time_unit)
    except DataError:
        return None


def _floats(cells: tuple[str, ...], ok: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Floats in one go, or cell by cell (NaN and a mark in ``ok`` where a cell is no number)."""
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        values = [float(cell) if _is_float(cell) else math.nan for cell in cells]
        result = np.asarray(values, dtype=np.float64)
        ok &= ~np.isnan(result)
        return result


def _parse_row(
    line: int,
    row: list[str],
    columns: list[int],
    timeframe: Timeframe,
    time_unit: str,
    problems: list[RowProblem],
) -> tuple[int, float, float, float, float, float, bool] | None:
    """Parse one row, recording what is wrong with it; return the candle when it is sound."""
    t_i, o_i, h_i, l_i, c_i, v_i = columns[:6]
    try:
        time = parse_time(row[t_i], unit=time_unit)
    except DataError as error:
        problems.append(RowProblem(line, str(error)))
        return None
    try:
        values = [float(row[i]) for i in (o_i, h_i, l_i, c_i, v_i)]
    except ValueError:
        name, cell = next(
            (n, row[i])
            for n, i in zip(VALUE_COLUMNS, (o_i, h_i, l_i, c_i, v_i), strict=True)
            if not _is_float(row[i])
        )
        problems.append(RowProblem(line, f"{name} {cell!r} is not a number"))
        return None
    problem = candle_problem(time, *values)
    if problem is None and not timeframe.is_aligned(time):
        problem = (
            f"time {format_time(time)} is not the open of a {timeframe} candle "
            f"(nearest open: {format_time(timeframe.floor(time))})"
        )
    if problem is not None:
        problems.append(RowProblem(line, problem))
        return None
    closed = True
    if len(columns) > 6:
        flag = _FLAGS.get(row[columns[6]].strip().lower())
        if flag is None:
            problems.append(RowProblem(line, f"closed {row[columns[6]]!r} is not true or false"))
            return None
        closed = flag
    return (time, values[0], values[1], values[2], values[3], values[4], closed)


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
