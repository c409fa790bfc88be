"""The fake's accounts and matching engine for EXCHANGE orders.

One fill per order, against the pair's own trade path: a market order fills at the last trade
price, a limit order fills at its limit once a trade crosses it (at once, as taker, at the last
price if it already crosses when placed; a post-only one is then cancelled instead), a stop order
fills at the trade price that touches its trigger. Fees: maker 0.1 %, taker 0.2 %, charged in the
currency received and reported negative, as Bitfinex does. Balances are decimals; the order's
funds are reserved while it rests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from trader_exchange_bitfinex.testing.market import FakePair, derived_seed, truncate_price

POST_ONLY = 4096
SUPPORTED_TYPES = ("EXCHANGE MARKET", "EXCHANGE LIMIT", "EXCHANGE STOP")
_EIGHT = Decimal("0.00000001")


class BitfinexError(Exception):
    """An error the fake answers with ``["error", code, message]`` (HTTP 500 unless told)."""

    def __init__(self, code: int, message: str, status: int = 500) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> list[Any]:
        """The JSON body Bitfinex sends for this error."""
        return ["error", self.code, self.message]


def _q(value: Decimal) -> Decimal:
    return value.quantize(_EIGHT)


def _num(value: Decimal) -> float:
    return float(value)


def cid_date(mts: int) -> str:
    """The UTC date (``YYYY-MM-DD``) that, with the cid, names an order created at ``mts``."""
    return dt.datetime.fromtimestamp(mts / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d")


@dataclass
class FakeOrder:
    """An order on the fake, rendered as Bitfinex's 32-field order array by :meth:`row`."""

    id: int
    cid: int | None
    gid: int | None
    symbol: str
    mts_create: int
    mts_update: int
    amount: Decimal
    amount_orig: Decimal
    type: str
    flags: int
    price: Decimal
    status: str = "ACTIVE"
    price_avg: Decimal = Decimal(0)
    reserved_currency: str = ""
    reserved: Decimal = Decimal(0)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def cid_date(self) -> str:
        """The UTC date of creation, the second half of the client order id."""
        return cid_date(self.mts_create)

    @property
    def is_buy(self) -> bool:
        """True for a buy (positive amount)."""
        return self.amount_orig > 0

    def row(self) -> list[Any]:
        """The order as ``[ID, GID, CID, SYMBOL, MTS_CREATE, MTS_UPDATE, AMOUNT, ...]``."""
        return [
            self.id,
            self.gid,
            self.cid,
            self.symbol,
            self.mts_create,
            self.mts_update,
            _num(self.amount),
            _num(self.amount_orig),
            self.type,
            None,
            None,
            None,
            self.flags,
            self.status,
            None,
            None,
            _num(self.price),
            _num(self.price_avg),
            0,
            0,
            None,
            None,
            None,
            0,
            0,
            None,
            None,
            None,
            "API>BFX",
            None,
            None,
            dict(self.meta),
        ]


@dataclass
class FakeAccount:
    """One API key of the fake: its secret, nonce, exchange wallets, orders and fills."""

    key: str
    secret: str
    user_id: int
    wallets: dict[str, Decimal] = field(default_factory=dict)
    last_nonce: int = 0
    active: dict[int, FakeOrder] = field(default_factory=dict)
    closed: list[FakeOrder] = field(default_factory=list)
    trades: list[list[Any]] = field(default_factory=list)

    def reserved(self, currency: str) -> Decimal:
        """Funds of ``currency`` held by resting orders."""
        return sum(
            (o.reserved for o in self.active.values() if o.reserved_currency == currency),
            Decimal(0),
        )

    def available(self, currency: str) -> Decimal:
        """Balance of ``currency`` not held by resting orders."""
        return self.wallets.get(currency, Decimal(0)) - self.reserved(currency)

    def wallet_rows(self) -> list[list[Any]]:
        """``[["exchange", CURRENCY, BALANCE, UNSETTLED, AVAILABLE, null, null], ...]``."""
        return [
            ["exchange", currency, _num(total), 0, _num(self.available(currency)), None, None]
            for currency, total in sorted(self.wallets.items())
        ]

    def find(self, order_id: int) -> FakeOrder | None:
        """The order with ``order_id``, active or closed."""
        if order_id in self.active:
            return self.active[order_id]
        return next((o for o in self.closed if o.id == order_id), None)


#: ``listener(account, event, payload)``: ``on``/``oc``/``te``/``wu`` as on the account channel.
Listener = Callable[[FakeAccount, str, list[Any]], None]


class MatchingEngine:
    """Accounts, order validation, matching and the wallet ledger of the fake."""

    def __init__(self, pairs: dict[str, FakePair], *, seed: int) -> None:
        self.pairs = pairs
        self.accounts: dict[str, FakeAccount] = {}
        self.maker_fee = Decimal("0.001")
        self.taker_fee = Decimal("0.002")
        self.listeners: list[Listener] = []
        self._order_ids = derived_seed(seed, "orders") % 10**10 + 10**11
        self._trade_ids = derived_seed(seed, "fills") % 10**9 + 10**9

    # -- accounts --------------------------------------------------------------------------

    def add_account(
        self, key: str, secret: str, balances: dict[str, float | str | Decimal]
    ) -> FakeAccount:
        """Create (or replace) the account of API key ``key`` with exchange wallet ``balances``."""
        account = FakeAccount(key, secret, user_id=len(self.accounts) + 1)
        account.wallets = {c: _q(Decimal(str(v))) for c, v in balances.items()}
        self.accounts[key] = account
        return account

    def _emit(self, account: FakeAccount, event: str, payload: list[Any]) -> None:
        for listener in list(self.listeners):
            listener(account, event, payload)

    # -- orders ----------------------------------------------------------------------------

    def submit(
        self, account: FakeAccount, body: dict[str, Any], now: int, last_price: float
    ) -> FakeOrder:
        """Validate and place an order from a submit body; raise :class:`BitfinexError`."""
        symbol = body.get("symbol")
        pair = self.pairs.get(symbol[1:]) if isinstance(symbol, str) and symbol[:1] == "t" else None
        if pair is None:
            raise BitfinexError(10020, "symbol: invalid")
        order_type = body.get("type")
        if order_type not in SUPPORTED_TYPES:
            raise BitfinexError(10020, "type: invalid")
        amount = _decimal(body.get("amount"), "amount")
        if amount == 0:
            raise BitfinexError(10020, "amount: invalid")
        flags = body.get("flags", 0)
        if not isinstance(flags, int):
            raise BitfinexError(10020, "flags: invalid")
        cid = body.get("cid")
        if cid is not None and not isinstance(cid, int):
            raise BitfinexError(10020, "cid: invalid")
        gid = body.get("gid")
        size = abs(amount)
        label = f"{pair.base}/{pair.quote}"
        if size < Decimal(pair.min_order_size):
            raise BitfinexError(
                10001, f"Invalid order: minimum size for {label} is {pair.min_order_size}"
            )
        if size > Decimal(pair.max_order_size):
            raise BitfinexError(
                10001, f"Invalid order: maximum size for {label} is {pair.max_order_size}"
            )
        if order_type == "EXCHANGE MARKET":
            price = Decimal(str(last_price))
        else:
            price = _decimal(body.get("price"), "price")
            if price <= 0:
                raise BitfinexError(10020, "price: invalid")
            price = truncate_price(price)
        if amount > 0:
            currency, need = pair.quote, _q(size * price)
        else:
            currency, need = pair.base, size
        if account.available(currency) < need:
            raise BitfinexError(
                10001,
                f"Invalid order: not enough exchange balance for {_plain(amount)} {pair.pair} "
                f"at {_plain(price)}",
            )
        self._order_ids += 1
        order = FakeOrder(
            id=self._order_ids,
            cid=cid,
            gid=gid if isinstance(gid, int) else None,
            symbol=pair.symbol,
            mts_create=now,
            mts_update=now,
            amount=amount,
            amount_orig=amount,
            type=order_type,
            flags=flags,
            price=price,
            reserved_currency=currency,
            reserved=need,
            meta={"$F7": 1} if flags & POST_ONLY else {},
        )
        account.active[order.id] = order
        self._emit(account, "on", order.row())
        return order

    def after_submit(self, account: FakeAccount, order: FakeOrder, last_price: float) -> None:
        """Fill or cancel at once what the last price already decides (after the reply)."""
        price = Decimal(str(last_price))
        if order.type == "EXCHANGE MARKET":
            self._fill(account, order, price, maker=False, now=order.mts_create)
        elif order.type == "EXCHANGE LIMIT":
            crosses = price <= order.price if order.is_buy else price >= order.price
            if crosses and order.flags & POST_ONLY:
                self._close(account, order, "POSTONLY CANCELED", order.mts_create)
            elif crosses:
                self._fill(account, order, price, maker=False, now=order.mts_create)
        elif self._stop_triggered(order, price):
            self._fill(account, order, price, maker=False, now=order.mts_create)

    @staticmethod
    def _stop_triggered(order: FakeOrder, price: Decimal) -> bool:
        return price >= order.price if order.is_buy else price <= order.price

    def on_trade(self, symbol: str, price: float, now: int) -> None:
        """Match every resting order of ``symbol`` against a public trade at ``price``."""
        value = Decimal(str(price))
        for account in self.accounts.values():
            for order in [o for o in account.active.values() if o.symbol == symbol]:
                if order.type == "EXCHANGE LIMIT":
                    if (value <= order.price) if order.is_buy else (value >= order.price):
                        self._fill(account, order, order.price, maker=True, now=now)
                elif order.type == "EXCHANGE STOP" and self._stop_triggered(order, value):
                    self._fill(account, order, value, maker=False, now=now)

    def _fill(
        self, account: FakeAccount, order: FakeOrder, price: Decimal, *, maker: bool, now: int
    ) -> None:
        pair = self.pairs[order.symbol[1:]]
        size = abs(order.amount)
        rate = self.maker_fee if maker else self.taker_fee
        cost = _q(size * price)
        wallets = account.wallets
        order.reserved = Decimal(0)
        if order.is_buy:
            if wallets.get(pair.quote, Decimal(0)) - account.reserved(pair.quote) < cost:
                self._close(account, order, "INSUFFICIENT BALANCE", now)
                return
            fee, fee_currency = _q(size * rate), pair.base
            wallets[pair.quote] = wallets.get(pair.quote, Decimal(0)) - cost
            wallets[pair.base] = wallets.get(pair.base, Decimal(0)) + size - fee
        else:
            fee, fee_currency = _q(cost * rate), pair.quote
            wallets[pair.base] = wallets.get(pair.base, Decimal(0)) - size
            wallets[pair.quote] = wallets.get(pair.quote, Decimal(0)) + cost - fee
        self._trade_ids += 1
        fill = [
            self._trade_ids,
            order.symbol,
            now,
            order.id,
            _num(order.amount),
            _num(price),
            order.type,
            _num(order.price),
            1 if maker else -1,
            -_num(fee),
            fee_currency,
            order.cid,
        ]
        account.trades.append(fill)
        executed = order.amount
        order.amount = Decimal(0)
        order.price_avg = price
        self._emit(account, "te", [*fill[:9], None, None, order.cid])
        self._emit(account, "tu", list(fill))
        self._close(account, order, f"EXECUTED @ {_plain(price)}({_plain(executed)})", now)
        for currency in (pair.base, pair.quote):
            total = wallets.get(currency, Decimal(0))
            available = account.available(currency)
            wallet = ["exchange", currency, _num(total), 0, _num(available), None, None]
            self._emit(account, "wu", wallet)

    def _close(self, account: FakeAccount, order: FakeOrder, status: str, now: int) -> None:
        order.status = status
        order.mts_update = max(now, order.mts_update)
        order.reserved = Decimal(0)
        account.active.pop(order.id, None)
        account.closed.append(order)
        self._emit(account, "oc", order.row())

    def find_active(self, account: FakeAccount, body: dict[str, Any]) -> FakeOrder:
        """The active order a cancel body names by ``id`` or ``cid`` + ``cid_date``."""
        if body.get("id") is not None:
            order = account.active.get(body["id"]) if isinstance(body["id"], int) else None
        elif body.get("cid") is not None:
            wanted = (body["cid"], body.get("cid_date"))
            order = next(
                (o for o in account.active.values() if (o.cid, o.cid_date) == wanted), None
            )
        else:
            raise BitfinexError(10020, "id: invalid")
        if order is None:
            raise BitfinexError(10001, "Order not found.")
        return order

    def cancel(self, account: FakeAccount, order: FakeOrder, now: int) -> None:
        """Cancel an active order (Bitfinex confirms asynchronously; the fake at once)."""
        self._close(account, order, "CANCELED", now)


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BitfinexError(10020, f"{name}: invalid")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise BitfinexError(10020, f"{name}: invalid") from None
    if not result.is_finite():
        raise BitfinexError(10020, f"{name}: invalid")
    return result


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text
