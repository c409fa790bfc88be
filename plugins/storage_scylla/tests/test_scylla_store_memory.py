"""The store at the driver's session boundary: statements, paging, buckets, levels, errors.

No ScyllaDB or Cassandra server can be installed on this machine, so these tests drive the real
store through :class:`trader_storage_scylla.memory.MemorySession`, which implements the driver
methods the store calls (``prepare``, ``execute``, ``execute_async`` with paging) over
in-memory tables, and look at what the store sent through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from cassandra import ConsistencyLevel, OperationTimedOut, WriteTimeout, WriteType
from cassandra.policies import DCAwareRoundRobinPolicy, RetryPolicy, TokenAwarePolicy

from trader.errors import StorageError
from trader.interfaces import PluginContext, SeriesInfo, WriteResult
from trader.model import MINUTE_MS, SeriesKey, Timeframe
from trader_sdk.testing.candle_store import make_candles
from trader_storage_scylla.layout import BUCKET_SLOTS, bucket_bounds
from trader_storage_scylla.memory import MemoryCluster, MemorySession
from trader_storage_scylla.options import ScyllaCandleOptions
from trader_storage_scylla.store import (
    IdempotentRetryPolicy,
    ScyllaCandleStore,
    load_balancing,
)

T = TypeVar("T")
MINUTE = SeriesKey("memory", "BTC/USDT", Timeframe.parse("1m"))
BUCKET_MS = BUCKET_SLOTS * MINUTE_MS


def _run(
    cluster: MemoryCluster,
    scenario: Callable[[ScyllaCandleStore], Awaitable[T]],
    **options: object,
) -> T:
    settings = ScyllaCandleOptions.model_validate({"page_size": 100, **options})
    store = ScyllaCandleStore(
        settings, PluginContext(Path("."), Path(".")), connector=cluster.connector()
    )

    async def main() -> T:
        async with store:
            return await scenario(store)

    return asyncio.run(main())


def _session(cluster: MemoryCluster) -> MemorySession:
    return cluster.sessions[-1]


def _buckets_read(session: MemorySession, statement: str) -> list[int]:
    return [r.parameters[3] for r in session.log if r.query.startswith(statement)]


def test_open_creates_keyspace_and_tables_and_prepares_idempotent_statements() -> None:
    cluster = MemoryCluster(threaded=False)

    async def scenario(store: ScyllaCandleStore) -> None:
        await store.write(MINUTE, make_candles([0, MINUTE_MS]))
        await store.read(MINUTE)

    _run(
        cluster,
        scenario,
        keyspace="prices",
        replication={"strategy": "NetworkTopologyStrategy", "datacenters": {"dc1": 3}},
        read_consistency="LOCAL_ONE",
        write_consistency="QUORUM",
    )
    session = _session(cluster)
    assert session.schema[0].startswith(
        "CREATE KEYSPACE IF NOT EXISTS prices WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
    )
    assert [text.split(" (")[0] for text in session.schema[1:]] == [
        "CREATE TABLE IF NOT EXISTS prices.candle_store_meta",
        "CREATE TABLE IF NOT EXISTS prices.candle_series",
        "CREATE TABLE IF NOT EXISTS prices.candles",
    ]
    assert session.log, "nothing went through execute_async"
    for request in session.log:
        assert request.is_idempotent, request.query
        write = request.query.startswith(("INSERT", "DELETE"))
        wanted = ConsistencyLevel.QUORUM if write else ConsistencyLevel.LOCAL_ONE
        assert request.consistency_level == wanted, request.query


def test_tables_only_leaves_the_keyspace_to_its_owner() -> None:
    cluster = MemoryCluster(threaded=False)
    store = ScyllaCandleStore(
        ScyllaCandleOptions(schema_creation="tables"),
        PluginContext(Path("."), Path(".")),
        connector=cluster.connector(),
    )
    with pytest.raises(StorageError, match="open failed: InvalidRequest: Keyspace trader does not"):
        asyncio.run(store.open())
    cluster.keyspaces["trader"] = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    asyncio.run(store.open())
    assert not any(text.startswith("CREATE KEYSPACE") for text in _session(cluster).schema)
    asyncio.run(store.close())


def test_reads_page_through_buckets_in_order() -> None:
    cluster = MemoryCluster(threaded=True)
    # 250 candles at the end of bucket 0, 250 at the start of bucket 1, 5 far later in bucket 3.
    times = (
        np.concatenate(
            [
                np.arange(BUCKET_SLOTS - 250, BUCKET_SLOTS + 250),
                np.arange(3 * BUCKET_SLOTS, 3 * BUCKET_SLOTS + 5),
            ]
        )
        * MINUTE_MS
    )
    candles = make_candles(times.tolist())

    async def scenario(store: ScyllaCandleStore) -> None:
        assert await store.write(MINUTE, candles) == WriteResult(inserted=505)
        session = _session(cluster)
        session.log.clear()
        got = await store.read(MINUTE)
        assert got == candles
        # Three buckets hold candles (0, 1, 3): bucket 2 is never asked for.
        assert sorted(_buckets_read(session, "SELECT time, open")) == [0, 0, 0, 1, 1, 1, 3]
        paged = [r for r in session.log if r.paged]
        assert len(paged) == 4, "250 rows at 100 a page: two more pages in each full bucket"
        middle = await store.read(MINUTE, int(times[200]), int(times[300]))
        assert middle == candles.slice(200, 300)

    _run(cluster, scenario)


def test_latest_walks_buckets_backwards_and_stops_when_it_has_enough() -> None:
    cluster = MemoryCluster(threaded=False)
    times = [b * BUCKET_MS + i * MINUTE_MS for b in (0, 2, 5, 6) for i in range(3)]
    candles = make_candles(times)

    async def scenario(store: ScyllaCandleStore) -> None:
        await store.write(MINUTE, candles)
        session = _session(cluster)
        session.log.clear()
        assert await store.latest(MINUTE, 4) == candles.slice(8, 12)
        assert _buckets_read(session, "SELECT time, open") == [6, 5]
        limits = [r.parameters[4] for r in session.log if r.query.endswith("LIMIT ?")]
        assert limits == [4, 1]
        assert await store.latest(MINUTE, 100) == candles

    _run(cluster, scenario)


def test_a_write_reads_only_the_touched_span_and_sends_only_changed_rows() -> None:
    cluster = MemoryCluster(threaded=False)
    candles = make_candles([i * MINUTE_MS for i in range(10)])

    async def scenario(store: ScyllaCandleStore) -> None:
        await store.write(MINUTE, candles)
        session = _session(cluster)
        session.log.clear()
        batch = make_candles([3 * MINUTE_MS, 4 * MINUTE_MS], shift=0.5)
        assert await store.write(MINUTE, batch) == WriteResult(updated=2)
        reads = [r for r in session.log if r.query.startswith("SELECT")]
        assert [r.parameters[3:] for r in reads] == [(0, 3 * MINUTE_MS, 4 * MINUTE_MS + 1)]
        inserts = [r for r in session.log if r.query.startswith("INSERT INTO trader.candles")]
        assert sorted(r.parameters[4] for r in inserts) == [3 * MINUTE_MS, 4 * MINUTE_MS]
        session.log.clear()
        assert await store.write(MINUTE, batch) == WriteResult(unchanged=2)
        assert not [r for r in session.log if r.query.startswith("INSERT")]

    _run(cluster, scenario)


def test_delete_drops_whole_buckets_and_cuts_partial_ones() -> None:
    cluster = MemoryCluster(threaded=False)
    times = [b * BUCKET_MS + i * MINUTE_MS for b in (0, 1, 2) for i in range(4)]

    async def scenario(store: ScyllaCandleStore) -> None:
        await store.write(MINUTE, make_candles(times))
        session = _session(cluster)
        session.log.clear()
        first, _ = bucket_bounds(1, MINUTE.timeframe)
        removed = await store.delete(MINUTE, 2 * MINUTE_MS, first + BUCKET_MS + 2 * MINUTE_MS)
        assert removed == 2 + 4 + 2
        deletes = [
            r.query.split(" WHERE ")[0] + f" bucket {r.parameters[3]}"
            for r in session.log
            if r.query.startswith("DELETE")
        ]
        assert deletes == [
            "DELETE FROM trader.candles bucket 0",
            "DELETE FROM trader.candles bucket 1",
            "DELETE FROM trader.candle_series bucket 1",
            "DELETE FROM trader.candles bucket 2",
        ]
        listed = await store.list_series()
        assert listed == [SeriesInfo(MINUTE, 4, 0, 2 * BUCKET_MS + 3 * MINUTE_MS)]
        assert sorted(
            cluster.tables[("trader", "candle_series")].rows[("memory", "BTC/USDT", "1m")]
        ) == [(0,), (2,)]

    _run(cluster, scenario)


def test_a_keyspace_with_another_layout_is_refused() -> None:
    cluster = MemoryCluster(threaded=False)
    _run(cluster, lambda store: store.list_series())
    table = cluster.tables[("trader", "candle_store_meta")]
    table.rows[("bucket_slots",)][()]["value"] = "1024"
    with pytest.raises(StorageError, match="holds candles in another layout \\(bucket_slots 1024"):
        _run(cluster, lambda store: store.list_series())


def test_calls_on_a_closed_store_fail_clearly() -> None:
    store = ScyllaCandleStore(
        ScyllaCandleOptions(),
        PluginContext(Path("."), Path(".")),
        connector=MemoryCluster().connector(),
    )
    with pytest.raises(StorageError, match="cannot read memory:BTC/USDT:1m: the store is not open"):
        asyncio.run(store.read(MINUTE))


def test_client_timeouts_are_retried_then_reported() -> None:
    cluster = MemoryCluster(threaded=False)
    failures = {"left": 2}

    async def scenario(store: ScyllaCandleStore) -> list[SeriesInfo]:
        session = _session(cluster)
        original = session.execute_async

        def flaky(*args: object, **kwargs: object) -> object:
            if failures["left"]:
                failures["left"] -= 1
                raise OperationTimedOut("no answer")
            return original(*args, **kwargs)  # type: ignore[arg-type]

        session.execute_async = flaky  # type: ignore[method-assign,assignment]
        listed = await store.list_series()
        failures["left"] = 10
        with pytest.raises(StorageError, match="list series failed: OperationTimedOut"):
            await store.list_series()
        return listed

    assert _run(cluster, scenario, retries=2) == []


def test_server_errors_become_storage_errors_naming_the_store_and_call() -> None:
    cluster = MemoryCluster(threaded=True)

    async def scenario(store: ScyllaCandleStore) -> None:
        session = _session(cluster)

        def failing(*args: object, **kwargs: object) -> object:
            raise WriteTimeout(
                "Operation timed out - received only 0 responses.",
                consistency=ConsistencyLevel.QUORUM,
                required_responses=2,
                received_responses=0,
                write_type=WriteType.SIMPLE,
            )

        session.execute_async = failing  # type: ignore[method-assign,assignment]
        with pytest.raises(StorageError) as caught:
            await store.write(MINUTE, make_candles([0]))
        message = str(caught.value)
        assert message.startswith("scylla candle store 127.0.0.1:9042/trader: write memory:")
        assert "WriteTimeout" in message and "write it again" in message

    _run(cluster, scenario)


def test_retry_policy_retries_idempotent_statements_only() -> None:
    policy = IdempotentRetryPolicy(max_retries=2)

    class Statement:
        def __init__(self, idempotent: bool) -> None:
            self.is_idempotent = idempotent

    quorum = ConsistencyLevel.QUORUM
    safe, unsafe = Statement(True), Statement(False)
    assert policy.on_write_timeout(safe, quorum, "SIMPLE", 2, 1, 0) == (RetryPolicy.RETRY, quorum)
    assert policy.on_write_timeout(safe, quorum, "SIMPLE", 2, 1, 2) == (RetryPolicy.RETHROW, None)
    assert policy.on_write_timeout(unsafe, quorum, "SIMPLE", 2, 1, 0) == (
        RetryPolicy.RETHROW,
        None,
    )
    assert policy.on_read_timeout(unsafe, quorum, 2, 1, False, 1) == (RetryPolicy.RETRY, quorum)
    assert policy.on_unavailable(safe, quorum, 2, 1, 0) == (RetryPolicy.RETRY_NEXT_HOST, None)
    assert policy.on_request_error(safe, quorum, OSError(), 0) == (
        RetryPolicy.RETRY_NEXT_HOST,
        None,
    )
    assert policy.on_request_error(unsafe, quorum, OSError(), 0) == (RetryPolicy.RETHROW, None)


def test_routing_is_token_aware_over_the_local_datacenter() -> None:
    policy = load_balancing(ScyllaCandleOptions(local_datacenter="eu-west"))
    assert isinstance(policy, TokenAwarePolicy)
    assert isinstance(policy._child_policy, DCAwareRoundRobinPolicy)
    assert policy._child_policy.local_dc == "eu-west"
