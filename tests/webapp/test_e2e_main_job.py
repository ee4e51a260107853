"""The main job end to end in Chromium, on a generated (synthetic) case.

A coordinator creates a case and uploads its baseline as a folder and its follow-up as a zip
through the upload page. A real ``db_worker`` analyses both with the bundled demo models
(trained on synthetic data), and the coordinator enters the follow-up ground truth. A reader
reviews the blinded case, adjudicates and gets the comparison, and an adjudicator records the
consensus. A researcher finds the case on the dashboards and in the CSV export. Every step
leaves a screenshot in test-artifacts/e2e/.
"""

# Fixtures imported from the support modules are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.webapp.e2e_support import (
    Screenshots,
    canvas_red_values,
    demo_model_count,
    demo_worker,  # noqa: F401 - fixture
    log_in,
    parse_csv,
    progress_complete,
    upload_through_page,
    viewer_index,
    wait_for_analyses,
    wait_for_index,
    wait_for_pixels_to_change,
    write_synthetic_upload,
)
from tests.webapp.test_ingest_support import ingest_settings, test_model_dir  # noqa: F401
from webapp.core.models import Adjudication, Case, GroundTruth, Study
from webapp.jobs.models import InferenceJob, ModelVersion, Prediction

CASE_CODE = "E2E-SYN-001"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.slow,
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="workers need PostgreSQL"),
]


# chromium_browser comes last: Playwright's sync API runs an event loop in this thread, so
# database fixtures set up after it would use a connection that outlives the test database.
@pytest.mark.django_db(transaction=True)
def test_main_job_on_a_synthetic_case(
    live_server: Any,
    coordinator: Any,
    reader: Any,
    adjudicator: Any,
    researcher: Any,
    demo_worker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chromium_browser: Any,
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    upload = write_synthetic_upload(tmp_path / "incoming", CASE_CODE)
    shots = Screenshots("main-job")
    try:
        # --- Coordinator: create the case with the baseline folder. ---
        coordinator_session = log_in(chromium_browser, live_server, "coordinator_cai", "/upload/")
        page = coordinator_session.page
        shots.take(page, "upload-page")
        upload_through_page(
            page,
            new_case=CASE_CODE,
            role_label="Baseline (post-MT NCCT)",
            hours=upload.baseline_hours,
            folder=upload.baseline_dir,
        )
        assert progress_complete(page)
        report = page.locator("#report-body")
        assert "12 image(s) stored, 0 already stored, 0 file(s) skipped, of 12 " in (
            report.inner_text()
        )
        assert InferenceJob.objects.filter(study__case__code=CASE_CODE).count() == 1
        page.locator("#upload-report").scroll_into_view_if_needed()
        shots.take(page, "baseline-folder-uploaded", doc_name="upload-report")

        # --- Coordinator: the follow-up as a zip into the existing case. ---
        page.goto(f"{live_server.url}/upload/?case={CASE_CODE}")
        upload_through_page(
            page,
            role_label="Follow-up CT",
            hours=upload.follow_up_hours,
            files=[upload.follow_up_zip],
        )
        assert progress_complete(page)
        assert "12 image(s) stored" in report.inner_text()
        page.locator("#upload-report").scroll_into_view_if_needed()
        shots.take(page, "follow-up-zip-uploaded")

        case = Case.objects.get(code=CASE_CODE)
        studies = {study.role: study for study in case.studies.all()}
        assert set(studies) == {Study.Role.BASELINE, Study.Role.FOLLOW_UP}
        assert float(studies["baseline"].hours_after_mt) == upload.baseline_hours
        assert float(studies["follow_up"].hours_after_mt) == upload.follow_up_hours
        for study in studies.values():
            assert study.series.get(is_chosen=True).instances.count() == 12

        # --- The worker analyses both studies; the case page shows the progress live. ---
        page.get_by_role("link", name=f"Open case {CASE_CODE}").click()
        lines = wait_for_analyses(page, demo_worker, expected_jobs=2)
        shots.take(page, "case-analysed", doc_name="case-analysis")
        assert all("analysed in" in line for line in lines), lines
        jobs = InferenceJob.objects.filter(study__case=case)
        assert sorted(jobs.values_list("status", flat=True)) == ["succeeded", "succeeded"]
        assert set(jobs.values_list("worker_id", flat=True)) == {"e2e-worker"}
        n_models = demo_model_count()
        assert n_models >= 5
        assert ModelVersion.objects.count() == n_models
        baseline_job = jobs.get(study__role="baseline")
        assert Prediction.objects.filter(job=baseline_job).count() == n_models
        assert baseline_job.lesions.exists()

        # --- Coordinator: the follow-up ground truth through the review panel. ---
        page.get_by_role("link", name="Open the viewer and review panel").click()
        truth_section = page.locator("#ground-truth")
        truth_section.get_by_text("Enter ground truth").click()
        truth_section.get_by_label("Hemorrhagic transformation (HT)").check()
        truth_section.scroll_into_view_if_needed()
        shots.take(page, "ground-truth-form", doc_name="ground-truth")
        truth_section.get_by_role("button", name="Save ground truth").click()
        page.get_by_text("Ground truth saved.").wait_for()
        assert page.locator("#ground-truth-label").inner_text() == upload.label
        page.locator("#ground-truth").scroll_into_view_if_needed()
        shots.take(page, "ground-truth-entered")
        assert GroundTruth.objects.get(case=case).label == upload.label
        assert coordinator_session.errors == []

        # --- Reader: the worklist hides the prediction until the reader has labelled the case. ---
        reader_session = log_in(chromium_browser, live_server, "reader_ann", "/")
        page = reader_session.page
        row = page.locator("tbody tr", has=page.get_by_role("link", name=CASE_CODE))
        assert "hidden until you submit your label" in row.inner_text()
        shots.take(page, "reader-worklist", doc_name="worklist")
        row.get_by_role("link", name=CASE_CODE).click()
        page.get_by_role("link", name="Open the viewer and review panel").click()
        page.wait_for_selector("#viewer[data-first-image=shown]")
        page.wait_for_selector("#viewer[data-prefetched=done]")

        # A real image: many grey levels, no state box over it, on the middle slice.
        first = canvas_red_values(page, "baseline")
        assert len(set(first)) > 20
        assert page.locator('.viewport[data-role="baseline"] .viewport-state').is_hidden()
        assert viewer_index(page, "baseline") == 6
        assert page.locator("#blinded-note").is_visible()
        assert page.locator("#predictions").count() == 0
        assert page.locator("#ground-truth").count() == 0

        # Scroll to the lesion with the keyboard and the wheel. The follow-up scrolls along.
        lesion_slice = upload.lesion_slices[len(upload.lesion_slices) // 2]
        page.locator('.viewport[data-role="baseline"]').focus()
        for _ in range(6 - lesion_slice):
            page.keyboard.press("ArrowUp")
        wait_for_index(page, "baseline", lesion_slice)
        wait_for_index(page, "follow_up", lesion_slice)
        page.locator('.viewport[data-role="baseline"]').hover()
        page.mouse.wheel(0, 100)
        wait_for_index(page, "baseline", lesion_slice + 1)
        page.mouse.wheel(0, -100)
        wait_for_index(page, "baseline", lesion_slice)

        # Presets change the window of both viewports and the pixels drawn.
        before = canvas_red_values(page, "follow_up")
        page.get_by_role("button", name="Subdural L75/W215").click()
        page.wait_for_function(
            "() => window.cehtViewer.viewports.every(v => v.getVoi().width === 215)"
        )
        assert wait_for_pixels_to_change(page, "follow_up", before) != before
        page.get_by_role("button", name="Stroke L35/W35").click()
        page.wait_for_function(
            "() => window.cehtViewer.viewports.every(v => v.getVoi().width === 35)"
        )
        shots.take(page, "reader-blinded-review", doc_name="review-blinded")

        # Submitting the blinded adjudication reveals the comparison.
        form = page.locator("#adjudication-form")
        form.get_by_label("Hemorrhagic transformation (HT)").check()
        form.get_by_label("Confidence").fill("4")
        form.get_by_role("button", name="Submit adjudication").click()
        page.get_by_text("Adjudication saved.").wait_for()
        predictions = page.locator("#predictions .prediction")
        assert predictions.count() >= n_models
        for index in range(predictions.count()):
            assert "trained on synthetic data" in predictions.nth(index).inner_text()
        assert page.locator("#ground-truth-label").inner_text() == upload.label
        assert "Your adjudication (version 1: HT)" in page.locator("#adjudication").inner_text()

        # The lesion overlay: jump to lesion 1, then toggling it changes the pixels.
        page.wait_for_selector("#viewer[data-overlay=ready]")
        page.locator('.lesion-jump[data-label="1"]').click()
        page.wait_for_function(
            "() => window.cehtViewer.byRole('baseline').index >= 0 && "
            "window.cehtViewer.overlay !== null"
        )
        with_overlay = canvas_red_values(page, "baseline")
        toggle = page.locator('.lesion-toggle[data-label="1"]')
        toggle.uncheck()
        without_overlay = wait_for_pixels_to_change(page, "baseline", with_overlay)
        assert without_overlay != with_overlay
        toggle.check()
        page.locator("#lesions").scroll_into_view_if_needed()
        shots.take(page, "reader-lesions-and-truth")
        page.evaluate("() => window.scrollTo(0, 0)")
        # Right after the scroll, Chromium's screenshot could miss the follow-up's orientation
        # letters although they were in the page, so wait for them and for two painted frames.
        page.wait_for_function(
            "() => [...document.querySelectorAll('.viewport')].every(v => "
            "v.querySelector('.marker-top').textContent !== '' && "
            "v.querySelector('.viewport-info').textContent !== '')"
        )
        page.evaluate(
            "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
        )
        shots.take(page, "reader-comparison-revealed", doc_name="review-revealed")
        adjudication = Adjudication.objects.get(case=case, reader=reader)
        assert (adjudication.label, adjudication.confidence) == ("HT", 4)
        assert adjudication.model_shown is False
        assert reader_session.errors == []

        # --- Adjudicator: reads blinded like any reader, then records the consensus. ---
        adjudicator_session = log_in(
            chromium_browser, live_server, "adjudicator_eli", f"/cases/{CASE_CODE}/review/"
        )
        page = adjudicator_session.page
        assert page.locator("#blinded-note").is_visible()
        assert page.locator("#consensus").count() == 0
        form = page.locator("#adjudication-form")
        form.get_by_label("Both (HT+CE)").check()
        form.get_by_label("Confidence").fill("2")
        form.get_by_role("button", name="Submit adjudication").click()
        page.get_by_text("Adjudication saved.").wait_for()
        assert "reader_ann: HT, confidence 4" in page.locator("#readers").inner_text()
        consensus = page.locator("#consensus")
        consensus.get_by_label("Hemorrhagic transformation (HT)").check()
        consensus.get_by_label("Confidence").fill("5")
        consensus.get_by_role("button", name="Record consensus").click()
        page.get_by_text("Consensus label saved.").wait_for()
        assert page.locator("#consensus-label").inner_text() == "HT"
        page.locator("#readers").scroll_into_view_if_needed()
        shots.take(page, "adjudicator-consensus", doc_name="consensus")
        assert adjudicator_session.errors == []

        # --- Researcher: the dashboards count the case, and the CSV export contains its row. ---
        researcher_session = log_in(
            chromium_browser, live_server, "researcher_dee", "/research/readers/"
        )
        page = researcher_session.page
        reader_row = page.locator("#readers tbody tr", has_text=f"reader_{reader.pk}")
        cells = reader_row.locator("td")
        assert cells.nth(0).inner_text() == "1"
        assert "1/1" in cells.nth(1).inner_text()
        pair = page.locator("#pairs tbody tr")
        assert pair.count() == 1
        assert pair.locator("td").nth(0).inner_text() == "1"
        assert pair.locator("td").nth(1).inner_text().startswith("0")
        shots.take(page, "readers-dashboard", doc_name="dashboard-readers")

        page.goto(f"{live_server.url}/research/performance/?split=unassigned")
        assert (
            f"All 1 labelled cases have the label {upload.label}"
            in page.locator("#no-report").inner_text()
        )
        shots.take(page, "performance-dashboard")

        page.goto(f"{live_server.url}/")
        row = page.locator("tbody tr", has=page.get_by_role("link", name=CASE_CODE))
        assert row.locator("td").nth(3).inner_text() == upload.label
        shots.take(page, "researcher-worklist")

        page.get_by_role("link", name="Exports").click()
        shots.take(page, "exports", doc_name="exports")
        with page.expect_download() as download_info:
            page.get_by_role("link", name="ceht-cases.csv").click()
        download = download_info.value
        assert download.suggested_filename.endswith(".csv")
        rows = parse_csv(Path(download.path()).read_bytes())
        (case_row,) = [item for item in rows if item["case_code"] == CASE_CODE]
        assert case_row["ground_truth_label"] == upload.label
        assert case_row["ground_truth_source"] == "reading"
        assert (case_row["consensus_label"], case_row["consensus_confidence"]) == ("HT", "5")
        assert case_row[f"reader_{adjudicator.pk}_label"] == "HT+CE"
        assert case_row["baseline_hours_after_mt"] == "2.5"
        assert case_row["follow_up_hours_after_mt"] == "30.0"
        assert case_row["baseline_study_uid"] == studies["baseline"].study_instance_uid
        assert case_row[f"reader_{reader.pk}_label"] == "HT"
        assert case_row[f"reader_{reader.pk}_confidence"] == "4"
        assert case_row[f"reader_{reader.pk}_model_shown"] == "False"
        assert int(case_row["lesion_count"]) == baseline_job.lesions.count()
        model_labels = {
            key: value
            for key, value in case_row.items()
            if key.startswith("model_") and key.endswith("_label")
        }
        assert len(model_labels) == n_models
        assert all(value in {"HT", "CE", "HT+CE"} for value in model_labels.values())
        assert researcher_session.errors == []
    finally:
        connection.close()
