"""The strategy runtime interface: user strategies in some language, fed candles."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trader.model import CandleArrays, Decision


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
