"""Orders, their deterministic client order ids, and fills."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import Enum

from trader.errors import ModelError
from trader.model.market import parse_symbol


class OrderSide(str, Enum):
    BUY = "buy"
    SELL = "sell"


class OrderType(str, Enum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    """A market order that triggers when the price reaches ``stop_price``."""


class OrderStatus(str, Enum):
    """The states of an order (ARCHITECTURE §7); the last four are final."""

    CREATED = "created"
    SUBMITTED = "submitted"
    ACKNOWLEDGED = "acknowledged"
    PARTIALLY_FILLED = "partially_filled"
    RECONCILING = "reconciling"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


def client_order_id(assignment: str, decision_time: int, purpose: str) -> str:
    """Derive the client order id of an order from what caused it.

    The same assignment, decision time (ms) and purpose (``"entry"``, ``"exit"``,
    ``"rebalance"``...) always give the same id, so a retry after a crash or a lost reply can
    never create a second order: the exchange (or our reconciliation) recognises the id. The id
    is 26 lower-case letters and digits, accepted by every exchange we know.
    """
    if not assignment or not purpose:
        raise ModelError("client_order_id needs a non-empty assignment and purpose")
    digest = _digest(assignment, decision_time, purpose)
    return "t" + base64.b32encode(digest).decode("ascii").lower().rstrip("=")[:25]


def client_order_number(client_id: str, bits: int = 45) -> int:
    """Map a client order id to a positive integer of at most ``bits`` bits.

    For exchanges whose client ids are integers (Bitfinex ``cid``); deterministic like the id.
    """
    digest = hashlib.blake2b(client_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (1 << bits) or 1


def _digest(assignment: str, decision_time: int, purpose: str) -> bytes:
    message = f"{assignment}\x1f{int(decision_time)}\x1f{purpose}".encode()
    return hashlib.blake2b(message, digest_size=20, person=b"trader-order-id").digest()


@dataclass(frozen=True, slots=True)
class Order:
    """An order, from the request the engine makes to the state the exchange reports.

    Amounts are positive base-currency quantities; ``side`` gives the direction. ``price`` is
    required for limit orders and ``stop_price`` for stop orders. Quantities are
    :class:`~decimal.Decimal`, rounded to the market's precision before submission.
    """

    client_order_id: str
    exchange: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    post_only: bool = False
    status: OrderStatus = OrderStatus.CREATED
    filled: Decimal = Decimal(0)
    average_price: Decimal | None = None
    exchange_order_id: str | None = None
    created_at: int = 0
    updated_at: int = 0
    assignment: str | None = None

    def __post_init__(self) -> None:
        parse_symbol(self.symbol)
        kinds: dict[str, type[Enum]] = {"side": OrderSide, "type": OrderType, "status": OrderStatus}
        for name, kind in kinds.items():
            value = getattr(self, name)
            if not isinstance(value, kind):
                try:
                    object.__setattr__(self, name, kind(value))
                except ValueError:
                    allowed = ", ".join(m.value for m in kind)
                    raise ModelError(f"invalid order {name} {value!r}: one of {allowed}") from None
        if not self.client_order_id:
            raise ModelError("an order needs a client order id")
        if not self.amount.is_finite() or self.amount <= 0:
            raise ModelError(f"order amount must be a finite number above zero, not {self.amount}")
        if self.type is OrderType.LIMIT and self.price is None:
            raise ModelError("a limit order needs a price")
        if self.type is OrderType.STOP and self.stop_price is None:
            raise ModelError("a stop order needs a stop_price")
        if self.post_only and self.type is not OrderType.LIMIT:
            raise ModelError("post_only applies to limit orders only")
        for name in ("price", "stop_price"):
            value = getattr(self, name)
            if value is not None and (not value.is_finite() or value <= 0):
                raise ModelError(f"order {name} must be a finite number above zero, not {value}")
        if self.filled < 0 or self.filled > self.amount:
            raise ModelError(f"filled {self.filled} must be within 0..{self.amount}")

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled

    def with_status(self, status: OrderStatus, **changes: object) -> Order:
        """A copy in a new status, with other fields changed as given."""
        return replace(self, status=status, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of (part of) an order. ``fill_id`` is the exchange's trade id."""

    fill_id: str
    client_order_id: str
    exchange: str
    symbol: str
    side: OrderSide
    amount: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    time: int
    maker: bool = False

    def __post_init__(self) -> None:
        parse_symbol(self.symbol)
        if not isinstance(self.side, OrderSide):
            object.__setattr__(self, "side", OrderSide(self.side))
        if self.amount <= 0 or self.price <= 0:
            raise ModelError("a fill needs an amount and a price above zero")

    @property
    def cost(self) -> Decimal:
        """Amount × price, in quote currency, before fees."""
        return self.amount * self.price


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An explicit order a strategy asks for, before sizing, rounding and risk checks.

    ``amount`` is in base currency; ``price`` is the limit price and ``stop_price`` the trigger.
    """

    side: OrderSide
    type: OrderType
    amount: float
    price: float | None = None
    stop_price: float | None = None
    tag: str = field(default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "side", OrderSide(self.side))
        object.__setattr__(self, "type", OrderType(self.type))
        if not self.amount > 0:
            raise ModelError(f"order amount must be above zero, not {self.amount}")
