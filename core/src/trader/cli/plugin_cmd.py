"""``trader plugin new KIND NAME``: start a new plugin distribution from the SDK's template."""

from __future__ import annotations

from pathlib import Path

import click

from trader.errors import PluginError
from trader.registry import Kind

#: Kinds the command knows; the SDK says which of them it can render today.
KIND_CHOICES = ("storage", "scheduler", "exchange", "strategy")


@click.group("plugin")
def plugin_group() -> None:
    """Create plugins (to see installed ones, run `trader plugins`)."""


@plugin_group.command("new")
@click.argument("kind", type=click.Choice(KIND_CHOICES))
@click.argument("name")
@click.option(
    "-d",
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default="the current folder",
    help="Folder to create the plugin's folder in.",
)
@click.option("--force", is_flag=True, help="Write the template over an existing folder.")
def new_command(kind: str, name: str, directory: Path, force: bool) -> None:
    """Create a plugin distribution to start from, in trader-KIND-NAME/.

    KIND is storage (a candle store) or scheduler; NAME is the capability's name in trader.toml
    (lower case letters, digits and _). The new folder holds pyproject.toml, the package, tests
    that run the SDK's conformance suite, and a README saying what to fill in. It installs as
    it is and its tests pass: change it one step at a time.
    """
    try:
        from trader_sdk.scaffold import KINDS, plugin_names, render_plugin
    except ImportError as error:
        raise PluginError(
            f"trader plugin new needs the trader-sdk distribution ({error}); "
            "install it with: pip install trader-sdk"
        ) from error
    names = plugin_names(kind, name)
    _refuse_taken_name(KINDS[kind].capability, names.name, names.distribution)
    folder = render_plugin(kind, name, directory, force=force).resolve()
    click.echo(f"created {folder}")
    click.echo(
        f"  {names.label} {names.name!r}, entry point {names.entry_name} in package {names.package}"
    )
    click.echo("next:")
    click.echo(f"  pip install -e {folder}")
    click.echo(f"  trader plugins          # lists {names.entry_name} ({names.distribution})")
    click.echo(f"  pytest {folder / 'tests'}")
    click.echo("then read README.md there: it says what to fill in.")


def _refuse_taken_name(kind: Kind, name: str, distribution: str) -> None:
    """Refuse a capability name an installed plugin of another distribution already registers.

    Names are global per kind: the second registration of a name is ignored, so a plugin built
    on a taken name would never be used.
    """
    from trader.plugins import get_plugin_manager

    taken = get_plugin_manager().registry.entries[kind].get(name)
    if taken is not None and taken.distribution != distribution:
        raise PluginError(
            f"a {kind.label} named {name!r} is already registered by plugin {taken.plugin} "
            f"({taken.distribution}); choose another NAME"
        )
