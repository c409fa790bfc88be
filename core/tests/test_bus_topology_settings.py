"""BusSettings from [cluster]: derived stream endpoints, key files, and `trader broker` errors."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from trader.bus.security import generate_keypair
from trader.bus.topology import BusSettings, stream_endpoints
from trader.bus.transport import Security
from trader.cli.main import cli
from trader.config import load_config
from trader.errors import ConfigError


def settings_of(tmp_path: Path, cluster: str) -> BusSettings:
    path = tmp_path / "trader.toml"
    path.write_text("[cluster]\n" + textwrap.dedent(cluster))
    return BusSettings.from_config(load_config(path))


def test_inproc_by_default_with_streams_beside_the_broker(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, "")
    assert settings == BusSettings(
        transport="inproc",
        broker="inproc://trader-broker",
        stream_xsub="inproc://trader-broker-xsub",
        stream_xpub="inproc://trader-broker-xpub",
        workers=2,
    )
    assert settings.in_process and not settings.curve
    assert settings.server_security() is None and settings.client_security() is None


def test_ipc_streams_are_sockets_beside_the_broker_in_the_data_dir(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, 'transport = "ipc"\n')
    home = Path(os.environ["TRADER_HOME"])
    assert settings.broker == f"ipc://{home / 'broker.ipc'}"
    assert settings.stream_xsub == f"ipc://{home / 'broker-xsub.ipc'}"
    assert settings.stream_xpub == f"ipc://{home / 'broker-xpub.ipc'}"
    assert not settings.in_process and settings.client_security() is None
    assert stream_endpoints("ipc:///run/t/bus") == (
        "ipc:///run/t/bus-xsub",
        "ipc:///run/t/bus-xpub",
    )


def test_tcp_streams_take_the_next_two_ports(tmp_path: Path) -> None:
    settings = settings_of(
        tmp_path, 'transport = "tcp"\nbroker = "tcp://127.0.0.1:7100"\nplaintext_tcp = true\n'
    )
    assert (settings.stream_xsub, settings.stream_xpub) == (
        "tcp://127.0.0.1:7101",
        "tcp://127.0.0.1:7102",
    )
    assert settings.server_security() == Security(plaintext_tcp=True)
    assert settings.client_security() == Security(plaintext_tcp=True)
    with pytest.raises(ConfigError, match="65533"):
        stream_endpoints("tcp://127.0.0.1:65534")
    with pytest.raises(ConfigError, match="longer than"):
        stream_endpoints("ipc:///" + "d" * 95 + "/b.ipc")


def test_curve_keys_come_from_keys_dir_by_convention(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    broker = generate_keypair("broker", keys)
    node = generate_keypair("trader", keys)
    other = generate_keypair("worker-2", tmp_path / "elsewhere")
    shutil.copy(other.public_file, keys / "worker-2.key")  # admitting another host
    settings = settings_of(tmp_path, 'transport = "tcp"\nkeys_dir = "keys"\n')
    assert settings.keys_dir == keys and settings.curve

    server = settings.server_security()
    assert server is not None and server.public_key == broker.public_key
    assert server.allowed_client_keys == {broker.public_key, node.public_key, other.public_key}
    client = settings.client_security()
    assert client is not None
    assert (client.public_key, client.server_public_key) == (node.public_key, broker.public_key)

    (keys / "trader.key_secret").unlink()
    with pytest.raises(ConfigError, match="trader keys generate --name trader"):
        settings.client_security()
    (keys / "broker.key_secret").unlink()
    with pytest.raises(ConfigError, match=r"broker\.key_secret does not exist"):
        settings.server_security()


def test_trader_broker_refuses_inproc_and_reports_missing_keys(tmp_path: Path) -> None:
    config = tmp_path / "trader.toml"
    config.write_text('[cluster]\ntransport = "inproc"\n')
    result = CliRunner().invoke(cli, ["-c", str(config), "broker"])
    assert result.exit_code == 1
    assert "runs inside the process that uses it" in result.output

    (tmp_path / "keys").mkdir()
    config.write_text('[cluster]\ntransport = "tcp"\nkeys_dir = "keys"\n')
    result = CliRunner().invoke(cli, ["-c", str(config), "broker"])
    assert result.exit_code == 1
    assert "broker.key_secret does not exist" in result.output
