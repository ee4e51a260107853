"""Lesion mask exports: the stored NIfTI label image of a prediction, or a DICOM SEG built from it.

The DICOM SEG (highdicom) has one segment per lesion, names the segmentation algorithm and its
version, and references the stored source instances of the analysed series. The NIfTI mask is
stored in (x, y, z) voxel order with slices along the volume's sorted slice axis, so SEG frame k
is built on the k-th source instance ordered by its position along the slice normal.
"""

from __future__ import annotations

import gzip
import io
import logging

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from django.core.files.storage import default_storage
from django.db import transaction
from pydicom.sr.codedict import codes

from webapp.core import roles
from webapp.core.audit import Action, record_audit_event
from webapp.core.models import Instance
from webapp.core.services import ClientContext, RoleRequiredError, ServiceError
from webapp.jobs.models import Lesion, Prediction
from webapp.research.exports import EXPORT_ROLES

logger = logging.getLogger(__name__)

MASK_FORMATS = ("nifti", "seg")
ALGORITHM_NAME = "ceht-review hyperdensity segmentation"
ALGORITHM_FAMILY = codes.cid7162.ArtificialIntelligence
TYPE_2_COPIED_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


class MaskExportError(ServiceError):
    code = "mask_unavailable"


def _read_mask_xyz(prediction: Prediction) -> np.ndarray:
    if not prediction.mask_file:
        raise MaskExportError(
            f"Prediction {prediction.pk} has no stored lesion mask; re-run the job to create one."
        )
    with default_storage.open(prediction.mask_file.name, "rb") as handle:
        data = handle.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    image = nib.Nifti1Image.from_bytes(data)
    return np.asarray(image.dataobj).astype(np.int32)


def build_dicom_seg(prediction: Prediction) -> bytes:
    """Return a DICOM SEG (binary, one segment per lesion label) of the prediction's mask.

    Raises MaskExportError when the mask or the source instances are missing, or when the
    mask's slice count differs from the stored series.
    """
    study = prediction.job.study
    instances = list(
        Instance.objects.filter(series__study=study, series__is_chosen=True).order_by(
            "slice_position_mm", "instance_number"
        )
    )
    if not instances:
        raise MaskExportError(
            f"Study of case {study.case.code} has no chosen series with stored instances; "
            "upload the study again."
        )
    labels_zyx = _read_mask_xyz(prediction).transpose(2, 1, 0)
    if labels_zyx.shape[0] != len(instances):
        raise MaskExportError(
            f"The mask has {labels_zyx.shape[0]} slices but the chosen series has "
            f"{len(instances)} stored instances; re-run the job on the current series."
        )
    sources = []
    for instance in instances:
        with default_storage.open(instance.file.name, "rb") as handle:
            source = pydicom.dcmread(handle)
        # De-identification removes some type 2 attributes that highdicom copies into the SEG;
        # they are added back empty, which is what DICOM allows for an unknown value.
        for keyword in TYPE_2_COPIED_ATTRIBUTES:
            if keyword not in source:
                setattr(source, keyword, "")
        sources.append(source)
    if labels_zyx.shape[1:] != (sources[0].Rows, sources[0].Columns):
        raise MaskExportError(
            f"The mask's slices are {labels_zyx.shape[1:]} pixels but the images are "
            f"{(sources[0].Rows, sources[0].Columns)}; re-run the job."
        )

    lesion_labels = sorted(int(value) for value in np.unique(labels_zyx) if value > 0)
    if not lesion_labels:
        raise MaskExportError(
            f"Prediction {prediction.pk} found no lesion; there is nothing to export."
        )
    # highdicom numbers segments 1..N, so lesion labels are renumbered in ascending order.
    renumbered = np.zeros_like(labels_zyx, dtype=np.uint8)
    for number, label in enumerate(lesion_labels, start=1):
        renumbered[labels_zyx == label] = number
    version = prediction.model_version
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME,
        family=ALGORITHM_FAMILY,
        version=f"pipeline {prediction.job.pipeline_version}; model {version.kind} {version.version}",
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"Hyperdense lesion {label}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, label in enumerate(lesion_labels, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=renumbered,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="ceht-review",
        manufacturer_model_name="ceht-review research export",
        software_versions=prediction.job.pipeline_version or "unknown",
        device_serial_number="none",
        content_description="Hyperdense lesions, research use only",
    )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def export_mask(context: ClientContext, prediction: Prediction, mask_format: str) -> bytes:
    """Return the mask of ``prediction`` as NIfTI (the stored file) or DICOM SEG, and audit it."""
    if not roles.has_any_role(context.actor, *EXPORT_ROLES):
        raise RoleRequiredError(
            f"User {context.actor.get_username()!r} needs one of the roles "
            f"{', '.join(EXPORT_ROLES)} to export masks."
        )
    if mask_format == "nifti":
        if not prediction.mask_file:
            raise MaskExportError(f"Prediction {prediction.pk} has no stored lesion mask.")
        with default_storage.open(prediction.mask_file.name, "rb") as handle:
            data = handle.read()
    elif mask_format == "seg":
        data = build_dicom_seg(prediction)
    else:
        raise ValueError(f"Mask format {mask_format!r} is not one of {', '.join(MASK_FORMATS)}.")
    with transaction.atomic():
        record_audit_event(
            Action.EXPORT_DOWNLOADED,
            actor=context.actor,
            target=prediction,
            client_address=context.client_address,
            details={
                "kind": "mask",
                "format": mask_format,
                "case": prediction.job.study.case.code,
                "lesions": Lesion.objects.filter(
                    job=prediction.job, run_number=prediction.run_number
                ).count(),
            },
        )
    return data
