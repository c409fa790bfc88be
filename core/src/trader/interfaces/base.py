"""What every pluggable component shares: an async open/close lifecycle and a plugin context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from typing_extensions import Self


@dataclass(frozen=True)
class PluginContext:
    """What the host hands a factory besides the component's own options.

    ``data_dir`` is where a component keeps files unless its options say otherwise;
    ``config_dir`` is the directory of the configuration file, against which relative paths in
    options are resolved; ``settings`` holds host-wide values a component may read (for example
    the key that encrypts secrets at rest, under ``"secret_key"``).
    """

    data_dir: Path
    config_dir: Path
    settings: dict[str, Any] = field(default_factory=dict, repr=False)
    """May hold secrets (the key for secrets at rest): never shown by ``repr``."""

    def resolve_path(self, path: str | Path) -> Path:
        """Resolve ``path`` against ``config_dir`` (``~`` expanded); absolute paths stay."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.config_dir / candidate


class Component:
    """An async resource with an explicit lifecycle.

    ``await open()`` prepares it (connects, creates or migrates schemas) and is idempotent;
    ``await close()`` releases it and is idempotent too. ``async with component:`` does both.
    Methods other than these two may be called only between them.
    """

    async def open(self) -> None:
        """Prepare the component for use. Calling it again is harmless."""

    async def close(self) -> None:
        """Release everything the component holds. Calling it again is harmless."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
