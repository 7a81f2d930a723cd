"""Entry point for ``celery -A workers.app``: ``workers.app.app`` is built from the environment when
Celery first asks for it, never when this module is imported (so importing it reads nothing and
cannot exit the process)."""

from __future__ import annotations

import functools
import sys

from celery import Celery

from certctl_notify.environment import load_settings
from certctl_notify.errors import ConfigError
from workers.factory import make_celery


@functools.cache
def from_environment() -> Celery:
    """The app of this process, from ``CERTCTL_*``; exits naming the setting when one is wrong."""
    try:
        return make_celery(load_settings())
    except ConfigError as exc:
        sys.exit(f"certctl-notify: refusing to start: {exc}")


def __getattr__(name: str) -> Celery:
    # ``celery -A workers.app`` looks up the module's ``app`` attribute: built on that first look-up.
    if name == "app":
        return from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
