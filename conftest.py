"""Settings shared by every test in the workspace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI machines are shared and slow at times: judge properties by examples, never by time.
settings.register_profile(
    "trader", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "trader"))


@pytest.fixture(autouse=True)
def _isolated_trader_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep every test's data out of the user's home: TRADER_HOME points at a fresh folder,
    no stray TRADER_* variable leaks in, and the plugin host is reloaded afterwards."""
    from trader.plugins import reset_plugin_manager

    saved = {k: v for k, v in os.environ.items() if k.startswith("TRADER_")}
    for key in saved:
        del os.environ[key]
    home = tmp_path_factory.mktemp("trader-home")
    os.environ["TRADER_HOME"] = str(home)
    reset_plugin_manager()
    yield home
    for key in [k for k in os.environ if k.startswith("TRADER_")]:
        del os.environ[key]
    os.environ.update(saved)
    reset_plugin_manager()
