"""``certctl-notify``: the operator's command line.

It sits beside the core, the worker and the API (it may import all three; the core imports none of
them). Commands import what they need when they run, so ``certctl-notify --help`` stays fast.
"""

from __future__ import annotations

import click

from cli import doctor, local, mcp_command, remote


@click.group()
def main() -> None:
    """Deliver certificate alerts with retries and an operator-visible dead-letter queue."""


for _command in (local.migrate, local.sweep, local.recount, local.purge, local.worker, local.dev, local.test_channel,
                 local.flower, remote.list_, remote.show, remote.stats, remote.requeue, remote.enqueue, remote.workers):
    main.add_command(_command)
main.add_command(mcp_command.mcp)
main.add_command(doctor.doctor)
