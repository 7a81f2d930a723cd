"""How the commands print: one JSON document for scripts (``--json``), and for people aligned tables,
status colours and relative times.

Results go to stdout; progress, prompts and notes to stderr (`note`), so ``--json`` output is only the
document. Colours come from `click.style`, and `click.echo` strips them when stdout is not a terminal.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import click

from certctl_notify.display import attempt_number, fmt_seconds

#: How each status, attempt outcome and bulk job status is coloured.
STYLES: dict[str, dict] = {
    "dead": {"fg": "red", "bold": True}, "failed": {"fg": "yellow"}, "sent": {"fg": "green"},
    "pending": {"fg": "cyan"}, "read": {"dim": True},
    "retry": {"fg": "yellow"}, "running": {"fg": "cyan"},  # attempt outcomes (sent, retry, dead) and jobs
    "done": {"fg": "green"}, "cancelled": {"fg": "yellow"},
}
#: Width a table assumes when stdout is not a terminal (and COLUMNS is not set).
FALLBACK_WIDTH = 120


def json_option(command):
    """``--json``: print one JSON document on stdout instead of the readable form."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout (API commands: the API's own JSON); "
                             "messages and progress go to stderr.")(command)


def print_json(document) -> None:
    click.echo(json.dumps(document, indent=2))


def note(message: str = "", *, nl: bool = True) -> None:
    """A message for the person at the terminal, not part of the result: on stderr."""
    click.echo(message, err=True, nl=nl)


def styled(text: str, key: str | None = None) -> str:
    """``text`` in the colour of ``key`` (a status, outcome or job status; ``text`` itself by default)."""
    return click.style(text, **STYLES.get(key or text, {}))


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time from the API (UTC when it names no zone)."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def relative(moment: datetime | str | None, now: datetime | None = None) -> str:
    """``3 min 5 s ago``, ``in 2 min``, ``now``; ``—`` for no time."""
    if isinstance(moment, str):
        moment = parse_time(moment)
    if moment is None:
        return "—"
    seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {fmt_seconds(seconds)}" if seconds > 0 else f"{fmt_seconds(-seconds)} ago"


def attempt_of(row: dict) -> str:
    """``3/5`` for a notification as the API returns it, counted as the console counts it."""
    return f"{attempt_number(row['status'], row['retry_count'], row['sent_at'])}/{row['max_attempts']}"


def attempt_label(row: dict) -> str:
    """``Attempt 3/5``."""
    return f"Attempt {attempt_of(row)}"


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending in ``…`` when it was longer."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…" if width > 0 else ""


def one_line(value) -> str:
    """A cell's text: ``—`` for None, whitespace runs (newlines too) as one space."""
    return "—" if value is None else re.sub(r"\s+", " ", str(value)).strip()


@dataclass(frozen=True)
class Column:
    """A table column: ``limit`` caps its width (long text ends in ``…``); a ``flex`` column also
    shrinks so that the table fits the terminal; ``style`` colours a cell by its text."""

    title: str
    right: bool = False
    limit: int | None = None
    flex: bool = False
    style: Callable[[str], str] | None = None


def table(columns: Sequence[Column], rows: Sequence[Sequence[object]], *, header: bool = True,
          width: int | None = None) -> list[str]:
    """Lines of an aligned table, each column as wide as its widest cell (within its limits)."""
    cells = [[one_line(value) for value in row] for row in rows]
    widths = []
    for i, column in enumerate(columns):
        widest = max([len(column.title) if header else 0, *(len(row[i]) for row in cells)])
        widths.append(min(widest, column.limit) if column.limit else widest)
    room = (width or terminal_width()) - 2 * (len(columns) - 1)
    for i, column in enumerate(columns):
        if column.flex and sum(widths) > room:
            widths[i] = max(len(column.title), 12, widths[i] - (sum(widths) - room))

    def line(values: Sequence[str], styles: Sequence[Callable[[str], str] | None]) -> str:
        parts = []
        for i, (text, w) in enumerate(zip(values, widths, strict=True)):
            shown = truncate(text, w)
            pad = " " * (w - len(shown))
            shown = styles[i](shown) if styles[i] and shown else shown
            last = i == len(widths) - 1
            parts.append(pad + shown if columns[i].right else shown + ("" if last else pad))
        return "  ".join(parts).rstrip()

    lines = [line([c.title for c in columns], [_bold] * len(columns))] if header else []
    lines += [line(row, [c.style for c in columns]) for row in cells]
    return lines


def _bold(text: str) -> str:
    return click.style(text, bold=True)


def terminal_width() -> int:
    return shutil.get_terminal_size((FALLBACK_WIDTH, 24)).columns


def status_column(title: str = "STATUS") -> Column:
    return Column(title, style=styled)
