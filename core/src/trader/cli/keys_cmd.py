"""``trader keys generate|list``: CURVE key pairs for the bus's TCP endpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import click

from trader.errors import TraderError


class _KeysError(click.ClickException):
    """A mistake the user can fix: one line on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


_DIR_HELP = "Key directory (default: $TRADER_HOME/keys, else the per-user data directory's keys)."


@click.group("keys")
def keys_group() -> None:
    """Make and list CURVE keys that secure the bus's TCP endpoints."""


@keys_group.command("generate")
@click.option("--name", default="trader", show_default=True, help="Name of the key pair.")
@click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path), help=_DIR_HELP
)
def generate_command(name: str, directory: Path | None) -> None:
    """Write NAME.key (public) and NAME.key_secret (mode 0600); print the public key.

    Give NAME.key to the peers that must trust this key (a server's allowlist directory, or a
    client's server_public_key); keep NAME.key_secret on this host only.
    """
    from trader.bus.security import generate_keypair

    try:
        info = generate_keypair(name, directory)
    except TraderError as error:
        raise _KeysError(str(error)) from error
    click.echo(f"wrote {info.public_file} and {info.public_file.name}_secret")
    click.echo(f"public key: {info.public_key.decode()}  fingerprint: {info.fingerprint}")


@keys_group.command("list")
@click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path), help=_DIR_HELP
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(directory: Path | None, as_json: bool) -> None:
    """List key names, public keys and fingerprints (never secret keys)."""
    from trader.bus.security import default_key_dir, list_keys

    folder = directory if directory is not None else default_key_dir()
    try:
        keys = list_keys(folder)
    except TraderError as error:
        raise _KeysError(str(error)) from error
    if as_json:
        rows = [
            {
                "name": key.name,
                "public_key": key.public_key.decode(),
                "fingerprint": key.fingerprint,
                "has_secret": key.has_secret,
                "file": str(key.public_file),
            }
            for key in keys
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not keys:
        click.echo(f"no keys in {folder}; make one with `trader keys generate`")
        return
    width = max(len(key.name) for key in keys)
    for key in keys:
        secret = "key pair" if key.has_secret else "public only"
        click.echo(f"{key.name:<{width}}  {key.public_key.decode()}  {key.fingerprint}  ({secret})")
