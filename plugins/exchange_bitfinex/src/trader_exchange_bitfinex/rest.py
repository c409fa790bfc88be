"""Bitfinex REST v2 through ccxt's signed transport, within rate limits, on an injectable clock.

ccxt (``ccxt.async_support.bitfinex``) signs requests (HMAC-SHA384, increasing millisecond
nonces) and maps Bitfinex's error bodies to its exceptions; its own throttle is off, because
pacing, the 60 s block after an HTTP 429 and every retry run here on :class:`Clock` time.
Replies are Bitfinex's raw arrays (ccxt's implicit API methods), parsed by the adapter.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import ccxt.async_support as ccxt_async

from trader.errors import ExchangeError, ExchangeUnavailable
from trader_exchange_bitfinex.clock import Clock
from trader_exchange_bitfinex.options import BitfinexOptions

log = logging.getLogger(__name__)

#: Failures after which the request certainly did not take effect (safe to repeat).
NOT_APPLIED: tuple[type[Exception], ...] = (
    ccxt_async.RateLimitExceeded,
    ccxt_async.InvalidNonce,
    ccxt_async.OnMaintenance,
)


class RateLimiter:
    """At most ``per_minute`` calls in any 60 s window, and nothing while a block lasts."""

    def __init__(self, per_minute: int, clock: Clock) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._calls: deque[float] = deque()
        self.blocked_until = 0.0

    async def acquire(self) -> None:
        """Wait (on the clock) until one more call fits, then count it."""
        while True:
            now = self.clock.time()
            if now < self.blocked_until:
                await self.clock.sleep(self.blocked_until - now)
                continue
            while self._calls and self._calls[0] <= now - 60.0:
                self._calls.popleft()
            if len(self._calls) < self.per_minute:
                self._calls.append(now)
                return
            await self.clock.sleep(self._calls[0] + 60.0 - now)

    def block(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (Bitfinex blocks an IP for 60 s after a 429)."""
        self.blocked_until = max(self.blocked_until, self.clock.time() + seconds)


class BitfinexRest:
    """Raw Bitfinex REST calls with pacing, retries and error translation."""

    def __init__(self, options: BitfinexOptions, clock: Clock) -> None:
        self.options = options
        self.clock = clock
        self.public = RateLimiter(options.public_requests_per_minute, clock)
        self.private = RateLimiter(options.private_requests_per_minute, clock)
        self._client: Any = None

    async def open(self) -> None:
        """Create the ccxt client (secrets are read here, from their references)."""
        if self._client is not None:
            return
        config: dict[str, Any] = {
            "urls": {
                "api": {
                    "v1": self.options.private_url,
                    "public": self.options.public_url,
                    "private": self.options.private_url,
                }
            },
            "enableRateLimit": False,
            "timeout": int(self.options.request_timeout_s * 1000),
        }
        if self.options.api_key is not None and self.options.api_secret is not None:
            config["apiKey"] = self.options.api_key.reveal()
            config["secret"] = self.options.api_secret.reveal()
        self._client = ccxt_async.bitfinex(config)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    @property
    def has_credentials(self) -> bool:
        return self.options.api_key is not None and self.options.api_secret is not None

    async def call_once(self, method: str, params: dict[str, Any]) -> Any:
        """One paced attempt; ccxt's exceptions propagate (a 429 also starts the block)."""
        if self._client is None:
            raise ExchangeError("the bitfinex exchange is not open: call open() first")
        private = method.startswith("private")
        if private and not self.has_credentials:
            raise ExchangeError(
                "bitfinex: this call needs api_key and api_secret in [exchanges.bitfinex]"
            )
        limiter = self.private if private else self.public
        await limiter.acquire()
        try:
            return await getattr(self._client, method)(params)
        except ccxt_async.RateLimitExceeded:
            limiter.block(self.options.rate_limit_block_s)
            raise

    async def call(self, method: str, params: dict[str, Any], what: str) -> Any:
        """Call with retries for transient failures; raise :class:`ExchangeUnavailable` after.

        Rate limits wait out the block; maintenance, timeouts and dropped connections back off
        exponentially; a stale nonce is retried at once (ccxt's next nonce is larger).
        """
        delay = self.options.reconnect_initial_s
        last: Exception | None = None
        for attempt in range(self.options.max_attempts):
            try:
                return await self.call_once(method, params)
            except ccxt_async.PermissionDenied:
                raise
            except ccxt_async.AuthenticationError as error:
                raise ExchangeError(
                    f"bitfinex refused the API key for {what} ({type(error).__name__}): check "
                    "api_key and api_secret in [exchanges.bitfinex]"
                ) from None
            except ccxt_async.RateLimitExceeded as error:
                last = error
                log.warning("bitfinex rate limit on %s; waiting out the block", what)
            except ccxt_async.InvalidNonce as error:
                last = error
                log.warning("bitfinex nonce refused on %s; retrying", what)
            except ccxt_async.NetworkError as error:
                last = error
                log.warning(
                    "bitfinex %s failed (%s), attempt %d", what, type(error).__name__, attempt + 1
                )
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_s)
        raise ExchangeUnavailable(
            f"bitfinex {what} failed {self.options.max_attempts} times "
            f"(last: {type(last).__name__}); try again later"
        )
