"""Every SQL statement certctl-notify runs, in one package: delivery-side state changes (`events`),
read-side listings and counts (`reads`), operator records (`ops`).

Functions take a Core `Connection` inside a transaction and never commit: the caller frames the transaction.
"""

from certctl_notify.store.events import *  # noqa: F403
from certctl_notify.store.events import MAX_ERROR_CHARS, SWEEP_LOCK_KEY, attempts, events  # noqa: F401
from certctl_notify.store.ops import *  # noqa: F403
from certctl_notify.store.reads import *  # noqa: F403
