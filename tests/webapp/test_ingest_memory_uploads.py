"""Uploads held in memory up to a per-request budget: the same report and bytes as from disk."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.core.files.uploadedfile import (
    InMemoryUploadedFile,
    SimpleUploadedFile,
    TemporaryUploadedFile,
)
from django.test.client import BOUNDARY, encode_multipart
from pydicom.uid import UID
from rest_framework.test import APIClient

from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    test_model_dir,
    write_study,
    zip_bytes,
)
from webapp.core.models import Case, Instance, Study
from webapp.ingest import services
from webapp.ingest.deid import Deidentifier
from webapp.ingest.models import Upload
from webapp.ingest.uploads import IngestUploadHandler

pytestmark = pytest.mark.usefixtures("ingest_settings")


@pytest.fixture
def spool(settings: Any, tmp_path: Path) -> Path:
    """Folder of the temporary files that spilled uploads go to."""
    folder = tmp_path / "spool"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    return folder


def set_budget(settings: Any, budget: int) -> None:
    settings.INGEST = {**settings.INGEST, "UPLOAD_MEMORY_BYTES": budget}


def receive(handler: IngestUploadHandler, name: str, data: bytes, chunk: int = 4) -> Any:
    """Feed ``data`` to ``handler`` as Django's parser does and return the completed file."""
    handler.new_file("files", name, "application/dicom", None)
    for start in range(0, len(data), chunk):
        handler.receive_data_chunk(data[start : start + chunk], start)
    return handler.file_complete(len(data))


def test_handler_keeps_files_within_budget(db: None) -> None:
    handler = IngestUploadHandler(memory_budget=20)

    first = receive(handler, "a.dcm", b"0123456789")
    second = receive(handler, "b.dcm", b"abcdefghij")

    assert isinstance(first, InMemoryUploadedFile)
    assert isinstance(second, InMemoryUploadedFile)
    assert services._bytes_in_memory(first) == b"0123456789"
    assert second.read() == b"abcdefghij"
    assert second.name == "b.dcm"
    assert second.size == 10
    assert handler.memory_used == 20
    assert handler.spilled_files == 0


def test_handler_spills_file_that_crosses_budget(db: None, spool: Path) -> None:
    handler = IngestUploadHandler(memory_budget=15)

    first = receive(handler, "a.dcm", b"0123456789")
    # Crosses the budget after its first chunk: the chunk held so far moves to disk too.
    second = receive(handler, "b.dcm", b"abcdefghij")
    third = receive(handler, "c.dcm", b"xy")

    assert isinstance(first, InMemoryUploadedFile)
    assert isinstance(second, TemporaryUploadedFile)
    assert Path(second.temporary_file_path()).parent == spool
    assert Path(second.temporary_file_path()).read_bytes() == b"abcdefghij"
    assert second.size == 10
    # The spilled file freed its memory, so two bytes still fit next to the first file.
    assert isinstance(third, InMemoryUploadedFile)
    assert services._bytes_in_memory(third) == b"xy"
    assert handler.memory_used == 12
    assert handler.spilled_files == 1
    second.close()


def test_handler_budget_zero_spills_everything(db: None, spool: Path) -> None:
    handler = IngestUploadHandler(memory_budget=0)

    upload = receive(handler, "a.dcm", b"0123456789")

    assert isinstance(upload, TemporaryUploadedFile)
    assert upload.read() == b"0123456789"
    assert services._bytes_in_memory(upload) is None
    assert handler.memory_used == 0
    upload.close()


def test_handler_interrupted_file_is_released(db: None, spool: Path) -> None:
    handler = IngestUploadHandler(memory_budget=6)
    handler.new_file("files", "cut.dcm", "application/dicom", None)
    handler.receive_data_chunk(b"0123", 0)
    assert handler.memory_used == 4
    handler.receive_data_chunk(b"4567", 4)
    assert handler.memory_used == 0
    assert len(list(spool.iterdir())) == 1

    handler.upload_interrupted()

    assert handler.memory_used == 0
    assert list(spool.iterdir()) == []


def test_handler_budget_comes_from_settings(db: None, settings: Any) -> None:
    set_budget(settings, 1234)

    assert IngestUploadHandler().memory_budget == 1234


def test_default_budget_holds_a_large_study(db: None) -> None:
    # 200 slices of 512 x 512 at 16 bits, with headers: about 100 MiB.
    assert IngestUploadHandler().memory_budget >= 200 * 512 * 512 * 2 + 200 * 4096


def post_files(api: APIClient, code: str, files: list[Any], paths: list[str] | None = None) -> Any:
    data: dict[str, Any] = {"role": "baseline", "hours_after_mt": "2.5", "files": files}
    if paths is not None:
        data["paths"] = paths
    return api.post(f"/api/v1/cases/{code}/studies/", data, format="multipart")


def stored_hashes(case: Case) -> set[str]:
    return set(Instance.objects.filter(series__study__case=case).values_list("sha256", flat=True))


def mixed_upload(folder: Path) -> list[tuple[str, bytes]]:
    """Return (path, bytes) of an upload with every kind of file ingest skips or stores."""
    study = write_study(folder / "study", 6)
    other = write_study(folder / "other", 3, series_uid="1.2.826.0.1.3680043.2.1125.99.1")
    mr = pydicom.dcmread(write_study(folder / "mr", 1, names=["MR0001.dcm"])[0])
    mr.Modality = "MR"
    mr.SOPInstanceUID = mr.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5.6.7.8")
    mr_path = folder / "mr.dcm"
    mr.save_as(mr_path)

    first = study[0].read_bytes()
    items = [(f"series/{path.name}", path.read_bytes()) for path in study[1:]]
    items += [
        # An exact copy sent first under a longer name: the scan reads shorter names first,
        # so the copy is reported as the duplicate.
        ("series/copy of IM_first.dcm", first),
        ("series/IM_first.dcm", first),
        ("notes.txt", b"not an image"),
        ("empty.dcm", b""),
        ("cut.dcm", first[:300]),
        ("mr.dcm", mr_path.read_bytes()),
        ("../outside.dcm", first),
        (
            "more.zip",
            zip_bytes(
                {
                    **{f"inner/{path.name}": path.read_bytes() for path in other},
                    "inner/nested.zip": zip_bytes({"x.dcm": first}),
                }
            ),
        ),
        # A zip by its first bytes only, and a broken one.
        ("archive.bin", zip_bytes({"y/IM.dcm": study[1].read_bytes()})),
        ("broken.zip", b"PK\x03\x04 cut short"),
    ]

    return items


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """Return the report without values that differ between two uploads of the same files."""
    result = dict(report)
    result.pop("upload_id")
    result.pop("jobs", None)
    return result


def test_report_equal_in_memory_and_on_disk(
    api: APIClient, case: Case, settings: Any, spool: Path, tmp_path: Path
) -> None:
    items = mixed_upload(tmp_path / "in")
    total = sum(len(data) for _, data in items)
    reports = {}
    hashes = {}
    # Every file on disk; the first part in memory and the rest on disk; everything in memory.
    for budget in (0, total // 2, 2**30):
        set_budget(settings, budget)
        files = [SimpleUploadedFile(path.rsplit("/", 1)[-1], data) for path, data in items]

        response = post_files(api, case.code, files, [path for path, _ in items])

        assert response.status_code == 201, response.content
        reports[budget] = comparable(response.json())
        hashes[budget] = stored_hashes(case)
        assert list(spool.iterdir()) == []
        # The next round stores the same instances again under the case's seed.
        Study.objects.filter(case=case).delete()
        Upload.objects.filter(case=case).delete()

    on_disk = reports[0]
    assert on_disk["instances_stored"] == 6 + 3
    reasons = {item["path"]: item["reason"] for item in on_disk["skipped"]}
    assert reasons["series/copy of IM_first.dcm"] == "duplicate"
    assert reasons["notes.txt"] == "not_dicom"
    assert reasons["empty.dcm"] == "empty"
    assert reasons["cut.dcm"] == "truncated"
    assert reasons["mr.dcm"] == "other_modality"
    assert reasons["../outside.dcm"] == "unsafe_path"
    assert reasons["more.zip/inner/nested.zip"] == "nested_archive"
    assert reasons["broken.zip"] == "broken_archive"
    assert reasons["archive.bin/y/IM.dcm"] == "duplicate"
    assert reports[total // 2] == on_disk
    assert reports[2**30] == on_disk
    assert len(hashes[0]) == 9
    assert hashes[total // 2] == hashes[0]
    assert hashes[2**30] == hashes[0]


def test_in_memory_files_are_not_written_before_storage(
    api: APIClient, case: Case, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_budget(settings, 2**30)
    paths = write_study(tmp_path / "in", 4)
    archive = zip_bytes({"z/IM.dcm": write_study(tmp_path / "z", 1)[0].read_bytes()})
    placed: list[str] = []
    place_upload = services._place_upload

    def recording_place(upload: Any, target: Path) -> None:
        placed.append(target.name)
        place_upload(upload, target)

    monkeypatch.setattr(services, "_place_upload", recording_place)
    files = [SimpleUploadedFile(path.name, path.read_bytes()) for path in paths]
    files.append(SimpleUploadedFile("study.zip", archive))

    response = post_files(api, case.code, files)

    assert response.status_code == 201, response.content
    assert response.json()["instances_stored"] == 5
    # Only the zip archive is written to the working folder, because it is extracted there.
    assert placed == ["00004_study.zip"]


def test_without_deidentification_stores_uploaded_bytes(
    api: APIClient, case: Case, settings: Any, tmp_path: Path
) -> None:
    settings.INGEST = {**settings.INGEST, "DEIDENTIFY": False, "UPLOAD_MEMORY_BYTES": 2**30}
    paths = write_study(tmp_path / "in", 3)

    response = post_files(
        api, case.code, [SimpleUploadedFile(p.name, p.read_bytes()) for p in paths]
    )

    assert response.status_code == 201, response.content
    assert stored_hashes(case) == {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.mark.parametrize("budget", [0, 2**30], ids=["spilled", "in_memory"])
def test_cut_off_body_leaves_no_files(
    api: APIClient, case: Case, settings: Any, spool: Path, tmp_path: Path, budget: int
) -> None:
    set_budget(settings, budget)
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
        body[: len(body) * 2 // 3],  # type: ignore[arg-type]  # the stubs say str; bytes work
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "incomplete_request"
    assert response.json()["message"].startswith("The request carried 1 of the 3 files")
    assert Instance.objects.count() == 0
    assert list(spool.iterdir()) == []


def deidentified_digest(data: bytes) -> str:
    return hashlib.sha256(Deidentifier("a" * 64, "C-0001").deidentify_bytes(data).data).hexdigest()


def test_storer_reads_buffer_not_disk(tmp_path: Path) -> None:
    data = write_study(tmp_path / "in", 1)[0].read_bytes()
    missing = str(tmp_path / "missing.dcm")
    storer = services._FileStorer("a" * 64, "C-0001", True, False, {missing: data})

    # No file exists at this path: the bytes in the buffer are de-identified.
    stored = storer(missing)

    assert isinstance(stored, services._StoredFile)
    assert stored.sha256 == deidentified_digest(data)


def test_store_files_mixes_buffers_and_skips(tmp_path: Path) -> None:
    datas = [path.read_bytes() for path in write_study(tmp_path / "in", 7)]
    paths = [str(tmp_path / f"f{index}.dcm") for index in range(len(datas) + 1)]
    buffers = dict(zip(paths, datas, strict=False))
    buffers[paths[3]] = b"\x00" * 200
    # The last path has neither a buffer nor a file on disk.

    results = services._store_files(paths, "a" * 64, "C-0001", True, False, buffers)

    assert [result.path for result in results] == paths
    assert isinstance(results[3], services._UnreadableFile)
    assert isinstance(results[-1], services._UnreadableFile)
    assert results[-1].error_type == "FileNotFoundError"
    for index in (0, 1, 2, 4, 5, 6):
        stored = results[index]
        assert isinstance(stored, services._StoredFile)
        assert stored.sha256 == deidentified_digest(datas[index])
