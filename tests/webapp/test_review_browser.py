"""The review page in Chromium: images render, scroll, presets, HU probe, overlay, adjudication."""

# Fixtures imported from test_review_support are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from django.core.files.storage import default_storage
from django.db import connection

from tests.conftest import PERSONA_PASSWORD
from tests.webapp.e2e_support import canvas_red_values as _pixels
from tests.webapp.e2e_support import wait_for_pixels_to_change
from tests.webapp.test_ingest_support import ingest_settings, test_model_dir  # noqa: F401
from tests.webapp.test_review_support import (  # noqa: F401 - fixtures
    CASE_CODE,
    N_SLICES,
    ReviewedCase,
    make_reviewed_case,
    reviewed_case,
    store_mask,
    study_files,
)
from webapp.core.models import Adjudication, Case, Instance
from webapp.core.services import ClientContext, record_adjudication

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Lesion voxel probed on the middle slice (index 6 of 12): column 28, row 30.
PROBE_COLUMN = 28
PROBE_ROW = 30
NEXT_UNREAD_CODE = "REV-003"


def _log_in(
    browser: Any,
    live_server: Any,
    username: str,
    errors: list[str],
    broken_uid: str = "",
    size: tuple[int, int] = (1400, 1000),
) -> Any:
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.on("pageerror", lambda error: errors.append(str(error)))
    if broken_uid:
        # This one instance is returned as bytes that are not DICOM.
        page.route(
            f"**/wado?*objectUID={broken_uid}*",
            lambda route: route.fulfill(status=200, body=b"not a DICOM file" * 20),
        )
    page.goto(f"{live_server.url}/accounts/login/?next=/cases/{CASE_CODE}/review/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PERSONA_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**/cases/{CASE_CODE}/review/")
    return page


def _index(page: Any, role: str) -> int:
    return page.evaluate("(role) => window.cehtViewer.byRole(role).index", role)


def _wait_for_slice(page: Any, role: str, index: int) -> None:
    page.wait_for_function(
        "([role, index]) => window.cehtViewer.byRole(role).index === index", arg=[role, index]
    )


def _wait_for_info(page: Any, role: str, text: str) -> None:
    """Wait until the viewport's info line, drawn on the next render, contains ``text``."""
    page.wait_for_function(
        """([role, text]) => document.querySelector(`.viewport[data-role="${role}"] .viewport-info`)
            .textContent.includes(text)""",
        arg=[role, text],
        timeout=5_000,
    )


def _page_point_of_pixel(page: Any, role: str, column: float, row: float) -> tuple[float, float]:
    point = page.evaluate(
        """([role, x, y]) => {
            const element = document.querySelector(`.viewport[data-role="${role}"]`);
            const canvasPoint = cornerstone.pixelToCanvas(element, {x, y});
            const box = element.querySelector("canvas").getBoundingClientRect();
            return [box.left + canvasPoint.x, box.top + canvasPoint.y];
        }""",
        [role, column, row],
    )
    return point[0], point[1]


def _stored_hu(instance: Instance, row: int, column: int) -> float:
    with instance.file.open("rb") as handle:
        dataset = pydicom.dcmread(handle)
    stored = int(np.asarray(dataset.pixel_array)[row, column])
    return stored * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)


# chromium_browser comes last: Playwright's sync API runs an event loop in this thread, so database
# fixtures set up after it would use a separate connection that outlives the test database.
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_reader_reviews_blinded_case(
    live_server: Any,
    reader: Any,
    reviewed_case: ReviewedCase,
    monkeypatch: pytest.MonkeyPatch,
    chromium_browser: Any,
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    middle = Instance.objects.filter(series__study=reviewed_case.baseline).order_by(
        "slice_position_mm"
    )[6]
    expected_hu = _stored_hu(middle, PROBE_ROW, PROBE_COLUMN)
    # Cases for the "next unread case" key: one already labelled by this reader, one not.
    labelled = Case.objects.create(code="REV-002")
    Adjudication.objects.create(case=labelled, reader=reader, version=1, label="HT", confidence=3)
    Case.objects.create(code=NEXT_UNREAD_CODE)
    errors: list[str] = []
    try:
        page = _log_in(chromium_browser, live_server, "reader_ann", errors)
        page.wait_for_selector("#viewer[data-first-image=shown]", timeout=20_000)
        page.wait_for_selector("#viewer[data-prefetched=done]", timeout=20_000)
        page.screenshot(path=str(ARTIFACTS / "review-blinded.png"), full_page=True)

        # A real image: the canvas is not one flat colour, and no state box covers it.
        first = _pixels(page, "baseline")
        assert len(set(first)) > 2
        assert page.locator('.viewport[data-role="baseline"] .viewport-state').is_hidden()
        assert _index(page, "baseline") == 6
        # Slice 7 of 12 lies at 12 mm (2 mm apart from 0 mm); the series' own window is 40/80.
        assert (
            page.locator('.viewport[data-role="baseline"] .viewport-info').inner_text()
            == "Slice 7/12 · 12.0 mm · thickness 2 mm · L40/W80"
        )
        assert page.locator('.viewport[data-role="baseline"] .marker-right').inner_text() == "L"
        assert page.locator("#blinded-note").is_visible()
        assert page.locator("#predictions").count() == 0

        # Scrolling with a key moves the follow-up to the slice at the same position.
        page.locator('.viewport[data-role="baseline"]').focus()
        page.keyboard.press("ArrowDown")
        _wait_for_slice(page, "baseline", 7)
        _wait_for_slice(page, "follow_up", 7)
        _wait_for_info(page, "baseline", "Slice 8/12 · 14.0 mm · thickness 2 mm")
        _wait_for_info(page, "follow_up", "Slice 8/12 · 14.0 mm · thickness 2 mm")
        page.mouse.move(*_page_point_of_pixel(page, "baseline", 5, 5))
        page.mouse.wheel(0, -100)
        _wait_for_slice(page, "baseline", 6)

        # A preset changes the pixels of both viewports.
        before = _pixels(page, "follow_up")
        page.get_by_role("button", name="Bone L600/W2800").click()
        page.wait_for_function(
            "() => window.cehtViewer.viewports.every(v => v.getVoi().width === 2800)"
        )
        assert wait_for_pixels_to_change(page, "follow_up", before) != before
        assert (
            "L600/W2800"
            in page.locator('.viewport[data-role="baseline"] .viewport-info').inner_text()
        )

        # Alt+2 applies the stroke preset; dragging window/level on one viewport moves both.
        page.keyboard.press("Alt+2")
        page.wait_for_function("() => window.cehtViewer.byRole('follow_up').getVoi().width === 35")
        page.mouse.move(*_page_point_of_pixel(page, "baseline", 20, 20))
        page.mouse.down()
        page.mouse.move(*_page_point_of_pixel(page, "baseline", 30, 30), steps=5)
        page.mouse.up()
        # The follow-up takes the new window on the baseline's next render, one frame later.
        page.wait_for_function(
            """() => {
                const [a, b] = window.cehtViewer.viewports.map(v => v.getVoi());
                return (a.level !== 35 || a.width !== 35) && a.level === b.level && a.width === b.width;
            }""",
            timeout=5_000,
        )
        voi = page.evaluate(
            "() => window.cehtViewer.viewports.map(v => [v.getVoi().level, v.getVoi().width])"
        )
        assert voi[0] != [35, 35]
        assert voi[1] == voi[0]

        # The length tool measures in mm (1 mm pixels, so 10 pixels apart is 10 mm).
        page.get_by_role("button", name="Length").click()
        page.mouse.move(*_page_point_of_pixel(page, "baseline", 10, 40))
        page.mouse.down()
        page.mouse.move(*_page_point_of_pixel(page, "baseline", 20, 40), steps=5)
        page.mouse.up()
        length_mm = page.evaluate(
            """() => {
                const element = document.querySelector('.viewport[data-role="baseline"]');
                const state = cornerstoneTools.getToolState(element, "Length");
                return state.data[0].length;
            }"""
        )
        assert abs(length_mm - 10) < 0.5

        # Zoom by dragging with the Zoom tool, then Reset restores the initial scale.
        scale_script = "() => cornerstone.getViewport(window.cehtViewer.viewports[0].element).scale"
        initial_scale = page.evaluate(scale_script)
        page.get_by_role("button", name="Zoom").click()
        page.mouse.move(*_page_point_of_pixel(page, "baseline", 32, 20))
        page.mouse.down()
        page.mouse.move(*_page_point_of_pixel(page, "baseline", 32, 40), steps=5)
        page.mouse.up()
        assert page.evaluate(scale_script) != initial_scale
        page.get_by_role("button", name="Reset").click()
        assert page.evaluate(scale_script) == initial_scale

        # Pan by dragging with the Pan tool moves the image; Reset centres it again.
        translation_script = """() => {
            const t = cornerstone.getViewport(window.cehtViewer.viewports[0].element).translation;
            return [t.x, t.y];
        }"""
        assert page.evaluate(translation_script) == [0, 0]
        page.get_by_role("button", name="Pan").click()
        assert page.get_by_role("button", name="Pan").get_attribute("aria-pressed") == "true"
        pan_start = _page_point_of_pixel(page, "baseline", 32, 32)
        page.mouse.move(*pan_start)
        page.mouse.down()
        page.mouse.move(pan_start[0] + 40, pan_start[1] + 25, steps=5)
        page.mouse.up()
        panned_x, panned_y = page.evaluate(translation_script)
        # Translation is in image pixels: right and down, as the pointer moved.
        assert panned_x > 0
        assert panned_y > 0
        assert panned_x > panned_y
        assert page.evaluate(scale_script) == initial_scale
        page.get_by_role("button", name="Reset").click()
        assert page.evaluate(translation_script) == [0, 0]
        page.get_by_role("button", name="Window/level").click()

        # The HU probe reads the stored value under the pointer.
        page.mouse.move(
            *_page_point_of_pixel(page, "baseline", PROBE_COLUMN + 0.5, PROBE_ROW + 0.5)
        )
        probe = page.locator('.hu-probe[data-role="baseline"]')
        assert f"column {PROBE_COLUMN}, row {PROBE_ROW}" in probe.inner_text()
        assert abs(float(probe.get_attribute("data-hu")) - expected_hu) <= 1

        # The keys 1, 2 and 3 choose the labels HT, CE and HT+CE, outside the text fields.
        page.locator('.viewport[data-role="baseline"]').focus()
        checked_label = (
            "() => document.querySelector('#adjudication-form input[name=label]:checked')?.value"
        )
        assert page.evaluate(checked_label) is None
        for key, label in (("1", "HT"), ("3", "HT+CE"), ("2", "CE")):
            page.keyboard.press(key)
            assert page.evaluate(checked_label) == label, key

        # Ctrl+Enter without a confidence submits nothing: the field is required, not preset.
        assert page.get_by_label("Contrast extravasation (CE)").is_checked()
        assert page.get_by_label("Confidence").input_value() == ""
        page.keyboard.press("Control+Enter")
        page.wait_for_timeout(300)
        assert page.evaluate(
            "() => document.getElementById('adjudication_confidence').validity.valueMissing"
        )
        assert Adjudication.objects.filter(reader=reader, case=reviewed_case.case).count() == 0
        assert page.get_by_text("Adjudication saved.").count() == 0

        # Submitting the blinded adjudication reveals the model and the overlay.
        page.get_by_label("Confidence").fill("4")
        page.keyboard.press("Control+Enter")
        page.get_by_text("Adjudication saved.").wait_for()
        # The agreement question appears after the reveal and names the compared model.
        assert page.locator('label[for="adjudication_agrees_with_model"]').inner_text() == (
            "Does your label agree with Logistic regression 1.0.0 on the post-procedure CT?"
        )
        assert page.locator("#adjudication_agrees_with_model").is_visible()
        assert page.locator("#predictions").is_visible()
        assert "72%" in page.locator("#predictions").inner_text()
        page.wait_for_selector("#viewer[data-overlay=ready]", timeout=20_000)
        page.wait_for_function("() => window.cehtViewer.byRole('baseline').index === 6")
        with_overlay = _pixels(page, "baseline")
        page.locator('.lesion-toggle[data-label="1"]').uncheck()
        without_overlay = wait_for_pixels_to_change(page, "baseline", with_overlay)
        assert with_overlay != without_overlay
        page.locator('.lesion-toggle[data-label="1"]').check()
        page.get_by_role("button", name="#1 Parenchymal").click()
        page.screenshot(path=str(ARTIFACTS / "review-revealed.png"), full_page=True)
        assert errors == []
        assert Adjudication.objects.get(reader=reader, case=reviewed_case.case).label == "CE"

        # N opens the next case this reader has not labelled: REV-003, not the labelled REV-001
        # and not REV-002, which the reader labelled elsewhere.
        page.evaluate("() => document.activeElement?.blur()")
        page.keyboard.press("n")
        page.wait_for_url(f"**/cases/{NEXT_UNREAD_CODE}/review/")
        assert page.locator("h1").inner_text().startswith(f"Review case {NEXT_UNREAD_CODE}")
        assert errors == []
    finally:
        connection.close()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_second_reader_stale_edit_is_rejected(
    live_server: Any,
    second_reader: Any,
    reviewed_case: ReviewedCase,
    monkeypatch: pytest.MonkeyPatch,
    chromium_browser: Any,
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    try:
        follow_up_middle = Instance.objects.filter(series__study=reviewed_case.follow_up).order_by(
            "slice_position_mm"
        )[6]
        page = _log_in(
            chromium_browser,
            live_server,
            "reader_ben",
            errors,
            broken_uid=follow_up_middle.sop_instance_uid,
        )
        # One image that fails to decode is reported in its viewport with the reason.
        state = page.locator('.viewport[data-role="follow_up"] .viewport-state')
        page.wait_for_selector("#viewer[data-first-image=shown]", timeout=20_000)
        assert state.is_visible()
        assert state.get_attribute("data-kind") == "error"
        assert "Image 7 of 12 could not be decoded" in state.inner_text()
        assert page.locator('.viewport[data-role="baseline"] .viewport-state').is_hidden()
        # The same reader saves from another tab after this page was rendered.
        record_adjudication(
            ClientContext(actor=second_reader), reviewed_case.case, label="HT", confidence=5
        )
        page.get_by_label("Both (HT+CE)").check()
        page.get_by_label("Confidence").fill("3")
        page.get_by_role("button", name="Submit adjudication").click()
        message = page.get_by_text("The adjudication was changed by someone else")
        message.wait_for()
        page.screenshot(path=str(ARTIFACTS / "review-stale-edit.png"), full_page=True)
        assert "now version 1, you edited version 0" in message.inner_text()
        stored = list(
            Adjudication.objects.filter(reader=second_reader).values_list("label", flat=True)
        )
        assert stored == ["HT"]
    finally:
        connection.close()


# Lesion 1 of the peaked mask: rows and columns it covers on each slice (z index). Its area peaks
# at 64 pixels on z 7 (slice 8). That is neither its first slice, nor the middle of its slices,
# nor the slice the viewer starts on (z 6), so a jump to any of those fails the test.
PEAKED_LESION_BOXES = {
    2: (2, 2),
    3: (4, 4),
    4: (4, 6),
    5: (6, 6),
    6: (6, 7),
    7: (8, 8),
    8: (3, 3),
}
PEAKED_LARGEST_INDEX = 7


def _use_peaked_mask(reviewed: ReviewedCase) -> None:
    """Replace the job's lesion mask with one whose area differs on every slice."""
    labels = np.zeros((N_SLICES, 64, 64), dtype=np.int32)
    for z, (rows, columns) in PEAKED_LESION_BOXES.items():
        labels[z, 28 : 28 + rows, 24 : 24 + columns] = 1
    areas = {z: int((labels[z] == 1).sum()) for z in range(N_SLICES)}
    assert max(areas, key=areas.__getitem__) == PEAKED_LARGEST_INDEX
    # Predictions are append-only, so the stored file is replaced under the same name.
    name = reviewed.prediction.mask_file.name
    default_storage.delete(name)
    assert store_mask(name, labels) == name


def _boxes_overlap(first: dict[str, float], second: dict[str, float]) -> bool:
    return not (
        first["x"] + first["width"] <= second["x"]
        or second["x"] + second["width"] <= first["x"]
        or first["y"] + first["height"] <= second["y"]
        or second["y"] + second["height"] <= first["y"]
    )


def _overlapping_text(page: Any, role: str) -> list[str]:
    """Return the markers of the viewport whose box intersects the info line's box."""
    viewport = page.locator(f'.viewport[data-role="{role}"]')
    info = viewport.locator(".viewport-info").bounding_box()
    overlapping = []
    for side in ("top", "bottom", "left", "right"):
        marker = viewport.locator(f".marker-{side}")
        assert marker.inner_text() != "", side
        if _boxes_overlap(info, marker.bounding_box()):
            overlapping.append(side)
    return overlapping


PRESSED_PRESETS = """() => Array.from(document.querySelectorAll("[data-preset]"))
    .filter((button) => button.getAttribute("aria-pressed") === "true")
    .map((button) => button.dataset.preset).join(",")"""


def _wait_for_pressed_presets(page: Any, expected: str) -> None:
    """Wait until the presets marked pressed are ``expected`` (comma-separated, or empty)."""
    page.wait_for_function(
        f"(expected) => ({PRESSED_PRESETS})() === expected", arg=expected, timeout=5_000
    )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_viewer_text_slider_and_presets(
    live_server: Any,
    coordinator: Any,
    reviewed_case: ReviewedCase,
    monkeypatch: pytest.MonkeyPatch,
    chromium_browser: Any,
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    try:
        for width, height in ((1280, 800), (360, 740)):
            page = _log_in(
                chromium_browser, live_server, "coordinator_cai", errors, size=(width, height)
            )
            page.wait_for_selector("#viewer[data-first-image=shown]", timeout=20_000)
            baseline = page.locator('.viewport[data-role="baseline"]')
            slider = page.locator('input[type=range][data-role="baseline"]')

            # The slider sits at the slice the image shows, numbered from 1 like the info line.
            assert "Slice 7/12" in baseline.locator(".viewport-info").inner_text()
            assert slider.input_value() == "7"
            assert slider.get_attribute("aria-valuetext") == "Slice 7 of 12"
            assert page.locator("#sync-scroll").is_visible()
            if width >= 1000:
                # Side by side, the images stay level even when one caption wraps more.
                page.evaluate(
                    """() => document.querySelector(
                        '.viewport-panel[data-role="baseline"] .study-heading'
                    ).append(' · a series description long enough to wrap onto more lines')"""
                )
                follow_up_box = page.locator('.viewport[data-role="follow_up"]').bounding_box()
                assert follow_up_box is not None
                assert abs(follow_up_box["y"] - baseline.bounding_box()["y"]) < 1

            # The longest info line (Bone preset) never runs into an orientation marker.
            page.get_by_role("button", name="Bone L600/W2800").click()
            page.wait_for_function(
                "() => window.cehtViewer.viewports.every(v => v.getVoi().width === 2800)"
            )
            _wait_for_pressed_presets(page, "bone")
            info_text = baseline.locator(".viewport-info").inner_text()
            assert "L600/W2800" in info_text
            for role in ("baseline", "follow_up"):
                assert _overlapping_text(page, role) == [], (width, role, info_text)
            info_box = baseline.locator(".viewport-info").bounding_box()
            assert info_box is not None
            viewport_box = baseline.bounding_box()
            # The whole info line lies on the viewport: none of it is clipped at an edge.
            assert info_box["x"] >= viewport_box["x"]
            assert info_box["x"] + info_box["width"] <= viewport_box["x"] + viewport_box["width"]
            assert info_box["y"] + info_box["height"] <= viewport_box["y"] + viewport_box["height"]
            page.screenshot(path=str(ARTIFACTS / f"review-viewer-{width}.png"))
            if width < 500:
                # The narrow viewport wraps the info line, the case the layout must survive.
                assert info_box["height"] > 20, info_box

            # Dragging window/level leaves every preset; Alt+1 marks Brain.
            baseline.scroll_into_view_if_needed()
            page.mouse.move(*_page_point_of_pixel(page, "baseline", 20, 20))
            page.mouse.down()
            page.mouse.move(*_page_point_of_pixel(page, "baseline", 30, 30), steps=5)
            page.mouse.up()
            page.wait_for_function(
                "() => window.cehtViewer.byRole('baseline').getVoi().width !== 2800"
            )
            _wait_for_pressed_presets(page, "")
            page.keyboard.press("Alt+1")
            page.wait_for_function(
                "() => window.cehtViewer.byRole('baseline').getVoi().width === 80"
            )
            _wait_for_pressed_presets(page, "brain")

            # Moving the slider shows that slice, and the follow-up slider follows.
            slider.fill("3")
            _wait_for_slice(page, "baseline", 2)
            _wait_for_slice(page, "follow_up", 2)
            _wait_for_info(page, "baseline", "Slice 3/12")
            page.wait_for_function(
                """() => document.querySelector('input[type=range][data-role="follow_up"]')
                    .value === "3" """
            )
            page.close()

        # The lesion button jumps to the slice where the lesion is largest, numbered from 1
        # like the lesion table's range.
        _use_peaked_mask(reviewed_case)
        page = _log_in(chromium_browser, live_server, "coordinator_cai", errors)
        page.wait_for_selector("#viewer[data-overlay=ready]", timeout=20_000)
        first, last = (
            int(number) for number in page.locator(".lesion-slices").inner_text().split("–")
        )
        assert _index(page, "baseline") == 6
        page.get_by_role("button", name="#1 Parenchymal").click()
        _wait_for_slice(page, "baseline", PEAKED_LARGEST_INDEX)
        _wait_for_info(page, "baseline", "Slice 8/12")
        assert (first, last) == (3, 9)
        assert page.locator('input[type=range][data-role="baseline"]').input_value() == "8"
        # The follow-up follows the jump like any other scroll.
        _wait_for_slice(page, "follow_up", PEAKED_LARGEST_INDEX)
        assert errors == []
    finally:
        connection.close()


# Follow-up of another geometry: 10 slices 3 mm apart from 1 mm (1, 4, ..., 28 mm), against the
# baseline's 12 slices 2 mm apart from 0 mm. No baseline position is equally near two follow-up
# slices in the steps below, and syncing by index would land on another slice every time.
FOLLOW_UP_POSITIONS_MM = [1.0 + 3.0 * i for i in range(10)]


@pytest.fixture(scope="session")
def offset_follow_up_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from tests.webapp.test_ingest_support import write_study

    folder = tmp_path_factory.mktemp("offset-follow-up")
    return write_study(
        folder,
        len(FOLLOW_UP_POSITIONS_MM),
        positions_mm=FOLLOW_UP_POSITIONS_MM,
        spacing_mm=3.0,
    )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_scroll_sync_follows_slice_position(
    live_server: Any,
    coordinator: Any,
    ingest_settings: Any,
    study_files: dict[str, list[Path]],
    offset_follow_up_files: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    chromium_browser: Any,
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    reviewed = make_reviewed_case(
        coordinator, {"baseline": study_files["baseline"], "follow_up": offset_follow_up_files}
    )
    stored_positions = list(
        Instance.objects.filter(series__study=reviewed.follow_up)
        .order_by("slice_position_mm")
        .values_list("slice_position_mm", flat=True)
    )
    assert stored_positions == FOLLOW_UP_POSITIONS_MM
    errors: list[str] = []
    try:
        page = _log_in(chromium_browser, live_server, "coordinator_cai", errors)
        page.wait_for_selector("#viewer[data-prefetched=done]", timeout=20_000)
        follow_up_slider = page.locator('input[type=range][data-role="follow_up"]')
        # Each study starts at its own middle slice: 12 mm and 16 mm.
        assert _index(page, "baseline") == 6
        assert _index(page, "follow_up") == 5
        assert follow_up_slider.get_attribute("max") == "10"

        # Baseline 14 mm (index 7): the nearest follow-up slice is 13 mm (index 4).
        page.locator('.viewport[data-role="baseline"]').focus()
        page.keyboard.press("ArrowDown")
        _wait_for_slice(page, "baseline", 7)
        _wait_for_slice(page, "follow_up", 4)
        _wait_for_info(page, "follow_up", "Slice 5/10 · 13.0 mm · thickness 3 mm")
        assert follow_up_slider.input_value() == "5"

        # Baseline 4 mm (index 2) by its slider: the follow-up shows 4 mm (index 1).
        page.locator('input[type=range][data-role="baseline"]').fill("3")
        _wait_for_slice(page, "baseline", 2)
        _wait_for_slice(page, "follow_up", 1)
        _wait_for_info(page, "follow_up", "Slice 2/10 · 4.0 mm")

        # Scrolling the follow-up moves the baseline too: 10 mm is baseline index 5.
        follow_up_slider.fill("4")
        _wait_for_slice(page, "follow_up", 3)
        _wait_for_slice(page, "baseline", 5)
        _wait_for_info(page, "baseline", "Slice 6/12 · 10.0 mm · thickness 2 mm")

        # Past the end of the baseline (28 mm), the baseline stops at its last slice (22 mm).
        follow_up_slider.fill("10")
        _wait_for_slice(page, "follow_up", 9)
        _wait_for_slice(page, "baseline", 11)

        # Unticked, scrolling one study leaves the other where it is.
        page.locator("#sync-scroll").uncheck()
        page.locator('input[type=range][data-role="baseline"]').fill("1")
        _wait_for_slice(page, "baseline", 0)
        page.wait_for_timeout(300)
        assert _index(page, "follow_up") == 9
        assert errors == []
    finally:
        connection.close()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_missing_follow_up_placeholder_shown(
    live_server: Any,
    reader: Any,
    reviewed_case: ReviewedCase,
    monkeypatch: pytest.MonkeyPatch,
    chromium_browser: Any,
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    reviewed_case.follow_up.delete()
    errors: list[str] = []
    try:
        page = _log_in(chromium_browser, live_server, "reader_ann", errors)
        page.wait_for_selector("#viewer[data-first-image=shown]", timeout=20_000)
        placeholder = page.locator("#follow-up-missing")
        baseline_box = page.locator('.viewport[data-role="baseline"]').bounding_box()
        placeholder_box = placeholder.locator(".viewport").bounding_box()
        page.screenshot(path=str(ARTIFACTS / "review-follow-up-missing.png"))

        assert placeholder.locator(".viewport-state").is_visible()
        assert (
            placeholder.locator(".viewport-state")
            .inner_text()
            .startswith("The follow-up CT is not uploaded yet. A coordinator uploads it")
        )
        assert placeholder.locator("canvas").count() == 0
        # The placeholder takes the follow-up viewport's place: beside the baseline, same size.
        assert placeholder_box["x"] > baseline_box["x"] + baseline_box["width"] - 1
        assert abs(placeholder_box["y"] - baseline_box["y"]) < 1
        assert abs(placeholder_box["width"] - baseline_box["width"]) < 1
        assert page.evaluate("() => window.cehtViewer.viewports.length") == 1
        assert len(set(_pixels(page, "baseline"))) > 2
        assert page.locator("#sync-scroll").count() == 0
        assert errors == []
    finally:
        connection.close()


@pytest.fixture(scope="session")
def compressed_studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The synthetic study re-encoded with each compressed transfer syntax the test covers."""
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    from tests.webapp.test_ingest_support import write_study

    studies = {}
    for syntax in (JPEG2000Lossless, JPEGLSLossless, RLELossless):
        folder = tmp_path_factory.mktemp(f"compressed-{syntax.keyword}")
        paths = write_study(folder, 12)
        for path in paths:
            dataset = pydicom.dcmread(path)
            dataset.compress(syntax)
            dataset.save_as(path)
        studies[syntax.keyword] = paths
    return studies


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("syntax", ["JPEG2000Lossless", "JPEGLSLossless", "RLELossless"])
def test_compressed_series_displays(
    live_server: Any,
    coordinator: Any,
    ingest_settings: Any,
    compressed_studies: dict[str, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
    syntax: str,
    chromium_browser: Any,
) -> None:
    from tests.webapp.test_ingest_support import named_files
    from webapp.core.models import Case
    from webapp.ingest.services import ingest_files

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    case = Case.objects.create(code=CASE_CODE)
    ingest_files(case, "baseline", "3", named_files(compressed_studies[syntax]), coordinator)
    stored = Instance.objects.filter(series__study__case=case).order_by("slice_position_mm")[6]
    with stored.file.open("rb") as handle:
        stored_syntax = pydicom.dcmread(handle, stop_before_pixels=True).file_meta.TransferSyntaxUID
    errors: list[str] = []
    try:
        page = _log_in(chromium_browser, live_server, "coordinator_cai", errors)
        page.wait_for_selector("#viewer[data-prefetched=done]", timeout=30_000)
        state = page.locator('.viewport[data-role="baseline"] .viewport-state')
        page.mouse.move(
            *_page_point_of_pixel(page, "baseline", PROBE_COLUMN + 0.5, PROBE_ROW + 0.5)
        )
        probe = page.locator('.hu-probe[data-role="baseline"]')

        assert stored_syntax.keyword == syntax
        assert state.is_hidden(), state.inner_text()
        assert len(set(_pixels(page, "baseline"))) > 2
        assert float(probe.get_attribute("data-hu")) == 75.0
        assert errors == []
    finally:
        connection.close()
