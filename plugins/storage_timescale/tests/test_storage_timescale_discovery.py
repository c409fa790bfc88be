from trader.plugins import get_plugin_manager


def test_storage_timescale_is_discovered_and_registers_its_stores() -> None:
    host = get_plugin_manager()
    info = host.plugin_info("storage_timescale")
    assert info is not None, "entry point storage_timescale was not discovered"
    assert info.distribution == "trader-storage-timescale"
    assert info.version == "0.1.0.dev0"
    assert info.error is None
    assert info.registers == {"candle_store": ["timescale"], "state_store": ["timescale"]}
