from pathlib import Path

import pytest

from trader.config import validate_options
from trader.errors import ConfigError
from trader.interfaces import PluginContext
from trader.plugins import get_plugin_manager
from trader.registry import Kind
from trader_exchange_bitfinex.exchange import BitfinexExchange
from trader_exchange_bitfinex.options import BitfinexOptions


def test_exchange_bitfinex_is_discovered_and_registers_the_bitfinex_exchange() -> None:
    host = get_plugin_manager()
    info = host.plugin_info("exchange_bitfinex")
    assert info is not None, "entry point exchange_bitfinex was not discovered"
    assert info.distribution == "trader-exchange-bitfinex"
    assert info.version == "0.1.0.dev0"
    assert info.error is None
    assert info.registers == {"exchange": ["bitfinex"]}


def test_bitfinex_builds_from_secret_references_and_never_shows_them(tmp_path: Path) -> None:
    host = get_plugin_manager()
    registration = host.registration(Kind.EXCHANGE, "bitfinex")
    assert registration.options is BitfinexOptions
    environ = {"BFX_KEY": "the-key-value", "BFX_SECRET": "the-secret-value"}
    options = validate_options(
        registration,
        {"api_key": "${BFX_KEY}", "api_secret": "${BFX_SECRET}", "public_requests_per_minute": 20},
        environ=environ,
    )
    assert options.api_key.reveal() == "the-key-value"
    exchange = host.build(Kind.EXCHANGE, "bitfinex", options, PluginContext(tmp_path, tmp_path))
    assert isinstance(exchange, BitfinexExchange)
    for text in (repr(exchange), repr(options), str(options.model_dump())):
        assert "the-secret-value" not in text and "the-key-value" not in text
    with pytest.raises(ConfigError) as caught:
        validate_options(registration, {"api_secret": "the-secret-value"})
    assert "the-secret-value" not in str(caught.value)
