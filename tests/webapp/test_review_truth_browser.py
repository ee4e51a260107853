"""The true-mask layer in Chromium: drawn as its own outline, toggled off, jump to its slice."""

# Fixtures imported from the support modules are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.conftest import PERSONA_PASSWORD
from tests.webapp.e2e_support import canvas_red_values, wait_for_pixels_to_change
from tests.webapp.test_ingest_support import ingest_settings, test_model_dir  # noqa: F401
from tests.webapp.test_review_support import (  # noqa: F401 - fixtures
    CASE_CODE,
    ReviewedCase,
    reviewed_case,
    study_files,
)
from tests.webapp.test_review_truth_overlay import PATCH_SLICE, truth_case  # noqa: F401

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Pixels of the true-mask colour (cyan, #00e5ff): nothing in a greyscale CT image has it.
COUNT_TRUTH_PIXELS = """(role) => {
    const canvas = document.querySelector(`.viewport[data-role="${role}"] canvas`);
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let count = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i] < 60 && data[i + 1] > 170 && data[i + 2] > 190) count += 1;
    }
    return count;
}"""


def _truth_pixels(page: Any) -> int:
    return int(page.evaluate(COUNT_TRUTH_PIXELS, "baseline"))


# chromium_browser comes last: Playwright's sync API runs an event loop in this thread, so
# database fixtures set up after it would use a separate connection that outlives the test
# database.
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_truth_layer_draws_toggles_off_and_jumps(
    live_server: Any,
    coordinator: Any,
    truth_case: ReviewedCase,
    monkeypatch: pytest.MonkeyPatch,
    chromium_browser: Any,
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    errors: list[str] = []
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{live_server.url}/accounts/login/?next=/cases/{CASE_CODE}/review/")
        page.get_by_label("Username").fill("coordinator_cai")
        page.get_by_label("Password").fill(PERSONA_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"**/cases/{CASE_CODE}/review/")
        page.wait_for_selector("#viewer[data-overlay=ready]", timeout=20_000)
        page.wait_for_selector("#viewer[data-truth-overlay=ready]", timeout=20_000)

        # The middle slice (7 of 12) crosses true lesion 1: its cyan outline is drawn.
        page.wait_for_function(f"() => ({COUNT_TRUTH_PIXELS})('baseline') > 20", timeout=5_000)
        shown = canvas_red_values(page, "baseline")
        assert page.locator("#truth-overlay-state").inner_text() == ""
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#viewer").screenshot(path=str(ARTIFACTS / "review-truth-overlay.png"))

        page.locator('.truth-toggle[data-label="1"]').uncheck()
        hidden = wait_for_pixels_to_change(page, "baseline", shown)
        assert _truth_pixels(page) == 0
        # Only the true layer went: the segmented lesion's red fill is still there.
        assert page.locator('.lesion-toggle[data-label="1"]').is_checked()
        assert hidden != shown

        page.locator('.truth-toggle[data-label="1"]').check()
        wait_for_pixels_to_change(page, "baseline", hidden)
        assert _truth_pixels(page) > 20

        # True lesion 3 lies on one slice only; its jump button shows that slice.
        page.get_by_role("button", name="True #3").click()
        page.wait_for_function(
            "(index) => window.cehtViewer.byRole('baseline').index === index", arg=PATCH_SLICE
        )
        page.wait_for_function(f"() => ({COUNT_TRUTH_PIXELS})('baseline') > 5", timeout=5_000)
        assert errors == []
    finally:
        page.close()
        connection.close()
