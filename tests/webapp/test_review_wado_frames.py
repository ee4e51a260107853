"""WADO-RS Retrieve Frames: frame bytes, frame lists, Accept negotiation and access control."""

# Fixtures imported from test_review_support are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.encaps
import pytest
from django.test import Client
from pydicom.uid import RLELossless

from tests.webapp.test_ingest_support import ingest_settings, test_model_dir  # noqa: F401
from tests.webapp.test_review_support import (  # noqa: F401 - fixtures
    ReviewedCase,
    reviewed_case,
    study_files,
)
from webapp.core.models import Instance
from webapp.review.wado import (
    FrameListError,
    native_frame_bytes,
    negotiate_frame_encoding,
    parse_frame_list,
)

RLE_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _frames_url(instance: Instance, frame_list: str) -> str:
    series = instance.series
    return (
        f"/dicomweb/studies/{series.study.study_instance_uid}/series/"
        f"{series.series_instance_uid}/instances/{instance.sop_instance_uid}/frames/{frame_list}"
    )


def _parts(response: Any) -> list[tuple[str, bytes]]:
    """Split a multipart/related body into (part Content-Type, part bytes) pairs."""
    boundary = re.search(r"boundary=([^;\s]+)", response["Content-Type"]).group(1).encode()
    chunks = response.content.split(b"--" + boundary)
    assert chunks[0] == b""
    assert chunks[-1] == b"--\r\n"
    parts = []
    for chunk in chunks[1:-1]:
        headers, _, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        assert body.endswith(b"\r\n")
        content_type = headers.decode().removeprefix("Content-Type: ")
        parts.append((content_type, body[:-2]))
    return parts


def _stored_dataset(instance: Instance) -> pydicom.Dataset:
    with instance.file.open("rb") as handle:
        return pydicom.dcmread(handle)


@pytest.fixture
def instance(reviewed_case: ReviewedCase) -> Instance:
    return Instance.objects.filter(series__study=reviewed_case.baseline).order_by("pk").first()


@pytest.fixture
def multi_frame_instance(instance: Instance) -> tuple[Instance, list[bytes]]:
    """Rewrite the stored file as a 3-frame instance whose frames differ; return its frames."""
    dataset = _stored_dataset(instance)
    base = dataset.pixel_array
    frames = [(base + offset).astype(base.dtype).tobytes() for offset in (0, 100, 200)]
    dataset.NumberOfFrames = 3
    dataset.PixelData = b"".join(frames)
    dataset.save_as(instance.file.path, enforce_file_format=True)
    return instance, frames


@pytest.fixture
def rle_instance(instance: Instance) -> tuple[Instance, bytes]:
    """Rewrite the stored file RLE Lossless compressed; return its one encapsulated frame."""
    dataset = _stored_dataset(instance)
    dataset.compress(RLELossless, generate_instance_uid=False)
    dataset.save_as(instance.file.path, enforce_file_format=True)
    return instance, pydicom.encaps.get_frame(dataset.PixelData, 0, number_of_frames=1)


def test_single_frame_returns_stored_pixels(
    client: Client, reader: Any, instance: Instance
) -> None:
    client.force_login(reader)

    response = client.get(_frames_url(instance, "1"))
    parts = _parts(response)

    assert response.status_code == 200
    assert response["Content-Type"].startswith(
        'multipart/related; type="application/octet-stream"; '
        "transfer-syntax=1.2.840.10008.1.2.1; boundary="
    )
    assert len(parts) == 1
    assert parts[0][0] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    stored = _stored_dataset(instance)
    assert parts[0][1] == stored.PixelData
    assert len(parts[0][1]) == 64 * 64 * 2


def test_frames_headers_match_instance_endpoint(
    client: Client, reader: Any, instance: Instance
) -> None:
    client.force_login(reader)

    response = client.get(_frames_url(instance, "1"))
    etag = response["ETag"]
    cached = client.get(_frames_url(instance, "1"), HTTP_IF_NONE_MATCH=etag)

    assert etag == f'"{instance.sha256}-frames-1-application/octet-stream"'
    assert response["Cache-Control"] == "private, max-age=86400"
    assert "Accept" in [name.strip() for name in response["Vary"].split(",")]
    assert cached.status_code == 304
    assert cached["ETag"] == etag
    assert cached.content == b""


def test_multi_frame_returns_frames_in_order(
    client: Client, reader: Any, multi_frame_instance: tuple[Instance, list[bytes]]
) -> None:
    instance, frames = multi_frame_instance
    client.force_login(reader)

    forward = _parts(client.get(_frames_url(instance, "2,3")))
    backward = _parts(client.get(_frames_url(instance, "3,1")))

    assert [body for _, body in forward] == [frames[1], frames[2]]
    assert [body for _, body in backward] == [frames[2], frames[0]]
    first_pixel = np.frombuffer(forward[0][1], dtype="<u2")[0]
    assert int(first_pixel) == int(np.frombuffer(frames[0], dtype="<u2")[0]) + 100


def test_frame_beyond_number_of_frames_is_404(
    client: Client, reader: Any, multi_frame_instance: tuple[Instance, list[bytes]]
) -> None:
    instance, _ = multi_frame_instance
    client.force_login(reader)

    response = client.get(_frames_url(instance, "2,4,7"))

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert "Frame(s) 4, 7 not found" in response.json()["message"]
    assert "has 3 frame(s)" in response.json()["message"]


def test_single_frame_instance_has_no_frame_2(
    client: Client, reader: Any, instance: Instance
) -> None:
    client.force_login(reader)

    assert client.get(_frames_url(instance, "2")).status_code == 404


@pytest.mark.parametrize("frame_list", ["0", "1,,2", "a", "-1", "1.5", "1,", "%20"])
def test_invalid_frame_list_is_400(
    client: Client, reader: Any, instance: Instance, frame_list: str
) -> None:
    client.force_login(reader)

    response = client.get(_frames_url(instance, frame_list))

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_frame_list"
    assert "is invalid" in response.json()["message"]


def test_rle_frame_is_the_encapsulated_fragment(
    client: Client, reader: Any, rle_instance: tuple[Instance, bytes]
) -> None:
    instance, fragment = rle_instance
    client.force_login(reader)

    default = client.get(_frames_url(instance, "1"))
    as_stored = client.get(_frames_url(instance, "1"), HTTP_ACCEPT=RLE_ACCEPT)
    rle_type = client.get(
        _frames_url(instance, "1"), HTTP_ACCEPT='multipart/related; type="image/dicom-rle"'
    )
    default_parts = _parts(default)

    assert default.status_code == 200
    assert default_parts == [
        ("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5", fragment)
    ]
    # An RLE frame starts with its segment count; 16-bit grey pixels take two byte segments.
    assert int.from_bytes(fragment[:4], "little") == 2
    assert _parts(as_stored) == default_parts
    assert _parts(rle_type) == [("image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5", fragment)]


def test_rle_frame_as_uncompressed_is_406(
    client: Client, reader: Any, rle_instance: tuple[Instance, bytes]
) -> None:
    instance, _ = rle_instance
    client.force_login(reader)

    response = client.get(
        _frames_url(instance, "1"),
        HTTP_ACCEPT='multipart/related; type="application/octet-stream"; '
        "transfer-syntax=1.2.840.10008.1.2.1",
    )

    assert response.status_code == 406
    assert response.json()["code"] == "not_acceptable"
    assert "transfer-syntax=1.2.840.10008.1.2.5" in response.json()["message"]


def test_unsupported_accept_is_406(client: Client, reader: Any, instance: Instance) -> None:
    client.force_login(reader)

    jpeg = client.get(
        _frames_url(instance, "1"), HTTP_ACCEPT='multipart/related; type="image/jpeg"'
    )
    any_type = client.get(_frames_url(instance, "1"), HTTP_ACCEPT="*/*")

    assert jpeg.status_code == 406
    assert b"application/octet-stream" in jpeg.content
    assert any_type.status_code == 200


def test_frames_anonymous_gets_401(client: Client, instance: Instance) -> None:
    response = client.get(_frames_url(instance, "1"))

    # WADO-RS is an API endpoint: a challenge for a token, not a login page.
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_frames_outsider_gets_403(client: Client, outsider: Any, instance: Instance) -> None:
    client.force_login(outsider)

    assert client.get(_frames_url(instance, "1")).status_code == 403


def test_frames_burned_in_series_is_admin_only(
    client: Client, reader: Any, admin_user: Any, instance: Instance
) -> None:
    series = instance.series
    series.burned_in_annotation = True
    series.save(update_fields=["burned_in_annotation"])

    client.force_login(reader)
    reader_response = client.get(_frames_url(instance, "1"))
    client.force_login(admin_user)
    admin_response = client.get(_frames_url(instance, "1"))

    assert reader_response.status_code == 403
    assert b"burned-in annotation" in reader_response.content
    assert admin_response.status_code == 200


def test_frames_missing_file_is_404(client: Client, reader: Any, instance: Instance) -> None:
    Path(instance.file.path).unlink()
    client.force_login(reader)

    assert client.get(_frames_url(instance, "1")).status_code == 404


def test_parse_frame_list_keeps_request_order() -> None:
    assert parse_frame_list("3,1,2") == [3, 1, 2]
    assert parse_frame_list(" 7 ") == [7]
    with pytest.raises(FrameListError, match="'0' is invalid"):
        parse_frame_list("1,0")


def test_negotiation_prefers_higher_quality() -> None:
    accept = (
        'multipart/related; type="image/dicom-rle"; q=0.5, '
        'multipart/related; type="application/octet-stream"; transfer-syntax=*; q=0.9'
    )

    chosen = negotiate_frame_encoding(accept, "1.2.840.10008.1.2.5")
    native = negotiate_frame_encoding("", "1.2.840.10008.1.2")
    refused = negotiate_frame_encoding("image/jls", "1.2.840.10008.1.2.1")

    assert chosen is not None
    assert chosen.media_type == "application/octet-stream"
    assert native is not None
    assert native.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert refused is None


def test_instance_without_pixel_data_is_404(
    client: Client, reader: Any, instance: Instance
) -> None:
    dataset = _stored_dataset(instance)
    del dataset.PixelData
    dataset.save_as(instance.file.path, enforce_file_format=True)
    client.force_login(reader)

    response = client.get(_frames_url(instance, "1"))

    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "message": f"Instance {instance.sop_instance_uid} has no Pixel Data (7FE0,0010), so it "
        "has no frames.",
    }


def test_one_bit_frame_off_byte_boundary() -> None:
    dataset = pydicom.Dataset()
    dataset.Rows = 3
    dataset.Columns = 3
    dataset.BitsAllocated = 1
    # Two 9-pixel frames packed from the least significant bit: frame 1 is all ones and
    # frame 2 has only its first and last pixels set, so frame 2 starts at bit 9.
    bits = np.array([1] * 9 + [1, 0, 0, 0, 0, 0, 0, 0, 1], dtype=np.uint8)
    pixel_data = np.packbits(bits, bitorder="little").tobytes()

    first = native_frame_bytes(pixel_data, dataset, 0)
    second = native_frame_bytes(pixel_data, dataset, 1)

    assert first == bytes([0xFF, 0x01])
    assert second == bytes([0x01, 0x01])
    with pytest.raises(ValueError, match="too few for frame 3"):
        native_frame_bytes(pixel_data, dataset, 2)
