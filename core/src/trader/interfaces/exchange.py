"""The exchange interface: market data in, orders out."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from trader.interfaces.base import Component
from trader.model import Balance, Candle, CandleArrays, Fill, Market, Order, OrderType, SeriesKey


@dataclass(frozen=True, slots=True)
class ExchangeCapabilities:
    """What an exchange adapter can do, so the engine never asks for what it cannot."""

    order_types: frozenset[OrderType] = frozenset({OrderType.MARKET, OrderType.LIMIT})
    post_only: bool = False
    websocket: bool = False
    timeframes: tuple[str, ...] = ()
    max_candles_per_request: int = 1000
    requests_per_minute: int = 60
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CandleUpdate:
    """A live candle for one series; ``candle.closed`` tells a final candle from a forming one."""

    series: SeriesKey
    candle: Candle


class Exchange(Component):
    """An exchange account and its market data, in unified symbols.

    Contract (the exchange conformance suite in ``trader_sdk.testing`` will check it; it arrives
    with the strategies and backtests work):

    * :meth:`submit_order` is idempotent by ``order.client_order_id``: submitting an id the
      exchange already knows returns that order and never creates a second one.
    * Prices and amounts arrive rounded to the market's precision; an adapter rejects (it does
      not silently re-round) anything else.
    * Transient failures (timeouts, rate limits, maintenance) are retried inside the adapter
      within its rate limits; what remains raises :class:`~trader.errors.ExchangeUnavailable`.
      A refused order raises :class:`~trader.errors.OrderRejected`; a submission whose fate is
      unknown raises :class:`~trader.errors.OrderOutcomeUnknown`.
    * Secrets never appear in logs, reprs or exception messages.
    """

    name: str

    @property
    @abstractmethod
    def capabilities(self) -> ExchangeCapabilities: ...

    @abstractmethod
    async def markets(self) -> dict[str, Market]:
        """Every tradable market by unified symbol, with precision and minimum sizes."""

    @abstractmethod
    def fetch_candles(
        self, symbol: str, timeframe: str, start: int, end: int
    ) -> AsyncIterator[CandleArrays]:
        """Yield closed candles with open time in ``[start, end)``, page by page, oldest first."""

    @abstractmethod
    def stream_candles(self, series: Sequence[SeriesKey]) -> AsyncIterator[CandleUpdate]:
        """Stream live candle updates for ``series`` until the iterator is closed."""

    @abstractmethod
    async def balances(self) -> dict[str, Balance]:
        """Balances by currency code."""

    @abstractmethod
    async def submit_order(self, order: Order) -> Order:
        """Place ``order`` (idempotent by client order id); return it as the exchange sees it."""

    @abstractmethod
    async def cancel_order(self, client_order_id: str) -> Order:
        """Cancel an order; return its final state. Cancelling a finished order is not an error."""

    @abstractmethod
    async def open_orders(self, symbol: str | None = None) -> list[Order]: ...

    @abstractmethod
    async def order_status(self, client_order_id: str) -> Order | None:
        """The order's current state, or ``None`` when the exchange provably never saw it."""

    @abstractmethod
    async def own_trades(self, since: int, symbol: str | None = None) -> list[Fill]:
        """Our fills at or after ``since`` (ms), oldest first."""
