"""Alembic revisions for certctl-notify; run them through :mod:`certctl_notify.migrate`."""
