"""trader-sdk: what a trader plugin imports.

``hookimpl`` marks hook implementations; the interfaces (:mod:`trader.interfaces`) and the
domain model (:mod:`trader.model`) are re-exported here so a plugin depends on one stable
surface. ``trader_sdk.testing`` holds the conformance suites (a pytest plugin).
"""

from trader.errors import (
    ConfigError,
    DataError,
    ExchangeError,
    ExchangeUnavailable,
    ModelError,
    OrderOutcomeUnknown,
    OrderRejected,
    PluginError,
    StorageError,
    StrategyError,
    TraderError,
)
from trader.hookspecs import hookimpl
from trader.interfaces import *  # noqa: F403 - the SDK re-exports the interfaces whole
from trader.interfaces import __all__ as _interfaces
from trader.model import *  # noqa: F403 - and the model
from trader.model import __all__ as _model
from trader.registry import Register

__version__ = "0.1.0.dev0"

__all__ = [
    "ConfigError",
    "DataError",
    "ExchangeError",
    "ExchangeUnavailable",
    "ModelError",
    "OrderOutcomeUnknown",
    "OrderRejected",
    "PluginError",
    "Register",
    "StorageError",
    "StrategyError",
    "TraderError",
    "hookimpl",
    *_interfaces,
    *_model,
]
