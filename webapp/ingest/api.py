"""Upload endpoints: multipart upload for a case, upload completion, and STOW-RS for PACS."""

from __future__ import annotations

import logging
import re
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.models import User
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, FormParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.core import roles
from webapp.core.audit import client_address_from_request
from webapp.core.models import Case, Study
from webapp.core.services import ClientContext, ServiceError, create_case
from webapp.ingest.identity import IdentityAccessDenied, read_identity_mapping
from webapp.ingest.models import Upload
from webapp.ingest.services import (
    IngestError,
    NamedFile,
    complete_upload,
    ingest_files,
    report_from_upload,
)
from webapp.ingest.stow import DICOM_JSON, StowPart, store_parts
from webapp.ingest.uploads import IngestMultiPartParser
from webapp.research.api import ErrorBodyMixin

logger = logging.getLogger(__name__)


class IsCoordinator(BasePermission):
    """Allows users with the coordinator or admin role."""

    message = "Uploading studies needs the coordinator or admin role."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(
            user
            and user.is_authenticated
            and roles.has_any_role(user, roles.COORDINATOR, roles.ADMIN)
        )


def _error_response(error: IngestError) -> Response:
    return Response(
        {"code": error.code, "message": error.message}, status=status.HTTP_400_BAD_REQUEST
    )


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def get_or_create_case(user: User, code: str, client_address: str | None) -> tuple[Case, bool]:
    """Create the case for a first upload; a parallel batch that created it first wins.

    Returns the case and whether this call created it.
    """
    try:
        return create_case(ClientContext(user, client_address), code=code), True
    except ServiceError as error:
        existing = Case.objects.filter(code=code.strip()).first()
        if error.code == "duplicate_case" and existing is not None:
            return existing, False
        raise


class UploadFormSerializer(serializers.Serializer[Any]):
    """Form fields of an upload request, for the API schema (the view reads them directly)."""

    files = serializers.ListField(child=serializers.FileField())
    paths = serializers.ListField(child=serializers.CharField(), required=False)
    role = serializers.ChoiceField(choices=Study.Role.choices)
    hours_after_mt = serializers.DecimalField(max_digits=6, decimal_places=2, required=False)
    upload_id = serializers.UUIDField(required=False)
    complete = serializers.BooleanField(required=False, default=True)
    create_case = serializers.BooleanField(required=False, default=False)
    file_count = serializers.IntegerField(
        required=False,
        help_text="Number of files in this request; a request with fewer (cut off on the way) "
        "is rejected with code incomplete_request and nothing stored.",
    )


class CaseStudyUploadView(ErrorBodyMixin, APIView):
    """``POST /api/v1/cases/<code>/studies/``: files[] (with optional paths[]) or a zip.

    Form fields: ``create_case`` (true creates a new case with this code), ``role`` (baseline or follow_up), ``hours_after_mt``, optional ``upload_id``
    to group batches and ``complete`` (default true; the upload page sends false and then
    calls the completion endpoint). Returns the upload report.
    """

    permission_classes = [IsCoordinator]
    # Keeps files in memory up to INGEST["UPLOAD_MEMORY_BYTES"] per request.
    parser_classes = [IngestMultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": UploadFormSerializer},
        responses={201: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request, code: str) -> Response:
        user = cast(User, request.user)
        client_address = client_address_from_request(request)
        case = Case.objects.filter(code=code).first()
        case_created = False
        if case is None and _flag(request.data.get("create_case"), False):
            try:
                case, case_created = get_or_create_case(user, code, client_address)
            except ServiceError as error:
                return Response(
                    {"code": error.code, "message": error.message},
                    status=status.HTTP_400_BAD_REQUEST,
                )
        if case is None:
            return Response(
                {
                    "code": "case_not_found",
                    "message": f"Case {code!r} not found; create it first or send create_case=true.",
                },
                status=status.HTTP_404_NOT_FOUND,
            )
        uploaded = request.FILES.getlist("files") or request.FILES.getlist("file")
        paths = request.data.getlist("paths") if hasattr(request.data, "getlist") else []
        if not uploaded:
            return Response(
                {"code": "no_files", "message": "No files were sent; attach them as files[]."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        announced = str(request.data.get("file_count", "")).strip()
        if announced and announced != str(len(uploaded)):
            # A body cut off on the way can still parse: the parts before the cut arrive and
            # the rest is silently missing. The upload page announces its count up front.
            logger.warning(
                "Upload request incomplete case_id=%s files=%d announced=%s",
                case.pk,
                len(uploaded),
                announced[:12],
            )
            return Response(
                {
                    "code": "incomplete_request",
                    "message": f"The request carried {len(uploaded)} of the {announced} files "
                    "it announced, so it was cut off on the way. Send the batch again; nothing "
                    "of it was stored.",
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        if paths and len(paths) != len(uploaded):
            return Response(
                {
                    "code": "paths_mismatch",
                    "message": f"{len(paths)} paths for {len(uploaded)} files; send one path per "
                    "file or none.",
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        files = [
            NamedFile(paths[index] if paths else (item.name or ""), item)
            for index, item in enumerate(uploaded)
        ]
        try:
            report = ingest_files(
                case,
                str(request.data.get("role", "")),
                request.data.get("hours_after_mt") or None,
                files,
                user,
                upload_id=request.data.get("upload_id") or None,
                complete=_flag(request.data.get("complete"), True),
                case_created=case_created,
                client_address=client_address,
            )
        except IngestError as error:
            return _error_response(error)
        return Response(report.to_dict(), status=status.HTTP_201_CREATED)


class UploadDetailView(ErrorBodyMixin, APIView):
    """``GET /api/v1/uploads/<upload_id>/``: the report so far; ``POST .../complete/`` ends it."""

    permission_classes = [IsCoordinator]

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, upload_id: str) -> Response:
        upload = get_object_or_404(Upload.objects.select_related("case"), upload_id=upload_id)
        return Response(report_from_upload(upload).to_dict())


class UploadCompleteView(ErrorBodyMixin, APIView):
    permission_classes = [IsCoordinator]

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT})
    def post(self, request: Request, upload_id: str) -> Response:
        try:
            report = complete_upload(
                upload_id,
                cast(User, request.user),
                client_address=client_address_from_request(request),
            )
        except IngestError as error:
            if error.code == "upload_not_found":
                return Response({"code": error.code, "message": error.message}, status=404)
            return _error_response(error)
        return Response(report.to_dict())


class MultipartRelatedParser(BaseParser):
    """Splits a ``multipart/related`` body (STOW-RS, DICOM PS3.18) into its parts' bytes."""

    media_type = "multipart/related"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        match = re.search(r'boundary="?([^";]+)"?', media_type or "")
        if match is None:
            raise ParseError("multipart/related request without a boundary parameter.")
        boundary = match.group(1).encode("latin-1")
        body = stream.read() if stream is not None else b""
        delimiter = b"--" + boundary
        if body.strip() and delimiter not in body:
            raise ParseError(
                f"The multipart/related body contains no part delimited by the boundary "
                f"{match.group(1)!r} of the Content-Type header; send the boundary that the "
                "body uses. Nothing was stored."
            )
        if body.strip() and delimiter + b"--" not in body:
            logger.warning("STOW-RS body without its closing boundary (%d bytes)", len(body))
            raise ParseError(
                f"The multipart/related body ends without its closing boundary "
                f"(--{match.group(1)}--): the request was cut off. Send it again; nothing "
                "was stored."
            )
        return {"parts": split_multipart_related(body, boundary)}


def split_multipart_related(body: bytes, boundary: bytes) -> list[tuple[str, bytes]]:
    """Return (content type, payload) of each part of a multipart body."""
    delimiter = b"--" + boundary
    parts: list[tuple[str, bytes]] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        headers, _, payload = chunk.partition(b"\r\n\r\n")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        content_type = ""
        for line in headers.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-type":
                content_type = value.strip().lower()
        parts.append((content_type, payload))
    return parts


class DicomJsonRenderer(JSONRenderer):
    """Renders JSON as ``application/dicom+json``, the media type DICOMweb clients accept."""

    media_type = DICOM_JSON
    format = "dicomjson"


class StowRsView(ErrorBodyMixin, APIView):
    """``POST /dicomweb/studies``: store instances sent by a PACS router or a script (STOW-RS).

    Query parameters: ``case`` (else INGEST STOW_DEFAULT_CASE), ``role`` (default baseline),
    ``hours_after_mt``. The body is ``multipart/related; type="application/dicom"``; another
    request media type gets 415. The response is the PS3.18 Store Instances Response Module
    (``application/dicom+json``; see ``webapp.ingest.stow``) with status 200, 202 (some parts
    failed) or 409 (none stored); the ``Link`` header (``rel="describedby"``) points to the
    upload report of this application.
    """

    permission_classes = [IsCoordinator]
    parser_classes = [MultipartRelatedParser]
    renderer_classes = [DicomJsonRenderer, JSONRenderer]

    @extend_schema(
        request={"multipart/related": OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter(
                "case", str, description="Case code; default INGEST_STOW_DEFAULT_CASE"
            ),
            OpenApiParameter("role", str, description="baseline (default) or follow_up"),
            OpenApiParameter("hours_after_mt", float, description="Hours after thrombectomy"),
        ],
        responses={
            200: OpenApiTypes.OBJECT,
            202: OpenApiTypes.OBJECT,
            400: OpenApiTypes.OBJECT,
            409: OpenApiTypes.OBJECT,
            415: OpenApiTypes.OBJECT,
        },
    )
    def post(self, request: Request) -> Response:
        part_type = _media_type_parameter(request.content_type, "type")
        if part_type and part_type.lower() != "application/dicom":
            return Response(
                {
                    "code": "unsupported_media_type",
                    "message": f"multipart/related of type {part_type!r} is not supported; "
                    'send type="application/dicom" with one DICOM file per part.',
                },
                status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        code = request.query_params.get("case") or settings.INGEST["STOW_DEFAULT_CASE"]
        if not code:
            return Response(
                {
                    "code": "case_required",
                    "message": "No case given: add ?case=<code>, or set INGEST_STOW_DEFAULT_CASE "
                    "to an inbox case.",
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        case = get_object_or_404(Case, code=code)
        parts = [StowPart(kind, payload) for kind, payload in request.data.get("parts", [])]
        if not parts:
            return Response(
                {"code": "no_parts", "message": "The multipart/related body has no parts."},
                status=status.HTTP_400_BAD_REQUEST,
            )

        def retrieve_url(study: str, series: str, instance: str) -> str:
            # WADO-RS Retrieve Study or Retrieve Instance (webapp.review.dicomweb).
            if not series:
                return request.build_absolute_uri(reverse("wado-rs-study", args=[study]))
            return request.build_absolute_uri(
                reverse(
                    "wado-rs-instance",
                    kwargs={"study": study, "series": series, "instance": instance},
                )
            )

        try:
            result = store_parts(
                case,
                request.query_params.get("role") or Study.Role.BASELINE,
                request.query_params.get("hours_after_mt") or None,
                parts,
                cast(User, request.user),
                retrieve_url,
                client_address=client_address_from_request(request),
            )
        except IngestError as error:
            return _error_response(error)
        response = Response(result.body, status=result.status, content_type=DICOM_JSON)
        if result.upload_id:
            report_url = request.build_absolute_uri(
                reverse("api-upload", kwargs={"upload_id": result.upload_id})
            )
            response["Link"] = f'<{report_url}>; rel="describedby"; type="application/json"'
        return response


def _media_type_parameter(content_type: str, name: str) -> str:
    """Return parameter ``name`` of a Content-Type value, without quotes ('' when absent)."""
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return ""


class IdentityMappingView(ErrorBodyMixin, APIView):
    """``GET /api/v1/cases/<code>/identity-mapping/``: original identifiers behind a pseudonym.

    Only for the identity steward group and admins; every read, and every refused attempt, is
    audited. Responses are never cached.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 403: OpenApiTypes.OBJECT})
    def get(self, request: Request, code: str) -> Response:
        case = get_object_or_404(Case, code=code)
        try:
            mapping = read_identity_mapping(
                request.user, case, client_address_from_request(request)
            )
        except IdentityAccessDenied as error:
            response = Response(
                {"code": error.code, "message": error.message}, status=status.HTTP_403_FORBIDDEN
            )
        else:
            response = Response(mapping)
        response["Cache-Control"] = "no-store"
        return response
