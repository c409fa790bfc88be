"""An in-memory stand-in for the driver's ``Session``, for tests where no cluster can run.

No ScyllaDB or Cassandra server can be installed on the machines this project is built on, so
the default test run drives :class:`~trader_storage_scylla.store.ScyllaCandleStore` through
this object instead: it implements the three session methods the store calls (``prepare``,
``execute``, ``execute_async``) over in-memory tables, and answers the CQL the store sends with
the semantics CQL gives it:

* tables are created by ``CREATE TABLE`` text (partition and clustering keys parsed from it);
  the keyspace must exist first;
* ``WHERE`` clauses must restrict every partition key column by equality (or be absent: a full
  scan), and ranges are allowed only on the first clustering column, as on a real cluster;
* ``INSERT`` upserts a whole row; ``DELETE`` removes a partition or a clustering range;
* ``SELECT`` returns rows in clustering order (or reversed by ``ORDER BY ... DESC``), honours
  ``LIMIT`` and the aggregates ``count(*)``, ``min`` and ``max``, and pages: at most the
  statement's ``fetch_size`` rows per result, with an opaque ``paging_state`` to pass back;
* ``execute_async`` answers on a thread of its own, like the driver's event loop thread, and
  records each statement with its consistency level and idempotence in :attr:`log`
  (``MemoryCluster(threaded=False)`` answers at once on the caller's thread instead: faster,
  the way the driver answers when a result is already there).

What it cannot show is anything a real cluster adds: replication, consistency, timeouts and
retries, token and shard routing, tombstones, compaction and performance.
"""

from __future__ import annotations

import bisect
import re
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cassandra import InvalidRequest

from trader_storage_scylla.options import ScyllaCandleOptions

__all__ = ["MemoryCluster", "MemorySession"]

_CREATE_KEYSPACE = re.compile(r"^CREATE KEYSPACE IF NOT EXISTS (\w+) WITH replication = (\{.*\})")
_CREATE_TABLE = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+) \((.*?)\)"
    r"(?: WITH CLUSTERING ORDER BY \((\w+) ASC\))?$"
)
_INSERT = re.compile(r"^INSERT INTO (\w+)\.(\w+) \(([\w, ]+)\) VALUES \(([?, ]+)\)$")
_SELECT = re.compile(
    r"^SELECT (.+?) FROM (\w+)\.(\w+)(?: WHERE (.+?))?(?: ORDER BY (\w+) (ASC|DESC))?"
    r"(?: LIMIT \?)?$"
)
_DELETE = re.compile(r"^DELETE FROM (\w+)\.(\w+) WHERE (.+)$")
_CONDITION = re.compile(r"^(\w+) (=|>=|<=|<|>) \?$")


@dataclass
class _Table:
    columns: list[str]
    partition: list[str]
    clustering: list[str]
    rows: dict[tuple[Any, ...], dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    #: Sorted clustering keys per partition, rebuilt after a change.
    order: dict[tuple[Any, ...], list[tuple[Any, ...]]] = field(default_factory=dict)

    def keys(self, partition: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The clustering keys of ``partition`` in clustering order."""
        keys = self.order.get(partition)
        if keys is None:
            keys = self.order[partition] = sorted(self.rows.get(partition, {}))
        return keys


@dataclass
class MemoryPrepared:
    """A prepared statement: its text and the attributes the driver's would carry."""

    query_string: str
    consistency_level: Any = None
    is_idempotent: bool = False
    fetch_size: int | None = None


@dataclass(frozen=True)
class LoggedRequest:
    """One statement :meth:`MemorySession.execute_async` ran."""

    query: str
    parameters: tuple[Any, ...]
    consistency_level: Any
    is_idempotent: bool
    paged: bool


class MemoryResult:
    """A page of rows, like the driver's ``ResultSet``."""

    def __init__(self, rows: list[tuple[Any, ...]], paging_state: bytes | None) -> None:
        self.current_rows = rows
        self.paging_state = paging_state


class MemoryFuture:
    """Like the driver's ``ResponseFuture``: callbacks run once the answer is there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._result: MemoryResult | None = None
        self._error: BaseException | None = None
        self._callbacks: list[tuple[Callable[[Any], None], Callable[[Any], None]]] = []

    def finish(self, result: MemoryResult | None, error: BaseException | None) -> None:
        """Settle the future and run the callbacks registered so far."""
        with self._lock:
            self._done, self._result, self._error = True, result, error
            callbacks, self._callbacks = self._callbacks, []
        for callback, errback in callbacks:
            if error is None:
                callback(result.current_rows if result else [])
            else:
                errback(error)

    def add_callbacks(
        self, callback: Callable[[Any], None], errback: Callable[[Any], None]
    ) -> None:
        """Run ``callback`` (rows) or ``errback`` (exception) once settled; now if already."""
        with self._lock:
            if not self._done:
                self._callbacks.append((callback, errback))
                return
        if self._error is None:
            callback(self._result.current_rows if self._result else [])
        else:
            errback(self._error)

    def result(self) -> MemoryResult | None:
        """The result, or raise the error (only after settling, as the store calls it)."""
        if self._error is not None:
            raise self._error
        return self._result


class MemoryCluster:
    """Keyspaces and tables in memory; :meth:`connect` hands out sessions over them.

    :meth:`connector` returns the callable the store's ``connector`` argument takes, so that
    every store built over one cluster sees the same data, as stores over a real cluster do.
    """

    def __init__(self, *, threaded: bool = True) -> None:
        self.threaded = threaded
        self.keyspaces: dict[str, str] = {}
        self.tables: dict[tuple[str, str], _Table] = {}
        self.lock = threading.Lock()
        self.sessions: list[MemorySession] = []

    def connect(self, options: ScyllaCandleOptions | None = None) -> MemorySession:
        """A new session over this cluster's data."""
        session = MemorySession(self)
        self.sessions.append(session)
        return session

    def connector(
        self,
    ) -> Callable[[ScyllaCandleOptions], tuple[MemorySession, Callable[[], None]]]:
        """A ``connector`` for the store: a new session and its shutdown."""

        def connect(options: ScyllaCandleOptions) -> tuple[MemorySession, Callable[[], None]]:
            session = self.connect(options)
            return session, session.shutdown

        return connect


class MemorySession:
    """The session methods the store calls, over a :class:`MemoryCluster`."""

    def __init__(self, cluster: MemoryCluster) -> None:
        self.cluster = cluster
        self.default_fetch_size = 5000
        self.log: list[LoggedRequest] = []
        self.schema: list[str] = []
        self.closed = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-session")

    def shutdown(self) -> None:
        """Stop answering (like ``Cluster.shutdown``); the data stays in the cluster."""
        self.closed = True
        self._thread.shutdown(wait=True)

    def prepare(self, query: str) -> MemoryPrepared:
        """Check ``query`` parses and its table exists; return a prepared statement."""
        self._plan(query)
        return MemoryPrepared(query)

    def execute(self, query: Any, parameters: Any = None, timeout: Any = None) -> MemoryResult:
        """Run a schema statement (or any statement) and wait for it."""
        text = query.query_string if isinstance(query, MemoryPrepared) else str(query)
        if text.startswith("CREATE"):
            self.schema.append(text)
            self._create(text)
            return MemoryResult([], None)
        return self._run(text, tuple(parameters or ()), None, self.default_fetch_size)

    def execute_async(
        self,
        query: Any,
        parameters: Any = None,
        trace: bool = False,
        custom_payload: Any = None,
        timeout: Any = None,
        execution_profile: Any = None,
        paging_state: bytes | None = None,
    ) -> MemoryFuture:
        """Run ``query`` on the session's thread; return a future settled from there."""
        if self.closed:
            raise RuntimeError("the session is shut down")
        prepared = query if isinstance(query, MemoryPrepared) else MemoryPrepared(str(query))
        values = tuple(parameters or ())
        fetch = prepared.fetch_size or self.default_fetch_size
        self.log.append(
            LoggedRequest(
                prepared.query_string,
                values,
                prepared.consistency_level,
                prepared.is_idempotent,
                paging_state is not None,
            )
        )
        future = MemoryFuture()

        def run() -> None:
            try:
                result = self._run(prepared.query_string, values, paging_state, fetch)
            except Exception as error:
                future.finish(None, error)
            else:
                future.finish(result, None)

        if self.cluster.threaded:
            self._thread.submit(run)
        else:
            run()
        return future

    # -- the interpreter ------------------------------------------------------------------------

    def _create(self, text: str) -> None:
        match = _CREATE_KEYSPACE.match(text)
        if match is not None:
            with self.cluster.lock:
                self.cluster.keyspaces.setdefault(match.group(1), match.group(2))
            return
        match = _CREATE_TABLE.match(text)
        if match is None:
            raise InvalidRequest(f"memory session: unsupported schema statement: {text}")
        keyspace, name, body = match.group(1), match.group(2), match.group(3)
        if keyspace not in self.cluster.keyspaces:
            raise InvalidRequest(f"Keyspace {keyspace} does not exist")
        key_match = re.search(r", PRIMARY KEY \(\((.+?)\)(?:, (.+?))?\)$", body)
        if key_match is not None:
            partition = [c.strip() for c in key_match.group(1).split(",")]
            clustering = [c.strip() for c in (key_match.group(2) or "").split(",") if c.strip()]
            definitions = body[: key_match.start()].split(", ")
        else:
            single = re.match(r"^(\w+) \w+ PRIMARY KEY", body)
            if single is None:
                raise InvalidRequest(f"memory session: no primary key in {text}")
            partition, clustering = [single.group(1)], []
            definitions = body.split(", ")
        columns = [part.split()[0] for part in definitions]
        with self.cluster.lock:
            self.cluster.tables.setdefault((keyspace, name), _Table(columns, partition, clustering))

    def _table(self, keyspace: str, name: str) -> _Table:
        table = self.cluster.tables.get((keyspace, name))
        if table is None:
            raise InvalidRequest(f"unconfigured table {name} in keyspace {keyspace}")
        return table

    def _plan(self, text: str) -> tuple[str, _Table, re.Match[str]]:
        for kind, pattern in (("insert", _INSERT), ("select", _SELECT), ("delete", _DELETE)):
            match = pattern.match(text)
            if match is not None:
                return (
                    kind,
                    self._table(
                        match.group(1) if kind != "select" else match.group(2),
                        match.group(2) if kind != "select" else match.group(3),
                    ),
                    match,
                )
        raise InvalidRequest(f"memory session: cannot parse {text}")

    @staticmethod
    def _conditions(table: _Table, where: str | None) -> list[tuple[str, str]]:
        if where is None:
            return []
        conditions: list[tuple[str, str]] = []
        for part in where.split(" AND "):
            match = _CONDITION.match(part.strip())
            if match is None or match.group(1) not in table.columns:
                raise InvalidRequest(f"memory session: unsupported condition {part!r}")
            conditions.append((match.group(1), match.group(2)))
        equal = [c for c, op in conditions if op == "="]
        if equal[: len(table.partition)] != table.partition:
            raise InvalidRequest(
                "Cannot execute this query as it might involve data filtering: every partition "
                "key column must be restricted by equality"
            )
        for column, op in conditions[len(table.partition) :]:
            if not table.clustering or column != table.clustering[0]:
                raise InvalidRequest(
                    f"only the first clustering column may be ranged, not {column}"
                )
            if op == "=" and len(conditions) > len(table.partition) + 1:
                raise InvalidRequest("an equality and a range on one clustering column")
        return conditions

    def _run(
        self, text: str, values: tuple[Any, ...], paging_state: bytes | None, fetch: int
    ) -> MemoryResult:
        kind, table, match = self._plan(text)
        with self.cluster.lock:
            if kind == "insert":
                names = [c.strip() for c in match.group(3).split(",")]
                if len(names) != len(values) or match.group(4).count("?") != len(values):
                    raise InvalidRequest("wrong number of bound values")
                row = dict(zip(names, values, strict=True))
                if any(row.get(c) is None for c in table.partition + table.clustering):
                    raise InvalidRequest("Invalid null value for a primary key column")
                partition = tuple(row[c] for c in table.partition)
                clustering = tuple(row[c] for c in table.clustering)
                stored = table.rows.setdefault(partition, {})
                if clustering not in stored:
                    table.order.pop(partition, None)
                stored.setdefault(clustering, {}).update(row)
                return MemoryResult([], None)
            where = match.group(3) if kind == "delete" else match.group(4)
            conditions = self._conditions(table, where)
            bound = values[: len(conditions)]
            if kind == "delete":
                self._delete(table, conditions, bound)
                return MemoryResult([], None)
            segments = self._select(table, conditions, bound)
            if match.group(6) == "DESC":
                segments = [(partition, keys[::-1]) for partition, keys in reversed(segments)]
            if text.endswith("LIMIT ?"):
                segments = _head(segments, int(values[len(conditions)]))
            total = sum(len(keys) for _, keys in segments)
            selected = [s.strip() for s in match.group(1).split(",")]
            if any("(" in s for s in selected):
                rows = [table.rows[p][key] for p, keys in segments for key in keys]
                return MemoryResult([_aggregate(selected, rows)], None)
            offset = struct.unpack(">q", paging_state)[0] if paging_state else 0
            page: list[tuple[Any, ...]] = []
            skip = offset
            for partition, keys in segments:
                if skip >= len(keys):
                    skip -= len(keys)
                    continue
                stored = table.rows[partition]
                for key in keys[skip : skip + fetch - len(page)]:
                    row = stored[key]
                    page.append(tuple(row.get(column) for column in selected))
                skip = 0
                if len(page) >= fetch:
                    break
        following = offset + fetch
        state = struct.pack(">q", following) if following < total else None
        return MemoryResult(page, state)

    def _partitions(
        self, table: _Table, conditions: list[tuple[str, str]], bound: tuple[Any, ...]
    ) -> list[tuple[Any, ...]]:
        if not conditions:
            return sorted(table.rows, key=repr)
        key = tuple(bound[: len(table.partition)])
        return [key] if key in table.rows else []

    def _span(
        self,
        table: _Table,
        partition: tuple[Any, ...],
        conditions: list[tuple[str, str]],
        bound: tuple[Any, ...],
    ) -> list[tuple[Any, ...]]:
        """The clustering keys of ``partition`` the clustering conditions select, in order."""
        keys = table.keys(partition)
        low, high = 0, len(keys)
        ranges = list(zip(conditions, bound, strict=True))[len(table.partition) :]
        for (_column, op), value in ranges:
            if op in (">=", "="):
                low = max(low, bisect.bisect_left(keys, (value,)))
            if op == ">":
                low = max(low, bisect.bisect_right(keys, (value,)))
            if op in ("<=", "="):
                high = min(high, bisect.bisect_right(keys, (value,)))
            if op == "<":
                high = min(high, bisect.bisect_left(keys, (value,)))
        return keys[low:high] if low < high else []

    def _select(
        self, table: _Table, conditions: list[tuple[str, str]], bound: tuple[Any, ...]
    ) -> list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
        """The selected clustering keys, per partition, in order."""
        return [
            (partition, self._span(table, partition, conditions, bound))
            for partition in self._partitions(table, conditions, bound)
        ]

    def _delete(
        self, table: _Table, conditions: list[tuple[str, str]], bound: tuple[Any, ...]
    ) -> None:
        for partition in self._partitions(table, conditions, bound):
            rows = table.rows[partition]
            for key in self._span(table, partition, conditions, bound):
                del rows[key]
            table.order.pop(partition, None)
            if not rows:
                del table.rows[partition]


def _head(
    segments: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]], limit: int
) -> list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    kept: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]] = []
    for partition, keys in segments:
        if limit <= 0:
            break
        kept.append((partition, keys[:limit]))
        limit -= len(keys)
    return kept


def _aggregate(selected: list[str], rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    values: list[Any] = []
    for expression in selected:
        if expression == "count(*)":
            values.append(len(rows))
            continue
        match = re.match(r"^(min|max)\((\w+)\)$", expression)
        if match is None:
            raise InvalidRequest(f"memory session: unsupported selector {expression}")
        column = [row[match.group(2)] for row in rows]
        values.append((min if match.group(1) == "min" else max)(column) if column else None)
    return tuple(values)
