from pathlib import Path

from trader.interfaces import Limits, PluginContext, StrategyRuntime
from trader.plugins import get_plugin_manager
from trader.registry import Kind
from trader_strategy_lua.plugin import LuaRuntimeOptions
from trader_strategy_lua.runtime import LuaStrategyRuntime


def test_strategy_lua_is_discovered_and_registers_the_lua_runtime() -> None:
    host = get_plugin_manager()
    info = host.plugin_info("strategy_lua")
    assert info is not None, "entry point strategy_lua was not discovered"
    assert info.distribution == "trader-strategy-lua"
    assert info.version == "0.1.0.dev0"
    assert info.error is None
    assert info.registers == {"strategy_runtime": ["lua"]}


def test_the_lua_registration_builds_a_runtime_with_the_options_limits(tmp_path: Path) -> None:
    registration = get_plugin_manager().registry.get(Kind.STRATEGY_RUNTIME, "lua")
    assert registration.options is LuaRuntimeOptions
    assert LuaRuntimeOptions().limits() == Limits()
    options = LuaRuntimeOptions(history=50, memory_mib=8, wall_seconds_per_call=None)
    runtime = registration.build(options, PluginContext(data_dir=tmp_path, config_dir=tmp_path))
    assert isinstance(runtime, StrategyRuntime)
    assert isinstance(runtime, LuaStrategyRuntime)
    assert runtime.language == "lua"
    assert runtime.history == 50
    assert runtime.default_limits == Limits(10_000_000, 8 * 1024 * 1024, None)
    assert runtime.cpu_seconds_per_call == 0.025
