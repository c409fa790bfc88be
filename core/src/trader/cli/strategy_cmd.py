"""``trader strategy``: write a template strategy, and check one loads and what it declares.

The helpers here (:func:`language_of`, :func:`build_runtime`, :func:`read_source`) are shared
with ``trader backtest``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import click

from trader.errors import StrategyError, TraderError
from trader.interfaces import StrategyRuntime
from trader.interfaces.strategy import Parameter

#: The runtime (a registered ``strategy_runtime`` name) of each strategy file suffix.
RUNTIME_BY_SUFFIX = {".lua": "lua", ".py": "python"}
#: The file suffix of each language ``trader strategy new`` writes.
SUFFIX_BY_LANGUAGE = {"lua": ".lua", "python": ".py"}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def language_of(path: Path) -> str:
    """The strategy runtime a file's suffix names (``.lua``: ``lua``, ``.py``: ``python``).

    Raises :class:`click.BadParameter` for any other suffix.
    """
    runtime = RUNTIME_BY_SUFFIX.get(path.suffix.lower())
    if runtime is None:
        known = ", ".join(RUNTIME_BY_SUFFIX)
        raise click.BadParameter(
            f"{path}: cannot tell the strategy language from the suffix {path.suffix!r} "
            f"(known: {known})",
            param_hint="STRATEGY_FILE",
        )
    return runtime


def build_runtime(language: str) -> StrategyRuntime:
    """Build the registered strategy runtime ``language`` with its default options.

    Raises :class:`~trader.errors.CapabilityNotFound` naming the distribution to install when
    no installed plugin provides it.
    """
    from trader.plugins import get_plugin_manager
    from trader.registry import Kind

    host = get_plugin_manager()
    host.registration(Kind.STRATEGY_RUNTIME, language)  # raises with the install hint
    return cast(StrategyRuntime, host.build(Kind.STRATEGY_RUNTIME, language, None, None))


def read_source(path: Path) -> str:
    """The text of strategy file ``path``; a :class:`TraderError` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise TraderError(f"cannot read strategy file {path}: {reason or error}") from None


def one_line(error: StrategyError) -> StrategyError:
    """``error`` with its message cut to its first line (``file:line: what``)."""
    text = str(error)
    first = text.splitlines()[0] if text else type(error).__name__
    if first == text:
        return error
    return StrategyError(first)


def parameters_of(path: Path) -> tuple[StrategyRuntime, str, list[Parameter]]:
    """Load strategy file ``path`` (in the Lua sandbox, or in this process for Python) and
    return its runtime, source and declared parameters. Load errors raise
    :class:`StrategyError` with ``file:line`` in one line."""
    runtime = build_runtime(language_of(path))
    source = read_source(path)
    try:
        return runtime, source, runtime.parameters(source, str(path))
    except StrategyError as error:
        raise one_line(error) from None


@click.group("strategy")
def strategy_group() -> None:
    """Write and check strategy files (Lua or Python)."""


@strategy_group.command("new")
@click.argument("language", type=click.Choice(sorted(SUFFIX_BY_LANGUAGE)))
@click.argument("name")
@click.option(
    "--directory",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to write the file in.",
)
def new_command(language: str, name: str, directory: Path) -> None:
    """Write NAME.lua or NAME.py: an SMA crossover template with comments to start from.

    An existing file is never overwritten.
    """
    suffix = SUFFIX_BY_LANGUAGE[language]
    stem = name[: -len(suffix)] if name.endswith(suffix) else name
    if not _NAME.match(stem):
        raise click.BadParameter(
            f"{name!r} is not a usable name (letters, digits, '_' and '-', not starting with "
            "a digit)",
            param_hint="NAME",
        )
    path = directory / f"{stem}{suffix}"
    text = TEMPLATES[language].replace("{name}", path.name)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise TraderError(
            f"{path} already exists; choose another name or remove it first"
        ) from None
    except OSError as error:
        raise TraderError(f"cannot write {path}: {error.strerror or error}") from None
    click.echo(f"wrote {path}; check it with: trader strategy check {path}")


@strategy_group.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the parameters as JSON.")
def check_command(file: Path, as_json: bool) -> None:
    """Load FILE (Lua: in the sandbox; Python: in this process) and list its parameters.

    Errors are reported as ``file:line: message`` with exit status 1.
    """
    import json

    from rich.table import Table

    from trader.cli.output import console

    runtime, _source, parameters = parameters_of(file)
    if as_json:
        rows = [
            {
                "name": p.name,
                "default": p.default,
                "min": p.minimum,
                "max": p.maximum,
                "step": p.step,
                "description": p.description,
            }
            for p in parameters
        ]
        click.echo(json.dumps({"file": str(file), "language": runtime.language, "params": rows}))
        return
    out = console()
    out.print(f"{file}: loads ({runtime.language}); {len(parameters)} parameter(s)")
    if not parameters:
        return
    table = Table("name", "default", "range", "step", "description")
    for p in parameters:
        table.add_row(
            p.name,
            repr(p.default) if isinstance(p.default, str) else str(p.default),
            _range(p),
            "" if p.step is None else _number(p.step),
            p.description,
        )
    out.print(table)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _range(p: Parameter) -> str:
    if p.minimum is None and p.maximum is None:
        return ""
    low = "" if p.minimum is None else _number(p.minimum)
    high = "" if p.maximum is None else _number(p.maximum)
    return f"{low} .. {high}"


_LUA_TEMPLATE = """\
-- {name}: an SMA crossover. Long while the fast average is above the slow one, flat otherwise
-- (the backtest engine is spot only: a negative target sells what is held).
-- Check it:     trader strategy check {name}
-- Backtest it:  trader backtest {name} -e EXCHANGE -s BTC/USD -t 1h --param fast=12
-- The API (params, init, on_candle, ta, the sandbox): plugins/strategy_lua/README.md

-- Declared parameters: a default, and a range sweeps may explore. `--param fast=12` sets one.
params = {
  fast = {default = 10, min = 2, max = 50, step = 1, description = "fast SMA period"},
  slow = {default = 30, min = 5, max = 200, step = 1, description = "slow SMA period"},
}

-- Runs once after loading. Keep what must survive between candles in ctx.state: snapshots
-- carry it when the strategy moves to another worker.
function init(ctx)
  ctx.state.fast = ta.sma(ctx.params.fast)
  ctx.state.slow = ta.sma(ctx.params.slow)
end

-- Runs once per candle, oldest first. `candles` holds the history, newest at index candles.n.
-- Return a target in [-1, 1] (1: all in long, 0: flat), an order table, or nil to hold.
function on_candle(ctx, candles)
  local close = candles.close[candles.n]
  local fast = ctx.state.fast:update(close)  -- nil while warming up
  local slow = ctx.state.slow:update(close)
  if not slow then return nil end
  if fast > slow then return 1 end
  return -1
end
"""

_PYTHON_TEMPLATE = '''\
"""{name}: an SMA crossover. Long while the fast average is above the slow one, flat otherwise
(the backtest engine is spot only: a negative target sells what is held).

Check it:     trader strategy check {name}
Backtest it:  trader backtest {name} -e EXCHANGE -s BTC/USD -t 1h --param fast=12
The API (params, init, on_candle, ta): plugins/strategy_python/README.md
"""

# `ta` (the indicators) is a global the runtime provides; importing it keeps linters quiet.
from trader_strategy_python import ta

# Declared parameters: a default, and a range sweeps may explore. `--param fast=12` sets one.
params = {
    "fast": {"default": 10, "min": 2, "max": 50, "step": 1, "description": "fast SMA period"},
    "slow": {"default": 30, "min": 5, "max": 200, "step": 1, "description": "slow SMA period"},
}


def init(ctx):
    """Run once after loading. Keep what must survive between candles in ctx.state:
    snapshots carry it when the strategy moves to another worker."""
    ctx.state["fast"] = ta.sma(ctx.params.fast)
    ctx.state["slow"] = ta.sma(ctx.params.slow)


def on_candle(ctx, candles):
    """Run once per candle, oldest first; candles.close[-1] is the newest close.

    Return a target in [-1, 1] (1: all in long, 0: flat), an order dict, or None to hold.
    """
    close = candles.close[-1]
    fast = ctx.state["fast"].update(close)  # None while warming up
    slow = ctx.state["slow"].update(close)
    if slow is None:
        return None
    if fast > slow:
        return 1
    return -1
'''

#: The template ``trader strategy new`` writes, by language (``{name}``: the file name).
TEMPLATES = {"lua": _LUA_TEMPLATE, "python": _PYTHON_TEMPLATE}
