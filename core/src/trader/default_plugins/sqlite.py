"""Default plugin ``sqlite``: the embedded SQLite candle store and state store.

Both are named ``sqlite`` (``[storage.candles] plugin = "sqlite"``) and keep their files in the
data directory unless a ``path`` option says otherwise.
"""

from __future__ import annotations

from trader.hookspecs import hookimpl
from trader.registry import Register


@hookimpl
def register_candle_stores(register: Register) -> None:
    from trader.stores.sqlite_candles import SqliteCandleOptions, SqliteCandleStore

    register(
        "sqlite",
        SqliteCandleStore,
        options=SqliteCandleOptions,
        summary="candles in an embedded SQLite file (WAL, bulk upserts)",
    )


@hookimpl
def register_state_stores(register: Register) -> None:
    from trader.state.sqlite import SqliteStateOptions, SqliteStateStore

    register(
        "sqlite",
        SqliteStateStore,
        options=SqliteStateOptions,
        summary="application state in an embedded SQLite file",
    )
