"""The fake Bitfinex's admin API and its command-line runner, for tests in another process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import pytest

from trader.model import DAY_MS, MINUTE_MS
from trader_exchange_bitfinex.testing import FakeBitfinex, FakeSettings
from trader_exchange_bitfinex.testing.wire import ConnectionDropped, WireClient

pytestmark = pytest.mark.timeout(30)


async def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as reply:
        text = await reply.text()
        try:
            return reply.status, json.loads(text)
        except ValueError:
            return reply.status, text


def test_admin_api_moves_the_clock_injects_faults_and_exports_candles() -> None:
    async def main() -> dict[str, Any]:
        async with FakeBitfinex(FakeSettings(seed=2, history_ms=DAY_MS)) as fake:
            admin = fake.rest_url + "/_fake"
            out: dict[str, Any] = {"start": fake.clock.now_ms()}
            out["account"] = await call("POST", admin + "/accounts", {"key": "k", "secret": "s"})
            out["bad_account"] = await call("POST", admin + "/accounts", {"key": 1})
            async with WireClient(fake.ws_url) as client:
                await client.subscribe_candles("trade:1m:tBTCUSD")
                out["advance"] = await call("POST", admin + "/advance", {"ms": 140_000})
                out["fault"] = await call("POST", admin + "/fault", {"kind": "drop"})
                with pytest.raises(ConnectionDropped) as dropped:
                    await client.wait_for(lambda f: False)
                out["code"] = dropped.value.code
            out["bad_fault"] = await call("POST", admin + "/fault", {"kind": "meteor"})
            out["bad_advance"] = await call("POST", admin + "/advance", {"ms": -1})
            out["candles"] = await call("GET", admin + "/candles/BTC%2FUSD/1m")
            out["forming"] = await call("GET", admin + "/candles/tBTCUSD/1m?forming=1")
            out["unknown"] = await call("GET", admin + "/candles/tNOPE/1m")
            out["maintenance"] = await call(
                "POST", admin + "/fault", {"kind": "maintenance", "duration_ms": 30_000}
            )
            await fake.advance(30_000)
            out["state"] = await call("GET", admin + "/state")
            out["truth"] = [list(r) for r in fake.ground_truth("BTC/USD", "1m").rows()]
            out["keys"] = list(fake.engine.accounts)
            return out

    out = asyncio.run(main())
    assert out["account"] == (200, {"key": "k"}) and out["keys"] == ["k"]
    assert out["bad_account"][0] == 400
    status, state = out["advance"]
    assert status == 200 and state["now_ms"] == out["start"] + 140_000
    assert state["subscribed"] == ["trade:1m:tBTCUSD"] and state["connections"] == 1
    assert out["fault"][1]["connections"] == 0 and out["code"] == 1006
    assert out["bad_fault"][0] == 400 and "unknown fault kind" in out["bad_fault"][1]
    assert out["bad_advance"][0] == 400
    assert out["candles"] == (200, out["truth"])
    forming = out["forming"][1]
    assert forming[:-1] == out["truth"] and forming[-1][0] == out["start"] + 2 * MINUTE_MS
    assert forming[-1][6] is False
    assert out["unknown"][0] == 404
    assert out["maintenance"][1]["platform_status"] == 0 and out["state"][1]["platform_status"] == 1


def test_command_line_runner_serves_until_terminated() -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trader_exchange_bitfinex.testing",
            "--seed",
            "3",
            "--speed",
            "0",
            "--history-hours",
            "2",
            "--key",
            "cli-key",
            "--secret",
            "cli-secret",
            "--balance",
            "USD=250",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            urls = json.loads(process.stdout.readline())
            _check_runner(urls)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0


def _check_runner(urls: dict[str, str]) -> None:
    """Drive the runner's REST and admin API with ccxt and a bare HTTP client."""

    async def session() -> Any:
        rest = urls["rest_url"]
        exchange = ccxt_async.bitfinex(
            {
                "apiKey": "cli-key",
                "secret": "cli-secret",
                "enableRateLimit": False,
                "urls": {"api": {"public": rest, "private": rest}},
            }
        )
        try:
            balance = await exchange.fetch_balance()
            before = await call("GET", urls["admin"] + "/state")
            after = await call("POST", urls["admin"] + "/advance", {"ms": 1_000})
        finally:
            await exchange.close()
        return balance["total"], before[1]["now_ms"], after[1]["now_ms"]

    total, before, after = asyncio.run(session())
    assert urls["ws_url"].startswith("ws://127.0.0.1:")
    assert total == {"USD": 250.0}
    assert after == before + 1_000
