"""``trader config init|check``: write a starter ``trader.toml``, and check one."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, NoReturn

import click

from trader.config import DEFAULT_FILE_NAME, STARTER_TOML, Config, load_config
from trader.config.check import check_file
from trader.errors import ConfigError


class UserError(click.ClickException):
    """A mistake the user can fix: one line on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _global_config_path(ctx: click.Context) -> Path | None:
    """The path the top-level ``--config`` option (or ``$TRADER_CONFIG``) gave, if any."""
    root = ctx.find_root()
    if isinstance(root.obj, dict):
        value = root.obj.get("config_path")
        if value is not None:
            return Path(value)
    return None


@click.group("config")
def config_group() -> None:
    """Write and check the configuration file (trader.toml)."""


@config_group.command("init")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
@click.pass_context
def init_command(ctx: click.Context, path: Path | None, force: bool) -> None:
    """Write a commented starter file to PATH (default: ./trader.toml).

    Every section is explained; the active settings are the built-in defaults (SQLite stores in
    the default data directory, everything in one process) and examples show exchanges,
    strategies, assignments and schedules, with secrets as ${ENV_VAR} references. An existing
    file is kept unless --force is given.
    """
    target = path or _global_config_path(ctx) or Path(DEFAULT_FILE_NAME)
    if target.is_dir():
        raise UserError(
            f"{target} is a directory; give a file path such as {target / 'trader.toml'}"
        )
    if target.exists() and not force:
        raise UserError(f"{target} already exists; use --force to overwrite it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(STARTER_TOML, encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot write {target}: {error.strerror or error}") from None
    click.echo(f"wrote {target}")
    click.echo(f"next: edit it, then run `trader config check {target}`")


@config_group.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def check_command(ctx: click.Context, path: Path | None) -> None:
    """Validate PATH and check that every plugin it names is installed.

    PATH defaults to --config, $TRADER_CONFIG, then ./trader.toml; with none of them the
    built-in defaults are checked. Every problem is printed at once, in file order (file, key
    path, what is wrong): mistakes in the file and its plugins' options alike, with the
    distribution to install for a missing first-party plugin; secret values are never shown.
    Exit status 0 when all is well, 1 otherwise.
    """
    from trader.plugins import get_plugin_manager

    chosen = path or _global_config_path(ctx)
    host = get_plugin_manager()
    for problem in host.problems:
        click.echo(f"warning: {problem}", err=True)
    problems = check_file(chosen, host)
    if problems:
        _fail(problems)
    try:
        config = load_config(chosen)
    except ConfigError as error:  # the file changed since it was checked
        _fail(error.problems)
    click.echo(f"ok: {config.label if config.source else 'built-in defaults (no file found)'}")
    for name, value in summary(config):
        click.echo(f"  {name:<13} {value}")


def _fail(problems: list[str]) -> NoReturn:
    for problem in problems:
        click.echo(problem, err=True)
    count = len(problems)
    raise UserError(f"{count} configuration problem{'s' if count != 1 else ''}")


def summary(config: Config) -> list[tuple[str, str]]:
    """What a configuration sets up, as ``(name, description)`` lines for ``config check``."""

    def listing(items: dict[str, str]) -> str:
        return ", ".join(f"{name} ({detail})" for name, detail in items.items()) or "none"

    risk = config.risk
    cluster = config.cluster
    enabled = sum(1 for assignment in config.assignments if assignment.enabled)
    secret_key = config.storage.secret_key
    lines = [
        ("data dir", str(config.data_dir)),
        ("candle store", config.storage.candles.plugin),
        ("state store", config.storage.state.plugin),
        ("secret key", str(secret_key) if secret_key is not None else "not set"),
        ("exchanges", listing({n: e.plugin for n, e in config.exchanges.items()})),
        ("strategies", listing({n: s.runtime for n, s in config.strategies.items()})),
        ("assignments", f"{len(config.assignments)} ({enabled} enabled)"),
        ("schedules", listing({n: s.scheduler for n, s in config.schedules.items()})),
        (
            "risk",
            f"{risk.max_orders_per_minute} orders/min, {risk.max_open_orders} open orders, "
            f"position <= {risk.max_position_fraction:.0%} of equity, "
            f"kill switch {'ON' if risk.kill_switch else 'off'}",
        ),
        (
            "cluster",
            f"{cluster.transport}, broker {cluster.broker}, {cluster.workers} local workers"
            + (", CURVE keys" if cluster.keys_dir is not None else ""),
        ),
    ]
    return lines
