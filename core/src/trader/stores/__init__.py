"""Storage engines that ship with trader: the embedded SQLite candle store.

Each module here implements one interface of :mod:`trader.interfaces` and is registered by a
default plugin (:mod:`trader.default_plugins.sqlite`), so configuration can replace it.
"""
