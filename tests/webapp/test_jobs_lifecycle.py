"""Inference jobs in one process: queueing, claim, steps, results, failures and retries."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from inference.errors import GeometryError
from tests.inference.conftest import phantom_slice_hu
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    as_uploads,
    ingest_settings,
    named_files,
    test_model_dir,
    write_study,
)
from webapp.core.models import Case, Series, Study
from webapp.core.services import RoleRequiredError
from webapp.ingest.services import ingest_files
from webapp.jobs import runner
from webapp.jobs.models import InferenceJob, Lesion, ModelVersion, Prediction
from webapp.jobs.services import enqueue_inference, reanalyse_cases

pytestmark = pytest.mark.usefixtures("ingest_settings")


@pytest.fixture
def study(coordinator: Any, tmp_path: Path) -> Study:
    case = Case.objects.create(code="JOB-001")
    paths = write_study(tmp_path / "in")
    files = named_files(paths)
    ingest_files(case, "baseline", 2, files, coordinator)
    return Study.objects.get(case=case)


def test_job_runs_all_steps_and_stores_results(study: Study) -> None:
    job = InferenceJob.objects.get(study=study)

    outcome = runner.run_job(job.pk, "worker-a")

    job.refresh_from_db()
    assert outcome.status == "succeeded"
    assert job.status == "succeeded"
    assert job.progress_step == "done"
    assert set(job.step_timings_s) == {"load", "segment", "radiomics", "models"}
    assert all(seconds >= 0 for seconds in job.step_timings_s.values())
    assert job.attempts == 1
    assert job.run_count == 1
    assert job.worker_id == "worker-a"
    assert job.lease_expires_at is None
    prediction = Prediction.objects.get(job=job)
    assert prediction.run_number == 1
    assert prediction.model_version.kind == "lr"
    assert prediction.model_version.version == "1.0.0"
    assert set(prediction.probabilities) == {"HT", "CE", "HT+CE"}
    assert abs(sum(prediction.probabilities.values()) - 1.0) < 1e-6
    assert prediction.predicted_label in {"HT", "CE", "HT+CE"}
    assert prediction.features["n_lesions"] == 1
    chosen_uid = study.series.get(is_chosen=True).series_instance_uid
    assert prediction.provenance["series_instance_uid"] == chosen_uid
    assert len(prediction.provenance["pixel_sha256"]) == 64
    assert prediction.provenance["model"]["artifact_sha256"] == prediction.model_version.sha256
    assert prediction.mask_file.name == f"masks/job-{job.pk}/run-1.nii.gz"
    mask = nib.load(default_storage.path(prediction.mask_file.name))
    assert mask.shape == (64, 64, 12)
    assert int(np.asarray(mask.dataobj).max()) == 1
    assert int((np.asarray(mask.dataobj) == 1).sum()) == 7 * 8 * 8
    assert mask.header.get_zooms() == pytest.approx((1.0, 1.0, 2.0))
    lesion = Lesion.objects.get(job=job)
    assert lesion.mean_hu == pytest.approx(75.0)
    assert lesion.volume_ml == pytest.approx(7 * 8 * 8 * 2.0 / 1000, rel=0.01)


def _two_density_slice_hu(index: int) -> np.ndarray:
    """Return the phantom slice with blood of 62 HU against staining of 130 HU on slices 2-8."""
    image = phantom_slice_hu(index, 64, 64)
    if 2 <= index <= 8:
        image[28:36, 16:28] = 62.0
        image[28:36, 28:36] = 130.0
    return image


def test_split_lesion_stores_both_parts(coordinator: Any, tmp_path: Path) -> None:
    case = Case.objects.create(code="JOB-SPLIT")
    paths = write_study(tmp_path / "in", hu_of=_two_density_slice_hu)
    ingest_files(case, "baseline", 2, named_files(paths), coordinator)
    job = InferenceJob.objects.get(study__case=case)

    runner.run_job(job.pk, "worker-a")

    lesions = list(Lesion.objects.filter(job=job).order_by("label_index"))
    assert [lesion.label_index for lesion in lesions] == [1, 2]
    assert [lesion.paired_with_index for lesion in lesions] == [2, 1]
    assert [lesion.mean_hu for lesion in lesions] == pytest.approx([62.0, 130.0])
    assert lesions[1].volume_ml == pytest.approx(8 * 8 * 7 * 2.0 / 1000)
    # The classifiers read the two parts as one hyperdensity.
    assert Prediction.objects.get(job=job).features["n_lesions"] == 1


def test_second_claim_of_a_running_job_fails(study: Study) -> None:
    job = InferenceJob.objects.get(study=study)

    first = runner.claim_job(job.pk, "worker-a")
    second = runner.claim_job(job.pk, "worker-b")

    assert first is not None
    assert second is None
    job.refresh_from_db()
    assert job.worker_id == "worker-a"
    assert job.attempts == 1


def test_expired_lease_lets_another_worker_claim(study: Study) -> None:
    job = InferenceJob.objects.get(study=study)
    runner.claim_job(job.pk, "worker-a")
    InferenceJob.objects.filter(pk=job.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    takeover = runner.claim_job(job.pk, "worker-b")

    assert takeover is not None
    assert takeover.worker_id == "worker-b"
    assert takeover.attempts == 2


def test_enqueue_twice_is_a_no_op(study: Study, coordinator: Any) -> None:
    job = InferenceJob.objects.get(study=study)

    again = enqueue_inference(study, requested_by=coordinator)

    assert again.pk == job.pk
    assert InferenceJob.objects.count() == 1
    assert again.status == "queued"


def test_finished_job_reruns_only_when_forced(study: Study, coordinator: Any) -> None:
    job = InferenceJob.objects.get(study=study)
    runner.run_job(job.pk, "worker-a")

    unforced = enqueue_inference(study, requested_by=coordinator)
    assert unforced.status == "succeeded"
    forced = enqueue_inference(study, requested_by=coordinator, force=True)
    assert forced.status == "queued"
    runner.run_job(job.pk, "worker-a")

    job.refresh_from_db()
    assert job.run_count == 2
    assert list(Prediction.objects.filter(job=job).values_list("run_number", flat=True)) == [2, 1]
    assert Lesion.objects.filter(job=job).count() == 2


def test_bad_input_fails_with_error_code(study: Study, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_geometry(paths: list[str]) -> Any:
        raise GeometryError("slice missing between z = 4.0 mm and 8.0 mm", code="missing_slices")

    monkeypatch.setattr(runner, "load_study", broken_geometry)
    job = InferenceJob.objects.get(study=study)

    outcome = runner.run_job(job.pk, "worker-a")

    job.refresh_from_db()
    assert outcome.status == "failed"
    assert job.status == "failed"
    assert job.error_code == "missing_slices"
    assert job.error_message == "slice missing between z = 4.0 mm and 8.0 mm"
    assert job.progress_step == "load"
    assert Prediction.objects.count() == 0


def test_missing_model_fails_with_message(study: Study, settings: Any, tmp_path: Path) -> None:
    settings.INFERENCE = {**settings.INFERENCE, "MODEL_DIR": str(tmp_path / "no-models")}
    job = InferenceJob.objects.get(study=study)

    runner.run_job(job.pk, "worker-a")

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_code == "model_not_found"
    assert "No model is registered" in job.error_message


def test_transient_error_retries_with_backoff(
    study: Study, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.INFERENCE = {**settings.INFERENCE, "RETRY_BACKOFF_S": 30.0, "MAX_ATTEMPTS": 2}
    real_load = runner.load_study
    calls = []

    def flaky_load(paths: list[str]) -> Any:
        calls.append(len(paths))
        if len(calls) == 1:
            raise OSError("storage not mounted")
        return real_load(paths)

    monkeypatch.setattr(runner, "load_study", flaky_load)
    job = InferenceJob.objects.get(study=study)

    first = runner.run_job(job.pk, "worker-a")
    job.refresh_from_db()
    assert first.status == "queued"
    assert job.status == "queued"
    assert job.error_code == "transient_error"
    assert "storage not mounted" in job.error_message
    assert job.lease_expires_at is not None
    delay_s = (job.lease_expires_at - timezone.now()).total_seconds()
    assert 25 < delay_s <= 30
    # The lease check sent at the claim waits for the 300 s lease; the retry waits 30 s.
    retry_tasks = DBTaskResult.objects.filter(
        run_after__gte=timezone.now() + timedelta(seconds=25),
        run_after__lte=timezone.now() + timedelta(seconds=31),
    )
    assert retry_tasks.count() == 1
    assert runner.run_job(job.pk, "worker-b").status == "skipped"

    InferenceJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    second = runner.run_job(job.pk, "worker-b")

    job.refresh_from_db()
    assert second.status == "succeeded"
    assert job.attempts == 2
    assert job.error_code == ""
    assert calls == [12, 12]


def test_transient_errors_stop_at_max_attempts(
    study: Study, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.INFERENCE = {**settings.INFERENCE, "MAX_ATTEMPTS": 2}

    def always_down(paths: list[str]) -> Any:
        raise OSError("storage not mounted")

    monkeypatch.setattr(runner, "load_study", always_down)
    job = InferenceJob.objects.get(study=study)

    runner.run_job(job.pk, "worker-a")
    runner.run_job(job.pk, "worker-a")

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.attempts == 2
    assert job.error_code == "transient_error"
    assert job.error_message.startswith("The analysis failed 2 times on a temporary error")


def test_reanalysis_needs_researcher(study: Study, coordinator: Any, researcher: Any) -> None:
    job = InferenceJob.objects.get(study=study)
    runner.run_job(job.pk, "worker-a")

    with pytest.raises(RoleRequiredError):
        reanalyse_cases(coordinator)
    jobs = reanalyse_cases(researcher)

    assert [queued.pk for queued in jobs] == [job.pk]
    job.refresh_from_db()
    assert job.status == "queued"
    assert job.requested_by == researcher


def test_status_endpoint_shows_progress(study: Study, client: Any, reader: Any) -> None:
    job = InferenceJob.objects.get(study=study)
    runner.run_job(job.pk, "worker-a")
    client.force_login(reader)

    response = client.get(f"/cases/{study.case.code}/jobs.json")

    body = response.json()
    assert response.status_code == 200
    assert body["jobs"][0]["status"] == "succeeded"
    assert body["jobs"][0]["progress_step"] == "done"
    assert body["jobs"][0]["run_count"] == 1
    assert "predictions" not in body["jobs"][0]
    assert ModelVersion.objects.count() == 1


def test_status_endpoint_needs_a_role(study: Study, client: Any, outsider: Any) -> None:
    client.force_login(outsider)

    response = client.get(f"/cases/{study.case.code}/jobs.json")

    assert response.status_code == 403


def test_case_page_includes_status_poller(study: Study, client: Any, reader: Any) -> None:
    client.force_login(reader)

    response = client.get(f"/cases/{study.case.code}/")

    page = response.content.decode()
    assert response.status_code == 200
    assert f'data-status-url="/cases/{study.case.code}/jobs.json"' in page
    assert "js/job_status.js" in page


def test_added_images_rerun_finished_job(coordinator: Any, tmp_path: Path) -> None:
    case = Case.objects.create(code="JOB-002")
    paths = write_study(tmp_path / "in")
    ingest_files(case, "baseline", 2, named_files(paths[:8]), coordinator)
    job = InferenceJob.objects.get(study__case=case)
    runner.run_job(job.pk, "worker-a")

    ingest_files(case, "baseline", 2, named_files(paths[:8]), coordinator)
    job.refresh_from_db()
    assert job.status == "succeeded"

    ingest_files(case, "baseline", 2, named_files(paths[8:]), coordinator)
    job.refresh_from_db()
    assert job.status == "queued"
    assert job.run_count == 1
    assert Series.objects.get(study__case=case, is_chosen=True).image_count == 12
