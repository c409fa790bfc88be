"""Entry point of ``trader-exchange-bitfinex`` (group ``trader``, name ``exchange_bitfinex``).

Registers the exchange adapter ``bitfinex``.
"""

from __future__ import annotations

from trader.hookspecs import hookimpl
from trader.registry import Register


@hookimpl
def register_exchanges(register: Register) -> None:
    from trader_exchange_bitfinex.exchange import create_exchange
    from trader_exchange_bitfinex.options import BitfinexOptions

    register(
        "bitfinex",
        create_exchange,
        options=BitfinexOptions,
        summary="Bitfinex API v2: spot orders (exchange wallet), REST candles, live websocket",
    )
