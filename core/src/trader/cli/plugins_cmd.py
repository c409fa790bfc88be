"""``trader plugins``: what is installed and what each plugin registers."""

from __future__ import annotations

import json

import click

from trader.plugins import get_plugin_manager


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_command(as_json: bool) -> None:
    """List plugins: distribution, version, and what each registers."""
    host = get_plugin_manager()
    infos = [*host.plugins.values(), *host.refused]
    if as_json:
        click.echo(json.dumps([info.to_dict() for info in infos], indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    from trader.cli.output import console

    table = Table(title="trader plugins", show_lines=False)
    for column in ("plugin", "distribution", "version", "registers", "status"):
        table.add_column(column)
    for info in infos:
        registers = "; ".join(
            f"{kind.replace('_', ' ')}: {', '.join(names)}"
            for kind, names in info.registers.items()
        )
        status = Text("; ".join(info.problems), style="red") if info.problems else Text("ok")
        table.add_row(
            Text(info.name + (" (default)" if info.default else "")),
            Text(info.distribution),
            Text(info.version),
            Text(registers or "-"),
            status,
        )
    console().print(table)
