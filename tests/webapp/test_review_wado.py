"""WADO-URI and WADO-RS: who may fetch stored instances, caching headers and burned-in series."""

# Fixtures imported from test_review_support are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.test import Client

from tests.webapp.test_ingest_support import ingest_settings, test_model_dir  # noqa: F401
from tests.webapp.test_review_support import (  # noqa: F401 - fixtures
    ReviewedCase,
    reviewed_case,
    study_files,
)
from webapp.core.models import Adjudication, Instance


def _wado_url(instance: Instance, **extra: str) -> str:
    series = instance.series
    params = {
        "requestType": "WADO",
        "studyUID": series.study.study_instance_uid,
        "seriesUID": series.series_instance_uid,
        "objectUID": instance.sop_instance_uid,
        "contentType": "application/dicom",
        **extra,
    }
    return "/wado?" + "&".join(f"{key}={value}" for key, value in params.items())


def _rs_url(instance: Instance) -> str:
    series = instance.series
    return (
        f"/dicomweb/studies/{series.study.study_instance_uid}/series/"
        f"{series.series_instance_uid}/instances/{instance.sop_instance_uid}"
    )


@pytest.fixture
def instance(reviewed_case: ReviewedCase) -> Instance:
    return Instance.objects.filter(series__study=reviewed_case.baseline).order_by("pk").first()


def test_wado_anonymous_redirects_to_login(client: Client, instance: Instance) -> None:
    response = client.get(_wado_url(instance))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_wado_outsider_gets_403(client: Client, outsider: Any, instance: Instance) -> None:
    client.force_login(outsider)

    assert client.get(_wado_url(instance)).status_code == 403
    assert client.get(_rs_url(instance)).status_code == 403


def test_wado_reader_of_blinded_case_gets_dicom(
    client: Client, reader: Any, instance: Instance
) -> None:
    assert instance.series.study.case.readers_blinded is True
    client.force_login(reader)

    response = client.get(_wado_url(instance))
    body = b"".join(response.streaming_content)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom"
    assert response["ETag"] == f'"{instance.sha256}"'
    assert response["Cache-Control"] == "private, max-age=86400"
    assert len(body) == instance.size_bytes
    assert body[128:132] == b"DICM"


def test_wado_reader_sees_case_another_reader_adjudicated(
    client: Client, reader: Any, second_reader: Any, instance: Instance
) -> None:
    case = instance.series.study.case
    Adjudication.objects.create(
        case=case, reader=second_reader, version=1, label="CE", confidence=4
    )
    client.force_login(reader)

    assert client.get(_wado_url(instance)).status_code == 200


def test_wado_matching_etag_returns_304(client: Client, reader: Any, instance: Instance) -> None:
    client.force_login(reader)

    response = client.get(_wado_url(instance), HTTP_IF_NONE_MATCH=f'"{instance.sha256}"')

    assert response.status_code == 304
    assert response["ETag"] == f'"{instance.sha256}"'


def test_wado_parameter_errors(client: Client, reader: Any, instance: Instance) -> None:
    client.force_login(reader)

    missing = client.get("/wado?requestType=WADO&studyUID=1.2")
    wrong_type = client.get(_wado_url(instance, contentType="image/jpeg"))
    wrong_request = client.get("/wado?requestType=QIDO")
    unknown = client.get("/wado?requestType=WADO&studyUID=1.2&seriesUID=1.3&objectUID=1.4")

    assert missing.status_code == 400
    assert b"seriesUID, objectUID" in missing.content
    assert wrong_type.status_code == 406
    assert wrong_request.status_code == 400
    assert unknown.status_code == 404


def test_wado_burned_in_series_is_admin_only(
    client: Client, reader: Any, admin_user: Any, instance: Instance
) -> None:
    series = instance.series
    series.burned_in_annotation = True
    series.save(update_fields=["burned_in_annotation"])

    client.force_login(reader)
    reader_response = client.get(_wado_url(instance))
    client.force_login(admin_user)
    admin_response = client.get(_wado_url(instance))

    assert reader_response.status_code == 403
    assert b"burned-in annotation" in reader_response.content
    assert admin_response.status_code == 200


def test_wado_rs_instance_is_multipart(client: Client, reader: Any, instance: Instance) -> None:
    client.force_login(reader)

    response = client.get(_rs_url(instance))
    body = b"".join(response.streaming_content)

    assert response.status_code == 200
    assert response["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert b"Content-Type: application/dicom\r\n\r\n" in body
    assert response["ETag"] == f'"{instance.sha256}"'


def test_wado_rs_metadata_is_dicom_json(client: Client, reader: Any, instance: Instance) -> None:
    client.force_login(reader)

    response = client.get(_rs_url(instance) + "/metadata")
    metadata = json.loads(b"".join(response.streaming_content))[0]

    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom+json"
    assert metadata["00080018"]["Value"] == [instance.sop_instance_uid]
    assert "7FE00010" not in metadata
    with instance.file.open("rb") as handle:
        stored = pydicom.dcmread(handle, stop_before_pixels=True)
    assert metadata["00280010"]["Value"] == [stored.Rows]


def test_wado_missing_file_is_404(client: Client, reader: Any, instance: Instance) -> None:
    Path(instance.file.path).unlink()
    client.force_login(reader)

    response = client.get(_wado_url(instance))

    assert response.status_code == 404
