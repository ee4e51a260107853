"""Lesion mask exports: DICOM SEG read back with highdicom and pydicom, NIfTI, access, audit."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client

from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    named_files,
    test_model_dir,
    write_study,
)
from webapp.core.models import AuditEvent, Case, Instance
from webapp.jobs.models import InferenceJob, ModelVersion, Prediction

pytestmark = pytest.mark.usefixtures("ingest_settings")


@pytest.fixture
def prediction(coordinator: Any, tmp_path: Path) -> Prediction:
    from webapp.ingest.services import ingest_files

    case = Case.objects.create(code="SEG-01")
    ingest_files(case, "baseline", "2.0", named_files(write_study(tmp_path / "in")), coordinator)
    study = case.studies.get()
    job = InferenceJob.objects.filter(study=study).first() or InferenceJob.objects.create(
        study=study, pipeline_version="test-1"
    )
    # Label 1: the 8 x 8 block on slices 2-8; label 3: a 2 x 2 block on slice 10.
    labels_zyx = np.zeros((12, 64, 64), dtype=np.int32)
    labels_zyx[2:9, 28:36, 24:32] = 1
    labels_zyx[10, 5:7, 5:7] = 3
    image = nib.Nifti1Image(labels_zyx.transpose(2, 1, 0), np.eye(4))
    name = default_storage.save(
        f"masks/job-{job.pk}/run-1.nii.gz", ContentFile(gzip.compress(image.to_bytes()))
    )
    version = ModelVersion.objects.create(kind="lr", version="seg-test", sha256="d" * 64)
    return Prediction.objects.create(
        job=job,
        model_version=version,
        probabilities={"HT": 0.7, "CE": 0.2, "HT+CE": 0.1},
        predicted_label="HT",
        mask_file=name,
    )


def _download(client: Client, user: Any, prediction: Prediction, mask_format: str) -> Any:
    client.force_login(user)
    return client.get(f"/research/exports/masks/{prediction.pk}/{mask_format}")


def test_seg_reads_back_with_highdicom(
    client: Client, researcher: Any, prediction: Prediction
) -> None:
    response = _download(client, researcher, prediction, "seg")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom"
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(response.content)))
    assert seg.number_of_segments == 2
    labels = [seg.get_segment_description(n).segment_label for n in (1, 2)]
    assert labels == ["Hyperdense lesion 1", "Hyperdense lesion 3"]
    algorithm = seg.get_segment_description(1).algorithm_identification
    assert algorithm is not None
    assert algorithm[0].AlgorithmName == "ceht-review hyperdensity segmentation"
    pipeline = prediction.job.pipeline_version
    assert algorithm[0].AlgorithmVersion == f"pipeline {pipeline}; model lr seg-test"


def test_seg_references_stored_instances(
    client: Client, researcher: Any, prediction: Prediction
) -> None:
    dataset = pydicom.dcmread(io.BytesIO(_download(client, researcher, prediction, "seg").content))
    instances = list(Instance.objects.filter(series__is_chosen=True).order_by("slice_position_mm"))

    referenced = {
        item.ReferencedSOPInstanceUID
        for series in dataset.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {instance.sop_instance_uid for instance in instances}
    assert dataset.Modality == "SEG"
    assert dataset.SegmentationType == "BINARY"
    seg = hd.seg.Segmentation.from_dataset(dataset)
    on_slice_2 = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[instances[2].sop_instance_uid], segment_numbers=[1]
    )
    assert on_slice_2.shape == (1, 64, 64, 1)
    assert int(on_slice_2.sum()) == 64
    assert on_slice_2[0, 28, 24, 0] == 1
    assert on_slice_2[0, 27, 24, 0] == 0


def test_seg_has_no_patient_name_of_upload(
    client: Client, researcher: Any, prediction: Prediction
) -> None:
    content = _download(client, researcher, prediction, "seg").content

    assert b"SYNTHETIC^TEST" not in content
    assert b"SYN-0" not in content


def test_nifti_download_is_stored_mask(
    client: Client, coordinator: Any, prediction: Prediction
) -> None:
    response = _download(client, coordinator, prediction, "nifti")

    assert response.status_code == 200
    image = nib.Nifti1Image.from_bytes(gzip.decompress(response.content))
    data = np.asarray(image.dataobj)
    assert data.shape == (64, 64, 12)
    assert int((data == 1).sum()) == 7 * 64
    assert int((data == 3).sum()) == 4


def test_mask_exports_are_audited(client: Client, researcher: Any, prediction: Prediction) -> None:
    _download(client, researcher, prediction, "seg")

    event = AuditEvent.objects.get(action="export.downloaded")
    assert event.details == {"kind": "mask", "format": "seg", "case": "SEG-01", "lesions": 0}
    assert event.object_id == str(prediction.pk)


def test_prediction_without_mask_is_409(
    client: Client, researcher: Any, prediction: Prediction
) -> None:
    other = Prediction.objects.create(
        job=prediction.job,
        run_number=2,
        model_version=prediction.model_version,
        probabilities={"HT": 1.0},
        predicted_label="HT",
    )
    response = _download(client, researcher, other, "seg")

    assert response.status_code == 409
    assert b"has no stored lesion mask" in response.content


def test_reader_cannot_download_masks(client: Client, reader: Any, prediction: Prediction) -> None:
    assert _download(client, reader, prediction, "seg").status_code == 403
