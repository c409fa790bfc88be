"""The domain model: markets, timeframes, candles, orders, fills, balances, positions, decisions.

Times are integer milliseconds since the epoch, UTC. Symbols are unified ``BASE/QUOTE``. Money
quantities on orders, fills and balances are :class:`~decimal.Decimal`; candles use floats (they
feed the hot loops). Every type round-trips through :func:`pack` / :func:`unpack` (msgpack).
"""

from trader.model.account import Balance, Decision, Event, OrderCheck, Position
from trader.model.candle import MAX_TIME_MS, Candle, CandleArrays, SeriesKey, candle_problem
from trader.model.codec import MODEL_TYPES, pack, unpack
from trader.model.market import Market, Precision, PrecisionMode, parse_symbol
from trader.model.order import (
    Fill,
    Order,
    OrderIntent,
    OrderSide,
    OrderStatus,
    OrderType,
    client_order_id,
    client_order_number,
)
from trader.model.timeframe import DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS, Timeframe, parse_timeframe

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "MAX_TIME_MS",
    "MINUTE_MS",
    "MODEL_TYPES",
    "WEEK_MS",
    "Balance",
    "Candle",
    "CandleArrays",
    "Decision",
    "Event",
    "Fill",
    "Market",
    "Order",
    "OrderCheck",
    "OrderIntent",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "Position",
    "Precision",
    "PrecisionMode",
    "SeriesKey",
    "Timeframe",
    "candle_problem",
    "client_order_id",
    "client_order_number",
    "pack",
    "parse_symbol",
    "parse_timeframe",
    "unpack",
]
