"""WADO-RS Retrieve of stored studies, series and instances, and their metadata (PS3.18 10.4).

Instances are returned as stored, byte for byte, in a ``multipart/related;
type="application/dicom"`` body. The File Meta Information of each part names its transfer
syntax. Every body is streamed one file at a time, so a 200-slice study is never held in
memory. Metadata is a DICOM JSON array (PS3.18 F.2) of every instance's header, without Pixel
Data.

Statuses follow PS3.18 Table 10.4.3-1. The status is 200 with every instance, and 206 when
some were left out (a series with burned-in annotation for a user who is not an admin, or a
file missing from storage), with each reason in a ``Warning`` header. A matching ETag gets 304.
Errors (404, 406) have the ``{"code", "message"}`` body.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pydicom
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers

from webapp.core.models import Instance
from webapp.review.access import InstanceSelection
from webapp.review.wado import (
    CACHE_CONTROL,
    DICOM_CONTENT_TYPE,
    accepted_media_ranges,
    media_range_matches,
    not_modified,
    open_stored,
)

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
# A Transfer Syntax parameter of "*" (PS3.18 8.7.3.5.2) or none: the instances as stored.
# TODO: without the parameter, PS3.18 8.7.3.4 requires Explicit VR Little Endian, which needs
# transcoding of instances stored in another transfer syntax.
AS_STORED = "*"
CHUNK_BYTES = 1024 * 1024
# A study or series gains instances when more of it is uploaded, so clients revalidate each
# time. A matching ETag costs one query and no file read.
COLLECTION_CACHE_CONTROL = "private, no-cache"
# Responses that leave out missing files must not be reused once the files are back.
NO_STORE = "no-store"
MISSING_FILES_MESSAGE = (
    "The stored files of the requested instances are missing from storage; upload the study again."
)


class NotAcceptableError(Exception):
    """The Accept header allows none of the media types this resource is served in."""


@dataclass(frozen=True)
class RetrieveOptions:
    """Caching headers of one retrieve response."""

    etag: str
    cache_control: str


def collection_options(instances: Iterable[Instance], kind: str) -> RetrieveOptions:
    """Return the options of a study or series response: an ETag over the instances' hashes."""
    digest = hashlib.sha256(kind.encode())
    for instance in instances:
        digest.update(instance.sha256.encode())
    return RetrieveOptions(f'"{digest.hexdigest()}"', COLLECTION_CACHE_CONTROL)


def instance_options(instance: Instance, kind: str) -> RetrieveOptions:
    """Return the options of one instance's response: its bytes and ETag never change."""
    suffix = "" if kind == "dicom" else f"-{kind}"
    return RetrieveOptions(f'"{instance.sha256}{suffix}"', CACHE_CONTROL)


def negotiate_transfer_syntaxes(accept: str) -> list[str]:
    """Return the transfer syntaxes the client accepts instances in, best first.

    ``AS_STORED`` stands for a ``transfer-syntax=*`` parameter or none. Raises
    NotAcceptableError when no Accept item allows ``application/dicom``.
    """
    if not accept.strip():
        return [AS_STORED]
    syntaxes = [
        syntax or AS_STORED
        for media_range, syntax in accepted_media_ranges(accept)
        if media_range_matches(media_range, DICOM_CONTENT_TYPE)
    ]
    if not syntaxes:
        raise NotAcceptableError(
            f"The Accept header {accept!r} does not allow application/dicom. Request "
            'multipart/related; type="application/dicom", or .../metadata for the headers.'
        )
    return syntaxes


def check_metadata_accept(accept: str) -> None:
    """Raise NotAcceptableError unless the Accept header allows DICOM JSON."""
    if not accept.strip():
        return
    for media_range, _ in accepted_media_ranges(accept):
        if media_range_matches(media_range, DICOM_JSON) or media_range == "application/json":
            return
    raise NotAcceptableError(
        f"The Accept header {accept!r} does not allow application/dicom+json, the only "
        "metadata format served here (no application/dicom+xml)."
    )


def not_acceptable_response(error: NotAcceptableError) -> HttpResponse:
    return JsonResponse({"code": "not_acceptable", "message": str(error)}, status=406)


def _stored_transfer_syntaxes(instances: list[Instance]) -> set[str]:
    syntaxes = set()
    for instance in instances:
        with open_stored(instance) as handle:
            dataset = pydicom.dcmread(
                handle, stop_before_pixels=True, specific_tags=["SOPClassUID"]
            )
        syntaxes.add(str(dataset.file_meta.TransferSyntaxUID))
    return syntaxes


def _unmet_transfer_syntax(requested: list[str], instances: list[Instance]) -> set[str] | None:
    """Return the stored transfer syntaxes when no requested syntax covers them all, else None.

    Instances are never transcoded, so a request for one transfer syntax is met only when every
    instance is stored in it.
    """
    if AS_STORED in requested:
        return None
    stored = _stored_transfer_syntaxes(instances)
    return None if any(stored == {syntax} for syntax in requested) else stored


@dataclass
class _Available:
    instances: list[Instance]
    withheld: int
    missing: int

    def warnings(self) -> list[str]:
        texts = []
        if self.withheld:
            texts.append(
                f"{self.withheld} instance(s) left out: their series has burned-in "
                "annotation, which only admins can open."
            )
        if self.missing:
            texts.append(f"{self.missing} instance(s) left out: their files are missing.")
        return texts


def _available(selection: InstanceSelection) -> _Available:
    """Return the selected instances whose files exist, checked before the body starts."""
    present: list[Instance] = []
    missing: list[Instance] = []
    for item in selection.instances:
        (present if default_storage.exists(item.file.name) else missing).append(item)
    if missing:
        logger.error(
            "Retrieve leaves out %d instance(s) missing from storage, instance_ids=%s",
            len(missing),
            [item.pk for item in missing],
        )
    return _Available(present, selection.withheld, len(missing))


def _finish(
    response: HttpResponseBase, options: RetrieveOptions, available: _Available
) -> HttpResponseBase:
    if available.missing:
        response["Cache-Control"] = NO_STORE
    else:
        response["ETag"] = options.etag
        response["Cache-Control"] = options.cache_control
    warnings = available.warnings()
    if warnings:
        response.status_code = 206
        # RFC 9111 Warning syntax; code 299 is a persistent miscellaneous warning.
        response["Warning"] = ", ".join(f'299 - "{text}"' for text in warnings)
    patch_vary_headers(response, ["Accept"])
    return response


def _revalidated(request: HttpRequest, options: RetrieveOptions) -> HttpResponse | None:
    """Return 304 Not Modified when the request's If-None-Match names the current ETag."""
    cached = not_modified(request, options.etag)
    if cached is not None:
        cached["Cache-Control"] = options.cache_control
        patch_vary_headers(cached, ["Accept"])
    return cached


def _not_found(message: str) -> HttpResponse:
    return JsonResponse({"code": "not_found", "message": message}, status=404)


def _dicom_parts(instances: list[Instance], boundary: str) -> Iterator[bytes]:
    part_header = f"--{boundary}\r\nContent-Type: {DICOM_CONTENT_TYPE}\r\n\r\n".encode()
    for instance in instances:
        yield part_header
        with open_stored(instance) as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _logged_stream(pieces: Iterator[bytes], label: str, count: int) -> Iterator[bytes]:
    """Yield ``pieces`` and log when the body was sent whole or the stream broke off."""
    sent = 0
    try:
        for piece in pieces:
            sent += len(piece)
            yield piece
    except Exception:
        logger.exception("Retrieve stream failed %s after %d bytes", label, sent)
        raise
    logger.info("Retrieve sent %s instances=%d bytes=%d", label, count, sent)


def dicom_response(
    request: HttpRequest, selection: InstanceSelection, options: RetrieveOptions, label: str
) -> HttpResponseBase:
    """Return the selected instances as ``multipart/related; type="application/dicom"``.

    ``label`` names the resource in logs (database ids, never UIDs or patient data).
    """
    accept = request.headers.get("Accept", "")
    try:
        requested = negotiate_transfer_syntaxes(accept)
    except NotAcceptableError as error:
        logger.info("Retrieve rejected %s status=406", label)
        return not_acceptable_response(error)
    cached = _revalidated(request, options)
    if cached is not None:
        return cached
    available = _available(selection)
    if not available.instances:
        return _not_found(MISSING_FILES_MESSAGE)
    unmet = _unmet_transfer_syntax(requested, available.instances)
    if unmet is not None:
        stored = sorted(unmet)
        logger.info("Retrieve rejected %s status=406 stored_syntaxes=%s", label, stored)
        return not_acceptable_response(
            NotAcceptableError(
                "Instances are sent as stored, never transcoded, and they are stored in "
                f"transfer syntax(es) {', '.join(stored)}. The Accept header {accept!r} allows "
                "none of them. Request transfer-syntax=* or leave the parameter out."
            )
        )
    # Derived from the ETag, so the same instances always give the same bytes. No file can
    # contain the boundary, because it depends on the hashes of the files themselves.
    boundary = f"ceht-{hashlib.sha256(options.etag.encode()).hexdigest()[:32]}"
    content_type = f'multipart/related; type="{DICOM_CONTENT_TYPE}"; boundary={boundary}'
    logger.info("Retrieve started %s instances=%d", label, len(available.instances))
    response = StreamingHttpResponse(
        _logged_stream(
            _dicom_parts(available.instances, boundary), label, len(available.instances)
        ),
        content_type=content_type,
    )
    return _finish(response, options, available)


def _metadata_items(instances: list[Instance]) -> Iterator[bytes]:
    yield b"["
    for index, instance in enumerate(instances):
        with open_stored(instance) as handle:
            dataset = pydicom.dcmread(handle, stop_before_pixels=True)
        yield (b"," if index else b"") + json.dumps(dataset.to_json_dict()).encode()
    yield b"]"


def metadata_response(
    request: HttpRequest, selection: InstanceSelection, options: RetrieveOptions, label: str
) -> HttpResponseBase:
    """Return the headers of the selected instances as a DICOM JSON array."""
    try:
        check_metadata_accept(request.headers.get("Accept", ""))
    except NotAcceptableError as error:
        logger.info("Metadata rejected %s status=406", label)
        return not_acceptable_response(error)
    cached = _revalidated(request, options)
    if cached is not None:
        return cached
    available = _available(selection)
    if not available.instances:
        return _not_found(MISSING_FILES_MESSAGE)
    response = StreamingHttpResponse(
        _logged_stream(
            _metadata_items(available.instances), f"metadata {label}", len(available.instances)
        ),
        content_type=DICOM_JSON,
    )
    return _finish(response, options, available)
