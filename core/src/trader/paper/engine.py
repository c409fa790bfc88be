"""The simulated exchange's matching engine: orders filled on candles, with fees and balances.

Pure and deterministic: no I/O, no clock, no randomness. The same markets, balances, settings,
orders and candles always give the same fills, to the last digit (money is
:class:`~decimal.Decimal`; candle floats are read through their shortest ``repr``).

How orders fill (``FillSettings`` chooses the timing, fees, slippage and volume cap):

* **Market orders** fill at the next candle's open (``FillTiming.NEXT_OPEN``), or at the close
  of the candle current when they were submitted (``FillTiming.CLOSE``; with no candle yet, at
  the close of the next one). They pay the taker fee and slippage.
* **Limit orders** rest. A candle that opens at or through the limit price fills the order at
  the open (taker); a candle whose range reaches the limit fills it at the limit price (maker).
  Post-only orders always fill at their limit price as makers, and are rejected when they would
  take at submission. With ``CLOSE`` timing a limit order marketable against the current close
  fills at once at that close (taker). Limit fills get no slippage: never worse than the limit.
* **Stop orders** trigger when a candle's range reaches the stop price and fill on that candle
  at the stop price, or at the open when the candle gapped through it (taker, slippage); what a
  volume cap leaves unfilled then fills like a market order. With ``CLOSE`` timing a stop
  already reached by the current close fills at once at that close.
* **Slippage** moves the price against the taker: a fixed number of basis points, or a fraction
  of the fill candle's range (high − low). Fill prices are then rounded to the market's price
  precision.
* **Partial fills**: with ``volume_fraction`` set, the orders of a market fill at most that
  fraction of each candle's volume together (oldest order first); the rest waits for the next
  candles. Amounts are rounded down to the market's amount precision.
* **Balances** are per currency, spot only: an order reserves what it may spend (quote for buys,
  including the highest fee; base for sells) and is rejected when the free balance cannot cover
  it; a fill spends from the reservation; the rest is released when the order ends. A market or
  stop buy whose fill costs more than was reserved (the price moved) fills what the free balance
  pays for, and the rest of the order is cancelled. No balance ever goes negative.
* Fees are charged in the quote currency: ``amount × price × rate``.

Only closed candles fill orders, and only those of the first timeframe fed for a symbol (feed
other timeframes for market data; they do not fill twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from trader.errors import ExchangeError, ModelError, OrderRejected
from trader.model import (
    Balance,
    Candle,
    Fill,
    Market,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
)

__all__ = ["FillSettings", "FillTiming", "PaperEngine", "SlippageMode", "to_decimal"]

_ZERO = Decimal(0)
_ONE = Decimal(1)
_BPS = Decimal(10_000)


class FillTiming(str, Enum):
    """When market orders fill: at the next candle's open, or at the current candle's close."""

    NEXT_OPEN = "next_open"
    CLOSE = "close"


class SlippageMode(str, Enum):
    """How taker fills are moved against the trader."""

    NONE = "none"
    BPS = "bps"
    """``slippage`` basis points of the price."""
    RANGE = "range"
    """``slippage`` times the fill candle's range (high − low)."""


@dataclass(frozen=True, slots=True)
class FillSettings:
    """How the engine fills orders. Fees are fractions (``0.001`` is 0.1 %)."""

    timing: FillTiming = FillTiming.NEXT_OPEN
    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.002")
    slippage_mode: SlippageMode = SlippageMode.NONE
    slippage: Decimal = _ZERO
    volume_fraction: Decimal | None = None
    """At most this fraction of each candle's volume fills per market; ``None``: no cap."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "timing", FillTiming(self.timing))
        object.__setattr__(self, "slippage_mode", SlippageMode(self.slippage_mode))
        for name in ("maker_fee", "taker_fee"):
            value = getattr(self, name)
            if not _ZERO <= value < _ONE:
                raise ModelError(f"{name} must be a fraction in [0, 1), not {value}")
        if self.slippage < 0:
            raise ModelError(f"slippage must be >= 0, not {self.slippage}")
        if self.volume_fraction is not None and not _ZERO < self.volume_fraction <= _ONE:
            raise ModelError(f"volume_fraction must be in (0, 1], not {self.volume_fraction}")


def to_decimal(value: float) -> Decimal:
    """A candle float as the decimal it was written as (its shortest ``repr``)."""
    return Decimal(repr(float(value)))


@dataclass(slots=True)
class _Wallet:
    total: Decimal = _ZERO
    reserved: Decimal = _ZERO


@dataclass(slots=True)
class _Live:
    """An order the engine tracks, with its bookkeeping."""

    order: Order
    market: Market
    seq: int
    reserve: Decimal = _ZERO
    """What is still reserved for it, in quote (buys) or base (sells)."""
    cost: Decimal = _ZERO
    triggered: bool = False


@dataclass(slots=True)
class _Bar:
    """One closed candle of a symbol, in decimals, and how much of its volume was used."""

    time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    used: Decimal = _ZERO


@dataclass
class PaperEngine:
    """A simulated spot account on one venue: markets, balances, orders and their fills."""

    markets: Mapping[str, Market]
    initial_balances: Mapping[str, Decimal] = field(default_factory=dict)
    settings: FillSettings = field(default_factory=FillSettings)
    exchange: str = "paper"

    def __post_init__(self) -> None:
        self._wallets: dict[str, _Wallet] = {}
        for currency, amount in self.initial_balances.items():
            if not amount.is_finite() or amount < 0:
                raise ModelError(f"initial balance of {currency} must be >= 0, not {amount}")
            self._wallets[currency] = _Wallet(Decimal(amount))
        self._orders: dict[str, _Live] = {}
        self._open: dict[str, _Live] = {}
        self._fills: list[Fill] = []
        self._bars: dict[str, _Bar] = {}
        self._raw: dict[str, tuple[Candle, int]] = {}
        self._timeframes: dict[str, int] = {}
        self._seq = 0
        self._fill_seq = 0
        self.now = 0
        """The simulation time (ms): the close time of the latest candle fed."""

    # -- queries -------------------------------------------------------------------------------

    def balances(self) -> dict[str, Balance]:
        """Every currency held or reserved, as :class:`~trader.model.Balance`."""
        return {
            currency: Balance(currency, wallet.total, wallet.total - wallet.reserved)
            for currency, wallet in sorted(self._wallets.items())
        }

    def reserved(self, client_order_id: str) -> Decimal:
        """What an order still holds reserved (quote for buys, base for sells); 0 once ended."""
        live = self._open.get(client_order_id)
        return live.reserve if live is not None else _ZERO

    def order(self, client_order_id: str) -> Order | None:
        """The order's current state, or ``None`` when it was never accepted."""
        live = self._orders.get(client_order_id)
        return live.order if live is not None else None

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders not yet ended, oldest first, optionally of one symbol."""
        return [
            live.order
            for live in self._open.values()
            if symbol is None or live.order.symbol == symbol
        ]

    def fills(self, since: int = 0, symbol: str | None = None) -> list[Fill]:
        """Fills at or after ``since`` (ms), oldest first, optionally of one symbol."""
        return [
            fill
            for fill in self._fills
            if fill.time >= since and (symbol is None or fill.symbol == symbol)
        ]

    def last_price(self, symbol: str) -> Decimal | None:
        """The close of the latest candle of ``symbol``, or ``None`` before the first."""
        bar = self._bar(symbol)
        return bar.close if bar is not None else None

    def _bar(self, symbol: str) -> _Bar | None:
        """The latest candle of ``symbol`` in decimals (converted when first needed)."""
        bar = self._bars.get(symbol)
        if bar is None:
            raw = self._raw.get(symbol)
            if raw is None:
                return None
            candle, timeframe_ms = raw
            bar = _Bar(
                candle.time,
                candle.time + timeframe_ms,
                to_decimal(candle.open),
                to_decimal(candle.high),
                to_decimal(candle.low),
                to_decimal(candle.close),
                to_decimal(candle.volume),
            )
            self._bars[symbol] = bar
        return bar

    # -- orders --------------------------------------------------------------------------------

    def submit(self, order: Order) -> tuple[Order, list[Fill]]:
        """Accept ``order`` (idempotent by client order id) and return it with any fills.

        An id already known returns that order unchanged and no fills. Raises
        :class:`~trader.errors.OrderRejected` (and remembers nothing) for an unknown or
        inactive market, a price or amount off the market's precision, an order below the
        minimum size, a post-only order that would take, or too little free balance.
        """
        known = self._orders.get(order.client_order_id)
        if known is not None:
            return known.order, []
        market = self._check(order)
        reserve_currency, reserve = self._reservation(order, market)
        wallet = self._wallets.get(reserve_currency) or _Wallet()
        free = wallet.total - wallet.reserved
        if reserve > free:
            raise OrderRejected(
                f"order {order.client_order_id} on {self.exchange}: insufficient funds, needs "
                f"{reserve} {reserve_currency} and {free} is free; deposit more or trade less"
            )
        wallet.reserved += reserve
        self._wallets[reserve_currency] = wallet
        self._seq += 1
        accepted = order.with_status(
            OrderStatus.ACKNOWLEDGED,
            exchange=self.exchange,
            exchange_order_id=f"{self.exchange}-{self._seq}",
            filled=_ZERO,
            average_price=None,
            created_at=self.now,
            updated_at=self.now,
        )
        live = _Live(accepted, market, self._seq, reserve=reserve)
        self._orders[order.client_order_id] = live
        self._open[order.client_order_id] = live
        fills: list[Fill] = []
        bar = self._bar(order.symbol)
        if self.settings.timing is FillTiming.CLOSE and bar is not None:
            self._match_at_close(live, bar, fills)
        return live.order, fills

    def cancel(self, client_order_id: str) -> Order:
        """Cancel an open order and release its reservation; an ended order is returned as is.

        Raises :class:`~trader.errors.ExchangeError` for an id the engine never accepted.
        """
        live = self._orders.get(client_order_id)
        if live is None:
            raise ExchangeError(
                f"no order with client order id {client_order_id!r} on {self.exchange}; "
                "check the id (order_status returns None for unknown ids)"
            )
        if client_order_id in self._open:
            self._end(live, OrderStatus.CANCELLED)
        return live.order

    # -- candles -------------------------------------------------------------------------------

    def on_candle(self, symbol: str, candle: Candle, timeframe_ms: int) -> list[Fill]:
        """Advance the simulation by one candle of ``symbol``; return the fills it caused.

        Forming candles (``closed=False``) and candles of a timeframe other than the first one
        fed for the symbol fill nothing. A candle no later than the previous one is ignored.
        """
        if not candle.closed:
            return []
        timeframe = self._timeframes.setdefault(symbol, timeframe_ms)
        if timeframe != timeframe_ms:
            return []
        previous = self._raw.get(symbol)
        if previous is not None and candle.time <= previous[0].time:
            return []
        self._raw[symbol] = (candle, timeframe_ms)
        self._bars.pop(symbol, None)
        fills: list[Fill] = []
        if self._open:
            bar = self._bar(symbol)
            assert bar is not None
            for live in [lv for lv in self._open.values() if lv.order.symbol == symbol]:
                self._match(live, bar, fills)
        self.now = max(self.now, candle.time + timeframe_ms)
        return fills

    # -- checks and reservations -----------------------------------------------------------------

    def _check(self, order: Order) -> Market:
        where = f"order {order.client_order_id} on {self.exchange}"
        market = self.markets.get(order.symbol)
        if market is None:
            known = ", ".join(sorted(self.markets)) or "none"
            raise OrderRejected(f"{where}: no market {order.symbol} (markets: {known})")
        if not market.active:
            raise OrderRejected(f"{where}: market {order.symbol} is not active")
        if market.amount_precision.round(order.amount) != order.amount:
            raise OrderRejected(
                f"{where}: amount {order.amount} is not a multiple of the amount precision of "
                f"{order.symbol}; round it with Market.round_amount"
            )
        for name in ("price", "stop_price"):
            value: Decimal | None = getattr(order, name)
            if value is not None and market.price_precision.round(value) != value:
                raise OrderRejected(
                    f"{where}: {name} {value} does not fit the price precision of "
                    f"{order.symbol}; round it with Market.round_price"
                )
        reference = order.price or order.stop_price or self.last_price(order.symbol)
        problem = market.check_order_size(order.amount, reference)
        if problem is not None:
            raise OrderRejected(f"{where}: {problem}")
        if order.post_only and self._would_take(order):
            raise OrderRejected(f"{where}: post-only order at {order.price} would take liquidity")
        return market

    def _would_take(self, order: Order) -> bool:
        last = self.last_price(order.symbol)
        if last is None or order.price is None:
            return False
        return order.price >= last if order.side is OrderSide.BUY else order.price <= last

    def _reservation(self, order: Order, market: Market) -> tuple[str, Decimal]:
        if order.side is OrderSide.SELL:
            return market.base, order.amount
        settings = self.settings
        if order.type is OrderType.LIMIT:
            assert order.price is not None
            fee = max(settings.maker_fee, settings.taker_fee)
            return market.quote, order.amount * order.price * (_ONE + fee)
        reference = order.stop_price if order.type is OrderType.STOP else None
        bar = self._bar(order.symbol)
        if reference is None:
            if bar is None:
                return market.quote, _ZERO
            reference = bar.close
        if settings.slippage_mode is SlippageMode.BPS:
            reference = reference * (_ONE + settings.slippage / _BPS)
        elif settings.slippage_mode is SlippageMode.RANGE and bar is not None:
            reference = reference + settings.slippage * (bar.high - bar.low)
        return market.quote, order.amount * reference * (_ONE + settings.taker_fee)

    # -- matching --------------------------------------------------------------------------------

    def _match_at_close(self, live: _Live, bar: _Bar, fills: list[Fill]) -> None:
        """With ``CLOSE`` timing, fill what is marketable at the current candle's close."""
        order = live.order
        close = bar.close
        if order.type is OrderType.MARKET:
            self._fill(live, bar, self._slipped(close, order.side, bar), False, fills)
        elif order.type is OrderType.LIMIT:
            assert order.price is not None
            marketable = (
                close <= order.price if order.side is OrderSide.BUY else close >= order.price
            )
            if marketable:
                self._fill(live, bar, close, False, fills)
        else:
            assert order.stop_price is not None
            stop = order.stop_price
            reached = close >= stop if order.side is OrderSide.BUY else close <= stop
            if reached:
                live.triggered = True
                self._fill(live, bar, self._slipped(close, order.side, bar), False, fills)

    def _match(self, live: _Live, bar: _Bar, fills: list[Fill]) -> None:
        order = live.order
        buy = order.side is OrderSide.BUY
        if order.type is OrderType.MARKET or live.triggered:
            base = bar.close if self.settings.timing is FillTiming.CLOSE else bar.open
            self._fill(live, bar, self._slipped(base, order.side, bar), False, fills)
        elif order.type is OrderType.LIMIT:
            assert order.price is not None
            limit = order.price
            if order.post_only:
                if (bar.low <= limit) if buy else (bar.high >= limit):
                    self._fill(live, bar, limit, True, fills)
            elif (bar.open <= limit) if buy else (bar.open >= limit):
                self._fill(live, bar, bar.open, False, fills)
            elif (bar.low <= limit) if buy else (bar.high >= limit):
                self._fill(live, bar, limit, True, fills)
        else:
            assert order.stop_price is not None
            stop = order.stop_price
            if (bar.high >= stop) if buy else (bar.low <= stop):
                live.triggered = True
                gapped = (bar.open >= stop) if buy else (bar.open <= stop)
                base = bar.open if gapped else stop
                self._fill(live, bar, self._slipped(base, order.side, bar), False, fills)

    def _slipped(self, price: Decimal, side: OrderSide, bar: _Bar) -> Decimal:
        settings = self.settings
        if settings.slippage_mode is SlippageMode.BPS:
            move = price * settings.slippage / _BPS
        elif settings.slippage_mode is SlippageMode.RANGE:
            move = settings.slippage * (bar.high - bar.low)
        else:
            return price
        return price + move if side is OrderSide.BUY else price - move

    def _fill(self, live: _Live, bar: _Bar, price: Decimal, maker: bool, fills: list[Fill]) -> None:
        order = live.order
        market = live.market
        if not maker:
            rounded = market.round_price(price)
            price = rounded if rounded > 0 else price
        if price <= 0:
            return
        amount = order.remaining
        cap = self.settings.volume_fraction
        if cap is not None:
            room = bar.volume * cap - bar.used
            amount = min(amount, market.round_amount(max(room, _ZERO)))
        rate = self.settings.maker_fee if maker else self.settings.taker_fee
        quote = self._wallets.setdefault(market.quote, _Wallet())
        base = self._wallets.setdefault(market.base, _Wallet())
        short_of_funds = False
        if order.side is OrderSide.BUY:
            spendable = live.reserve + (quote.total - quote.reserved)
            if amount * price * (_ONE + rate) > spendable:
                amount = market.round_amount(spendable / (price * (_ONE + rate)))
                while amount > 0 and amount * price * (_ONE + rate) > spendable:
                    amount = market.round_amount(amount - amount / Decimal(1_000_000))
                short_of_funds = True
        if amount <= 0:
            if short_of_funds:
                self._end(live, OrderStatus.CANCELLED)
            return
        cost = amount * price
        fee = cost * rate
        if order.side is OrderSide.BUY:
            spend = cost + fee
            from_reserve = min(live.reserve, spend)
            live.reserve -= from_reserve
            quote.reserved -= from_reserve
            quote.total -= spend
            base.total += amount
        else:
            live.reserve -= amount
            base.reserved -= amount
            base.total -= amount
            quote.total += cost - fee
        bar.used += amount
        self._fill_seq += 1
        fill = Fill(
            fill_id=f"{self.exchange}-t{self._fill_seq}",
            client_order_id=order.client_order_id,
            exchange=self.exchange,
            symbol=order.symbol,
            side=order.side,
            amount=amount,
            price=price,
            fee=fee,
            fee_currency=market.quote,
            time=max(bar.time, order.created_at),
            maker=maker,
        )
        self._fills.append(fill)
        fills.append(fill)
        live.cost += cost
        filled = order.filled + amount
        status = OrderStatus.FILLED if filled == order.amount else OrderStatus.PARTIALLY_FILLED
        live.order = order.with_status(
            status, filled=filled, average_price=live.cost / filled, updated_at=fill.time
        )
        if status is OrderStatus.FILLED:
            self._end(live, OrderStatus.FILLED)
        elif short_of_funds:
            self._end(live, OrderStatus.CANCELLED)

    def _end(self, live: _Live, status: OrderStatus) -> None:
        """End an open order: release its reservation and set its final status."""
        market = live.market
        currency = market.base if live.order.side is OrderSide.SELL else market.quote
        self._wallets[currency].reserved -= live.reserve
        live.reserve = _ZERO
        del self._open[live.order.client_order_id]
        if live.order.status is not status:
            live.order = live.order.with_status(
                status, updated_at=max(self.now, live.order.updated_at)
            )

    def orders(self) -> Iterable[Order]:
        """Every accepted order, in submission order."""
        return (live.order for live in self._orders.values())
