"""The ``trader`` command as a user runs it: a real process, real files, real exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import trader

#: What each first-party distribution registers so far (the rest arrive with their issues).
FIRST_PARTY_REGISTERS: dict[str, dict[str, list[str]]] = {
    "trader-strategy-lua": {"strategy_runtime": ["lua"]},
    "trader-strategy-python": {"strategy_runtime": ["python"]},
    "trader-storage-timescale": {"candle_store": ["timescale"], "state_store": ["timescale"]},
    "trader-storage-scylla": {"candle_store": ["scylla"]},
    "trader-exchange-bitfinex": {"exchange": ["bitfinex"]},
}
FIRST_PARTY = {
    "trader-exchange-bitfinex",
    "trader-storage-timescale",
    "trader-storage-scylla",
    "trader-strategy-lua",
    "trader-strategy-python",
}


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trader", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"trader, version {trader.__version__}"


def test_plugins_json_lists_defaults_and_first_party_distributions() -> None:
    result = run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = json.loads(result.stdout)
    by_dist: dict[str, list[dict[str, object]]] = {}
    for plugin in plugins:
        by_dist.setdefault(str(plugin["distribution"]), []).append(plugin)
    assert set(by_dist) >= FIRST_PARTY
    for dist in FIRST_PARTY:
        (entry,) = by_dist[dist]
        assert entry["version"] == "0.1.0.dev0"
        assert entry["problems"] == []
        assert entry["registers"] == FIRST_PARTY_REGISTERS.get(dist, {}), dist
    defaults = {p["name"]: p for p in by_dist["trader"]}
    assert defaults["sqlite"]["registers"] == {
        "candle_store": ["sqlite"],
        "state_store": ["sqlite"],
    }
    assert defaults["paper"]["registers"] == {"exchange": ["paper"]}
    assert defaults["schedulers"]["registers"] == {
        "scheduler": ["candle_close", "cron", "interval"]
    }
    assert all(p["version"] == trader.__version__ for p in by_dist["trader"])


def test_plugins_table_shows_every_plugin() -> None:
    result = run("plugins")
    assert result.returncode == 0
    for name in ("sqlite", "schedulers", "exchange_bitfinex", "strategy_lua"):
        assert name in result.stdout


def test_usage_errors_exit_2() -> None:
    result = run("data", "import")
    assert result.returncode == 2
    assert "Missing argument 'FILE'" in result.stderr
    assert run("no-such-command").returncode == 2


def test_bad_option_value_is_a_usage_error_naming_the_option(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("time,open,high,low,close,volume\n")
    result = run("data", "import", str(csv), "-e", "x", "-s", "BTC/USD", "-t", "7m")
    assert result.returncode == 2
    assert "Invalid value for '--timeframe'" in result.stderr
    assert "must be one of 1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30" in result.stderr


def test_user_errors_exit_1_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    csv = tmp_path / "bad-header.csv"
    csv.write_text("when,price\n1,2\n")
    result = run("data", "import", str(csv), "-e", "x", "-s", "BTC/USD", "-t", "1m")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "the header lacks" in lines[0]
    assert "Traceback" not in result.stderr


def test_ctrl_c_exits_130_and_a_refused_prompt_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import click

    from trader.cli import main as cli_main

    @click.command()
    @click.option("--prompt", is_flag=True)
    def stub(prompt: bool) -> None:
        if prompt:
            click.confirm("go on?", abort=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_cli", lambda: stub)
    with pytest.raises(SystemExit) as interrupted:
        cli_main.main([])
    assert interrupted.value.code == 130
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    with pytest.raises(SystemExit) as refused:
        cli_main.main(["--prompt"])
    assert refused.value.code == 1
    assert "aborted" in capsys.readouterr().err


def test_completion_scripts_are_printed() -> None:
    for shell, marker in (
        ("bash", "complete -o"),
        ("zsh", "compdef"),
        ("fish", "complete --no-files --command trader"),
    ):
        result = run("completion", shell)
        assert result.returncode == 0
        assert marker in result.stdout
        assert "_TRADER_COMPLETE" in result.stdout


def test_completion_completes_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trader"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "_TRADER_COMPLETE": "bash_complete",
            "COMP_WORDS": "trader da",
            "COMP_CWORD": "1",
        },
        check=False,
    )
    assert "plain,data" in result.stdout


@pytest.mark.parametrize("command", ["plugins", "data list"])
def test_a_broken_plugin_does_not_stop_the_cli(command: str, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "trader_kaput-1.0.dist-info").mkdir(parents=True)
    (site / "trader_kaput-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: trader-kaput\nVersion: 1.0\n"
    )
    (site / "trader_kaput-1.0.dist-info" / "entry_points.txt").write_text(
        "[trader]\nkaput = trader_kaput\n"
    )
    (site / "trader_kaput.py").write_text("raise ImportError('needs libkaput.so')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = run(*command.split(), env=env)
    assert result.returncode == 0, result.stderr
    assert (
        "plugin kaput (trader-kaput): failed to import: ImportError: needs libkaput.so"
        in result.stderr
    )
