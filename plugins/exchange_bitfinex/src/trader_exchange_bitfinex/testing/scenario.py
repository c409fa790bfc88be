"""Fault plans: which fault happens when, drawn from a seed and scheduled on the fake's clock."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from trader_exchange_bitfinex.testing.market import derived_seed
from trader_exchange_bitfinex.testing.server import FakeBitfinex

#: Every fault kind a plan can hold, with what it does when its time comes.
FAULT_KINDS: Final = {
    "drop": "drop every websocket without a close frame (clients see 1006)",
    "reset": "drop every websocket with a TCP reset",
    "close": "close every websocket cleanly (code 1000)",
    "restart": "info 20051 on every socket, drop them, refuse connections for duration_ms",
    "maintenance": "info 20060, REST status [0], no data for duration_ms, then info 20061",
    "skip": "no trades (so no candles) for duration_ms",
    "revise": "revise the one-minute candle five minutes back with a late trade",
    "silence": "open websockets stop sending anything, heartbeats included",
    "rate_limit": "HTTP 429 for every REST call for duration_ms",
    "nonce": "the next signed request fails with 10114 nonce: small",
    "slow": "the next REST reply is delayed by 0.25 real seconds",
}
_DEFAULT_DURATION: Final = {
    "restart": 5_000,
    "maintenance": 90_000,
    "skip": 120_000,
    "rate_limit": 60_000,
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: its kind (a key of :data:`FAULT_KINDS`), when, for how long, on which pair."""

    at_ms: int
    kind: str
    duration_ms: int = 0
    symbol: str = "tBTCUSD"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {sorted(FAULT_KINDS)}")


def random_faults(
    seed: int,
    start_ms: int,
    duration_ms: int,
    kinds: Iterable[str] = FAULT_KINDS,
    *,
    each: int = 1,
    symbol: str = "tBTCUSD",
) -> list[Fault]:
    """Draw ``each`` fault of every kind at seeded times in ``duration_ms`` from ``start_ms``.

    Faults are spread over separate slots of equal length, in a seeded order, so two never
    overlap and each has room to end before the next one starts. The same arguments always give
    the same plan.
    """
    chosen = [kind for kind in kinds for _ in range(each)]
    for kind in chosen:
        Fault(0, kind)
    rng = random.Random(derived_seed(seed, "faults", start_ms, duration_ms))
    rng.shuffle(chosen)
    if not chosen:
        return []
    slot = duration_ms // len(chosen)
    plan = []
    for index, kind in enumerate(chosen):
        length = min(_DEFAULT_DURATION.get(kind, 0), slot // 2)
        offset = rng.randrange(max(1, slot - length))
        plan.append(Fault(start_ms + index * slot + offset, kind, length, symbol))
    return plan


def schedule_faults(fake: FakeBitfinex, faults: Sequence[Fault]) -> None:
    """Schedule each fault of ``faults`` on ``fake``'s clock (see :meth:`FakeBitfinex.at`)."""
    for fault in faults:
        fake.at(fault.at_ms, _action(fault))


def _action(fault: Fault) -> Callable[[FakeBitfinex], Awaitable[None]]:
    async def act(fake: FakeBitfinex) -> None:
        await apply_fault(fake, fault)

    return act


async def apply_fault(fake: FakeBitfinex, fault: Fault) -> None:
    """Inject ``fault`` now (its ``at_ms`` only matters to :func:`schedule_faults`)."""
    kind = fault.kind
    now = fake.clock.now_ms()
    if kind in ("drop", "reset", "close"):
        await fake.drop_connections({"drop": "abort"}.get(kind, kind))
    elif kind == "restart":
        await fake.restart(refuse_ms=fault.duration_ms)
    elif kind == "maintenance":
        await fake.start_maintenance()
        fake.at(now + fault.duration_ms, lambda f: f.end_maintenance())
    elif kind == "skip":
        fake.skip_period(fault.symbol, now, now + fault.duration_ms)
    elif kind == "revise":
        await fake.revise_candle(fault.symbol, now - 5 * 60_000)
    elif kind == "silence":
        fake.silence_connections()
    elif kind == "rate_limit":
        fake.block_rest(duration_ms=fault.duration_ms)
    elif kind == "nonce":
        fake.fail_nonces(1)
    elif kind == "slow":
        fake.slow_replies(0.25)
