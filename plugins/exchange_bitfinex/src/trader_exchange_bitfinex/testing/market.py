"""The fake's market: a seeded trade path per pair and the candles Bitfinex would build from it.

Trades come one per slot of ``trade_interval_ms`` (at a seeded offset inside the slot) on a
geometric random walk rounded to 5 significant digits. Candles of every timeframe are built from
those trades, so a period without trades has no candle, exactly as on Bitfinex. The path is a
function of the seed and the pair only: how far and in which steps the clock is moved never
changes it, and neither do faults (a skipped period still draws its trades, then drops them).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections import deque
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Final

from trader.model import MINUTE_MS, CandleArrays, Timeframe

#: Timeframe spellings Bitfinex accepts in candle keys, mapped to trader timeframes.
BITFINEX_TIMEFRAMES: Final[dict[str, Timeframe]] = {
    "1m": Timeframe(1, "m"),
    "5m": Timeframe(5, "m"),
    "15m": Timeframe(15, "m"),
    "30m": Timeframe(30, "m"),
    "1h": Timeframe(1, "h"),
    "3h": Timeframe(3, "h"),
    "6h": Timeframe(6, "h"),
    "12h": Timeframe(12, "h"),
    "1D": Timeframe(1, "d"),
    "7D": Timeframe(1, "w"),
    "1W": Timeframe(1, "w"),
    "14D": Timeframe(14, "d"),
    "1M": Timeframe(1, "M"),
}
_ONE_MINUTE: Final = Timeframe(1, "m")

#: A candle row as Bitfinex sends it: ``[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]``.
CandleRow = list[float]


def round_price(value: float) -> float:
    """Round a price to 5 significant digits, Bitfinex's price precision."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.5g}")


def truncate_price(value: Decimal) -> Decimal:
    """Cut a price to 5 significant digits, as Bitfinex does with a submitted order price."""
    if value == 0 or not value.is_finite():
        return value
    exponent = value.adjusted() - 4
    return value.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_DOWN).normalize()


def round_amount(value: float) -> float:
    """Round an amount to 8 decimals, Bitfinex's amount precision."""
    return round(value, 8)


def to_timeframe(timeframe: str | Timeframe) -> Timeframe:
    """Map a Bitfinex spelling (``1D``, ``7D``, ``1W``) or a trader timeframe to a Timeframe."""
    if isinstance(timeframe, Timeframe):
        return timeframe
    if timeframe in BITFINEX_TIMEFRAMES:
        return BITFINEX_TIMEFRAMES[timeframe]
    return Timeframe.parse(timeframe)


def derived_seed(*parts: object) -> int:
    """Return a stable 64-bit seed from ``parts`` (independent of ``PYTHONHASHSEED``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True, slots=True)
class FakePair:
    """A trading pair the fake lists, e.g. ``FakePair("BTCUSD", 30000.0)``.

    ``pair`` is Bitfinex's spelling without the ``t`` (``BTCUST`` is BTC/USDT, ``DOGE:USD`` uses
    a colon when a code is longer than 3 letters). ``min_order_size`` and ``max_order_size`` are
    what ``pub:info:pair`` reports (strings, as on the wire).
    """

    pair: str
    start_price: float
    min_order_size: str = "0.00004"
    max_order_size: str = "2000.0"

    @property
    def symbol(self) -> str:
        """The trading symbol, ``t`` + pair."""
        return "t" + self.pair

    @property
    def base(self) -> str:
        """Bitfinex code of the base currency."""
        return self.pair.split(":")[0] if ":" in self.pair else self.pair[:3]

    @property
    def quote(self) -> str:
        """Bitfinex code of the quote currency."""
        return self.pair.split(":")[1] if ":" in self.pair else self.pair[3:]


@dataclass(frozen=True, slots=True)
class Trade:
    """One public trade: id, time, signed amount (> 0 the taker bought), price."""

    id: int
    time: int
    amount: float
    price: float

    def row(self) -> list[float]:
        """``[ID, MTS, AMOUNT, PRICE]`` as Bitfinex sends it."""
        return [self.id, self.time, self.amount, self.price]


def _fold(candle: CandleRow, row: CandleRow) -> None:
    """Fold the later one-minute ``row`` into ``candle`` (close, high, low, volume)."""
    candle[2] = row[2]
    candle[3] = max(candle[3], row[3])
    candle[4] = min(candle[4], row[4])
    candle[5] = round_amount(candle[5] + row[5])


class PairPath:
    """The trade path of one pair and the one-minute candles built from it.

    Higher timeframes are aggregated from the one-minute candles on demand, so a revision of a
    one-minute candle shows in every timeframe that contains it.
    """

    def __init__(
        self,
        pair: FakePair,
        *,
        seed: int,
        origin_ms: int,
        trade_interval_ms: int,
        volatility: float,
        quiet_probability: float,
        trade_history: int = 10_000,
    ) -> None:
        self.pair = pair
        self._seed = seed
        self._rng = random.Random(derived_seed(seed, pair.pair, "path"))
        self._origin = origin_ms
        self._interval = trade_interval_ms
        self._volatility = volatility
        self._quiet_probability = quiet_probability
        self._log_price = math.log(pair.start_price)
        self._index = 0
        self._trade_ids = derived_seed(seed, pair.pair, "ids") % 1_000_000_000 + 1_000_000_000
        self.last_price = round_price(pair.start_price)
        self.times: list[int] = []
        self.rows: list[CandleRow] = []
        self._row_at: dict[int, int] = {}
        self.trades: deque[Trade] = deque(maxlen=trade_history)
        self.skipped: list[tuple[int, int]] = []
        #: Bumped when a row other than the newest changes or a row is inserted (a revision).
        self._version = 0
        #: Per timeframe: (version, period, first row, rows folded, aggregate of those rows).
        self._partial: dict[Timeframe, tuple[int, int, int, int, CandleRow | None]] = {}
        self._next = self._draw()

    @property
    def next_time(self) -> int:
        """When the next trade of the path happens."""
        return self._next[0]

    def _draw(self) -> tuple[int, float, float]:
        rng = self._rng
        slot = self._origin + self._index * self._interval
        self._index += 1
        time = slot + rng.randrange(self._interval)
        self._log_price += rng.gauss(0.0, self._volatility)
        size = round_amount(rng.expovariate(1.0) * 0.05 + 0.0001)
        amount = size if rng.random() < 0.5 else -size
        return time, round_price(math.exp(self._log_price)), amount

    def is_quiet(self, period_ms: int) -> bool:
        """True when the seeded market has no trades in the minute opening at ``period_ms``."""
        if any(start <= period_ms < end for start, end in self.skipped):
            return True
        if self._quiet_probability <= 0:
            return False
        chance = random.Random(derived_seed(self._seed, self.pair.pair, "quiet", period_ms))
        return chance.random() < self._quiet_probability

    def step(self, *, paused: bool = False) -> Trade | None:
        """Play the next trade of the path; return it, or ``None`` when it was dropped.

        A trade is dropped (and makes no candle) when its minute is quiet or skipped, or when
        ``paused`` (maintenance).
        """
        time, price, amount = self._next
        self._next = self._draw()
        minute = time - time % MINUTE_MS
        if paused or self.is_quiet(minute):
            return None
        return self.apply_trade(time, price, amount)

    def apply_trade(self, time: int, price: float, amount: float) -> Trade:
        """Record a trade at ``time`` (possibly in the past: a revision) in the candles."""
        self._trade_ids += 1
        trade = Trade(self._trade_ids, time, amount, price)
        minute = time - time % MINUTE_MS
        index = self._row_at.get(minute)
        if index is None:
            row: CandleRow = [minute, price, price, price, price, round_amount(abs(amount))]
            if not self.times or minute > self.times[-1]:
                self.times.append(minute)
                self.rows.append(row)
                self._row_at[minute] = len(self.times) - 1
            else:
                position = bisect.bisect_left(self.times, minute)
                self.times.insert(position, minute)
                self.rows.insert(position, row)
                self._row_at = {t: i for i, t in enumerate(self.times)}
                self._version += 1
        else:
            if index != len(self.rows) - 1:
                self._version += 1
            row = self.rows[index]
            if not self.trades or time >= self.trades[-1].time:
                row[2] = price
            row[3] = max(row[3], price)
            row[4] = min(row[4], price)
            row[5] = round_amount(row[5] + abs(amount))
        if not self.trades or time >= self.trades[-1].time:
            self.last_price = price
            self.trades.append(trade)
        return trade

    def candles(
        self, timeframe: Timeframe, start: int | None = None, end: int | None = None
    ) -> list[CandleRow]:
        """Candles of ``timeframe`` with open time in ``[start, end]``, oldest first (copies)."""
        if timeframe == _ONE_MINUTE:
            low = 0 if start is None else bisect.bisect_left(self.times, start)
            high = len(self.times) if end is None else bisect.bisect_right(self.times, end)
            return [list(row) for row in self.rows[low:high]]
        low = 0 if start is None else bisect.bisect_left(self.times, timeframe.floor(start))
        high = (
            len(self.times)
            if end is None
            else bisect.bisect_left(self.times, timeframe.next_open(end))
        )
        result: list[CandleRow] = []
        current = -1
        for row in self.rows[low:high]:
            period = timeframe.floor(int(row[0]))
            if period != current:
                current = period
                result.append([period, row[1], row[2], row[3], row[4], row[5]])
            else:
                _fold(result[-1], row)
        return [
            row
            for row in result
            if (start is None or row[0] >= start) and (end is None or row[0] <= end)
        ]

    def candle_at(self, timeframe: Timeframe, time_ms: int) -> CandleRow | None:
        """The candle of ``timeframe`` that contains ``time_ms``, or ``None`` if it has none.

        Incremental: the fold of the period's one-minute rows before the newest is kept per
        timeframe until a revision, so a trade costs O(1) rather than O(minutes in the period).
        """
        period = timeframe.floor(time_ms)
        if timeframe == _ONE_MINUTE:
            rows = self.candles(timeframe, period, period)
            return rows[0] if rows else None
        low = bisect.bisect_left(self.times, period)
        high = bisect.bisect_left(self.times, timeframe.next_open(period))
        if low >= high:
            return None
        folded: CandleRow | None = None
        upto = low
        kept = self._partial.get(timeframe)
        if kept is not None and kept[:3] == (self._version, period, low) and kept[3] < high:
            upto, folded = kept[3], kept[4]
        for row in self.rows[upto : high - 1]:
            if folded is None:
                folded = [period, row[1], row[2], row[3], row[4], row[5]]
            else:
                _fold(folded, row)
        self._partial[timeframe] = (self._version, period, low, high - 1, folded)
        last = self.rows[high - 1]
        if folded is None:
            return [period, last[1], last[2], last[3], last[4], last[5]]
        result = list(folded)
        _fold(result, last)
        return result

    def ground_truth(
        self, timeframe: Timeframe, now_ms: int, *, include_forming: bool = False
    ) -> CandleArrays:
        """Every candle of ``timeframe`` so far, oldest first, as trader columns.

        A candle whose period has not ended at ``now_ms`` is still forming: it is left out unless
        ``include_forming``, and then marked ``closed=False``.
        """
        rows = []
        for mts, open_, close, high, low, volume in self.candles(timeframe):
            closed = timeframe.next_open(int(mts)) <= now_ms
            if closed or include_forming:
                rows.append((int(mts), open_, high, low, close, volume, closed))
        return CandleArrays.from_rows(rows)
