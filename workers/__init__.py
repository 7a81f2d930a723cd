"""Celery worker side of certctl-notify: app factory, tasks, beat schedule and signal handlers."""
