"""Real peers for the tests: an HTTP receiver and a Celery worker subprocess."""
