"""True lesion masks of synthetic studies, stored on the analysed series grid with TRUTH lesions.

The synthetic generator writes each case's true labels as NIfTI beside its studies. Storing one
reads the stored volume of the study's chosen series, checks that the mask lies on that grid,
writes the labels under ``MEDIA_ROOT`` in the job runner's format ((x, y, z) voxels, gzip NIfTI,
RAS affine) and measures every label with the segmentation's own measure functions.

The TRUTH lesion rows belong to the study (``Lesion.study``), not to an inference job: no job
run produced them, and they stay when the study is analysed again.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from inference.dicom import load_study
from inference.segmentation import SegmentationConfig
from inference.segmentation.brain import compute_brain_mask
from inference.segmentation.masks import SAME_GRID_TOLERANCE_MM, volume_affine
from inference.segmentation.measures import measure_lesions
from inference.volume import Volume
from webapp.core.models import Instance, Study
from webapp.core.services import ServiceError
from webapp.ingest.storage import stored_path
from webapp.jobs.models import Lesion

logger = logging.getLogger(__name__)

# Lesion.run_number of true lesions: no job run produced them.
TRUTH_RUN_NUMBER = 0
# NIfTI stores RAS; DICOM and Volume use LPS.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class TruthMaskError(ServiceError):
    """A true mask cannot be stored: no chosen series, an unreadable file or another grid."""

    code = "truth_mask_invalid"


def truth_mask_name(study: Study) -> str:
    """Storage name of the study's true mask."""
    return f"masks/truth/study-{study.pk}.nii.gz"


def has_true_mask(study: Study) -> bool:
    """Return whether a true mask of the study is stored (it may contain no lesion)."""
    return bool(default_storage.exists(truth_mask_name(study)))


def truth_lesions(study: Study) -> list[Lesion]:
    """Return the study's TRUTH lesions, by label."""
    return list(
        Lesion.objects.filter(study=study, source=Lesion.Source.TRUTH).order_by("label_index", "pk")
    )


def store_true_mask(
    study: Study, mask_path: Path, compartments: dict[int, str] | None = None
) -> list[Lesion]:
    """Store the true label mask at ``mask_path`` for ``study`` and return its TRUTH lesions.

    Replaces an earlier true mask of the study. Each label value of the mask becomes one lesion
    with that ``label_index``, measured on the stored volume. ``compartments`` gives the known
    compartment of a label (the generator's); other labels keep the measured guess. Raises
    TruthMaskError when the study has no chosen series, or when the mask is not on
    the series' grid.
    """
    # Labels the caller does not know keep the measured guess.
    known = {
        label: value
        for label, value in (compartments or {}).items()
        if value in Lesion.Compartment.values
    }
    volume = _stored_volume(study)
    labels_zyx = _labels_on_grid(mask_path, volume)
    hu = volume.hu if volume.hu.dtype == np.float32 else volume.hu.astype(np.float32)
    config = SegmentationConfig()
    brain = compute_brain_mask(hu, volume.spacing_zyx_mm, config, volume.padding_mask)
    measured = measure_lesions(hu, labels_zyx, volume, brain, config)

    name = truth_mask_name(study)
    image = nib.Nifti1Image(labels_zyx.transpose(2, 1, 0), _RAS_TO_LPS @ volume_affine(volume))
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = b"SYNTHETIC true lesion labels"
    with transaction.atomic():
        Lesion.objects.filter(study=study, source=Lesion.Source.TRUTH).delete()
        rows = [
            Lesion.objects.create(
                study=study,
                run_number=TRUTH_RUN_NUMBER,
                source=Lesion.Source.TRUTH,
                compartment=known.get(lesion.label, lesion.compartment),
                **Lesion.measured_fields(lesion),
            )
            for lesion in measured
        ]
        if default_storage.exists(name):
            default_storage.delete(name)
        # mtime 0 keeps the bytes independent of the clock.
        default_storage.save(
            name, ContentFile(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))
        )
    logger.info("Stored the true mask of study_id=%s: %d lesion(s)", study.pk, len(rows))
    return rows


def _stored_volume(study: Study) -> Volume:
    names = list(
        Instance.objects.filter(series__study=study, series__is_chosen=True).values_list(
            "file", flat=True
        )
    )
    if not names:
        raise TruthMaskError(
            f"Study {study.pk} has no chosen series; a true mask needs the analysed series.",
            code="truth_without_series",
        )
    volume: Volume = load_study([stored_path(name) for name in names])[0]
    return volume


def _labels_on_grid(mask_path: Path, volume: Volume) -> np.ndarray:
    """Read the NIfTI label mask and return it as int32 (z, y, x) on the volume's grid."""
    try:
        image = nib.load(str(mask_path))
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
            raise ValueError(f"{type(image).__name__} is not a NIfTI image")
        data_xyz = np.asarray(image.dataobj)
        affine = _RAS_TO_LPS @ np.asarray(image.affine, dtype=np.float64)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise TruthMaskError(
            f"True mask {mask_path.name} cannot be read ({type(error).__name__}); generate the "
            "cohort again.",
            code="truth_unreadable",
        ) from error
    nz, ny, nx = volume.shape
    offset_mm = float(np.max(np.abs(affine - volume_affine(volume))))
    # TODO: resample a true mask on another grid, as load_user_mask does for user masks.
    if data_xyz.shape != (nx, ny, nz) or offset_mm > SAME_GRID_TOLERANCE_MM:
        raise TruthMaskError(
            f"True mask {mask_path.name} (shape {data_xyz.shape[::-1]}) is not on the grid of "
            f"the stored series (shape {volume.shape}, largest affine difference "
            f"{offset_mm:.3g} mm).",
            code="truth_other_grid",
        )
    if data_xyz.dtype.kind not in "iub" or (data_xyz.size and data_xyz.min() < 0):
        raise TruthMaskError(
            f"True mask {mask_path.name} is not a label image of non-negative integers.",
            code="truth_unreadable",
        )
    return np.ascontiguousarray(data_xyz.transpose(2, 1, 0), dtype=np.int32)
