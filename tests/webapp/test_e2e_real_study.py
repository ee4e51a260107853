"""The main job's first half in Chromium on a real CT study from the shared test data.

The study has three series: a localizer, the 5 mm axial brain series and a six-page "Exam
Summary" secondary capture whose text is burned into the pixels. The upload page must choose
the brain series, list the others with their reasons, and the viewer must never show or fetch
the capture. A real ``db_worker`` analyses the study with the demo models (trained on
synthetic data). Skipped when the shared data is absent.
"""

# Fixtures imported from the support modules are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection

from tests.shared_data import PHILIPS_STUDY_DIR, require
from tests.webapp.e2e_support import (
    Screenshots,
    canvas_red_values,
    demo_model_count,
    demo_worker,  # noqa: F401 - fixture
    log_in,
    progress_complete,
    upload_through_page,
    viewer_index,
    wait_for_analyses,
)
from tests.webapp.test_ingest_support import ingest_settings, test_model_dir  # noqa: F401
from webapp.core.models import Case, Instance, Series
from webapp.jobs.models import InferenceJob, ModelVersion, Prediction

CASE_CODE = "E2E-REAL-001"
BRAIN_SERIES_IMAGES = 28

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.slow,
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="workers need PostgreSQL"),
]


def _report_rows(page: Any) -> dict[str, list[str]]:
    """Series number -> the cells of its row in the upload report's study table."""
    rows = page.locator("#report-body table").first.locator("tbody tr")
    result = {}
    for index in range(rows.count()):
        cells = rows.nth(index).locator("td").all_inner_texts()
        result[cells[0]] = cells
    return result


def _wado_object_uids(urls: list[str]) -> set[str]:
    uids = set()
    for url in urls:
        query = parse_qs(urlparse(url).query)
        uids.update(query.get("objectUID", []))
    return uids


@pytest.fixture
def study_dir() -> Path:
    # Requested first, so a missing study skips the test before the worker starts.
    return require(PHILIPS_STUDY_DIR)


@pytest.mark.django_db(transaction=True)
def test_real_study_upload_and_review(
    study_dir: Path,
    live_server: Any,
    coordinator: Any,
    reader: Any,
    demo_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
    chromium_browser: Any,
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    shots = Screenshots("real-study")
    try:
        coordinator_session = log_in(chromium_browser, live_server, "coordinator_cai", "/upload/")
        page = coordinator_session.page
        upload_through_page(
            page,
            new_case=CASE_CODE,
            role_label="Baseline (post-MT NCCT)",
            hours=1.5,
            folder=study_dir,
        )
        assert progress_complete(page)
        report_text = page.locator("#report-body").inner_text()
        assert "35 image(s) stored" in report_text
        assert "1 file(s) skipped, of 36 " in report_text

        # The 5 mm axial brain series is chosen, and the others are listed with their reasons.
        rows = _report_rows(page)
        assert set(rows) == {"100", "201", "401"}
        brain, localizer, capture = rows["201"], rows["100"], rows["401"]
        assert brain[1:5] == ["STD BRAIN 5MM", "axial", str(BRAIN_SERIES_IMAGES), "yes"]
        assert "5 mm slices" in brain[5]
        assert localizer[4] == "no"
        assert "localizer" in localizer[5]
        assert capture[2:5] == ["secondary_capture", "6", "no"]
        assert "secondary capture" in capture[5]
        assert "burned into the" in report_text
        skipped = page.locator("#report-body table", has_text="Skipped files")
        assert "LICENSE" in skipped.inner_text()
        assert "not_dicom" in skipped.inner_text()
        page.locator("#upload-report").scroll_into_view_if_needed()
        shots.take(page, "real-study-upload-report", doc_name="upload-report-real-study")

        case = Case.objects.get(code=CASE_CODE)
        chosen = Series.objects.get(study__case=case, is_chosen=True)
        assert (chosen.series_number, chosen.image_count) == (201, BRAIN_SERIES_IMAGES)
        captures = Series.objects.filter(study__case=case, kind=Series.Kind.SECONDARY_CAPTURE)
        assert [(s.burned_in_annotation, s.is_chosen) for s in captures] == [(True, False)]
        capture_instances = list(Instance.objects.filter(series__in=captures))
        assert len(capture_instances) == 6
        hidden_uids = set(
            Instance.objects.filter(series__study__case=case)
            .exclude(series=chosen)
            .values_list("sop_instance_uid", flat=True)
        )

        # The worker analyses the chosen series with every demo model.
        page.get_by_role("link", name=f"Open case {CASE_CODE}").click()
        lines = wait_for_analyses(page, demo_worker, expected_jobs=1)
        assert "Baseline: analysed in" in lines[0], lines
        shots.take(page, "real-study-analysed")
        job = InferenceJob.objects.get(study__case=case)
        assert job.status == "succeeded", job.error_message
        predictions = Prediction.objects.filter(job=job)
        assert predictions.count() == ModelVersion.objects.count() == demo_model_count()
        analysed = {item.provenance["series_instance_uid"] for item in predictions}
        assert analysed == {chosen.series_instance_uid}
        assert coordinator_session.errors == []

        # A reader's viewer shows and fetches only the brain series.
        reader_session = log_in(
            chromium_browser, live_server, "reader_ann", f"/cases/{CASE_CODE}/review/"
        )
        page = reader_session.page
        wado_urls: list[str] = []
        page.on("request", lambda request: wado_urls.append(request.url))
        page.reload()
        page.wait_for_selector("#viewer[data-first-image=shown]")
        page.wait_for_selector("#viewer[data-prefetched=done]")
        assert len(set(canvas_red_values(page, "baseline"))) > 20
        assert viewer_index(page, "baseline") == BRAIN_SERIES_IMAGES // 2
        info = page.locator('.viewport[data-role="baseline"] .viewport-info').inner_text()
        assert f"Slice {BRAIN_SERIES_IMAGES // 2 + 1}/{BRAIN_SERIES_IMAGES}" in info
        assert page.locator('.viewport[data-role="follow_up"]').count() == 0
        shots.take(page, "real-study-viewer")

        requested = _wado_object_uids([url for url in wado_urls if "/wado?" in url])
        chosen_uids = set(chosen.instances.values_list("sop_instance_uid", flat=True))
        assert requested == chosen_uids
        assert not requested & hidden_uids
        state = page.request.get(f"{live_server.url}/cases/{CASE_CODE}/review/state.json").text()
        assert not any(uid in state for uid in hidden_uids)
        for instance in capture_instances:
            response = page.request.get(
                f"{live_server.url}/wado?requestType=WADO"
                f"&studyUID={case.studies.get().study_instance_uid}"
                f"&seriesUID={instance.series.series_instance_uid}"
                f"&objectUID={instance.sop_instance_uid}&contentType=application%2Fdicom"
            )
            assert response.status == 403, instance.sop_instance_uid
        assert reader_session.errors == []
    finally:
        connection.close()
