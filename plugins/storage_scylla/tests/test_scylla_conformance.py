"""The scylla candle store passes the sdk's candle store conformance suite.

No ScyllaDB or Cassandra server can be installed where this project is built, so the default
run drives the real store through :class:`trader_storage_scylla.memory.MemorySession`: an
in-memory stand-in for the driver's session (``prepare``, ``execute``, ``execute_async`` with
paging) that answers the store's CQL. That checks the store's logic and the CQL it sends, not
a cluster. With ``TRADER_SCYLLA_HOSTS`` set (comma-separated contact points; optionally
``TRADER_SCYLLA_PORT``, ``TRADER_SCYLLA_DATACENTER``) the same suite also runs against that
cluster, each test in a keyspace of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from trader.interfaces import PluginContext
from trader_sdk.testing.candle_store import CandleStoreConformance, CandleStoreFactory
from trader_storage_scylla.memory import MemoryCluster
from trader_storage_scylla.options import ScyllaCandleOptions
from trader_storage_scylla.store import ScyllaCandleStore, connect_cluster


def _context(tmp_path: Path) -> PluginContext:
    return PluginContext(data_dir=tmp_path, config_dir=tmp_path)


class TestScyllaCandleStoreInMemory(CandleStoreConformance):
    """The store over the in-memory session (small pages, so reads cross page boundaries),
    answering on the session's own thread as the driver does."""

    @pytest.fixture
    def candle_store_factory(self, tmp_path: Path) -> CandleStoreFactory:
        cluster = MemoryCluster(threaded=True)
        options = ScyllaCandleOptions(page_size=100, concurrency=16)
        return lambda: ScyllaCandleStore(options, _context(tmp_path), connector=cluster.connector())


# The root conftest clears TRADER_* variables for every test: read them at import time.
_HOSTS = os.environ.get("TRADER_SCYLLA_HOSTS", "")
_PORT = int(os.environ.get("TRADER_SCYLLA_PORT", "9042"))
_DATACENTER = os.environ.get("TRADER_SCYLLA_DATACENTER") or None


def _cluster_options(keyspace: str) -> ScyllaCandleOptions:
    return ScyllaCandleOptions(
        contact_points=[host.strip() for host in _HOSTS.split(",") if host.strip()],
        port=_PORT,
        keyspace=keyspace,
        local_datacenter=_DATACENTER,
    )


@pytest.mark.skipif(
    not _HOSTS,
    reason="no ScyllaDB/Cassandra cluster: set TRADER_SCYLLA_HOSTS=host[,host...] to run the "
    "conformance suite against a real one (none can be installed on this machine)",
)
class TestScyllaCandleStoreOnCluster(CandleStoreConformance):
    """The store against the cluster named by ``TRADER_SCYLLA_HOSTS``."""

    @pytest.fixture
    def candle_store_factory(self, tmp_path: Path) -> Iterator[CandleStoreFactory]:
        keyspace = f"trader_test_{uuid.uuid4().hex[:12]}"
        options = _cluster_options(keyspace)
        yield lambda: ScyllaCandleStore(options, _context(tmp_path))
        session, shutdown = connect_cluster(options)
        try:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        finally:
            shutdown()
