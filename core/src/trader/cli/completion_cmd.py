"""``trader completion SHELL``: print a shell completion script."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  eval "$(trader completion bash)"   (add to ~/.bashrc)
    zsh:   eval "$(trader completion zsh)"    (add to ~/.zshrc)
    fish:  trader completion fish > ~/.config/fish/completions/trader.fish
    """
    completion_class = get_completion_class(shell)
    if completion_class is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion support for {shell}")
    root = ctx.find_root().command
    script = completion_class(root, {}, "trader", "_TRADER_COMPLETE").source()
    click.echo(script)
