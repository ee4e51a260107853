"""De-identification on ingest: identifiers appear in no table, file, log line or response."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from pydicom.dataset import Dataset
from rest_framework.test import APIClient

from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    as_uploads,
    ingest_settings,
    named_files,
    test_model_dir,
    write_study,
)
from webapp.core.models import Case, Instance, Series, Study

pytestmark = pytest.mark.usefixtures("ingest_settings")

PATIENT_NAME = "QUIXOTE^ALONSO"
PATIENT_ID = "MRN-80417735"
ACCESSION = "ACC-55219034"
SECRETS = ("QUIXOTE", "ALONSO", "80417735", "55219034", "Hospital of La Mancha", "19450312")


def add_identifiers(path: Path, study_uid: str) -> None:
    """Write a realistic set of identifying attributes, including a private one."""
    dataset = pydicom.dcmread(path)
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_ID
    dataset.AccessionNumber = ACCESSION
    dataset.PatientBirthDate = "19450312"
    dataset.InstitutionName = "Hospital of La Mancha"
    dataset.ReferringPhysicianName = "QUIXOTE^SANCHO"
    dataset.OtherPatientNames = "ALONSO^Q"
    dataset.ImageComments = f"patient {PATIENT_NAME} moved"
    dataset.StudyInstanceUID = study_uid
    block = dataset.private_block(0x0011, "CEHT TEST", create=True)
    block.add_new(0x01, "LO", PATIENT_NAME)
    referenced = Dataset()
    referenced.ReferencedSOPInstanceUID = "1.2.3.80417735"
    dataset.ReferencedImageSequence = [referenced]
    dataset.save_as(path)


@pytest.fixture
def identified_study(tmp_path: Path) -> list[Path]:
    study_uid = "1.2.826.0.1.3680043.8.498.80417735"
    axial = write_study(tmp_path / "axial", 6, study_uid=study_uid)
    capture = write_study(
        tmp_path / "capture",
        1,
        study_uid=study_uid,
        sop_class="1.2.840.10008.5.1.4.1.1.7",
        series_number=99,
        description="Screen capture",
    )
    for path in [*axial, *capture]:
        add_identifiers(path, study_uid)
    return [*axial, *capture]


def all_text_in_database() -> str:
    """Return every row of every table as text (pytest's database holds only this test's rows)."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from introspection
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_identifiers_appear_nowhere(
    coordinator: Any, identified_study: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    case = Case.objects.create(code="PSEUDO-017")
    client = APIClient()
    client.force_authenticate(coordinator)
    caplog.set_level(logging.DEBUG)

    response = client.post(
        f"/api/v1/cases/{case.code}/studies/",
        {"role": "baseline", "hours_after_mt": "3", "files": as_uploads(identified_study)},
        format="multipart",
    )
    detail = client.get(f"/api/v1/uploads/{response.json()['upload_id']}/")
    status = client.get(f"/cases/{case.code}/jobs.json")

    assert response.status_code == 201
    assert Instance.objects.count() == 7
    database = all_text_in_database()
    stored = b"".join(
        default_storage.open(name).read()
        for name in Instance.objects.values_list("file", flat=True)
    )
    for secret in SECRETS:
        assert secret not in database, f"{secret} found in the database"
        assert secret.encode() not in stored, f"{secret} found in a stored file"
        assert secret not in caplog.text, f"{secret} found in the log"
        assert secret not in response.content.decode(), f"{secret} found in the API response"
        assert secret not in detail.content.decode(), f"{secret} found in the upload report"
        assert secret not in status.content.decode(), f"{secret} found in the job status"


def test_pseudonym_and_consistent_uids(coordinator: Any, identified_study: list[Path]) -> None:
    from webapp.ingest.services import ingest_files

    case = Case.objects.create(code="PSEUDO-018")
    files = named_files(identified_study)

    ingest_files(case, "baseline", 3, files, coordinator)

    study = Study.objects.get()
    assert study.study_instance_uid != "1.2.826.0.1.3680043.8.498.80417735"
    assert Series.objects.filter(study=study).count() == 2
    instance = Instance.objects.filter(series__is_chosen=True).first()
    assert instance is not None
    dataset = pydicom.dcmread(default_storage.open(instance.file.name))
    assert str(dataset.PatientName) == "PSEUDO-018"
    assert dataset.PatientID == "PSEUDO-018"
    assert dataset.StudyInstanceUID == study.study_instance_uid
    assert dataset.SOPInstanceUID == instance.sop_instance_uid
    assert dataset.file_meta.MediaStorageSOPInstanceUID == instance.sop_instance_uid
    assert dataset.PatientIdentityRemoved == "YES"
    assert dataset.PatientBirthDate == ""
    assert "ImageComments" not in dataset
    assert dataset.SeriesDescription == "Head 5mm"


def test_secondary_capture_is_flagged_burned_in(
    coordinator: Any, identified_study: list[Path]
) -> None:
    from webapp.ingest.services import ingest_files

    case = Case.objects.create(code="PSEUDO-019")
    files = named_files(identified_study)

    report = ingest_files(case, "baseline", 3, files, coordinator)

    capture = Series.objects.get(series_number=99)
    assert capture.burned_in_annotation is True
    assert capture.is_chosen is False
    assert capture.kind == "secondary_capture"
    assert "burned_in_annotation" in {warning["code"] for warning in report.warnings}


def test_two_cases_get_distinct_uids(coordinator: Any, tmp_path: Path) -> None:
    from webapp.ingest.services import NamedFile, ingest_files

    case = Case.objects.create(code="PSEUDO-020")
    other = Case.objects.create(code="PSEUDO-021")
    paths = write_study(tmp_path / "in", 3)

    def files() -> list[NamedFile]:
        return named_files(paths)

    ingest_files(case, "baseline", 1, files(), coordinator)
    ingest_files(other, "baseline", 1, files(), coordinator)

    first, second = Study.objects.order_by("pk")
    assert first.case == case
    assert second.case == other
    # Each case has its own seed, so the same file gets different UIDs in the two cases.
    assert first.study_instance_uid != second.study_instance_uid
    assert Instance.objects.count() == 6


# Attributes that dicognito keeps and that the PS3.15 basic profile removes; the Philips study
# has each of them, some inside sequences.
PROFILE_REMOVED = (
    "DeviceSerialNumber",
    "StudyDescription",
    "ProtocolName",
    "InstitutionalDepartmentName",
    "InstitutionAddress",
    "CommentsOnRadiationDose",
    "DateOfSecondaryCapture",
    "TimeOfSecondaryCapture",
    "PregnancyStatus",
)


def test_philips_study_loses_profile_attributes(coordinator: Any) -> None:
    from tests.shared_data import PHILIPS_STUDY_DIR, require
    from webapp.ingest.services import NamedFile, ingest_files

    root = require(PHILIPS_STUDY_DIR)
    paths = sorted(path for path in root.rglob("*") if path.is_file() and path.name != "LICENSE")
    originals = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
    # The attributes are there before ingest, so the test below cannot pass on absent data.
    present = {
        keyword
        for dataset in originals
        for element in dataset.iterall()
        for keyword in [element.keyword]
        if keyword in PROFILE_REMOVED
    }
    assert present == set(PROFILE_REMOVED)
    assert any(int(dataset.get("SeriesNumber", 0)) == 401 for dataset in originals)
    case = Case.objects.create(code="PSEUDO-PHILIPS")
    files = [
        NamedFile(
            path.relative_to(root).as_posix(), SimpleUploadedFile(path.name, path.read_bytes())
        )
        for path in paths
    ]

    report = ingest_files(case, "baseline", 3, files, coordinator)

    assert report.instances_stored == len(paths)
    descriptions = {}
    for instance in Instance.objects.select_related("series"):
        dataset = pydicom.dcmread(default_storage.open(instance.file.name))
        keywords = {element.keyword for element in dataset.iterall()}
        assert not keywords & set(PROFILE_REMOVED), instance.series.series_number
        assert not any(0x6000 <= element.tag.group <= 0x601E for element in dataset.iterall())
        assert dataset.DeidentificationMethod.startswith("PS3.15 E basic, clean descriptors")
        descriptions[instance.series.series_number] = str(dataset.get("SeriesDescription", ""))
    # Clean Descriptors option: series descriptions stay (they name kernel and plane).
    chosen = Series.objects.get(is_chosen=True)
    assert descriptions[chosen.series_number] == chosen.description != ""
    assert Study.objects.get().description == ""
    # The burned-in warning names the series by number and description.
    burned_in = [w["message"] for w in report.warnings if w["code"] == "burned_in_annotation"]
    assert len(burned_in) == 1
    assert "series 401" in burned_in[0]


def test_clean_descriptor_cuts_name_and_id(tmp_path: Path) -> None:
    from webapp.ingest.deid import Deidentifier

    dataset = pydicom.dcmread(write_study(tmp_path, 1)[0])
    dataset.PatientName = "Quixote^Alonso"
    dataset.PatientID = "MRN-80417735"
    dataset.SeriesDescription = "Head 5mm QUIXOTE MRN-80417735 ax"

    Deidentifier("seed", "PSEUDO-1").apply(dataset)

    assert dataset.SeriesDescription == "Head 5mm ax"
    assert dataset.PatientName == "PSEUDO-1"
