"""Entry point of ``trader-exchange-bitfinex`` (group ``trader``, name ``exchange_bitfinex``).

Registers the exchange adapter ``bitfinex``. The adapter (and ccxt, ~0.7 s to import) loads
only when a ``bitfinex`` exchange is built, so discovering the plugin costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trader.hookspecs import hookimpl
from trader.registry import Register

if TYPE_CHECKING:
    from trader.interfaces import PluginContext
    from trader_exchange_bitfinex.exchange import BitfinexExchange
    from trader_exchange_bitfinex.options import BitfinexOptions


def create_exchange(options: BitfinexOptions, context: PluginContext) -> BitfinexExchange:
    """Build the ``bitfinex`` exchange, importing the adapter on first use."""
    from trader_exchange_bitfinex.exchange import create_exchange as create

    return create(options, context)


@hookimpl
def register_exchanges(register: Register) -> None:
    from trader_exchange_bitfinex.options import BitfinexOptions

    register(
        "bitfinex",
        create_exchange,
        options=BitfinexOptions,
        summary="Bitfinex API v2: spot orders (exchange wallet), REST candles, live websocket",
    )
