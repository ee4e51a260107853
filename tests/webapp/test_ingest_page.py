"""The upload page: access by role, and a real browser upload in batches with one retry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection

from tests.conftest import PERSONA_PASSWORD
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    test_model_dir,
    write_study,
)
from webapp.core.models import Case, Instance, Series

pytestmark = pytest.mark.usefixtures("ingest_settings")


def test_upload_page_renders_for_coordinator(client: Any, coordinator: Any) -> None:
    Case.objects.create(code="C-0100")
    client.force_login(coordinator)

    response = client.get("/upload/?case=C-0100&batch_size=5")

    page = response.content.decode()
    assert response.status_code == 200
    assert 'data-batch-size="5"' in page
    assert '<option value="C-0100" selected>' in page
    assert "webkitdirectory" in page
    assert "js/upload.js" in page


def test_upload_page_defaults_to_new_case_without_preselection(
    client: Any, coordinator: Any
) -> None:
    Case.objects.create(code="C-0100")
    Case.objects.create(code="C-0101")
    client.force_login(coordinator)

    page = client.get("/upload/").content.decode()
    unknown = client.get("/upload/?case=NOPE").content.decode()

    assert radio(page, "new") == ["checked"]
    assert radio(page, "existing") == []
    # The list starts on a placeholder with no case behind it.
    assert selected_options(page) == [""]
    # A case code that does not exist preselects nothing either.
    assert selected_options(unknown) == [""]
    assert radio(unknown, "new") == ["checked"]


def radio(page: str, value: str) -> list[str]:
    """Return ["checked"] when the case_mode radio with ``value`` is checked, else []."""
    match = re.search(rf'<input type="radio" name="case_mode" value="{value}"([^>]*)>', page)
    assert match is not None, value
    return ["checked"] if "checked" in match.group(1) else []


def selected_options(page: str) -> list[str]:
    return re.findall(r'<option value="([^"]*)"\s*selected>', page)


def test_upload_page_rejects_reader(client: Any, reader: Any) -> None:
    client.force_login(reader)

    response = client.get("/upload/")

    assert response.status_code == 403


# chromium_page comes last: Playwright's sync API runs an event loop in this thread, so database
# fixtures set up after it would use a separate connection that outlives the test database.
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_upload_retries_failed_batch(
    live_server: Any,
    coordinator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chromium_page: Any,
) -> None:
    # Playwright's event loop makes Django treat this thread as async. The queries below run
    # only after the page has finished, so they cannot interleave with it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    paths = write_study(tmp_path / "in")
    page = chromium_page
    login_to_upload(page, live_server, "?batch_size=5")
    failures: list[str] = []

    def fail_first_batch(route: Any) -> None:
        # The first request is dropped as a lost connection would be; the page must retry it.
        if not failures:
            failures.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/v1/cases/*/studies/", fail_first_batch)
    page.get_by_label("New case with code").check()
    page.get_by_label("New case code").fill("WEB-001")
    page.get_by_label("Hours after thrombectomy").fill("3")
    page.get_by_label("Files or zip").set_input_files([str(path) for path in paths])
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Upload complete.").wait_for(timeout=60_000)

    assert len(failures) == 1
    assert page.get_by_text("12 image(s) stored, 0 already stored").is_visible()
    try:
        assert Instance.objects.count() == 12
        assert Series.objects.get(is_chosen=True).image_count == 12
        assert Case.objects.get(code="WEB-001").studies.count() == 1
    finally:
        # Inside Playwright's event loop Django opens a separate connection for this context;
        # left open, it would block dropping the test database.
        connection.close()


def login_to_upload(page: Any, live_server: Any, query: str = "") -> None:
    """Log in as the coordinator persona and open the upload page with ``query``."""
    page.goto(f"{live_server.url}/accounts/login/?{urlencode({'next': '/upload/' + query})}")
    page.get_by_label("Username").fill("coordinator_cai")
    page.get_by_label("Password").fill(PERSONA_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**/upload/{query}")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_upload_of_nothing_usable_leaves_no_case(
    live_server: Any,
    coordinator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chromium_page: Any,
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    existing = Case.objects.create(code="OLD-500")
    fake_zip = tmp_path / "study.zip"
    fake_zip.write_bytes(b"plain text, renamed")
    page = chromium_page
    login_to_upload(page, live_server)

    # Existing case chosen without picking a case: refused before anything is sent.
    page.get_by_role("radio", name="Existing case").check()
    page.get_by_label("Files or zip").set_input_files([str(fake_zip)])
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Choose the existing case from the list").wait_for(timeout=10_000)
    # A new case code that already exists is refused too.
    page.get_by_label("New case code").fill("OLD-500")
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Case OLD-500 already exists").wait_for(timeout=10_000)

    page.get_by_label("New case code").fill("WEB-NOTHING")
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Upload finished: nothing was stored.").wait_for(timeout=60_000)

    body = page.locator("#report-body").inner_text()
    # Reasons in words, and Skipped files is a heading like Warnings.
    assert "every file was skipped (unreadable zip archives; see Skipped files below)" in body
    assert "broken_archive" not in page.locator(".upload-nothing-stored").inner_text()
    assert page.get_by_role("heading", name="Skipped files", exact=True).is_visible()
    assert "Case WEB-NOTHING was not created." in body
    assert "could not be opened as a zip archive" in body
    assert "Open case" not in body
    try:
        assert not Case.objects.filter(code="WEB-NOTHING").exists()
        assert Case.objects.filter(pk=existing.pk).exists()
        assert Instance.objects.count() == 0
    finally:
        connection.close()
