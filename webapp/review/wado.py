"""WADO-URI and WADO-RS Retrieve Frames responses for stored instances (DICOM PS3.18).

Retrieval of whole instances, series and studies and of their metadata is in ``retrieve.py``.

Files are content-addressed, so the SHA-256 is a strong ETag and a cached copy never goes
stale; Cache-Control is private because the images belong to a logged-in user's session.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import numpy as np
import pydicom
import pydicom.encaps
from django.core.files import File
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers

from webapp.core.models import Instance

logger = logging.getLogger(__name__)

DICOM_CONTENT_TYPE = "application/dicom"
# One day; the bytes behind an ETag never change, and the session limits who may reuse them.
CACHE_CONTROL = "private, max-age=86400"


def not_modified(request: HttpRequest, etag: str) -> HttpResponse | None:
    tags = [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]
    if etag in tags or "*" in tags:
        response = HttpResponse(status=304)
        response["ETag"] = etag
        response["Cache-Control"] = CACHE_CONTROL
        return response
    return None


def open_stored(instance: Instance) -> File:
    """Open the instance's file, or raise Http404 when the row outlived its file."""
    try:
        return default_storage.open(instance.file.name, "rb")
    except FileNotFoundError:
        logger.error(
            "Stored file missing instance_id=%s series_id=%s name=%s",
            instance.pk,
            instance.series_id,
            instance.file.name,
        )
        raise Http404(
            f"The file of instance {instance.sop_instance_uid} is missing from storage; "
            "upload the study again."
        ) from None


def instance_file_response(request: HttpRequest, instance: Instance) -> HttpResponseBase:
    """Return the stored DICOM file as application/dicom, or 304 when the client has it."""
    etag = f'"{instance.sha256}"'
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    response = FileResponse(open_stored(instance), content_type=DICOM_CONTENT_TYPE)
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    response["Content-Length"] = str(instance.size_bytes)
    return response


# Retrieve Frames (PS3.18 10.4 and 8.7.3): the stored frame bytes, never decoded or transcoded.
OCTET_STREAM = "application/octet-stream"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
# Native syntaxes whose pixel bytes are little endian once read, because pydicom inflates the
# deflated one.
LITTLE_ENDIAN_NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2",
    EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.1.99",
}
BIG_ENDIAN_NATIVE_SYNTAX = "1.2.840.10008.1.2.2"
# Media types of compressed frames by transfer syntax for WADO-RS (DICOM PS3.18).
# NOTE: entered from the standard's media type list without a client test for each entry.
COMPRESSED_FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
# Max frames in one request, checked before the file is read. The limit is an estimate: CT
# multi-frame instances seldom reach a few thousand frames.
MAX_FRAMES_PER_REQUEST = 10_000


class FrameListError(ValueError):
    """A frame list in the URL that is not comma-separated positive integers."""


@dataclass(frozen=True)
class FrameEncoding:
    """The media type and transfer syntax that frames of one instance are sent in."""

    media_type: str
    transfer_syntax_uid: str

    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax_uid}"


def parse_frame_list(text: str) -> list[int]:
    """Parse a PS3.18 frame list such as ``"2,3"`` into 1-based frame numbers, in request order.

    Raises FrameListError when an item is empty, not a decimal integer, or below 1.
    """
    items = text.split(",")
    if len(items) > MAX_FRAMES_PER_REQUEST:
        raise FrameListError(
            f"Frame list has {len(items)} items. Request at most {MAX_FRAMES_PER_REQUEST} at once."
        )
    numbers = []
    for item in items:
        stripped = item.strip()
        if not stripped.isascii() or not stripped.isdigit() or int(stripped) < 1:
            raise FrameListError(
                f"Frame list item {item!r} is invalid. List frame numbers from 1 separated by "
                "commas, for example 1,2,3."
            )
        numbers.append(int(stripped))
    return numbers


def _offered_encodings(transfer_syntax_uid: str) -> list[FrameEncoding]:
    """Return the encodings that frames stored in this syntax can be sent in, default first."""
    if transfer_syntax_uid in LITTLE_ENDIAN_NATIVE_SYNTAXES:
        return [FrameEncoding(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)]
    if transfer_syntax_uid == BIG_ENDIAN_NATIVE_SYNTAX:
        return [FrameEncoding(OCTET_STREAM, BIG_ENDIAN_NATIVE_SYNTAX)]
    stored_as_octets = FrameEncoding(OCTET_STREAM, transfer_syntax_uid)
    media_type = COMPRESSED_FRAME_MEDIA_TYPES.get(transfer_syntax_uid)
    if media_type is None:
        return [stored_as_octets]
    compressed = FrameEncoding(media_type, transfer_syntax_uid)
    # RLE frames default to application/octet-stream with the transfer-syntax parameter,
    # because few clients know image/dicom-rle; both are served when requested.
    if transfer_syntax_uid == RLE_LOSSLESS:
        return [stored_as_octets, compressed]
    return [compressed, stored_as_octets]


def media_range_matches(media_range: str, media_type: str) -> bool:
    if media_range in ("*/*", media_type):
        return True
    return media_range.endswith("/*") and media_type.startswith(media_range[:-1])


def accepted_media_ranges(accept: str) -> list[tuple[str, str | None]]:
    """Return the Accept header's (media range, transfer-syntax parameter) pairs, best first.

    Items are ordered by q-value and then as written; items with q=0 are dropped. A
    ``multipart/related`` item stands for the media type of its ``type`` parameter (``*/*``
    without one), because DICOMweb responses are multipart with parts of that type.
    """
    candidates: list[tuple[float, int, str, str | None]] = []
    for position, item in enumerate(accept.split(",")):
        pieces = [piece.strip() for piece in item.split(";")]
        media_range = pieces[0].lower()
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        if quality <= 0 or not media_range:
            continue
        if media_range in ("multipart/related", "multipart/*"):
            media_range = params.get("type", "*/*").lower()
        candidates.append((-quality, position, media_range, params.get("transfer-syntax")))
    return [(media_range, syntax) for _, _, media_range, syntax in sorted(candidates)]


def negotiate_frame_encoding(accept: str, transfer_syntax_uid: str) -> FrameEncoding | None:
    """Pick the encoding for frames from the Accept header, or None when none is acceptable.

    Each Accept item is either ``multipart/related; type="..."`` or a bare media type, with an
    optional ``transfer-syntax`` parameter (``*`` means as stored). Items are tried by q-value
    and then in order. No Accept header, ``*/*`` and a multipart item without ``type`` accept
    the default encoding.
    """
    offered = _offered_encodings(transfer_syntax_uid)
    if not accept.strip():
        return offered[0]
    for media_range, syntax in accepted_media_ranges(accept):
        for encoding in offered:
            if not media_range_matches(media_range, encoding.media_type):
                continue
            if syntax in (None, "*", encoding.transfer_syntax_uid):
                return encoding
    return None


def native_frame_bytes(pixel_data: bytes, dataset: pydicom.Dataset, index: int) -> bytes:
    """Return frame ``index`` (0-based) of native pixel data, whose frames are packed end to end."""
    frame_bits = (
        int(dataset.Rows)
        * int(dataset.Columns)
        * int(dataset.get("SamplesPerPixel", 1))
        * int(dataset.BitsAllocated)
    )
    if frame_bits % 8 == 0:
        frame_bytes = frame_bits // 8
        frame = pixel_data[index * frame_bytes : (index + 1) * frame_bytes]
        if len(frame) != frame_bytes:
            raise ValueError(
                f"Pixel Data contains {len(pixel_data)} bytes, too few for frame {index + 1} of "
                f"{frame_bytes} bytes, so the file is truncated."
            )
        return frame
    # 1-bit frames (segmentations) need not start on a byte boundary. Pixels are packed from the
    # least significant bit (PS3.5 8.1.1), so the frame is cut out bit by bit and packed again.
    bits = np.unpackbits(np.frombuffer(pixel_data, dtype=np.uint8), bitorder="little")
    frame_bits_array = bits[index * frame_bits : (index + 1) * frame_bits]
    if frame_bits_array.size != frame_bits:
        raise ValueError(
            f"Pixel Data contains {bits.size} bits, too few for frame {index + 1} of {frame_bits} "
            "bits, so the file is truncated."
        )
    return np.packbits(frame_bits_array, bitorder="little").tobytes()


ERROR_CODES = {400: "invalid_frame_list", 404: "not_found", 406: "not_acceptable"}


def _error_response(message: str, status: int) -> HttpResponse:
    """Return the API's ``{"code", "message"}`` error body, as the other DICOMweb endpoints do."""
    return JsonResponse({"code": ERROR_CODES[status], "message": message}, status=status)


def instance_frames_response(
    request: HttpRequest, instance: Instance, frame_list: str
) -> HttpResponse:
    """Return the requested frames as multipart/related parts, one per frame (WADO-RS).

    Native frames are the stored pixel bytes. Compressed frames are the stored fragments of the
    encapsulated Pixel Data, never transcoded. Statuses: 400 for an invalid frame list, 404 for a
    frame beyond Number of Frames or an instance without Pixel Data, 406 when the Accept header
    allows no encoding of the stored transfer syntax, 304 when the client's ETag matches.
    """
    try:
        frame_numbers = parse_frame_list(frame_list)
    except FrameListError as error:
        logger.info("Frames request rejected instance_id=%s status=400: %s", instance.pk, error)
        return _error_response(str(error), 400)

    with open_stored(instance) as handle:
        dataset = pydicom.dcmread(handle)
    transfer_syntax_uid = str(dataset.file_meta.TransferSyntaxUID)
    encoding = negotiate_frame_encoding(request.headers.get("Accept", ""), transfer_syntax_uid)
    if encoding is None:
        logger.info(
            "Frames request rejected instance_id=%s status=406 transfer_syntax=%s",
            instance.pk,
            transfer_syntax_uid,
        )
        offered = ", ".join(e.content_type() for e in _offered_encodings(transfer_syntax_uid))
        return _error_response(
            f"The Accept header {request.headers.get('Accept')!r} allows no encoding of these "
            f"frames. Request multipart/related with one of: {offered}.",
            406,
        )
    if "PixelData" not in dataset:
        logger.info("Frames request rejected instance_id=%s status=404: no Pixel Data", instance.pk)
        return _error_response(
            f"Instance {instance.sop_instance_uid} has no Pixel Data (7FE0,0010), so it has "
            "no frames.",
            404,
        )
    number_of_frames = int(dataset.get("NumberOfFrames") or 1)
    beyond = [number for number in frame_numbers if number > number_of_frames]
    if beyond:
        logger.info(
            "Frames request rejected instance_id=%s status=404 frames=%s number_of_frames=%s",
            instance.pk,
            beyond,
            number_of_frames,
        )
        return _error_response(
            f"Frame(s) {', '.join(map(str, beyond))} not found; instance "
            f"{instance.sop_instance_uid} has {number_of_frames} frame(s), numbered from 1.",
            404,
        )

    frame_token = "-".join(map(str, frame_numbers))
    etag = f'"{instance.sha256}-frames-{frame_token}-{encoding.media_type}"'
    cached = not_modified(request, etag)
    if cached is not None:
        patch_vary_headers(cached, ["Accept"])
        return cached

    pixel_data = dataset.PixelData
    try:
        native = transfer_syntax_uid in LITTLE_ENDIAN_NATIVE_SYNTAXES | {BIG_ENDIAN_NATIVE_SYNTAX}
        if not native:
            extended = None
            if "ExtendedOffsetTable" in dataset:
                extended = (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths)
            frames = [
                pydicom.encaps.get_frame(
                    pixel_data,
                    number - 1,
                    number_of_frames=number_of_frames,
                    extended_offsets=extended,
                )
                for number in frame_numbers
            ]
        else:
            frames = [
                native_frame_bytes(pixel_data, dataset, number - 1) for number in frame_numbers
            ]
    except ValueError as error:
        logger.error(
            "Reading frames failed instance_id=%s transfer_syntax=%s: %s",
            instance.pk,
            transfer_syntax_uid,
            error,
        )
        return _error_response(
            f"Frames of instance {instance.sop_instance_uid} could not be read: {error}", 500
        )

    boundary = uuid.uuid4().hex
    part_header = f"--{boundary}\r\nContent-Type: {encoding.content_type()}\r\n\r\n".encode()
    pieces: list[bytes] = []
    for frame in frames:
        pieces.extend([part_header, frame, b"\r\n"])
    pieces.append(f"--{boundary}--\r\n".encode())
    response = HttpResponse(
        b"".join(pieces),
        content_type=(
            f'multipart/related; type="{encoding.media_type}"; '
            f"transfer-syntax={encoding.transfer_syntax_uid}; boundary={boundary}"
        ),
    )
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    patch_vary_headers(response, ["Accept"])
    return response
