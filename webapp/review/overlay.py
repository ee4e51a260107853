"""Lesion masks as row runs per slice, small enough to send to the viewer as JSON.

Two layers exist: the lesions a job run segmented, and the true lesions of a synthetic study
(``webapp.ingest.truth``). Who may see either is decided by the caller (``webapp.review.access``).
"""

from __future__ import annotations

import gzip
import logging
from typing import Any

import nibabel as nib
import numpy as np
from django.core.files.storage import default_storage

from webapp.core.models import Study
from webapp.ingest.truth import truth_mask_name
from webapp.jobs.models import InferenceJob, Prediction

logger = logging.getLogger(__name__)


class OverlayUnavailableError(Exception):
    """The job's latest run, or the study, has no readable lesion mask."""


def mask_runs(labels_zyx: np.ndarray) -> dict[str, Any]:
    """Encode a label volume as ``{label: {z: [[row, first_column, length], ...]}}``.

    Runs are horizontal spans of equal label within one row, so the viewer fills one rectangle
    per run. Label 0 is background and is not encoded.
    """
    if labels_zyx.ndim != 3:
        raise ValueError(f"label mask has {labels_zyx.ndim} dimensions; expected 3 (z, y, x)")
    encoded: dict[str, dict[str, list[list[int]]]] = {}
    for z, y in zip(*np.nonzero(labels_zyx.any(axis=2)), strict=True):
        row = labels_zyx[z, y]
        # Run boundaries are where the label changes along the row.
        change = np.flatnonzero(np.diff(row)) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [row.size]))
        for start, end in zip(starts, ends, strict=True):
            label = int(row[start])
            if label == 0:
                continue
            encoded.setdefault(str(label), {}).setdefault(str(int(z)), []).append(
                [int(y), int(start), int(end - start)]
            )
    return encoded


def read_label_mask(name: str) -> np.ndarray:
    """Read a stored NIfTI label mask (the job runner's format) and return it in (z, y, x) order."""
    with default_storage.open(name, "rb") as handle:
        data = handle.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    image = nib.Nifti1Image.from_bytes(data)
    # The runner stores voxels as (x, y, z), which NIfTI readers expect.
    return np.asarray(image.dataobj, dtype=np.int32).transpose(2, 1, 0)


def _read_or_unavailable(name: str, subject: str, remedy: str) -> np.ndarray:
    """Read the stored mask ``name``, raising OverlayUnavailableError about ``subject`` on failure."""
    try:
        return read_label_mask(name)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as error:
        logger.warning("%s (%s) is unreadable: %s", subject, name, error)
        raise OverlayUnavailableError(
            f"{subject} could not be read ({type(error).__name__}); {remedy}."
        ) from error


def job_overlay(job: InferenceJob) -> dict[str, Any]:
    """Return the lesion runs of the job's latest run, with the mask shape for a size check.

    Raises OverlayUnavailableError when the run stored no mask or the file cannot be read.
    """
    prediction = (
        Prediction.objects.filter(job=job, run_number=job.run_count)
        .exclude(mask_file="")
        .order_by("pk")
        .first()
    )
    if prediction is None:
        raise OverlayUnavailableError(f"Job {job.pk} run {job.run_count} stored no lesion mask.")
    labels = _read_or_unavailable(
        prediction.mask_file.name,
        f"The lesion mask of job {job.pk}",
        "re-run the analysis to write it again",
    )
    return {
        "jobId": job.pk,
        "runNumber": job.run_count,
        "shapeZyx": list(labels.shape),
        "lesions": mask_runs(labels),
    }


def truth_overlay(study: Study) -> dict[str, Any]:
    """Return the runs of the study's true mask (synthetic cases), with the mask shape.

    Raises OverlayUnavailableError when no true mask is stored or it cannot be read.
    """
    name = truth_mask_name(study)
    if not default_storage.exists(name):
        raise OverlayUnavailableError(f"Study {study.pk} has no stored true mask.")
    labels = _read_or_unavailable(
        name, f"The true mask of study {study.pk}", "load the demo cohort again to store it"
    )
    return {
        "studyId": study.pk,
        "layer": "truth",
        "shapeZyx": list(labels.shape),
        "lesions": mask_runs(labels),
    }
