"""The ``scylla`` candle store: candle series in ScyllaDB or Apache Cassandra.

The layout (tables, buckets, partition sizes) is described in
:mod:`trader_storage_scylla.layout`. How the store talks to the cluster:

* **Driver.** ``scylla-driver`` (the package ``cassandra``): token-aware routing over a
  datacenter-aware round robin (:func:`load_balancing`), and, against ScyllaDB, shard-aware
  connections, so each request goes straight to a replica's CPU core that owns the partition.
* **Prepared statements** only, each marked idempotent and carrying its consistency level:
  ``read_consistency`` for reads, ``write_consistency`` for writes and deletes.
* **Retries.** :class:`IdempotentRetryPolicy` retries server-side read and write timeouts,
  unavailable replicas and node errors up to ``retries`` times for idempotent statements; the
  store itself retries client-side timeouts (``OperationTimedOut``) of its (idempotent)
  requests as often.
* **Bounded concurrency.** Every request goes through ``execute_async`` under one semaphore of
  ``concurrency`` permits per store; bulk writes run ``concurrency`` workers over the rows.
* **Paging.** Reads follow the server's paging state, ``page_size`` rows at a time, bucket
  after bucket in time order, into :class:`~trader.model.CandleArrays`.

Upserts count what they change (:class:`~trader.interfaces.WriteResult`) by reading the touched
span of each touched bucket first, then writing only new and changed rows. That read costs one
range query per touched bucket (a live single-candle write: one single-row read, then one
insert); lightweight transactions would instead cost a Paxos round (four round trips) per
candle and still could not tell an identical rewrite from a change, so they are not used.
Writers of one series in one store are serialised (an asyncio lock), which keeps the counts
exact there; two processes writing the same candles at once may both count them as inserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
from cassandra import ConsistencyLevel, DriverException, OperationTimedOut
from cassandra.cluster import NoHostAvailable
from cassandra.policies import RetryPolicy

from trader.candles import as_arrays, find_gaps, find_problem, normalize
from trader.errors import ModelError, StorageError, TraderError
from trader.interfaces import CandleStore, Gap, PluginContext, SeriesInfo, WriteResult
from trader.model import Candle, CandleArrays, SeriesKey, Timeframe
from trader_storage_scylla.layout import (
    BUCKET_SLOTS,
    LAYOUT_VERSION,
    Statements,
    bucket_bounds,
    buckets_overlapping,
    keyspace_cql,
    split_by_bucket,
    table_cql,
)
from trader_storage_scylla.options import ScyllaCandleOptions

__all__ = [
    "Connector",
    "IdempotentRetryPolicy",
    "ScyllaCandleStore",
    "Session",
    "connect_cluster",
    "load_balancing",
]

logger = logging.getLogger("trader_storage_scylla")
T = TypeVar("T")

#: Rows of one page and the paging state of the next (``None`` after the last page).
Page = tuple[list[tuple[Any, ...]], "bytes | None"]
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "closed")


class Session(Protocol):
    """The part of ``cassandra.cluster.Session`` the store uses."""

    default_fetch_size: int

    def prepare(self, query: str) -> Any:
        """Prepare ``query`` on the cluster; return the prepared statement."""

    def execute(self, query: Any, parameters: Any = None, timeout: Any = ...) -> Any:
        """Run ``query`` and wait for its result (used for schema statements only)."""

    def execute_async(
        self,
        query: Any,
        parameters: Any = None,
        trace: bool = False,
        custom_payload: Any = None,
        timeout: Any = ...,
        execution_profile: Any = ...,
        paging_state: bytes | None = None,
    ) -> Any:
        """Send ``query``; return a ``ResponseFuture`` (``add_callbacks``, ``result``)."""


#: Opens a session for the options (blocking; run on a thread); returns it and its shutdown.
Connector = Callable[[ScyllaCandleOptions], tuple[Session, Callable[[], None]]]


class IdempotentRetryPolicy(RetryPolicy):  # type: ignore[misc]  # the driver is untyped
    """Retry idempotent statements after timeouts and node errors, up to ``max_retries`` times.

    Read timeouts and unavailable replica sets are retried whatever the statement (reads and
    the coordinator's refusal change nothing). Write timeouts and request errors (a broken
    connection, an overloaded or bootstrapping node) are retried only for statements marked
    ``is_idempotent``: a retried upsert of the same values, or a repeated range delete, leaves
    what the first would have. Every retry keeps the consistency level asked for.
    """

    def __init__(self, max_retries: int = 3) -> None:
        super().__init__()
        self.max_retries = max_retries

    def on_read_timeout(
        self,
        query: Any,
        consistency: Any,
        required_responses: int,
        received_responses: int,
        data_retrieved: bool,
        retry_num: int,
    ) -> tuple[int, Any]:
        """Retry on the same host (its replicas were merely slow), up to the limit."""
        if retry_num >= self.max_retries:
            return self.RETHROW, None
        return self.RETRY, consistency

    def on_write_timeout(
        self,
        query: Any,
        consistency: Any,
        write_type: Any,
        required_responses: int,
        received_responses: int,
        retry_num: int,
    ) -> tuple[int, Any]:
        """Retry idempotent writes on the same host, up to the limit; rethrow others."""
        if retry_num >= self.max_retries or not getattr(query, "is_idempotent", False):
            return self.RETHROW, None
        return self.RETRY, consistency

    def on_unavailable(
        self,
        query: Any,
        consistency: Any,
        required_replicas: int,
        alive_replicas: int,
        retry_num: int,
    ) -> tuple[int, Any]:
        """Try the next host: its view of the ring may differ. Nothing was written."""
        if retry_num >= self.max_retries:
            return self.RETHROW, None
        return self.RETRY_NEXT_HOST, None

    def on_request_error(
        self, query: Any, consistency: Any, error: Any, retry_num: int
    ) -> tuple[int, Any]:
        """Try an idempotent statement on the next host, up to the limit; rethrow others."""
        if retry_num >= self.max_retries or not getattr(query, "is_idempotent", False):
            return self.RETHROW, None
        return self.RETRY_NEXT_HOST, None


def load_balancing(options: ScyllaCandleOptions) -> Any:
    """Token-aware routing over a datacenter-aware round robin.

    The token-aware layer sends each statement to a replica of its partition (the driver
    computes the routing key from the bound partition key of a prepared statement); with
    ScyllaDB, scylla-driver then picks the connection to the shard owning that token.
    """
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    return TokenAwarePolicy(
        DCAwareRoundRobinPolicy(local_dc=options.local_datacenter), shuffle_replicas=True
    )


def connect_cluster(options: ScyllaCandleOptions) -> tuple[Session, Callable[[], None]]:
    """Connect to the cluster the options name (blocking) and return the session and shutdown.

    Rows come back as tuples; the default profile carries the load-balancing and retry
    policies, the read consistency level and the request timeout.
    """
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.query import tuple_factory

    profile = ExecutionProfile(
        load_balancing_policy=load_balancing(options),
        retry_policy=IdempotentRetryPolicy(options.retries),
        consistency_level=consistency(options.read_consistency),
        request_timeout=options.request_timeout_s,
        row_factory=tuple_factory,
    )
    auth = None
    if options.username is not None and options.password is not None:
        auth = PlainTextAuthProvider(options.username, options.password.reveal())
    cluster = Cluster(
        contact_points=options.contact_points,
        port=options.port,
        auth_provider=auth,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=options.connect_timeout_s,
        control_connection_timeout=options.connect_timeout_s,
    )
    try:
        session = cluster.connect()
    except BaseException:
        cluster.shutdown()
        raise
    session.default_fetch_size = options.page_size
    return session, cluster.shutdown


def consistency(name: str) -> int:
    """The driver's value of consistency level ``name`` (such as ``"LOCAL_QUORUM"``)."""
    value: int = ConsistencyLevel.name_to_value[name]
    return value


class ScyllaCandleStore(CandleStore):
    """The :class:`~trader.interfaces.CandleStore` of the ``scylla`` plugin.

    Build it with its options and the plugin context, then ``await open()`` (or
    ``async with``); ``connector`` replaces the driver connection (tests pass an in-memory
    session). It fulfils the interface without server-side resampling: :meth:`resample`
    returns ``None`` and callers resample what :meth:`read` returns. A write is validated
    whole before anything is sent; if the cluster fails part-way, part of the batch may be
    stored, and writing the batch again completes it (writes are idempotent).
    """

    def __init__(
        self,
        options: ScyllaCandleOptions,
        context: PluginContext,
        *,
        connector: Connector | None = None,
    ) -> None:
        self.options = options
        self.context = context
        self.label = f"scylla candle store {options.label}"
        self.statements = Statements(options.keyspace)
        self._connector: Connector = connector or connect_cluster
        self._session: Session | None = None
        self._shutdown: Callable[[], None] | None = None
        self._prepared: dict[str, Any] = {}
        self._slots: asyncio.Semaphore | None = None
        self._locks: dict[SeriesKey, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"ScyllaCandleStore({self.options.label})"

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create the keyspace (if configured) and tables, and prepare statements.

        Raises :class:`~trader.errors.StorageError` when no node answers, the credentials are
        refused, or the keyspace holds a layout other than this version's.
        """
        if self._session is not None:
            return
        try:
            session, shutdown = await asyncio.to_thread(self._connector, self.options)
        except TraderError:
            raise
        except Exception as error:
            raise self._error("open", None, error) from None
        self._session, self._shutdown = session, shutdown
        self._slots = asyncio.Semaphore(self.options.concurrency)
        self._locks = {}
        try:
            await asyncio.to_thread(self._create_schema, session)
            await self._check_layout()
        except BaseException as error:
            await self.close()
            if isinstance(error, TraderError) or not isinstance(error, Exception):
                raise
            raise self._error("open", None, error) from None
        logger.info(
            "%s: open (layout %s, %d candles per bucket)", self.label, LAYOUT_VERSION, BUCKET_SLOTS
        )

    async def close(self) -> None:
        """Shut the driver's connections down; harmless when already closed."""
        shutdown, self._shutdown = self._shutdown, None
        self._session = None
        self._prepared = {}
        if shutdown is not None:
            await asyncio.to_thread(shutdown)

    def _create_schema(self, session: Session) -> None:
        timeout = max(self.options.request_timeout_s, 30.0)
        if self.options.schema_creation == "keyspace_and_tables":
            replication = self.options.replication.cql()
            session.execute(keyspace_cql(self.options.keyspace, replication), timeout=timeout)
        for statement in table_cql(self.options.keyspace):
            session.execute(statement, timeout=timeout)
        read_level = consistency(self.options.read_consistency)
        write_level = consistency(self.options.write_consistency)
        for group, level in (
            (self.statements.reads, read_level),
            (self.statements.writes, write_level),
        ):
            for name, text in group.items():
                prepared = session.prepare(text)
                prepared.consistency_level = level
                prepared.is_idempotent = True
                prepared.fetch_size = self.options.page_size
                self._prepared[name] = prepared

    async def _check_layout(self) -> None:
        wanted = {"layout_version": LAYOUT_VERSION, "bucket_slots": str(BUCKET_SLOTS)}
        for name, value in wanted.items():
            rows = await self._rows("select_meta", (name,))
            if not rows:
                await self._request("insert_meta", (name, value))
            elif rows[0][0] != value:
                raise StorageError(
                    f"{self.label}: keyspace {self.options.keyspace} holds candles in another "
                    f"layout ({name} {rows[0][0]}, this version writes {value}); use another "
                    "keyspace or the trader version that wrote it"
                )

    # -- requests -------------------------------------------------------------------------------

    def _require_open(self, what: str) -> tuple[Session, asyncio.Semaphore]:
        if self._session is None or self._slots is None:
            raise StorageError(
                f"{self.label}: cannot {what}: the store is not open; await open() first "
                "(or use 'async with store:')"
            )
        return self._session, self._slots

    async def _request(
        self, name: str, parameters: Sequence[Any], paging_state: bytes | None = None
    ) -> Page:
        """Run prepared statement ``name`` once (one page), retrying client-side timeouts."""
        session, slots = self._require_open(name)
        statement = self._prepared[name]
        attempt = 0
        async with slots:
            while True:
                try:
                    return await _wait(
                        session.execute_async(
                            statement,
                            parameters,
                            timeout=self.options.request_timeout_s,
                            paging_state=paging_state,
                        )
                    )
                except OperationTimedOut:
                    attempt += 1
                    if attempt > self.options.retries:
                        raise
                    logger.warning("%s: %s timed out; retrying (%d)", self.label, name, attempt)

    async def _pages(self, name: str, parameters: Sequence[Any]) -> AsyncIterator[list[Any]]:
        """Yield the pages of ``name``'s result in order, following the paging state."""
        state: bytes | None = None
        while True:
            rows, state = await self._request(name, parameters, state)
            yield rows
            if state is None:
                return

    async def _rows(self, name: str, parameters: Sequence[Any]) -> list[Any]:
        rows: list[Any] = []
        async for page in self._pages(name, parameters):
            rows.extend(page)
        return rows

    async def _run_all(self, name: str, rows: Iterable[Sequence[Any]], size: int) -> None:
        """Run ``name`` once per parameter row (``size`` rows), with at most ``concurrency``
        requests in flight; the first failure stops the rest and is raised."""
        if size <= 0:
            return
        source: Iterator[Sequence[Any]] = iter(rows)

        async def worker() -> None:
            for parameters in source:
                await self._request(name, parameters)

        workers = [
            asyncio.ensure_future(worker()) for _ in range(min(size, self.options.concurrency))
        ]
        try:
            outcomes = await asyncio.gather(*workers, return_exceptions=True)
        finally:
            for task in workers:
                task.cancel()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _lock(self, series: SeriesKey) -> asyncio.Lock:
        lock = self._locks.get(series)
        if lock is None:
            lock = self._locks[series] = asyncio.Lock()
        return lock

    def _error(self, what: str, series: SeriesKey | None, error: BaseException) -> StorageError:
        target = f"{what} {series}" if series is not None else what
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if len(text) > 300:
            text = text[:300] + "..."
        hint = ""
        if isinstance(error, NoHostAvailable):
            hint = "; no node answered: check contact_points, port and that the cluster runs"
        elif isinstance(error, OperationTimedOut):
            hint = "; the cluster did not answer in time: raise request_timeout_s or check load"
        elif "uthenticat" in text or "redentials" in text:
            hint = "; check username and the password reference"
        return StorageError(f"{self.label}: {target} failed: {type(error).__name__}: {text}{hint}")

    async def _guard(
        self, what: str, series: SeriesKey | None, job: Callable[[], Awaitable[T]]
    ) -> T:
        self._require_open(f"{what} {series}" if series is not None else what)
        try:
            return await job()
        except TraderError:
            raise
        except (DriverException, NoHostAvailable, OSError) as error:
            raise self._error(what, series, error) from None

    # -- series and buckets ---------------------------------------------------------------------

    @staticmethod
    def _series_params(series: SeriesKey) -> tuple[str, str, str]:
        return (series.exchange, series.symbol, str(series.timeframe))

    async def _known_buckets(self, series: SeriesKey, buckets: range) -> list[int]:
        if not buckets:
            return []
        rows = await self._rows(
            "series_buckets", (*self._series_params(series), buckets[0], buckets[-1])
        )
        return sorted(int(row[0]) for row in rows)

    def _window(
        self, series: SeriesKey, bucket: int, start: int | None, end: int | None
    ) -> tuple[int, int]:
        first, after = bucket_bounds(bucket, series.timeframe)
        low = first if start is None else max(start, first)
        high = after if end is None else min(end, after)
        return low, high

    # -- the interface --------------------------------------------------------------------------

    async def write(
        self, series: SeriesKey, candles: CandleArrays | Sequence[Candle]
    ) -> WriteResult:
        """Upsert ``candles`` into ``series`` and count what changed.

        Raises :class:`~trader.errors.ModelError`, sending nothing, when a candle is unsound or
        its open time is not aligned to the series' timeframe; the message names the row.
        """
        self._require_open(f"write {series}")
        data = as_arrays(candles)
        if not len(data):
            return WriteResult()
        problem = find_problem(data, series.timeframe)
        if problem is not None:
            row, message = problem
            raise ModelError(
                f"{self.label}: cannot write {series}: row {row}: {message}; nothing was written"
            )
        data = normalize(data)
        try:
            result: WriteResult = await self._guard(
                "write", series, lambda: self._write(series, data)
            )
        except StorageError as error:
            raise StorageError(
                f"{error}; part of the batch may be stored: write it again to complete it "
                "(writes are idempotent)"
            ) from None
        return result

    async def _write(self, series: SeriesKey, data: CandleArrays) -> WriteResult:
        key = self._series_params(series)
        parts = split_by_bucket(data.time, series.timeframe)
        async with self._lock(series):
            stored = await asyncio.gather(
                *(
                    self._rows(
                        "select_range",
                        (*key, bucket, int(data.time[begin]), int(data.time[stop - 1]) + 1),
                    )
                    for bucket, begin, stop in parts
                )
            )
            inserted = updated = unchanged = 0
            masks: list[np.ndarray[Any, np.dtype[np.bool_]]] = []
            touched: list[int] = []
            for (bucket, begin, stop), rows in zip(parts, stored, strict=True):
                new = data.slice(begin, stop)
                counts, mask = _compare(CandleArrays.from_rows(rows), new)
                inserted += counts[0]
                updated += counts[1]
                unchanged += counts[2]
                masks.append(mask)
                if counts[0]:
                    touched.append(bucket)
            # The bucket rows first: a candle stored is always in a listed bucket.
            await self._run_all(
                "insert_bucket", [(*key, bucket) for bucket in touched], len(touched)
            )
            await self._run_all(
                "insert_candle",
                (
                    row
                    for (bucket, begin, stop), mask in zip(parts, masks, strict=True)
                    for row in _candle_rows(key, bucket, data.slice(begin, stop), mask)
                ),
                inserted + updated,
            )
        return WriteResult(inserted, updated, unchanged)

    async def read(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> CandleArrays:
        """Return the candles of ``series`` opening in ``[start, end)``, oldest first."""
        result: CandleArrays = await self._guard(
            "read", series, lambda: self._read(series, start, end)
        )
        return result

    async def _read(self, series: SeriesKey, start: int | None, end: int | None) -> CandleArrays:
        if start is not None and end is not None and start >= end:
            return CandleArrays.empty()
        buckets = await self._known_buckets(
            series, buckets_overlapping(series.timeframe, start, end)
        )
        key = self._series_params(series)
        parts = await asyncio.gather(
            *(
                self._rows(
                    "select_range", (*key, bucket, *self._window(series, bucket, start, end))
                )
                for bucket in buckets
            )
        )
        return CandleArrays.from_rows([row for rows in parts for row in rows])

    async def latest(self, series: SeriesKey, count: int) -> CandleArrays:
        """Return the newest ``count`` candles of ``series``, newest last.

        Walks the series' buckets from the newest back, reading each newest first, until
        ``count`` candles are found.
        """
        if count < 0:
            raise ModelError(f"{self.label}: latest() needs a count >= 0, not {count}")
        result: CandleArrays = await self._guard(
            "latest", series, lambda: self._latest(series, count)
        )
        return result

    async def _latest(self, series: SeriesKey, count: int) -> CandleArrays:
        if count == 0:
            return CandleArrays.empty()
        key = self._series_params(series)
        found: list[Any] = []
        async for page in self._pages("series_buckets_desc", key):
            for (bucket,) in page:
                # LIMIT binds a 32-bit int.
                wanted = min(count - len(found), 2**31 - 1)
                rows = await self._rows("select_latest", (*key, bucket, wanted))
                found.extend(rows)
                if len(found) >= count:
                    break
            if len(found) >= count:
                break
        found.reverse()
        return CandleArrays.from_rows(found)

    async def list_series(self) -> list[SeriesInfo]:
        """Every series holding candles, with its extent, by exchange, symbol and timeframe.

        Counts come from one ``count(*), min(time), max(time)`` query per bucket of every
        series (concurrently): exact, at the cost of reading every stored candle's key.
        """
        result: list[SeriesInfo] = await self._guard("list series", None, self._list_series)
        return result

    async def _list_series(self) -> list[SeriesInfo]:
        rows = await self._rows("all_series", ())
        extents = await asyncio.gather(*(self._rows("bucket_extent", tuple(row)) for row in rows))
        totals: dict[tuple[str, str, str], list[int]] = {}
        for (exchange, symbol, timeframe, _bucket), extent in zip(rows, extents, strict=True):
            if not extent or not extent[0][0]:
                continue
            counted, first, last = extent[0]
            entry = totals.setdefault((exchange, symbol, timeframe), [0, int(first), int(last)])
            entry[0] += int(counted)
            entry[1] = min(entry[1], int(first))
            entry[2] = max(entry[2], int(last))
        infos = [
            SeriesInfo(SeriesKey(exchange, symbol, Timeframe.parse(timeframe)), *entry)
            for (exchange, symbol, timeframe), entry in totals.items()
        ]
        infos.sort(key=lambda info: (info.key.exchange, info.key.symbol, info.key.timeframe))
        return infos

    async def gaps(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> list[Gap]:
        """Runs of missing open times inside ``[start, end)`` (see the interface).

        Reads only the open times (``trader.candles.find_gaps`` does the rest).
        """
        result: list[Gap] = await self._guard(
            "list gaps of", series, lambda: self._gaps(series, start, end)
        )
        return result

    async def _gaps(self, series: SeriesKey, start: int | None, end: int | None) -> list[Gap]:
        times = np.empty(0, np.int64)
        if start is None or end is None or start < end:
            buckets = await self._known_buckets(
                series, buckets_overlapping(series.timeframe, start, end)
            )
            key = self._series_params(series)
            parts = await asyncio.gather(
                *(
                    self._rows(
                        "select_times", (*key, bucket, *self._window(series, bucket, start, end))
                    )
                    for bucket in buckets
                )
            )
            times = np.fromiter((row[0] for rows in parts for row in rows), np.int64)
        return find_gaps(times, series.timeframe, start, end)

    async def delete(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> int:
        """Delete the candles of ``series`` opening in ``[start, end)``; return how many.

        Per bucket: a bucket wholly inside the range (or left empty) loses its partition and
        its ``candle_series`` row; otherwise one range delete. Counting first costs a
        ``count(*)`` per touched bucket.
        """
        return await self._guard("delete", series, lambda: self._delete(series, start, end))

    async def _delete(self, series: SeriesKey, start: int | None, end: int | None) -> int:
        if start is not None and end is not None and start >= end:
            return 0
        key = self._series_params(series)
        removed = 0
        async with self._lock(series):
            buckets = await self._known_buckets(
                series, buckets_overlapping(series.timeframe, start, end)
            )
            for bucket in buckets:
                first, after = bucket_bounds(bucket, series.timeframe)
                low, high = self._window(series, bucket, start, end)
                extent = await self._rows("bucket_extent", (*key, bucket))
                total = int(extent[0][0]) if extent else 0
                if low <= first and high >= after:
                    inside = total
                else:
                    counted = await self._rows("count_range", (*key, bucket, low, high))
                    inside = int(counted[0][0]) if counted else 0
                if inside and inside < total:
                    await self._request("delete_range", (*key, bucket, low, high))
                elif inside == total:
                    # Candles first, then the bucket row: no stored candle is ever unlisted.
                    await self._request("delete_partition", (*key, bucket))
                    await self._request("delete_bucket", (*key, bucket))
                removed += inside
        return removed


async def _wait(response: Any) -> Page:
    """Await a driver ``ResponseFuture``: its callbacks run on the driver's thread, so the
    result is handed to the event loop with ``call_soon_threadsafe``."""
    loop = asyncio.get_running_loop()
    target: asyncio.Future[Page] = loop.create_future()

    def settle(_: Any = None) -> None:
        # RuntimeError: the loop closed meanwhile, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, target, response)

    response.add_callbacks(settle, settle)
    return await target


def _settle(target: asyncio.Future[Page], response: Any) -> None:
    if target.done():
        return
    try:
        result = response.result()  # done: returns at once
    except BaseException as error:
        target.set_exception(error)
        return
    if result is None:
        target.set_result(([], None))
        return
    target.set_result((list(result.current_rows), result.paging_state))


def _compare(
    old: CandleArrays, new: CandleArrays
) -> tuple[tuple[int, int, int], np.ndarray[Any, np.dtype[np.bool_]]]:
    """Count inserted, updated and unchanged rows of ``new`` against ``old`` (both sorted) and
    return the mask of ``new`` rows to write."""
    if not len(old):
        return (len(new), 0, 0), np.ones(len(new), dtype=np.bool_)
    position = np.minimum(np.searchsorted(old.time, new.time), len(old) - 1)
    present = old.time[position] == new.time
    differ = np.zeros(len(new), dtype=np.bool_)
    for column in _VALUE_COLUMNS:
        differ |= getattr(old, column)[position] != getattr(new, column)
    differ &= present
    inserted = int((~present).sum())
    updated = int(differ.sum())
    return (inserted, updated, len(new) - inserted - updated), ~present | differ


def _candle_rows(
    key: tuple[str, str, str],
    bucket: int,
    data: CandleArrays,
    mask: np.ndarray[Any, np.dtype[np.bool_]],
) -> Iterator[tuple[Any, ...]]:
    """Parameter rows of ``insert_candle`` for the rows of ``data`` selected by ``mask``."""
    columns = [getattr(data, name)[mask].tolist() for name in CandleArrays.COLUMNS]
    for time, open_, high, low, close, volume, closed in zip(*columns, strict=True):
        yield (*key, bucket, time, open_, high, low, close, volume, closed)
