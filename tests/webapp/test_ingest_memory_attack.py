"""Malformed and hostile uploads on the in-memory upload path: budgets, cuts, leaks, races."""

# Fixtures imported from test_ingest_memory_uploads are requested by name, which ruff reads as
# a redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.core.files.uploadedfile import (
    InMemoryUploadedFile,
    SimpleUploadedFile,
    TemporaryUploadedFile,
)
from django.core.management import call_command
from django.db import connection  # noqa: F401 - read by the skipif conditions
from django.http.multipartparser import MultiPartParser
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from rest_framework.test import APIClient

from tests.shared_data import CASES_DIR, PHILIPS_STUDY_DIR, require
from tests.webapp.test_ingest_memory_uploads import (  # noqa: F401 - fixtures
    comparable,
    set_budget,
    spool,
    stored_hashes,
)
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    run_in_threads,
    test_model_dir,
    write_study,
)
from webapp.core.models import Case, Instance, Study
from webapp.ingest import services, uploads
from webapp.ingest.deid import Deidentifier
from webapp.ingest.models import Upload
from webapp.ingest.uploads import IngestUploadHandler

pytestmark = pytest.mark.usefixtures("ingest_settings")


def post_files(api: APIClient, code: str, items: list[tuple[str, bytes]]) -> Any:
    data = {
        "role": "baseline",
        "hours_after_mt": "2.5",
        "files": [SimpleUploadedFile(path.rsplit("/", 1)[-1], blob) for path, blob in items],
        "paths": [path for path, _ in items],
    }
    return api.post(f"/api/v1/cases/{code}/studies/", data, format="multipart")


def parse_body(items: list[tuple[str, bytes]], budget: int) -> tuple[list[Any], Any]:
    """Parse a multipart body of ``items`` with Django's parser and return files and handler."""
    body = encode_multipart(
        BOUNDARY, {"files": [SimpleUploadedFile(name, blob) for name, blob in items]}
    )
    meta = {"CONTENT_TYPE": MULTIPART_CONTENT, "CONTENT_LENGTH": str(len(body))}
    handler = IngestUploadHandler(None, memory_budget=budget)
    _, files = MultiPartParser(meta, io.BytesIO(body), [handler], "utf-8").parse()
    return files.getlist("files"), handler


def reset_case(case: Case) -> None:
    Study.objects.filter(case=case).delete()
    Upload.objects.filter(case=case).delete()


def upload_at_budgets(
    api: APIClient, case: Case, settings: Any, items: list[tuple[str, bytes]]
) -> tuple[dict[int, dict[str, Any]], dict[int, set[str]]]:
    """Upload ``items`` with every file spilled and with every file in memory."""
    reports = {}
    hashes = {}
    for budget in (0, 2**30):
        set_budget(settings, budget)
        response = post_files(api, case.code, items)
        assert response.status_code == 201, response.content
        reports[budget] = comparable(response.json())
        hashes[budget] = stored_hashes(case)
        reset_case(case)
    return reports, hashes


def test_budget_boundary_exact_and_one_over(db: None, spool: Path) -> None:
    size = 3 * 2**20 + 17
    blob = b"\x01" * size

    files, handler = parse_body([("a.dcm", blob)], size)
    assert isinstance(files[0], InMemoryUploadedFile)
    assert files[0].read() == blob
    assert handler.memory_used == size

    files, handler = parse_body([("a.dcm", blob)], size - 1)
    assert isinstance(files[0], TemporaryUploadedFile)
    assert files[0].read() == blob
    assert handler.memory_used == 0
    assert handler.spilled_files == 1


def test_many_tiny_files_stay_within_budget(db: None, spool: Path) -> None:
    items = [(f"f{index:03d}.dcm", bytes([index]) * 10) for index in range(60)]

    files, handler = parse_body(items, 255)

    kinds = [isinstance(item, InMemoryUploadedFile) for item in files]
    assert kinds == [True] * 25 + [False] * 35
    assert handler.memory_used == 250
    assert [item.read() for item in files] == [blob for _, blob in items]


def test_zero_byte_files_with_zero_budget(db: None, spool: Path) -> None:
    files, handler = parse_body([("empty.dcm", b""), ("one.dcm", b"x")], 0)

    # A file with no bytes never reaches receive_data_chunk, so it stays in memory.
    assert isinstance(files[0], InMemoryUploadedFile)
    assert files[0].size == 0
    assert isinstance(files[1], TemporaryUploadedFile)
    assert handler.memory_used == 0


def test_invalid_base64_leaves_no_temp_file(
    api: APIClient, case: Case, settings: Any, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_budget(settings, 0)
    handlers: list[IngestUploadHandler] = []

    class RecordedHandler(IngestUploadHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Keeps the handler alive, so garbage collection cannot remove its temporary file.
            handlers.append(self)

    monkeypatch.setattr(uploads, "IngestUploadHandler", RecordedHandler)
    # The first part's body decodes, then 3 bytes are left over: invalid base64.
    body = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="role"\r\n\r\nbaseline\r\n'
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="files"; filename="a.dcm"\r\n'
        "Content-Type: application/dicom\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "QUJDRA==QUJ\r\n"
        f"--{BOUNDARY}--\r\n"
    ).encode()

    response = api.generic(
        "POST",
        f"/api/v1/cases/{case.code}/studies/",
        body,  # type: ignore[arg-type]  # the stubs say str; bytes work
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )

    assert response.status_code == 400
    assert "base64" in response.json()["message"]
    assert len(handlers) == 1
    assert handlers[0].spilled_files == 1
    assert list(spool.iterdir()) == []
    assert Instance.objects.count() == 0


def test_pixel_data_cut_same_in_memory_and_spilled(
    api: APIClient, case: Case, settings: Any, spool: Path, tmp_path: Path
) -> None:
    study = [path.read_bytes() for path in write_study(tmp_path / "in", 5)]
    items = [(f"s/IM{index}.dcm", blob) for index, blob in enumerate(study[:3])]
    items.append(("s/cut_pixels.dcm", study[3][:-1000]))
    items.append(("s/cut_one_byte.dcm", study[4][:-1]))

    reports, hashes = upload_at_budgets(api, case, settings, items)

    assert reports[2**30] == reports[0]
    assert hashes[2**30] == hashes[0]
    reasons = {item["path"]: item["reason"] for item in reports[0]["skipped"]}
    assert reasons["s/cut_pixels.dcm"] == "truncated"
    assert reasons["s/cut_one_byte.dcm"] == "truncated"
    assert reports[0]["instances_stored"] == 3


def test_same_name_in_two_folders(
    api: APIClient, case: Case, settings: Any, spool: Path, tmp_path: Path
) -> None:
    first = write_study(tmp_path / "a", 2)
    second = write_study(tmp_path / "b", 2, series_uid="1.2.826.0.1.3680043.2.1125.77.1")
    items = [(f"a/{path.name}", path.read_bytes()) for path in first]
    items += [(f"b/{path.name}", path.read_bytes()) for path in second]
    assert {path.name for path in first} == {path.name for path in second}

    reports, hashes = upload_at_budgets(api, case, settings, items)

    assert reports[2**30] == reports[0]
    assert reports[0]["instances_stored"] == 4
    assert reports[0]["skipped"] == []
    assert len(hashes[0]) == 4
    assert hashes[2**30] == hashes[0]


SHARED_FOLDERS = (
    sorted(path.name for path in CASES_DIR.iterdir() if path.is_dir()) if CASES_DIR.is_dir() else []
)


@pytest.mark.parametrize("name", [*SHARED_FOLDERS, "head-ct-philips"])
def test_shared_folder_same_at_both_budgets(
    api: APIClient, case: Case, settings: Any, spool: Path, name: str
) -> None:
    folder = require(PHILIPS_STUDY_DIR if name == "head-ct-philips" else CASES_DIR / name)
    items = [
        (str(path.relative_to(folder)), path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]

    reports, hashes = upload_at_budgets(api, case, settings, items)

    assert reports[2**30] == reports[0]
    assert hashes[2**30] == hashes[0]
    assert list(spool.iterdir()) == []


NAME = "Zebulonski^Quirinus"
LATIN_NAME = "Zebulönski^Quirinus"
PATIENT_ID = "ZQ-99123477"


def identified_study(folder: Path) -> list[tuple[str, bytes]]:
    items = []
    for index, path in enumerate(write_study(folder, 3)):
        ds = pydicom.dcmread(path)
        if index == 2:
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.PatientName = LATIN_NAME
        else:
            ds.PatientName = NAME
        ds.PatientID = PATIENT_ID
        ds.OtherPatientNames = NAME
        buffer = io.BytesIO()
        ds.save_as(buffer)
        items.append((f"study/{path.name}", buffer.getvalue()))
    return items


def test_original_name_not_kept_anywhere(
    api: APIClient,
    case: Case,
    settings: Any,
    spool: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_budget(settings, 2**30)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    items = identified_study(tmp_path / "in")
    identifiers = [
        NAME.encode(),
        LATIN_NAME.encode("latin-1"),
        LATIN_NAME.encode(),
        b"Zebulonski",
        b"Zebul\xf6nski",
        PATIENT_ID.encode(),
    ]
    caplog.set_level(logging.DEBUG)

    response = post_files(api, case.code, items)

    assert response.status_code == 201, response.content
    assert response.json()["instances_stored"] == 3
    for identifier in identifiers:
        assert identifier not in response.content
    stored = [path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()]
    assert len(stored) >= 3
    for path in stored:
        blob = path.read_bytes()
        for identifier in identifiers:
            assert identifier not in blob, path
    assert list(work.iterdir()) == []
    assert list(spool.iterdir()) == []
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    for text in (NAME, LATIN_NAME, "Zebulonski", PATIENT_ID):
        assert text not in dump.getvalue()
        assert text not in caplog.text


def test_pool_threads_use_own_buffers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two requests de-identify in process pools at once, as threads of one server process do.
    monkeypatch.setattr(services, "DEID_PROCESSES", 2)
    monkeypatch.setattr(services.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(services, "DEID_POOL_MIN_FILES", 2)
    both_set = threading.Barrier(2, timeout=30)
    real_pool = services.ProcessPoolExecutor

    def pool_after_both(*args: Any, **kwargs: Any) -> Any:
        # Both requests have set up their buffers before either pool forks.
        both_set.wait()
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(services, "ProcessPoolExecutor", pool_after_both)
    datas = [path.read_bytes() for path in write_study(tmp_path / "in", 4)]
    buffers_by_request = {
        "a": {str(tmp_path / "a" / f"{i}.dcm"): datas[i] for i in (0, 1)},
        "b": {str(tmp_path / "b" / f"{i}.dcm"): datas[i] for i in (2, 3)},
    }
    results: dict[str, list[Any]] = {}

    def run(key: str) -> None:
        buffers = buffers_by_request[key]
        results[key] = services._store_files(
            list(buffers), "a" * 64, "C-0001", True, False, buffers
        )

    threads = [threading.Thread(target=run, args=(key,)) for key in buffers_by_request]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    for key, buffers in buffers_by_request.items():
        assert [result.path for result in results[key]] == list(buffers)
        for result in results[key]:
            assert isinstance(result, services._StoredFile), result
            expected = Deidentifier("a" * 64, "C-0001").deidentify_bytes(buffers[result.path])
            assert result.sha256 == hashlib.sha256(expected.data).hexdigest()


def test_small_file_after_spill_stays_in_memory(db: None, spool: Path) -> None:
    items = [("a.dcm", b"a" * 100), ("b.dcm", b"b" * 200), ("c.dcm", b"c" * 50)]

    files, handler = parse_body(items, 250)

    # The file that crosses the budget spills, and a later file that fits is kept in memory.
    assert isinstance(files[0], InMemoryUploadedFile)
    assert isinstance(files[1], TemporaryUploadedFile)
    assert isinstance(files[2], InMemoryUploadedFile)
    assert handler.memory_used == 150
    assert [item.read() for item in files] == [blob for _, blob in items]


def encoded(ds: pydicom.Dataset, syntax: UID) -> bytes:
    """Return ``ds`` written in the transfer syntax ``syntax``."""
    ds = ds.copy()
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_odd_encodings_same_at_both_budgets(
    api: APIClient, case: Case, settings: Any, spool: Path, tmp_path: Path
) -> None:
    datasets = [pydicom.dcmread(path) for path in write_study(tmp_path / "in", 5)]
    items = [
        ("s/implicit.dcm", encoded(datasets[0], ImplicitVRLittleEndian)),
        ("s/big.dcm", encoded(datasets[1], ExplicitVRBigEndian)),
        ("s/deflated.dcm", encoded(datasets[2], DeflatedExplicitVRLittleEndian)),
    ]
    # A header longer than the first read of the native parser (16 KiB).
    long_header = datasets[3].copy()
    long_header.private_block(0x0009, "CEHT ATTACK", create=True).add_new(0x10, "UT", "x" * 40_000)
    items.append(
        ("s/long_header.dcm", encoded(long_header, datasets[3].file_meta.TransferSyntaxUID))
    )
    # A name in a character set other than the default repertoire.
    latin = datasets[4].copy()
    latin.SpecificCharacterSet = "ISO_IR 100"
    latin.PatientName = LATIN_NAME
    latin.StudyDescription = "Schädel nativ"
    items.append(("s/latin.dcm", encoded(latin, datasets[4].file_meta.TransferSyntaxUID)))

    reports, hashes = upload_at_budgets(api, case, settings, items)

    assert reports[2**30] == reports[0]
    assert hashes[2**30] == hashes[0]
    assert reports[0]["instances_stored"] == 5, reports[0]["skipped"]


def test_without_deidentification_same_at_both_budgets(
    api: APIClient, case: Case, settings: Any, spool: Path, tmp_path: Path
) -> None:
    settings.INGEST = {**settings.INGEST, "DEIDENTIFY": False}
    study = [path.read_bytes() for path in write_study(tmp_path / "in", 4)]
    items = [(f"s/IM{index}.dcm", blob) for index, blob in enumerate(study)]
    items += [("s/copy.dcm", study[0]), ("empty.dcm", b""), ("notes.txt", b"text")]

    reports, hashes = upload_at_budgets(api, case, settings, items)

    assert reports[2**30] == reports[0]
    assert hashes[0] == {hashlib.sha256(blob).hexdigest() for blob in study}
    assert hashes[2**30] == hashes[0]


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_uploads_in_memory(
    coordinator: Any, settings: Any, spool: Path, tmp_path: Path
) -> None:
    set_budget(settings, 2**30)
    case = Case.objects.create(code="C-0003")
    items = [(f"s/{path.name}", path.read_bytes()) for path in write_study(tmp_path / "in", 6)]

    def upload() -> Any:
        client = APIClient()
        client.force_authenticate(coordinator)
        return post_files(client, case.code, items)

    responses, errors = run_in_threads(upload)

    assert errors == []
    assert [response.status_code for response in responses] == [201, 201, 201]
    for response in responses:
        report = response.json()
        assert report["instances_stored"] + report["instances_already_stored"] == 6, report
        assert report["skipped"] == []
    assert Instance.objects.filter(series__study__case=case).count() == 6
    assert Study.objects.filter(case=case).count() == 1
    assert list(spool.iterdir()) == []
