"""Alembic environment of the SQLite candle store's schema.

The store runs these migrations itself when it opens a file whose schema is older than the code
(:meth:`trader.stores.sqlite_candles.SqliteCandleStore.open`). It hands over its open connection,
already inside a transaction, in ``config.attributes["connection"]``; every step then commits or
rolls back together with that transaction.
"""

from __future__ import annotations

from alembic import context

from trader.stores.sqlite_candles import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the candle store migrations by opening a SqliteCandleStore; they need its connection"
    )
context.configure(connection=connection, version_table=VERSION_TABLE, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
