"""The backtest engine: a strategy instance over candle columns, with fills, fees and equity.

:func:`run_backtest` asks the strategy for its decisions on every candle (through the batch
path ``on_candles`` when the instance has one, else one ``on_candle`` call per candle), then
drives them through the decision → sizing → order → fill path of :mod:`trader.backtest.sizing`
and the simulated exchange. Between decisions nothing trades, so cash and position are
constant there and the equity curve (cash + position × close) is computed with NumPy.

Two fill paths give the same fills (a test checks it):

* the **fast path** (targets only, no volume cap): each target change is sized in decimals and
  filled by :func:`~trader.backtest.accounting.fill_market`, the paper exchange's market fill;
* the **exchange path** (explicit orders, a volume cap, or ``exact=True``): a
  :class:`~trader.paper.PaperEngine` fed the candles on which orders are decided or open.

A target is acted on when it changes (holding the same target does not rebalance), and once
the strategy gave it: an order decided on candle ``i`` fills at the open of ``i + 1``
(``NEXT_OPEN``) or at the close of ``i`` (``CLOSE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from trader.backtest.accounting import Account, fill_market
from trader.backtest.result import BacktestResult, FillRows
from trader.backtest.sizing import (
    TARGET_PURPOSE,
    Sizing,
    SizingMode,
    amount_rounder,
    intent_order,
    order_for_delta,
    plan_delta,
    price_rounder,
    target_quantity,
)
from trader.errors import DataError, ModelError, OrderRejected
from trader.interfaces import StrategyInstance
from trader.model import Candle, CandleArrays, Fill, Market, OrderIntent, OrderSide
from trader.model.market import PrecisionMode
from trader.model.order import client_order_id
from trader.paper import FillSettings, FillTiming, PaperEngine, SlippageMode

__all__ = [
    "BacktestSettings",
    "DecisionRows",
    "Decisions",
    "decide",
    "run_backtest",
    "run_decisions",
]

_ZERO = Decimal(0)
_ONE = Decimal(1)
_BPS = Decimal(10_000)
_EXCHANGE = "paper"
_BUY, _SELL = OrderSide.BUY, OrderSide.SELL
_FRACTIONS = {1.0: _ONE, 0.5: Decimal("0.5")}


class DecisionRows(Protocol):
    """Decisions in columns (the strategy runtimes' ``DecisionBatch``): ``target[i]`` is NaN
    where row ``i`` holds or gives orders; ``orders`` maps a row to its explicit orders."""

    @property
    def time(self) -> npt.NDArray[np.int64]: ...

    @property
    def target(self) -> npt.NDArray[np.float64]: ...

    @property
    def orders(self) -> Mapping[int, tuple[OrderIntent, ...]]: ...


@dataclass(frozen=True, slots=True)
class Decisions:
    """Decisions in columns, made by hand or by a vectorised strategy (see
    :class:`DecisionRows`): one ``time`` and ``target`` (NaN: hold) per candle."""

    time: npt.NDArray[np.int64]
    target: npt.NDArray[np.float64]
    orders: Mapping[int, tuple[OrderIntent, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BacktestSettings:
    """How a backtest runs: starting cash (quote currency), fills, sizing, the assignment
    name (it seeds the client order ids), the timeframe in ms (``None``: the smallest gap
    between candles), and ``exact`` to route every order through the paper exchange."""

    initial_cash: Decimal = Decimal(10_000)
    fills: FillSettings = field(default_factory=FillSettings)
    sizing: Sizing = field(default_factory=Sizing)
    assignment: str = "backtest"
    timeframe_ms: int | None = None
    exact: bool = False

    def __post_init__(self) -> None:
        cash = Decimal(self.initial_cash)
        if not cash.is_finite() or cash <= 0:
            raise ModelError(f"initial_cash must be above zero, not {cash}")
        object.__setattr__(self, "initial_cash", cash)
        if not self.assignment:
            raise ModelError("a backtest needs a non-empty assignment name")


def decide(
    strategy: StrategyInstance | Any, candles: CandleArrays, assignment: str
) -> DecisionRows:
    """The strategy's decision on every candle: one batch call when it has ``on_candles``."""
    batch = getattr(strategy, "on_candles", None)
    if callable(batch):
        rows: DecisionRows = batch(assignment, candles)
        return rows
    size = len(candles)
    target = np.full(size, np.nan)
    orders: dict[int, tuple[OrderIntent, ...]] = {}
    for row in range(size):
        decision = strategy.on_candle(assignment, candles.slice(max(0, row - 1999), row + 1))
        if decision.target is not None:
            target[row] = decision.target
        if decision.orders:
            orders[row] = tuple(decision.orders)
    return Decisions(candles.time, target, orders)


def run_backtest(
    strategy: StrategyInstance | Any,
    candles: CandleArrays,
    market: Market,
    settings: BacktestSettings | None = None,
) -> BacktestResult:
    """Backtest ``strategy`` (a loaded instance, fresh: it sees every candle once) on
    ``candles`` of ``market`` and return the fills, trades, equity curve and metrics."""
    settings = settings or BacktestSettings()
    rows = decide(strategy, candles, settings.assignment)
    return run_decisions(rows, candles, market, settings)


def run_decisions(
    rows: DecisionRows, candles: CandleArrays, market: Market, settings: BacktestSettings
) -> BacktestResult:
    """Backtest decisions already made (one row per candle of ``candles``)."""
    size = len(candles)
    if len(rows.time) != size or (size and not np.array_equal(rows.time, candles.time)):
        raise DataError(
            f"the decisions cover {len(rows.time)} candles, the backtest has {size}; decide on "
            "exactly the backtest's candles"
        )
    if size and bool(np.any(np.diff(candles.time) <= 0)):
        raise DataError("backtest candles must be in strictly increasing time order")
    timeframe_ms = settings.timeframe_ms
    if timeframe_ms is None:
        timeframe_ms = int(np.min(np.diff(candles.time))) if size > 1 else 60_000
    fills_settings = settings.fills
    if rows.orders or fills_settings.volume_fraction is not None or settings.exact:
        segments, fills = _exchange_path(rows, candles, market, settings, timeframe_ms)
    else:
        segments, fills = _fast_path(rows.target, candles, market, settings, timeframe_ms)
    starts = np.fromiter((segment[0] for segment in segments), np.int64, len(segments))
    counts = np.diff(np.append(starts, size))
    cash = np.repeat(
        np.fromiter((float(segment[1]) for segment in segments), np.float64, len(segments)),
        counts,
    )
    position = np.repeat(
        np.fromiter((float(segment[2]) for segment in segments), np.float64, len(segments)),
        counts,
    )
    equity = cash + position * candles.close
    return BacktestResult(
        candles=candles,
        market=market,
        settings=settings,
        timeframe_ms=timeframe_ms,
        equity=equity,
        cash=cash,
        position=position,
        fill_rows=fills,
        final_cash=segments[-1][1],
        final_position=segments[-1][2],
    )


# the fast path --------------------------------------------------------------------------------


def _changes(target: npt.NDArray[np.float64]) -> tuple[list[int], list[float]]:
    """The rows where the (spot-clipped) target changes, and the new targets."""
    rows = np.flatnonzero(~np.isnan(target))
    if not len(rows):
        return [], []
    values = np.maximum(target[rows], 0.0)
    keep = np.empty(len(rows), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return rows[keep].tolist(), values[keep].tolist()


def _fast_path(
    target: npt.NDArray[np.float64],
    candles: CandleArrays,
    market: Market,
    settings: BacktestSettings,
    timeframe_ms: int,
) -> tuple[list[tuple[int, Decimal, Decimal]], FillRows]:
    fs = settings.fills
    sizing = settings.sizing
    next_open = fs.timing is FillTiming.NEXT_OPEN
    rate = fs.taker_fee
    bps = fs.slippage / _BPS if fs.slippage_mode is SlippageMode.BPS else None
    use_range = fs.slippage_mode is SlippageMode.RANGE
    round_amount = amount_rounder(market)
    round_price = price_rounder(market)
    whole_units = sizing.whole_units
    check_size = market.min_amount is not None or market.min_cost is not None
    account = Account(settings.initial_cash)
    segments: list[tuple[int, Decimal, Decimal]] = [(0, account.cash, _ZERO)]
    raw: list[tuple[int, int, OrderSide, Decimal, Decimal, Decimal]] = []
    size = len(candles)
    times, opens, highs, lows, closes = (
        candles.time,
        candles.open,
        candles.high,
        candles.low,
        candles.close,
    )
    rows, values = _changes(target)
    at = np.asarray(rows, dtype=np.int64)
    fill_at = at + 1 if next_open else at
    kept = int(np.count_nonzero(fill_at < size))  # a decision on the last candle never fills
    at, fill_at, values = at[:kept], fill_at[:kept], values[:kept]
    # the few candles that matter, as Python floats and ints, fetched in one go
    decided_close = closes[at].tolist()
    fill_base = (opens if next_open else closes)[fill_at].tolist()
    decided_time = times[at].tolist()
    fill_time_of = times[fill_at].tolist()
    quick = (
        not use_range
        and market.amount_precision.mode is PrecisionMode.DECIMALS
        and market.price_precision.mode is PrecisionMode.DECIMALS
    )
    amount_step = Decimal(1).scaleb(-int(market.amount_precision.value))
    price_step = Decimal(1).scaleb(-int(market.price_precision.value))
    one_rate = _ONE + rate
    slip = _ONE + bps if bps is not None else _ONE
    mode, sizing_value = sizing.mode, sizing.value
    for k, value in enumerate(values):
        close = Decimal(repr(decided_close[k]))
        if quick:
            # sizing.target_quantity, plan_delta and accounting.fill_market inlined for the
            # common case (cash covers the order); anything else takes the shared functions
            cash, position = account.cash, account.position
            if value > 0:
                fraction = _FRACTIONS.get(value) or Decimal(repr(value))
                if mode is SizingMode.FRACTION_OF_EQUITY:
                    quantity = fraction * sizing_value * max(cash + position * close, _ZERO) / close
                elif mode is SizingMode.FIXED_QUOTE:
                    quantity = fraction * sizing_value / close
                else:
                    quantity = fraction * sizing_value
                if whole_units:
                    quantity = quantity.to_integral_value(rounding=ROUND_FLOOR)
                delta = quantity.quantize(amount_step, rounding=ROUND_DOWN) - position
            else:
                delta = -position
            base = Decimal(repr(fill_base[k]))
            if delta > 0:
                delta = delta.quantize(amount_step, rounding=ROUND_DOWN)
                if delta * (close * slip) * one_rate <= cash and not check_size:
                    price = (base + base * bps if bps is not None else base).quantize(
                        price_step, rounding=ROUND_HALF_EVEN
                    )
                    cost = delta * price
                    if price > 0 and cost * one_rate <= cash:
                        fee = cost * rate
                        account.cash = cash - cost - fee
                        account.position = position + delta
                        account.fees += fee
                        decided_at = decided_time[k]
                        fill_time = max(fill_time_of[k], decided_at + timeframe_ms)
                        raw.append((decided_at, fill_time, _BUY, delta, price, fee))
                        segments.append((int(fill_at[k]), account.cash, account.position))
                        continue
            elif delta < 0 and not check_size:
                amount = (-delta).quantize(amount_step, rounding=ROUND_DOWN)
                price = (base - base * bps if bps is not None else base).quantize(
                    price_step, rounding=ROUND_HALF_EVEN
                )
                if amount > 0 and price > 0:
                    cost = amount * price
                    fee = cost * rate
                    account.cash = cash + cost - fee
                    account.position = position - amount
                    account.fees += fee
                    decided_at = decided_time[k]
                    fill_time = max(fill_time_of[k], decided_at + timeframe_ms)
                    raw.append((decided_at, fill_time, _SELL, amount, price, fee))
                    segments.append((int(fill_at[k]), account.cash, account.position))
                    continue
            elif delta == 0:
                continue
        reference = close
        if bps is not None:
            reference = close * (_ONE + bps)
        elif use_range:
            row = int(at[k])
            reference = close + fs.slippage * (
                Decimal(repr(float(highs[row]))) - Decimal(repr(float(lows[row])))
            )
        desired = target_quantity(value, account.equity(close), close, sizing, market, round_amount)
        delta = plan_delta(
            desired,
            account.position,
            account.cash,
            reference,
            rate,
            market,
            whole_units,
            round_amount,
        )
        if delta == 0 or (check_size and market.check_order_size(abs(delta), close) is not None):
            continue
        side = OrderSide.BUY if delta > 0 else OrderSide.SELL
        base = Decimal(repr(fill_base[k]))
        if bps is not None:
            move = base * bps
        elif use_range:
            fill_row = int(fill_at[k])
            move = fs.slippage * (
                Decimal(repr(float(highs[fill_row]))) - Decimal(repr(float(lows[fill_row])))
            )
        else:
            move = _ZERO
        price = base + move if side is OrderSide.BUY else base - move
        rounded = round_price(price)
        price = rounded if rounded > 0 else price
        if price <= 0:
            continue
        amount, fee = fill_market(account, side, abs(delta), price, rate, market, round_amount)
        if amount <= 0:
            continue
        decided_at = decided_time[k]
        fill_time = max(fill_time_of[k], decided_at + timeframe_ms)
        raw.append((decided_at, fill_time, side, amount, price, fee))
        segments.append((int(fill_at[k]), account.cash, account.position))
    assignment, symbol, quote = settings.assignment, market.symbol, market.quote

    def build() -> list[Fill]:
        return [
            Fill(
                fill_id=f"{_EXCHANGE}-t{k + 1}",
                client_order_id=client_order_id(assignment, decided, TARGET_PURPOSE),
                exchange=_EXCHANGE,
                symbol=symbol,
                side=side,
                amount=amount,
                price=price,
                fee=fee,
                fee_currency=quote,
                time=fill_time,
            )
            for k, (decided, fill_time, side, amount, price, fee) in enumerate(raw)
        ]

    fees = sum((row[5] for row in raw), _ZERO)
    fill_rows = [
        (t, side is OrderSide.BUY, amount, price, fee) for _, t, side, amount, price, fee in raw
    ]
    return _merge(segments), FillRows(build, fill_rows, fees)


def _merge(
    segments: list[tuple[int, Decimal, Decimal]],
) -> list[tuple[int, Decimal, Decimal]]:
    """Keep the last balances of each starting row."""
    merged: list[tuple[int, Decimal, Decimal]] = []
    for segment in segments:
        if merged and merged[-1][0] == segment[0]:
            merged[-1] = segment
        else:
            merged.append(segment)
    return merged


# the exchange path ----------------------------------------------------------------------------


def _exchange_path(
    rows: DecisionRows,
    candles: CandleArrays,
    market: Market,
    settings: BacktestSettings,
    timeframe_ms: int,
) -> tuple[list[tuple[int, Decimal, Decimal]], FillRows]:
    fs = settings.fills
    engine = PaperEngine(
        {market.symbol: market}, {market.quote: settings.initial_cash}, fs, exchange=_EXCHANGE
    )
    symbol, base_ccy, quote_ccy = market.symbol, market.base, market.quote
    assignment = settings.assignment
    target_rows, target_values = _changes(rows.target)
    targets = dict(zip(target_rows, target_values, strict=True))
    decision_rows = sorted(set(targets) | set(rows.orders))
    segments: list[tuple[int, Decimal, Decimal]] = [(0, settings.initial_cash, _ZERO)]
    size = len(candles)
    times, opens, highs, lows, closes, volumes = (
        candles.time,
        candles.open,
        candles.high,
        candles.low,
        candles.close,
        candles.volume,
    )

    def balances() -> tuple[Decimal, Decimal]:
        found = engine.balances()
        cash = found[quote_ccy].total if quote_ccy in found else _ZERO
        held = found[base_ccy].total if base_ccy in found else _ZERO
        return cash, held

    next_decision = 0
    row = decision_rows[0] if decision_rows else size
    target_order: str | None = None
    while row < size:
        candle = Candle(
            int(times[row]),
            float(opens[row]),
            float(highs[row]),
            float(lows[row]),
            float(closes[row]),
            float(volumes[row]),
        )
        changed = bool(engine.on_candle(symbol, candle, timeframe_ms))
        if next_decision < len(decision_rows) and decision_rows[next_decision] == row:
            next_decision += 1
            decided_at = int(times[row])
            if row in targets:
                previous = engine.order(target_order) if target_order is not None else None
                if previous is not None and not previous.status.is_final:
                    engine.cancel(previous.client_order_id)  # a new target replaces it
                spread = Decimal(repr(float(highs[row]))) - Decimal(repr(float(lows[row])))
                changed |= _submit_target(
                    engine, targets[row], decided_at, spread, market, settings
                )
                target_order = client_order_id(assignment, decided_at, TARGET_PURPOSE)
            for index, intent in enumerate(rows.orders.get(row, ())):
                order = intent_order(intent, index, assignment, decided_at, market, _EXCHANGE)
                if order is None:
                    continue
                try:
                    _, fills = engine.submit(order)
                except OrderRejected:
                    continue
                changed |= bool(fills)
        if changed:
            cash, held = balances()
            segments.append((row, cash, held))
        if engine.open_orders():
            row += 1
        elif next_decision < len(decision_rows):
            row = decision_rows[next_decision]
        else:
            break
    fills = engine.fills()
    fill_rows = [(f.time, f.side is OrderSide.BUY, f.amount, f.price, f.fee) for f in fills]
    fees = sum((f.fee for f in fills), _ZERO)
    return _merge(segments), FillRows(lambda: fills, fill_rows, fees)


def _submit_target(
    engine: PaperEngine,
    value: float,
    decided_at: int,
    spread: Decimal,
    market: Market,
    settings: BacktestSettings,
) -> bool:
    """Size and submit the market order that moves the position to ``value`` (``spread``: the
    decision candle's high − low); True if it filled at once (``CLOSE`` timing)."""
    fs = settings.fills
    close = engine.last_price(market.symbol)
    assert close is not None
    found = engine.balances()
    cash = found[market.quote].free if market.quote in found else _ZERO
    held = found[market.base].free if market.base in found else _ZERO
    total_held = found[market.base].total if market.base in found else _ZERO
    reference = close
    if fs.slippage_mode is SlippageMode.BPS:
        reference = close * (_ONE + fs.slippage / _BPS)
    elif fs.slippage_mode is SlippageMode.RANGE:
        bar = engine._bar(market.symbol)
        assert bar is not None
        reference = close + fs.slippage * (bar.high - bar.low)
    equity = found[market.quote].total if market.quote in found else _ZERO
    desired = target_quantity(value, equity + total_held * close, close, settings.sizing, market)
    delta = plan_delta(
        desired, held, cash, reference, fs.taker_fee, market, settings.sizing.whole_units
    )
    if delta == 0 or market.check_order_size(abs(delta), close) is not None:
        return False
    order = order_for_delta(delta, settings.assignment, decided_at, market, _EXCHANGE)
    try:
        _, fills = engine.submit(order)
    except OrderRejected:
        return False
    return bool(fills)
