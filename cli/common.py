"""Helpers every command shares: settings, database and broker handles, the API client, exit codes."""

from __future__ import annotations

from urllib.parse import quote

import click

from certctl_notify.environment import load_settings
from certctl_notify.errors import ConfigError
from certctl_notify.settings import Settings

#: Exit codes (the group's --help and docs/cli.md list them). 2 is click's own, for a usage error.
EXIT_OK = 0
EXIT_FAILURE = 1  #: anything else: the API unreachable, a key refused, a database error, a failed delivery
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3  #: the API answered 404
EXIT_CONFLICT = 4  #: the API answered 409: the row is in the wrong state, or a bulk requeue is already running
EXIT_INTERRUPTED = 130  #: stopped with Ctrl-C (128 + SIGINT), as shells report it


class CliError(click.ClickException):
    """A failure printed as ``Error: message`` on stderr, exiting with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE):
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(status: int | None) -> int:
    """The exit code for an API answer's HTTP status (None: the API could not be reached)."""
    return {404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT}.get(status, EXIT_FAILURE)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def sessions_for(settings: Settings):
    from certctl_notify.db import make_sessions

    return make_sessions(settings.database_url)


def dispatcher_for(settings: Settings):
    from certctl_notify.publish import CeleryDispatcher, make_producer

    return CeleryDispatcher(make_producer(settings.broker_url, sentinel_master=settings.broker_sentinel_master))


class _AnyCaseChoice(click.Choice):
    """A choice accepted in any case and completed as it is spelled (click completes it casefolded)."""

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        return [CompletionItem(c) for c in self.choices if c.lower().startswith(incomplete.lower())]


def choice_of(enum_cls) -> click.Choice:
    """The values of one of the model's enums (`certctl_notify.vocabulary`) as a choice: checked before
    anything runs, completed by the shell, accepted in any case."""
    return _AnyCaseChoice([member.value for member in enum_cls], case_sensitive=False)


def api_options(command):
    """--url and --key for commands that talk to the API (or CERTCTL_API_URL / CERTCTL_API_KEY)."""
    command = click.option("--key", envvar="CERTCTL_API_KEY", help="API key (env CERTCTL_API_KEY).")(command)
    return click.option("--url", envvar="CERTCTL_API_URL", default="http://127.0.0.1:8080", show_default=True,
                        help="API base URL (env CERTCTL_API_URL).")(command)


def api_client(url: str, key: str | None):
    from cli.api_client import ApiClient

    return ApiClient(url, key)


def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, an API call; its error becomes a `CliError` with the matching exit code."""
    from certctl_notify.errors import ApiClientError

    try:
        return fn(*args, **kwargs)
    except ApiClientError as exc:
        raise CliError(str(exc), exit_code_for(exc.status)) from None


def api_path(*segments: str) -> str:
    """``/api/v1/<segments>``, each quoted whole: an id someone typed (or a model chose) is one path
    segment, so ``../requeue-jobs/…`` cannot reach another endpoint."""
    return "/api/v1/" + "/".join(quote(s, safe="") for s in segments)
