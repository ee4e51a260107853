"""The identity mapping site setting: off stores nothing original; on, only stewards read it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core.files.storage import default_storage
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from tests.webapp.test_ingest_deid import PATIENT_ID, PATIENT_NAME, add_identifiers
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    as_uploads,
    ingest_settings,
    test_model_dir,
    write_study,
)
from webapp.core.models import AuditEvent, Case, Instance
from webapp.ingest.identity import ACTION_READ, ACTION_READ_DENIED, IDENTITY_STEWARD
from webapp.ingest.models import IdentityMapping

pytestmark = pytest.mark.usefixtures("ingest_settings")

SECRETS = ("QUIXOTE", "80417735")


@pytest.fixture
def keep_mapping(settings: Any) -> None:
    settings.INGEST = {**settings.INGEST, "KEEP_IDENTITY_MAPPING": True}


@pytest.fixture
def identified(tmp_path: Path) -> list[Path]:
    """Six axial slices of one study with a known patient name, id and other identifiers."""
    study_uid = "1.2.826.0.1.3680043.8.498.80417736"
    paths = write_study(tmp_path / "axial", 6, study_uid=study_uid)
    for path in paths:
        add_identifiers(path, study_uid)
    return paths


@pytest.fixture
def steward(db: None) -> Any:
    from django.contrib.auth.models import User

    user = User.objects.create_user("steward_hal", password="not-used-123")
    user.groups.add(Group.objects.get(name=IDENTITY_STEWARD))
    return user


def upload(coordinator: Any, code: str, files: list[Path]) -> Any:
    client = APIClient()
    client.force_authenticate(coordinator)
    response = client.post(
        f"/api/v1/cases/{code}/studies/",
        {"role": "baseline", "hours_after_mt": "3", "files": as_uploads(files)},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return response


def read_mapping(user: Any, code: str) -> Any:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client.get(f"/api/v1/cases/{code}/identity-mapping/")


def text_outside_mapping_table() -> str:
    chunks: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            if table == IdentityMapping._meta.db_table:
                continue
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from introspection
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_off_by_default_stores_nothing_original(
    coordinator: Any, admin_user: Any, identified: list[Path]
) -> None:
    Case.objects.create(code="PSEUDO-101")

    upload(coordinator, "PSEUDO-101", identified)

    assert IdentityMapping.objects.count() == 0
    response = read_mapping(admin_user, "PSEUDO-101")
    assert response.status_code == 200
    assert response.json() == {"case": "PSEUDO-101", "enabled": False, "entries": []}


@pytest.mark.usefixtures("keep_mapping")
def test_on_keeps_the_mapping_only_in_its_table(
    coordinator: Any,
    researcher: Any,
    identified: list[Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    case = Case.objects.create(code="PSEUDO-102")

    first = upload(coordinator, case.code, identified)
    again = upload(coordinator, case.code, identified)

    rows = list(IdentityMapping.objects.values_list("case__code", "original_patient_name"))
    assert rows == [("PSEUDO-102", PATIENT_NAME)]
    assert IdentityMapping.objects.get().original_patient_id == PATIENT_ID
    assert again.json()["instances_already_stored"] == 6
    stored = b"".join(
        default_storage.open(name).read()
        for name in Instance.objects.values_list("file", flat=True)
    )
    coordinator_client = Client()
    coordinator_client.force_login(coordinator)
    researcher_client = Client()
    researcher_client.force_login(researcher)
    pages = [
        first.content,
        again.content,
        coordinator_client.get(f"/api/v1/uploads/{first.json()['upload_id']}/").content,
        coordinator_client.get(f"/cases/{case.code}/jobs.json").content,
        coordinator_client.get(f"/cases/{case.code}/").content,
    ]
    for kind in ("cases", "lesions"):
        for export_format in ("csv", "json"):
            export = researcher_client.get(f"/research/exports/{kind}.{export_format}")
            assert export.status_code == 200
            pages.append(export.content)
    database = text_outside_mapping_table()
    for secret in SECRETS:
        assert secret not in database, f"{secret} found outside the mapping table"
        assert secret.encode() not in stored, f"{secret} found in a stored file"
        assert secret not in caplog.text, f"{secret} found in the log"
        for page in pages:
            assert secret.encode() not in page


@pytest.mark.usefixtures("keep_mapping")
def test_mapping_reads_are_restricted_and_audited(
    coordinator: Any,
    reader: Any,
    researcher: Any,
    admin_user: Any,
    steward: Any,
    identified: list[Path],
) -> None:
    case = Case.objects.create(code="PSEUDO-103")
    upload(coordinator, case.code, identified)

    for user in (steward, admin_user):
        response = read_mapping(user, case.code)
        assert response.status_code == 200
        assert response["Cache-Control"] == "no-store"
        (entry,) = response.json()["entries"]
        assert entry["original_patient_name"] == PATIENT_NAME
        assert entry["original_patient_id"] == PATIENT_ID
        assert entry["pseudonym"] == "PSEUDO-103"
    for user in (coordinator, reader, researcher):
        response = read_mapping(user, case.code)
        assert response.status_code == 403
        assert response.json()["code"] == "identity_steward_required"
        assert response.json()["message"]
        assert b"QUIXOTE" not in response.content
    assert read_mapping(None, case.code).status_code == 401
    # A missing case returns the API's error body, like every other API path.
    missing = read_mapping(steward, "NO-SUCH-CASE")
    assert missing.status_code == 404
    assert set(missing.json()) == {"code", "message"}

    reads = AuditEvent.objects.filter(action=ACTION_READ).order_by("pk")
    assert [event.actor_username for event in reads] == ["steward_hal", "admin_fay"]
    assert all(event.object_id == str(case.pk) for event in reads)
    assert all(event.details == {"rows": 1} for event in reads)
    denied = AuditEvent.objects.filter(action=ACTION_READ_DENIED).order_by("pk")
    assert [event.actor_username for event in denied] == [
        "coordinator_cai",
        "reader_ann",
        "researcher_dee",
    ]
    assert "QUIXOTE" not in repr(list(AuditEvent.objects.values()))


def test_mapping_absent_from_admin_site() -> None:
    assert not admin.site.is_registered(IdentityMapping)


@pytest.mark.usefixtures("keep_mapping")
def test_steward_group_grants_no_case_pages(
    coordinator: Any, steward: Any, identified: list[Path]
) -> None:
    case = Case.objects.create(code="PSEUDO-104")
    upload(coordinator, case.code, identified)
    client = Client()
    client.force_login(steward)

    assert client.get(f"/cases/{case.code}/").status_code == 403
    assert client.get("/api/v1/cases/").status_code == 403
