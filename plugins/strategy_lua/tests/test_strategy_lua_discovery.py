from trader.plugins import get_plugin_manager


def test_strategy_lua_is_discovered_and_registers_nothing_yet() -> None:
    host = get_plugin_manager()
    info = host.plugin_info("strategy_lua")
    assert info is not None, "entry point strategy_lua was not discovered"
    assert info.distribution == "trader-strategy-lua"
    assert info.version == "0.1.0.dev0"
    assert info.error is None
    assert info.registers == {}
