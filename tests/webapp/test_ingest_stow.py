"""STOW-RS: PS3.18 Store Instances responses (200, 202, 409, 415) in application/dicom+json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pydicom
import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    test_model_dir,
    write_study,
)
from webapp.core.models import Case, Instance, Study

pytestmark = pytest.mark.usefixtures("ingest_settings")

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
BOUNDARY = "ceht-stow-7f3a"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@pytest.fixture
def case(db: None) -> Case:
    return Case.objects.create(code="C-0200")


def related_body(parts: list[tuple[str, bytes]]) -> bytes:
    body = b""
    for content_type, payload in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + payload
        body += b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def dicom_parts(paths: list[Path]) -> list[tuple[str, bytes]]:
    return [("application/dicom", path.read_bytes()) for path in paths]


def stow(api: APIClient, code: str, parts: list[tuple[str, bytes]], **extra: Any) -> Any:
    return api.generic(
        "POST",
        f"/dicomweb/studies?case={code}&hours_after_mt=1",
        related_body(parts),
        content_type=CONTENT_TYPE,
        HTTP_ACCEPT="application/dicom+json",
        **extra,
    )


def values(body: dict[str, Any], tag: str) -> list[Any]:
    return list(body.get(tag, {}).get("Value", []))


def uid_of(item: dict[str, Any], tag: str) -> str:
    return str(item[tag].get("Value", [""])[0])


def sent_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_all_parts_stored_gives_200_with_retrieve_urls(
    api: APIClient, case: Case, coordinator: Any, tmp_path: Path
) -> None:
    paths = write_study(tmp_path / "in", 4)

    response = stow(api, case.code, dicom_parts(paths))

    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/dicom+json")
    body = json.loads(response.content)
    assert "00081198" not in body
    referenced = values(body, "00081199")
    stored = set(Instance.objects.values_list("sop_instance_uid", flat=True))
    assert {uid_of(item, "00081155") for item in referenced} == stored
    assert len(stored) == 4
    assert not stored & {sent_uid(path) for path in paths}, "UIDs should be de-identified"
    assert {uid_of(item, "00081150") for item in referenced} == {CT_IMAGE}
    study = Study.objects.get()
    assert values(body, "00081190") == [
        f"http://testserver/dicomweb/studies/{study.study_instance_uid}"
    ]
    browser = Client()
    browser.force_login(coordinator)
    for item in referenced:
        url = item["00081190"]["Value"][0]
        assert url.startswith(f"http://testserver/dicomweb/studies/{study.study_instance_uid}/")
        retrieved = browser.get(url.removeprefix("http://testserver"))
        assert retrieved.status_code == 200, url
        assert uid_of(item, "00081155").encode() in b"".join(retrieved.streaming_content)
    link = response["Link"]
    assert link.endswith('>; rel="describedby"; type="application/json"')
    report = api.get(link[1 : link.index(">")].removeprefix("http://testserver")).json()
    assert report["instances_stored"] == 4
    assert report["completed"] is True


def test_some_failed_parts_give_202_with_reasons(
    api: APIClient, case: Case, tmp_path: Path
) -> None:
    ct = write_study(tmp_path / "ct", 3)
    (mr,) = write_study(tmp_path / "mr", 1, modality="MR", sop_class=MR_IMAGE, series_number=9)
    parts = [
        *dicom_parts(ct),
        ("text/plain", b"hello"),
        ("application/dicom", b"not a dicom file at all" * 10),
        ("application/dicom", mr.read_bytes()),
    ]

    response = stow(api, case.code, parts)

    assert response.status_code == 202, response.content
    body = json.loads(response.content)
    assert len(values(body, "00081199")) == 3
    failed = values(body, "00081198")
    reasons = [item["00081197"]["Value"][0] for item in failed]
    assert reasons == [0xC000, 0xC000, 0x0122]
    assert uid_of(failed[2], "00081155") == sent_uid(mr)
    assert uid_of(failed[2], "00081150") == MR_IMAGE
    assert uid_of(failed[0], "00081155") == ""
    assert Instance.objects.count() == 3


def test_nothing_stored_gives_409(api: APIClient, case: Case) -> None:
    response = stow(api, case.code, [("application/dicom", b"garbage"), ("text/plain", b"x")])

    assert response.status_code == 409, response.content
    body = json.loads(response.content)
    assert "00081199" not in body
    assert [item["00081197"]["Value"][0] for item in values(body, "00081198")] == [
        0xC000,
        0xC000,
    ]


def test_study_of_another_case_is_a_processing_failure(
    api: APIClient, case: Case, tmp_path: Path, settings: Any
) -> None:
    # With de-identification each case has its own UIDs, so only identified studies can meet.
    settings.INGEST = {**settings.INGEST, "DEIDENTIFY": False}
    paths = write_study(tmp_path / "in", 3)
    assert stow(api, case.code, dicom_parts(paths)).status_code == 200
    Case.objects.create(code="C-0201")

    response = stow(api, "C-0201", dicom_parts(paths))

    assert response.status_code == 409, response.content
    failed = values(json.loads(response.content), "00081198")
    assert [item["00081197"]["Value"][0] for item in failed] == [0x0110] * 3
    assert Instance.objects.count() == 3


def test_repeated_and_duplicate_parts_are_referenced(
    api: APIClient, case: Case, tmp_path: Path
) -> None:
    paths = write_study(tmp_path / "in", 3)
    first = json.loads(stow(api, case.code, dicom_parts(paths)).content)

    again = stow(api, case.code, dicom_parts([*paths, paths[0]]))

    assert again.status_code == 200, again.content
    referenced = values(json.loads(again.content), "00081199")
    uids = [uid_of(item, "00081155") for item in referenced]
    assert len(uids) == 4
    assert uids[3] == uids[0]
    assert set(uids) == {uid_of(item, "00081155") for item in values(first, "00081199")}
    assert Instance.objects.count() == 3


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}',
    ],
)
def test_wrong_media_type_gives_415(api: APIClient, case: Case, content_type: str) -> None:
    response = api.generic(
        "POST",
        f"/dicomweb/studies?case={case.code}",
        related_body([("application/dicom", b"x")]),
        content_type=content_type,
    )

    assert response.status_code == 415
    assert Instance.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_real_http_request_with_a_token(live_server: Any, coordinator: Any, tmp_path: Path) -> None:
    Case.objects.create(code="C-0202")
    token = Token.objects.create(user=coordinator).key
    paths = write_study(tmp_path / "in", 3)
    request = Request(
        f"{live_server.url}/dicomweb/studies?case=C-0202&hours_after_mt=2",
        data=related_body([*dicom_parts(paths), ("application/dicom", b"junk")]),
        headers={
            "Content-Type": CONTENT_TYPE,
            "Accept": "application/dicom+json",
            "Authorization": f"Token {token}",
        },
        method="POST",
    )

    with urlopen(request, timeout=60) as response:  # noqa: S310 - loopback test server
        status, headers, body = response.status, response.headers, json.loads(response.read())

    assert status == 202
    assert headers["Content-Type"].startswith("application/dicom+json")
    assert len(values(body, "00081199")) == 3
    assert [item["00081197"]["Value"][0] for item in values(body, "00081198")] == [0xC000]
    assert headers["Link"].startswith(f"<{live_server.url}/api/v1/uploads/")


@pytest.mark.django_db(transaction=True)
def test_real_http_request_with_only_failures_gets_409(live_server: Any, coordinator: Any) -> None:
    Case.objects.create(code="C-0203")
    token = Token.objects.create(user=coordinator).key
    request = Request(
        f"{live_server.url}/dicomweb/studies?case=C-0203",
        data=related_body([("application/dicom", b"junk")]),
        headers={"Content-Type": CONTENT_TYPE, "Authorization": f"Token {token}"},
        method="POST",
    )

    with pytest.raises(HTTPError) as answer:
        urlopen(request, timeout=60)  # noqa: S310 - loopback test server

    assert answer.value.code == 409
    failed = values(json.loads(answer.value.read()), "00081198")
    assert [item["00081197"]["Value"][0] for item in failed] == [0xC000]
