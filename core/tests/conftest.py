"""Fixtures for core tests: throwaway distributions that the plugin host discovers for real."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib import invalidate_caches
from pathlib import Path

import pytest

MakeDistribution = Callable[..., Path]


@pytest.fixture
def make_distribution(tmp_path: Path) -> Iterator[MakeDistribution]:
    """Create an importable distribution with an entry point in group ``trader``.

    It is a real ``.dist-info`` folder on ``sys.path``, so ``importlib.metadata`` finds it the
    way it finds a pip-installed plugin. Modules and path entries are removed afterwards.
    """
    root = tmp_path / "site"
    root.mkdir()
    sys.path.insert(0, str(root))
    modules: list[str] = []

    def make(name: str, source: str, *, version: str = "1.0", entry: str | None = None) -> Path:
        module = name.replace("-", "_")
        entry_name = entry or module
        info = root / f"{module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[trader]\n{entry_name} = {module}\n")
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        modules.append(module)
        invalidate_caches()
        return root / f"{module}.py"

    yield make
    sys.path.remove(str(root))
    for module in modules:
        sys.modules.pop(module, None)
    invalidate_caches()
