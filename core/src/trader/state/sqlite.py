"""The default state store: one embedded SQLite file (default plugin ``sqlite``).

The file is in WAL mode (readers never block the writer), with ``synchronous=FULL`` (orders and
fills survive a power cut once a save returned), foreign keys on, and a busy timeout so several
processes can share it. Transactions that write begin with ``BEGIN IMMEDIATE``, taking the write
lock before reading, so a read-then-write step (the next strategy version, a task's next
history number) can never be overtaken by another process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL

from trader.errors import StorageError
from trader.interfaces.base import PluginContext
from trader.state.secrets import secret_key_from_settings
from trader.state.sql import WRITE_OPTION, SqlStateStore

DEFAULT_FILENAME = "state.sqlite"


class SqliteStateOptions(BaseModel):
    """Options of the ``sqlite`` state store (``[storage.state]`` in ``trader.toml``)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    """The database file; relative paths are resolved against the configuration file's folder.
    Default: ``state.sqlite`` in the data directory."""

    busy_timeout_s: float = Field(default=30.0, gt=0)
    """How long to wait for another process's write lock before failing, in seconds."""


class SqliteStateStore(SqlStateStore):
    """The state store in an SQLite file; see :class:`~trader.state.sql.SqlStateStore`.

    Built by the plugin host as ``SqliteStateStore(options, context)``; the secret key that
    encrypts account secrets is read from ``context.settings["secret_key"]``.
    """

    def __init__(self, options: SqliteStateOptions, context: PluginContext) -> None:
        if options.path:
            path = context.resolve_path(options.path)
        else:
            path = Path(context.data_dir) / DEFAULT_FILENAME
        self.path = path
        self.options = options
        super().__init__(
            URL.create("sqlite", database=str(path)),
            secret_key=secret_key_from_settings(context.settings),
            label=f"SQLite state store {path}",
        )

    async def open(self) -> None:
        """Create the file (and its folder) if needed, switch it to WAL, and migrate it."""
        if self.path.is_dir():
            raise StorageError(f"{self.label}: the path is a folder; give a file path instead")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"{self.label}: cannot create its folder: {exc.strerror or exc}"
            ) from None
        await super().open()

    def _create_engine(self) -> Engine:
        engine = create_engine(
            self._url,
            hide_parameters=True,
            connect_args={"timeout": self.options.busy_timeout_s, "check_same_thread": False},
        )
        busy_ms = round(self.options.busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin, so DDL
            # is transactional and writers can take the lock up front.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                cursor.execute("PRAGMA journal_mode = WAL")
                mode = cursor.fetchone()
                if mode is None or str(mode[0]).lower() != "wal":
                    raise StorageError(f"SQLite refused WAL mode for {self.path}")
                cursor.execute("PRAGMA synchronous = FULL")
                cursor.execute("PRAGMA foreign_keys = ON")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            writing = connection.get_execution_options().get(WRITE_OPTION, False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")

        return engine
