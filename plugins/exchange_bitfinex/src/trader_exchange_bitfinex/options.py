"""Options of the ``bitfinex`` exchange adapter (``[exchanges.bitfinex]`` in ``trader.toml``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from trader.config.secrets import SecretRef


class BitfinexOptions(BaseModel):
    """How the adapter reaches Bitfinex and how gently it treats it.

    ``api_key`` and ``api_secret`` are references (``${ENV}`` or ``file:PATH``), read only when a
    signed request is made and never logged. The URLs default to Bitfinex's and exist to be
    pointed at the fake Bitfinex (``trader_exchange_bitfinex.testing``) in tests.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    api_key: SecretRef | None = None
    api_secret: SecretRef | None = None
    public_url: str = Field(
        default="https://api-pub.bitfinex.com", description="REST base for public calls (no /v2)"
    )
    private_url: str = Field(
        default="https://api.bitfinex.com", description="REST base for signed calls (no /v2)"
    )
    ws_url: str = Field(
        default="wss://api-pub.bitfinex.com/ws/2", description="public websocket URL"
    )
    public_requests_per_minute: int = Field(
        default=30, ge=1, le=90, description="public REST calls per minute (candles: 30-90)"
    )
    private_requests_per_minute: int = Field(
        default=45, ge=1, le=90, description="signed REST calls per minute"
    )
    rate_limit_block_s: float = Field(
        default=60.0, gt=0, description="how long Bitfinex blocks an IP after an HTTP 429"
    )
    request_timeout_s: float = Field(default=10.0, gt=0, description="REST reply timeout")
    max_attempts: int = Field(
        default=5, ge=1, description="attempts of one REST call before giving up"
    )
    maintenance_wait_s: float = Field(
        default=300.0,
        gt=0,
        description="how long an order submission waits out maintenance and rate-limit blocks",
    )
    candles_per_request: int = Field(default=10_000, ge=1, le=10_000)
    heartbeat_timeout_s: float = Field(
        default=35.0, gt=0, description="silence on a websocket before it is treated as dead"
    )
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    subscriptions_per_connection: int = Field(
        default=25, ge=1, le=25, description="candle channels per websocket (Bitfinex: <= 25)"
    )
    backfill_overlap: int = Field(
        default=30,
        ge=0,
        description="candles re-read over REST before the last one seen, after a reconnect",
    )
    order_lookup_days: int = Field(
        default=14, ge=1, le=14, description="how far back order history is searched by cid"
    )
