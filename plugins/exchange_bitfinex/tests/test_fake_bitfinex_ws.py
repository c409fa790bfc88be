"""The fake Bitfinex's public websocket: protocol frames, ccxt.pro, and every injected fault."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest

from trader.model import DAY_MS, MINUTE_MS
from trader_exchange_bitfinex.testing import (
    INFO_MAINTENANCE_END,
    INFO_MAINTENANCE_START,
    INFO_RESTART,
    FakeBitfinex,
    FakeSettings,
)
from trader_exchange_bitfinex.testing.wire import ConnectionDropped, WireClient

pytestmark = pytest.mark.timeout(30)

KEY_1M = "trade:1m:tBTCUSD"
KEY_1H_ETH = "trade:1h:tETHUSD"


def run(scenario: Callable[[FakeBitfinex], Awaitable[Any]], **settings: Any) -> Any:
    async def main() -> Any:
        options = {"seed": 8, "history_ms": DAY_MS, **settings}
        async with FakeBitfinex(FakeSettings(**options)) as fake:
            return await scenario(fake)

    return asyncio.run(main())


def is_event(name: str, code: int | None = None) -> Callable[[Any], bool]:
    return lambda f: (
        isinstance(f, dict) and f.get("event") == name and (code is None or f.get("code") == code)
    )


def on_channel(chan_id: int) -> Callable[[Any], bool]:
    return lambda f: isinstance(f, list) and f[0] == chan_id


def is_update(chan_id: int) -> Callable[[Any], bool]:
    return lambda f: isinstance(f, list) and f[0] == chan_id and isinstance(f[1], list)


def test_info_subscribe_snapshot_newest_first_then_updates() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        async with WireClient(fake.ws_url) as client:
            info = await client.receive()
            await client.send(
                {"event": "subscribe", "channel": "candles", "key": KEY_1M, "subId": "s1"}
            )
            subscribed = await client.receive()
            snapshot = await client.receive()
            await fake.advance(2 * MINUTE_MS)
            updates = [await client.wait_for(is_update(subscribed["chanId"])) for _ in range(8)]
        truth = fake.ground_truth("BTC/USD", "1m", include_forming=True)
        return info, subscribed, snapshot, updates, truth

    info, subscribed, snapshot, updates, truth = run(scenario)
    assert info["event"] == "info" and info["version"] == 2 and info["platform"] == {"status": 1}
    chan_id = subscribed["chanId"]
    assert subscribed == {
        "event": "subscribed",
        "channel": "candles",
        "chanId": chan_id,
        "key": KEY_1M,
        "subId": "s1",
    }
    rows = snapshot[1]
    assert snapshot[0] == chan_id and len(rows) == 240
    assert [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)
    closed_at_start = [t for t in truth.time.tolist() if t < 1_735_689_600_000]
    assert [r[0] for r in rows] == closed_at_start[::-1][:240]
    times = [u[1][0] for u in updates]
    assert times == sorted(times) and len(set(times)) == 2  # the same MTS repeats while forming
    last = updates[-1][1]
    index = truth.time.tolist().index(last[0])
    assert last == [
        last[0],
        truth.open[index],
        truth.close[index],
        truth.high[index],
        truth.low[index],
        truth.volume[index],
    ]


def test_snapshot_matches_rest_hist() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        async with WireClient(fake.ws_url) as client:
            chan_id = await client.subscribe_candles("trade:15m:tETHUSD")
            snapshot = await client.wait_for(on_channel(chan_id))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{fake.rest_url}/v2/candles/trade:15m:tETHUSD/hist?limit=96") as reply,
        ):
            rest = await reply.json()
        return snapshot[1], rest

    snapshot, rest = run(scenario, snapshot_size=96)
    assert snapshot == rest


def test_heartbeats_follow_silence_on_the_simulated_clock() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        async with WireClient(fake.ws_url) as client:
            chan_id = await client.subscribe_candles(KEY_1M)
            await client.wait_for(on_channel(chan_id))
            await fake.start_maintenance()  # no data from here on, heartbeats only
            await client.wait_for(is_event("info", INFO_MAINTENANCE_START))
            start = fake.clock.now_ms()
            await fake.advance(45_000)
            beats = [await client.wait_for(on_channel(chan_id)) for _ in range(3)]
            return beats, start, fake.clock.now_ms()

    beats, start, now = run(scenario, heartbeat_ms=15_000)
    assert beats == [[beats[0][0], "hb"]] * 3
    assert now == start + 45_000


def test_ping_conf_flags_and_unsubscribe() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        async with WireClient(fake.ws_url) as client:
            await client.send({"event": "ping", "cid": 42})
            pong = await client.wait_for(is_event("pong"))
            await client.send({"event": "conf", "flags": 32768 + 65536})
            conf = await client.wait_for(is_event("conf"))
            chan_id = await client.subscribe_candles(KEY_1M)
            snapshot = await client.wait_for(on_channel(chan_id))
            await fake.advance(30_000)
            update = await client.wait_for(on_channel(chan_id))
            await client.send({"event": "unsubscribe", "chanId": chan_id})
            unsubscribed = await client.wait_for(is_event("unsubscribed"))
            await client.send({"event": "unsubscribe", "chanId": chan_id})
            again = await client.wait_for(is_event("error"))
            return pong, conf, snapshot, update, unsubscribed, again, fake.clock.now_ms()

    pong, conf, snapshot, update, unsubscribed, again, now = run(scenario)
    assert pong == {"event": "pong", "ts": 1_735_689_600_000, "cid": 42}
    assert conf == {"event": "conf", "status": "OK", "flags": 98304}
    assert snapshot[2] == 1 and snapshot[3] == 1_735_689_600_000  # [chan, data, SEQ, MTS]
    assert update[2] == 2 and 1_735_689_600_000 < update[3] <= now
    assert unsubscribed == {"event": "unsubscribed", "status": "OK", "chanId": snapshot[0]}
    assert again["code"] == 10400 and again["msg"] == "unsubscribe: invalid"


def test_subscription_errors_echo_the_request() -> None:
    async def scenario(fake: FakeBitfinex) -> list[Any]:
        async with WireClient(fake.ws_url) as client:
            await client.receive()
            requests = [
                {"event": "subscribe", "channel": "candles", "key": "trade:1m:tNOPE"},
                {"event": "subscribe", "channel": "candles", "key": "trade:2m:tBTCUSD"},
                {"event": "subscribe", "channel": "nope", "symbol": "tBTCUSD"},
                {"event": "nope"},
            ]
            errors = []
            for request in requests:
                await client.send(request)
                errors.append(await client.wait_for(is_event("error")))
            first = await client.subscribe_candles(KEY_1M)
            await client.send({"event": "subscribe", "channel": "candles", "key": KEY_1M})
            errors.append(await client.wait_for(is_event("error")))
            errors.append(first)
            for minutes in ("5m", "15m"):
                await client.subscribe_candles(f"trade:{minutes}:tBTCUSD")
            await client.send({"event": "subscribe", "channel": "candles", "key": KEY_1H_ETH})
            errors.append(await client.wait_for(is_event("error")))
            return errors

    bad_symbol, bad_key, bad_channel, bad_event, dup, first, limit = run(
        scenario, max_subscriptions=3
    )
    assert bad_symbol == {
        "channel": "candles",
        "key": "trade:1m:tNOPE",
        "event": "error",
        "msg": "symbol: invalid",
        "code": 10300,
    }
    assert (bad_key["code"], bad_key["msg"]) == (10300, "key: invalid")
    assert (bad_channel["code"], bad_channel["msg"]) == (10300, "channel: unknown")
    assert (bad_event["code"], bad_event["msg"]) == (10000, "event: invalid (nope)")
    assert (dup["code"], dup["msg"], dup["chanId"]) == (10301, "subscribe: dup", first)
    assert (limit["code"], limit["msg"], limit["key"]) == (10305, "subscribe: limit", KEY_1H_ETH)


def test_trades_and_ticker_channels_reply_with_symbol_and_pair() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        async with WireClient(fake.ws_url) as client:
            await client.send({"event": "subscribe", "channel": "trades", "symbol": "tBTCUSD"})
            trades = await client.wait_for(is_event("subscribed"))
            snapshot = await client.wait_for(on_channel(trades["chanId"]))
            await client.send({"event": "subscribe", "channel": "ticker", "symbol": "tBTCUSD"})
            ticker = await client.wait_for(is_event("subscribed"))
            await client.wait_for(on_channel(ticker["chanId"]))  # its snapshot
            await fake.advance(20_000)
            te = await client.wait_for(lambda f: on_channel(trades["chanId"])(f) and f[1] == "te")
            tu = await client.wait_for(lambda f: on_channel(trades["chanId"])(f) and f[1] == "tu")
            tick = await client.wait_for(on_channel(ticker["chanId"]))
            return trades, snapshot, ticker, te, tu, tick, te[2][3]

    trades, snapshot, ticker, te, tu, tick, price = run(scenario)
    assert (trades["symbol"], trades["pair"]) == ("tBTCUSD", "BTCUSD")
    assert (ticker["symbol"], ticker["pair"]) == ("tBTCUSD", "BTCUSD")
    assert len(snapshot[1]) == 30 and snapshot[1][0][1] >= snapshot[1][-1][1]
    assert te[2] == tu[2] and len(te[2]) == 4
    assert len(tick[1]) == 10 and tick[1][6] == price


def test_ccxt_pro_watch_ohlcv_gets_the_snapshot_then_updates() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        exchange = ccxt_pro.bitfinex(fake.ccxt_config())
        try:
            first = await asyncio.wait_for(exchange.watch_ohlcv("BTC/USD", "1m"), 5)
            pending = asyncio.ensure_future(exchange.watch_ohlcv("BTC/USD", "1m"))
            updates: list[list[float]] = []
            while len({int(u[0]) for u in updates}) < 3:
                await fake.advance(15_000)
                if pending.done():
                    updates.extend(pending.result())
                    pending = asyncio.ensure_future(exchange.watch_ohlcv("BTC/USD", "1m"))
                else:
                    await asyncio.wait([pending], timeout=0.05)
            pending.cancel()
        finally:
            await exchange.close()
        return first, updates, fake.ground_truth("BTC/USD", "1m", include_forming=True)

    first, updates, truth = run(scenario)
    assert len(first) == 240
    closed_at_start = [t for t in truth.time.tolist() if t < 1_735_689_600_000]
    assert [int(c[0]) for c in first] == closed_at_start[-240:]
    final = {int(u[0]): u[1:] for u in updates}  # the last update of each period wins
    closed = sorted(final)[:-1]  # a period is final once a later one has started
    assert closed
    times = truth.time.tolist()
    for mts in closed:
        index = times.index(mts)
        assert final[mts] == [
            truth.open[index],
            truth.high[index],
            truth.low[index],
            truth.close[index],
            truth.volume[index],
        ]


def test_abrupt_drop_gives_1006_and_a_new_connection_gets_new_chan_ids() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        codes, chan_ids = [], []
        for mode in ("abort", "reset", "close"):
            async with WireClient(fake.ws_url) as client:
                chan_ids.append(await client.subscribe_candles(KEY_1M))
                await fake.drop_connections(mode)
                with pytest.raises(ConnectionDropped) as dropped:
                    await client.wait_for(lambda f: False)
                codes.append(dropped.value.code)
        return codes, chan_ids

    codes, chan_ids = run(scenario)
    assert codes == [1006, 1006, 1000]
    assert len(set(chan_ids)) == 3


def test_ccxt_pro_fails_the_pending_watch_on_a_drop_and_resubscribes_on_the_next() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        exchange = ccxt_pro.bitfinex(fake.ccxt_config())
        try:
            await asyncio.wait_for(exchange.watch_ohlcv("BTC/USD", "1m"), 5)
            pending = asyncio.ensure_future(exchange.watch_ohlcv("BTC/USD", "1m"))
            await asyncio.sleep(0)
            dropped = await fake.drop_connections("abort")
            with pytest.raises(ccxt_async.NetworkError):
                await asyncio.wait_for(pending, 5)
            again = await asyncio.wait_for(exchange.watch_ohlcv("BTC/USD", "1m"), 5)
            subscribed = fake.subscribed()
        finally:
            await exchange.close()
        return dropped, again, fake.ws_subscriptions, subscribed

    dropped, again, subscribes, subscribed = run(scenario)
    assert dropped == 1
    assert len(again) >= 240
    assert subscribes == 2 and subscribed == [KEY_1M]


def test_restart_sends_20051_then_drops_and_refuses_connections_for_a_while() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        async with WireClient(fake.ws_url) as client:
            await client.subscribe_candles(KEY_1M)
            await fake.restart(refuse_ms=10_000)
            info = await client.wait_for(is_event("info", INFO_RESTART))
            with pytest.raises(ConnectionDropped) as dropped:
                await client.wait_for(lambda f: False)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await WireClient(fake.ws_url).connect()
        await fake.advance(10_000)
        async with WireClient(fake.ws_url) as client:
            welcome = await client.receive()
        return info, dropped.value.code, refused.value.status, welcome

    info, code, status, welcome = run(scenario)
    assert info["msg"] == "Stop/Restart Websocket Server (please reconnect)"
    assert code == 1006 and status == 503
    assert welcome["event"] == "info" and welcome["version"] == 2


def test_maintenance_sends_20060_then_20061_and_rest_reports_zero() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        async with WireClient(fake.ws_url) as client, aiohttp.ClientSession() as http:
            chan_id = await client.subscribe_candles(KEY_1M)
            await client.wait_for(on_channel(chan_id))
            await fake.start_maintenance()
            start = await client.wait_for(is_event("info"))
            async with http.get(f"{fake.rest_url}/v2/platform/status") as reply:
                status = await reply.json()
            async with WireClient(fake.ws_url) as late:
                late_info = await late.receive()
            await fake.advance(2 * MINUTE_MS)
            quiet = [await client.wait_for(on_channel(chan_id)) for _ in range(2)]
            await fake.end_maintenance()
            end = await client.wait_for(is_event("info"))
            await fake.advance(MINUTE_MS)
            data = await client.wait_for(is_update(chan_id))
            return start, status, late_info, quiet, end, data

    start, status, late_info, quiet, end, data = run(scenario)
    assert (start["code"], end["code"]) == (INFO_MAINTENANCE_START, INFO_MAINTENANCE_END)
    assert status == [0] and late_info["platform"] == {"status": 0}
    assert all(frame[1] == "hb" for frame in quiet)
    assert isinstance(data[1][0], int)


def test_revised_candle_is_resent_with_its_old_mts_and_lands_in_the_ground_truth() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        async with WireClient(fake.ws_url) as client:
            one = await client.subscribe_candles(KEY_1M)
            hour = await client.subscribe_candles("trade:1h:tBTCUSD")
            await client.wait_for(on_channel(hour))
            await fake.advance(3 * MINUTE_MS)
            old = fake.clock.now_ms() - 10 * MINUTE_MS
            before = fake.ground_truth("BTC/USD", "1m")
            revised = await fake.revise_candle("BTC/USD", old)
            minute = await client.wait_for(lambda f: is_update(one)(f) and f[1][0] == revised[0])
            hourly = await client.wait_for(is_update(hour))
        after = fake.ground_truth("BTC/USD", "1m")
        return before, revised, minute, hourly, after

    before, revised, minute, hourly, after = run(scenario)
    index = after.time.tolist().index(revised[0])
    assert minute[1] == revised
    assert revised[3] > before.high[index] and revised[5] > before.volume[index]
    assert after.high[index] == revised[3] and after.volume[index] == revised[5]
    assert hourly[1][0] == revised[0] - revised[0] % 3_600_000


def test_silenced_sockets_send_nothing_not_even_heartbeats_or_pongs() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        async with WireClient(fake.ws_url, autoping=False) as client:
            chan_id = await client.subscribe_candles(KEY_1M)
            await client.wait_for(on_channel(chan_id))
            assert fake.silence_connections() == 1
            await fake.advance(5 * MINUTE_MS)
            await client.send({"event": "ping", "cid": 1})
            await client.ws.ping(b"x")
            with pytest.raises(TimeoutError):
                await client.receive(timeout=0.3)
            async with WireClient(fake.ws_url) as fresh:
                return await fresh.receive()

    assert run(scenario)["event"] == "info"


def test_skipped_period_sends_no_candle_and_the_stream_resumes_after_it() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        start = fake.clock.now_ms()
        fake.skip_period("BTC/USD", start + MINUTE_MS, start + 3 * MINUTE_MS)
        async with WireClient(fake.ws_url) as client:
            chan_id = await client.subscribe_candles(KEY_1M)
            await client.wait_for(on_channel(chan_id))
            await fake.advance(4 * MINUTE_MS + 1)
            await fake.advance(MINUTE_MS)
            frames = []
            while True:
                frame = await client.wait_for(on_channel(chan_id))
                frames.append(frame)
                if frame[1] != "hb" and frame[1][0] == start + 4 * MINUTE_MS:
                    break
        return start, {f[1][0] for f in frames if f[1] != "hb"}

    start, times = run(scenario)
    assert times == {start, start + 3 * MINUTE_MS, start + 4 * MINUTE_MS}


def test_websocket_connection_rate_limit_answers_429() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        for _ in range(2):
            async with WireClient(fake.ws_url):
                pass
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await WireClient(fake.ws_url).connect()
        await fake.advance(60_000)
        async with WireClient(fake.ws_url) as client:
            return refused.value.status, await client.receive()

    status, info = run(scenario, ws_connections_per_minute=2)
    assert status == 429 and info["event"] == "info"


def test_empty_snapshot_for_a_pair_without_candles() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        fake.skip_period("BTC/USD", 0, 2**62)
        async with WireClient(fake.ws_url) as client:
            chan_id = await client.subscribe_candles("trade:1m:tETHBTC")
            return await client.wait_for(on_channel(chan_id))

    snapshot = run(scenario, history_ms=0)
    assert snapshot[1] == []


def test_authenticated_websocket_checks_the_signature_and_streams_account_events() -> None:
    key, secret = "ws-key", "ws-secret"

    def auth(nonce: int, signer: str = secret) -> dict[str, Any]:
        payload = f"AUTH{nonce}"
        signature = hmac.new(signer.encode(), payload.encode(), hashlib.sha384).hexdigest()
        return {
            "event": "auth",
            "apiKey": key,
            "authNonce": nonce,
            "authPayload": payload,
            "authSig": signature,
        }

    async def scenario(fake: FakeBitfinex) -> Any:
        fake.add_account(key, secret, {"USD": 1000})
        async with WireClient(fake.ws_url) as client:
            await client.send(auth(5, signer="wrong"))
            failed = await client.wait_for(is_event("auth"))
            await client.send(auth(5))
            ok = await client.wait_for(is_event("auth"))
            snapshots = [await client.wait_for(on_channel(0)) for _ in range(3)]
            await client.send(auth(5))  # same nonce again
            replay = await client.wait_for(is_event("auth"))
            order = {"type": "EXCHANGE MARKET", "symbol": "tBTCUSD", "amount": "0.001", "cid": 9}
            await client.send([0, "on", None, order])
            events = [await client.wait_for(on_channel(0)) for _ in range(7)]
            await fake.advance(15_000)
            beat = await client.wait_for(on_channel(0))
        return failed, ok, snapshots, replay, events, beat

    failed, ok, snapshots, replay, events, beat = run(scenario)
    assert (failed["status"], failed["code"], failed["msg"]) == (
        "FAILED",
        10100,
        "apikey: digest invalid",
    )
    assert ok["status"] == "OK" and ok["chanId"] == 0
    assert [s[1] for s in snapshots] == ["ps", "ws", "os"]
    assert snapshots[1][2] == [["exchange", "USD", 1000.0, 0, 1000.0, None, None]]
    assert (replay["status"], replay["code"]) == ("FAILED", 10114)
    assert [e[1] for e in events] == ["n", "on", "te", "tu", "oc", "wu", "wu"]
    note, new, executed, updated, closed, base, quote = (e[2] for e in events)
    assert note[1] == "on-req" and note[6] == "SUCCESS" and new[2] == 9
    assert executed[9] is None and updated[9] < 0 and updated[10] == "BTC"
    assert closed[13].startswith("EXECUTED @ ")
    assert base[1] == "BTC" and base[2] == pytest.approx(0.001 * 0.998)
    assert quote[1] == "USD" and quote[2] == pytest.approx(1000 - 0.001 * executed[5])
    assert beat == [0, "hb"]


def test_ccxt_pro_private_channel_sees_balances_orders_and_fills() -> None:
    async def scenario(fake: FakeBitfinex) -> Any:
        fake.add_account("pro-key", "pro-secret", {"USD": 1000, "BTC": 1})
        exchange = ccxt_pro.bitfinex(
            {**fake.ccxt_config("pro-key", "pro-secret"), "enableRateLimit": False}
        )
        try:
            await exchange.load_markets()
            balance = dict((await asyncio.wait_for(exchange.watch_balance(), 5))["total"])
            orders = asyncio.ensure_future(exchange.watch_orders("BTC/USD"))
            fills = asyncio.ensure_future(exchange.watch_my_trades("BTC/USD"))
            await asyncio.sleep(0)  # one loop turn: both watchers are registered, FIFO
            placed = await exchange.create_order("BTC/USD", "market", "buy", 0.001)
            seen_orders = await asyncio.wait_for(orders, 5)
            seen_fills = await asyncio.wait_for(fills, 5)
        finally:
            await exchange.close()
        return balance, placed, seen_orders, seen_fills, fake.price("BTC/USD")

    balance, placed, orders, fills, price = run(scenario)
    assert balance == {"BTC": 1.0, "USD": 1000.0}  # ccxt mutates its balance in place
    assert [(o["id"], o["status"]) for o in orders] == [(placed["id"], "closed")]
    (fill,) = fills
    assert fill["order"] == placed["id"] and fill["side"] == "buy" and fill["price"] == price
    # ccxt.pro reports the fee of a `tu` with Bitfinex's sign (negative), unlike ccxt REST.
    assert fill["fee"] == {"currency": "BTC", "cost": -0.000002}
