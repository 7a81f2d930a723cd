"""Helpers every command shares: settings, database and broker handles, the API client."""

from __future__ import annotations

import click

from certctl_notify.environment import load_settings
from certctl_notify.errors import ConfigError
from certctl_notify.settings import Settings


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def sessions_for(settings: Settings):
    from certctl_notify.db import make_sessions

    return make_sessions(settings.database_url)


def dispatcher_for(settings: Settings):
    from certctl_notify.publish import CeleryDispatcher, make_producer

    return CeleryDispatcher(make_producer(settings.broker_url, sentinel_master=settings.broker_sentinel_master))


def api_options(command):
    """--url and --key for commands that talk to the API (or CERTCTL_API_URL / CERTCTL_API_KEY)."""
    command = click.option("--key", envvar="CERTCTL_API_KEY", help="API key (env CERTCTL_API_KEY).")(command)
    return click.option("--url", envvar="CERTCTL_API_URL", default="http://127.0.0.1:8080", show_default=True,
                        help="API base URL (env CERTCTL_API_URL).")(command)


def api_client(url: str, key: str | None):
    from cli.api_client import ApiClient

    return ApiClient(url, key)


def call(fn, *args, **kwargs):
    from certctl_notify.errors import ApiClientError

    try:
        return fn(*args, **kwargs)
    except ApiClientError as exc:
        raise click.ClickException(str(exc)) from None
