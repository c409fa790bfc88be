"""Relational application state: the shared schema, its migrations, and the SQL state stores.

* :mod:`trader.state.schema` — the tables (SQLAlchemy Core), the same on every SQL dialect;
* :mod:`trader.state.migrations` — versioned Alembic migrations of that schema;
* :mod:`trader.state.sql` — :class:`SqlStateStore`, the state store over any SQLAlchemy URL;
* :mod:`trader.state.sqlite` — :class:`SqliteStateStore`, the default (plugin ``sqlite``);
* :mod:`trader.state.secrets` — encryption at rest of trading-account secrets.
"""

from trader.state.sql import SqlStateStore
from trader.state.sqlite import SqliteStateOptions, SqliteStateStore

__all__ = ["SqlStateStore", "SqliteStateOptions", "SqliteStateStore"]
