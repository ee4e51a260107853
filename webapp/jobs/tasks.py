"""Background tasks. Arguments are JSON values (ids, not model instances), as the tasks API requires.

The import below prefers Django 6's built-in ``django.tasks`` and falls back to the
``django-tasks`` backport, so this module runs unchanged on both.
"""

from __future__ import annotations

import logging

try:
    from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from django_tasks import task

logger = logging.getLogger(__name__)


@task()
def ping(message: str) -> str:
    """Return ``"pong: <message>"``; proves that a worker picks up and finishes tasks."""
    logger.info("Task ping received a message of %d characters", len(message))
    return f"pong: {message}"
