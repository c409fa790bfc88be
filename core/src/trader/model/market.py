"""Markets: unified ``BASE/QUOTE`` symbols, precision and minimum sizes.

Exchange-specific ids (``tBTCUSD``) never leave an adapter; everything past it speaks unified
symbols (the ccxt convention). Prices and amounts are rounded to the market's precision before
they leave the process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from enum import Enum

from trader.errors import ModelError

_SYMBOL = re.compile(r"^([A-Z0-9][A-Z0-9._-]{0,31})/([A-Z0-9][A-Z0-9._-]{0,31})$")


def parse_symbol(symbol: str) -> tuple[str, str]:
    """Split a unified symbol ``"BTC/USD"`` into ``("BTC", "USD")``.

    Raises :class:`~trader.errors.ModelError` for anything else, including lower case and
    exchange ids such as ``tBTCUSD``.
    """
    match = _SYMBOL.match(symbol) if isinstance(symbol, str) else None
    if match is None:
        raise ModelError(
            f"invalid symbol {symbol!r}: expected BASE/QUOTE in upper case, such as BTC/USD"
        )
    return match.group(1), match.group(2)


class PrecisionMode(str, Enum):
    """How a market states its precision (the three modes ccxt knows)."""

    DECIMALS = "decimals"
    """``value`` is a count of digits after the decimal point."""
    SIGNIFICANT = "significant"
    """``value`` is a count of significant digits (Bitfinex prices: 5)."""
    TICK = "tick"
    """``value`` is the step every quantity must be a multiple of."""


@dataclass(frozen=True, slots=True)
class Precision:
    """A rounding rule for prices or amounts."""

    mode: PrecisionMode
    value: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.mode, PrecisionMode):
            object.__setattr__(self, "mode", PrecisionMode(self.mode))
        if not isinstance(self.value, Decimal):
            object.__setattr__(self, "value", Decimal(str(self.value)))
        if not self.value.is_finite() or (self.value <= 0 and self.mode is PrecisionMode.TICK):
            raise ModelError(f"invalid precision {self.value} for mode {self.mode.value}")
        if self.mode is not PrecisionMode.TICK and (
            self.value < 0 or self.value != self.value.to_integral_value()
        ):
            raise ModelError(f"{self.mode.value} precision must be a whole number >= 0")

    def round(self, value: Decimal, *, down: bool = False) -> Decimal:
        """Round ``value`` to this precision: half-even, or towards zero when ``down``."""
        rounding = ROUND_DOWN if down else ROUND_HALF_EVEN
        if value == 0:
            return Decimal(0)
        if self.mode is PrecisionMode.DECIMALS:
            return value.quantize(Decimal(1).scaleb(-int(self.value)), rounding=rounding)
        if self.mode is PrecisionMode.TICK:
            steps = (value / self.value).quantize(Decimal(1), rounding=rounding)
            return (steps * self.value).normalize()
        digits = int(self.value)
        exponent = value.adjusted() - digits + 1
        return value.quantize(Decimal(1).scaleb(exponent), rounding=rounding)


@dataclass(frozen=True, slots=True)
class Market:
    """A tradable pair on one exchange, as the engine needs to know it.

    ``min_amount`` is the smallest order in base currency, ``min_cost`` the smallest in quote
    currency (price × amount); either may be ``None`` when the exchange states none.
    """

    symbol: str
    price_precision: Precision
    amount_precision: Precision
    min_amount: Decimal | None = None
    min_cost: Decimal | None = None
    active: bool = True

    def __post_init__(self) -> None:
        parse_symbol(self.symbol)

    @property
    def base(self) -> str:
        return parse_symbol(self.symbol)[0]

    @property
    def quote(self) -> str:
        return parse_symbol(self.symbol)[1]

    def round_price(self, price: Decimal) -> Decimal:
        """Round a price to the market's precision (half-even)."""
        return self.price_precision.round(price)

    def round_amount(self, amount: Decimal) -> Decimal:
        """Round an amount towards zero, so rounding never spends more than was sized."""
        return self.amount_precision.round(amount, down=True)

    def check_order_size(self, amount: Decimal, price: Decimal | None) -> str | None:
        """Return why an order of ``amount`` at ``price`` is too small, or ``None`` if it is not."""
        if self.min_amount is not None and abs(amount) < self.min_amount:
            return f"amount {abs(amount)} is below the minimum {self.min_amount} for {self.symbol}"
        if self.min_cost is not None and price is not None and abs(amount) * price < self.min_cost:
            return (
                f"order value {abs(amount) * price} is below the minimum {self.min_cost} "
                f"{self.quote} for {self.symbol}"
            )
        return None
