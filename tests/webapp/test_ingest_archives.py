"""Zip uploads through the one zip reader: settings limits, unsafe entries, junk summaries."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.shared_data import CASES_DIR, require
from tests.webapp import test_ingest_api
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    test_model_dir,
    write_study,
    zip_bytes,
)
from webapp.core.models import Case, Instance
from webapp.ingest.models import Upload
from webapp.ingest.services import SKIPPED_LISTED, summarise_skipped

pytestmark = pytest.mark.usefixtures("ingest_settings")

# The upload API tests' request helper; the client and the case come from the conftest.
post_files = test_ingest_api.post_files


def c17_with_empty_entries(extra_empty: int) -> bytes:
    """Return the junk-laden export (6 slices) with ``extra_empty`` more empty files."""
    source = require(CASES_DIR / "C17" / "upload.zip")
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(source) as original,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for member in original.infolist():
            archive.writestr(member, original.read(member))
        for index in range(extra_empty):
            archive.writestr(f"export/junk/{index:05d}.dcm", b"")
    return buffer.getvalue()


def test_thousands_of_empty_entries_give_one_summary_line(
    api: APIClient, case: Case, caplog: Any
) -> None:
    # The export already contains one empty file (empty.dcm), so 9,997 more make 9,998.
    archive = c17_with_empty_entries(9_997)

    response = post_files(api, case.code, [SimpleUploadedFile("export.zip", archive)])

    report = response.json()
    assert response.status_code == 201, report
    assert report["instances_stored"] == 6
    empty = [item for item in report["skipped"] if item["reason"] == "empty"]
    summaries = [item for item in empty if "count" in item]
    assert len(summaries) == 1
    assert len(empty) == SKIPPED_LISTED + 1
    assert summaries[0]["count"] == 9_998 - SKIPPED_LISTED
    assert summaries[0]["detail"].startswith("9,998 empty files skipped in all")
    assert summaries[0]["path"] == "export.zip/export"
    # The other junk is still listed by name with its own reason.
    by_name = {Path(item["path"]).name: item["reason"] for item in report["skipped"]}
    assert by_name["IM_TRUNC"] == "truncated"
    assert by_name["DICOMDIR"] == "dicomdir"
    assert len(report["skipped"]) < 30
    stored = Upload.objects.get(upload_id=report["upload_id"]).report["skipped"]
    assert sum(int(item.get("count", 1)) for item in stored if item["reason"] == "empty") == 9_998


def test_folder_junk_is_summarised(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in", 4)
    junk = [SimpleUploadedFile(f"notes/{index}.txt", b"log line") for index in range(45)]
    studies = [SimpleUploadedFile(path.name, path.read_bytes()) for path in paths]

    report = post_files(api, case.code, studies + junk).json()

    assert report["instances_stored"] == 4
    not_dicom = [item for item in report["skipped"] if item["reason"] == "not_dicom"]
    assert len(not_dicom) == SKIPPED_LISTED + 1
    assert not_dicom[-1]["count"] == 45 - SKIPPED_LISTED
    assert not_dicom[-1]["detail"].startswith("45 files that are not DICOM skipped in all")


def test_summaries_of_several_batches_keep_the_totals() -> None:
    first = summarise_skipped(
        [{"path": f"a/{index}", "reason": "empty", "detail": "empty"} for index in range(30)]
    )
    second = [{"path": f"b/{index}", "reason": "empty", "detail": "empty"} for index in range(5)]
    second.append({"path": "b/x.dcm", "reason": "truncated", "detail": "cut"})

    merged = summarise_skipped(first + second)

    assert sum(int(item.get("count", 1)) for item in merged if item["reason"] == "empty") == 35
    assert merged[-1]["detail"].startswith("35 empty files skipped in all")
    assert merged[-1]["path"] == "(several folders)"
    assert {"path": "b/x.dcm", "reason": "truncated", "detail": "cut"} in merged
    few = [{"path": "a", "reason": "empty", "detail": "d"}]
    assert summarise_skipped(few) is few


def test_ratio_limit_comes_from_the_settings(api: APIClient, case: Case, settings: Any) -> None:
    bomb = zip_bytes({"zeros.bin": b"\0" * (8 << 20)})
    rejected = post_files(api, case.code, [SimpleUploadedFile("bomb.zip", bomb)])
    assert rejected.status_code == 400
    assert rejected.json()["code"] == "zip_ratio_exceeded"
    assert "(the limit is set by INGEST_ZIP_MAX_RATIO)" in rejected.json()["message"]

    settings.INGEST = {**settings.INGEST, "ZIP_MAX_RATIO": 100_000.0}
    accepted = post_files(api, case.code, [SimpleUploadedFile("bomb.zip", bomb)])

    assert accepted.status_code == 201, accepted.content
    assert [item["reason"] for item in accepted.json()["skipped"]] == ["not_dicom"]


def test_limits_apply_to_all_archives_of_a_request(
    api: APIClient, case: Case, settings: Any, tmp_path: Path
) -> None:
    paths = write_study(tmp_path / "in", 4)
    size = sum(path.stat().st_size for path in paths)
    first = zip_bytes({path.name: path.read_bytes() for path in paths[:2]})
    second = zip_bytes({path.name: path.read_bytes() for path in paths[2:]})
    settings.INGEST = {**settings.INGEST, "ZIP_MAX_TOTAL_BYTES": size - 1}

    response = post_files(
        api,
        case.code,
        [SimpleUploadedFile("one.zip", first), SimpleUploadedFile("two.zip", second)],
    )

    body = response.json()
    assert response.status_code == 400
    assert body["code"] == "zip_too_large"
    assert body["message"].startswith("two.zip: ")
    assert f"the limit of {size - 1} bytes" in body["message"]
    assert "INGEST_ZIP_MAX_TOTAL_BYTES" in body["message"]
    assert Instance.objects.count() == 0


def symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("series/link.dcm")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("archive", "code", "fragment"),
    [
        (zip_bytes({"..\\evil.dcm": b"x"}), "zip_path_traversal", "entry '..\\\\evil.dcm'"),
        (zip_bytes({"C:/evil.dcm": b"x"}), "zip_path_traversal", "absolute path or '..'"),
        (symlink_zip(), "zip_symbolic_link", "entry 'series/link.dcm' is a symbolic link"),
    ],
)
def test_unsafe_entries_reject_the_archive(
    api: APIClient, case: Case, archive: bytes, code: str, fragment: str
) -> None:
    response = post_files(api, case.code, [SimpleUploadedFile("unsafe.zip", archive)])

    body = response.json()
    assert response.status_code == 400
    assert body["code"] == code
    assert body["message"].startswith("unsafe.zip: ")
    assert fragment in body["message"]
    assert Instance.objects.count() == 0
