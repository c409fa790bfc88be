"""The ``paper`` exchange: a simulated account behind the :class:`~trader.interfaces.Exchange`
interface, for backtests now and paper trading later.

Time moves only when the caller feeds candles with :meth:`PaperExchange.on_candle` (the backtest
engine replaying stored candles, or a live feed): each closed candle may fill open orders (see
:mod:`trader.paper.engine` for how). Market data methods read from a
:class:`~trader.interfaces.CandleStore` when one is given, else from the candles fed.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from typing_extensions import Self

from trader.errors import ModelError
from trader.interfaces import (
    CandleStore,
    CandleUpdate,
    Exchange,
    ExchangeCapabilities,
    PluginContext,
)
from trader.model import (
    Balance,
    Candle,
    CandleArrays,
    Fill,
    Market,
    Order,
    OrderType,
    Precision,
    PrecisionMode,
    SeriesKey,
    Timeframe,
    parse_symbol,
)
from trader.paper.engine import FillSettings, FillTiming, PaperEngine, SlippageMode

__all__ = ["PaperExchange", "PaperMarketOptions", "PaperOptions", "PrecisionOption"]


def _precision_input(value: object) -> object:
    """A bare number means a tick size: ``0.01`` is ``{mode = "tick", value = 0.01}``."""
    if isinstance(value, (int, float, str, Decimal)) and not isinstance(value, bool):
        return {"mode": "tick", "value": value}
    return value


class PrecisionOption(BaseModel):
    """A precision rule: ``mode`` ``tick`` (a step), ``decimals`` or ``significant`` digits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: PrecisionMode = PrecisionMode.TICK
    value: Decimal

    def to_precision(self) -> Precision:
        return Precision(self.mode, self.value)

    @model_validator(mode="after")
    def _valid(self) -> Self:
        try:
            self.to_precision()
        except ModelError as error:
            raise ValueError(str(error)) from None
        return self


PrecisionField = Annotated[PrecisionOption, BeforeValidator(_precision_input)]


class PaperMarketOptions(BaseModel):
    """One simulated market (``[exchanges.paper.markets."BTC/USD"]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    price_precision: PrecisionField = PrecisionOption(value=Decimal("0.01"))
    """A tick size (``0.01``) or ``{ mode = "significant", value = 5 }``."""
    amount_precision: PrecisionField = PrecisionOption(value=Decimal("0.00000001"))
    min_amount: Decimal | None = Field(default=Decimal("0.00001"), gt=0)
    """The smallest order in base currency; ``None`` for no minimum."""
    min_cost: Decimal | None = Field(default=Decimal("1"), gt=0)
    """The smallest order value in quote currency; ``None`` for no minimum."""
    active: bool = True

    def to_market(self, symbol: str) -> Market:
        return Market(
            symbol,
            self.price_precision.to_precision(),
            self.amount_precision.to_precision(),
            self.min_amount,
            self.min_cost,
            self.active,
        )


def _default_markets() -> dict[str, PaperMarketOptions]:
    return {"BTC/USD": PaperMarketOptions(), "ETH/USD": PaperMarketOptions()}


class PaperOptions(BaseModel):
    """Options of the ``paper`` exchange (``[exchanges.<name>]`` with ``plugin = "paper"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "paper"
    """The exchange name on orders and fills."""
    markets: dict[str, PaperMarketOptions] = Field(default_factory=_default_markets)
    """Tradable markets by unified symbol."""
    balances: dict[str, Annotated[Decimal, Field(ge=0)]] = Field(
        default_factory=lambda: {"USD": Decimal(10_000)}
    )
    """The starting balance of each currency."""
    fill_timing: FillTiming = FillTiming.NEXT_OPEN
    """``next_open``: market orders fill at the next candle's open; ``close``: at this close."""
    maker_fee: Decimal = Field(default=Decimal("0.001"), ge=0, lt=1)
    taker_fee: Decimal = Field(default=Decimal("0.002"), ge=0, lt=1)
    slippage_bps: Decimal = Field(default=Decimal(0), ge=0)
    """Taker fills move this many basis points against the trader."""
    slippage_range: Decimal = Field(default=Decimal(0), ge=0)
    """Taker fills move this fraction of the candle's range (high − low) against the trader."""
    volume_fraction: Decimal | None = Field(default=None, gt=0, le=1)
    """At most this fraction of each candle's volume fills; unset for no cap."""
    candle_exchange: str | None = None
    """Market data reads stored series of this exchange (default: ``name``)."""
    keep_candles: int = Field(default=10_000, ge=1)
    """Without a candle store, how many fed candles per series market data can return."""

    @field_validator("markets")
    @classmethod
    def _symbols(cls, value: dict[str, PaperMarketOptions]) -> dict[str, PaperMarketOptions]:
        for symbol in value:
            try:
                parse_symbol(symbol)
            except ModelError as error:
                raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _one_slippage(self) -> Self:
        if self.slippage_bps and self.slippage_range:
            raise ValueError("set slippage_bps or slippage_range, not both")
        return self

    def fill_settings(self) -> FillSettings:
        """The engine settings these options describe."""
        mode, amount = SlippageMode.NONE, Decimal(0)
        if self.slippage_bps:
            mode, amount = SlippageMode.BPS, self.slippage_bps
        elif self.slippage_range:
            mode, amount = SlippageMode.RANGE, self.slippage_range
        return FillSettings(
            timing=self.fill_timing,
            maker_fee=self.maker_fee,
            taker_fee=self.taker_fee,
            slippage_mode=mode,
            slippage=amount,
            volume_fraction=self.volume_fraction,
        )


_END = object()


class PaperExchange(Exchange):
    """A simulated spot exchange account; prices move only through :meth:`on_candle`.

    Orders, balances and fills live in memory for the life of the instance.
    """

    def __init__(
        self,
        options: PaperOptions | None = None,
        context: PluginContext | None = None,
        *,
        candle_store: CandleStore | None = None,
    ) -> None:
        self.options = options if options is not None else PaperOptions()
        self.name = self.options.name
        self.candle_store = candle_store
        """Where market data is read from; ``None`` reads the candles fed."""
        self.engine = PaperEngine(
            {symbol: m.to_market(symbol) for symbol, m in self.options.markets.items()},
            dict(self.options.balances),
            self.options.fill_settings(),
            exchange=self.name,
        )
        self._history: dict[SeriesKey, list[Candle]] = {}
        self._subscribers: list[tuple[frozenset[SeriesKey], asyncio.Queue[Any]]] = []

    # -- the feed ------------------------------------------------------------------------------

    def on_candle(self, series: SeriesKey, candle: Candle) -> list[Fill]:
        """Feed one candle of ``series``: advance the simulation and return the fills it caused.

        Candles of a series come oldest first; a forming candle may be fed again as it changes
        and finally closed. Only closed candles fill orders (see :mod:`trader.paper.engine`).
        Live ``stream_candles`` subscribers receive the candle.
        """
        history = self._history.setdefault(series, [])
        if history and history[-1].time == candle.time:
            history[-1] = candle
        elif not history or history[-1].time < candle.time:
            history.append(candle)
            if len(history) > 2 * self.options.keep_candles:
                del history[: len(history) - self.options.keep_candles]
        timeframe = series.timeframe
        duration = (
            timeframe.next_open(candle.time) - candle.time
            if timeframe.is_calendar
            else timeframe.duration_ms
        )
        fills = self.engine.on_candle(series.symbol, candle, duration)
        if self._subscribers:
            update = CandleUpdate(series, candle)
            for wanted, queue in self._subscribers:
                if series in wanted:
                    queue.put_nowait(update)
        return fills

    # -- Exchange ------------------------------------------------------------------------------

    @property
    def capabilities(self) -> ExchangeCapabilities:
        return ExchangeCapabilities(
            order_types=frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.STOP}),
            post_only=True,
            websocket=False,
            timeframes=(),
            max_candles_per_request=1000,
            requests_per_minute=1_000_000,
            extra={"simulated": "true"},
        )

    async def close(self) -> None:
        """End every live candle stream."""
        for _, queue in self._subscribers:
            queue.put_nowait(_END)

    async def markets(self) -> dict[str, Market]:
        """The markets from the options, by unified symbol."""
        return dict(self.engine.markets)

    async def fetch_candles(
        self, symbol: str, timeframe: str, start: int, end: int
    ) -> AsyncIterator[CandleArrays]:
        """Closed candles with open time in ``[start, end)``, pages of up to 1,000, oldest first.

        Read from the candle store (series of ``candle_exchange``) when there is one, else from
        the candles fed (the latest ``keep_candles`` per series).
        """
        key = SeriesKey(
            self.options.candle_exchange or self.name, symbol, Timeframe.parse(timeframe)
        )
        if self.candle_store is not None:
            arrays = await self.candle_store.read(key, start, end)
        else:
            history = self._history.get(key) or self._fed(symbol, key.timeframe)
            times = [c.time for c in history]
            low, high = bisect.bisect_left(times, start), bisect.bisect_left(times, end)
            arrays = CandleArrays.from_candles(history[low:high])
        keep = arrays.closed
        if not keep.all():
            arrays = CandleArrays(
                *(getattr(arrays, column)[keep] for column in CandleArrays.COLUMNS)
            )
        page = self.capabilities.max_candles_per_request
        for offset in range(0, len(arrays), page):
            yield arrays.slice(offset, min(offset + page, len(arrays)))

    def _fed(self, symbol: str, timeframe: Timeframe) -> list[Candle]:
        """Candles fed for ``symbol`` and ``timeframe`` under any exchange name."""
        for key, history in self._history.items():
            if key.symbol == symbol and key.timeframe == timeframe:
                return history
        return []

    async def stream_candles(self, series: Sequence[SeriesKey]) -> AsyncIterator[CandleUpdate]:
        """Candle updates of ``series`` as they are fed, until the iterator or the exchange is
        closed."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        entry = (frozenset(series), queue)
        self._subscribers.append(entry)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            self._subscribers.remove(entry)

    async def balances(self) -> dict[str, Balance]:
        return self.engine.balances()

    async def submit_order(self, order: Order) -> Order:
        """Accept ``order`` (idempotent by client order id); with ``close`` fill timing it may
        come back already filled. Raises :class:`~trader.errors.OrderRejected` with the reason."""
        accepted, _ = self.engine.submit(order)
        return accepted

    async def cancel_order(self, client_order_id: str) -> Order:
        return self.engine.cancel(client_order_id)

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        return self.engine.open_orders(symbol)

    async def order_status(self, client_order_id: str) -> Order | None:
        return self.engine.order(client_order_id)

    async def own_trades(self, since: int, symbol: str | None = None) -> list[Fill]:
        return self.engine.fills(since, symbol)


def build_paper(options: PaperOptions, context: PluginContext) -> PaperExchange:
    """The ``paper`` plugin's factory."""
    return PaperExchange(options, context)
