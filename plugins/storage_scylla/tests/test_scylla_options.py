"""Options, configuration and secrets of the scylla candle store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from trader.app import open_candle_store
from trader.config import load_config
from trader.config.secrets import SecretRef
from trader.errors import ConfigError, StorageError
from trader.plugins import get_plugin_manager
from trader_storage_scylla.options import ScyllaCandleOptions

PASSWORD = "s3cret-Passw0rd"


def test_defaults_suit_a_local_single_node() -> None:
    options = ScyllaCandleOptions()
    assert options.contact_points == ["127.0.0.1"] and options.port == 9042
    assert options.replication.cql() == "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    assert options.read_consistency == options.write_consistency == "LOCAL_QUORUM"
    assert options.label == "127.0.0.1:9042/trader"


def test_the_password_is_a_secret_reference_never_a_literal(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    options = ScyllaCandleOptions.model_validate(
        {"username": "trader", "password": f"file:{secret}"}
    )
    assert isinstance(options.password, SecretRef)
    assert options.password.reveal() == PASSWORD
    assert PASSWORD not in repr(options)
    with pytest.raises(ValidationError, match="literal secrets are not allowed") as caught:
        ScyllaCandleOptions.model_validate({"username": "trader", "password": PASSWORD})
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"username": "trader"}, "username and password go together"),
        ({"keyspace": "Prices"}, "must start with a lower case letter"),
        ({"keyspace": "a; DROP"}, "must start with a lower case letter"),
        ({"contact_points": []}, "at least 1 item"),
        ({"replication": {"datacenters": {"dc1": 3}}}, "SimpleStrategy takes replication_factor"),
        (
            {"replication": {"strategy": "NetworkTopologyStrategy", "replication_factor": 3}},
            "NetworkTopologyStrategy takes datacenters",
        ),
        (
            {"replication": {"strategy": "NetworkTopologyStrategy"}},
            "needs datacenters with at least one replica",
        ),
        (
            {"replication": {"strategy": "NetworkTopologyStrategy", "datacenters": {"a'b": 1}}},
            "may hold only letters",
        ),
        ({"write_consistency": "SERIAL"}, "write_consistency"),
        ({"hosts": ["x"]}, "Extra inputs are not permitted"),
    ],
)
def test_mistakes_are_refused_with_a_reason(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScyllaCandleOptions.model_validate(options)


def test_trader_toml_selects_the_store_and_an_unreachable_cluster_fails_clearly(
    tmp_path: Path,
) -> None:
    (tmp_path / "trader.toml").write_text(
        "[storage.candles]\n"
        'plugin = "scylla"\n'
        'contact_points = ["127.0.0.1"]\n'
        "port = 9\n"  # nothing listens on the discard port
        'keyspace = "prices"\n'
        'username = "trader"\n'
        'password = "${SCYLLA_PASSWORD}"\n'
        'replication = { strategy = "NetworkTopologyStrategy", datacenters = { dc1 = 3 } }\n'
        "connect_timeout_s = 2\n"
    )
    environ = {"SCYLLA_PASSWORD": PASSWORD, "TRADER_HOME": str(tmp_path / "home")}
    host = get_plugin_manager()
    config = load_config(tmp_path / "trader.toml", environ=environ, host=host)

    async def scenario() -> None:
        async with open_candle_store(config, host):
            pass

    with pytest.raises(StorageError) as caught:
        asyncio.run(scenario())
    message = str(caught.value)
    assert message.startswith(
        "scylla candle store 127.0.0.1:9/prices: open failed: NoHostAvailable"
    )
    assert "no node answered: check contact_points, port" in message
    assert PASSWORD not in message


def test_trader_toml_refuses_a_literal_password_without_repeating_it(tmp_path: Path) -> None:
    (tmp_path / "trader.toml").write_text(
        f'[storage.candles]\nplugin = "scylla"\nusername = "u"\npassword = "{PASSWORD}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "trader.toml", environ={}, host=get_plugin_manager())
    assert "storage.candles.password" in str(caught.value)
    assert PASSWORD not in str(caught.value)
