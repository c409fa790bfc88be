from pathlib import Path

from trader.interfaces import Limits, PluginContext, StrategyRuntime
from trader.plugins import get_plugin_manager
from trader.registry import Kind
from trader_strategy_python.plugin import PythonRuntimeOptions
from trader_strategy_python.runtime import PythonStrategyRuntime


def test_strategy_python_is_discovered_and_registers_the_python_runtime() -> None:
    host = get_plugin_manager()
    info = host.plugin_info("strategy_python")
    assert info is not None, "entry point strategy_python was not discovered"
    assert info.distribution == "trader-strategy-python"
    assert info.version == "0.1.0.dev0"
    assert info.error is None
    assert info.registers == {"strategy_runtime": ["python"]}


def test_the_python_registration_builds_a_runtime_with_the_options_limits(tmp_path: Path) -> None:
    registration = get_plugin_manager().registry.get(Kind.STRATEGY_RUNTIME, "python")
    assert registration.options is PythonRuntimeOptions
    assert PythonRuntimeOptions().limits() == Limits(None, 256 * 1024 * 1024, 1.0)
    options = PythonRuntimeOptions(history=50, isolate=True, memory_mib=8, cpu_seconds_per_call=2)
    runtime = registration.build(options, PluginContext(data_dir=tmp_path, config_dir=tmp_path))
    assert isinstance(runtime, StrategyRuntime)
    assert isinstance(runtime, PythonStrategyRuntime)
    assert runtime.language == "python"
    assert (runtime.history, runtime.isolate, runtime.cpu_seconds_per_call) == (50, True, 2)
    assert runtime.default_limits == Limits(None, 8 * 1024 * 1024, 1.0)
