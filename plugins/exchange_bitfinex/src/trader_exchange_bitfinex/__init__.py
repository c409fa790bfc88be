"""Bitfinex API v2 exchange adapter for trader, with a fake Bitfinex for tests."""

__version__ = "0.1.0.dev0"
