"""The simulated exchange: a pure fill model (:mod:`trader.paper.engine`) and the ``paper``
:class:`~trader.interfaces.Exchange` around it (:mod:`trader.paper.exchange`)."""

from trader.paper.engine import FillSettings, FillTiming, PaperEngine, SlippageMode
from trader.paper.exchange import PaperExchange, PaperMarketOptions, PaperOptions

__all__ = [
    "FillSettings",
    "FillTiming",
    "PaperEngine",
    "PaperExchange",
    "PaperMarketOptions",
    "PaperOptions",
    "SlippageMode",
]
