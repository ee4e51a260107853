"""Typed readers for environment variables that fail loudly, naming the variable and the fix.

Settings call these at import time, so a malformed value stops the process before it serves a
request instead of falling back to a default that hides the mistake.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env_str(name: str, default: str | None = None) -> str | None:
    """Return the variable's value with surrounding spaces removed, or ``default`` when unset or empty."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


def env_required(name: str, hint: str) -> str:
    """Return the variable's value or raise ImproperlyConfigured that names it and gives ``hint``."""
    value = env_str(name)
    if value is None:
        raise ImproperlyConfigured(f"Environment variable {name} is not set. {hint}")
    return value


def env_bool(name: str, default: bool) -> bool:
    """Parse a boolean variable; accepts 1/0, true/false, yes/no, on/off in any case."""
    raw = env_str(name)
    if raw is None:
        return default
    word = raw.lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"Environment variable {name}={raw!r} is not a boolean; "
        f"use one of {sorted(_TRUE_WORDS | _FALSE_WORDS)}."
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """Parse an integer variable, optionally with a lower bound."""
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"Environment variable {name}={raw!r} is not an integer; set a whole number such as {default}."
        ) from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(
            f"Environment variable {name}={value} is below the minimum {minimum}; set a value >= {minimum}."
        )
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    """Parse a floating-point variable, optionally with a lower bound."""
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"Environment variable {name}={raw!r} is not a number; set a value such as {default}."
        ) from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(
            f"Environment variable {name}={value} is below the minimum {minimum}; set a value >= {minimum}."
        )
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """Parse a comma-separated list; empty items are dropped."""
    raw = env_str(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_path(name: str, default: Path, *, base_dir: Path) -> Path:
    """Return an absolute path; a relative value is taken relative to ``base_dir``."""
    raw = env_str(name)
    path = default if raw is None else Path(raw).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return path


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """Return the variable's value when it is one of ``choices``."""
    raw = env_str(name, default)
    assert raw is not None
    if raw not in choices:
        raise ImproperlyConfigured(
            f"Environment variable {name}={raw!r} is not valid; use one of {list(choices)}."
        )
    return raw


def parse_database_url(
    url: str, *, base_dir: Path, variable: str = "DATABASE_URL"
) -> dict[str, Any]:
    """Convert a database URL into a Django ``DATABASES`` entry.

    Accepted forms: ``sqlite:///relative/path.sqlite3`` (relative to ``base_dir``),
    ``sqlite:////absolute/path.sqlite3`` and ``postgres://`` or ``postgresql://`` with optional
    user, password, host, port and query parameters (passed to psycopg as ``OPTIONS``, e.g.
    ``sslmode=require``).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()

    if scheme == "sqlite":
        if parts.netloc:
            raise ImproperlyConfigured(
                f"{variable}={url!r} has a host part; SQLite URLs take three slashes, "
                "e.g. sqlite:///data/db.sqlite3 or sqlite:////var/lib/ceht/db.sqlite3."
            )
        # urlsplit keeps the leading slash: "sqlite:///a.db" gives "/a.db", "sqlite:////a.db" gives "//a.db".
        raw_path = unquote(parts.path)[1:]
        if not raw_path:
            raise ImproperlyConfigured(
                f"{variable}={url!r} names no database file; use e.g. sqlite:///data/db.sqlite3."
            )
        path = Path(raw_path)
        if not path.is_absolute():
            path = base_dir / path
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}

    if scheme in ("postgres", "postgresql"):
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured(
                f"{variable} names no database; use e.g. postgres://user@127.0.0.1:5432/ceht."
            )
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(
                f"{variable} has an invalid port; use a number such as 5432."
            ) from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port) if port else "",
            "OPTIONS": dict(parse_qsl(parts.query)),
        }

    # The URL may contain a password, so the message shows only the scheme.
    raise ImproperlyConfigured(
        f"{variable} has an unsupported scheme {scheme or '(none)'!r}; "
        "use sqlite:///path/to/file.sqlite3 or postgres://user:password@host:port/name."
    )
