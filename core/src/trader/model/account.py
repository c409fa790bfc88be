"""Balances, positions, strategy decisions and system events."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from trader.errors import ModelError
from trader.model.market import parse_symbol
from trader.model.order import Order, OrderIntent


@dataclass(frozen=True, slots=True)
class Balance:
    """Holdings of one currency in one account: ``total = free + used``."""

    currency: str
    total: Decimal
    free: Decimal

    def __post_init__(self) -> None:
        if self.free > self.total:
            raise ModelError(f"{self.currency}: free {self.free} exceeds total {self.total}")

    @property
    def used(self) -> Decimal:
        """The part reserved by open orders."""
        return self.total - self.free


@dataclass(frozen=True, slots=True)
class Position:
    """A net holding in one market: signed base amount (negative is short), average entry price
    and profit already realised, in quote currency."""

    symbol: str
    amount: Decimal
    average_price: Decimal
    realized_pnl: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        parse_symbol(self.symbol)

    def value(self, price: Decimal) -> Decimal:
        """The position's worth at ``price``, in quote currency."""
        return self.amount * price

    def unrealized_pnl(self, price: Decimal) -> Decimal:
        return self.amount * (price - self.average_price)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a strategy decided on one candle for one assignment.

    Either a ``target`` position, a fraction of the assignment's allocation in [-1, 1] (0 is
    flat, 1 all in long, -1 all in short), or explicit ``orders``, or neither (hold).
    """

    assignment: str
    time: int
    target: float | None = None
    orders: tuple[OrderIntent, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        if self.target is not None:
            if not math.isfinite(self.target) or not -1.0 <= self.target <= 1.0:
                raise ModelError(f"target position must be within [-1, 1], not {self.target}")
            if self.orders:
                raise ModelError("a decision gives a target position or orders, not both")
        object.__setattr__(self, "orders", tuple(self.orders))

    @property
    def is_hold(self) -> bool:
        return self.target is None and not self.orders


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """What a risk plugin sees when asked to veto an order (hook ``check_order``)."""

    order: Order
    account: str
    balances: tuple[Balance, ...] = ()
    positions: tuple[Position, ...] = ()
    price: Decimal | None = None
    """The latest known market price, when there is one."""


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened which plugins may act on (hook ``on_event``).

    ``kind`` is dotted, such as ``order.filled``, ``strategy.error``, ``report.daily``;
    ``data`` holds plain values only (it crosses process boundaries) and never secrets.
    """

    kind: str
    time: int
    data: dict[str, Any] = field(default_factory=dict)
