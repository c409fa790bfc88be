"""Spot accounting in decimals: cash, position, fees; market fills; round-trip trades.

:func:`fill_market` is the market-order fill of the simulated exchange
(:class:`trader.paper.PaperEngine`) without its order book: the backtest engine's fast path
for target orders. A test checks the two give the same fills.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from trader.errors import ModelError
from trader.model import Fill, Market, OrderSide

__all__ = [
    "Account",
    "FillRow",
    "Trade",
    "closed_trade_figures",
    "fill_market",
    "round_trips",
    "trips_of_rows",
]

_ZERO = Decimal(0)
_ONE = Decimal(1)


@dataclass(slots=True)
class Account:
    """One assignment's spot account: quote ``cash``, base ``position``, ``fees`` paid so far.

    :meth:`apply` refuses any fill that would make a balance negative (no margin).
    """

    cash: Decimal
    position: Decimal = _ZERO
    fees: Decimal = _ZERO

    def equity(self, price: Decimal) -> Decimal:
        """Cash plus the position valued at ``price``."""
        return self.cash + self.position * price

    def apply(self, side: OrderSide, amount: Decimal, price: Decimal, fee: Decimal) -> None:
        """Book a fill: a buy spends ``amount × price + fee``; a sell earns ``amount × price −
        fee``. Raises :class:`~trader.errors.ModelError` when a balance would go negative."""
        cost = amount * price
        if side is OrderSide.BUY:
            cash, position = self.cash - cost - fee, self.position + amount
        else:
            cash, position = self.cash + cost - fee, self.position - amount
        if cash < 0 or position < 0:
            raise ModelError(
                f"a {side.value} of {amount} at {price} would leave cash {cash} and position "
                f"{position}: spot accounts cannot go negative"
            )
        self.cash, self.position = cash, position
        self.fees += fee


def fill_market(
    account: Account,
    side: OrderSide,
    amount: Decimal,
    price: Decimal,
    rate: Decimal,
    market: Market,
    round_amount: Callable[[Decimal], Decimal] | None = None,
) -> tuple[Decimal, Decimal]:
    """Fill a market order of ``amount`` at ``price`` (already slipped and rounded) paying
    ``rate``; return ``(filled amount, fee)``, the amount 0 when nothing could fill.

    A buy costing more than the cash fills what the cash pays for, like the paper exchange.
    """
    rnd = round_amount or market.round_amount
    if side is OrderSide.BUY and amount * price * (_ONE + rate) > account.cash:
        amount = rnd(account.cash / (price * (_ONE + rate)))
        while amount > 0 and amount * price * (_ONE + rate) > account.cash:
            amount = rnd(amount - amount / Decimal(1_000_000))
    elif side is OrderSide.SELL:
        amount = min(amount, account.position)
    if amount <= 0:
        return _ZERO, _ZERO
    fee = amount * price * rate
    account.apply(side, amount, price, fee)
    return amount, fee


@dataclass(frozen=True, slots=True)
class Trade:
    """A round trip: from a flat position to the next flat position (or the end, ``open``).

    ``pnl`` is what the round trip earned net of every fee paid in it (quote currency);
    ``cost`` what its buys cost including fees; ``return_`` is ``pnl / cost``. An open trade
    is valued at the last close and counts in no trade statistic.
    """

    entry_time: int
    exit_time: int | None
    entry_price: Decimal
    exit_price: Decimal | None
    amount: Decimal
    cost: Decimal
    proceeds: Decimal
    fees: Decimal
    pnl: Decimal
    fills: int
    open: bool = False

    @property
    def return_(self) -> Decimal:
        return self.pnl / self.cost if self.cost else _ZERO


def round_trips(fills: Sequence[Fill], last_price: Decimal | None = None) -> list[Trade]:
    """Group ``fills`` (oldest first, one symbol, spot) into round trips.

    A trade opens with a buy from flat and closes when the position is back to zero. Prices
    are volume-weighted: ``entry_price`` over the buys, ``exit_price`` over the sells. A trade
    still open is valued at ``last_price`` (when given) and marked ``open``.
    """
    rows = [(f.time, f.side is OrderSide.BUY, f.amount, f.price, f.fee) for f in fills]
    return trips_of_rows(rows, last_price)


FillRow = tuple[int, bool, Decimal, Decimal, Decimal]
"""A fill as ``(time, is_buy, amount, price, fee)``."""


def trips_of_rows(rows: Sequence[FillRow], last_price: Decimal | None = None) -> list[Trade]:
    """:func:`round_trips` over fills given as :data:`FillRow` tuples."""
    trades: list[Trade] = []
    position = _ZERO
    start = 0
    for index, (_, buy, amount, _, _) in enumerate(rows):
        position = position + amount if buy else position - amount
        if position == 0:
            trades.append(_trade(rows[start : index + 1], None))
            start = index + 1
    if start < len(rows):
        trades.append(_trade(rows[start:], last_price))
    return trades


def _trade(group: Sequence[FillRow], last_price: Decimal | None) -> Trade:
    bought = sold = spent = earned = fees = buy_fees = _ZERO
    for _, buy, amount, price, fee in group:
        fees += fee
        if buy:
            bought += amount
            spent += amount * price
            buy_fees += fee
        else:
            sold += amount
            earned += amount * price
    held = bought - sold
    open_ = held != 0
    value = held * last_price if (open_ and last_price is not None) else _ZERO
    return Trade(
        entry_time=group[0][0],
        exit_time=None if open_ else group[-1][0],
        entry_price=spent / bought if bought else _ZERO,
        exit_price=earned / sold if sold else None,
        amount=bought,
        cost=spent + buy_fees,
        proceeds=earned,
        fees=fees,
        pnl=earned + value - spent - fees,
        fills=len(group),
        open=open_,
    )


def closed_trade_figures(
    rows: Sequence[FillRow],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The pnl and the cost (buys with their fees) of every closed round trip, as floats.

    What :func:`trips_of_rows` gives for the closed trades, without building them: the
    metrics need only these two numbers a trade.
    """
    ends: list[int] = []
    position = _ZERO
    for index, row in enumerate(rows):
        position = position + row[2] if row[1] else position - row[2]
        if not position:
            ends.append(index)
    if not ends:
        return np.empty(0), np.empty(0)
    used = ends[-1] + 1
    buy = np.fromiter((row[1] for row in rows[:used]), np.bool_, used)
    value = np.fromiter((float(row[2] * row[3]) for row in rows[:used]), np.float64, used)
    fee = np.fromiter((float(row[4]) for row in rows[:used]), np.float64, used)
    flow = np.where(buy, -value, value) - fee
    cost = np.where(buy, value + fee, 0.0)
    starts = np.concatenate(([0], np.asarray(ends[:-1], dtype=np.int64) + 1))
    return np.add.reduceat(flow, starts), np.add.reduceat(cost, starts)
