from trader.plugins import get_plugin_manager


def test_storage_scylla_is_discovered_and_registers_its_candle_store() -> None:
    host = get_plugin_manager()
    info = host.plugin_info("storage_scylla")
    assert info is not None, "entry point storage_scylla was not discovered"
    assert info.distribution == "trader-storage-scylla"
    assert info.version == "0.1.0.dev0"
    assert info.error is None
    assert info.registers == {"candle_store": ["scylla"]}
