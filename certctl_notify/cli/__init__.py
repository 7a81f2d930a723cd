"""``certctl-notify``: the operator's command line.

Commands that need the API server or the worker import them when they run, so ``certctl-notify
--help`` stays fast and the core keeps no Flask or worker import at module level.
"""

from __future__ import annotations

import click

from certctl_notify.cli import local, remote


@click.group()
def main() -> None:
    """Deliver certificate alerts with retries and an operator-visible dead-letter queue."""


for _command in (local.migrate, local.sweep, local.worker, local.dev, local.test_channel, local.flower,
                 remote.list_, remote.show, remote.stats, remote.requeue, remote.enqueue, remote.workers):
    main.add_command(_command)
