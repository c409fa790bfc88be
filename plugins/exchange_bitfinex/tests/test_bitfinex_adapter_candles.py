"""How the bitfinex stream folds raw candle rows: forming, final, revised, malformed."""

from __future__ import annotations

from trader.interfaces.exchange import CandleUpdate
from trader.model import SeriesKey, Timeframe
from trader_exchange_bitfinex.stream import SeriesState

KEY = SeriesKey("bitfinex", "BTC/USD", Timeframe.parse("1m"))


def fold(state: SeriesState, rows: list[list[object]], **flags: bool) -> list[tuple[int, bool]]:
    out: list[CandleUpdate] = []
    for row in rows:
        state.apply(row, out, authoritative=flags.get("authoritative", True))
    return [(u.candle.time, u.candle.closed) for u in out]


def test_newest_is_forming_and_becomes_final_when_the_next_starts() -> None:
    state = SeriesState(KEY, "trade:1m:tBTCUSD", 60_000)
    assert fold(state, [[0, 10, 11, 12, 9, 1]]) == [(0, False)]
    assert fold(state, [[0, 10, 11, 12, 9, 1]]) == []  # unchanged: not emitted again
    assert fold(state, [[0, 10, 12, 12, 9, 2]]) == [(0, False)]
    # a gap (no trades for two minutes) is no loss: the next candle simply starts later
    assert fold(state, [[180_000, 12, 12, 12, 12, 1]]) == [(0, True), (180_000, False)]
    out: list[CandleUpdate] = []
    state.apply([0, 10, 12, 13, 9, 3], out, authoritative=True)  # a revision
    assert [(u.candle.time, u.candle.closed, u.candle.high) for u in out] == [(0, True, 13.0)]


def test_rest_rows_never_touch_the_forming_candle_and_bad_rows_are_ignored() -> None:
    state = SeriesState(KEY, "trade:1m:tBTCUSD", 60_000)
    fold(state, [[60_000, 10, 11, 12, 9, 1]])
    assert fold(state, [[60_000, 1, 1, 1, 1, 1]], authoritative=False) == []
    assert fold(state, [[120_000, 1, 1, 1, 1, 1]], authoritative=False) == []
    assert fold(state, [[0, 1, 1, 1, 1, 1, None, None]], authoritative=False) == [(0, True)]
    assert fold(state, [[0, None, None, None, None, None], [5], []]) == []
