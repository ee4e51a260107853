"""Upload through the API: files, folders and zips; bad input; duplicates; batches; STOW-RS."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection  # noqa: F401 - read by the skipif conditions
from rest_framework.test import APIClient

from tests.shared_data import CASES_DIR, PHILIPS_STUDY_DIR, require
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    as_uploads,
    ingest_settings,
    named_files,
    run_in_threads,
    test_model_dir,
    write_study,
    zip_bytes,
)
from webapp.core.models import Case, Instance, Series, Study
from webapp.ingest.services import ingest_files
from webapp.jobs.models import InferenceJob

pytestmark = pytest.mark.usefixtures("ingest_settings")


def post_files(api: APIClient, code: str, files: list[Any], **fields: Any) -> Any:
    data = {"role": "baseline", "hours_after_mt": "2.5", **fields, "files": files}
    return api.post(f"/api/v1/cases/{code}/studies/", data, format="multipart")


def reasons_by_name(report: dict[str, Any]) -> dict[str, str]:
    return {Path(item["path"]).name: item["reason"] for item in report["skipped"]}


def test_loose_files_are_stored_once(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in")

    response = post_files(api, case.code, as_uploads(paths))

    assert response.status_code == 201, response.content
    report = response.json()
    assert report["completed"] is True
    assert report["files_received"] == 12
    assert report["instances_stored"] == 12
    assert report["skipped"] == []
    study = Study.objects.get(case=case)
    assert study.role == "baseline"
    assert float(study.hours_after_mt) == 2.5
    assert study.out_of_window is False
    chosen = Series.objects.get(study=study, is_chosen=True)
    assert chosen.image_count == 12
    assert chosen.choice_reason.startswith("chosen: axial CT")
    assert report["studies"][0]["chosen_series_instance_uid"] == chosen.series_instance_uid
    instance = Instance.objects.order_by("slice_position_mm").first()
    assert instance is not None
    stored = default_storage.open(instance.file.name).read()
    assert hashlib.sha256(stored).hexdigest() == instance.sha256
    assert instance.file.name == Instance.storage_name_for(instance.sha256)
    assert instance.slice_position_mm == 0.0
    assert Instance.objects.count() == 12


def test_upload_queues_one_inference_job(
    api: APIClient, case: Case, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    paths = write_study(tmp_path / "in")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post_files(api, case.code, as_uploads(paths))

    job = InferenceJob.objects.get()
    assert response.json()["jobs"] == [
        {
            "study_instance_uid": job.study.study_instance_uid,
            "job_id": job.pk,
            "status": "queued",
            "outcome": "queued",
            "message": "analysis queued",
        }
    ]
    assert job.status == "queued"
    assert len(callbacks) == 1
    assert job.task_result_id != ""


def test_folder_upload_keeps_relative_paths(api: APIClient, case: Case, tmp_path: Path) -> None:
    root = tmp_path / "folder"
    paths = write_study(root / "PATIENT" / "SERIES2")
    copy = root / "PATIENT" / "SERIES2" / "IM0001 (1).dcm"
    copy.write_bytes(paths[0].read_bytes())
    (root / "notes.txt").write_text("scanner export log")
    files = [*paths, copy, root / "notes.txt"]

    response = post_files(
        api,
        case.code,
        as_uploads(files),
        paths=[path.relative_to(root).as_posix() for path in files],
    )

    report = response.json()
    assert response.status_code == 201
    assert report["instances_stored"] == 12
    skipped = {item["path"]: item["reason"] for item in report["skipped"]}
    assert skipped["PATIENT/SERIES2/IM0001 (1).dcm"] == "duplicate"
    assert skipped["notes.txt"] == "not_dicom"


def test_zip_upload_is_extracted(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in")
    archive = zip_bytes({f"export/{path.name}": path.read_bytes() for path in paths})

    response = post_files(api, case.code, [SimpleUploadedFile("study.zip", archive)])

    assert response.status_code == 201, response.content
    assert response.json()["instances_stored"] == 12
    assert Series.objects.get(is_chosen=True).image_count == 12


def test_same_study_twice_adds_nothing(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in")
    post_files(api, case.code, as_uploads(paths))
    files_before = sorted(Instance.objects.values_list("sha256", flat=True))

    second = post_files(api, case.code, as_uploads(paths)).json()

    assert second["instances_stored"] == 0
    assert second["instances_already_stored"] == 12
    assert Study.objects.count() == 1
    assert Series.objects.count() == 1
    assert sorted(Instance.objects.values_list("sha256", flat=True)) == files_before


def test_c17_junk_is_skipped_with_reasons(api: APIClient, case: Case) -> None:
    archive = require(CASES_DIR / "C17" / "upload.zip")

    response = post_files(api, case.code, [SimpleUploadedFile("upload.zip", archive.read_bytes())])

    report = response.json()
    assert response.status_code == 201, report
    assert report["instances_stored"] == 6
    reasons = reasons_by_name(report)
    assert reasons["DICOMDIR"] == "dicomdir"
    assert reasons["IM_TRUNC"] == "truncated"
    assert reasons["empty.dcm"] == "empty"
    assert reasons["annotations.xml"] == "not_dicom"
    assert reasons["README.TXT"] == "not_dicom"
    assert "upload.zip/export/PT000000/ST000000/SE000000/IM_TRUNC" in {
        item["path"] for item in report["skipped"]
    }
    assert Series.objects.get(is_chosen=True).image_count == 6


def test_c17_folder_matches_zip(api: APIClient, case: Case) -> None:
    root = require(CASES_DIR / "C17" / "tree")
    files = sorted(path for path in root.rglob("*") if path.is_file())

    response = post_files(
        api,
        case.code,
        as_uploads(files, root),
        paths=[path.relative_to(root).as_posix() for path in files],
    )

    report = response.json()
    assert report["instances_stored"] == 6
    assert reasons_by_name(report)["IM_TRUNC"] == "truncated"
    assert len(report["skipped"]) == 10


@pytest.mark.parametrize(
    ("entries", "limits", "code", "fragment"),
    [
        ({"../evil.dcm": b"x"}, {}, "zip_path_traversal", "entry '../evil.dcm'"),
        ({"/etc/evil.dcm": b"x"}, {}, "zip_path_traversal", "absolute path or '..'"),
        (
            {f"f{i}.dcm": b"x" for i in range(4)},
            {"ZIP_MAX_ENTRIES": 3},
            "zip_too_many_entries",
            "4 entries, more than the limit of 3",
        ),
        (
            {"big.dcm": b"\0" * 3000},
            {"ZIP_MAX_TOTAL_BYTES": 2000},
            "zip_too_large",
            "limit of 2000 bytes",
        ),
        (
            {"bomb.dcm": b"\0" * (8 << 20)},
            {},
            "zip_ratio_exceeded",
            "compression ratio above the limit of 200",
        ),
    ],
)
def test_unsafe_zip_is_rejected(
    api: APIClient,
    case: Case,
    settings: Any,
    entries: dict[str, bytes],
    limits: dict[str, int],
    code: str,
    fragment: str,
) -> None:
    settings.INGEST = {**settings.INGEST, **limits}

    response = post_files(api, case.code, [SimpleUploadedFile("bad.zip", zip_bytes(entries))])

    body = response.json()
    assert response.status_code == 400
    assert body["code"] == code
    assert body["message"].startswith("bad.zip: ")
    assert fragment in body["message"]
    assert Instance.objects.count() == 0


def test_unreadable_zip_is_skipped_as_broken_archive(api: APIClient, case: Case) -> None:
    damaged = zip_bytes({"a.dcm": b"x" * 100})[:40]

    response = post_files(api, case.code, [SimpleUploadedFile("damaged.zip", damaged)])

    # One unreadable archive is one bad file: it is listed and the request still succeeds.
    assert response.status_code == 201
    report = response.json()
    assert report["skipped"][0]["path"] == "damaged.zip"
    assert report["skipped"][0]["reason"] == "broken_archive"
    assert report["nothing_stored"] is True


def test_unsafe_file_path_is_skipped(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in")
    names = [path.name for path in paths]
    names[0] = "../../outside.dcm"

    report = post_files(api, case.code, as_uploads(paths), paths=names).json()

    assert report["instances_stored"] == 11
    assert report["skipped"][0]["path"] == "../../outside.dcm"
    assert report["skipped"][0]["reason"] == "unsafe_path"


def test_other_modality_is_skipped(api: APIClient, case: Case, tmp_path: Path) -> None:
    ct = write_study(tmp_path / "ct")
    mr = write_study(tmp_path / "mr", 4, modality="MR", series_number=7, study_uid=None)

    files = [*ct, *mr]
    report = post_files(
        api,
        case.code,
        as_uploads(files),
        paths=[path.relative_to(tmp_path).as_posix() for path in files],
    ).json()

    reasons = {item["path"]: item["reason"] for item in report["skipped"]}
    assert report["instances_stored"] == 12
    assert reasons["mr/IM0001.dcm"] == "other_modality"
    assert len(reasons) == 4


def test_follow_up_without_baseline_is_flagged(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in")

    report = post_files(
        api, case.code, as_uploads(paths), role="follow_up", hours_after_mt="80"
    ).json()

    codes = {warning["code"] for warning in report["warnings"]}
    assert "follow_up_without_baseline" in codes
    assert "out_of_window" in codes
    assert Study.objects.get().out_of_window is True


def test_gap_in_series_is_a_warning(api: APIClient, case: Case, tmp_path: Path) -> None:
    positions = [0.0, 2.0, 4.0, 6.0, 10.0, 12.0, 14.0]
    paths = write_study(tmp_path / "in", 7, positions_mm=positions)

    report = post_files(api, case.code, as_uploads(paths)).json()

    gap_warnings = [warning for warning in report["warnings"] if warning["code"] == "gap"]
    assert len(gap_warnings) == 1
    assert "6" in gap_warnings[0]["message"]


def test_reader_cannot_upload(reader: Any, case: Case, tmp_path: Path) -> None:
    client = APIClient()
    client.force_authenticate(reader)

    response = post_files(client, case.code, as_uploads(write_study(tmp_path / "in", 3)))

    assert response.status_code == 403
    assert Instance.objects.count() == 0


def test_invalid_role_and_hours_are_rejected(api: APIClient, case: Case, tmp_path: Path) -> None:
    files = write_study(tmp_path / "in", 3)

    bad_role = post_files(api, case.code, as_uploads(files), role="scout")
    bad_hours = post_files(api, case.code, as_uploads(files), hours_after_mt="soon")

    assert bad_role.status_code == 400
    assert bad_role.json()["code"] == "invalid_role"
    assert bad_hours.status_code == 400
    assert bad_hours.json()["code"] == "invalid_hours"
    assert "'soon' is not a number" in bad_hours.json()["message"]
    # The API's one error body: a code for machines and a message for people.
    assert set(bad_role.json()) == {"code", "message"}


def test_batches_share_one_report(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in")
    upload_id = "7d0c4a4e-9c55-4b8e-8d0e-0a5c3e1f2b6d"
    (tmp_path / "junk.txt").write_text("not an image")

    first = post_files(api, case.code, as_uploads(paths[:6]), upload_id=upload_id, complete="false")
    second = post_files(
        api,
        case.code,
        as_uploads([*paths[6:], tmp_path / "junk.txt"]),
        upload_id=upload_id,
        complete="false",
    )
    done = api.post(f"/api/v1/uploads/{upload_id}/complete/")

    assert first.json()["completed"] is False
    assert second.json()["instances_stored"] == 6
    report = done.json()
    assert done.status_code == 200
    assert report["completed"] is True
    assert report["files_received"] == 13
    assert report["instances_stored"] == 12
    assert [item["reason"] for item in report["skipped"]] == ["not_dicom"]
    assert report["studies"][0]["series"][0]["image_count"] == 12
    assert Series.objects.get(is_chosen=True).image_count == 12
    assert api.get(f"/api/v1/uploads/{upload_id}/").json() == report


def test_stow_rs_stores_instances(api: APIClient, case: Case, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in", 4)
    boundary = "ceht-boundary-42"
    body = b""
    for path in paths:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += path.read_bytes() + b"\r\n"
    body += f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n".encode()

    response = api.generic(
        "POST",
        f"/dicomweb/studies?case={case.code}&hours_after_mt=1",
        body,
        content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )

    # The text/plain part failed, so the PS3.18 status is 202; see test_ingest_stow.py.
    body = response.json()
    assert response.status_code == 202, body
    assert len(body["00081199"]["Value"]) == 4
    assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert Study.objects.get().case == case


def test_stow_rs_without_case_is_rejected(api: APIClient, case: Case) -> None:
    response = api.generic(
        "POST", "/dicomweb/studies", b"--b--\r\n", content_type="multipart/related; boundary=b"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "case_required"


def test_philips_study_chooses_28_slice_series(api: APIClient, case: Case) -> None:
    root = require(PHILIPS_STUDY_DIR)
    files = sorted(path for path in root.rglob("*") if path.is_file())

    report = post_files(
        api,
        case.code,
        as_uploads(files, root),
        paths=[path.relative_to(root).as_posix() for path in files],
    ).json()

    chosen = [s for s in report["studies"][0]["series"] if s["chosen"]]
    assert len(chosen) == 1
    assert chosen[0]["image_count"] == 28
    assert Series.objects.get(is_chosen=True).image_count == 28


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_store_each_instance_once(coordinator: Any, tmp_path: Path) -> None:
    case = Case.objects.create(code="C-0002")
    paths = write_study(tmp_path / "in")

    def upload() -> Any:
        return ingest_files(case, "baseline", 2, named_files(paths), coordinator)

    reports, errors = run_in_threads(upload)

    assert errors == []
    assert len(reports) == 3
    assert Instance.objects.count() == 12
    assert Study.objects.count() == 1
    assert Series.objects.count() == 1
    assert sum(report.instances_stored for report in reports) >= 12
    assert Series.objects.get(is_chosen=True).image_count == 12
    assert InferenceJob.objects.count() == 1
