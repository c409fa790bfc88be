"""The default candle store: candle series in an embedded SQLite file.

Layout: a ``series`` table names each (exchange, symbol, timeframe); its candles live in
``candle_blocks``, one row per block of :data:`BLOCK_SLOTS` consecutive candle slots, each column
a little-endian array in a BLOB. A row per block instead of a row per candle is what makes the
bulk paths fast from Python: a million candles are about a thousand rows, written with one
``executemany`` and read back straight into NumPy arrays, where a row per candle costs about a
microsecond of interpreter time per row each way. Upserts merge a batch into the blocks it
touches in NumPy, which also counts inserted, updated and unchanged candles exactly.

The file runs in WAL mode, so readers in other processes never block the writer. All database
work happens on one thread per store, over one connection; every call is one transaction (writes
take the write lock up front with ``BEGIN IMMEDIATE``). The schema is versioned with alembic
(scripts in ``migrations/sqlite_candles``) and migrated on :meth:`SqliteCandleStore.open` when
the file's revision is not :data:`HEAD_REVISION`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from trader.candles import (
    as_arrays,
    find_gaps,
    find_problem,
    merge,
    normalize,
    resample,
    slot_index,
    whole_candles,
)
from trader.errors import ModelError, StorageError
from trader.interfaces import CandleStore, Gap, PluginContext, SeriesInfo, WriteResult
from trader.model import MAX_TIME_MS, Candle, CandleArrays, SeriesKey, Timeframe
from trader.model.candle import IntArray
from trader.stores.threads import StoreThreads

__all__ = [
    "BLOCK_SLOTS",
    "HEAD_REVISION",
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "SqliteCandleOptions",
    "SqliteCandleStore",
]

T = TypeVar("T")

#: The newest schema revision; :meth:`SqliteCandleStore.open` migrates files that differ.
HEAD_REVISION: Final = "0002"
#: Where alembic keeps the applied revision: not ``alembic_version``, so a state store sharing
#: the file keeps its own history.
VERSION_TABLE: Final = "candle_store_version"
#: Alembic's script directory for this schema.
MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations" / "sqlite_candles"
#: Candle slots per block for new series (1024 one-minute candles: about 17 hours).
BLOCK_SLOTS: Final = 1024
#: Page size of new files: blocks are about 50 kB, so large pages keep overflow chains short.
_PAGE_SIZE: Final = 16384
#: Just past the latest open time a candle can have (writes refuse anything later).
_MAX_TIME: Final = MAX_TIME_MS + 1
#: SQLite allows at most this many ``?`` parameters per statement on old builds.
_MAX_PARAMS: Final = 900
_VALUE_COLUMNS: Final = ("open", "high", "low", "close", "volume", "closed")
_BLOB_DTYPES: Final = (
    ("time", "<i8"),
    ("open", "<f8"),
    ("high", "<f8"),
    ("low", "<f8"),
    ("close", "<f8"),
    ("volume", "<f8"),
    ("closed", "u1"),
)
_UPSERT_BLOCK: Final = (
    "INSERT INTO candle_blocks (series_id, block, count, first_time, last_time, "
    "time, open, high, low, close, volume, closed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (series_id, block) DO UPDATE SET count = excluded.count, "
    "first_time = excluded.first_time, last_time = excluded.last_time, time = excluded.time, "
    "open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close, "
    "volume = excluded.volume, closed = excluded.closed"
)


class SqliteCandleOptions(BaseModel):
    """Options of the ``sqlite`` candle store (``[storage.candles]`` in ``trader.toml``)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        default=None,
        description=(
            "The SQLite file. Unset: candles.sqlite in the data directory; relative paths are "
            "resolved against the configuration file's directory; ':memory:' keeps candles in "
            "memory until the store closes."
        ),
    )
    synchronous: Literal["off", "normal", "full"] = Field(
        default="normal",
        description=(
            "SQLite's synchronous pragma. 'normal' (with WAL) never corrupts the file but may "
            "lose the last writes on power loss; 'full' loses none; 'off' is for throwaway data."
        ),
    )
    busy_timeout_ms: int = Field(
        default=10_000,
        ge=0,
        description="How long a call waits for another process's write lock before failing.",
    )


class SqliteCandleStore(CandleStore):
    """The :class:`~trader.interfaces.CandleStore` of the embedded ``sqlite`` plugin.

    Build it with its options and the plugin context, then ``await open()`` (or ``async with``).
    It fulfils the whole interface contract, resampling included: :meth:`resample` builds any
    timeframe its source divides, calendar months too, on the store's thread.
    """

    def __init__(self, options: SqliteCandleOptions, context: PluginContext) -> None:
        self.options = options
        if options.path == ":memory:":
            self.path: Path | None = None
        elif options.path is None:
            self.path = context.data_dir / "candles.sqlite"
        else:
            self.path = context.resolve_path(options.path)
        self._threads = StoreThreads(
            self._name,
            thread_name="sqlite-candles",
            driver_errors=(SQLAlchemyError, sqlite3.Error, OSError),
            describe=lambda what, error: StorageError(
                f"{self._name}: {what} failed: {_reason(error)}"
            ),
        )
        # Everything below is touched only on the store's thread.
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._begin_statement = "BEGIN"
        self._series: dict[SeriesKey, tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"SqliteCandleStore({self._where})"

    @property
    def _where(self) -> str:
        return ":memory:" if self.path is None else str(self.path)

    @property
    def _name(self) -> str:
        return f"sqlite candle store {self._where}"

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating if needed) the file, switch it to WAL and migrate its schema.

        Raises :class:`~trader.errors.StorageError` when the file cannot be opened, is not an
        SQLite database, or carries a schema newer than this version of trader knows.
        """
        self._threads.start()
        try:
            await self._call("open", None, self._open_sync)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and stop the store's thread; harmless when already closed."""
        await self._threads.stop(self._close_sync)

    # -- the interface --------------------------------------------------------------------------

    async def write(
        self, series: SeriesKey, candles: CandleArrays | Sequence[Candle]
    ) -> WriteResult:
        """Upsert ``candles`` into ``series`` in one transaction and count what changed.

        Raises :class:`~trader.errors.ModelError`, writing nothing, when a candle is unsound
        (an open time before 1970 or after :data:`~trader.model.MAX_TIME_MS` is) or its open
        time is not aligned to the series' timeframe; the message names the row.
        """
        return await self._call("write", series, lambda: self._write_sync(series, candles))

    async def read(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> CandleArrays:
        """Return the candles of ``series`` opening in ``[start, end)``, oldest first."""
        return await self._call("read", series, lambda: self._read_sync(series, start, end))

    async def latest(self, series: SeriesKey, count: int) -> CandleArrays:
        """Return the newest ``count`` candles of ``series``, newest last."""
        if count < 0:
            raise ModelError(f"{self._name}: latest() needs a count >= 0, not {count}")
        return await self._call("latest", series, lambda: self._latest_sync(series, count))

    async def list_series(self) -> list[SeriesInfo]:
        """Every series holding candles, with its extent, by exchange, symbol and timeframe."""
        return await self._call("list series", None, self._list_series_sync)

    async def gaps(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> list[Gap]:
        """Runs of missing open times inside ``[start, end)`` (see the interface)."""

        def run() -> list[Gap]:
            return find_gaps(self._times_sync(series, start, end), series.timeframe, start, end)

        return await self._call("list gaps of", series, run)

    async def delete(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> int:
        """Delete the candles of ``series`` opening in ``[start, end)``; return how many."""
        return await self._call("delete", series, lambda: self._delete_sync(series, start, end))

    async def resample(
        self,
        source: SeriesKey,
        timeframe: Timeframe,
        start: int | None = None,
        end: int | None = None,
    ) -> CandleArrays | None:
        """Build ``timeframe`` candles from the ``source`` candles of ``[start, end)``.

        The bounds are first widened to whole ``timeframe`` candles
        (:func:`trader.candles.whole_candles`), so a bound inside a candle never builds it
        from part of its period. The result equals :func:`trader.candles.resample` of
        :meth:`read` over the widened range. Raises :class:`~trader.errors.ModelError` when the
        source timeframe does not divide ``timeframe``.
        """
        target = Timeframe.parse(timeframe)
        low, high = whole_candles(target, start, end)

        def run() -> CandleArrays:
            return resample(self._read_sync(source, low, high), source.timeframe, target)

        if not source.timeframe.divides(target):
            # The pure function raises the ModelError that explains which targets would work.
            return resample(CandleArrays.empty(), source.timeframe, target)
        return await self._call(f"resample to {target}", source, run)

    # -- running on the store's thread ----------------------------------------------------------

    async def _call(self, operation: str, series: SeriesKey | None, job: Callable[[], T]) -> T:
        return await self._threads.run(operation, job, subject=series)

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[Connection]:
        connection = self._connection
        if connection is None:
            raise StorageError(f"{self._name}: the store is not open; await open() first")
        self._begin_statement = "BEGIN IMMEDIATE" if write else "BEGIN"
        with connection.begin():
            yield connection

    def _open_sync(self) -> None:
        if self._connection is not None:
            return
        if self.path is None:
            url = URL.create("sqlite")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            url = URL.create("sqlite", database=str(self.path))
        engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args={"timeout": self.options.busy_timeout_ms / 1000},
        )
        event.listen(engine, "connect", self._configure_connection)
        event.listen(engine, "begin", self._begin)
        try:
            connection = engine.connect()
        except BaseException:
            engine.dispose()
            raise
        self._engine, self._connection = engine, connection
        try:
            if self._stored_revision() != HEAD_REVISION:
                self._migrate()
        except BaseException:
            self._close_sync()
            raise

    def _configure_connection(self, dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own transaction
        # handling skips it before some statements), per SQLAlchemy's pysqlite documentation.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA page_size = {_PAGE_SIZE}")  # only takes effect on new files
            mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if self.path is not None and str(mode).lower() != "wal":
                raise StorageError(
                    f"{self._name}: cannot switch the file to WAL mode (it stays in {mode!r}); "
                    "use a local disk, not a network share"
                )
            cursor.execute(f"PRAGMA synchronous = {self.options.synchronous.upper()}")
            cursor.execute(f"PRAGMA busy_timeout = {int(self.options.busy_timeout_ms)}")
        finally:
            cursor.close()

    def _begin(self, connection: Connection) -> None:
        connection.exec_driver_sql(self._begin_statement)

    def _stored_revision(self) -> str | None:
        with self._transaction() as connection:
            return self._stored_revision_in(connection)

    def _migrate(self) -> None:
        from alembic import command
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        with self._transaction(write=True) as connection:
            stored = self._stored_revision_in(connection)
            if stored is not None:
                try:
                    ScriptDirectory.from_config(config).get_revision(stored)
                except CommandError as error:
                    raise StorageError(
                        f"{self._name}: the file has candle schema revision {stored!r}, which "
                        f"this version of trader does not know (its newest is {HEAD_REVISION}); "
                        "upgrade trader, or point the store at another file"
                    ) from error
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @staticmethod
    def _stored_revision_in(connection: Connection) -> str | None:
        found = connection.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
        ).first()
        if found is None:
            return None
        query = f"SELECT version_num FROM {VERSION_TABLE}"  # noqa: S608 - a constant name
        row = connection.exec_driver_sql(query).first()
        return None if row is None else str(row[0])

    def _close_sync(self) -> None:
        connection, self._connection = self._connection, None
        engine, self._engine = self._engine, None
        self._series.clear()
        try:
            if connection is not None:
                connection.close()
        finally:
            if engine is not None:
                engine.dispose()

    # -- series ---------------------------------------------------------------------------------

    def _lookup_series(
        self, connection: Connection, series: SeriesKey, create: bool = False
    ) -> tuple[int, int] | None:
        """Return ``(id, block_slots)`` of ``series``, creating the row when asked."""
        cached = self._series.get(series)
        if cached is not None:
            return cached
        key = (series.exchange, series.symbol, str(series.timeframe))
        select = (
            "SELECT id, block_slots FROM series WHERE exchange = ? AND symbol = ? AND timeframe = ?"
        )
        row = connection.exec_driver_sql(select, key).first()
        if row is None and create:
            connection.exec_driver_sql(
                "INSERT INTO series (exchange, symbol, timeframe, block_slots) VALUES (?, ?, ?, ?)",
                (*key, BLOCK_SLOTS),
            )
            row = connection.exec_driver_sql(select, key).first()
            # Cached only once the transaction that created it commits (see _write_sync).
            return None if row is None else (int(row[0]), int(row[1]))
        if row is None:
            return None
        found = (int(row[0]), int(row[1]))
        self._series[series] = found
        return found

    @staticmethod
    def _block_range(
        timeframe: Timeframe, slots: int, start: int | None, end: int | None
    ) -> tuple[int, int] | None:
        """Blocks that may hold open times in ``[start, end)``, or ``None`` when none can."""
        low = max(start, 0) if start is not None else 0
        high = min(end, _MAX_TIME) if end is not None else _MAX_TIME
        if low >= high:
            return None
        first = int(slot_index(low, timeframe)) // slots
        last = int(slot_index(high - 1, timeframe)) // slots
        return first, last

    # -- operations (on the store's thread) -----------------------------------------------------

    def _write_sync(
        self, series: SeriesKey, candles: CandleArrays | Sequence[Candle]
    ) -> WriteResult:
        data = as_arrays(candles)
        if not len(data):
            return WriteResult()
        problem = find_problem(data, series.timeframe)
        if problem is not None:
            row, message = problem
            raise ModelError(
                f"{self._name}: cannot write {series}: row {row}: {message}; nothing was written"
            )
        data = normalize(data)
        inserted = updated = unchanged = 0
        with self._transaction(write=True) as connection:
            found = self._lookup_series(connection, series, create=True)
            if found is None:
                raise StorageError(f"{self._name}: could not create series {series}")
            series_id, slots = found
            blocks = slot_index(data.time, series.timeframe) // slots
            starts = np.flatnonzero(np.concatenate([[True], blocks[1:] != blocks[:-1]]))
            stops = np.concatenate([starts[1:], [len(blocks)]])
            touched = blocks[starts].tolist()
            stored = self._fetch_blocks(connection, series_id, touched)
            rows: list[tuple[Any, ...]] = []
            for block, begin, stop in zip(touched, starts.tolist(), stops.tolist(), strict=True):
                part = data.slice(begin, stop)
                old = stored.get(block)
                if old is None:
                    inserted += len(part)
                    rows.append(_block_row(series_id, block, part))
                    continue
                counts, merged = _apply(old, part)
                inserted += counts[0]
                updated += counts[1]
                unchanged += counts[2]
                if merged is not None:
                    rows.append(_block_row(series_id, block, merged))
            if rows:
                connection.exec_driver_sql(_UPSERT_BLOCK, rows)
        self._series[series] = (series_id, slots)
        return WriteResult(inserted, updated, unchanged)

    def _fetch_blocks(
        self, connection: Connection, series_id: int, blocks: list[int]
    ) -> dict[int, CandleArrays]:
        """Decode the stored blocks among ``blocks`` (sorted) of one series."""
        if not blocks:
            return {}
        wanted = set(blocks)
        found: dict[int, CandleArrays] = {}
        head = (
            "SELECT block, time, open, high, low, close, volume, closed FROM candle_blocks "
            "WHERE series_id = ? AND "
        )
        if len(blocks) <= _MAX_PARAMS:
            marks = ", ".join("?" * len(blocks))
            in_list = head + f"block IN ({marks})"
            result = connection.exec_driver_sql(in_list, (series_id, *blocks))
        else:
            result = connection.exec_driver_sql(
                head + "block BETWEEN ? AND ?", (series_id, blocks[0], blocks[-1])
            )
        for row in result:
            if row[0] in wanted:
                found[int(row[0])] = _decode([tuple(row[1:])])
        return found

    def _read_sync(self, series: SeriesKey, start: int | None, end: int | None) -> CandleArrays:
        with self._transaction() as connection:
            found = self._lookup_series(connection, series)
            if found is None:
                return CandleArrays.empty()
            series_id, slots = found
            bounds = self._block_range(series.timeframe, slots, start, end)
            if bounds is None:
                return CandleArrays.empty()
            rows = connection.exec_driver_sql(
                "SELECT time, open, high, low, close, volume, closed FROM candle_blocks "
                "WHERE series_id = ? AND block BETWEEN ? AND ? ORDER BY block",
                (series_id, *bounds),
            ).all()
        data = _decode([tuple(row) for row in rows])
        return _trim(data, start, end)

    def _times_sync(self, series: SeriesKey, start: int | None, end: int | None) -> IntArray:
        with self._transaction() as connection:
            found = self._lookup_series(connection, series)
            if found is None:
                return np.empty(0, np.int64)
            series_id, slots = found
            bounds = self._block_range(series.timeframe, slots, start, end)
            if bounds is None:
                return np.empty(0, np.int64)
            rows = connection.exec_driver_sql(
                "SELECT time FROM candle_blocks WHERE series_id = ? "
                "AND block BETWEEN ? AND ? ORDER BY block",
                (series_id, *bounds),
            ).all()
        if not rows:
            return np.empty(0, np.int64)
        return np.concatenate([np.frombuffer(row[0], "<i8") for row in rows]).astype(np.int64)

    def _latest_sync(self, series: SeriesKey, count: int) -> CandleArrays:
        if count == 0:
            return CandleArrays.empty()
        with self._transaction() as connection:
            found = self._lookup_series(connection, series)
            if found is None:
                return CandleArrays.empty()
            series_id = found[0]
            counts = connection.exec_driver_sql(
                "SELECT block, count FROM candle_blocks WHERE series_id = ? ORDER BY block DESC",
                (series_id,),
            )
            total, first_block = 0, None
            for block, size in counts:  # newest first; stop once enough candles are covered
                total += int(size)
                first_block = int(block)
                if total >= count:
                    break
            counts.close()
            if first_block is None:
                return CandleArrays.empty()
            rows = connection.exec_driver_sql(
                "SELECT time, open, high, low, close, volume, closed FROM candle_blocks "
                "WHERE series_id = ? AND block >= ? ORDER BY block",
                (series_id, first_block),
            ).all()
        data = _decode([tuple(row) for row in rows])
        return data.slice(max(len(data) - count, 0), len(data))

    def _list_series_sync(self) -> list[SeriesInfo]:
        with self._transaction() as connection:
            rows = connection.exec_driver_sql(
                "SELECT s.exchange, s.symbol, s.timeframe, sum(b.count), min(b.first_time), "
                "max(b.last_time) FROM series AS s JOIN candle_blocks AS b ON b.series_id = s.id "
                "GROUP BY s.id"
            ).all()
        infos = [
            SeriesInfo(
                SeriesKey(str(exchange), str(symbol), Timeframe.parse(str(timeframe))),
                int(count),
                int(first),
                int(last),
            )
            for exchange, symbol, timeframe, count, first, last in rows
            if count
        ]
        infos.sort(key=lambda info: (info.key.exchange, info.key.symbol, info.key.timeframe))
        return infos

    def _delete_sync(self, series: SeriesKey, start: int | None, end: int | None) -> int:
        removed = 0
        with self._transaction(write=True) as connection:
            found = self._lookup_series(connection, series)
            if found is None:
                return 0
            series_id, slots = found
            bounds = self._block_range(series.timeframe, slots, start, end)
            if bounds is None:
                return 0
            low = start if start is not None else -1
            high = end if end is not None else _MAX_TIME + 1
            metas = connection.exec_driver_sql(
                "SELECT block, count, first_time, last_time FROM candle_blocks "
                "WHERE series_id = ? AND block BETWEEN ? AND ?",
                (series_id, *bounds),
            ).all()
            whole = [int(b) for b, _, first, last in metas if first >= low and last < high]
            partial = [int(b) for b, _, first, last in metas if first < low or last >= high]
            removed += sum(int(c) for b, c, first, last in metas if first >= low and last < high)
            for chunk in _chunks(whole, _MAX_PARAMS):
                marks = ", ".join("?" * len(chunk))
                in_list = "DELETE FROM candle_blocks WHERE series_id = ? AND block IN "
                in_list += f"({marks})"
                connection.exec_driver_sql(in_list, (series_id, *chunk))
            rewrites: list[tuple[Any, ...]] = []
            emptied: list[tuple[int, int]] = []
            for block, data in self._fetch_blocks(connection, series_id, sorted(partial)).items():
                keep = (data.time < low) | (data.time >= high)
                dropped = len(data) - int(keep.sum())
                if not dropped:
                    continue
                removed += dropped
                if keep.any():
                    kept = CandleArrays(*(getattr(data, c)[keep] for c in CandleArrays.COLUMNS))
                    rewrites.append(_block_row(series_id, block, kept))
                else:
                    emptied.append((series_id, block))
            if rewrites:
                connection.exec_driver_sql(_UPSERT_BLOCK, rewrites)
            if emptied:
                connection.exec_driver_sql(
                    "DELETE FROM candle_blocks WHERE series_id = ? AND block = ?", emptied
                )
        return removed


def _block_row(series_id: int, block: int, data: CandleArrays) -> tuple[Any, ...]:
    return (
        series_id,
        block,
        len(data),
        int(data.time[0]),
        int(data.time[-1]),
        data.time.astype("<i8", copy=False).tobytes(),
        data.open.astype("<f8", copy=False).tobytes(),
        data.high.astype("<f8", copy=False).tobytes(),
        data.low.astype("<f8", copy=False).tobytes(),
        data.close.astype("<f8", copy=False).tobytes(),
        data.volume.astype("<f8", copy=False).tobytes(),
        data.closed.astype("u1", copy=False).tobytes(),
    )


def _decode(rows: list[tuple[Any, ...]]) -> CandleArrays:
    """Decode block rows (the seven blob columns, in block order) into one set of columns."""
    if not rows:
        return CandleArrays.empty()
    columns = [
        np.concatenate([np.frombuffer(row[index], dtype) for row in rows])
        for index, (_name, dtype) in enumerate(_BLOB_DTYPES)
    ]
    time, open_, high, low, close, volume, closed = columns
    return CandleArrays(time, open_, high, low, close, volume, closed.view(np.bool_))


def _trim(data: CandleArrays, start: int | None, end: int | None) -> CandleArrays:
    first = 0 if start is None else int(np.searchsorted(data.time, start, side="left"))
    stop = len(data) if end is None else int(np.searchsorted(data.time, end, side="left"))
    if first == 0 and stop == len(data):
        return data
    return data.slice(first, max(first, stop))


def _apply(
    old: CandleArrays, new: CandleArrays
) -> tuple[tuple[int, int, int], CandleArrays | None]:
    """Count what upserting ``new`` into ``old`` changes; return the merged block if anything."""
    position = np.minimum(np.searchsorted(old.time, new.time), len(old) - 1)
    present = old.time[position] == new.time
    at = position[present]
    differ = np.zeros(int(present.sum()), dtype=np.bool_)
    for column in _VALUE_COLUMNS:
        differ |= getattr(old, column)[at] != getattr(new, column)[present]
    inserted = len(new) - len(at)
    updated = int(differ.sum())
    unchanged = len(at) - updated
    if not inserted and not updated:
        return (0, 0, unchanged), None
    return (inserted, updated, unchanged), merge(old, new)


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for index in range(0, len(values), size):
        yield values[index : index + size]


def _reason(error: BaseException) -> str:
    """One line saying why a database call failed, with a hint where one helps."""
    original = getattr(error, "orig", None) or error
    text = str(original).splitlines()[0] if str(original) else type(original).__name__
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return (
            f"{text}; another process held the write lock longer than busy_timeout_ms; "
            "retry, or raise busy_timeout_ms"
        )
    if "not a database" in lowered:
        return f"{text}; the file is not an SQLite database: point path at another file"
    if "readonly" in lowered or "permission" in lowered or "unable to open" in lowered:
        return f"{text}; check that the file and its folder exist and are writable"
    return text
