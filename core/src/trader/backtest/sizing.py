"""Sizing: from a strategy's target position to a quantity, and from a quantity to orders.

The decision → target quantity → orders path of backtests, paper and live trading alike. All
money here is :class:`~decimal.Decimal`.

A target is a fraction of the assignment's allocation in [-1, 1]. This is a spot engine: a
negative target means *flat* (sell what is held, never go short); margin is not supported.
How big "1" is depends on the sizing mode:

* ``FRACTION_OF_EQUITY``: ``value`` × equity (cash + position × price) worth of base currency;
* ``FIXED_QUOTE``: ``value`` quote currency worth of base currency;
* ``FIXED_BASE``: ``value`` units of base currency.

With ``whole_units`` the quantity is rounded down to a whole number of base units; it is
always rounded down to the market's amount precision. A buy is capped at what the free cash
pays for including the taker fee (and slippage), so it is never rejected for funds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from enum import Enum
from functools import partial

from trader.errors import ModelError
from trader.model import Market, Order, OrderIntent, OrderSide, OrderType
from trader.model.market import Precision, PrecisionMode
from trader.model.order import client_order_id

__all__ = [
    "TARGET_PURPOSE",
    "Rounder",
    "Sizing",
    "SizingMode",
    "amount_rounder",
    "intent_order",
    "intent_purpose",
    "order_for_delta",
    "plan_delta",
    "price_rounder",
    "target_quantity",
]

_ZERO = Decimal(0)
_ONE = Decimal(1)
#: The purpose (in the client order id) of the market order that moves a position to a target.
TARGET_PURPOSE = "target"
_FRACTIONS = {1.0: _ONE, 0.5: Decimal("0.5")}


class SizingMode(str, Enum):
    """What a target of 1 means (see the module docstring)."""

    FRACTION_OF_EQUITY = "fraction_of_equity"
    FIXED_QUOTE = "fixed_quote"
    FIXED_BASE = "fixed_base"


@dataclass(frozen=True, slots=True)
class Sizing:
    """How targets become quantities: ``mode`` and its ``value``, optionally whole units."""

    mode: SizingMode = SizingMode.FRACTION_OF_EQUITY
    value: Decimal = _ONE
    whole_units: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", SizingMode(self.mode))
        value = Decimal(self.value)
        if not value.is_finite() or value <= 0:
            raise ModelError(f"sizing value must be a finite number above zero, not {value}")
        if self.mode is SizingMode.FRACTION_OF_EQUITY and value > 1:
            raise ModelError(
                f"sizing value {value} is above 1: a fraction of equity above 1 needs margin, "
                "which this spot engine does not have"
            )
        object.__setattr__(self, "value", value)


Rounder = Callable[[Decimal], Decimal]


def _rounder(precision: Precision, rounding: str) -> Rounder:
    if precision.mode is PrecisionMode.DECIMALS:
        quantum = Decimal(1).scaleb(-int(precision.value))
        # a partial of the C method: no Python frame per call
        return partial(Decimal.quantize, exp=quantum, rounding=rounding)
    down = rounding == ROUND_DOWN

    def general(value: Decimal) -> Decimal:
        return precision.round(value, down=down)

    return general


def amount_rounder(market: Market) -> Rounder:
    """A function equal to ``market.round_amount`` (towards zero), faster for decimal places."""
    return _rounder(market.amount_precision, ROUND_DOWN)


def price_rounder(market: Market) -> Rounder:
    """A function equal to ``market.round_price`` (half-even), faster for decimal places."""
    return _rounder(market.price_precision, ROUND_HALF_EVEN)


def target_quantity(
    target: float,
    equity: Decimal,
    price: Decimal,
    sizing: Sizing,
    market: Market,
    round_amount: Rounder | None = None,
) -> Decimal:
    """The base quantity a ``target`` asks to hold at ``price`` (>= 0: spot, negative is flat).

    Rounded down to whole units when asked, and always down to the market's amount precision.
    """
    if target <= 0 or price <= 0:
        return _ZERO
    fraction = _FRACTIONS.get(target)
    if fraction is None:
        fraction = Decimal(repr(float(target)))
    if sizing.mode is SizingMode.FRACTION_OF_EQUITY:
        quantity = fraction * sizing.value * max(equity, _ZERO) / price
    elif sizing.mode is SizingMode.FIXED_QUOTE:
        quantity = fraction * sizing.value / price
    else:
        quantity = fraction * sizing.value
    if sizing.whole_units:
        quantity = quantity.to_integral_value(rounding=ROUND_FLOOR)
    return (round_amount or market.round_amount)(quantity)


def plan_delta(
    desired: Decimal,
    position: Decimal,
    cash: Decimal,
    reference: Decimal,
    taker_fee: Decimal,
    market: Market,
    whole_units: bool = False,
    round_amount: Rounder | None = None,
) -> Decimal:
    """The signed base amount to trade to move ``position`` to ``desired``.

    A buy is capped at what ``cash`` pays for at ``reference`` (the price the simulated exchange
    reserves at, slippage included) plus ``taker_fee``; a sell at the ``position`` held.
    Returns 0 when nothing tradeable remains after rounding.
    """
    rnd = round_amount or market.round_amount
    delta = desired - position
    if delta > 0:
        if reference <= 0:
            return _ZERO
        wanted = rnd(delta)
        if wanted * reference * (_ONE + taker_fee) <= cash:
            return wanted  # the cash covers it: the common case, no division
        affordable = cash / (reference * (_ONE + taker_fee))
        if whole_units:
            affordable = affordable.to_integral_value(rounding=ROUND_FLOOR)
        affordable = rnd(affordable)
        while affordable > 0 and affordable * reference * (_ONE + taker_fee) > cash:
            step = _ONE if whole_units else affordable / Decimal(1_000_000)
            affordable = rnd(affordable - step)
        return min(wanted, affordable)
    if delta < 0:
        return -rnd(min(-delta, position))
    return _ZERO


def order_for_delta(
    delta: Decimal, assignment: str, decision_time: int, market: Market, exchange: str
) -> Order:
    """The market order that trades ``delta`` (signed, non-zero) for a target decided at
    ``decision_time``; its client order id is ``client_order_id(assignment, time, "target")``."""
    if delta == 0:
        raise ModelError("order_for_delta needs a non-zero amount")
    return Order(
        client_order_id(assignment, decision_time, TARGET_PURPOSE),
        exchange,
        market.symbol,
        OrderSide.BUY if delta > 0 else OrderSide.SELL,
        OrderType.MARKET,
        abs(delta),
        assignment=assignment,
    )


def intent_purpose(index: int, intent: OrderIntent) -> str:
    """The purpose of the ``index``-th explicit order of a decision: ``order-N`` (``-tag``)."""
    return f"order-{index}-{intent.tag}" if intent.tag else f"order-{index}"


def intent_order(
    intent: OrderIntent,
    index: int,
    assignment: str,
    decision_time: int,
    market: Market,
    exchange: str,
) -> Order | None:
    """An explicit order of a strategy as an :class:`Order` rounded to the market's precision.

    Returns ``None`` when the amount rounds to nothing.
    """
    amount = market.round_amount(Decimal(repr(float(intent.amount))))
    if amount <= 0:
        return None
    price = market.round_price(Decimal(repr(float(intent.price)))) if intent.price else None
    stop = (
        market.round_price(Decimal(repr(float(intent.stop_price)))) if intent.stop_price else None
    )
    return Order(
        client_order_id(assignment, decision_time, intent_purpose(index, intent)),
        exchange,
        market.symbol,
        intent.side,
        intent.type,
        amount,
        price=price,
        stop_price=stop,
        assignment=assignment,
    )
