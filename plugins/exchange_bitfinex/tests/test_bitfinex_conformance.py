"""The exchange conformance suite (``trader_sdk.testing.exchange``) run against the bitfinex
adapter, which talks to the fake Bitfinex over real sockets with the real ccxt client.

The suite runs each scenario in its own :func:`asyncio.run`, so the fake serves from a thread of
its own with its own event loop, for the whole module. The adapter runs on the fake's simulated
time: its clock reads the fake's clock, and when the adapter sleeps (pacing, backoff, waiting for
a cancel to show) the fake's clock is moved forward by as much, since nothing else moves it.
``advance_market`` lets one simulated minute of trades happen on the fake.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from trader.config.secrets import SecretRef
from trader.interfaces import Exchange
from trader_exchange_bitfinex.exchange import BitfinexExchange
from trader_exchange_bitfinex.options import BitfinexOptions
from trader_exchange_bitfinex.testing import FakeBitfinex, FakeSettings
from trader_sdk.testing.exchange import AdvanceMarket, ExchangeConformance, ExchangeFactory

pytestmark = pytest.mark.timeout(60)

KEY, SECRET = "conformance-key", "conformance-secret"
SYMBOL = "BTC/USD"
T = TypeVar("T")


class FakeInThread:
    """A :class:`FakeBitfinex` serving from its own thread and event loop."""

    def __init__(self, settings: FakeSettings, balances: dict[str, float | str | Decimal]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="fake-bitfinex", daemon=True
        )
        self._thread.start()
        self.fake = FakeBitfinex(settings)
        self.call(self.fake.start())
        self.fake.add_account(KEY, SECRET, balances)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the fake's loop and wait for it (from a thread without a loop)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    async def call_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the fake's loop and await it from another running loop."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return await asyncio.wrap_future(future)

    async def advance(self, ms: int) -> None:
        """Move the fake's clock ``ms`` forward, playing the market meanwhile."""
        await self.call_async(self.fake.advance(ms))

    def close(self) -> None:
        self.call(self.fake.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class FakeTimeClock:
    """The adapter's clock on the fake's simulated time; sleeping moves the fake forward."""

    def __init__(self, server: FakeInThread) -> None:
        self.server = server

    def time(self) -> float:
        return self.server.fake.clock.time()

    async def sleep(self, seconds: float) -> None:
        await self.server.advance(max(1, round(seconds * 1000)))


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeInThread]:
    """One fake for the module; the account holds 1,000,000 USD (the suite only buys)."""
    server = FakeInThread(FakeSettings(seed=11, history_ms=3_600_000), {"USD": 1_000_000})
    try:
        yield server
    finally:
        server.close()


class TestBitfinexConformance(ExchangeConformance):
    """The bitfinex adapter against the fake Bitfinex, trading BTC/USD."""

    @pytest.fixture
    def exchange_factory(self, fake_server: FakeInThread) -> ExchangeFactory:
        fake = fake_server.fake
        environ = {"BFX_KEY": KEY, "BFX_SECRET": SECRET}

        def build() -> Exchange:
            options = BitfinexOptions(
                api_key=SecretRef("env", "BFX_KEY", environ=environ),
                api_secret=SecretRef("env", "BFX_SECRET", environ=environ),
                public_url=fake.rest_url,
                private_url=fake.rest_url,
                ws_url=fake.ws_url,
            )
            return BitfinexExchange(options, clock=FakeTimeClock(fake_server))

        return build

    @pytest.fixture
    def tradable_symbol(self) -> str:
        return SYMBOL

    @pytest.fixture
    def advance_market(self, fake_server: FakeInThread) -> AdvanceMarket:
        async def advance(exchange: Exchange) -> Decimal:
            await fake_server.advance(60_000)  # a simulated minute: four trades per pair
            return Decimal(str(fake_server.fake.price(SYMBOL)))

        return advance
