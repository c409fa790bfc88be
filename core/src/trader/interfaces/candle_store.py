"""The candle store interface: where every candle lives, from backfill to live updates."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from trader.interfaces.base import Component
from trader.model import Candle, CandleArrays, SeriesKey, Timeframe


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: rows new to the store, rows changed, rows already identical."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def written(self) -> int:
        """Rows the write changed (inserted or updated)."""
        return self.inserted + self.updated

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """A stored series and its extent: candle count, first and last open time (ms)."""

    key: SeriesKey
    count: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing candles: every open time in ``[start, end)`` of the series' timeframe."""

    start: int
    end: int
    missing: int


class CandleStore(Component):
    """Stores candle series keyed by (exchange, symbol, timeframe, open time).

    Contract, checked by ``trader_sdk.testing``'s candle store conformance suite:

    * **Idempotent writes.** :meth:`write` upserts: writing the same candles again changes
      nothing and reports them as unchanged; a candle with new values for a stored open time
      replaces it (exchanges revise candles). Input need not be sorted; within one batch the last
      row for an open time wins. Open times must be aligned to the timeframe.
    * **Ordered reads.** :meth:`read` and :meth:`latest` return candles oldest first, every open
      time once.
    * **Half-open ranges.** ``start`` is included, ``end`` excluded; ``None`` means unbounded.
    * **Async.** Every method is a coroutine; a store may do its I/O on a thread of its own.
      Concurrent calls on one store are allowed and are serialised where the engine needs it.
    * **Errors.** Failures raise :class:`~trader.errors.StorageError` naming the store and what
      it was doing; a failed write stores nothing of its batch (it is atomic per call).
    """

    @abstractmethod
    async def write(
        self, series: SeriesKey, candles: CandleArrays | Sequence[Candle]
    ) -> WriteResult:
        """Upsert ``candles`` into ``series`` atomically and say what changed."""

    @abstractmethod
    async def read(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> CandleArrays:
        """Return the candles of ``series`` with open time in ``[start, end)``, oldest first."""

    @abstractmethod
    async def latest(self, series: SeriesKey, count: int) -> CandleArrays:
        """Return the newest ``count`` candles of ``series``, oldest first (newest last)."""

    @abstractmethod
    async def list_series(self) -> list[SeriesInfo]:
        """Every stored series with its extent, sorted by exchange, symbol and timeframe."""

    @abstractmethod
    async def gaps(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> list[Gap]:
        """Ranges of missing open times inside ``[start, end)``, in time order.

        With no bounds, the range runs from the first to the last stored candle; a bound outside
        the stored extent counts the candles between it and the extent as missing. A store
        reports what is absent; whether an exchange simply had no trades then is for the caller
        to judge.
        """

    @abstractmethod
    async def delete(
        self, series: SeriesKey, start: int | None = None, end: int | None = None
    ) -> int:
        """Delete the candles of ``series`` in ``[start, end)``; return how many were removed."""

    async def resample(
        self,
        source: SeriesKey,
        timeframe: Timeframe,
        start: int | None = None,
        end: int | None = None,
    ) -> CandleArrays | None:
        """Build ``timeframe`` candles from ``source`` inside the store, if it can.

        Bounds are widened to whole ``timeframe`` candles first: ``start`` back to the open of
        the candle containing it, ``end`` forward to the open of the candle after the one
        containing ``end - 1`` (:func:`trader.candles.whole_candles`), so a bound inside a
        candle never yields a candle built from part of its period. Return ``None`` when the
        store has no server-side resampling; the caller then resamples the widened range in
        Python (:func:`trader.candles.resample`). A built candle is closed only when its whole
        period lies inside the source data read. The default returns ``None``.
        """
        return None
