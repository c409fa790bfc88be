# ruff: noqa: S608  # CQL names only a validated keyspace; every value is a bind marker
"""The data layout: time buckets, partition sizes and every CQL statement the store sends.

Candles live in ``candles``, partitioned by ``(exchange, symbol, timeframe, bucket)`` and
clustered by open ``time`` (a ``bigint`` of milliseconds, exact for every candle time). A bucket
is :data:`BUCKET_SLOTS` consecutive candle slots of the series' timeframe (slots as in
:mod:`trader.candles`: weeks count from Monday 1970-01-05, months from January 1970), so every
partition holds at most :data:`BUCKET_SLOTS` rows whatever the timeframe.

Partition size, per candle row on disk (SSTable format ``mc``/``md``/``me``, before
compression): row header (flags 1 byte, row size and previous row size varints up to 3 bytes
each, liveness timestamp delta up to 9) at most 16 bytes; the clustering key (``time``, a
``bigint``) 8 bytes plus a 1-byte clustering block header; five ``double`` cells (flags 1 + value
8) 45 bytes; the ``boolean`` cell 2 bytes: 72 bytes. Rows are always written whole, so cells
share the row's timestamp; were they not, each cell would add a timestamp delta of up to 9
bytes: 126 bytes. :data:`ROW_BYTES_BOUND` (128) bounds both, and a full bucket is then at most
65,536 x 128 B = 8 MiB on disk, a twelfth of the usual 100 MB guideline, leaving room for
memtable and index overheads (estimates from the format, not measurements).

Bucket widths (65,536 candles): 1m about 45.5 days, 5m 227.6 days, 15m 1.87 years, 1h 7.5
years, 4h 29.9 years, 1d 179 years, 1w 1,257 years, 1M 5,461 years.

``candle_series`` holds one row per (series, bucket) that has held candles: it is how
:meth:`list_series`, :meth:`read` and :meth:`latest` find a series' buckets without scanning
empty ones, and it is written (idempotently) before the candles of a new bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from trader.candles import slot_index, slot_open
from trader.model import MAX_TIME_MS, Timeframe
from trader.model.candle import IntArray

__all__ = [
    "BUCKET_SLOTS",
    "LAYOUT_VERSION",
    "MAX_PARTITION_BYTES",
    "ROW_BYTES_BOUND",
    "Statements",
    "bucket_bounds",
    "bucket_of",
    "buckets_overlapping",
    "keyspace_cql",
    "table_cql",
]

#: Candle slots per partition (bucket); a constant of the layout, recorded in the keyspace.
BUCKET_SLOTS: Final = 1 << 16
#: Upper bound of the on-disk bytes of one candle row (see the module's docstring).
ROW_BYTES_BOUND: Final = 128
#: The most a full bucket occupies on disk, before compression.
MAX_PARTITION_BYTES: Final = BUCKET_SLOTS * ROW_BYTES_BOUND
#: Version of this layout, stored in ``candle_store_meta``.
LAYOUT_VERSION: Final = "1"
#: Just past the latest open time a candle can have.
_END_OF_TIME: Final = MAX_TIME_MS + 1


def bucket_of(times: IntArray | int, timeframe: Timeframe) -> IntArray:
    """Return the bucket of each open time in ``times`` (any time inside a candle works too)."""
    result: IntArray = slot_index(times, timeframe) // BUCKET_SLOTS
    return result


def bucket_bounds(bucket: int, timeframe: Timeframe) -> tuple[int, int]:
    """Return ``[first, end)``: the open times bucket ``bucket`` of ``timeframe`` covers."""
    first = int(slot_open(bucket * BUCKET_SLOTS, timeframe))
    end = int(slot_open((bucket + 1) * BUCKET_SLOTS, timeframe))
    return first, end


def buckets_overlapping(timeframe: Timeframe, start: int | None, end: int | None) -> range:
    """Return the buckets that may hold open times in ``[start, end)`` (``None``: unbounded).

    Bounds are clamped to the times a candle can have; an empty range gives no buckets.
    """
    low = 0 if start is None else min(max(start, 0), _END_OF_TIME)
    high = _END_OF_TIME if end is None else min(max(end, 0), _END_OF_TIME)
    if low >= high:
        return range(0)
    first = int(bucket_of(low, timeframe))
    last = int(bucket_of(high - 1, timeframe))
    return range(first, last + 1)


def split_by_bucket(times: IntArray, timeframe: Timeframe) -> list[tuple[int, int, int]]:
    """Split sorted ``times`` into runs of one bucket: ``(bucket, begin, stop)`` row ranges."""
    if not len(times):
        return []
    buckets = bucket_of(times, timeframe)
    starts = np.flatnonzero(np.concatenate([[True], buckets[1:] != buckets[:-1]]))
    stops = np.concatenate([starts[1:], [len(buckets)]])
    return [
        (int(buckets[begin]), int(begin), int(stop))
        for begin, stop in zip(starts.tolist(), stops.tolist(), strict=True)
    ]


def keyspace_cql(keyspace: str, replication: str) -> str:
    """``CREATE KEYSPACE IF NOT EXISTS`` with the replication map given as CQL."""
    return (
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication} "
        "AND durable_writes = true"
    )


def table_cql(keyspace: str) -> list[str]:
    """The ``CREATE TABLE IF NOT EXISTS`` statements of the layout, in order."""
    return [
        f"CREATE TABLE IF NOT EXISTS {keyspace}.candle_store_meta "
        "(name text PRIMARY KEY, value text)",
        f"CREATE TABLE IF NOT EXISTS {keyspace}.candle_series "
        "(exchange text, symbol text, timeframe text, bucket bigint, "
        "PRIMARY KEY ((exchange, symbol, timeframe), bucket)) "
        "WITH CLUSTERING ORDER BY (bucket ASC)",
        f"CREATE TABLE IF NOT EXISTS {keyspace}.candles "
        "(exchange text, symbol text, timeframe text, bucket bigint, time bigint, "
        "open double, high double, low double, close double, volume double, closed boolean, "
        "PRIMARY KEY ((exchange, symbol, timeframe, bucket), time)) "
        "WITH CLUSTERING ORDER BY (time ASC)",
    ]


_PARTITION: Final = "exchange = ? AND symbol = ? AND timeframe = ? AND bucket = ?"
_SERIES: Final = "exchange = ? AND symbol = ? AND timeframe = ?"
_VALUES: Final = "time, open, high, low, close, volume, closed"


@dataclass(frozen=True)
class Statements:
    """Every statement the store prepares, for one keyspace.

    Each is idempotent: inserts write fixed values (an upsert), deletes remove fixed ranges, so
    running one twice leaves what running it once does and a timed-out one may be retried.
    """

    keyspace: str

    @property
    def reads(self) -> dict[str, str]:
        """Statements that read, by name (prepared at the read consistency level)."""
        ks = self.keyspace
        return {
            "select_meta": f"SELECT value FROM {ks}.candle_store_meta WHERE name = ?",
            "select_range": (
                f"SELECT {_VALUES} FROM {ks}.candles WHERE {_PARTITION} AND time >= ? AND time < ?"
            ),
            "select_times": (
                f"SELECT time FROM {ks}.candles WHERE {_PARTITION} AND time >= ? AND time < ?"
            ),
            "select_latest": (
                f"SELECT {_VALUES} FROM {ks}.candles WHERE {_PARTITION} ORDER BY time DESC LIMIT ?"
            ),
            "count_range": (
                f"SELECT count(*) FROM {ks}.candles WHERE {_PARTITION} AND time >= ? AND time < ?"
            ),
            "bucket_extent": (
                f"SELECT count(*), min(time), max(time) FROM {ks}.candles WHERE {_PARTITION}"
            ),
            "series_buckets": (
                f"SELECT bucket FROM {ks}.candle_series WHERE {_SERIES} "
                "AND bucket >= ? AND bucket <= ?"
            ),
            "series_buckets_desc": (
                f"SELECT bucket FROM {ks}.candle_series WHERE {_SERIES} ORDER BY bucket DESC"
            ),
            "all_series": f"SELECT exchange, symbol, timeframe, bucket FROM {ks}.candle_series",
        }

    @property
    def writes(self) -> dict[str, str]:
        """Statements that write or delete, by name (prepared at the write consistency level)."""
        ks = self.keyspace
        return {
            "insert_meta": f"INSERT INTO {ks}.candle_store_meta (name, value) VALUES (?, ?)",
            "insert_candle": (
                f"INSERT INTO {ks}.candles (exchange, symbol, timeframe, bucket, {_VALUES}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            "insert_bucket": (
                f"INSERT INTO {ks}.candle_series (exchange, symbol, timeframe, bucket) "
                "VALUES (?, ?, ?, ?)"
            ),
            "delete_range": (
                f"DELETE FROM {ks}.candles WHERE {_PARTITION} AND time >= ? AND time < ?"
            ),
            "delete_partition": f"DELETE FROM {ks}.candles WHERE {_PARTITION}",
            "delete_bucket": (f"DELETE FROM {ks}.candle_series WHERE {_SERIES} AND bucket = ?"),
        }
