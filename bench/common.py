"""What every benchmark shares: the local PostgreSQL, and a throw-away database at Alembic head."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterable

#: The machine's PostgreSQL (trust auth); benchmarks create their own database next to it.
PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


class ScratchDatabase:
    """``certctl_bench_<random>``: created and migrated by `create`, dropped (even with open
    connections) by `drop`; a `drop` without a `create` does nothing."""

    def __init__(self):
        self.name = f"certctl_bench_{uuid.uuid4().hex[:10]}"
        self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{self.name}"
        self._admin = None

    def create(self) -> ScratchDatabase:
        from sqlalchemy import create_engine, text

        from certctl_notify.migrate import upgrade

        self._admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        upgrade(self.url)
        return self

    @property
    def admin(self):
        """An AUTOCOMMIT engine on the maintenance database (for statistics and version queries)."""
        return self._admin

    def drop(self) -> None:
        from sqlalchemy import text

        if self._admin is None:
            return
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()
        self._admin = None


def run_cleanup(steps: Iterable[tuple[str, Callable[[], object]]]) -> bool:
    """Run every clean-up step even when one fails, saying what was left behind; True if all worked."""
    ok = True
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # keep cleaning up
            print(f"cleanup: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            ok = False
    return ok
