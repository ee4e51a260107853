"""Counters of failed logins per username and client address, for rejecting logins past a limit.

Counters live in the default cache (a database cache in the settings, so all web processes
share them). A counter expires LOGIN_THROTTLE_WINDOW_S seconds after the latest failure.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache


def _cache_key(username: str, client_address: str | None) -> str:
    # Hashed so any username is a valid cache key and the key itself reveals nothing.
    raw = f"{username.strip().lower()}|{client_address or '-'}"
    return "login-failures:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()


def failure_count(username: str, client_address: str | None) -> int:
    """Return the failed attempts stored for this username and address within the window."""
    return int(cache.get(_cache_key(username, client_address), 0))


def is_throttled(username: str, client_address: str | None) -> bool:
    """Return whether this username and address have reached the failure limit."""
    return failure_count(username, client_address) >= settings.LOGIN_THROTTLE_MAX_FAILURES


def record_failure(username: str, client_address: str | None) -> int:
    """Count one failed attempt and return the new count."""
    # NOTE: get-then-set is not atomic, so two simultaneous failures may count as one. The
    # limit is a brake on password guessing, and one lost count per race does not defeat it.
    count = failure_count(username, client_address) + 1
    cache.set(_cache_key(username, client_address), count, timeout=settings.LOGIN_THROTTLE_WINDOW_S)
    return count


def reset_failures(username: str, client_address: str | None) -> None:
    """Clear the counter after a successful login."""
    cache.delete(_cache_key(username, client_address))
