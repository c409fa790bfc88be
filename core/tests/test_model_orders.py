from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.errors import ModelError
from trader.model import (
    MAX_TIME_MS,
    Balance,
    Candle,
    Decision,
    Market,
    Order,
    OrderIntent,
    Precision,
    PrecisionMode,
    client_order_id,
    client_order_number,
    parse_symbol,
)


@given(st.text(min_size=1), st.integers(min_value=0, max_value=2**62), st.text(min_size=1))
def test_client_order_id_is_deterministic_and_exchange_safe(
    assignment: str, time: int, purpose: str
) -> None:
    first = client_order_id(assignment, time, purpose)
    assert first == client_order_id(assignment, time, purpose)
    assert len(first) == 26 and first.isalnum() and first == first.lower()
    assert 0 < client_order_number(first) < 2**45


def test_client_order_id_differs_when_any_cause_differs() -> None:
    base = client_order_id("a1", 1_700_000_000_000, "entry")
    assert base != client_order_id("a2", 1_700_000_000_000, "entry")
    assert base != client_order_id("a1", 1_700_000_000_001, "entry")
    assert base != client_order_id("a1", 1_700_000_000_000, "exit")
    # the separator keeps field boundaries: ("a", "1x") is not ("a1", "x")
    assert client_order_id("a", 1, "1x") != client_order_id("a1", 1, "x")


@pytest.mark.parametrize(
    ("mode", "value", "given_", "expected", "down"),
    [
        (PrecisionMode.SIGNIFICANT, 5, "31234.56", "31235", False),
        (PrecisionMode.SIGNIFICANT, 5, "0.000123456", "0.00012346", False),
        (PrecisionMode.DECIMALS, 2, "1.005", "1.00", False),  # half-even
        (PrecisionMode.DECIMALS, 2, "1.015", "1.02", False),
        (PrecisionMode.DECIMALS, 4, "0.12349", "0.1234", True),
        (PrecisionMode.TICK, "0.5", "10.74", "10.5", False),
        (PrecisionMode.TICK, "0.5", "10.76", "11", False),
        (PrecisionMode.TICK, "0.001", "1.2349", "1.234", True),
    ],
)
def test_precision_rounding(
    mode: PrecisionMode, value: object, given_: str, expected: str, down: bool
) -> None:
    precision = Precision(mode, Decimal(str(value)))
    assert precision.round(Decimal(given_), down=down) == Decimal(expected)


@given(st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(10**6), places=8))
def test_amount_rounding_never_exceeds_the_sized_amount(amount: Decimal) -> None:
    market = Market(
        "BTC/USD",
        Precision(PrecisionMode.SIGNIFICANT, Decimal(5)),
        Precision(PrecisionMode.DECIMALS, Decimal(4)),
    )
    assert market.round_amount(amount) <= amount
    assert amount - market.round_amount(amount) < Decimal("0.0001")


def test_market_minimums_and_symbol_parts() -> None:
    market = Market(
        "ETH/USDT",
        Precision(PrecisionMode.TICK, Decimal("0.01")),
        Precision(PrecisionMode.DECIMALS, Decimal(3)),
        min_amount=Decimal("0.01"),
        min_cost=Decimal(10),
    )
    assert (market.base, market.quote) == ("ETH", "USDT")
    assert market.check_order_size(Decimal("0.001"), Decimal(2000)) is not None
    assert "below the minimum 10 USDT" in (
        market.check_order_size(Decimal("0.01"), Decimal(100)) or ""
    )
    assert market.check_order_size(Decimal("0.01"), Decimal(2000)) is None


@pytest.mark.parametrize(
    "symbol", ["btc/usd", "BTCUSD", "tBTCUSD", "BTC/", "/USD", "BTC/USD/EUR", ""]
)
def test_bad_symbols_are_rejected(symbol: str) -> None:
    with pytest.raises(ModelError, match="invalid symbol"):
        parse_symbol(symbol)


def test_order_validation_messages() -> None:
    common = {"client_order_id": "t1", "exchange": "paper", "symbol": "BTC/USD", "side": "buy"}
    with pytest.raises(ModelError, match="limit order needs a price"):
        Order(**common, type="limit", amount=Decimal(1))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="stop order needs a stop_price"):
        Order(**common, type="stop", amount=Decimal(1))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="above zero"):
        Order(**common, type="market", amount=Decimal(0))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="invalid order side 'hold'"):
        Order(**{**common, "side": "hold"}, type="market", amount=Decimal(1))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="post_only applies to limit orders only"):
        Order(**common, type="market", amount=Decimal(1), post_only=True)  # type: ignore[arg-type]
    order = Order(**common, type="market", amount=Decimal(2))  # type: ignore[arg-type]
    assert order.remaining == Decimal(2)
    filled = order.with_status("filled", filled=Decimal(2))  # type: ignore[arg-type]
    assert filled.status.is_final and filled.remaining == 0


def test_decision_rules() -> None:
    assert Decision("a", 0).is_hold
    with pytest.raises(ModelError, match=r"within \[-1, 1\]"):
        Decision("a", 0, target=1.5)
    with pytest.raises(ModelError, match=r"within \[-1, 1\]"):
        Decision("a", 0, target=float("nan"))
    with pytest.raises(ModelError, match="not both"):
        Decision("a", 0, target=0.5, orders=(OrderIntent("buy", "market", 1.0),))  # type: ignore[arg-type]


def test_candle_problems_are_named() -> None:
    assert Candle(0, 1, 2, 0.5, 1.5, 1).problem() is None
    assert "low 3 is above high 2" in (Candle(0, 1, 2, 3, 1.5, 1).problem() or "")
    assert "open 5 is outside" in (Candle(0, 5, 2, 1, 1.5, 1).problem() or "")
    assert "volume -1" in (Candle(0, 1, 2, 0.5, 1.5, -1).problem() or "")
    assert "not a finite price" in (Candle(0, float("inf"), 2, 0.5, 1.5, 1).problem() or "")
    with pytest.raises(ModelError, match="before 1970"):
        Candle(-1, 1, 2, 0.5, 1.5, 1).validated()


def test_candle_times_end_with_the_year_9999() -> None:
    assert MAX_TIME_MS == 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
    assert Candle(MAX_TIME_MS, 1, 2, 0.5, 1.5, 1).problem() is None
    for time in (MAX_TIME_MS + 1, 9_007_199_254_740_960_000, 10**19):
        with pytest.raises(ModelError, match="after the year 9999"):
            Candle(time, 1, 2, 0.5, 1.5, 1).validated()


def test_balance_used_is_total_minus_free() -> None:
    assert Balance("USD", Decimal(10), Decimal(4)).used == Decimal(6)
    with pytest.raises(ModelError, match="exceeds total"):
        Balance("USD", Decimal(1), Decimal(2))
