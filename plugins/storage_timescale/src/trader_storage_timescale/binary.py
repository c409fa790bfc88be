"""Candles in PostgreSQL's binary formats, built and parsed with NumPy.

Writes use the binary COPY format; reads use the binary send format of each column,
concatenated by the server (:func:`decode_columns`).

Every candle column is NOT NULL and of fixed width, so every row of a binary COPY stream has the
same layout: a field count, then for each field its length and its big-endian value. That makes
a whole stream one NumPy structured array: building or parsing a million rows costs a few array
operations instead of a million Python calls. ``timestamptz`` travels as microseconds since
2000-01-01 UTC.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from trader.model import CandleArrays

__all__ = [
    "HEADER",
    "TRAILER",
    "decode_candles",
    "decode_columns",
    "decode_time_column",
    "encode_candles",
]

#: Signature, flags (no OIDs) and an empty header extension.
HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER: Final = b"\xff\xff"
#: 2000-01-01 00:00 UTC in milliseconds since the Unix epoch.
PG_EPOCH_MS: Final = 946_684_800_000

_VALUES: Final = ("open", "high", "low", "close", "volume")


def _row_type(with_series: bool) -> np.dtype[np.void]:
    fields: list[tuple[str, str]] = [("count", ">i2")]
    if with_series:
        fields += [("series_length", ">i4"), ("series", ">i4")]
    fields += [("time_length", ">i4"), ("time", ">i8")]
    for name in _VALUES:
        fields += [(f"{name}_length", ">i4"), (name, ">f8")]
    fields += [("closed_length", ">i4"), ("closed", "u1")]
    return np.dtype(fields)


_CANDLE_ROW: Final = _row_type(False)
_SERIES_CANDLE_ROW: Final = _row_type(True)


def encode_candles(
    data: CandleArrays, series_id: int | None = None, chunk_rows: int = 65_536
) -> Iterator[bytes]:
    """Yield a binary COPY stream of ``data`` in pieces of up to ``chunk_rows`` rows.

    Columns: ``(series_id,)`` when ``series_id`` is given, then ``time, open, high, low, close,
    volume, closed``. The header comes with the first piece, the trailer with the last.
    """
    row_type = _CANDLE_ROW if series_id is None else _SERIES_CANDLE_ROW
    total = len(data)
    for begin in range(0, max(total, 1), chunk_rows):
        stop = min(begin + chunk_rows, total)
        rows = np.empty(stop - begin, row_type)
        rows["count"] = 7 if series_id is None else 8
        if series_id is not None:
            rows["series_length"] = 4
            rows["series"] = series_id
        rows["time_length"] = 8
        rows["time"] = (data.time[begin:stop] - PG_EPOCH_MS) * 1000
        for name in _VALUES:
            rows[f"{name}_length"] = 8
            rows[name] = getattr(data, name)[begin:stop]
        rows["closed_length"] = 1
        rows["closed"] = data.closed[begin:stop]
        piece = rows.tobytes()
        if begin == 0:
            piece = HEADER + piece
        if stop >= total:
            piece += TRAILER
        yield piece


def _rows(
    buffer: bytes | bytearray | memoryview, row_type: np.dtype[np.void]
) -> npt.NDArray[np.void]:
    size = len(buffer) - len(HEADER) - len(TRAILER)
    if size < 0 or bytes(buffer[: len(HEADER) - 4]) != HEADER[:-4] or size % row_type.itemsize:
        raise ValueError(
            f"unexpected binary COPY data: {len(buffer)} bytes do not hold whole "
            f"{row_type.itemsize}-byte rows"
        )
    rows = np.frombuffer(buffer, row_type, count=size // row_type.itemsize, offset=len(HEADER))
    if len(rows) and not bool(np.all(rows["count"] == len(row_type.names or ()) // 2)):
        raise ValueError("unexpected binary COPY data: a row has another number of fields")
    return rows


def decode_candles(buffer: bytes | bytearray | memoryview) -> CandleArrays:
    """Parse a binary COPY stream of ``time, open, high, low, close, volume, closed``."""
    rows = _rows(buffer, _CANDLE_ROW)
    return CandleArrays(
        rows["time"] // 1000 + PG_EPOCH_MS,
        rows["open"].astype(np.float64),
        rows["high"].astype(np.float64),
        rows["low"].astype(np.float64),
        rows["close"].astype(np.float64),
        rows["volume"].astype(np.float64),
        rows["closed"].astype(np.bool_),
    )


def decode_columns(row: Sequence[bytes | None] | None) -> CandleArrays:
    """Build candles from one row of seven ``bytea`` columns, each the concatenated binary
    send format of a column (``string_agg(timestamptz_send(time), '')`` and so on), sorted by
    time here whatever order the server aggregated the rows in."""
    if row is None or row[0] is None:
        return CandleArrays.empty()
    time = np.frombuffer(row[0], ">i8") // 1000 + PG_EPOCH_MS
    open_, high, low, close, volume = (
        np.frombuffer(column or b"", ">f8").astype(np.float64) for column in row[1:6]
    )
    closed = np.frombuffer(row[6] or b"", "u1").astype(np.bool_)
    if not all(len(column) == len(time) for column in (open_, high, low, close, volume, closed)):
        raise ValueError("the server sent columns of different lengths")
    if len(time) > 1 and not bool(np.all(time[1:] > time[:-1])):
        order = np.argsort(time, kind="stable")
        time, open_, high, low, close = (
            time[order],
            open_[order],
            high[order],
            low[order],
            close[order],
        )
        volume, closed = volume[order], closed[order]
    return CandleArrays(time.astype(np.int64), open_, high, low, close, volume, closed)


def decode_time_column(value: bytes | None) -> npt.NDArray[np.int64]:
    """Sorted milliseconds from concatenated ``timestamptz_send`` values."""
    if value is None:
        return np.empty(0, np.int64)
    time = (np.frombuffer(value, ">i8") // 1000 + PG_EPOCH_MS).astype(np.int64)
    return np.sort(time) if len(time) > 1 and not bool(np.all(time[1:] > time[:-1])) else time
