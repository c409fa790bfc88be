"""What a backtest returns: fills, round-trip trades, the equity curve and the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from trader.backtest.accounting import FillRow, Trade, closed_trade_figures, trips_of_rows
from trader.backtest.metrics import Metrics, compute_metrics
from trader.model import CandleArrays, Fill, Market

if TYPE_CHECKING:
    from trader.backtest.engine import BacktestSettings

__all__ = ["BacktestResult", "FillRows"]


class FillRows:
    """The fills of a run, made into :class:`~trader.model.Fill` objects when first asked for
    (the engine keeps them as decimals in tuples; building thousands of objects and client
    order ids is most of a fast backtest's cost and many callers only need the metrics)."""

    def __init__(self, build: Callable[[], list[Fill]], rows: list[FillRow], fees: Decimal) -> None:
        self._build: Callable[[], list[Fill]] | None = build
        self._fills: list[Fill] | None = None
        self.rows = rows
        """``(time, is_buy, amount, price, fee)`` per fill."""
        self.fees = fees

    def get(self) -> list[Fill]:
        """Every fill, oldest first."""
        if self._fills is None:
            assert self._build is not None
            self._fills, self._build = self._build(), None
        return self._fills


@dataclass(eq=False)
class BacktestResult:
    """One backtest's outcome.

    ``equity``, ``cash`` and ``position`` hold one float per candle, sampled at its close
    (after the fills on it). ``fills`` and ``final_cash`` / ``final_position`` are exact
    decimals; ``trades`` groups the fills into round trips.
    """

    candles: CandleArrays
    market: Market
    settings: BacktestSettings
    timeframe_ms: int
    equity: npt.NDArray[np.float64]
    cash: npt.NDArray[np.float64]
    position: npt.NDArray[np.float64]
    fill_rows: FillRows
    final_cash: Decimal
    final_position: Decimal

    @property
    def fills(self) -> list[Fill]:
        """Every fill, oldest first (exact decimals)."""
        return self.fill_rows.get()

    @property
    def fees(self) -> Decimal:
        """Every fee paid, in quote currency."""
        return self.fill_rows.fees

    @property
    def final_equity(self) -> Decimal:
        """Cash plus the position at the last close, exactly."""
        if not len(self.candles):
            return self.final_cash
        return self.final_cash + self.final_position * Decimal(repr(float(self.candles.close[-1])))

    @cached_property
    def trades(self) -> list[Trade]:
        """The round trips, oldest first; the last may be open (valued at the last close)."""
        last = Decimal(repr(float(self.candles.close[-1]))) if len(self.candles) else None
        return trips_of_rows(self.fill_rows.rows, last)

    @cached_property
    def metrics(self) -> Metrics:
        """Performance figures (see :mod:`trader.backtest.metrics`)."""
        return compute_metrics(
            self.equity,
            self.position,
            self.candles.time,
            float(self.settings.initial_cash),
            *closed_trade_figures(self.fill_rows.rows),
            self.fees,
            self.timeframe_ms,
        )
