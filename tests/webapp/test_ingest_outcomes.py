"""What an upload reports and leaves behind when little or nothing of it can be stored.

A new case is created for the upload only as far as the upload stores something; a broken zip
is named as a broken archive; the job line states whether a job was queued; the audit event
carries the client address.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    as_uploads,
    ingest_settings,
    test_model_dir,
    write_study,
    zip_bytes,
)
from webapp.core.models import AuditEvent, Case, Instance, Study
from webapp.ingest.models import DeidentificationKey, Upload
from webapp.jobs.models import InferenceJob

pytestmark = pytest.mark.usefixtures("ingest_settings")


@pytest.fixture
def api(coordinator: Any) -> APIClient:
    client = APIClient(REMOTE_ADDR="192.0.2.17")
    client.force_authenticate(coordinator)
    return client


def post(api: APIClient, code: str, files: list[Any], **fields: Any) -> Any:
    data = {"role": "baseline", "hours_after_mt": "2.5", **fields, "files": files}
    return api.post(f"/api/v1/cases/{code}/studies/", data, format="multipart")


def text_file() -> SimpleUploadedFile:
    return SimpleUploadedFile("notes.txt", b"scanned on Monday, see the report\n")


def test_new_case_with_nothing_stored_is_removed(api: APIClient) -> None:
    response = post(api, "NEW-001", [text_file()], create_case="true")

    report = response.json()
    assert response.status_code == 201, report
    assert report["nothing_stored"] is True
    assert report["case_removed"] is True
    assert report["summary"].startswith(
        "Nothing was stored: every file was skipped (files that are not DICOM; "
        "see Skipped files below)."
    )
    assert "Case NEW-001 was not created." in report["summary"]
    assert not Case.objects.filter(code="NEW-001").exists()
    assert not Upload.objects.exists()
    assert not DeidentificationKey.objects.exists()
    event = AuditEvent.objects.get(action="upload.received")
    assert event.details["case_removed"] is True
    assert event.client_address == "192.0.2.17"


def test_batched_empty_new_case_removed(api: APIClient) -> None:
    upload_id = str(uuid.uuid4())
    for name in ("a.txt", "b.txt"):
        batch = post(
            api,
            "NEW-002",
            [SimpleUploadedFile(name, b"not an image")],
            create_case="true",
            complete="false",
            upload_id=upload_id,
        )
        assert batch.status_code == 201
        # Until the upload completes, later batches may still bring images.
        assert Case.objects.filter(code="NEW-002").exists()

    response = api.post(f"/api/v1/uploads/{upload_id}/complete/")

    report = response.json()
    assert response.status_code == 200
    assert report["case_removed"] is True
    assert report["files_received"] == 2
    assert not Case.objects.filter(code="NEW-002").exists()


def test_new_case_kept_when_later_batch_stores(api: APIClient, tmp_path: Path) -> None:
    upload_id = str(uuid.uuid4())
    paths = write_study(tmp_path / "in", 4)
    post(api, "NEW-003", [text_file()], create_case="true", complete="false", upload_id=upload_id)
    post(
        api,
        "NEW-003",
        as_uploads(paths),
        create_case="true",
        complete="false",
        upload_id=upload_id,
    )

    report = api.post(f"/api/v1/uploads/{upload_id}/complete/").json()

    assert report["case_removed"] is False
    assert report["nothing_stored"] is False
    assert report["instances_stored"] == 4
    assert Case.objects.get(code="NEW-003").studies.count() == 1
    assert Upload.objects.get().created_case is True


def test_existing_case_is_never_removed(api: APIClient) -> None:
    case = Case.objects.create(code="OLD-001")

    report = post(api, case.code, [text_file()], create_case="true").json()

    assert report["nothing_stored"] is True
    assert report["case_removed"] is False
    assert "was not created" not in report["summary"]
    assert Case.objects.filter(code="OLD-001").exists()
    assert Upload.objects.get().case == case


def test_fake_zip_is_broken_archive(api: APIClient, tmp_path: Path) -> None:
    case = Case.objects.create(code="C-0201")
    paths = write_study(tmp_path / "in", 4)
    fake = SimpleUploadedFile("study.zip", b"this is a text file renamed to .zip")

    report = post(api, case.code, [fake, *as_uploads(paths)]).json()

    skipped = {item["path"]: item for item in report["skipped"]}
    assert skipped["study.zip"]["reason"] == "broken_archive"
    assert skipped["study.zip"]["detail"].startswith(
        "this .zip could not be opened as a zip archive (no zip signature"
    )
    assert report["instances_stored"] == 4
    assert Instance.objects.count() == 4


def test_truncated_zip_is_broken_archive(api: APIClient, tmp_path: Path) -> None:
    case = Case.objects.create(code="C-0202")
    paths = write_study(tmp_path / "in", 4)
    archive = zip_bytes({path.name: path.read_bytes() for path in paths})
    # Cut in the middle: the local headers are there, the central directory is not. The name
    # does not say zip, so the first bytes must.
    truncated = SimpleUploadedFile("export.bin", archive[: len(archive) // 2])

    report = post(api, case.code, [truncated, *as_uploads(paths[:2])]).json()

    skipped = {item["path"]: item for item in report["skipped"]}
    assert skipped["export.bin"]["reason"] == "broken_archive"
    assert (
        "could not be opened as a zip archive (File is not a zip file)"
        in (skipped["export.bin"]["detail"])
    )
    assert report["instances_stored"] == 2


def test_files_inside_archives_are_counted(api: APIClient, tmp_path: Path) -> None:
    case = Case.objects.create(code="C-0203")
    paths = write_study(tmp_path / "in", 5)
    archive = zip_bytes({f"DICOM/{path.name}": path.read_bytes() for path in paths})

    report = post(api, case.code, [SimpleUploadedFile("study.zip", archive)]).json()

    assert report["files_received"] == 1
    assert report["files_examined"] == 5
    assert report["summary"] == "5 image(s) stored, 0 already stored, of 5 file(s)."


def test_reupload_of_analysed_study_reports_no_new_job(api: APIClient, tmp_path: Path) -> None:
    case = Case.objects.create(code="C-0204")
    paths = write_study(tmp_path / "in", 4)
    first = post(api, case.code, as_uploads(paths)).json()
    assert [job["outcome"] for job in first["jobs"]] == ["queued"]
    InferenceJob.objects.update(status=InferenceJob.Status.SUCCEEDED)

    second = post(api, case.code, as_uploads(paths)).json()

    assert second["instances_already_stored"] == 4
    assert [job["outcome"] for job in second["jobs"]] == ["already_analysed"]
    assert second["jobs"][0]["message"] == "already analysed; no new job"
    assert InferenceJob.objects.get().status == InferenceJob.Status.SUCCEEDED


def test_role_kept_message_says_what_to_do(api: APIClient, tmp_path: Path) -> None:
    case = Case.objects.create(code="C-0205")
    paths = write_study(tmp_path / "in", 4)
    post(api, case.code, as_uploads(paths))

    report = post(api, case.code, as_uploads(paths), role="follow_up").json()

    kept = [w["message"] for w in report["warnings"] if w["code"] == "study_role_kept"]
    assert len(kept) == 1
    assert "this upload as follow_up did not change that" in kept[0]
    assert "change the role on the case page (Change role)" in kept[0]


def test_coordinator_changes_study_role_on_case_page(client: Any, coordinator: Any) -> None:
    case = Case.objects.create(code="C-0207")
    # 30 h is outside the baseline window (at most 6 h) and inside the follow-up window.
    study = Study.objects.create(
        case=case, role="baseline", study_instance_uid="2.25.1", hours_after_mt=30
    )
    assert study.out_of_window is True
    client.force_login(coordinator)
    page = client.get(f"/cases/{case.code}/").content.decode()
    assert f'action="/cases/{case.code}/studies/{study.pk}/role/"' in page

    response = client.post(
        f"/cases/{case.code}/studies/{study.pk}/role/",
        {"role": "follow_up"},
        REMOTE_ADDR="192.0.2.30",
        follow=True,
    )

    study.refresh_from_db()
    assert study.role == "follow_up"
    assert study.out_of_window is False
    assert "The study is now Follow-up CT (within the expected window)." in (
        response.content.decode()
    )
    event = AuditEvent.objects.get(action="case.changed")
    assert event.details == {
        "study_id": study.pk,
        "field": "study.role",
        "old": "baseline",
        "new": "follow_up",
        "out_of_window": False,
    }
    assert event.client_address == "192.0.2.30"


def test_study_role_change_refuses_bad_role_and_readers(
    client: Any, coordinator: Any, reader: Any
) -> None:
    case = Case.objects.create(code="C-0208")
    study = Study.objects.create(case=case, role="baseline", study_instance_uid="2.25.2")
    url = f"/cases/{case.code}/studies/{study.pk}/role/"
    client.force_login(reader)
    assert client.post(url, {"role": "follow_up"}).status_code == 403
    assert "studies/{study.pk}/role/" not in client.get(f"/cases/{case.code}/").content.decode()

    client.force_login(coordinator)
    response = client.post(url, {"role": "final"}, follow=True)

    study.refresh_from_db()
    assert study.role == "baseline"
    assert "Study role &#x27;final&#x27; is invalid" in response.content.decode()
    assert not AuditEvent.objects.filter(action="case.changed").exists()
    # The study must belong to the case in the URL.
    other = Case.objects.create(code="C-0209")
    assert client.post(f"/cases/{other.code}/studies/{study.pk}/role/").status_code == 404


def test_completion_audit_has_client_address(api: APIClient, tmp_path: Path) -> None:
    case = Case.objects.create(code="C-0206")
    paths = write_study(tmp_path / "in", 3)
    upload_id = str(uuid.uuid4())
    post(api, case.code, as_uploads(paths), complete="false", upload_id=upload_id)

    api.post(f"/api/v1/uploads/{upload_id}/complete/")

    event = AuditEvent.objects.get(action="upload.received")
    assert event.client_address == "192.0.2.17"
    assert event.details["case_removed"] is False


def test_nothing_stored_summary_names_reasons_in_words() -> None:
    from webapp.ingest.services import IngestReport

    report = IngestReport(upload_id="u", case="NEW-002", role="baseline")
    report.skipped = [
        {"path": "a.txt", "reason": "not_dicom", "detail": ""},
        {"path": "b.dcm", "reason": "truncated", "detail": ""},
        {"path": "c.zip", "reason": "broken_archive", "detail": ""},
        {"path": "d.dcm", "reason": "some_new_reason", "detail": ""},
    ]

    assert report.summary.startswith(
        "Nothing was stored: every file was skipped (files skipped as some new reason, "
        "files that are not DICOM, truncated files, unreadable zip archives; "
        "see Skipped files below)."
    )
