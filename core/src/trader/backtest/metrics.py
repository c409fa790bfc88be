"""Performance metrics of a backtest, from its equity curve and its round-trip trades.

Conventions (see docs/backtesting.md):

* The equity curve has one sample per candle, at its close; the period return of candle ``t``
  is ``equity[t] / equity[t-1] - 1``, and that of the first candle is relative to the initial
  cash.
* Annualisation: ``periods_per_year = 365 days / timeframe`` (crypto markets trade every day),
  e.g. 525,600 for one-minute candles, 365 for daily ones.
* Sharpe = mean(r) / std(r, ddof=1) × √periods_per_year (risk-free rate 0).
* Sortino = mean(r) / √mean(min(r, 0)²) × √periods_per_year (downside deviation over all
  periods, target 0).
* CAGR = (final / initial) ^ (periods_per_year / periods) - 1.
* Maximum drawdown = max over t of 1 - equity[t] / peak[t], the peak including the initial
  cash; its duration is the longest run of candles spent below a previous peak (in candles
  and ms), whether or not it recovered.
* Calmar = CAGR / maximum drawdown.
* Exposure = the fraction of candles closing with a position.
* Trade statistics count closed round trips only.

Undefined ratios (no variance, no drawdown, no losing trade, no trade, a CAGR of a short run
that overflows a float) are ``None``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Metrics", "compute_metrics", "drawdown", "periods_per_year"]

_YEAR_MS = 365 * 86_400_000


def periods_per_year(timeframe_ms: int) -> float:
    """How many candles of ``timeframe_ms`` a year holds (365 days)."""
    return _YEAR_MS / timeframe_ms


@dataclass(frozen=True, slots=True)
class Metrics:
    """A backtest's figures. Fractions are plain (0.1 is 10 %); money is quote currency."""

    initial_equity: float
    final_equity: float
    total_return: float
    cagr: float | None
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    max_drawdown: float
    max_drawdown_candles: int
    max_drawdown_ms: int
    exposure: float
    trades: int
    win_rate: float | None
    profit_factor: float | None
    average_trade: float | None
    best_trade: float | None
    worst_trade: float | None
    average_trade_return: float | None
    fees: float
    periods_per_year: float

    def as_dict(self) -> dict[str, Any]:
        """The figures as a plain dict (for JSON)."""
        return asdict(self)


def drawdown(
    equity: npt.NDArray[np.float64], initial: float
) -> tuple[npt.NDArray[np.float64], float, int]:
    """The drawdown per sample (``1 - equity / running peak``), its maximum, and the longest
    run of samples below a previous peak."""
    peak = np.maximum.accumulate(np.concatenate(([initial], equity)))[1:]
    dd = 1.0 - equity / peak
    below = dd > 0
    longest = 0
    if below.any():
        edges = np.diff(np.concatenate(([0], below.astype(np.int8), [0])))
        starts = np.flatnonzero(edges == 1)
        stops = np.flatnonzero(edges == -1)
        longest = int(np.max(stops - starts))
    return dd, float(dd.max()) if len(dd) else 0.0, longest


def compute_metrics(
    equity: npt.NDArray[np.float64],
    position: npt.NDArray[np.float64],
    times: npt.NDArray[np.int64],
    initial: float,
    trade_pnl: npt.NDArray[np.float64],
    trade_cost: npt.NDArray[np.float64],
    fees: Decimal,
    timeframe_ms: int,
) -> Metrics:
    """Compute :class:`Metrics` (conventions in the module docstring) from the equity and
    position per candle and the pnl and cost of each closed round trip
    (:func:`~trader.backtest.accounting.closed_trade_figures`)."""
    ppy = periods_per_year(timeframe_ms)
    n = len(equity)
    final = float(equity[-1]) if n else initial
    total = final / initial - 1.0
    sharpe = sortino = cagr = calmar = None
    if n:
        returns = np.diff(np.concatenate(([initial], equity))) / np.concatenate(
            ([initial], equity[:-1])
        )
        mean = float(returns.mean())
        if n > 1:
            std = float(returns.std(ddof=1))
            sharpe = mean / std * math.sqrt(ppy) if std > 0 else None
        downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
        sortino = mean / downside * math.sqrt(ppy) if downside > 0 else None
        try:
            cagr = (final / initial) ** (ppy / n) - 1.0 if final > 0 else -1.0
        except OverflowError:  # a short run annualised beyond what a float holds
            cagr = None
    _, max_dd, dd_candles = drawdown(np.asarray(equity, dtype=np.float64), initial)
    if cagr is not None and max_dd > 0:
        calmar = cagr / max_dd
    closed = len(trade_pnl)
    wins = trade_pnl[trade_pnl > 0]
    gross_win = float(wins.sum())
    gross_loss = -float(trade_pnl[trade_pnl < 0].sum())
    returns_of_trades = trade_pnl / np.where(trade_cost > 0, trade_cost, np.inf)
    return Metrics(
        initial_equity=initial,
        final_equity=final,
        total_return=total,
        cagr=cagr,
        sharpe=sharpe,
        sortino=sortino,
        calmar=calmar,
        max_drawdown=max_dd,
        max_drawdown_candles=dd_candles,
        max_drawdown_ms=dd_candles * timeframe_ms,
        exposure=float(np.count_nonzero(position)) / n if n else 0.0,
        trades=closed,
        win_rate=len(wins) / closed if closed else None,
        profit_factor=gross_win / gross_loss if gross_loss > 0 else None,
        average_trade=float(trade_pnl.mean()) if closed else None,
        best_trade=float(trade_pnl.max()) if closed else None,
        worst_trade=float(trade_pnl.min()) if closed else None,
        average_trade_return=float(returns_of_trades.mean()) if closed else None,
        fees=float(fees),
        periods_per_year=ppy,
    )
