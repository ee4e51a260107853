"""Lesion masks as row runs per slice, small enough to send to the viewer as JSON."""

from __future__ import annotations

import gzip
import logging
from typing import Any

import nibabel as nib
import numpy as np
from django.core.files.storage import default_storage

from webapp.jobs.models import InferenceJob, Prediction

logger = logging.getLogger(__name__)


class OverlayUnavailableError(Exception):
    """The job has no readable lesion mask for its latest run."""


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
    """Read a NIfTI label mask written by the job runner and return it in (z, y, x) order."""
    with default_storage.open(name, "rb") as handle:
        data = handle.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    image = nib.Nifti1Image.from_bytes(data)
    # The runner stores voxels as (x, y, z), which NIfTI readers expect.
    return np.asarray(image.dataobj, dtype=np.int32).transpose(2, 1, 0)


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
    try:
        labels = read_label_mask(prediction.mask_file.name)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as error:
        logger.warning("Lesion mask of job_id=%s unreadable: %s", job.pk, error)
        raise OverlayUnavailableError(
            f"The lesion mask of job {job.pk} could not be read ({type(error).__name__}); "
            "re-run the analysis to write it again."
        ) from error
    return {
        "jobId": job.pk,
        "runNumber": job.run_count,
        "shapeZyx": list(labels.shape),
        "lesions": mask_runs(labels),
    }
