"""The ``trader`` command: entry point, global options, and error handling.

Exit status: 0 success, 1 a user error (one message on stderr, no traceback), 2 a usage error.
``--debug`` (or ``TRADER_DEBUG=1``) shows tracebacks.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

import trader
from trader.errors import TraderError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


#: Built-in commands, imported only when used so that ``trader --version`` stays quick.
BUILTIN_COMMANDS: dict[str, str] = {
    "plugins": "trader.cli.plugins_cmd:plugins_command",
    "config": "trader.cli.config_cmd:config_group",
    "data": "trader.cli.data_cmd:data_group",
    "plugin": "trader.cli.plugin_cmd:plugin_group",
    "tasks": "trader.cli.tasks_cmd:tasks_group",
    "keys": "trader.cli.keys_cmd:keys_group",
    "broker": "trader.cli.broker_cmd:broker_command",
    "worker": "trader.cli.worker_cmd:worker_group",
    "backtest": "trader.cli.backtest_cmd:backtest_command",
    "strategy": "trader.cli.strategy_cmd:strategy_group",
    "completion": "trader.cli.completion_cmd:completion",
}


class TraderGroup(click.Group):
    """The top-level group: built-in commands load lazily; plugins' commands follow them.

    Plugins are loaded only when a command that is not built in is asked for, or when every
    command is listed (help, completion), so built-in commands never pay for loading plugins
    they do not use.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        _add_plugin_commands(self)
        return [*BUILTIN_COMMANDS, *(n for n in self.commands if n not in BUILTIN_COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = BUILTIN_COMMANDS.get(cmd_name)
        if target is None:
            _add_plugin_commands(self)
            return self.commands.get(cmd_name)
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=TraderGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(trader.__version__, "-V", "--version", prog_name="trader")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TRADER_CONFIG",
    help="Configuration file (default: $TRADER_CONFIG, else ./trader.toml, else built-in ones).",
)
@click.option(
    "--debug", is_flag=True, envvar="TRADER_DEBUG", help="Show tracebacks and debug logs."
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, debug: bool) -> None:
    """trader: backtest and run trading strategies, with plugins for everything."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["debug"] = debug
    if debug:
        logging.getLogger().setLevel(logging.DEBUG)


def load_cli_config(ctx: click.Context, *components: str) -> Any:
    """Load the configuration the global ``--config`` option names (or the defaults).

    ``components`` names the tables the command will use (``"storage.candles"``...): their
    plugins and options are checked too, and every problem is reported in one list.
    """
    from trader.config import load_config
    from trader.plugins import get_plugin_manager

    root = ctx.find_root()
    path = root.obj.get("config_path") if root.obj else None
    if not components:
        return load_config(path)
    return load_config(path, host=get_plugin_manager(), components=list(components))


_plugins_added = False


def _add_plugin_commands(group: click.Group) -> None:
    """Let plugins add their commands, once; built-in names stay taken."""
    global _plugins_added
    if _plugins_added:
        return
    _plugins_added = True
    from trader.plugins import get_plugin_manager

    # Plugins see placeholders for the built-in names, so they cannot take them.
    for name in BUILTIN_COMMANDS:
        group.commands.setdefault(name, click.Command(name))
    try:
        get_plugin_manager().add_commands(group)
    finally:
        for name in BUILTIN_COMMANDS:
            group.commands.pop(name, None)


def build_cli() -> click.Group:
    """The ``trader`` command group (plugins' commands join it when first needed)."""
    return cli


def main(argv: list[str] | None = None) -> None:
    """Run the ``trader`` command and exit with its status."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get(
        "TRADER_DEBUG", ""
    ) not in ("", "0")
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        logging.addLevelName(level, logging.getLevelName(level).lower())
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    try:
        status = build_cli().main(args=argv, prog_name="trader", standalone_mode=False)
    except click.exceptions.Exit as done:
        status = done.exit_code
    except click.ClickException as error:
        error.show()
        status = error.exit_code
    except click.exceptions.Abort as abort:
        # click turns Ctrl-C (and an EOF at a prompt) into Abort: keep Ctrl-C's usual status
        if isinstance(abort.__context__, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            status = 130
        else:
            click.echo("aborted", err=True)
            status = 1
    except TraderError as error:
        if debug:
            raise
        click.echo(f"error: {error}", err=True)
        status = 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        status = 130
    except Exception as error:
        if debug:
            raise
        click.echo(
            f"internal error: {type(error).__name__}: {error} (run with --debug for the traceback)",
            err=True,
        )
        status = 1
    sys.exit(status if isinstance(status, int) else 0)
