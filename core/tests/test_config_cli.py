"""``trader config init`` and ``trader config check``, driven through click for real."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from trader.app import open_candle_store
from trader.cli.config_cmd import config_group
from trader.config import STARTER_TOML, Config, default_config, load_config
from trader.model import SeriesKey, Timeframe
from trader.plugins import reset_plugin_manager
from trader.synthetic import generate_candles


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in an empty directory, with only the default plugins loaded (no distributions), so
    what is "not installed" does not depend on this machine."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADER_LOAD_PLUGINS", "no-such-distribution")
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(config_group, list(args), catch_exceptions=False)


# --- init ---------------------------------------------------------------------------------


def test_init_writes_the_commented_starter_file_which_loads(in_tmp: Path) -> None:
    result = run("init")
    assert result.exit_code == 0, result.output
    written = in_tmp / "trader.toml"
    assert written.read_text() == STARTER_TOML
    assert "wrote trader.toml" in result.stdout
    # data_dir is left at the default ($TRADER_HOME here), not moved beside the file.
    assert load_config(written).data_dir == Path(os.environ["TRADER_HOME"])


def test_candles_stored_before_init_stay_in_view_after_it(in_tmp: Path) -> None:
    series = SeriesKey("demo", "BTC/USD", Timeframe.parse("1m"))
    candles = generate_candles(series.timeframe, 1_704_067_200_000, 5, seed=3)

    async def store(config: Config) -> None:
        async with open_candle_store(config) as candle_store:
            await candle_store.write(series, candles)

    async def stored(config: Config) -> int:
        async with open_candle_store(config) as candle_store:
            return len(await candle_store.read(series))

    asyncio.run(store(default_config()))
    assert run("init").exit_code == 0
    assert asyncio.run(stored(load_config(in_tmp / "trader.toml"))) == 5


def test_init_refuses_to_overwrite_without_force(in_tmp: Path) -> None:
    existing = in_tmp / "mine.toml"
    existing.write_text("# my settings\n")
    result = run("init", "mine.toml")
    assert result.exit_code == 1
    assert result.stderr == "error: mine.toml already exists; use --force to overwrite it\n"
    assert existing.read_text() == "# my settings\n"

    forced = run("init", "mine.toml", "--force")
    assert forced.exit_code == 0, forced.output
    assert existing.read_text() == STARTER_TOML


def test_init_creates_missing_folders(in_tmp: Path) -> None:
    result = run("init", "deploy/prod/trader.toml")
    assert result.exit_code == 0, result.output
    assert (in_tmp / "deploy/prod/trader.toml").read_text() == STARTER_TOML


def test_init_refuses_a_directory(in_tmp: Path) -> None:
    (in_tmp / "folder").mkdir()
    result = run("init", "folder")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: folder is a directory")


# --- check --------------------------------------------------------------------------------


def test_check_passes_the_starter_file_and_summarises_it(in_tmp: Path) -> None:
    assert run("init").exit_code == 0
    result = run("check")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "ok: trader.toml"
    summary = {line.split()[0]: line for line in lines[1:]}
    assert summary["data"].split()[-1] == os.environ["TRADER_HOME"]
    assert summary["candle"].split()[-1] == "sqlite"
    assert summary["exchanges"].split()[-1] == "none"
    assert "inproc, broker inproc://trader-broker, 2 local workers" in summary["cluster"]


def test_check_without_any_file_checks_the_built_in_defaults(in_tmp: Path) -> None:
    result = run("check")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "ok: built-in defaults (no file found)"


def write(directory: Path, text: str, name: str = "trader.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_check_prints_every_load_problem_and_never_a_secret(in_tmp: Path) -> None:
    write(
        in_tmp,
        """
        [exchanges.bitfinex]
        api_secret = "s3cret-do-not-print"
        [risk]
        kill_swich = true
        """,
    )
    result = run("check", "trader.toml")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "trader.toml: exchanges.bitfinex.api_secret: literal secrets are not allowed; use "
        "${ENV_VAR} or file:PATH",
        "trader.toml: risk.kill_swich: unknown key; did you mean kill_switch?",
        "error: 2 configuration problems",
    ]
    assert "s3cret" not in result.output


def test_check_suggests_what_to_install_only_for_known_plugins(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the default plugins load, so the first-party Bitfinex plugin counts as missing.
    monkeypatch.setenv("TRADER_LOAD_PLUGINS", "defaults-only")
    reset_plugin_manager()
    write(
        in_tmp,
        """
        [exchanges.bitfinex]
        api_key = "${BITFINEX_API_KEY}"
        api_secret = "${BITFINEX_API_SECRET}"
        [exchanges.foo]
        """,
    )
    result = run("check")
    assert result.exit_code == 1
    problems = result.stderr.splitlines()
    assert problems[0].startswith("trader.toml: exchanges.bitfinex: no exchange named 'bitfinex'")
    assert problems[0].endswith("pip install trader-exchange-bitfinex")
    assert problems[1:3] == [
        "trader.toml: exchanges.bitfinex.api_key: environment variable BITFINEX_API_KEY is not set",
        "trader.toml: exchanges.bitfinex.api_secret: environment variable BITFINEX_API_SECRET is "
        "not set",
    ]
    # No distribution name is made up for an unknown plugin: it could be anyone's package.
    assert problems[3].startswith(
        "trader.toml: exchanges.foo: no exchange named 'foo' is installed (installed: paper)"
    )
    assert "pip install" not in problems[3] and "trader-exchange-foo" not in problems[3]
    assert problems[4:] == ["error: 4 configuration problems"]


def test_check_reports_file_and_plugin_option_mistakes_together(in_tmp: Path) -> None:
    write(
        in_tmp,
        """
        [risk]
        max_order_per_minute = 5

        [storage.candles]
        plugin = "sqlite"
        busy_timeout_ms = "lots"
        pathh = "x.db"
        """,
    )
    result = run("check")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "trader.toml: risk.max_order_per_minute: unknown key; did you mean max_orders_per_minute?",
        "trader.toml: storage.candles.pathh: unknown key: candle store 'sqlite' has no such "
        "option; did you mean path?",
        "trader.toml: storage.candles.busy_timeout_ms: expected an integer, got a string",
        "error: 3 configuration problems",
    ]
    assert result.stdout == ""


def test_check_reads_the_path_the_top_level_config_option_gave(in_tmp: Path) -> None:
    write(in_tmp, "[risk]\nkill_switch = true\n", name="other.toml")

    @click.group()
    @click.pass_context
    def root(ctx: click.Context) -> None:
        ctx.obj = {"config_path": Path("other.toml")}

    root.add_command(config_group)
    result = CliRunner().invoke(root, ["config", "check"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "ok: other.toml"
    assert "kill switch ON" in result.stdout


def test_check_of_a_missing_file_says_how_to_create_it(in_tmp: Path) -> None:
    result = run("check", "nowhere.toml")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "nowhere.toml: file not found; create one with `trader config init nowhere.toml`"
    )
