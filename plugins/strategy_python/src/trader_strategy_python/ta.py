"""Incremental indicators for Python strategies: :mod:`trader.ta`, under the names the Lua
runtime's ``ta`` uses.

This module is the ``ta`` global of every Python strategy (``from trader_strategy_python import
ta`` is the same module). There is one Python implementation, :mod:`trader.ta`; this module only
re-exports it. ``ta.sma(period)`` and the other factories return an indicator whose
``update(...)`` feeds one candle's inputs in O(1) and returns the current reading, or ``None``
while it warms up; ``indicator.value`` holds the last reading. The Lua runtime does the same
operations in the same order, so both runtimes give the same numbers bit for bit, and the
definitions are TA-Lib's (see ``docs/ta.md``). Indicators keep their state in plain numbers and
lists, so they can live in ``ctx.state`` and travel in snapshots.
"""

from __future__ import annotations

from trader.ta import *  # noqa: F403 - this module is trader.ta under the strategies' name
from trader.ta import __all__ as __all__  # the same public names, listed once
