from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _test_http_settings() -> Iterator[None]:
    """Plain HTTP and plain static storage for the whole session.

    Production defaults redirect to HTTPS and need `collectstatic` before a page renders; the
    settings tests check those defaults in subprocesses. Session scope, because the live
    server builds its middleware (which reads SECURE_SSL_REDIRECT) once per session.
    """
    from django.conf import settings
    from django.test.utils import override_settings

    storages = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(SECURE_SSL_REDIRECT=False, STORAGES=storages):
        yield


@pytest.fixture(autouse=True)
def _empty_cache(db: None) -> None:
    # Login-failure counters live in the cache; each test starts without any.
    from django.core.cache import cache

    cache.clear()
