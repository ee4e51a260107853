"""True masks of synthetic studies: stored on the series grid, measured, served only unblinded."""

# Fixtures imported from test_review_support are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.test import Client

from inference.dicom import load_study
from inference.segmentation.masks import volume_affine
from inference.synthetic import load_cohort
from tests.webapp.test_ingest_support import (  # noqa: F401
    LESION_HU,
    ingest_settings,
    lesion_slice_hu,
    test_model_dir,
)
from tests.webapp.test_review_support import (  # noqa: F401 - fixtures
    CASE_CODE,
    N_SLICES,
    ReviewedCase,
    reviewed_case,
    study_files,
)
from webapp.core.models import Adjudication, Instance, Study
from webapp.ingest.demo import load_demo_cohort
from webapp.ingest.storage import stored_path
from webapp.ingest.truth import (
    TRUTH_RUN_NUMBER,
    TruthMaskError,
    store_true_mask,
    truth_lesions,
    truth_mask_name,
)
from webapp.jobs.models import InferenceJob, Lesion
from webapp.review.overlay import read_label_mask

PAGE = f"/cases/{CASE_CODE}/review/"
STATE = f"/cases/{CASE_CODE}/review/state.json"
# 1 x 1 mm pixels, 2 mm slices.
VOXEL_ML = 0.002
# Label 1 is the 75 HU block of the test series (slices 2-8, 8 x 8 pixels). Label 2 is left
# out on purpose, so label values are kept rather than renumbered. Label 3 is a 2 x 5 patch of
# brain on slice 10.
BLOCK_VOXELS = 7 * 8 * 8
PATCH_SLICE = 10
PATCH_ROWS = slice(40, 42)
PATCH_COLUMNS = slice(20, 25)


def true_labels() -> np.ndarray:
    labels = np.zeros((N_SLICES, 64, 64), dtype=np.int16)
    labels[2:9, 28:36, 24:32] = 1
    labels[PATCH_SLICE, PATCH_ROWS, PATCH_COLUMNS] = 3
    return labels


def write_true_mask(
    path: Path, study: Study, labels_zyx: np.ndarray, shift_mm: float = 0.0
) -> Path:
    """Write ``labels_zyx`` as the generator does: (x, y, z) NIfTI on the study's RAS grid."""
    names = Instance.objects.filter(series__study=study).values_list("file", flat=True)
    volume = load_study([stored_path(name) for name in names])[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume_affine(volume)
    affine[2, 3] += shift_mm
    nib.save(nib.Nifti1Image(labels_zyx.transpose(2, 1, 0), affine), path)
    return path


@pytest.fixture
def truth_case(reviewed_case: ReviewedCase, tmp_path: Path) -> ReviewedCase:
    mask = write_true_mask(tmp_path / "lesions.nii.gz", reviewed_case.baseline, true_labels())
    store_true_mask(reviewed_case.baseline, mask, {1: "parenchymal", 3: "subarachnoid"})
    return reviewed_case


def _runs_voxels(runs: dict[str, list[list[int]]]) -> int:
    return sum(run[2] for slice_runs in runs.values() for run in slice_runs)


def test_true_mask_measured_per_label(truth_case: ReviewedCase) -> None:
    rows = truth_lesions(truth_case.baseline)

    assert [row.label_index for row in rows] == [1, 3]
    assert {row.source for row in rows} == {Lesion.Source.TRUTH}
    assert {row.run_number for row in rows} == {TRUTH_RUN_NUMBER}
    assert {row.study_id for row in rows} == {truth_case.baseline.pk}
    assert {row.job_id for row in rows} == {None}
    block, patch = rows
    assert block.volume_ml == pytest.approx(BLOCK_VOXELS * VOXEL_ML)
    assert (block.mean_hu, block.max_hu) == (LESION_HU, LESION_HU)
    assert block.percentiles_hu == {"p10": LESION_HU, "p50": LESION_HU, "p90": LESION_HU}
    assert block.bbox_zyx_voxels == [2, 28, 24, 9, 36, 32]
    assert block.compartment == Lesion.Compartment.PARENCHYMAL
    patch_hu = lesion_slice_hu(PATCH_SLICE)[PATCH_ROWS, PATCH_COLUMNS]
    assert patch.volume_ml == pytest.approx(10 * VOXEL_ML)
    assert patch.mean_hu == pytest.approx(float(patch_hu.mean()), abs=0.5)
    assert patch.max_hu == pytest.approx(float(patch_hu.max()), abs=0.5)
    assert patch.bbox_zyx_voxels == [PATCH_SLICE, 40, 20, PATCH_SLICE + 1, 42, 25]
    assert patch.compartment == Lesion.Compartment.SUBARACHNOID
    # Truth rows stay out of the job's run: run 1 still has its one segmented lesion.
    assert Lesion.objects.filter(job=truth_case.job, run_number=1).count() == 1


def test_stored_true_mask_keeps_labels_and_voxels(truth_case: ReviewedCase) -> None:
    stored = read_label_mask(truth_mask_name(truth_case.baseline))

    assert stored.shape == (N_SLICES, 64, 64)
    assert np.array_equal(stored, true_labels())
    assert int(np.count_nonzero(stored == 1)) == BLOCK_VOXELS


def test_storing_again_replaces_the_true_lesions(truth_case: ReviewedCase, tmp_path: Path) -> None:
    labels = np.zeros((N_SLICES, 64, 64), dtype=np.int16)
    labels[4, 28:30, 24:26] = 2
    mask = write_true_mask(tmp_path / "again.nii.gz", truth_case.baseline, labels)

    store_true_mask(truth_case.baseline, mask)

    rows = truth_lesions(truth_case.baseline)
    assert [(row.label_index, row.volume_ml) for row in rows] == [(2, pytest.approx(0.008))]
    assert np.array_equal(read_label_mask(truth_mask_name(truth_case.baseline)), labels)


@pytest.mark.parametrize(
    ("labels", "shift_mm"),
    [(true_labels(), 5.0), (true_labels()[:-1], 0.0)],
    ids=["shifted-5-mm", "one-slice-short"],
)
def test_true_mask_on_another_grid_is_rejected(
    reviewed_case: ReviewedCase, tmp_path: Path, labels: np.ndarray, shift_mm: float
) -> None:
    mask = write_true_mask(tmp_path / "other.nii.gz", reviewed_case.baseline, labels, shift_mm)

    with pytest.raises(TruthMaskError) as raised:
        store_true_mask(reviewed_case.baseline, mask)

    assert raised.value.code == "truth_other_grid"
    assert truth_lesions(reviewed_case.baseline) == []
    assert not default_storage.exists(truth_mask_name(reviewed_case.baseline))


def test_true_lesions_belong_to_the_study_not_a_job(
    reviewed_case: ReviewedCase, tmp_path: Path
) -> None:
    follow_up = reviewed_case.follow_up
    InferenceJob.objects.filter(study=follow_up).delete()
    mask = write_true_mask(tmp_path / "follow.nii.gz", follow_up, true_labels())

    store_true_mask(follow_up, mask)
    # A new analysis of the study neither removes nor duplicates them.
    InferenceJob.objects.create(study=follow_up, pipeline_version="again")

    assert [row.label_index for row in truth_lesions(follow_up)] == [1, 3]
    assert Lesion.objects.filter(job__study=follow_up).count() == 0


def test_database_keeps_one_owner_per_lesion(truth_case: ReviewedCase) -> None:
    """A true lesion on a job, or a job's lesion without one, is refused by the database."""
    common = {"label_index": 9, "volume_ml": 1.0, "mean_hu": 60.0, "max_hu": 70.0}
    with pytest.raises(IntegrityError), transaction.atomic():
        Lesion.objects.create(source=Lesion.Source.TRUTH, job=truth_case.job, **common)
    with pytest.raises(IntegrityError), transaction.atomic():
        Lesion.objects.create(source=Lesion.Source.AUTO, study=truth_case.baseline, **common)
    with pytest.raises(IntegrityError), transaction.atomic():
        Lesion.objects.create(
            source=Lesion.Source.TRUTH,
            study=truth_case.baseline,
            run_number=0,
            label_index=1,
            volume_ml=1.0,
            mean_hu=60.0,
            max_hu=70.0,
        )


def test_truth_overlay_serves_runs_of_each_label(
    client: Client, coordinator: Any, truth_case: ReviewedCase
) -> None:
    client.force_login(coordinator)

    response = client.get(
        f"/cases/{CASE_CODE}/review/studies/{truth_case.baseline.pk}/truth-overlay.json"
    )

    assert response.status_code == 200
    data = response.json()
    assert data["layer"] == "truth"
    assert data["shapeZyx"] == [N_SLICES, 64, 64]
    assert sorted(data["lesions"]) == ["1", "3"]
    assert sorted(data["lesions"]["1"], key=int) == [str(z) for z in range(2, 9)]
    assert data["lesions"]["1"]["5"] == [[row, 24, 8] for row in range(28, 36)]
    assert data["lesions"]["3"] == {"10": [[40, 20, 5], [41, 20, 5]]}
    assert _runs_voxels(data["lesions"]["1"]) == BLOCK_VOXELS


def test_truth_overlay_missing_mask_is_404(
    client: Client, coordinator: Any, truth_case: ReviewedCase
) -> None:
    client.force_login(coordinator)

    no_mask = client.get(
        f"/cases/{CASE_CODE}/review/studies/{truth_case.follow_up.pk}/truth-overlay.json"
    )
    other_case = client.get(
        f"/cases/OTHER/review/studies/{truth_case.baseline.pk}/truth-overlay.json"
    )

    assert no_mask.status_code == 404
    assert "no stored true mask" in no_mask.json()["error"]
    assert other_case.status_code == 404


def test_damaged_true_mask_is_404_with_reason(
    client: Client, coordinator: Any, truth_case: ReviewedCase
) -> None:
    name = truth_mask_name(truth_case.baseline)
    default_storage.delete(name)
    default_storage.save(name, ContentFile(b"\x1f\x8b not gzip"))
    client.force_login(coordinator)

    response = client.get(
        f"/cases/{CASE_CODE}/review/studies/{truth_case.baseline.pk}/truth-overlay.json"
    )

    assert response.status_code == 404
    assert response.json()["error"].startswith(
        f"The true mask of study {truth_case.baseline.pk} could not be read"
    )


def test_blinded_reader_gets_no_true_mask_until_submitting(
    client: Client, reader: Any, truth_case: ReviewedCase
) -> None:
    client.force_login(reader)
    url = f"/cases/{CASE_CODE}/review/studies/{truth_case.baseline.pk}/truth-overlay.json"

    blinded_response = client.get(url)
    blinded_page = client.get(PAGE).content.decode()
    blinded_state = client.get(STATE).json()

    assert blinded_response.status_code == 403
    assert "lesions" not in blinded_response.json()
    assert "True mask (synthetic)" not in blinded_page
    assert "truth-overlay.json" not in blinded_page
    assert "truthLesions" not in blinded_state

    Adjudication.objects.create(
        case=truth_case.case, reader=reader, version=1, label="HT", confidence=3
    )
    response = client.get(url)
    page = client.get(PAGE).content.decode()

    assert response.status_code == 200
    assert _runs_voxels(response.json()["lesions"]["1"]) == BLOCK_VOXELS
    assert "True mask (synthetic)" in page
    assert 'class="truth-toggle"' in page


def test_page_lists_true_lesions_and_names_the_layer(
    client: Client, coordinator: Any, truth_case: ReviewedCase
) -> None:
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()
    state = client.get(STATE).json()

    assert '<h3 id="truth-lesions-heading">True mask (synthetic)</h3>' in page
    assert page.count('class="truth-toggle"') == 2
    truth = [
        (item["labelIndex"], item["volumeMl"], item["sliceNumbers"])
        for item in state["truthLesions"]
    ]
    assert truth == [(1, 0.896, [3, 9]), (3, 0.02, [11, 11])]
    # The segmented lesions are unchanged: one, of the job's run.
    assert [item["source"] for item in state["lesions"]] == [Lesion.Source.AUTO]
    config = json.loads(
        page.split('id="viewer-config" type="application/json">')[1].split("</script>")[0]
    )
    assert config["truthOverlayUrl"].endswith(
        f"/studies/{truth_case.baseline.pk}/truth-overlay.json"
    )
    assert config["truthStudyRole"] == Study.Role.BASELINE


def test_case_without_true_mask_shows_no_truth_layer(
    client: Client, coordinator: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()

    assert "True mask (synthetic)" not in page
    assert '"truthOverlayUrl": null' in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("ingest_settings")
def test_demo_loader_stores_the_generator_masks(tmp_path: Path) -> None:
    # Ingest queues the jobs with transaction.on_commit, so this test needs real commits.
    summary = load_demo_cohort(tmp_path / "cohort", n_cases=1)
    cohort_case = load_cohort(tmp_path / "cohort").cases[0]
    baseline = Study.objects.get(case__code=cohort_case.code, role=Study.Role.BASELINE)

    rows = truth_lesions(baseline)
    generated = cohort_case.true_labels()
    with np.load(cohort_case.masks_npz) as arrays:
        voxel_ml = float(np.prod(arrays["spacing_zyx_mm"])) / 1000
    expected_labels = [int(lesion["label"]) for lesion in cohort_case.lesions]
    assert summary.cases[0].true_lesions_stored == len(expected_labels) > 0
    assert [row.label_index for row in rows] == expected_labels
    stored = read_label_mask(truth_mask_name(baseline))
    assert np.array_equal(stored, generated)
    for row, lesion in zip(rows, cohort_case.lesions, strict=True):
        voxels = int(np.count_nonzero(generated == row.label_index))
        # DICOM writes the pixel spacing with 6 decimals (0.898438 for 0.8984375 mm).
        assert row.volume_ml == pytest.approx(voxels * voxel_ml, rel=1e-5)
        assert row.volume_ml == pytest.approx(lesion["volume_ml"], abs=1e-4)
        assert row.compartment == lesion["compartment"]
        assert row.study_id == baseline.pk
    follow_up = Study.objects.get(case__code=cohort_case.code, role=Study.Role.FOLLOW_UP)
    assert truth_lesions(follow_up) == []

    again = load_demo_cohort(tmp_path / "cohort", n_cases=1)

    assert again.cases[0].true_lesions_stored is None
    assert again.cases_unchanged == 1
    assert [row.pk for row in truth_lesions(baseline)] == [row.pk for row in rows]
