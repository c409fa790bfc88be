"""The one exception tree of trader.

Every error a user can cause or fix derives from :class:`TraderError`; the CLI prints its message
on one line and exits with status 1. Messages say what was wrong, where, and what to do next, and
never contain secret values.
"""

from __future__ import annotations


class TraderError(Exception):
    """Base of every error trader reports to a user (CLI exit status 1)."""


class ModelError(TraderError, ValueError):
    """A value does not fit the domain model: a bad symbol, timeframe, candle or order."""


class ConfigError(TraderError):
    """The configuration is invalid. ``problems`` lists every problem found, not only the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} configuration problem{'s' if count != 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class PluginError(TraderError):
    """A plugin could not be loaded, or what it registered is malformed or already taken."""


class CapabilityNotFound(PluginError):
    """The configuration names a capability (a store, exchange, runtime...) no plugin provides."""


class StorageError(TraderError):
    """A store failed to read or write; the message names the store and the operation."""


class DataError(TraderError):
    """Input data (a CSV file, an exchange reply) is malformed; the message says where."""


class ExchangeError(TraderError):
    """An exchange call failed. The subclasses say what the engine does about it."""


class ExchangeUnavailable(ExchangeError):
    """A transient failure: timeout, rate limit, maintenance, dropped connection. Adapters retry
    within their rate limits; what reaches the engine pauses trading on that exchange."""


class OrderRejected(ExchangeError):
    """The exchange refused the order (funds, size, price, market closed). Final: the order
    task moves to ``rejected`` and the order is never retried."""


class OrderOutcomeUnknown(ExchangeError):
    """The request may or may not have reached the exchange. The order task moves to
    ``reconciling`` and asks the exchange by client order id before anything is resubmitted."""


class StrategyError(TraderError):
    """User strategy code failed or hit a limit; the assignment is paused, nothing else stops."""
