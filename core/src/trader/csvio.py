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

from trader.candles import misaligned
from trader.errors import DataError
from trader.model import MAX_TIME_MS, CandleArrays, Timeframe, candle_problem
from trader.timeutil import format_time, parse_time

TIME_ALIASES = ("time", "timestamp", "open_time", "date", "datetime", "mts", "t")
VALUE_COLUMNS = ("open", "high", "low", "close", "volume")
#: Integers below this are seconds when the time unit is ``auto`` (as in :func:`parse_time`).
_SECONDS_BELOW = 100_000_000_000


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

    The file is UTF-8 (a leading byte order mark is skipped). Each open time is kept once: the
    first row with it wins, and later rows with the same time, in any chunk, are reported as
    problems. ``bytes_read`` counts the bytes of the file consumed so far, exactly.

    Raises :class:`~trader.errors.DataError` when the file cannot be read at all, is not UTF-8
    text, or its header lacks a required column; row-level problems are reported in each chunk
    instead.
    """
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be at least 1, not {chunk_rows}")
    try:
        handle = path.open("rb")
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        try:
            header_bytes = handle.readline()
        except OSError as error:
            raise DataError(f"cannot read {path}: {error.strerror or error}") from None
        bytes_read = len(header_bytes)
        skip = len(_BOM) if header_bytes.startswith(_BOM) else 0
        header_line = _decode([header_bytes[skip:]], path, 1, skip)[0]
        try:
            first = next(csv.reader([header_line]), None)
        except csv.Error as error:
            raise DataError(f"{path}: line 1: {error}") from None
        if first is None:
            return
        columns, pending = _columns(first, path)
        width = max(columns) + 1
        line_number = 2
        seen = _SeenTimes()
        while True:
            try:
                raw_lines = list(itertools.islice(handle, chunk_rows))
            except OSError as error:
                raise DataError(f"cannot read {path}: {error.strerror or error}") from None
            if not raw_lines and pending is None:
                break
            lines = _decode(raw_lines, path, line_number, bytes_read)
            bytes_read += sum(map(len, raw_lines))
            numbers, rows, problems = _split_rows(lines, line_number, width)
            line_number += len(lines)
            if pending is not None:  # a file without a header: line 1 is data
                numbers.insert(0, 1)
                rows.insert(0, pending)
                pending = None
            count = len(rows) + len(problems)  # every record, good or not; blank lines aside
            candles, good_lines = _parse(numbers, rows, columns, timeframe, time_unit, problems)
            candles = seen.drop_repeats(candles, good_lines, problems)
            problems.sort(key=lambda p: p.line)
            yield CsvChunk(candles, problems, count, bytes_read)


_BOM = b"\xef\xbb\xbf"


def _decode(raw_lines: list[bytes], path: Path, first_line: int, offset: int) -> list[str]:
    """Decode lines of UTF-8; on a bad byte, say on which line and at which byte offset."""
    try:
        return list(map(bytes.decode, raw_lines))
    except UnicodeDecodeError:
        pass
    for index, raw in enumerate(raw_lines):
        try:
            raw.decode()
        except UnicodeDecodeError as error:
            at = offset + sum(map(len, raw_lines[:index])) + error.start
            raise DataError(
                f"{path}: line {first_line + index}: not UTF-8 text at byte {at:,} "
                f"({error.reason}); save the file as UTF-8"
            ) from None
    raise AssertionError("unreachable: a line failed to decode as a whole only")


class _SeenTimes:
    """The open times kept so far, with the line each came from, to report repeats.

    Times live in a few sorted runs (merged like a binary counter, so there are O(log n) of
    them); a chunk is only looked up in the runs whose range overlaps it, so a file in time
    order costs a comparison per run and chunk.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []

    def drop_repeats(
        self,
        candles: CandleArrays,
        lines: npt.NDArray[np.int64],
        problems: list[RowProblem],
    ) -> CandleArrays:
        """Return ``candles`` without rows whose time came earlier, reporting each in
        ``problems``; remember the times kept."""
        if not len(candles):
            return candles
        time = candles.time
        first_line = np.full(len(time), -1, dtype=np.int64)
        if len(time) > 1 and not bool(np.all(time[1:] > time[:-1])):
            order = np.argsort(time, kind="stable")  # equal times stay in line order
            ordered = time[order]
            starts = np.concatenate([[True], ordered[1:] != ordered[:-1]])
            group_first = order[np.flatnonzero(starts)[np.cumsum(starts) - 1]]
            repeat = ~starts
            first_line[order[repeat]] = lines[group_first[repeat]]
        low, high = int(time.min()), int(time.max())
        for run_times, run_lines in self._runs:
            if int(run_times[0]) > high or int(run_times[-1]) < low:
                continue
            at = np.minimum(np.searchsorted(run_times, time), len(run_times) - 1)
            found = run_times[at] == time
            first_line[found] = run_lines[at[found]]
        repeats = np.flatnonzero(first_line >= 0)
        if len(repeats):
            for index in repeats.tolist():
                problems.append(
                    RowProblem(
                        int(lines[index]),
                        f"open time {format_time(int(time[index]))} already appears on line "
                        f"{int(first_line[index])}; row skipped",
                    )
                )
            keep = first_line < 0
            candles = CandleArrays(*(getattr(candles, c)[keep] for c in CandleArrays.COLUMNS))
            lines = lines[keep]
        self._remember(candles.time, lines)
        return candles

    def _remember(self, time: npt.NDArray[np.int64], lines: npt.NDArray[np.int64]) -> None:
        if not len(time):
            return
        if len(time) > 1 and not bool(np.all(time[1:] > time[:-1])):
            order = np.argsort(time, kind="stable")
            time, lines = time[order], lines[order]
        self._runs.append((time.copy(), lines.copy()))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= len(self._runs[-1][0]):
            (a_times, a_lines), (b_times, b_lines) = self._runs.pop(-2), self._runs.pop()
            merged_times = np.concatenate([a_times, b_times])
            merged_lines = np.concatenate([a_lines, b_lines])
            if int(a_times[-1]) >= int(b_times[0]):  # overlapping runs: sort; else already sorted
                order = np.argsort(merged_times, kind="stable")
                merged_times, merged_lines = merged_times[order], merged_lines[order]
            self._runs.append((merged_times, merged_lines))


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
) -> tuple[CandleArrays, npt.NDArray[np.int64]]:
    """Turn a batch of raw rows into candles (in line order) and their line numbers, vectorised;
    rows that fail a check are re-parsed one by one to say exactly what is wrong with them."""
    if not rows:
        return CandleArrays.empty(), np.empty(0, dtype=np.int64)
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
        for column in (open_, high, low, close):
            ok &= np.isfinite(column) & (column > 0)
        ok &= np.isfinite(volume) & (volume >= 0)
        ok &= (low <= high) & (low <= open_) & (open_ <= high) & (low <= close) & (close <= high)
    ok &= ~misaligned(np.where(ok, time, 0), timeframe)
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
        good_lines = merged_lines[order]
    return good, good_lines


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
    """Integer times in one go; ISO times (or junk) cell by cell. Cells that are no time, or a
    time outside 0..MAX_TIME_MS, are marked in ``ok`` (and hold 0)."""
    try:
        raw = np.array(cells, dtype=np.int64)
    except (ValueError, OverflowError):
        parsed = [_time_or_none(cell, time_unit) for cell in cells]
        ok &= np.fromiter((value is not None for value in parsed), np.bool_, len(parsed))
        return np.fromiter((value or 0 for value in parsed), np.int64, len(parsed))
    if time_unit == "s":
        seconds = np.ones(len(raw), dtype=np.bool_)
    elif time_unit == "auto":
        seconds = raw < _SECONDS_BELOW
    else:
        seconds = np.zeros(len(raw), dtype=np.bool_)
    # Checked before scaling: seconds * 1000 could wrap around int64 into a plausible time.
    inside = (raw >= 0) & (raw <= np.where(seconds, MAX_TIME_MS // 1000, MAX_TIME_MS))
    ok &= inside
    return np.where(inside, np.where(seconds, raw * 1000, raw), 0)


def _time_or_none(cell: str, time_unit: str) -> int | None:
    """The time in ``cell`` when it is one a candle can have, else ``None``."""
    try:
        value = parse_time(cell, unit=time_unit)
    except DataError:
        return None
    return value if 0 <= value <= MAX_TIME_MS else None


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


def write_candle_csv(
    handle: IO[str], candles: CandleArrays, *, iso: bool = False, header: bool = True
) -> int:
    """Write ``candles``, after a header unless ``header`` is false (to append a later part);
    floats in shortest round-trip form. Return rows written."""
    writer = csv.writer(handle, lineterminator="\n")
    if header:
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
