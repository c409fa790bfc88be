"""The error Lua strategies raise: a :class:`~trader.errors.StrategyError` with where and why."""

from __future__ import annotations

from typing import Literal

from trader.errors import StrategyError

LimitKind = Literal["instructions", "cpu", "wall", "memory"]


class LuaStrategyError(StrategyError):
    """A Lua strategy failed (a runtime error) or hit a resource limit.

    ``filename`` and ``line`` say where in the strategy (``line`` is ``None`` when Lua knows no
    line, e.g. for a syntax error reported by position in the message). ``limit`` names the
    limit that was hit, or is ``None`` for an ordinary error. ``stopped`` is true when the
    instance can no longer be used (every limit hit); after an ordinary error it stays usable.
    """

    def __init__(
        self,
        message: str,
        *,
        filename: str,
        line: int | None = None,
        limit: LimitKind | None = None,
        stopped: bool = False,
    ) -> None:
        self.filename = filename
        self.line = line
        self.limit = limit
        self.stopped = stopped
        where = f"{filename}:{line}" if line is not None else filename
        super().__init__(f"{where}: {message}")
