"""A fake Bitfinex (API v2) for offline tests: REST, websocket, matching engine and faults.

Listens on 127.0.0.1 only. Everything is deterministic from :attr:`FakeSettings.seed` and moves
on a simulated clock (:class:`FakeClock`), so a long session runs in seconds::

    async with FakeBitfinex(FakeSettings(seed=7)) as fake:
        exchange = ccxt.async_support.bitfinex(fake.ccxt_config())
        await fake.advance(60_000)
"""

from trader_exchange_bitfinex.testing.clock import FakeClock
from trader_exchange_bitfinex.testing.engine import (
    POST_ONLY,
    BitfinexError,
    FakeAccount,
    FakeOrder,
    cid_date,
)
from trader_exchange_bitfinex.testing.market import (
    BITFINEX_TIMEFRAMES,
    FakePair,
    Trade,
    round_amount,
    round_price,
    to_timeframe,
)
from trader_exchange_bitfinex.testing.scenario import (
    FAULT_KINDS,
    Fault,
    apply_fault,
    random_faults,
    schedule_faults,
)
from trader_exchange_bitfinex.testing.server import (
    INFO_MAINTENANCE_END,
    INFO_MAINTENANCE_START,
    INFO_RESTART,
    FakeBitfinex,
    FakeSettings,
)

__all__ = [
    "BITFINEX_TIMEFRAMES",
    "FAULT_KINDS",
    "INFO_MAINTENANCE_END",
    "INFO_MAINTENANCE_START",
    "INFO_RESTART",
    "POST_ONLY",
    "BitfinexError",
    "FakeAccount",
    "FakeBitfinex",
    "FakeClock",
    "FakeOrder",
    "FakePair",
    "FakeSettings",
    "Fault",
    "Trade",
    "apply_fault",
    "cid_date",
    "random_faults",
    "round_amount",
    "round_price",
    "schedule_faults",
    "to_timeframe",
]
