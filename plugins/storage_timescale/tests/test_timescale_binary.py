"""The NumPy codecs of PostgreSQL's binary formats."""

from __future__ import annotations

import numpy as np

from trader.model import MAX_TIME_MS, CandleArrays
from trader_storage_timescale.binary import (
    decode_candles,
    decode_columns,
    decode_time_column,
    encode_candles,
)


def _candles() -> CandleArrays:
    time = np.array([0, 60_000, 1_700_000_000_000, MAX_TIME_MS], dtype=np.int64)
    values = np.array([0.1 + 0.2, 1e-8, 123456.789, 3.0000000000000004])
    return CandleArrays(time, values, values * 2, values / 3, values, values * 7, [1, 0, 1, 0])


def test_a_copy_stream_round_trips_in_pieces() -> None:
    candles = _candles()
    pieces = list(encode_candles(candles, chunk_rows=3))
    assert len(pieces) == 2 and pieces[0].startswith(b"PGCOPY\n\xff\r\n\x00")
    assert pieces[-1].endswith(b"\xff\xff")
    decoded = decode_candles(b"".join(pieces))
    for column in CandleArrays.COLUMNS:
        assert np.array_equal(getattr(decoded, column), getattr(candles, column)), column


def test_send_format_columns_come_back_sorted() -> None:
    candles = _candles()
    order = [2, 0, 3, 1]
    row = [
        b"".join(
            ((int(t) - 946_684_800_000) * 1000).to_bytes(8, "big", signed=True)
            for t in candles.time[order]
        ),
        *(
            getattr(candles, name)[order].astype(">f8").tobytes()
            for name in ("open", "high", "low", "close", "volume")
        ),
        candles.closed[order].astype("u1").tobytes(),
    ]
    decoded = decode_columns(row)
    for column in CandleArrays.COLUMNS:
        assert np.array_equal(getattr(decoded, column), getattr(candles, column)), column
    assert decode_time_column(row[0]).tolist() == candles.time.tolist()
    assert len(decode_columns(None)) == 0 and len(decode_columns([None] * 7)) == 0
    assert len(decode_time_column(None)) == 0
