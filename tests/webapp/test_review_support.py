"""Fixtures for the review tests (this module contains no tests).

A reviewed case has a baseline and a follow-up study of 12 synthetic slices (64 x 64 pixels,
2 mm apart) with a 75 HU block on slices 2 to 8. A finished inference job on the baseline has a
label mask that marks that block as lesion 1.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from tests.webapp.test_ingest_support import named_files, write_study
from webapp.core.models import Case, Study
from webapp.ingest.services import ingest_files
from webapp.jobs.models import InferenceJob, Lesion, ModelVersion, Prediction

CASE_CODE = "REV-001"
N_SLICES = 12
LESION_SLICES = range(2, 9)
LESION_ROWS = slice(28, 36)
LESION_COLUMNS = slice(24, 32)
SYNTHETIC_INTENDED_USE = "Research use only; not a medical device. Trained on synthetic data."


@dataclass
class ReviewedCase:
    case: Case
    baseline: Study
    follow_up: Study
    job: InferenceJob
    prediction: Prediction


@pytest.fixture(scope="session")
def study_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("review-studies")
    return {
        "baseline": write_study(root / "baseline", N_SLICES),
        "follow_up": write_study(root / "follow_up", N_SLICES),
    }


def lesion_mask_zyx() -> np.ndarray:
    labels = np.zeros((N_SLICES, 64, 64), dtype=np.int32)
    for z in LESION_SLICES:
        labels[z, LESION_ROWS, LESION_COLUMNS] = 1
    return labels


def store_mask(name: str, labels_zyx: np.ndarray) -> str:
    """Store a label mask the way the job runner does: (x, y, z) voxels, gzip-compressed NIfTI."""
    image = nib.Nifti1Image(labels_zyx.transpose(2, 1, 0), np.eye(4))
    return default_storage.save(name, ContentFile(gzip.compress(image.to_bytes(), mtime=0)))


def make_reviewed_case(
    coordinator: Any, files: dict[str, list[Path]], code: str = CASE_CODE
) -> ReviewedCase:
    case = Case.objects.create(code=code, is_synthetic=True)
    ingest_files(case, "baseline", "3", named_files(files["baseline"]), coordinator)
    ingest_files(case, "follow_up", "30", named_files(files["follow_up"]), coordinator)
    baseline = case.studies.get(role=Study.Role.BASELINE)
    follow_up = case.studies.get(role=Study.Role.FOLLOW_UP)
    job = InferenceJob.objects.create(
        study=baseline,
        pipeline_version="test",
        status=InferenceJob.Status.SUCCEEDED,
        run_count=1,
    )
    model, _ = ModelVersion.objects.get_or_create(
        kind=ModelVersion.Kind.LR,
        version="1.0.0",
        defaults={"sha256": "0" * 64, "intended_use": SYNTHETIC_INTENDED_USE},
    )
    mask_name = store_mask(f"masks/job-{job.pk}/run-1.nii.gz", lesion_mask_zyx())
    prediction = Prediction.objects.create(
        job=job,
        run_number=1,
        model_version=model,
        probabilities={"HT": 0.72, "CE": 0.18, "HT+CE": 0.10},
        predicted_label="HT",
        is_uncertain=False,
        runtime_s=0.25,
        mask_file=mask_name,
    )
    Lesion.objects.create(
        job=job,
        run_number=1,
        label_index=1,
        volume_ml=0.896,
        mean_hu=75.0,
        max_hu=75.0,
        bbox_zyx_voxels=[2, 28, 24, 9, 36, 32],
        compartment=Lesion.Compartment.PARENCHYMAL,
    )
    return ReviewedCase(case, baseline, follow_up, job, prediction)


@pytest.fixture
def reviewed_case(
    ingest_settings: Any, coordinator: Any, study_files: dict[str, list[Path]]
) -> ReviewedCase:
    return make_reviewed_case(coordinator, study_files)
