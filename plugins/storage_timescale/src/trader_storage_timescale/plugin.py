"""Entry point of ``trader-storage-timescale`` (group ``trader``, name ``storage_timescale``).

Registers the ``timescale`` candle store and the ``timescale`` state store. Both import psycopg
only when the host asks for them, so merely listing plugins stays cheap.
"""

from __future__ import annotations

from trader.hookspecs import hookimpl
from trader.registry import Register


@hookimpl
def register_candle_stores(register: Register) -> None:
    from trader_storage_timescale.candles import TimescaleCandleOptions, TimescaleCandleStore

    register(
        "timescale",
        TimescaleCandleStore,
        options=TimescaleCandleOptions,
        summary="candles in PostgreSQL (range partitions, binary COPY ingest, date_bin)",
    )


@hookimpl
def register_state_stores(register: Register) -> None:
    from trader_storage_timescale.state import TimescaleStateOptions, TimescaleStateStore

    register(
        "timescale",
        TimescaleStateStore,
        options=TimescaleStateOptions,
        summary="application state in PostgreSQL (the shared SQL schema and migrations)",
    )
