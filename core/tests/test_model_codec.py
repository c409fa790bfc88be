import contextlib
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.errors import ModelError
from trader.model import (
    Balance,
    Candle,
    CandleArrays,
    Decision,
    Event,
    Fill,
    Market,
    Order,
    OrderCheck,
    OrderIntent,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Precision,
    PrecisionMode,
    SeriesKey,
    Timeframe,
    client_order_id,
    pack,
    unpack,
)

symbols = st.sampled_from(["BTC/USD", "ETH/USDT", "XRP/BTC", "TEST.X/EUR"])
finite = st.floats(min_value=1e-8, max_value=1e9, allow_nan=False, allow_infinity=False)
amounts = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(10**9), places=8)
times = st.integers(min_value=0, max_value=2**53)


@st.composite
def candles(draw: st.DrawFn) -> Candle:
    low, high = sorted((draw(finite), draw(finite)))
    open_ = draw(st.floats(min_value=low, max_value=high))
    close = draw(st.floats(min_value=low, max_value=high))
    return Candle(draw(times), open_, high, low, close, draw(finite), draw(st.booleans()))


@st.composite
def orders(draw: st.DrawFn) -> Order:
    kind = draw(st.sampled_from(list(OrderType)))
    amount = draw(amounts)
    return Order(
        client_order_id=client_order_id(draw(st.text(min_size=1)), draw(times), "entry"),
        exchange=draw(st.sampled_from(["paper", "bitfinex"])),
        symbol=draw(symbols),
        side=draw(st.sampled_from(list(OrderSide))),
        type=kind,
        amount=amount,
        price=draw(amounts) if kind is OrderType.LIMIT else None,
        stop_price=draw(amounts) if kind is OrderType.STOP else None,
        post_only=kind is OrderType.LIMIT and draw(st.booleans()),
        status=draw(st.sampled_from(list(OrderStatus))),
        filled=amount / 2,
        created_at=draw(times),
        assignment=draw(st.none() | st.text()),
    )


fills = st.builds(
    Fill,
    fill_id=st.text(min_size=1),
    client_order_id=st.text(min_size=1),
    exchange=st.just("paper"),
    symbol=symbols,
    side=st.sampled_from(list(OrderSide)),
    amount=amounts,
    price=amounts,
    fee=amounts,
    fee_currency=st.sampled_from(["USD", "BTC"]),
    time=times,
    maker=st.booleans(),
)
markets = st.builds(
    Market,
    symbol=symbols,
    price_precision=st.builds(
        Precision, mode=st.just(PrecisionMode.SIGNIFICANT), value=st.integers(1, 8).map(Decimal)
    ),
    amount_precision=st.builds(
        Precision, mode=st.just(PrecisionMode.TICK), value=st.just(Decimal("0.0001"))
    ),
    min_amount=st.none() | amounts,
    min_cost=st.none() | amounts,
    active=st.booleans(),
)
intents = st.builds(
    OrderIntent,
    side=st.sampled_from(list(OrderSide)),
    type=st.just(OrderType.MARKET),
    amount=finite,
    tag=st.text(),
)
decisions = st.builds(
    Decision,
    assignment=st.text(min_size=1),
    time=times,
    target=st.none() | st.floats(min_value=-1, max_value=1),
    note=st.text(),
) | st.builds(
    Decision,
    assignment=st.text(min_size=1),
    time=times,
    orders=st.lists(intents, max_size=3).map(tuple),
)
balances = st.builds(
    lambda c, total, part: Balance(c, total, total * part),
    st.sampled_from(["USD", "BTC"]),
    amounts,
    st.sampled_from([Decimal(0), Decimal("0.5"), Decimal(1)]),
)
positions = st.builds(
    Position, symbol=symbols, amount=amounts, average_price=amounts, realized_pnl=amounts
)
series_keys = st.builds(
    SeriesKey,
    exchange=st.sampled_from(["paper", "bitfinex", "my-exchange_2"]),
    symbol=symbols,
    timeframe=st.sampled_from(["1m", "1h", "1d", "1w", "1M"]).map(Timeframe.parse),
)
events = st.builds(
    Event,
    kind=st.sampled_from(["order.filled", "strategy.error"]),
    time=times,
    data=st.dictionaries(st.text(), st.integers() | st.text() | st.floats(allow_nan=False)),
)
checks = st.builds(
    OrderCheck,
    order=orders(),
    account=st.text(min_size=1),
    balances=st.lists(balances, max_size=2).map(tuple),
    positions=st.lists(positions, max_size=2).map(tuple),
    price=st.none() | amounts,
)

any_model = st.one_of(
    candles(), orders(), fills, markets, decisions, balances, positions, series_keys, events, checks
)


@given(any_model)
def test_every_model_type_round_trips_through_msgpack(value: object) -> None:
    assert unpack(pack(value)) == value


@given(st.lists(candles(), max_size=50))
def test_candle_arrays_round_trip_exactly(items: list[Candle]) -> None:
    arrays = CandleArrays.from_candles(items)
    decoded = unpack(pack(arrays))
    assert isinstance(decoded, CandleArrays)
    assert decoded == arrays
    assert decoded.to_candles() == items


@given(st.lists(any_model, max_size=5), st.dictionaries(st.text(), any_model, max_size=3))
def test_models_nested_in_plain_data_round_trip(
    items: list[object], mapping: dict[str, object]
) -> None:
    assert unpack(pack({"items": items, "by_name": mapping})) == {
        "items": items,
        "by_name": mapping,
    }


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_model_error(data: bytes) -> None:
    # Any outcome but an exception other than ModelError is fine: a receiver must not crash.
    with contextlib.suppress(ModelError):
        unpack(data)


def test_unknown_model_type_is_a_model_error() -> None:
    import msgpack

    inner = msgpack.packb(["NoSuchType", [1, 2]])
    with pytest.raises(ModelError, match="unknown model type 'NoSuchType'"):
        unpack(msgpack.packb(msgpack.ExtType(2, inner)))


def test_wrong_field_count_is_a_model_error() -> None:
    import msgpack

    inner = msgpack.packb(["Candle", [1, 2.0]])
    with pytest.raises(ModelError, match="Candle has 7 fields"):
        unpack(msgpack.packb(msgpack.ExtType(2, inner)))


def test_candle_arrays_columns_have_expected_dtypes() -> None:
    arrays = CandleArrays.from_rows([(60_000, 1, 2, 0.5, 1.5, 10)])
    assert arrays.time.dtype == np.int64
    assert arrays.close.dtype == np.float64
    assert arrays.closed.tolist() == [True]
    with pytest.raises(ModelError, match="column open has 2 rows, not 1"):
        CandleArrays(np.array([1]), np.array([1.0, 2.0]), *(np.array([1.0]) for _ in range(4)))
