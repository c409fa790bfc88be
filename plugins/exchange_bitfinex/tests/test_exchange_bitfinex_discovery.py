from trader.plugins import get_plugin_manager


def test_exchange_bitfinex_is_discovered_and_registers_nothing_yet() -> None:
    host = get_plugin_manager()
    info = host.plugin_info("exchange_bitfinex")
    assert info is not None, "entry point exchange_bitfinex was not discovered"
    assert info.distribution == "trader-exchange-bitfinex"
    assert info.version == "0.1.0.dev0"
    assert info.error is None
    assert info.registers == {}
