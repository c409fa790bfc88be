"""The strategy runtime interface: user strategies in some language, fed candles."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from trader.model import CandleArrays, Decision, OrderIntent


@dataclass(frozen=True, slots=True)
class Parameter:
    """A declared strategy parameter: default, type, and the range a sweep may explore."""

    name: str
    default: float | int | str | bool
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for untrusted code; ``None`` means unlimited."""

    instructions_per_call: int | None = 10_000_000
    memory_bytes: int | None = 64 * 1024 * 1024
    wall_seconds_per_call: float | None = 1.0


@dataclass(frozen=True, eq=False)
class DecisionBatch:
    """The decisions on a run of candles, in compact form (what runtimes' ``on_candles`` return).

    ``time[i]`` is the candle of row ``i``; ``target[i]`` its target position (NaN when the row
    holds or gives orders); ``orders`` maps a row to its explicit orders.
    """

    assignment: str
    time: npt.NDArray[np.int64]
    target: npt.NDArray[np.float64]
    orders: Mapping[int, tuple[OrderIntent, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time)

    def decision(self, row: int) -> Decision:
        """Row ``row`` as a :class:`~trader.model.Decision`."""
        target = float(self.target[row])
        return Decision(
            self.assignment,
            int(self.time[row]),
            None if math.isnan(target) else target,
            self.orders.get(row, ()),
        )

    def __iter__(self) -> Iterator[Decision]:
        return (self.decision(row) for row in range(len(self)))


class StrategyInstance(ABC):
    """A loaded strategy with its parameters bound, fed one candle at a time.

    User errors and limit hits raise :class:`~trader.errors.StrategyError` with the user's file
    and line; the instance is unusable afterwards only if the error says so.
    """

    @abstractmethod
    def on_candle(self, assignment: str, history: CandleArrays) -> Decision:
        """Decide on the newest candle of ``history`` (newest last)."""

    @abstractmethod
    def snapshot(self) -> bytes:
        """The strategy's persistent state, so another worker can :meth:`restore` it."""

    @abstractmethod
    def restore(self, state: bytes) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional: most instances hold nothing to release
        """Release the interpreter or process behind this instance."""


class StrategyRuntime(ABC):
    """Loads strategy sources of one language."""

    language: str

    @abstractmethod
    def parameters(self, source: str, filename: str) -> list[Parameter]:
        """The parameters ``source`` declares; raises ``StrategyError`` when it does not load."""

    @abstractmethod
    def load(
        self,
        source: str,
        filename: str,
        params: Mapping[str, Any],
        limits: Limits,
        trusted: bool = False,
    ) -> StrategyInstance:
        """Load ``source`` with ``params`` under ``limits`` (relaxed only when ``trusted``)."""
