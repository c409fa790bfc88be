"""The pytest plugin of trader-sdk (entry point ``pytest11``): fixtures for plugin tests.

* ``plugin_context`` — a :class:`~trader.interfaces.PluginContext` whose data and config
  directories are a fresh temporary folder, with a test secret key for encrypting secrets.
* ``plugin_host`` — a freshly loaded :class:`~trader.plugins.PluginHost`, to assert that your
  plugin is discovered and registers what it should.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The suites live in this package: have pytest rewrite their asserts so failures explain
# themselves (must happen before they are imported).
pytest.register_assert_rewrite(
    "trader_sdk.testing.candle_store",
    "trader_sdk.testing.state_store",
    "trader_sdk.testing.scheduler",
    "trader_sdk.testing.exchange",
    "trader_sdk.testing.strategy_runtime",
    "trader_sdk.testing.postgres",
)

from trader.interfaces import PluginContext  # noqa: E402 - after the rewrite registration
from trader.plugins import PluginHost  # noqa: E402

#: A key for encrypting secrets at rest in tests only.
TEST_SECRET_KEY = "trader-sdk test key: not for production use"  # noqa: S105 - tests only


@pytest.fixture
def plugin_context(tmp_path: Path) -> PluginContext:
    """A plugin context over a fresh temporary folder, with a test secret key."""
    return PluginContext(
        data_dir=tmp_path, config_dir=tmp_path, settings={"secret_key": TEST_SECRET_KEY}
    )


@pytest.fixture
def plugin_host() -> PluginHost:
    """A plugin host loaded afresh from the installed distributions."""
    return PluginHost().load()


# A throwaway PostgreSQL server: ``postgres_cluster`` (session) and ``postgres_database`` (a
# fresh database per test); see trader_sdk.testing.postgres.
from trader_sdk.testing.postgres import (  # noqa: E402
    postgres_cluster as postgres_cluster,
)
from trader_sdk.testing.postgres import (  # noqa: E402
    postgres_database as postgres_database,
)
from trader_sdk.testing.postgres import (  # noqa: E402
    timescaledb_server as timescaledb_server,
)
