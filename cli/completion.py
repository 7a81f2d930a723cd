"""``certctl-notify completion SHELL``: the shell completion script, from click's own mechanism."""

from __future__ import annotations

import click

#: The variable click's completion reads; the scripts set it when the shell asks for completions.
COMPLETE_VAR = "_CERTCTL_NOTIFY_COMPLETE"
PROG_NAME = "certctl-notify"


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (commands, options, and the values of --status,
    --channel, --type and --severity).

    \b
    bash (4.4+), in ~/.bashrc:   eval "$(certctl-notify completion bash)"
    zsh, in ~/.zshrc:            eval "$(certctl-notify completion zsh)"
    fish:                        certctl-notify completion fish > ~/.config/fish/completions/certctl-notify.fish
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root().command
    click.echo(get_completion_class(shell)(root, {}, PROG_NAME, COMPLETE_VAR).source())
