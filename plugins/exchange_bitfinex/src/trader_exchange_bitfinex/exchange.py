"""The ``bitfinex`` exchange adapter: trader's :class:`~trader.interfaces.Exchange` on Bitfinex v2.

REST goes through ccxt's signed transport (:mod:`trader_exchange_bitfinex.rest`), live candles
through a native websocket client (:mod:`trader_exchange_bitfinex.stream`). Everything past this
module speaks unified symbols (``BTC/USDT``) and common currency codes (``USDT``); Bitfinex's ids
(``tBTCUST``, ``UST``) stay inside.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any, Final

import ccxt.async_support as ccxt_async

from trader.errors import (
    ExchangeError,
    ExchangeUnavailable,
    ModelError,
    OrderOutcomeUnknown,
    OrderRejected,
)
from trader.interfaces.base import PluginContext
from trader.interfaces.exchange import CandleUpdate, Exchange, ExchangeCapabilities
from trader.model import (
    DAY_MS,
    Balance,
    CandleArrays,
    Fill,
    Market,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Precision,
    PrecisionMode,
    SeriesKey,
    Timeframe,
    client_order_number,
    parse_symbol,
)
from trader_exchange_bitfinex.clock import Clock, SystemClock
from trader_exchange_bitfinex.codes import TIMEFRAMES, common_code, pair_id_of, symbol_of
from trader_exchange_bitfinex.options import BitfinexOptions
from trader_exchange_bitfinex.rest import NOT_APPLIED, BitfinexRest
from trader_exchange_bitfinex.stream import CandleStream

log = logging.getLogger(__name__)

POST_ONLY: Final = 4096
PRICE_PRECISION: Final = Precision(PrecisionMode.SIGNIFICANT, Decimal(5))
AMOUNT_PRECISION: Final = Precision(PrecisionMode.DECIMALS, Decimal(8))
_TYPES: Final = {
    OrderType.MARKET: "EXCHANGE MARKET",
    OrderType.LIMIT: "EXCHANGE LIMIT",
    OrderType.STOP: "EXCHANGE STOP",
}
_TYPES_BACK: Final = {wire: kind for kind, wire in _TYPES.items()}
_REJECTIONS: Final = (
    ccxt_async.InsufficientFunds,
    ccxt_async.InvalidOrder,
    ccxt_async.BadRequest,
    ccxt_async.PermissionDenied,  # ccxt maps Bitfinex's generic 10001 (order errors) to this
)


def cid_date(time_ms: int) -> str:
    """The UTC date (``YYYY-MM-DD``) Bitfinex pairs with a ``cid``."""
    return dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d")


def order_status(text: str) -> OrderStatus:
    """Map a Bitfinex order status string (``EXECUTED @ 107.6(-0.2)``) to trader's."""
    head = text.split(" @ ", 1)[0].split(" was:", 1)[0].strip().upper()
    if head == "ACTIVE":
        return OrderStatus.ACKNOWLEDGED
    if head.startswith("PARTIALLY FILLED"):
        return OrderStatus.PARTIALLY_FILLED
    if head.startswith("EXECUTED"):
        return OrderStatus.FILLED
    if head == "POSTONLY CANCELED":
        return OrderStatus.REJECTED  # a post-only order that would have taken: never rested
    if head.endswith("CANCELED"):
        return OrderStatus.CANCELLED
    return OrderStatus.REJECTED  # INSUFFICIENT MARGIN/BALANCE, RSN_DUST, RSN_PAUSE


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value))


class BitfinexExchange(Exchange):
    """Bitfinex spot trading (the ``exchange`` wallet) and candles.

    ``clock`` replaces wall time and :func:`asyncio.sleep` for pacing, backoff and the
    websocket watchdog (tests pass the fake Bitfinex's simulated clock).
    """

    def __init__(
        self,
        options: BitfinexOptions,
        context: PluginContext | None = None,
        *,
        clock: Clock | None = None,
        name: str = "bitfinex",
    ) -> None:
        self.name = name
        self.options = options
        self.context = context
        self.clock: Clock = clock or SystemClock()
        self.rest = BitfinexRest(options, self.clock)
        self._markets: dict[str, Market] | None = None
        self._client_ids: dict[int, str] = {}
        self.last_stream: CandleStream | None = None

    def __repr__(self) -> str:
        return f"BitfinexExchange(name={self.name!r}, url={self.options.private_url!r})"

    @property
    def capabilities(self) -> ExchangeCapabilities:
        return ExchangeCapabilities(
            order_types=frozenset(_TYPES),
            post_only=True,
            websocket=True,
            timeframes=tuple(TIMEFRAMES),
            max_candles_per_request=self.options.candles_per_request,
            requests_per_minute=self.options.public_requests_per_minute,
            extra={"wallet": "exchange", "subscriptions_per_connection": "25"},
        )

    async def open(self) -> None:
        await self.rest.open()

    async def close(self) -> None:
        await self.rest.close()

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    # -- markets and candles ----------------------------------------------------------------

    async def markets(self) -> dict[str, Market]:
        """Spot markets: prices to 5 significant digits, amounts to 8 decimals, minimum sizes."""
        if self._markets is None:
            reply = await self.rest.call(
                "publicGetConfConfig",
                {"config": "pub:info:pair,pub:list:pair:exchange"},
                "market list",
            )
            info = {row[0]: row[1] for row in reply[0]}
            markets: dict[str, Market] = {}
            for pair in reply[1]:
                try:
                    symbol = symbol_of(pair)
                    parse_symbol(symbol)
                except ModelError:
                    continue  # not a plain BASE/QUOTE spot pair
                details = info.get(pair) or []
                minimum = details[3] if len(details) > 3 and details[3] is not None else None
                markets[symbol] = Market(
                    symbol,
                    PRICE_PRECISION,
                    AMOUNT_PRECISION,
                    min_amount=_decimal(minimum) if minimum is not None else None,
                )
            self._markets = markets
        return self._markets

    async def _market(self, symbol: str) -> Market:
        market = (await self.markets()).get(symbol)
        if market is None:
            raise ModelError(f"bitfinex has no spot market {symbol}: see `trader markets`")
        return market

    @staticmethod
    def _timeframe_key(timeframe: str | Timeframe) -> tuple[Timeframe, str]:
        parsed = Timeframe.parse(timeframe)
        key = TIMEFRAMES.get(str(parsed))
        if key is None:
            raise ModelError(
                f"bitfinex has no {parsed} candles; use one of {', '.join(TIMEFRAMES)}"
            )
        return parsed, key

    async def candle_rows(
        self, symbol: str, timeframe: str | Timeframe, start: int, end: int
    ) -> AsyncIterator[list[list[Any]]]:
        """Raw rows ``[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]`` with ``start <= MTS < end``.

        Pages oldest first (``sort=1``, ``start`` moved past the last row), each one paced by
        the rate limiter; a 429 waits out Bitfinex's 60 s block. Includes the forming candle.
        """
        _, key = self._timeframe_key(timeframe)
        pair = pair_id_of(symbol)
        limit = self.options.candles_per_request
        cursor = start
        while cursor < end:
            rows = await self.rest.call(
                "publicGetCandlesTradeTimeframeSymbolSection",
                {
                    "timeframe": key,
                    "symbol": pair,
                    "section": "hist",
                    "start": cursor,
                    "end": end - 1,
                    "limit": limit,
                    "sort": 1,
                },
                f"candles {symbol} {timeframe}",
            )
            rows = sorted((row for row in rows if cursor <= row[0] < end), key=lambda r: r[0])
            if rows:
                yield rows
            if len(rows) < limit:
                return
            cursor = int(rows[-1][0]) + 1

    async def fetch_candles(
        self, symbol: str, timeframe: str, start: int, end: int
    ) -> AsyncIterator[CandleArrays]:
        """Closed candles with open time in ``[start, end)``, page by page, oldest first.

        Periods without trades have no candle (Bitfinex sends none); the forming candle is left
        out.
        """
        parsed, _ = self._timeframe_key(timeframe)
        now = self._now_ms()
        async for rows in self.candle_rows(symbol, parsed, start, end):
            page = [
                (row[0], row[1], row[3], row[4], row[2], row[5], True)
                for row in rows
                if parsed.next_open(int(row[0])) <= now and None not in row[:6]
            ]
            if page:
                yield CandleArrays.from_rows(page)

    async def _backfill(self, series: SeriesKey, start: int, end: int) -> list[list[Any]]:
        rows: list[list[Any]] = []
        async for page in self.candle_rows(series.symbol, series.timeframe, start, end + 1):
            rows.extend(page)
        return rows

    async def stream_candles(self, series: Sequence[SeriesKey]) -> AsyncIterator[CandleUpdate]:
        """Live candle updates for ``series`` until the iterator is closed.

        Forming candles come with ``closed=False``; each is emitted again with ``closed=True``
        once a later candle starts. Revisions of closed candles are emitted again. Reconnects,
        resubscription and REST backfill of what was missed happen inside.
        """
        channels = []
        for key in series:
            parsed, tf_key = self._timeframe_key(key.timeframe)
            channels.append((key, f"trade:{tf_key}:{pair_id_of(key.symbol)}", parsed.nominal_ms))
        stream = CandleStream(self.options, self.clock, channels, self._backfill)
        self.last_stream = stream
        await stream.start()
        try:
            while True:
                yield await stream.get()
        finally:
            await stream.stop()

    # -- account ----------------------------------------------------------------------------

    async def balances(self) -> dict[str, Balance]:
        """Balances of the ``exchange`` wallet, by common currency code (``USDT``, not ``UST``)."""
        wallets = await self.rest.call("privatePostAuthRWallets", {}, "balances")
        result: dict[str, Balance] = {}
        for row in wallets:
            if row[0] != "exchange":
                continue
            total = _decimal(row[2] or 0)
            free = _decimal(row[4]) if len(row) > 4 and row[4] is not None else total
            code = common_code(row[1])
            result[code] = Balance(code, total, min(free, total))
        return result

    def _client_id(self, cid: Any) -> str:
        if cid is None:
            return "bfx-none"
        return self._client_ids.get(int(cid), f"bfx{int(cid)}")

    def _order(self, raw: Sequence[Any], template: Order | None = None) -> Order:
        amount_left = _decimal(raw[6] or 0)
        amount = _decimal(raw[7])
        kind = _TYPES_BACK.get(str(raw[8]), OrderType.LIMIT)
        price = _decimal(raw[16]) if raw[16] else None
        average = _decimal(raw[17]) if raw[17] else None
        status = order_status(str(raw[13]))
        filled = abs(amount) - abs(amount_left)
        common: dict[str, Any] = {
            "status": status,
            "filled": filled,
            "average_price": average,
            "exchange_order_id": str(raw[0]),
            "updated_at": int(raw[5] or raw[4] or 0),
        }
        if template is not None:
            return template.with_status(**common)
        return Order(
            client_order_id=self._client_id(raw[2]),
            exchange=self.name,
            symbol=symbol_of(str(raw[3])),
            side=OrderSide.BUY if amount > 0 else OrderSide.SELL,
            type=kind,
            amount=abs(amount),
            price=price if kind is OrderType.LIMIT else None,
            stop_price=price if kind is OrderType.STOP else None,
            post_only=bool(int(raw[12] or 0) & POST_ONLY) and kind is OrderType.LIMIT,
            created_at=int(raw[4] or 0),
            **common,
        )

    async def _find(self, cid: int, since: int) -> list[Any] | None:
        """The exchange's order with ``cid`` (active first, then history), or ``None``."""
        active: list[Any] = await self.rest.call("privatePostAuthROrders", {}, "open orders")
        for raw in active:
            if raw[2] == cid:
                return list(raw)
        history: list[Any] = await self.rest.call(
            "privatePostAuthROrdersHist",
            {"start": since, "end": self._now_ms() + DAY_MS, "limit": 2500},
            "order history",
        )
        matches: list[list[Any]] = [row for row in history if row[2] == cid]
        if not matches:
            return None
        newest: list[Any] = max(matches, key=lambda row: int(row[4] or 0))
        return newest

    async def submit_order(self, order: Order) -> Order:
        """Place ``order`` once: it is looked up by its ``cid`` before every (re)submission.

        ``cid`` is :func:`~trader.model.client_order_number` of the client order id and
        ``cid_date`` the UTC date of ``order.created_at``. A refusal raises
        :class:`OrderRejected`; when a reply was lost and the order can't be found either, the
        submission is retried after looking again, and :class:`OrderOutcomeUnknown` is raised
        if the outcome stays unknown.
        """
        market = await self._market(order.symbol)
        self._check_rounding(order, market)
        problem = market.check_order_size(order.amount, order.price or order.stop_price)
        if problem is not None:
            raise OrderRejected(f"bitfinex order {order.client_order_id}: {problem}")
        cid = client_order_number(order.client_order_id)
        self._client_ids[cid] = order.client_order_id
        created = order.created_at or self._now_ms()
        body: dict[str, Any] = {
            "type": _TYPES[order.type],
            "symbol": pair_id_of(order.symbol),
            "amount": str(order.amount if order.side is OrderSide.BUY else -order.amount),
            "cid": cid,
        }
        if order.type is OrderType.LIMIT:
            body["price"] = str(order.price)
            if order.post_only:
                body["flags"] = POST_ONLY
        elif order.type is OrderType.STOP:
            body["price"] = str(order.stop_price)
        unknown = False
        delay = self.options.reconnect_initial_s
        lost = 0
        deadline = self.clock.time() + self.options.maintenance_wait_s
        while True:
            try:
                existing = await self._find(cid, created - DAY_MS)
            except ExchangeUnavailable as error:
                if unknown:
                    raise OrderOutcomeUnknown(
                        f"bitfinex order {order.client_order_id} (cid {cid}, cid_date "
                        f"{cid_date(created)}) may exist: {error}"
                    ) from None
                raise
            if existing is not None:
                return self._order(existing, order)
            if lost >= self.options.max_attempts or self.clock.time() > deadline:
                break  # looked up once more after the last attempt: not there
            try:
                reply = await self.rest.call_once("privatePostAuthWOrderSubmit", body)
            except _REJECTIONS as error:
                raise OrderRejected(
                    f"bitfinex refused order {order.client_order_id}: {_reason(error)}"
                ) from None
            except NOT_APPLIED as error:
                log.warning(
                    "bitfinex submit of %s not applied (%s); retrying",
                    order.client_order_id,
                    type(error).__name__,
                )
                if not isinstance(error, ccxt_async.RateLimitExceeded):
                    await self.clock.sleep(delay)
                    delay = min(delay * 2, self.options.reconnect_max_s)
                continue
            except ccxt_async.AuthenticationError:
                raise ExchangeError(
                    "bitfinex refused the API key: check api_key and api_secret"
                ) from None
            except ccxt_async.NetworkError as error:
                unknown = True
                lost += 1
                log.warning(
                    "bitfinex submit of %s: no reply (%s); looking it up",
                    order.client_order_id,
                    type(error).__name__,
                )
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_s)
                continue
            except ccxt_async.ExchangeError as error:
                raise OrderRejected(
                    f"bitfinex refused order {order.client_order_id}: {_reason(error)}"
                ) from None
            return self._order(reply[4][0], order)
        if unknown:
            raise OrderOutcomeUnknown(
                f"bitfinex order {order.client_order_id} (cid {cid}, cid_date {cid_date(created)})"
                " may or may not exist: no reply; reconcile before retrying"
            )
        raise ExchangeUnavailable(
            f"bitfinex did not accept order {order.client_order_id} within "
            f"{self.options.maintenance_wait_s:.0f} s (rate limit or maintenance); try again later"
        )

    @staticmethod
    def _check_rounding(order: Order, market: Market) -> None:
        if market.round_amount(order.amount) != order.amount:
            raise OrderRejected(
                f"order {order.client_order_id}: amount {order.amount} is not rounded to 8 "
                "decimals; round it with Market.round_amount"
            )
        for name in ("price", "stop_price"):
            value = getattr(order, name)
            if value is not None and market.round_price(value) != value:
                raise OrderRejected(
                    f"order {order.client_order_id}: {name} {value} has more than 5 "
                    "significant digits; round it with Market.round_price"
                )

    async def cancel_order(self, client_order_id: str) -> Order:
        """Cancel by client order id; a finished order is returned as it is."""
        cid = client_order_number(client_order_id)
        since = self._now_ms() - self.options.order_lookup_days * DAY_MS
        raw = await self._find(cid, since)
        if raw is None:
            raise OrderRejected(
                f"bitfinex has no order {client_order_id} (cid {cid}) in the last "
                f"{self.options.order_lookup_days} days: nothing to cancel"
            )
        self._client_ids.setdefault(cid, client_order_id)
        if order_status(str(raw[13])).is_final:
            return self._order(raw)
        with contextlib.suppress(ccxt_async.OrderNotFound):  # finished meanwhile
            await self.rest.call("privatePostAuthWOrderCancel", {"id": int(raw[0])}, "cancel")
        again: list[Any] | None = None
        for _ in range(5):
            again = await self._find(cid, since)
            if again is not None and order_status(str(again[13])).is_final:
                return self._order(again)
            await self.clock.sleep(0.5)  # Bitfinex confirms cancellations asynchronously
        return self._order(again if again is not None else raw)

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Active orders, optionally of one market."""
        if symbol is None:
            rows = await self.rest.call("privatePostAuthROrders", {}, "open orders")
        else:
            rows = await self.rest.call(
                "privatePostAuthROrdersSymbol", {"symbol": pair_id_of(symbol)}, "open orders"
            )
        return [self._order(raw) for raw in rows]

    async def order_status(self, client_order_id: str) -> Order | None:
        """The order's state; ``None`` when neither active orders nor the order history
        (``order_lookup_days``, Bitfinex keeps two weeks) hold its ``cid``."""
        cid = client_order_number(client_order_id)
        self._client_ids.setdefault(cid, client_order_id)
        since = self._now_ms() - self.options.order_lookup_days * DAY_MS
        raw = await self._find(cid, since)
        return None if raw is None else self._order(raw)

    async def own_trades(self, since: int, symbol: str | None = None) -> list[Fill]:
        """Our fills at or after ``since`` (ms), oldest first; fees positive (a cost)."""
        body: dict[str, Any] = {"start": since, "end": self._now_ms() + DAY_MS, "limit": 2500}
        if symbol is None:
            rows = await self.rest.call("privatePostAuthRTradesHist", body, "own trades")
        else:
            body["symbol"] = pair_id_of(symbol)
            rows = await self.rest.call("privatePostAuthRTradesSymbolHist", body, "own trades")
        fills = []
        for row in rows:
            if int(row[2]) < since:
                continue
            amount = _decimal(row[4])
            fills.append(
                Fill(
                    fill_id=str(row[0]),
                    client_order_id=self._client_id(row[11] if len(row) > 11 else None),
                    exchange=self.name,
                    symbol=symbol_of(str(row[1])),
                    side=OrderSide.BUY if amount > 0 else OrderSide.SELL,
                    amount=abs(amount),
                    price=_decimal(row[5]),
                    fee=-_decimal(row[9] or 0),
                    fee_currency=common_code(str(row[10] or "")),
                    time=int(row[2]),
                    maker=row[8] == 1,
                )
            )
        fills.sort(key=lambda fill: (fill.time, fill.fill_id))
        return fills


def _reason(error: Exception) -> str:
    """Bitfinex's text from a ccxt error (``bitfinex Invalid order: ...``); never a secret."""
    text = str(error).strip()
    if text.startswith("bitfinex "):
        text = text[len("bitfinex ") :]
    return f"{text} ({type(error).__name__})" if text else type(error).__name__


def create_exchange(options: BitfinexOptions, context: PluginContext) -> BitfinexExchange:
    """Factory of the ``bitfinex`` registration."""
    return BitfinexExchange(options, context)
