"""The fake Bitfinex server: REST v2 (public and authenticated) and the v2 websocket on loopback.

Start it with ``async with FakeBitfinex(FakeSettings(seed=7)) as fake:`` and point a client at
:attr:`FakeBitfinex.rest_url` / :attr:`FakeBitfinex.ws_url` (:meth:`FakeBitfinex.ccxt_config`
gives ccxt's ``urls`` override). Nothing moves until the test moves the clock with
:meth:`FakeBitfinex.advance` (or :meth:`FakeBitfinex.run_clock`); faults are methods of the
server object and can be scheduled at simulated times with :meth:`FakeBitfinex.at`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import json
import math
import socket
import struct
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, Final

from aiohttp import WSMsgType, web

from trader.model import CandleArrays, Timeframe
from trader_exchange_bitfinex.testing.clock import FakeClock
from trader_exchange_bitfinex.testing.engine import (
    BitfinexError,
    FakeAccount,
    FakeOrder,
    MatchingEngine,
)
from trader_exchange_bitfinex.testing.market import (
    BITFINEX_TIMEFRAMES,
    CandleRow,
    FakePair,
    PairPath,
    Trade,
    derived_seed,
    round_price,
    to_timeframe,
)

MAX_NONCE: Final = 9_007_199_254_740_991
FLAG_TIMESTAMP: Final = 32768
FLAG_SEQ_ALL: Final = 65536
INFO_RESTART: Final = 20051
INFO_MAINTENANCE_START: Final = 20060
INFO_MAINTENANCE_END: Final = 20061
_PAIR_TAIL: Final = (None, None, None, 0.2, 0.1)
_RATE_LIMITED: Final = ["error", 11010, "ratelimit: error"]
_CURRENCY_NAMES: Final = {
    "BTC": "Bitcoin",
    "ETH": "Ethereum",
    "USD": "US Dollar",
    "EUR": "Euro",
    "UST": "Tether USDt",
    "UDC": "USD Coin",
}
_API_SYMBOLS: Final = {"UST": "USDt", "UDC": "USDC", "TSD": "TUSD", "DSH": "DASH", "IOT": "IOTA"}

#: A scheduled action: called with the server; may be a coroutine function.
Action = Callable[["FakeBitfinex"], Awaitable[None] | None]


def _default_pairs() -> tuple[FakePair, ...]:
    return (
        FakePair("BTCUSD", 30_000.0),
        FakePair("ETHUSD", 2_000.0, min_order_size="0.001"),
        FakePair("BTCUST", 30_000.0),
        FakePair("ETHBTC", 0.066, min_order_size="0.001"),
    )


def _default_rate_limits() -> dict[str, int]:
    return {
        "platform": 30,
        "conf": 90,
        "candles": 90,
        "ticker": 90,
        "tickers": 90,
        "trades": 90,
        "auth": 90,
    }


@dataclass
class FakeSettings:
    """How the fake behaves. Every field may be changed on a running server too.

    Times are simulated milliseconds (:class:`FakeClock`); ``slow`` faults use real seconds
    because they exist to trip real client timeouts.
    """

    seed: int = 0
    #: The simulated time at start (2025-01-01 00:00 UTC: in the past, so ccxt's ``end=now``
    #: filters never hide the fake's data).
    start_ms: int = 1_735_689_600_000
    #: How much trade history exists before ``start_ms``.
    history_ms: int = 3 * 86_400_000
    #: One trade per slot of this length, at a seeded offset inside the slot.
    trade_interval_ms: int = 15_000
    #: Standard deviation of the log return per trade.
    volatility: float = 0.0005
    #: Share of one-minute periods in which the seeded market has no trades (so no candle).
    quiet_probability: float = 0.0
    pairs: tuple[FakePair, ...] = field(default_factory=_default_pairs)
    #: A channel with no data for this long gets ``[chanId, "hb"]``.
    heartbeat_ms: int = 15_000
    #: Candles in a websocket snapshot (Bitfinex sends "a few hundred").
    snapshot_size: int = 240
    #: Subscriptions one websocket may hold; the next one gets error 10305.
    max_subscriptions: int = 30
    #: REST requests per minute per IP and endpoint group; ``None`` turns the limit off.
    rate_limits: dict[str, int] | None = field(default_factory=_default_rate_limits)
    #: How long an IP that went over a limit gets HTTP 429 for.
    rate_limit_block_ms: int = 60_000
    #: New websocket connections per minute per IP (``None``: unlimited); over it, HTTP 429.
    ws_connections_per_minute: int | None = None
    #: Append a trailing ``null`` to candle, ticker and trade arrays (Bitfinex may add fields).
    trailing_nulls: bool = False

    def __post_init__(self) -> None:
        for name in ("trade_interval_ms", "heartbeat_ms", "rate_limit_block_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FakeSettings.{name} must be above 0, not {getattr(self, name)}")
        for name in ("history_ms", "snapshot_size", "max_subscriptions"):
            if getattr(self, name) < 0:
                raise ValueError(f"FakeSettings.{name} must be >= 0, not {getattr(self, name)}")
        if not 0 <= self.quiet_probability <= 1:
            raise ValueError("FakeSettings.quiet_probability must be between 0 and 1")
        if not self.pairs:
            raise ValueError("FakeSettings.pairs must list at least one pair")


@dataclass
class _Channel:
    chan_id: int
    channel: str
    pair: FakePair
    key: str | None
    timeframe: Timeframe | None
    last_sent_ms: int


class _Connection:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request, opened_ms: int) -> None:
        self.ws = ws
        self.request = request
        self.channels: dict[int, _Channel] = {}
        self.flags = 0
        self.seq = 0
        self.silent = False
        self.account: FakeAccount | None = None
        self.auth_last_sent_ms = opened_ms
        self.closed = False

    @property
    def transport(self) -> asyncio.Transport | None:
        transport = self.request.transport
        return transport if isinstance(transport, asyncio.Transport) else None


class FakeBitfinex:
    """A Bitfinex API v2 server on 127.0.0.1 for tests: REST, websocket, matching, faults.

    Use as an async context manager (or call :meth:`start` and :meth:`close`). It listens on a
    free port of the loopback interface only.
    """

    def __init__(self, settings: FakeSettings | None = None, *, port: int = 0) -> None:
        self.settings = settings or FakeSettings()
        self._port_wanted = port
        s = self.settings
        self.clock = FakeClock(s.start_ms)
        self.pairs: dict[str, FakePair] = {p.pair: p for p in s.pairs}
        self.paths: dict[str, PairPath] = {
            p.pair: PairPath(
                p,
                seed=s.seed,
                origin_ms=s.start_ms - s.history_ms,
                trade_interval_ms=s.trade_interval_ms,
                volatility=s.volatility,
                quiet_probability=s.quiet_probability,
            )
            for p in s.pairs
        }
        for path in self.paths.values():
            while path.next_time <= s.start_ms:
                path.step()
        self.engine = MatchingEngine(self.pairs, seed=s.seed)
        self.engine.listeners.append(self._on_account_event)
        self._pending_account_events: list[tuple[FakeAccount, str, list[Any]]] = []
        self.platform_status = 1
        self.maintenance = False
        #: Every REST request as ``(method, path with query)``, in arrival order.
        self.requests: list[tuple[str, str]] = []
        #: How many websocket subscriptions succeeded so far (resubscriptions included).
        self.ws_subscriptions = 0
        self._connections: set[_Connection] = set()
        self._chan_ids = derived_seed(s.seed, "channels") % 100_000 + 10_000
        self._hits: dict[tuple[str, str], deque[int]] = {}
        self._blocked_until: dict[str, int] = {}
        self._ws_connects: dict[str, deque[int]] = {}
        self._refuse_ws_until = -1
        self._nonce_errors = 0
        self._slow: list[tuple[float, str]] = []
        self._schedule: list[tuple[int, int, Action]] = []
        self._schedule_seq = 0
        self._advance_lock = asyncio.Lock()
        self._in_flight = 0
        self._idle: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self.port = 0
        self._server_id = _uuid(s.seed, "server")

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeBitfinex:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a free port unless one was given (see :attr:`port`)."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/v2/platform/status", self._platform_status)
        app.router.add_get("/v2/conf/{config}", self._conf)
        app.router.add_get("/v2/candles/{key}/{section}", self._candles)
        app.router.add_get("/v2/ticker/{symbol}", self._ticker)
        app.router.add_get("/v2/tickers", self._tickers)
        app.router.add_get("/v2/trades/{symbol}/hist", self._public_trades)
        app.router.add_post("/v2/auth/{tail:.+}", self._auth)
        app.router.add_get("/ws/2", self._websocket)
        app.router.add_get("/_fake/state", self._admin_state)
        app.router.add_post("/_fake/advance", self._admin_advance)
        app.router.add_post("/_fake/fault", self._admin_fault)
        app.router.add_post("/_fake/accounts", self._admin_account)
        app.router.add_get("/_fake/candles/{symbol}/{timeframe}", self._admin_candles)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port_wanted)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])

    async def close(self) -> None:
        """Stop the clock runner, close every websocket and stop listening."""
        await self.stop_clock()
        for connection in list(self._connections):
            try:
                await asyncio.wait_for(connection.ws.close(code=1001), 0.5)
            except Exception:  # a client that does not answer the close: cut it off
                await self._drop(connection, "abort")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API, without ``/v2`` (the form ccxt wants)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """URL of the websocket API (``/ws/2``)."""
        return f"ws://127.0.0.1:{self.port}/ws/2"

    def ccxt_config(self, api_key: str | None = None, secret: str | None = None) -> dict[str, Any]:
        """Constructor options that point ``ccxt.bitfinex`` / ``ccxt.pro.bitfinex`` here."""
        config: dict[str, Any] = {
            "urls": {
                "api": {
                    "v1": self.rest_url,
                    "public": self.rest_url,
                    "private": self.rest_url,
                    "ws": {"public": self.ws_url, "private": self.ws_url},
                }
            }
        }
        if api_key is not None:
            config["apiKey"] = api_key
            config["secret"] = secret
        return config

    # -- accounts and ground truth ---------------------------------------------------------

    def add_account(
        self, api_key: str, secret: str, balances: dict[str, float | str | Decimal] | None = None
    ) -> FakeAccount:
        """Create the account of ``api_key`` with exchange wallet ``balances`` (Bitfinex codes)."""
        return self.engine.add_account(api_key, secret, balances or {})

    def account(self, api_key: str) -> FakeAccount:
        """The account of ``api_key`` (its wallets, orders and fills)."""
        return self.engine.accounts[api_key]

    def orders_with_cid(self, api_key: str, cid: int) -> list[FakeOrder]:
        """Every order (active or closed) of ``api_key`` carrying client order id ``cid``."""
        account = self.account(api_key)
        return [o for o in [*account.active.values(), *account.closed] if o.cid == cid]

    def pair_id(self, symbol: str) -> str:
        """Bitfinex pair for ``symbol``: ``tBTCUSD``, ``BTCUSD`` or unified ``BTC/USDT``."""
        if "/" in symbol:
            reverse = {"USDT": "UST", "USDC": "UDC", "TUSD": "TSD", "DASH": "DSH", "IOTA": "IOT"}
            base, quote = (reverse.get(c, c) for c in symbol.split("/", 1))
            pair = f"{base}:{quote}" if len(base) > 3 or len(quote) > 3 else base + quote
        else:
            pair = symbol[1:] if symbol.startswith("t") and symbol[1:] in self.pairs else symbol
        if pair not in self.pairs:
            raise KeyError(f"the fake lists no pair {symbol!r}; it has {sorted(self.pairs)}")
        return pair

    def price(self, symbol: str) -> float:
        """The last trade price of ``symbol``."""
        return self.paths[self.pair_id(symbol)].last_price

    def ground_truth(
        self, symbol: str, timeframe: str | Timeframe, *, include_forming: bool = False
    ) -> CandleArrays:
        """Every candle the fake has served or would serve for ``symbol`` and ``timeframe``.

        Oldest first, revisions applied, skipped periods absent; the still-forming candle only
        with ``include_forming`` (marked ``closed=False``). Accepts ``tBTCUSD`` or ``BTC/USD``
        and ``1m``/``1D``/``7D``/``1d``/``1w`` spellings.
        """
        path = self.paths[self.pair_id(symbol)]
        return path.ground_truth(
            to_timeframe(timeframe), self.clock.now_ms(), include_forming=include_forming
        )

    @property
    def connection_count(self) -> int:
        """How many websockets are open."""
        return len(self._connections)

    def subscribed(self) -> list[str]:
        """What the open websockets are subscribed to: the candle key or ``channel:symbol``."""
        return sorted(
            sub.key if sub.key is not None else f"{sub.channel}:{sub.pair.symbol}"
            for connection in self._connections
            for sub in connection.channels.values()
        )

    # -- time ------------------------------------------------------------------------------

    def at(self, time_ms: int, action: Action) -> None:
        """Run ``action(fake)`` when the simulated clock reaches ``time_ms``."""
        self._schedule_seq += 1
        self._schedule.append((time_ms, self._schedule_seq, action))
        self._schedule.sort(key=lambda item: (item[0], item[1]))

    async def advance(self, ms: int) -> None:
        """Move the clock ``ms`` forward, playing every trade, heartbeat and scheduled action.

        Events happen in time order. The event loop gets a turn whenever a sleeper of
        :meth:`FakeClock.sleep` wakes or a scheduled action runs (so they run at their simulated
        time), every few hundred events, and at the end; frames reach clients in order.
        """
        async with self._advance_lock:
            target = self.clock.now_ms() + max(0, ms)
            paths = list(self.paths.values())
            heartbeat_floor = self._next_heartbeat()
            events = 0
            while True:
                now = self.clock.now_ms()
                when = min(min(p.next_time for p in paths), target)
                if heartbeat_floor is not None and heartbeat_floor < when:
                    when = heartbeat_floor
                if self._schedule and self._schedule[0][0] < when:
                    when = self._schedule[0][0]
                wake = self.clock.next_wake_ms()
                woke = wake is not None and wake <= when
                if woke:
                    assert wake is not None
                    when = wake
                when = max(now, when)
                self.clock.set(when)
                yield_now = woke
                while self._schedule and self._schedule[0][0] <= when:
                    _, _, action = self._schedule.pop(0)
                    result = action(self)
                    if inspect.isawaitable(result):
                        await result
                    yield_now = True
                for path in paths:
                    while path.next_time <= when:
                        trade = path.step(paused=self.maintenance)
                        if trade is not None:
                            await self._publish_trade(path, trade)
                            events += 1
                # Channel deadlines only move later, and new channels start one interval from
                # now, so the last minimum stays a safe lower bound until it is reached.
                if heartbeat_floor is None or heartbeat_floor <= when:
                    await self._send_heartbeats(when)
                    heartbeat_floor = self._next_heartbeat()
                if yield_now or events >= 256 or when >= target:
                    events = 0
                    await asyncio.sleep(0)
                if when >= target:
                    return

    async def run_clock(self, speed: float = 60.0, tick_s: float = 0.005) -> None:
        """Advance the clock in the background, ``speed`` simulated seconds per real second."""
        await self.stop_clock()

        async def runner() -> None:
            loop = asyncio.get_running_loop()
            last = loop.time()
            while True:
                await asyncio.sleep(tick_s)
                current = loop.time()
                await self.advance(round((current - last) * speed * 1000))
                last = current

        self._clock_task = asyncio.create_task(runner())

    async def stop_clock(self) -> None:
        """Stop the background clock started by :meth:`run_clock`."""
        task, self._clock_task = self._clock_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- faults ----------------------------------------------------------------------------

    async def drop_connections(self, mode: str = "abort") -> int:
        """Drop every websocket; return how many were dropped.

        ``mode``: ``"abort"`` closes the TCP connection without a close frame (clients see
        1006), ``"reset"`` does the same with a TCP RST, ``"close"`` sends a clean close 1000.
        """
        connections = list(self._connections)
        for connection in connections:
            await self._drop(connection, mode)
        return len(connections)

    async def _drop(self, connection: _Connection, mode: str) -> None:
        connection.closed = True
        self._connections.discard(connection)
        if mode == "close":
            with contextlib.suppress(Exception):
                await connection.ws.close(code=1000)
            return
        transport = connection.transport
        if transport is None:
            return
        if mode == "reset":
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def restart(self, refuse_ms: int = 0, mode: str = "abort") -> None:
        """Bitfinex restarting its websocket server: info 20051 on every socket, then a drop.

        New connections are refused (HTTP 503) for ``refuse_ms`` of simulated time.
        """
        await self._broadcast_info(INFO_RESTART, "Stop/Restart Websocket Server (please reconnect)")
        self._refuse_ws_until = self.clock.now_ms() + refuse_ms
        await self.drop_connections(mode)

    async def start_maintenance(self) -> None:
        """Enter maintenance: info 20060, REST status ``[0]``, writes refused, no market data.

        Heartbeats go on; periods without trades during maintenance have no candle.
        """
        self.maintenance = True
        self.platform_status = 0
        await self._broadcast_info(INFO_MAINTENANCE_START, "Maintenance mode")

    async def end_maintenance(self) -> None:
        """Leave maintenance: info 20061, REST status ``[1]``, data and writes resume."""
        self.maintenance = False
        self.platform_status = 1
        await self._broadcast_info(INFO_MAINTENANCE_END, "Maintenance ended")

    def silence_connections(self) -> int:
        """Make every open websocket go silent (no data, heartbeats, pongs); return how many.

        The sockets stay open, like a half-dead TCP connection; new connections are normal.
        """
        for connection in self._connections:
            connection.silent = True
        return len(self._connections)

    def skip_period(self, symbol: str, start_ms: int, end_ms: int) -> None:
        """No trades (hence no candle in any timeframe) for ``symbol`` in ``[start_ms, end_ms)``.

        Applies to trades not yet played; the path itself (prices after the gap) is unchanged.
        """
        self.paths[self.pair_id(symbol)].skipped.append((start_ms, end_ms))

    async def revise_candle(self, symbol: str, time_ms: int) -> CandleRow:
        """Revise the closed one-minute candle containing ``time_ms`` with a late trade.

        The late trade raises the high and adds volume; subscribers of every timeframe whose
        candle contains it get an update carrying the old ``MTS``. Returns the revised
        one-minute candle ``[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]``.
        """
        path = self.paths[self.pair_id(symbol)]
        one_minute = BITFINEX_TIMEFRAMES["1m"]
        current = path.candle_at(one_minute, time_ms)
        base_price = current[3] if current is not None else path.last_price
        price = round_price(base_price * 1.001)
        trade = path.apply_trade(time_ms, price, 0.01)
        await self._publish_trade(path, trade, public=False)
        revised = path.candle_at(one_minute, time_ms)
        assert revised is not None
        return revised

    def block_rest(self, ip: str = "127.0.0.1", duration_ms: int | None = None) -> None:
        """Answer all REST calls from ``ip`` with HTTP 429 for ``duration_ms`` (60 s default)."""
        duration = self.settings.rate_limit_block_ms if duration_ms is None else duration_ms
        self._blocked_until[ip] = self.clock.now_ms() + duration

    def fail_nonces(self, count: int = 1) -> None:
        """Answer the next ``count`` signed requests with ``["error",10114,"nonce: small"]``."""
        self._nonce_errors += count

    def slow_replies(self, delay_s: float, count: int = 1, path_prefix: str = "/v2/") -> None:
        """Delay the next ``count`` REST replies under ``path_prefix`` by ``delay_s`` real s.

        The request itself is carried out at once (an order is placed even if the client gives
        up waiting): only the reply is late. :meth:`wait_idle` waits for delayed replies.
        """
        self._slow.extend([(delay_s, path_prefix)] * count)

    def set_balance(self, api_key: str, currency: str, amount: float | str | Decimal) -> None:
        """Set the exchange wallet balance of ``currency`` (a Bitfinex code such as ``UST``)."""
        self.account(api_key).wallets[currency] = Decimal(str(amount))

    # -- REST: plumbing --------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/v2/"):
            return await handler(request)
        self.requests.append((request.method, request.path_qs))
        self._in_flight += 1
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.clear()
        try:
            return await self._handle(request, handler)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no REST request is being handled (slow replies included).

        A client that timed out on a slow reply does not stop the server: the request is still
        carried out, as on Bitfinex. Await this before checking what it did.
        """
        if self._idle is not None and self._in_flight:
            await self._idle.wait()

    async def _handle(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        delay = 0.0
        for index, (seconds, prefix) in enumerate(self._slow):
            if request.path.startswith(prefix):
                del self._slow[index]
                delay = seconds
                break
        await request.read()  # the request has fully arrived; only the reply will be late
        response = await self._respond(request, handler)
        if delay:
            await asyncio.sleep(delay)
        return response

    async def _respond(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        ip = request.remote or "127.0.0.1"
        now = self.clock.now_ms()
        if self._blocked_until.get(ip, -1) > now:
            return web.json_response(_RATE_LIMITED, status=429)
        limits = self.settings.rate_limits
        if limits is not None:
            group = _rate_group(request.path)
            limit = limits.get(group)
            if limit is not None:
                hits = self._hits.setdefault((ip, group), deque())
                while hits and hits[0] <= now - 60_000:
                    hits.popleft()
                if len(hits) >= limit:
                    self.block_rest(ip)
                    return web.json_response(_RATE_LIMITED, status=429)
                hits.append(now)
        try:
            return await handler(request)
        except BitfinexError as error:
            return web.json_response(error.body(), status=error.status)

    # -- admin API (loopback, for tests in another process) --------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "now_ms": self.clock.now_ms(),
            "platform_status": self.platform_status,
            "connections": self.connection_count,
            "subscribed": self.subscribed(),
            "ws_subscriptions": self.ws_subscriptions,
        }

    async def _admin_state(self, request: web.Request) -> web.Response:
        return web.json_response(self._state())

    async def _admin_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json() if await request.read() else {}
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return body

    async def _admin_advance(self, request: web.Request) -> web.Response:
        ms = (await self._admin_body(request)).get("ms")
        if not isinstance(ms, int) or ms < 0:
            raise web.HTTPBadRequest(text='give {"ms": N} with N >= 0 simulated milliseconds')
        await self.advance(ms)
        return web.json_response(self._state())

    async def _admin_fault(self, request: web.Request) -> web.Response:
        from trader_exchange_bitfinex.testing.scenario import Fault, apply_fault

        body = await self._admin_body(request)
        try:
            fault = Fault(
                self.clock.now_ms(),
                str(body.get("kind")),
                int(body.get("duration_ms", 0)),
                str(body.get("symbol", "tBTCUSD")),
            )
        except (TypeError, ValueError) as error:
            raise web.HTTPBadRequest(text=str(error)) from None
        await apply_fault(self, fault)
        return web.json_response(self._state())

    async def _admin_account(self, request: web.Request) -> web.Response:
        body = await self._admin_body(request)
        key, secret, balances = body.get("key"), body.get("secret"), body.get("balances", {})
        if (
            not isinstance(key, str)
            or not isinstance(secret, str)
            or not isinstance(balances, dict)
        ):
            raise web.HTTPBadRequest(text='give {"key": K, "secret": S, "balances": {CODE: N}}')
        self.add_account(key, secret, balances)
        return web.json_response({"key": key})

    async def _admin_candles(self, request: web.Request) -> web.Response:
        try:
            candles = self.ground_truth(
                request.match_info["symbol"],
                request.match_info["timeframe"],
                include_forming=request.query.get("forming") == "1",
            )
        except (KeyError, ValueError) as error:
            raise web.HTTPNotFound(text=str(error)) from None
        return web.json_response([list(row) for row in candles.rows()])

    # -- REST: public ----------------------------------------------------------------------

    async def _platform_status(self, request: web.Request) -> web.Response:
        return web.json_response([self.platform_status])

    async def _conf(self, request: web.Request) -> web.Response:
        items = request.match_info["config"].split(",")
        return web.json_response([self._conf_item(item) for item in items])

    def _conf_item(self, item: str) -> list[Any]:
        pairs = sorted(self.pairs)
        currencies = sorted({c for p in self.pairs.values() for c in (p.base, p.quote)})
        if item in ("pub:list:pair:exchange", "pub:list:pair:margin"):
            return pairs
        if item == "pub:list:currency":
            return currencies
        if item == "pub:info:pair":
            return [
                [
                    p.pair,
                    [None, None, None, p.min_order_size, p.max_order_size, *_PAIR_TAIL],
                ]
                for p in sorted(self.pairs.values(), key=lambda p: p.pair)
            ]
        if item == "pub:map:currency:sym":
            return [[c, _API_SYMBOLS[c]] for c in currencies if c in _API_SYMBOLS]
        if item == "pub:map:currency:label":
            return [[c, _CURRENCY_NAMES.get(c, c)] for c in currencies]
        return []

    def _path_for(self, symbol: str) -> PairPath:
        path = self.paths.get(symbol[1:]) if symbol.startswith("t") else None
        if path is None:
            raise BitfinexError(10020, "symbol: invalid")
        return path

    async def _candles(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        parts = key.split(":", 2)
        if len(parts) != 3 or parts[0] != "trade" or parts[1] not in BITFINEX_TIMEFRAMES:
            raise BitfinexError(10020, "key: invalid")
        path = self._path_for(parts[2])
        timeframe = BITFINEX_TIMEFRAMES[parts[1]]
        section = request.match_info["section"]
        now = self.clock.now_ms()
        if section == "last":
            rows = path.candles(timeframe, end=now)
            return web.json_response(self._out(rows[-1]) if rows else [])
        if section != "hist":
            raise BitfinexError(10020, "section: invalid")
        query = request.query
        limit = _int_param(query, "limit", 100)
        if not 1 <= limit <= 10_000:
            raise BitfinexError(10020, "limit: invalid")
        sort = _int_param(query, "sort", -1)
        start = _int_param(query, "start", None)
        end = _int_param(query, "end", None)
        end = now if end is None else min(end, now)
        rows = path.candles(timeframe, start, end)
        rows = rows[:limit] if sort == 1 else rows[::-1][:limit]
        return web.json_response([self._out(row) for row in rows])

    def _out(self, row: list[Any]) -> list[Any]:
        out = list(row)
        if self.settings.trailing_nulls:
            out.append(None)
        return out

    def _ticker_row(self, path: PairPath) -> list[Any]:
        now = self.clock.now_ms()
        day = path.candles(BITFINEX_TIMEFRAMES["1m"], now - 86_400_000, now)
        last = path.last_price
        first = day[0][1] if day else last
        change = round_price(last - first)
        return self._out(
            [
                round_price(last * 0.9999),
                1.5,
                round_price(last * 1.0001),
                1.5,
                change,
                round(change / first, 8) if first else 0,
                last,
                round(sum(r[5] for r in day), 8),
                max((r[3] for r in day), default=last),
                min((r[4] for r in day), default=last),
            ]
        )

    async def _ticker(self, request: web.Request) -> web.Response:
        return web.json_response(self._ticker_row(self._path_for(request.match_info["symbol"])))

    async def _tickers(self, request: web.Request) -> web.Response:
        wanted = request.query.get("symbols", "ALL")
        symbols = [p.symbol for p in self.pairs.values()] if wanted == "ALL" else wanted.split(",")
        rows = []
        for symbol in symbols:
            path = self.paths.get(symbol[1:]) if symbol.startswith("t") else None
            if path is not None:
                rows.append([symbol, *self._ticker_row(path)])
        return web.json_response(rows)

    async def _public_trades(self, request: web.Request) -> web.Response:
        path = self._path_for(request.match_info["symbol"])
        query = request.query
        limit = _int_param(query, "limit", 125)
        if not 1 <= limit <= 10_000:
            raise BitfinexError(10020, "limit: invalid")
        start = _int_param(query, "start", None)
        end = _int_param(query, "end", None)
        trades = [
            t.row()
            for t in path.trades
            if (start is None or t.time >= start) and (end is None or t.time <= end)
        ]
        trades = trades[:limit] if _int_param(query, "sort", -1) == 1 else trades[::-1][:limit]
        return web.json_response([self._out(t) for t in trades])

    # -- REST: authenticated ---------------------------------------------------------------

    def _authenticate(
        self, key: str, nonce_text: str, payload: bytes, signature: str
    ) -> FakeAccount:
        """Check key, signature and nonce as Bitfinex does; shared by REST and websocket auth."""
        account = self.engine.accounts.get(key)
        if account is None:
            raise BitfinexError(10100, "apikey: invalid")
        expected = hmac.new(account.secret.encode(), payload, hashlib.sha384).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise BitfinexError(10100, "apikey: digest invalid")
        if not nonce_text.isdigit() or int(nonce_text) > MAX_NONCE:
            raise BitfinexError(10114, "nonce: invalid")
        if self._nonce_errors > 0:
            self._nonce_errors -= 1
            raise BitfinexError(10114, "nonce: small")
        nonce = int(nonce_text)
        if nonce <= account.last_nonce:
            raise BitfinexError(10114, "nonce: small")
        account.last_nonce = nonce
        return account

    async def _auth(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = request.headers
        key = headers.get("bfx-apikey", "")
        nonce_text = headers.get("bfx-nonce", "")
        signature = headers.get("bfx-signature", "")
        try:
            account = self._authenticate(
                key, nonce_text, ("/api" + request.path + nonce_text).encode() + raw, signature
            )
        except BitfinexError as error:
            if error.code != 10100 or request.raw_path == request.path:
                raise
            raw_path = request.raw_path.split("?", 1)[0]
            account = self._authenticate(
                key, nonce_text, ("/api" + raw_path + nonce_text).encode() + raw, signature
            )
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise BitfinexError(10020, "body: invalid") from None
        if not isinstance(body, dict):
            raise BitfinexError(10020, "body: invalid")
        tail = request.match_info["tail"]
        if tail.startswith("w/") and self.maintenance:
            raise BitfinexError(20060, "maintenance")
        reply = self._dispatch(account, tail, body)
        await self._flush_account_events()
        return web.json_response(reply)

    def _dispatch(self, account: FakeAccount, tail: str, body: dict[str, Any]) -> Any:
        now = self.clock.now_ms()
        if tail == "r/wallets":
            return account.wallet_rows()
        if tail == "w/order/submit":
            symbol = body.get("symbol")
            path = self.paths.get(symbol[1:]) if isinstance(symbol, str) else None
            last = path.last_price if path is not None else 0.0
            order = self.engine.submit(account, body, now, last)
            reply = [now, "on-req", None, None, [order.row()], None, "SUCCESS"]
            reply.append("Submitting 1 orders.")
            self.engine.after_submit(account, order, last)
            return reply
        if tail == "w/order/cancel":
            order = self.engine.find_active(account, body)
            row = order.row()
            self.engine.cancel(account, order, now)
            text = f"Submitted for cancellation; waiting for confirmation (ID: {order.id})."
            return [now, "oc-req", None, None, row, None, "SUCCESS", text]
        if tail == "w/order/cancel/multi":
            orders = self._multi_targets(account, body)
            rows = [o.row() for o in orders]
            for order in orders:
                self.engine.cancel(account, order, now)
            text = f"Submitting {len(rows)} order cancellations."
            return [now, "oc_multi-req", None, None, rows, None, "SUCCESS", text]
        parts = tail.split("/")
        if parts[:2] == ["r", "orders"] and len(parts) <= 4:
            symbol = parts[2] if len(parts) >= 3 and parts[2] != "hist" else None
            history = parts[-1] == "hist"
            return self._orders(account, symbol, body, history)
        if parts[:2] == ["r", "trades"] and parts[-1] == "hist" and len(parts) <= 4:
            symbol = parts[2] if len(parts) == 4 else None
            return self._my_trades(account, symbol, body)
        if len(parts) == 4 and parts[:2] == ["r", "order"] and parts[3] == "trades":
            symbol, _, order_id = parts[2].rpartition(":")
            return [t for t in account.trades if str(t[3]) == order_id and t[1] == symbol]
        raise BitfinexError(10020, f"action: invalid ({tail})", status=404)

    def _multi_targets(self, account: FakeAccount, body: dict[str, Any]) -> list[FakeOrder]:
        orders = list(account.active.values())
        if body.get("all"):
            return orders
        if isinstance(body.get("id"), list):
            ids = set(body["id"])
            return [o for o in orders if o.id in ids]
        if isinstance(body.get("cid"), list):
            wanted = {(c, d) for c, d in body["cid"]}
            return [o for o in orders if (o.cid, o.cid_date) in wanted]
        if isinstance(body.get("gid"), list):
            gids = set(body["gid"])
            return [o for o in orders if o.gid in gids]
        raise BitfinexError(10020, "id: invalid")

    def _orders(
        self, account: FakeAccount, symbol: str | None, body: dict[str, Any], history: bool
    ) -> list[list[Any]]:
        ids = body.get("id")
        if history:
            orders = sorted(account.closed, key=lambda o: (o.mts_update, o.id), reverse=True)
            start, end = body.get("start"), body.get("end")
            orders = [
                o
                for o in orders
                if (start is None or o.mts_update >= start) and (end is None or o.mts_update <= end)
            ]
        else:
            orders = sorted(account.active.values(), key=lambda o: o.id)
        if symbol is not None:
            orders = [o for o in orders if o.symbol == symbol]
        if isinstance(ids, list):
            orders = [o for o in orders if o.id in set(ids)]
        if history:
            limit = body.get("limit", 25)
            if not isinstance(limit, int) or not 1 <= limit <= 2500:
                raise BitfinexError(10020, "limit: invalid")
            orders = orders[:limit]
        return [o.row() for o in orders]

    def _my_trades(
        self, account: FakeAccount, symbol: str | None, body: dict[str, Any]
    ) -> list[list[Any]]:
        start, end = body.get("start"), body.get("end")
        limit = body.get("limit", 25)
        if not isinstance(limit, int) or not 1 <= limit <= 2500:
            raise BitfinexError(10020, "limit: invalid")
        trades = [
            t
            for t in account.trades
            if (symbol is None or t[1] == symbol)
            and (start is None or t[2] >= start)
            and (end is None or t[2] <= end)
        ]
        trades = trades[:limit] if body.get("sort") == 1 else trades[::-1][:limit]
        return [list(t) for t in trades]

    # -- websocket -------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        now = self.clock.now_ms()
        ip = request.remote or "127.0.0.1"
        if now < self._refuse_ws_until:
            return web.Response(status=503, text="restarting")
        per_minute = self.settings.ws_connections_per_minute
        if per_minute is not None:
            connects = self._ws_connects.setdefault(ip, deque())
            while connects and connects[0] <= now - 60_000:
                connects.popleft()
            if len(connects) >= per_minute:
                return web.Response(status=429, text="too many connections")
            connects.append(now)
        ws = web.WebSocketResponse(autoping=False, compress=False)
        await ws.prepare(request)
        connection = _Connection(ws, request, now)
        self._connections.add(connection)
        await self._send(
            connection,
            {
                "event": "info",
                "version": 2,
                "serverId": self._server_id,
                "platform": {"status": self.platform_status},
            },
        )
        try:
            async for message in ws:
                if connection.closed:
                    break
                if message.type == WSMsgType.TEXT:
                    await self._on_text(connection, message.data)
                elif message.type == WSMsgType.PING and not connection.silent:
                    await ws.pong(message.data)
        finally:
            self._connections.discard(connection)
            connection.closed = True
        return ws

    async def _send(self, connection: _Connection, message: Any) -> None:
        if connection.silent or connection.closed:
            return
        try:
            await connection.ws.send_str(json.dumps(message, separators=(",", ":")))
        except (ConnectionError, RuntimeError):
            connection.closed = True
            self._connections.discard(connection)

    async def _send_data(self, connection: _Connection, frame: list[Any]) -> None:
        if connection.flags & FLAG_SEQ_ALL:
            connection.seq += 1
            frame.append(connection.seq)
        if connection.flags & FLAG_TIMESTAMP:
            frame.append(self.clock.now_ms())
        await self._send(connection, frame)

    async def _error(
        self, connection: _Connection, request: dict[str, Any], code: int, msg: str, **extra: Any
    ) -> None:
        reply = {k: v for k, v in request.items() if k != "event"}
        reply.update(event="error", msg=msg, code=code, **extra)
        await self._send(connection, reply)

    async def _on_text(self, connection: _Connection, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            await self._send(connection, {"event": "error", "msg": "data: invalid", "code": 10000})
            return
        if isinstance(message, list):
            await self._on_input(connection, message)
            return
        if not isinstance(message, dict):
            await self._send(connection, {"event": "error", "msg": "data: invalid", "code": 10000})
            return
        event = message.get("event")
        now = self.clock.now_ms()
        if event == "ping":
            await self._send(connection, {"event": "pong", "ts": now, "cid": message.get("cid")})
        elif event == "conf":
            flags = message.get("flags", 0)
            connection.flags = flags if isinstance(flags, int) else 0
            await self._send(connection, {"event": "conf", "status": "OK", "flags": flags})
        elif event == "subscribe":
            await self._subscribe(connection, message)
        elif event == "unsubscribe":
            chan_id = message.get("chanId")
            if chan_id in connection.channels:
                del connection.channels[chan_id]
                await self._send(
                    connection, {"event": "unsubscribed", "status": "OK", "chanId": chan_id}
                )
            else:
                await self._error(connection, message, 10400, "unsubscribe: invalid")
        elif event == "auth":
            await self._ws_auth(connection, message)
        else:
            await self._error(connection, message, 10000, f"event: invalid ({event})")

    async def _subscribe(self, connection: _Connection, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        pair: FakePair | None = None
        timeframe: Timeframe | None = None
        key: str | None = None
        if channel == "candles":
            key = message.get("key")
            parts = key.split(":", 2) if isinstance(key, str) else []
            if len(parts) != 3 or parts[0] != "trade" or parts[1] not in BITFINEX_TIMEFRAMES:
                await self._error(connection, message, 10300, "key: invalid")
                return
            timeframe = BITFINEX_TIMEFRAMES[parts[1]]
            symbol = parts[2]
        elif channel in ("trades", "ticker"):
            symbol = message.get("symbol", "")
            if not isinstance(symbol, str):
                symbol = ""
        else:
            await self._error(connection, message, 10300, "channel: unknown")
            return
        pair = self.pairs.get(symbol[1:]) if symbol.startswith("t") else None
        if pair is None:
            await self._error(connection, message, 10300, "symbol: invalid")
            return
        for existing in connection.channels.values():
            if (existing.channel, existing.pair, existing.timeframe) == (channel, pair, timeframe):
                await self._error(
                    connection, message, 10301, "subscribe: dup", chanId=existing.chan_id
                )
                return
        taken = len(connection.channels) + (1 if connection.account is not None else 0)
        if taken >= self.settings.max_subscriptions:
            await self._error(connection, message, 10305, "subscribe: limit")
            return
        self._chan_ids += 1
        now = self.clock.now_ms()
        sub = _Channel(self._chan_ids, channel, pair, key, timeframe, now)
        connection.channels[sub.chan_id] = sub
        self.ws_subscriptions += 1
        reply: dict[str, Any] = {"event": "subscribed", "channel": channel, "chanId": sub.chan_id}
        if channel == "candles":
            reply["key"] = key
        else:
            reply.update(symbol=pair.symbol, pair=pair.pair)
        if "subId" in message:
            reply["subId"] = message["subId"]
        await self._send(connection, reply)
        path = self.paths[pair.pair]
        if channel == "candles":
            assert timeframe is not None
            rows = path.candles(timeframe, end=now)[-self.settings.snapshot_size :]
            snapshot = [self._out(row) for row in reversed(rows)]
        elif channel == "trades":
            snapshot = [self._out(t.row()) for t in list(path.trades)[-30:][::-1]]
        else:
            snapshot = self._ticker_row(path)
        await self._send_data(connection, [sub.chan_id, snapshot])

    async def _publish_trade(self, path: PairPath, trade: Trade, *, public: bool = True) -> None:
        now = self.clock.now_ms()
        candles: dict[Timeframe, list[Any] | None] = {}
        for connection in list(self._connections):
            for sub in list(connection.channels.values()):
                if sub.pair is not path.pair:
                    continue
                if sub.channel == "candles":
                    assert sub.timeframe is not None
                    if sub.timeframe not in candles:
                        row = path.candle_at(sub.timeframe, trade.time)
                        candles[sub.timeframe] = None if row is None else self._out(row)
                    candle = candles[sub.timeframe]
                    if candle is not None:
                        sub.last_sent_ms = now
                        await self._send_data(connection, [sub.chan_id, list(candle)])
                elif sub.channel == "trades" and public:
                    sub.last_sent_ms = now
                    await self._send_data(connection, [sub.chan_id, "te", self._out(trade.row())])
                    await self._send_data(connection, [sub.chan_id, "tu", self._out(trade.row())])
                elif sub.channel == "ticker" and public:
                    sub.last_sent_ms = now
                    await self._send_data(connection, [sub.chan_id, self._ticker_row(path)])
        if public:
            self.engine.on_trade(path.pair.symbol, trade.price, trade.time)
            if self._pending_account_events:
                await self._flush_account_events()

    def _next_heartbeat(self) -> int | None:
        interval = self.settings.heartbeat_ms
        times = [
            sub.last_sent_ms + interval
            for connection in self._connections
            if not connection.silent
            for sub in connection.channels.values()
        ]
        times.extend(
            connection.auth_last_sent_ms + interval
            for connection in self._connections
            if connection.account is not None and not connection.silent
        )
        return min(times) if times else None

    async def _send_heartbeats(self, now: int) -> None:
        interval = self.settings.heartbeat_ms
        for connection in list(self._connections):
            if connection.silent:
                continue
            for sub in list(connection.channels.values()):
                if sub.last_sent_ms + interval <= now:
                    sub.last_sent_ms = now
                    await self._send_data(connection, [sub.chan_id, "hb"])
            if connection.account is not None and connection.auth_last_sent_ms + interval <= now:
                connection.auth_last_sent_ms = now
                await self._send_data(connection, [0, "hb"])

    async def _broadcast_info(self, code: int, msg: str) -> None:
        for connection in list(self._connections):
            await self._send(connection, {"event": "info", "code": code, "msg": msg})

    # -- websocket: authenticated channel --------------------------------------------------

    async def _ws_auth(self, connection: _Connection, message: dict[str, Any]) -> None:
        nonce = message.get("authNonce")
        payload = message.get("authPayload")
        nonce_text = str(nonce) if isinstance(nonce, (int, str)) else ""
        try:
            if payload != f"AUTH{nonce_text}":
                raise BitfinexError(10100, "apikey: digest invalid")
            account = self._authenticate(
                str(message.get("apiKey", "")),
                nonce_text,
                str(payload).encode(),
                str(message.get("authSig", "")),
            )
        except BitfinexError as error:
            await self._send(
                connection,
                {
                    "event": "auth",
                    "status": "FAILED",
                    "chanId": 0,
                    "code": error.code,
                    "msg": error.message,
                },
            )
            return
        connection.account = account
        connection.auth_last_sent_ms = self.clock.now_ms()
        caps = {"read": 1, "write": 1}
        await self._send(
            connection,
            {
                "event": "auth",
                "status": "OK",
                "chanId": 0,
                "userId": account.user_id,
                "auth_id": _uuid(account.key, "auth"),
                "caps": {name: dict(caps) for name in ("orders", "account", "wallets", "history")},
            },
        )
        await self._send_data(connection, [0, "ps", []])
        await self._send_data(connection, [0, "ws", account.wallet_rows()])
        await self._send_data(connection, [0, "os", [o.row() for o in account.active.values()]])

    async def _on_input(self, connection: _Connection, message: list[Any]) -> None:
        account = connection.account
        if account is None or len(message) < 4 or message[0] != 0:
            return
        kind, body = message[1], message[3]
        now = self.clock.now_ms()
        if not isinstance(body, dict):
            return
        try:
            if self.maintenance:
                raise BitfinexError(20060, "maintenance")
            if kind == "on":
                symbol = body.get("symbol")
                path = self.paths.get(symbol[1:]) if isinstance(symbol, str) else None
                last = path.last_price if path is not None else 0.0
                order = self.engine.submit(account, body, now, last)
                note = [now, "on-req", None, None, order.row(), None, "SUCCESS"]
                await self._send_data(connection, [0, "n", [*note, "Submitting 1 orders."]])
                self.engine.after_submit(account, order, last)
            elif kind == "oc":
                order = self.engine.find_active(account, body)
                note = [now, "oc-req", None, None, order.row(), None, "SUCCESS"]
                await self._send_data(connection, [0, "n", [*note, "Submitted for cancellation"]])
                self.engine.cancel(account, order, now)
        except BitfinexError as error:
            note = [now, f"{kind}-req", None, None, None, error.code, "ERROR", error.message]
            await self._send_data(connection, [0, "n", note])
        await self._flush_account_events()

    def _on_account_event(self, account: FakeAccount, event: str, payload: list[Any]) -> None:
        self._pending_account_events.append((account, event, payload))

    async def _flush_account_events(self) -> None:
        events, self._pending_account_events = self._pending_account_events, []
        for account, event, payload in events:
            for connection in list(self._connections):
                if connection.account is account:
                    connection.auth_last_sent_ms = self.clock.now_ms()
                    await self._send_data(connection, [0, event, payload])


def _uuid(*parts: object) -> str:
    return str(uuid.UUID(int=(derived_seed(*parts, 1) << 64) | derived_seed(*parts, 2)))


def _rate_group(path: str) -> str:
    parts = path.split("/")
    name = parts[2] if len(parts) > 2 else ""
    return "auth" if name == "auth" else name


def _int_param(query: Any, name: str, default: int | None) -> Any:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise BitfinexError(10020, f"{name}: invalid") from None
    if not math.isfinite(number):
        raise BitfinexError(10020, f"{name}: invalid")
    return int(number)
