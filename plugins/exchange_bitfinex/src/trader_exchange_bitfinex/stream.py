"""Live candles over Bitfinex's public v2 websocket, with a native aiohttp client.

One :class:`CandleStream` holds up to ``subscriptions_per_connection`` (at most 25) candle
channels per websocket and opens as many websockets (shards) as the series need. Each shard
reconnects with exponential backoff when its socket drops (1006, reset, clean close), when the
server announces a restart (info 20051), when maintenance ends (info 20061: everything is
resubscribed) or when the socket falls silent past ``heartbeat_timeout_s`` (Bitfinex sends a
heartbeat per channel every 15 s). After a reconnect the candles missed meanwhile are read over
REST, from ``backfill_overlap`` candles before the newest one seen, so late revisions are caught.

Every candle is compared with what was already emitted for its open time: unchanged candles are
not emitted again, revised ones are. The newest open time is the still-forming candle
(``closed=False``); when a later one arrives it is emitted once more as final (``closed=True``).
A period without trades has no candle on Bitfinex, so gaps in open times are not data loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from trader.errors import ExchangeUnavailable
from trader.interfaces.exchange import CandleUpdate
from trader.model import Candle, SeriesKey
from trader_exchange_bitfinex.clock import Clock
from trader_exchange_bitfinex.options import BitfinexOptions

log = logging.getLogger(__name__)

INFO_RESTART = 20051
INFO_MAINTENANCE_START = 20060
INFO_MAINTENANCE_END = 20061
ERROR_SUBSCRIBE_LIMIT = 10305
ERROR_SUBSCRIBE_DUP = 10301

#: ``backfill(series, start_ms, end_ms)`` -> raw rows ``[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]``.
Backfill = Callable[[SeriesKey, int, int], Awaitable[list[list[Any]]]]

_KEEP = 4096


@dataclass
class SeriesState:
    """What one series has emitted: values by open time and the newest (forming) open time."""

    key: SeriesKey
    channel_key: str
    period_ms: int
    latest: int = -1
    latest_final: bool = False
    sequence: int = 0
    changed: dict[int, int] = field(default_factory=dict)
    known: dict[int, tuple[float, float, float, float, float]] = field(default_factory=dict)
    backfill_from: int | None = None

    def apply(
        self,
        row: Sequence[Any],
        out: list[CandleUpdate],
        *,
        authoritative: bool,
        final: bool = False,
        asked_at: int | None = None,
    ) -> None:
        """Fold one raw candle row in; append what changed to ``out``.

        ``authoritative`` is False for REST rows, which never touch the forming candle (the
        websocket is fresher for it), nor a candle the websocket changed after the REST request
        went out (``asked_at``, a :attr:`sequence` value): a slow reply must not undo a revision.
        ``final`` marks snapshot rows older than the newest.
        """
        if len(row) < 6 or any(value is None for value in row[:6]):
            return  # malformed or a candle of nulls: nothing to emit
        time = int(row[0])
        if authoritative:
            self.sequence += 1
            self.changed[time] = self.sequence
        elif asked_at is not None and self.changed.get(time, -1) > asked_at:
            return
        values = (float(row[1]), float(row[3]), float(row[4]), float(row[2]), float(row[5]))
        latest = self.latest
        if time > latest:
            if not authoritative and latest >= 0:
                return
            if latest >= 0 and not self.latest_final and latest in self.known:
                out.append(CandleUpdate(self.key, Candle(latest, *self.known[latest], True)))
            self.latest = time
            self.latest_final = final
            if self.known.get(time) != values or not final:
                self.known[time] = values
                out.append(CandleUpdate(self.key, Candle(time, *values, final)))
            if len(self.known) > _KEEP:
                for old in sorted(self.known)[: _KEEP // 2]:
                    del self.known[old]
                    self.changed.pop(old, None)
        elif time == latest:
            if authoritative and self.known.get(time) != values:
                self.known[time] = values
                out.append(CandleUpdate(self.key, Candle(time, *values, self.latest_final)))
        elif self.known.get(time) != values:
            self.known[time] = values
            out.append(CandleUpdate(self.key, Candle(time, *values, True)))


class _Reconnect(Exception):
    """The session should end and the shard reconnect."""


class CandleStream:
    """Candle updates for many series from sharded websockets, into one queue."""

    def __init__(
        self,
        options: BitfinexOptions,
        clock: Clock,
        series: Sequence[tuple[SeriesKey, str, int]],
        backfill: Backfill,
    ) -> None:
        self.options = options
        self.clock = clock
        self.backfill = backfill
        self.states = [SeriesState(key, channel, period) for key, channel, period in series]
        size = options.subscriptions_per_connection
        self.shards = [self.states[i : i + size] for i in range(0, len(self.states), size)]
        self.queue: asyncio.Queue[CandleUpdate | BaseException] = asyncio.Queue()
        self.connects = 0
        self.maintenance = False
        self._active: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._backfills: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    def active_channels(self) -> int:
        """How many channels are subscribed right now, over every shard."""
        return sum(self._active.values())

    async def start(self) -> None:
        """Open the shards' connections (in the background)."""
        self._http = aiohttp.ClientSession()
        for index, shard in enumerate(self.shards):
            self._tasks.append(asyncio.create_task(self._run_shard(index, shard)))

    async def stop(self) -> None:
        """Close every connection and stop every task."""
        tasks, self._tasks = [*self._tasks, *self._backfills], []
        self._backfills.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def get(self) -> CandleUpdate:
        """The next update; re-raises what stopped a shard, if one failed for good."""
        item = await self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _emit(self, updates: list[CandleUpdate]) -> None:
        for update in updates:
            self.queue.put_nowait(update)

    async def _run_shard(self, index: int, shard: list[SeriesState]) -> None:
        delay = self.options.reconnect_initial_s
        try:
            while True:
                healthy = False
                try:
                    healthy = await self._session(index, shard)
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
                    log.info("bitfinex websocket %d: %s", index, type(error).__name__)
                finally:
                    self._active[index] = 0
                if healthy:
                    delay = self.options.reconnect_initial_s
                await self.clock.sleep(delay)
                if not healthy:
                    delay = min(delay * 2, self.options.reconnect_max_s)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug or a protocol violation: surface it to the reader
            self.queue.put_nowait(ExchangeUnavailable(f"bitfinex candle stream stopped: {error}"))

    async def _session(self, index: int, shard: list[SeriesState]) -> bool:
        """One connection: subscribe, read until it ends; True when it got subscribed."""
        assert self._http is not None
        timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0)
        ws = await self._http.ws_connect(self.options.ws_url, timeout=timeout, max_msg_size=0)
        self.connects += 1
        channels: dict[int, SeriesState] = {}
        by_key = {state.channel_key: state for state in shard}
        last_rx = [self.clock.time()]
        healthy = False
        watchdog = asyncio.create_task(self._watch(ws, last_rx))
        try:
            for state in shard:
                await ws.send_str(
                    json.dumps(
                        {"event": "subscribe", "channel": "candles", "key": state.channel_key}
                    )
                )
            while True:
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    log.info("bitfinex websocket %d closed (%s)", index, message.type.name)
                    return healthy  # closed, dropped or aborted by the watchdog
                last_rx[0] = self.clock.time()
                frame = json.loads(message.data)
                if isinstance(frame, list):
                    channel = channels.get(frame[0])
                    if channel is None or frame[1] == "hb":
                        continue
                    payload = frame[1]
                    out: list[CandleUpdate] = []
                    if payload and not isinstance(payload[0], list):
                        channel.apply(payload, out, authoritative=True)
                    else:  # a snapshot, newest first (possibly empty)
                        last = len(payload) - 1
                        for position, row in enumerate(reversed(payload)):
                            channel.apply(row, out, authoritative=True, final=position < last)
                        if channel.backfill_from is not None:
                            start, channel.backfill_from = channel.backfill_from, None
                            task = asyncio.create_task(self._backfill(channel, start))
                            self._backfills.add(task)
                            task.add_done_callback(self._backfills.discard)
                    if out:
                        self._emit(out)
                    continue
                event = frame.get("event")
                if event == "subscribed":
                    found = by_key.get(frame.get("key", ""))
                    if found is not None:
                        channels[int(frame["chanId"])] = found
                        if found.latest >= 0:
                            margin = self.options.backfill_overlap * found.period_ms
                            found.backfill_from = max(0, found.latest - margin)
                        self._active[index] = len(channels)
                        healthy = True
                elif event == "info":
                    if "version" in frame and frame["version"] != 2:
                        raise ExchangeUnavailable(
                            f"bitfinex websocket speaks version {frame['version']}, not 2"
                        )
                    code = frame.get("code")
                    if code == INFO_RESTART:
                        log.info("bitfinex websocket %d: server restart (20051)", index)
                        return healthy
                    if code == INFO_MAINTENANCE_START:
                        log.info("bitfinex: maintenance started (20060)")
                        self.maintenance = True
                    elif code == INFO_MAINTENANCE_END:
                        log.info("bitfinex: maintenance over (20061); resubscribing")
                        self.maintenance = False
                        return healthy
                elif event == "error":
                    log.warning(
                        "bitfinex websocket %d: error %s %s for %s",
                        index,
                        frame.get("code"),
                        frame.get("msg"),
                        frame.get("key"),
                    )
                    if frame.get("code") == ERROR_SUBSCRIBE_DUP and "chanId" in frame:
                        dup = by_key.get(frame.get("key", ""))
                        if dup is not None:
                            channels[int(frame["chanId"])] = dup
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            with contextlib.suppress(Exception):
                await ws.close()

    async def _watch(self, ws: aiohttp.ClientWebSocketResponse[Any], last_rx: list[float]) -> None:
        """Close ``ws`` once nothing has arrived for ``heartbeat_timeout_s`` (on the clock)."""
        limit = self.options.heartbeat_timeout_s
        while True:
            quiet = self.clock.time() - last_rx[0]
            if quiet >= limit:
                log.info("bitfinex websocket silent for %.0f s; reconnecting", quiet)
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
                return
            await self.clock.sleep(max(limit - quiet, 0.001))

    async def _backfill(self, state: SeriesState, start: int) -> None:
        """Read missed candles over REST until it works; emit what changed."""
        delay = self.options.reconnect_initial_s
        while True:
            asked_at = state.sequence
            try:
                rows = await self.backfill(state.key, start, int(self.clock.time() * 1000))
                break
            except ExchangeUnavailable as error:
                log.warning("bitfinex backfill of %s failed (%s); retrying", state.key, error)
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_s)
            except Exception as error:  # a refusal or a bug: surface it to the reader
                self.queue.put_nowait(
                    ExchangeUnavailable(f"bitfinex backfill of {state.key} failed: {error}")
                )
                return
        out: list[CandleUpdate] = []
        for row in rows:
            state.apply(row, out, authoritative=False, asked_at=asked_at)
        self._emit(out)
