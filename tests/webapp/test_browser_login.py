"""Browser smoke test: Debian's Chromium, driven by Playwright, logs in and reaches the case list."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import PERSONA_PASSWORD


# chromium_page comes last: Playwright's sync API runs an event loop in this thread, so database
# fixtures set up after it would use a separate connection that outlives the test database.
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_login_shows_case_list(live_server: Any, reader: Any, chromium_page: Any) -> None:
    page = chromium_page
    page.goto(f"{live_server.url}/")
    assert page.url == f"{live_server.url}/accounts/login/?next=/"

    page.get_by_label("Username").fill("reader_ann")
    page.get_by_label("Password").fill(PERSONA_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")

    assert page.get_by_role("heading", level=1).inner_text() == "Cases"
    assert (
        page.get_by_role("note").inner_text().startswith("Research use only — not a medical device")
    )
    assert page.get_by_text("No cases yet.").is_visible()
