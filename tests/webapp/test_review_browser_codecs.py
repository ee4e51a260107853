"""The shared fault case C14 in Chromium: every compressed variant displays with the same HU.

C14 contains the same four slices uncompressed, as JPEG Lossless (process 14, selection value 1),
RLE and JPEG 2000 lossless (unsigned and signed). pydicom cannot encode JPEG Lossless, so this is
the only test of that codec in the viewer.
"""

# Fixtures imported from test_ingest_support are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.db import connection

from inference.dicom.load import load_study
from tests.webapp.e2e_support import canvas_red_values, log_in, viewer_index
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    named_files,
    test_model_dir,
)

C14 = Path(__file__).resolve().parents[3] / "shared" / "cases" / "C14"
VARIANTS = (
    "reference_uncompressed",
    "jpeg_lossless_sv1",
    "rle_lossless",
    "jpeg2000_lossless",
    "jpeg2000_lossless_signed",
)
CASE_CODE = "C14-CODEC"


def _page_point(page: Any, column: float, row: float) -> tuple[float, float]:
    point = page.evaluate(
        """([x, y]) => {
            const element = document.querySelector('.viewport[data-role="baseline"]');
            const canvasPoint = cornerstone.pixelToCanvas(element, {x, y});
            const box = element.querySelector("canvas").getBoundingClientRect();
            return [box.left + canvasPoint.x, box.top + canvasPoint.y];
        }""",
        [column, row],
    )
    return point[0], point[1]


def _probe(page: Any, column: int, row: int) -> float:
    """Move the pointer over one pixel and return the HU the probe shows for it."""
    x, y = _page_point(page, column + 0.5, row + 0.5)
    height = page.viewport_size["height"]
    if not 0 <= y < height:
        # Bring the pixel into the window: the mouse can only point at what is shown.
        page.evaluate("(dy) => window.scrollBy(0, dy)", y - height / 2)
        x, y = _page_point(page, column + 0.5, row + 0.5)
    page.mouse.move(x, y)
    probe = page.locator('.hu-probe[data-role="baseline"]')
    page.wait_for_function(
        """(text) => {
            const probe = document.querySelector('.hu-probe[data-role="baseline"]');
            return probe && probe.textContent.endsWith(text);
        }""",
        arg=f"at column {column}, row {row}",
        timeout=5_000,
    )
    return float(probe.get_attribute("data-hu"))


@pytest.mark.browser
@pytest.mark.skipif(not C14.is_dir(), reason="shared fault cases not present")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("variant", VARIANTS)
def test_c14_variant_displays_reference_hu(
    live_server: Any,
    coordinator: Any,
    ingest_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    variant: str,
    chromium_browser: Any,
) -> None:
    from webapp.core.models import Case
    from webapp.ingest.services import ingest_files

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    reference, _ = load_study(C14 / "reference_uncompressed")
    case = Case.objects.create(code=CASE_CODE)
    ingest_files(case, "baseline", "3", named_files(sorted((C14 / variant).iterdir())), coordinator)
    try:
        session = log_in(
            chromium_browser, live_server, "coordinator_cai", f"/cases/{CASE_CODE}/review/"
        )
        page = session.page
        page.wait_for_selector("#viewer[data-prefetched=done]", timeout=30_000)
        state = page.locator('.viewport[data-role="baseline"] .viewport-state')
        index = viewer_index(page, "baseline")
        expected = reference.hu[index]
        # The brightest pixel, the darkest and one in between: a wrong sign, offset or byte
        # order shows at one of them at least.
        flat = np.argsort(expected, axis=None)
        picks = [flat[-1], flat[0], flat[len(flat) // 2]]
        shown = {}
        for pick in picks:
            row, column = divmod(int(pick), expected.shape[1])
            shown[(row, column)] = (_probe(page, column, row), float(expected[row, column]))

        assert state.is_hidden(), state.inner_text()
        assert len(set(canvas_red_values(page, "baseline"))) > 2
        for (row, column), (hu, truth) in shown.items():
            assert hu == truth, f"{variant}: pixel ({column}, {row}) shows {hu} HU, not {truth}"
        assert session.errors == []
    finally:
        connection.close()
