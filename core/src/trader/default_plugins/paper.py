"""Default plugin ``paper``: the simulated exchange for backtests and paper trading.

Select it with ``plugin = "paper"`` in an ``[exchanges.<name>]`` table; the rest of the table is
:class:`~trader.paper.PaperOptions` (markets, starting balances, fill timing, fees, slippage,
volume cap). Candles reach it through :meth:`~trader.paper.PaperExchange.on_candle`.
"""

from __future__ import annotations

from trader.hookspecs import hookimpl
from trader.registry import Register


@hookimpl
def register_exchanges(register: Register) -> None:
    """Register the ``paper`` exchange."""
    from trader.paper.exchange import PaperOptions, build_paper

    register(
        "paper",
        build_paper,
        options=PaperOptions,
        summary="a simulated exchange filling orders on candles (fees, slippage, volume cap)",
    )
