"""Site identity on ingest: the file meta loses the sender's AE titles and software identity,
and one original study uploaded into two cases is flagged by a keyed hash of its UID."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from tests.shared_data import PHILIPS_STUDY_DIR, require
from tests.webapp.test_ingest_deid import all_text_in_database
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    named_files,
    test_model_dir,
    write_study,
)
from webapp.core.models import Case, Instance, Study

pytestmark = pytest.mark.usefixtures("ingest_settings")

# What the Philips study's file meta says about the site and its scanner software.
PHILIPS_AE_TITLE = b"RA_CT_04WK"
PHILIPS_IMPLEMENTATION_UID = b"1.3.46.670589.33.1.1"
PHILIPS_VERSION_NAME = b"BRCONN_4.0"
FILE_META_AE_TITLES = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
)
DUPLICATE_CODE = "duplicate_study_other_case"


def philips_paths() -> list[Path]:
    root = require(PHILIPS_STUDY_DIR)
    return sorted(path for path in root.rglob("*") if path.is_file() and path.name != "LICENSE")


def philips_files(paths: list[Path]) -> list[Any]:
    from webapp.ingest.services import NamedFile

    root = PHILIPS_STUDY_DIR
    return [
        NamedFile(
            path.relative_to(root).as_posix(), SimpleUploadedFile(path.name, path.read_bytes())
        )
        for path in paths
    ]


def pixel_digest(dataset: pydicom.Dataset) -> str:
    return hashlib.sha256(dataset.pixel_array.tobytes()).hexdigest()


def test_stored_philips_files_carry_no_site_identity(coordinator: Any) -> None:
    from webapp.ingest.services import ingest_files

    paths = philips_paths()
    originals = [path.read_bytes() for path in paths]
    # The identifiers are there before ingest, so the assertions below cannot pass vacuously.
    assert all(PHILIPS_AE_TITLE in data for data in originals)
    assert all(PHILIPS_IMPLEMENTATION_UID in data for data in originals)
    expected_pixels = sorted(pixel_digest(pydicom.dcmread(path)) for path in paths)
    case = Case.objects.create(code="PSEUDO-SITE")

    report = ingest_files(case, "baseline", 3, philips_files(paths), coordinator)

    assert report.instances_stored == len(paths)
    stored_pixels = []
    for instance in Instance.objects.all():
        with default_storage.open(instance.file.name) as handle:
            data = handle.read()
        assert PHILIPS_AE_TITLE not in data, instance.pk
        assert PHILIPS_IMPLEMENTATION_UID not in data, instance.pk
        assert PHILIPS_VERSION_NAME not in data, instance.pk
        dataset = pydicom.dcmread(io.BytesIO(data))
        meta = dataset.file_meta
        assert not {keyword for keyword in FILE_META_AE_TITLES if keyword in meta}
        assert meta.ImplementationClassUID == PYDICOM_IMPLEMENTATION_UID
        assert str(meta.ImplementationVersionName).startswith("PYDICOM ")
        stored_pixels.append(pixel_digest(dataset))
    assert sorted(stored_pixels) == expected_pixels


def test_whole_file_path_also_drops_site_identity() -> None:
    from webapp.ingest.deid import Deidentifier

    path = philips_paths()[0]
    dataset = pydicom.dcmread(path)
    dataset.file_meta.SendingApplicationEntityTitle = "SEND_NODE_7"
    dataset.file_meta.ReceivingApplicationEntityTitle = "RECV_NODE_9"
    # An element after the pixel data forces the whole-file path.
    dataset.private_block(0x7FE1, "CEHT TAIL", create=True).add_new(0x01, "LO", "tail")
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    original = buffer.getvalue()
    assert b"SEND_NODE_7" in original
    assert PHILIPS_AE_TITLE in original

    result = Deidentifier("5eed" * 16, "CASE-9").deidentify_bytes(original)

    assert result.pixels == b"", "the file should be re-encoded whole"
    for text in (PHILIPS_AE_TITLE, b"SEND_NODE_7", b"RECV_NODE_9", PHILIPS_IMPLEMENTATION_UID):
        assert text not in result.data
    stored = pydicom.dcmread(io.BytesIO(result.data))
    assert stored.file_meta.ImplementationClassUID == PYDICOM_IMPLEMENTATION_UID
    assert pixel_digest(stored) == pixel_digest(dataset)


def test_same_study_in_two_cases_is_flagged(
    coordinator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from webapp.ingest.services import ingest_files

    original_uid = "1.2.826.0.1.3680043.8.498.31415926535"
    paths = write_study(tmp_path / "in", 3, study_uid=original_uid)
    first_case = Case.objects.create(code="PSEUDO-030")
    second_case = Case.objects.create(code="PSEUDO-031")

    first = ingest_files(first_case, "baseline", 1, named_files(paths), coordinator)
    # Uploading again into the same case is a normal re-upload, not a duplicate.
    again = ingest_files(first_case, "baseline", 1, named_files(paths), coordinator)
    with caplog.at_level(logging.WARNING, logger="webapp.ingest.services"):
        second = ingest_files(second_case, "baseline", 1, named_files(paths), coordinator)

    assert DUPLICATE_CODE not in {warning["code"] for warning in first.warnings}
    assert again.instances_already_stored == 3
    assert DUPLICATE_CODE not in {warning["code"] for warning in again.warnings}
    duplicates = [w["message"] for w in second.warnings if w["code"] == DUPLICATE_CODE]
    assert duplicates == [
        "This study was already uploaded to case PSEUDO-030; a cohort would count it twice. "
        "Check that both cases are meant to hold it."
    ]
    # Not rejected: the second case stores its own copy under its own UIDs.
    assert second.instances_stored == 3
    studies = {study.case.code: study for study in Study.objects.select_related("case")}
    assert set(studies) == {"PSEUDO-030", "PSEUDO-031"}
    hashes = {study.source_study_hash for study in studies.values()}
    assert len(hashes) == 1
    assert len(hashes.pop()) == 64
    # Logged with ids only.
    logged = [record.getMessage() for record in caplog.records if "same original" in record.msg]
    assert logged == [
        f"Ingest of case_id={second_case.pk} study_id={studies['PSEUDO-031'].pk}: same original "
        f"study as study_id={studies['PSEUDO-030'].pk} (case_id={first_case.pk})"
    ]
    assert "PSEUDO-030" not in logged[0]
    # The original UID is kept nowhere: only its keyed hash.
    text = all_text_in_database()
    assert original_uid not in text
    assert "31415926535" not in text


def test_different_studies_are_not_flagged(coordinator: Any, tmp_path: Path) -> None:
    from webapp.ingest.services import ingest_files

    first_paths = write_study(tmp_path / "a", 2, study_uid="1.2.826.0.1.3680043.8.498.101")
    other_paths = write_study(tmp_path / "b", 2, study_uid="1.2.826.0.1.3680043.8.498.102")
    ingest_files(
        Case.objects.create(code="PSEUDO-040"), "baseline", 1, named_files(first_paths), coordinator
    )
    report = ingest_files(
        Case.objects.create(code="PSEUDO-041"), "baseline", 1, named_files(other_paths), coordinator
    )

    assert DUPLICATE_CODE not in {warning["code"] for warning in report.warnings}
    assert Study.objects.exclude(source_study_hash="").count() == 2


def test_fingerprint_is_keyed_by_secret_key(settings: Any) -> None:
    from webapp.ingest.services import study_fingerprint

    uid = "1.2.826.0.1.3680043.8.498.7"
    first = study_fingerprint(uid)
    assert first != hashlib.sha256(uid.encode()).hexdigest()
    assert study_fingerprint("") == ""
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
    assert study_fingerprint(uid) != first
