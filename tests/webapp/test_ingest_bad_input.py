"""Bad input on upload and STOW-RS: each file gets a clear reason and the rest is stored."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import BOUNDARY, encode_multipart
from rest_framework.test import APIClient

from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    as_uploads,
    ingest_settings,
    test_model_dir,
    write_study,
    zip_bytes,
)
from webapp.core.models import Case, Instance, Series, Study

pytestmark = pytest.mark.usefixtures("ingest_settings")


@pytest.fixture
def case(db: None) -> Case:
    return Case.objects.create(code="BAD-001")


def post(api: APIClient, code: str, files: list[Any], **fields: Any) -> dict[str, Any]:
    """POST files for upload as a baseline study and return the report (status 201)."""
    data = {"role": "baseline", "hours_after_mt": "2", **fields, "files": files}
    response = api.post(f"/api/v1/cases/{code}/studies/", data, format="multipart")
    assert response.status_code == 201, response.content
    return dict(response.json())


def stored_files() -> list[str]:
    """Names of the instance files in storage, relative to MEDIA_ROOT."""
    root = Path(settings.MEDIA_ROOT)
    return [
        str(path.relative_to(root)) for path in (root / "instances").rglob("*") if path.is_file()
    ]


def skipped(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["path"]: item for item in report["skipped"]}


def test_truncated_dicom_inside_zip_is_named(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in", 4)
    whole = paths[0].read_bytes()
    archive = zip_bytes(
        {
            "s/cut.dcm": whole[: len(whole) // 2],
            **{f"s/{p.name}": p.read_bytes() for p in paths[1:]},
        }
    )

    report = post(api, case.code, [SimpleUploadedFile("t.zip", archive)])

    assert skipped(report)["t.zip/s/cut.dcm"]["reason"] == "truncated"
    assert "copy the file again" in skipped(report)["t.zip/s/cut.dcm"]["detail"]
    assert report["instances_stored"] == 3


def test_zip_inside_zip_is_named_and_not_unpacked(
    api: APIClient, case: Case, tmp_path: Path
) -> None:
    paths = write_study(tmp_path / "in", 4)
    inner = zip_bytes({p.name: p.read_bytes() for p in paths[:2]})
    outer = zip_bytes({"inner.zip": inner, **{p.name: p.read_bytes() for p in paths[2:]}})

    report = post(api, case.code, [SimpleUploadedFile("outer.zip", outer)])

    entry = skipped(report)["outer.zip/inner.zip"]
    assert entry["reason"] == "nested_archive"
    assert entry["detail"] == (
        "a zip inside the zip is not unpacked; upload the inner zip (or its folder) on its own"
    )
    assert report["instances_stored"] == 2


def test_directory_entry_named_like_a_file(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in", 3)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("d/a.dcm/", b"")  # a folder entry with a file's name
        archive.writestr("d/a.dcm/inside.dcm", paths[0].read_bytes())
        for path in paths[1:]:
            archive.writestr(f"d/{path.name}", path.read_bytes())

    report = post(api, case.code, [SimpleUploadedFile("d.zip", buffer.getvalue())])

    assert report["instances_stored"] == 3
    assert report["skipped"] == []


def test_invalid_utf8_patient_name_is_replaced(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in", 3)
    for path in paths:
        dataset = pydicom.dcmread(path)
        dataset.SpecificCharacterSet = "ISO_IR 192"
        dataset.PatientName = "MARKER^ZZ"
        dataset.save_as(path)
        # Bytes that are not UTF-8 (same length), although SpecificCharacterSet declares UTF-8.
        path.write_bytes(path.read_bytes().replace(b"MARKER^ZZ", b"\xffARKER^\xc3("))

    report = post(api, case.code, as_uploads(paths))

    assert report["instances_stored"] == 3
    stored = pydicom.dcmread(Instance.objects.first().file.path)  # type: ignore[union-attr]
    assert str(stored.PatientName) == case.code


def with_pixels_changed(source: list[Path], folder: Path) -> list[Path]:
    """Copies of ``source`` with the same UIDs and one pixel changed."""
    folder.mkdir()
    copies = []
    for path in source:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array.copy()
        pixels[0, 0] = np.uint16(pixels[0, 0] + 7)
        dataset.PixelData = pixels.tobytes()
        copy = folder / path.name
        dataset.save_as(copy)
        copies.append(copy)
    return copies


def test_same_uid_other_pixels_in_one_request(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in", 3)
    changed = with_pixels_changed(paths, tmp_path / "changed")
    names = [f"a/{p.name}" for p in paths] + [f"b/{p.name}" for p in changed]

    report = post(api, case.code, as_uploads([*paths, *changed]), paths=names)

    assert report["instances_stored"] == 3
    assert Instance.objects.count() == 3
    assert sorted(stored_files()) == sorted(Instance.objects.values_list("file", flat=True))
    entry = skipped(report)[f"b/{changed[0].name}"]
    assert entry["reason"] == "conflicting_instance"
    assert entry["detail"].startswith(f"has the SOPInstanceUID of a/{paths[0].name}")


def test_same_uid_other_pixels_in_a_later_upload(
    api: APIClient, case: Case, tmp_path: Path
) -> None:
    paths = write_study(tmp_path / "in", 3)
    changed = with_pixels_changed(paths, tmp_path / "changed")
    post(api, case.code, as_uploads(paths))
    before = set(Instance.objects.values_list("sha256", flat=True))

    report = post(api, case.code, as_uploads(changed))

    assert report["instances_stored"] == 0
    assert report["instances_already_stored"] == 0
    assert {item["reason"] for item in report["skipped"]} == {"conflicting_instance"}
    assert report["nothing_stored"] is True
    assert set(Instance.objects.values_list("sha256", flat=True)) == before
    # The conflicting files were written before the check; none of them stays in storage.
    assert sorted(stored_files()) == sorted(Instance.storage_name_for(sha256) for sha256 in before)


def test_series_file_of_other_study_skipped(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in", 4)
    odd = pydicom.dcmread(paths[1])
    odd.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.999"
    odd.save_as(paths[1])

    report = post(api, case.code, as_uploads(paths))

    entry = skipped(report)[paths[1].name]
    assert entry["reason"] == "inconsistent_study"
    assert "differs from the other 3 file(s) of series 2" in entry["detail"]
    assert report["instances_stored"] == 3
    assert Study.objects.count() == 1
    assert Series.objects.get().instances.count() == 3


def test_overlong_uid_without_deidentification_is_skipped(
    api: APIClient, case: Case, tmp_path: Path, settings: Any
) -> None:
    settings.INGEST = {**settings.INGEST, "DEIDENTIFY": False}
    paths = write_study(tmp_path / "in", 3)
    for path in paths[:1]:
        dataset = pydicom.dcmread(path)
        dataset.SOPInstanceUID = "1." + "2" * 100
        dataset.save_as(path)

    report = post(api, case.code, as_uploads(paths))

    assert skipped(report)[paths[0].name]["reason"] == "invalid_uid"
    assert report["instances_stored"] == 2


def stow_body(paths: list[Path], boundary: bytes) -> bytes:
    parts = b"".join(
        b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + p.read_bytes() + b"\r\n"
        for p in paths
    )
    return parts + b"--" + boundary + b"--\r\n"


def post_stow(api: APIClient, case: Case, body: bytes, boundary: str) -> Any:
    return api.post(
        f"/dicomweb/studies?case={case.code}",
        body,
        content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


def test_stow_with_wrong_boundary_names_it(api: APIClient, case: Case, tmp_path: Path) -> None:
    body = stow_body(write_study(tmp_path / "in", 2), b"RIGHT")

    response = post_stow(api, case, body, "WRONG")

    assert response.status_code == 400
    assert "no part delimited by the boundary 'WRONG'" in response.json()["message"]
    assert Instance.objects.count() == 0


def test_stow_body_cut_off_stores_nothing(api: APIClient, case: Case, tmp_path: Path) -> None:
    body = stow_body(write_study(tmp_path / "in", 3), b"RIGHT")

    response = post_stow(api, case, body[: len(body) * 2 // 3], "RIGHT")

    assert response.status_code == 400
    assert "ends without its closing boundary (--RIGHT--)" in response.json()["message"]
    assert Instance.objects.count() == 0


def test_multipart_body_cut_off_is_rejected(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in", 3)
    fields = {
        "file_count": "3",
        "role": "baseline",
        "files": [SimpleUploadedFile(p.name, p.read_bytes()) for p in paths],
    }
    body = encode_multipart(BOUNDARY, fields)

    # The first file arrives whole, the second in part, the third not at all.
    response = api.generic(
        "POST",
        f"/api/v1/cases/{case.code}/studies/",
        body[: len(body) * 2 // 3],
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "incomplete_request"
    assert response.json()["message"].startswith("The request carried 1 of the 3 files")
    assert Instance.objects.count() == 0
