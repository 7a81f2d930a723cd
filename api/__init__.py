"""The HTTP side of certctl-notify: JSON API under /api/v1, health, and (later) the operator page."""
