"""The layout: schema CQL, bucket arithmetic and the statements the store prepares."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.candles import slot_index, slot_open
from trader.model import MAX_TIME_MS, Timeframe
from trader_storage_scylla.layout import (
    BUCKET_SLOTS,
    MAX_PARTITION_BYTES,
    ROW_BYTES_BOUND,
    Statements,
    bucket_bounds,
    bucket_of,
    buckets_overlapping,
    keyspace_cql,
    split_by_bucket,
    table_cql,
)
from trader_storage_scylla.options import Replication

TIMEFRAMES = [Timeframe.parse(t) for t in ("1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M")]
times = st.integers(min_value=0, max_value=MAX_TIME_MS)
timeframes = st.sampled_from(TIMEFRAMES)


def test_keyspace_cql_carries_the_replication_map() -> None:
    simple = Replication(replication_factor=3)
    assert keyspace_cql("prices", simple.cql()) == (
        "CREATE KEYSPACE IF NOT EXISTS prices WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 3} AND durable_writes = true"
    )
    topology = Replication(strategy="NetworkTopologyStrategy", datacenters={"eu-west": 3, "dc1": 2})
    assert topology.cql() == "{'class': 'NetworkTopologyStrategy', 'dc1': 2, 'eu-west': 3}"
    assert Replication().cql() == "{'class': 'SimpleStrategy', 'replication_factor': 1}"


def test_tables_partition_by_series_and_bucket_and_cluster_by_open_time() -> None:
    meta, series, candles = table_cql("prices")
    assert meta == (
        "CREATE TABLE IF NOT EXISTS prices.candle_store_meta (name text PRIMARY KEY, value text)"
    )
    assert series.endswith(
        "PRIMARY KEY ((exchange, symbol, timeframe), bucket)) WITH CLUSTERING ORDER BY (bucket ASC)"
    )
    assert candles == (
        "CREATE TABLE IF NOT EXISTS prices.candles (exchange text, symbol text, timeframe text, "
        "bucket bigint, time bigint, open double, high double, low double, close double, "
        "volume double, closed boolean, PRIMARY KEY ((exchange, symbol, timeframe, bucket), "
        "time)) WITH CLUSTERING ORDER BY (time ASC)"
    )


def test_every_statement_restricts_whole_partitions_and_binds_every_value() -> None:
    statements = Statements("prices")
    partition = "exchange = ? AND symbol = ? AND timeframe = ? AND bucket = ?"
    for name, text in {**statements.reads, **statements.writes}.items():
        assert "prices." in text, name
        assert not re.search(r"'|\d{3,}", text), f"{name} inlines a value: {text}"
        if " prices.candles " in text and not text.startswith("INSERT"):
            assert partition in text, f"{name} does not name one whole partition: {text}"
        assert "ALLOW FILTERING" not in text and " IF " not in text, name
    assert statements.writes["insert_candle"].count("?") == 11
    assert statements.reads["select_latest"].endswith("ORDER BY time DESC LIMIT ?")
    assert statements.reads["all_series"] == (
        "SELECT exchange, symbol, timeframe, bucket FROM prices.candle_series"
    )


def test_a_full_partition_stays_well_under_100_megabytes() -> None:
    # 72 bytes per row on disk when cells share the row's timestamp, 126 when each cell
    # carries its own (see trader_storage_scylla.layout); the bound covers both.
    assert ROW_BYTES_BOUND >= 8 + 9 + 5 * 9 + 2 + 16
    assert ROW_BYTES_BOUND >= 72 + 6 * 9
    assert MAX_PARTITION_BYTES == BUCKET_SLOTS * ROW_BYTES_BOUND == 8 * 1024 * 1024
    assert MAX_PARTITION_BYTES * 10 < 100 * 1000 * 1000


def test_bucket_widths_per_timeframe() -> None:
    day = 86_400_000
    widths = {
        str(tf): (bucket_bounds(1, tf)[1] - bucket_bounds(1, tf)[0]) / day for tf in TIMEFRAMES
    }
    assert round(widths["1m"], 1) == 45.5
    assert round(widths["1h"] / 365.25, 1) == 7.5
    assert round(widths["1d"] / 365.25) == 179
    assert round(widths["1M"] / 365.25) == 5461
    assert bucket_bounds(0, Timeframe.parse("1w"))[0] == 4 * day  # the first Monday
    assert bucket_bounds(0, Timeframe.parse("1M")) == (
        0,
        bucket_bounds(1, Timeframe.parse("1M"))[0],
    )


@settings(max_examples=150, deadline=None)
@given(time=times, timeframe=timeframes)
def test_every_open_time_maps_to_exactly_one_bucket_that_contains_it(
    time: int, timeframe: Timeframe
) -> None:
    opened = int(slot_open(slot_index(time, timeframe), timeframe))
    bucket = int(bucket_of(opened, timeframe))
    first, after = bucket_bounds(bucket, timeframe)
    assert first <= opened < after
    assert int(bucket_of(time, timeframe)) == bucket  # a time inside the candle, too
    for other in (bucket - 1, bucket + 1):
        low, high = bucket_bounds(other, timeframe)
        assert not low <= opened < high


@settings(max_examples=200, deadline=None)
@given(data=st.data(), timeframe=timeframes)
def test_buckets_tile_time_and_hold_bucket_slots_candles(
    data: st.DataObject, timeframe: Timeframe
) -> None:
    # Every bucket a candle time can fall into, up to the one holding the year 9999.
    bucket = data.draw(st.integers(0, int(bucket_of(MAX_TIME_MS, timeframe))))
    first, after = bucket_bounds(bucket, timeframe)
    assert bucket_bounds(bucket + 1, timeframe)[0] == after
    assert int(slot_index(after, timeframe) - slot_index(first, timeframe)) == BUCKET_SLOTS
    assert int(bucket_of(first, timeframe)) == bucket
    assert int(bucket_of(after - 1, timeframe)) == bucket
    assert int(bucket_of(after, timeframe)) == bucket + 1


@settings(max_examples=150, deadline=None)
@given(start=st.none() | times, end=st.none() | times, timeframe=timeframes)
def test_a_range_touches_exactly_the_buckets_overlapping_it(
    start: int | None, end: int | None, timeframe: Timeframe
) -> None:
    touched = buckets_overlapping(timeframe, start, end)
    low = 0 if start is None else start
    high = MAX_TIME_MS + 1 if end is None else end
    if low >= high:
        assert not touched
        return
    assert touched, f"[{low}, {high}) touches no bucket"
    # ``touched`` is a contiguous range: its ends and their neighbours decide it.
    ends = {touched[0] - 1, touched[0], touched[0] + 1, touched[-1] - 1, touched[-1]}
    for bucket in ends | {touched[-1] + 1}:
        first, after = bucket_bounds(bucket, timeframe)
        overlaps = first < high and low < after
        assert overlaps == (bucket in touched), (bucket, first, after, low, high)


@given(
    offsets=st.lists(st.integers(0, 5 * BUCKET_SLOTS), min_size=1, max_size=50, unique=True),
    timeframe=st.sampled_from([Timeframe.parse("1m"), Timeframe.parse("1w")]),
)
def test_split_by_bucket_cuts_sorted_times_into_runs_of_one_bucket(
    offsets: list[int], timeframe: Timeframe
) -> None:
    stamps = slot_open(np.array(sorted(offsets), dtype=np.int64), timeframe)
    runs = split_by_bucket(stamps, timeframe)
    assert runs[0][1] == 0 and runs[-1][2] == len(stamps)
    for (bucket, begin, stop), following in zip(runs, [*runs[1:], None], strict=True):
        assert set(bucket_of(stamps[begin:stop], timeframe).tolist()) == {bucket}
        if following is not None:
            assert following[1] == stop and following[0] > bucket
