from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATH = Path(os.environ.get("CEHT_CHROMIUM_PATH", "/usr/bin/chromium"))
# Without the networking switches, Chromium keeps trying to reach update and sync services,
# which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


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


@pytest.fixture
def chromium_browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright; Playwright's own browser download is never used."""
    if not CHROMIUM_PATH.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM_PATH}; install Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM_PATH), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def chromium_page(chromium_browser: Any) -> Any:
    return chromium_browser.new_page()


@pytest.fixture
def case(db: None) -> Any:
    """An empty case with the code C-0001 (a test module may define its own)."""
    from webapp.core.models import Case

    return Case.objects.create(code="C-0001")


@pytest.fixture
def api(coordinator: Any) -> Any:
    """An API client signed in as the coordinator."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(coordinator)
    return client
