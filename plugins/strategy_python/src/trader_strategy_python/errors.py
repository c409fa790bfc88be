"""The error Python strategies raise: a :class:`~trader.errors.StrategyError` with where and why."""

from __future__ import annotations

from typing import Literal

from trader.errors import StrategyError

LimitKind = Literal["cpu", "wall", "memory"]


class PythonStrategyError(StrategyError):
    """A Python strategy failed (an exception in its code) or hit a resource limit.

    ``filename`` and ``line`` say where in the strategy file (``line`` is ``None`` when no frame
    of the file was involved, e.g. an invalid return value). ``limit`` names the limit that was
    hit (``"cpu"``, ``"wall"`` or ``"memory"``), or is ``None`` for an ordinary error.
    ``stopped`` is true when the instance can no longer be used (every limit hit, and a worker
    process that died); after an ordinary error it stays usable.
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
        self.reason = message
        where = f"{filename}:{line}" if line is not None else filename
        super().__init__(f"{where}: {message}")
