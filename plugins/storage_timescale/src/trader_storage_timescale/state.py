"""The ``timescale`` state store: trader's relational state in a PostgreSQL database.

It is :class:`trader.state.sql.SqlStateStore` (the same tables, queries and versioned Alembic
migrations as the default SQLite store) over psycopg 3, with a connection pool whose
connections are checked before use, so a server restart costs one failed ping, not an error.
"""

from __future__ import annotations

from pydantic import Field
from sqlalchemy import Engine, create_engine

from trader.interfaces.base import PluginContext
from trader.state.secrets import secret_key_from_settings
from trader.state.sql import SqlStateStore
from trader_storage_timescale.connection import ConnectionOptions, Server, connect_args

__all__ = ["TimescaleStateOptions", "TimescaleStateStore"]


class TimescaleStateOptions(ConnectionOptions):
    """Options of the ``timescale`` state store (``[storage.state]`` in ``trader.toml``)."""

    pool_size: int = Field(
        default=4, ge=1, le=64, description="Connections kept open to the database."
    )


class TimescaleStateStore(SqlStateStore):
    """Application state in PostgreSQL; see :class:`~trader.state.sql.SqlStateStore`.

    Built by the plugin host as ``TimescaleStateStore(options, context)``; the key that encrypts
    account secrets comes from ``context.settings["secret_key"]``. The DSN (and password) are
    read when the store is built; messages name the store by ``user@host:port/database``.
    """

    def __init__(self, options: TimescaleStateOptions, context: PluginContext) -> None:
        self.options = options
        label = "timescale state store"
        self.server = Server.from_options(options, f"{label} options")
        super().__init__(
            self.server.url(),
            secret_key=secret_key_from_settings(context.settings),
            label=f"{label} {self.server.label}",
        )

    def _create_engine(self) -> Engine:
        return create_engine(
            self._url,
            hide_parameters=True,
            pool_size=self.options.pool_size,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args=connect_args(self.options, "trader-state"),
        )
