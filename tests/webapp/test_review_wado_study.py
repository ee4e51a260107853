"""WADO-RS Retrieve Study and Retrieve Series, with their metadata (DICOM PS3.18 10.4).

The study has two series (6 and 4 slices) stored through the ingest service, so it is
de-identified like every stored study: the tests compare responses with the stored files.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.request import Request, urlopen

import pydicom
import pytest
from django.core.files.storage import default_storage
from django.test import Client
from pydicom.uid import generate_uid
from rest_framework.authtoken.models import Token

from tests.webapp.test_ingest_stow import CONTENT_TYPE, dicom_parts, related_body
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    named_files,
    test_model_dir,
    write_study,
)
from webapp.core.models import Case, Instance, Series, Study
from webapp.ingest.services import ingest_files
from webapp.review import retrieve

pytestmark = pytest.mark.usefixtures("ingest_settings")

DICOM_ACCEPT = 'multipart/related; type="application/dicom"'
JPEG_2000 = "1.2.840.10008.1.2.4.90"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


@dataclass
class StoredStudy:
    study: Study
    head: Series  # 6 slices, series number 2
    bone: Series  # 4 slices, series number 3


@pytest.fixture
def stored(coordinator: Any, tmp_path: Path) -> StoredStudy:
    study_uid = generate_uid()
    files = [
        *write_study(tmp_path / "head", 6, study_uid=study_uid, series_number=2),
        *write_study(
            tmp_path / "bone", 4, study_uid=study_uid, series_number=3, description="Head bone"
        ),
    ]
    case = Case.objects.create(code="RS-001")
    ingest_files(case, "baseline", "3", named_files(files), coordinator)
    study = Study.objects.get(case=case)
    return StoredStudy(
        study,
        head=study.series.get(series_number=2),
        bone=study.series.get(series_number=3),
    )


def study_url(stored: StoredStudy) -> str:
    return f"/dicomweb/studies/{stored.study.study_instance_uid}"


def series_url(stored: StoredStudy, series: Series) -> str:
    return f"{study_url(stored)}/series/{series.series_instance_uid}"


def body_of(response: Any) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return bytes(response.content)


def split_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """Split a multipart/related body into (part Content-Type, part bytes), strictly."""
    assert content_type.startswith(f"{DICOM_ACCEPT}; boundary=")
    match = re.search(r"boundary=([^;\s]+)", content_type)
    assert match is not None
    boundary = match.group(1).encode()
    chunks = body.split(b"--" + boundary)
    assert chunks[0] == b""
    assert chunks[-1] == b"--\r\n"
    parts = []
    for chunk in chunks[1:-1]:
        headers, _, payload = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        assert payload.endswith(b"\r\n")
        parts.append((headers.decode().removeprefix("Content-Type: "), payload[:-2]))
    return parts


def stored_bytes(instances: Any) -> list[bytes]:
    """Return the stored files of the instances, in the order the endpoints send them."""
    ordered = instances.order_by(
        "series__series_number", "series_id", "slice_position_mm", "instance_number", "pk"
    )
    return [Path(instance.file.path).read_bytes() for instance in ordered]


def parts_of(response: Any) -> list[bytes]:
    parts = split_multipart(response["Content-Type"], body_of(response))
    assert {content_type for content_type, _ in parts} == {"application/dicom"}
    return [payload for _, payload in parts]


def error_of(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    body = json.loads(body_of(response))
    assert set(body) == {"code", "message"}
    return dict(body)


# Retrieve Study and Retrieve Series


def test_study_returns_stored_bytes_in_order(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    client.force_login(reader)

    response = client.get(study_url(stored), HTTP_ACCEPT=DICOM_ACCEPT)

    assert response.status_code == 200
    assert response.streaming
    assert parts_of(response) == stored_bytes(Instance.objects.filter(series__study=stored.study))
    assert len(parts_of(client.get(study_url(stored)))) == 10


def test_series_returns_only_its_instances_in_slice_order(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    client.force_login(reader)

    response = client.get(series_url(stored, stored.bone))
    parts = parts_of(response)

    assert response.status_code == 200
    assert parts == stored_bytes(stored.bone.instances.all())
    positions = [float(pydicom.dcmread(io.BytesIO(part)).ImagePositionPatient[2]) for part in parts]
    assert positions == sorted(positions)
    assert len(parts) == 4


def test_study_body_streams_file_by_file(client: Client, reader: Any, stored: StoredStudy) -> None:
    client.force_login(reader)
    opened = []
    real_open = default_storage.open

    def counting_open(name: str, mode: str = "rb") -> Any:
        opened.append(name)
        return real_open(name, mode)

    with mock.patch.object(default_storage, "open", side_effect=counting_open):
        response: Any = client.get(study_url(stored))
        assert opened == []  # nothing is read before the body is consumed
        pieces = iter(response.streaming_content)
        first = next(pieces)
        next(pieces)  # the first file's bytes
        assert len(opened) == 1
        rest = b"".join(pieces)

    assert first.startswith(b"--ceht-")
    assert len(opened) == 10
    assert len(split_multipart(response["Content-Type"], first + rest)) == 10


def test_large_file_is_sent_in_bounded_chunks(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    client.force_login(reader)

    with mock.patch.object(retrieve, "CHUNK_BYTES", 1000):
        response: Any = client.get(series_url(stored, stored.head))
        pieces = list(response.streaming_content)

    assert max(len(piece) for piece in pieces) == 1000
    assert [part for _, part in split_multipart(response["Content-Type"], b"".join(pieces))] == (
        stored_bytes(stored.head.instances.all())
    )


# Metadata


def test_study_metadata_lists_every_header(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    client.force_login(reader)

    response = client.get(study_url(stored) + "/metadata")
    items = json.loads(body_of(response))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom+json"
    expected = [pydicom.dcmread(io.BytesIO(data)) for data in stored_bytes(Instance.objects.all())]
    assert [item["00080018"]["Value"][0] for item in items] == [
        str(dataset.SOPInstanceUID) for dataset in expected
    ]
    assert all("7FE00010" not in item for item in items)
    assert items[0]["00280010"]["Value"] == [expected[0].Rows]
    assert {item["0020000D"]["Value"][0] for item in items} == {stored.study.study_instance_uid}


def test_series_metadata_lists_only_the_series(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    client.force_login(reader)

    response = client.get(series_url(stored, stored.head) + "/metadata")
    items = json.loads(body_of(response))

    assert response.status_code == 200
    assert {item["0020000E"]["Value"][0] for item in items} == {stored.head.series_instance_uid}
    assert len(items) == 6


# Accept negotiation (PS3.18 8.7.5)


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "*/*",
        DICOM_ACCEPT,
        f"{DICOM_ACCEPT}; transfer-syntax=*",
        f"{DICOM_ACCEPT}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}",
        f"{DICOM_ACCEPT}; transfer-syntax={JPEG_2000}, {DICOM_ACCEPT}; transfer-syntax=*; q=0.5",
        "multipart/related",
    ],
)
def test_acceptable_requests_get_the_stored_instances(
    client: Client, reader: Any, stored: StoredStudy, accept: str
) -> None:
    client.force_login(reader)

    response = client.get(series_url(stored, stored.bone), HTTP_ACCEPT=accept)

    assert response.status_code == 200
    assert len(parts_of(response)) == 4
    assert "Accept" in re.split(r",\s*", response["Vary"])


@pytest.mark.parametrize(
    ("accept", "names"),
    [
        ("application/dicom+json", "does not allow application/dicom"),
        ('multipart/related; type="image/jpeg"', "does not allow application/dicom"),
        (f"{DICOM_ACCEPT}; q=0", "does not allow application/dicom"),
        (f"{DICOM_ACCEPT}; transfer-syntax={JPEG_2000}", EXPLICIT_VR_LITTLE_ENDIAN),
    ],
)
def test_unsupported_media_types_get_406(
    client: Client, reader: Any, stored: StoredStudy, accept: str, names: str
) -> None:
    client.force_login(reader)

    response = client.get(study_url(stored), HTTP_ACCEPT=accept)

    assert response.status_code == 406
    body = error_of(response)
    assert body["code"] == "not_acceptable"
    assert names in body["message"]


def test_metadata_accept_negotiation(client: Client, reader: Any, stored: StoredStudy) -> None:
    client.force_login(reader)
    url = study_url(stored) + "/metadata"

    xml = client.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom+xml"')
    plain_json = client.get(url, HTTP_ACCEPT="application/json")
    dicom_json = client.get(url, HTTP_ACCEPT="application/dicom+json")

    assert xml.status_code == 406
    assert "application/dicom+xml" in error_of(xml)["message"]
    assert plain_json.status_code == 200
    assert dicom_json.status_code == 200


def test_instance_endpoints_negotiate_the_same_way(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    client.force_login(reader)
    instance = stored.head.instances.order_by("pk")[0]
    url = f"{series_url(stored, stored.head)}/instances/{instance.sop_instance_uid}"

    rejected = client.get(url, HTTP_ACCEPT="application/dicom+json")
    served = client.get(url, HTTP_ACCEPT=DICOM_ACCEPT)
    metadata_rejected = client.get(url + "/metadata", HTTP_ACCEPT="application/dicom+xml")

    assert rejected.status_code == 406
    assert error_of(rejected)["code"] == "not_acceptable"
    assert served.status_code == 200
    assert parts_of(served) == [Path(instance.file.path).read_bytes()]
    assert served["Cache-Control"] == "private, max-age=86400"
    assert metadata_rejected.status_code == 406


# Caching


def test_etag_revalidates_and_changes_with_the_instances(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    client.force_login(reader)
    first = client.get(study_url(stored))
    etag = first["ETag"]

    again = client.get(study_url(stored), HTTP_IF_NONE_MATCH=etag)
    series_etag = client.get(series_url(stored, stored.head))["ETag"]
    metadata_etag = client.get(study_url(stored) + "/metadata")["ETag"]
    stored.bone.instances.order_by("pk")[0].delete()
    after_delete = client.get(study_url(stored), HTTP_IF_NONE_MATCH=etag)

    assert first["Cache-Control"] == "private, no-cache"
    assert re.fullmatch(r'"[0-9a-f]{64}"', etag)
    assert again.status_code == 304
    assert again["ETag"] == etag
    assert again["Cache-Control"] == "private, no-cache"
    assert body_of(again) == b""
    assert len({etag, series_etag, metadata_etag}) == 3
    assert after_delete.status_code == 200
    assert after_delete["ETag"] != etag
    assert len(parts_of(after_delete)) == 9


def test_same_instances_give_identical_bodies(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    """A strong ETag promises the same bytes, boundary included."""
    client.force_login(reader)

    first = client.get(series_url(stored, stored.bone))
    second = client.get(series_url(stored, stored.bone))
    body = body_of(first)

    assert body == body_of(second)
    assert len(split_multipart(first["Content-Type"], body)) == 4


# Access: login, roles, burned-in series, unknown UIDs, missing files


NEW_URL_SUFFIXES = ["", "/metadata"]


@pytest.mark.parametrize("suffix", NEW_URL_SUFFIXES)
def test_anonymous_gets_401_and_outsider_403(
    client: Client, outsider: Any, stored: StoredStudy, suffix: str
) -> None:
    urls = [study_url(stored) + suffix, series_url(stored, stored.head) + suffix]

    anonymous = [client.get(url) for url in urls]
    client.force_login(outsider)
    no_role = [client.get(url) for url in urls]

    assert [response.status_code for response in anonymous] == [401, 401]
    assert all(response["WWW-Authenticate"] == "Token" for response in anonymous)
    assert [response.status_code for response in no_role] == [403, 403]
    assert error_of(no_role[0])["code"] == "permission_denied"


def test_blinded_reader_still_gets_the_images(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    assert stored.study.case.readers_blinded is True
    client.force_login(reader)

    assert client.get(study_url(stored)).status_code == 200


def test_token_authenticates_retrieval(client: Client, reader: Any, stored: StoredStudy) -> None:
    token = Token.objects.create(user=reader).key

    with_token = client.get(study_url(stored), HTTP_AUTHORIZATION=f"Token {token}")
    bad_token = client.get(study_url(stored), HTTP_AUTHORIZATION="Token not-a-token")

    assert with_token.status_code == 200
    assert len(parts_of(with_token)) == 10
    assert bad_token.status_code == 401


def test_burned_in_series_is_left_out_for_readers_with_206(
    client: Client, reader: Any, admin_user: Any, stored: StoredStudy
) -> None:
    stored.bone.burned_in_annotation = True
    stored.bone.save(update_fields=["burned_in_annotation"])

    client.force_login(reader)
    study = client.get(study_url(stored))
    metadata = client.get(study_url(stored) + "/metadata")
    series = client.get(series_url(stored, stored.bone))
    series_metadata = client.get(series_url(stored, stored.bone) + "/metadata")
    client.force_login(admin_user)
    admin_study = client.get(study_url(stored))

    assert study.status_code == 206
    assert study["Warning"] == (
        '299 - "4 instance(s) left out: their series has burned-in annotation, which only '
        'admins can open."'
    )
    assert parts_of(study) == stored_bytes(stored.head.instances.all())
    assert metadata.status_code == 206
    assert len(json.loads(body_of(metadata))) == 6
    assert series.status_code == 403
    assert "burned-in annotation" in error_of(series)["message"]
    assert series_metadata.status_code == 403
    assert admin_study.status_code == 200
    assert len(parts_of(admin_study)) == 10


def test_study_with_only_burned_in_series_is_403_for_readers(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    Series.objects.filter(study=stored.study).update(burned_in_annotation=True)
    client.force_login(reader)

    response = client.get(study_url(stored))

    assert response.status_code == 403
    assert "only admins can open it" in error_of(response)["message"]


def test_unknown_uids_get_404_with_the_error_body(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    client.force_login(reader)
    other = Study.objects.create(
        case=stored.study.case, role=Study.Role.FOLLOW_UP, study_instance_uid=generate_uid()
    )
    unknown_study = f"/dicomweb/studies/{generate_uid()}"

    responses = {
        "study": client.get(unknown_study),
        "study metadata": client.get(unknown_study + "/metadata"),
        "series": client.get(f"{study_url(stored)}/series/{generate_uid()}"),
        # A real series named under another study is not found either.
        "series elsewhere": client.get(
            f"/dicomweb/studies/{other.study_instance_uid}/series/"
            f"{stored.head.series_instance_uid}/metadata"
        ),
        "empty study": client.get(f"/dicomweb/studies/{other.study_instance_uid}"),
        "instance": client.get(f"{series_url(stored, stored.head)}/instances/{generate_uid()}"),
    }

    for name, response in responses.items():
        assert response.status_code == 404, name
        body = error_of(response)
        assert body["code"] == "not_found", name
        assert "check the UID" in body["message"] or "no stored instance" in body["message"]


def test_missing_files_are_left_out_with_206_and_not_cached(
    client: Client, reader: Any, stored: StoredStudy
) -> None:
    lost = stored.head.instances.order_by("pk")[0]
    Path(lost.file.path).unlink()
    client.force_login(reader)

    response = client.get(study_url(stored))
    metadata = client.get(study_url(stored) + "/metadata")

    assert response.status_code == 206
    assert "1 instance(s) left out: their files are missing" in response["Warning"]
    assert response["Cache-Control"] == "no-store"
    assert not response.has_header("ETag")
    assert len(parts_of(response)) == 9
    assert metadata.status_code == 206
    assert lost.sop_instance_uid not in body_of(metadata).decode()


def test_every_file_missing_is_404(client: Client, reader: Any, stored: StoredStudy) -> None:
    for instance in stored.bone.instances.all():
        Path(instance.file.path).unlink()
    lost = stored.bone.instances.order_by("pk")[0]
    client.force_login(reader)

    series = client.get(series_url(stored, stored.bone))
    instance = client.get(f"{series_url(stored, stored.bone)}/instances/{lost.sop_instance_uid}")

    assert series.status_code == 404
    assert "missing from storage" in error_of(series)["message"]
    assert instance.status_code == 404
    assert "missing from storage" in error_of(instance)["message"]


# STOW-RS then WADO-RS over real HTTP


@pytest.mark.django_db(transaction=True)
def test_stow_retrieve_url_returns_every_stored_instance(
    live_server: Any, coordinator: Any, tmp_path: Path
) -> None:
    """Store with STOW-RS, then GET the study's RetrieveURL with the same token."""
    Case.objects.create(code="RS-STOW")
    token = Token.objects.create(user=coordinator).key
    paths = write_study(tmp_path / "in", 5)
    store = Request(
        f"{live_server.url}/dicomweb/studies?case=RS-STOW&hours_after_mt=2",
        data=related_body(dicom_parts(paths)),
        headers={"Content-Type": CONTENT_TYPE, "Authorization": f"Token {token}"},
        method="POST",
    )
    with urlopen(store, timeout=60) as response:  # noqa: S310 - loopback test server
        stow_body = json.loads(response.read())
    (retrieve_url,) = stow_body["00081190"]["Value"]
    referenced = {item["00081155"]["Value"][0] for item in stow_body["00081199"]["Value"]}

    fetch = Request(
        retrieve_url, headers={"Accept": DICOM_ACCEPT, "Authorization": f"Token {token}"}
    )
    with urlopen(fetch, timeout=60) as response:  # noqa: S310 - loopback test server
        status, content_type, body = (
            response.status,
            response.headers["Content-Type"],
            (response.read()),
        )

    assert retrieve_url.startswith(live_server.url + "/dicomweb/studies/")
    assert status == 200
    parts = [payload for _, payload in split_multipart(content_type, body)]
    instances = Instance.objects.filter(sop_instance_uid__in=referenced)
    assert len(parts) == len(paths) == instances.count()
    assert parts == stored_bytes(instances)
    assert sorted(hashlib.sha256(part).hexdigest() for part in parts) == sorted(
        instances.values_list("sha256", flat=True)
    )
    assert {str(pydicom.dcmread(io.BytesIO(part)).SOPInstanceUID) for part in parts} == referenced
