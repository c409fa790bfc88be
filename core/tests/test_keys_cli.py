"""``trader keys generate|list``: files in the right place, secrets never printed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import zmq.auth
from click.testing import CliRunner

from trader.cli.keys_cmd import keys_group


def test_generate_then_list_in_a_chosen_directory(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(keys_group, ["generate", "--name", "broker", "--dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    public, secret = zmq.auth.load_certificate(tmp_path / "broker.key_secret")
    assert secret is not None
    assert stat.S_IMODE((tmp_path / "broker.key_secret").stat().st_mode) == 0o600
    assert public.decode() in made.output
    assert secret.decode() not in made.output

    listed = runner.invoke(keys_group, ["list", "--dir", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    assert "broker" in listed.output and public.decode() in listed.output
    assert secret.decode() not in listed.output

    as_json = runner.invoke(keys_group, ["list", "--dir", str(tmp_path), "--json"])
    rows = json.loads(as_json.output)
    assert [(r["name"], r["public_key"], r["has_secret"]) for r in rows] == [
        ("broker", public.decode(), True)
    ]
    assert secret.decode() not in as_json.output


def test_default_directory_is_trader_home_keys() -> None:
    runner = CliRunner()
    assert runner.invoke(keys_group, ["generate"]).exit_code == 0
    folder = Path(os.environ["TRADER_HOME"]) / "keys"
    assert (folder / "trader.key").is_file() and (folder / "trader.key_secret").is_file()
    listed = runner.invoke(keys_group, ["list"])
    assert listed.exit_code == 0 and listed.output.startswith("trader ")


def test_an_existing_name_is_a_one_line_error(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(keys_group, ["generate", "--dir", str(tmp_path)]).exit_code == 0
    again = runner.invoke(keys_group, ["generate", "--dir", str(tmp_path)])
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert "Traceback" not in again.output


def test_listing_an_empty_directory_says_how_to_make_keys(tmp_path: Path) -> None:
    listed = CliRunner().invoke(keys_group, ["list", "--dir", str(tmp_path / "none")])
    assert listed.exit_code == 0
    assert "trader keys generate" in listed.output
