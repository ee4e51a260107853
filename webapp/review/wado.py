"""WADO-URI and WADO-RS responses for stored instances (DICOM PS3.18).

Files are content-addressed, so the SHA-256 is a strong ETag and a cached copy never goes
stale; Cache-Control is private because the images belong to a logged-in user's session.
"""

from __future__ import annotations

import logging
import uuid

import pydicom
from django.core.files import File
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase

from webapp.core.models import Instance

logger = logging.getLogger(__name__)

DICOM_CONTENT_TYPE = "application/dicom"
# One day; the bytes behind an ETag never change, and the session limits who may reuse them.
CACHE_CONTROL = "private, max-age=86400"


def _not_modified(request: HttpRequest, etag: str) -> HttpResponse | None:
    tags = [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]
    if etag in tags or "*" in tags:
        response = HttpResponse(status=304)
        response["ETag"] = etag
        response["Cache-Control"] = CACHE_CONTROL
        return response
    return None


def _open_stored(instance: Instance) -> File:
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
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    response = FileResponse(_open_stored(instance), content_type=DICOM_CONTENT_TYPE)
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    response["Content-Length"] = str(instance.size_bytes)
    return response


def instance_multipart_response(request: HttpRequest, instance: Instance) -> HttpResponse:
    """Return the instance as the one part of a multipart/related response (WADO-RS)."""
    etag = f'"{instance.sha256}"'
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    with _open_stored(instance) as handle:
        data = handle.read()
    boundary = uuid.uuid4().hex
    body = b"".join(
        [
            f"--{boundary}\r\nContent-Type: {DICOM_CONTENT_TYPE}\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    response = HttpResponse(
        body,
        content_type=f'multipart/related; type="{DICOM_CONTENT_TYPE}"; boundary={boundary}',
    )
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    return response


def instance_metadata_response(request: HttpRequest, instance: Instance) -> HttpResponse:
    """Return the instance's header as DICOM JSON (PS3.18 F.2), without the pixel data."""
    etag = f'"{instance.sha256}-metadata"'
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    with _open_stored(instance) as handle:
        dataset = pydicom.dcmread(handle, stop_before_pixels=True)
    response = JsonResponse([dataset.to_json_dict()], safe=False)
    response["Content-Type"] = "application/dicom+json"
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    return response
