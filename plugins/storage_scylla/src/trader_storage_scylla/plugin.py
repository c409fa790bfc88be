"""Entry point of ``trader-storage-scylla`` (group ``trader``, name ``storage_scylla``).

Registers the ``scylla`` candle store. The driver is imported only when the host asks for the
store, so merely listing plugins stays cheap.
"""

from __future__ import annotations

from trader.hookspecs import hookimpl
from trader.registry import Register


@hookimpl
def register_candle_stores(register: Register) -> None:
    from trader_storage_scylla.options import ScyllaCandleOptions
    from trader_storage_scylla.store import ScyllaCandleStore

    register(
        "scylla",
        ScyllaCandleStore,
        options=ScyllaCandleOptions,
        summary="candles in ScyllaDB or Cassandra (bucketed partitions, token/shard-aware)",
    )
