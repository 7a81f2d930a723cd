"""``certctl-notify``: the operator's command line.

It sits beside the core, the worker and the API (it may import all three; the core imports none of
them). Commands import what they need when they run, so ``certctl-notify --help`` stays fast.
"""

from __future__ import annotations

import click

from cli import completion, doctor, local, mcp_command, remote


@click.group()
def main() -> None:
    """Deliver certificate alerts with retries and an operator-visible dead-letter queue.

    Every command that prints a result takes --json: one JSON document on stdout (the API's own JSON
    for the commands that call the API); progress, prompts and errors go to stderr. See docs/cli.md.

    \b
    Exit codes:
      0    ok
      1    failure: the API unreachable, a key refused, a database error, …
      2    usage error (a wrong option or value)
      3    not found (the API answered 404)
      4    conflict (the API answered 409: wrong state, a bulk requeue already running)
      130  stopped with Ctrl-C
    requeue ID… and mark-read ID… with several ids exit with the worst outcome among them: 1 if any failed for
    another reason, else 3 if any does not exist, else 4 if any was in the wrong state.

    Shell completion: eval "$(certctl-notify completion bash)" (or zsh, fish).
    """


for _command in (local.migrate, local.sweep, local.recount, local.purge, local.worker, local.dev, local.test_channel,
                 local.flower, remote.list_, remote.show, remote.stats, remote.requeue, remote.mark_read,
                 remote.enqueue, remote.workers, mcp_command.mcp, completion.completion, doctor.doctor):
    main.add_command(_command)
