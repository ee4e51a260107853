"""WADO-RS endpoints under ``/dicomweb/``: retrieve studies, series, instances, frames, metadata.

These are API endpoints for DICOMweb clients as well as browsers. A session or an API token
logs in, so the token a PACS router uses for STOW-RS also retrieves what it stored. Any project
role may read. Anonymous requests get 401, users without a role 403, and errors have the API's
``{"code", "message"}`` body. Blinding never hides images, only labels and model output, but
series with burned-in annotation are for admins only (see ``access``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from webapp.research.api import ErrorBodyMixin
from webapp.review import access, retrieve, wado


class JsonErrorsOnly(BaseContentNegotiation):
    """Leave the Accept header to the views, which negotiate DICOM media types themselves.

    DRF renders only the error bodies here, always as JSON, so a DICOM Accept header does
    not turn an error into a 406.
    """

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, str(renderer.media_type)


class DicomWebView(ErrorBodyMixin, APIView):
    """Base of the WADO-RS views: login by session or token, any role, JSON error bodies."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonErrorsOnly

    def handle_exception(self, exc: Exception) -> Any:
        # Keep the messages of the access checks, which tell the user what to do. DRF would
        # replace them with generic ones.
        if isinstance(exc, Http404):
            exc = exceptions.NotFound(str(exc) or None)
        elif isinstance(exc, PermissionDenied):
            exc = exceptions.PermissionDenied(str(exc) or None)
        return super().handle_exception(exc)


DICOM_RESPONSES = {
    200: OpenApiResponse(
        OpenApiTypes.BINARY, description='multipart/related; type="application/dicom"'
    ),
    206: OpenApiResponse(OpenApiTypes.BINARY, description="Some instances left out; see Warning"),
    304: OpenApiResponse(description="The client's copy (If-None-Match) is current"),
    406: OpenApiResponse(
        OpenApiTypes.OBJECT, description="The Accept header allows no served type"
    ),
}
METADATA_RESPONSES = {
    200: OpenApiResponse(
        OpenApiTypes.OBJECT, description="DICOM JSON array (application/dicom+json)"
    ),
    206: OpenApiResponse(OpenApiTypes.OBJECT, description="Some instances left out; see Warning"),
    304: DICOM_RESPONSES[304],
    406: DICOM_RESPONSES[406],
}


def _select(
    request: Request, study: str, series: str | None, instance: str | None, kind: str
) -> tuple[access.InstanceSelection, retrieve.RetrieveOptions, str]:
    """Return the instances the URL names, their caching options and a label for the logs.

    The label names the resource by database id, because UIDs stay out of logs.
    """
    if instance is not None and series is not None:
        stored = access.instance_for_user(request.user, study, series, instance)
        selection = access.InstanceSelection([stored], 0)
        return selection, retrieve.instance_options(stored, kind), f"instance_id={stored.pk}"
    selection = access.instances_for_user(request.user, study, series)
    first = selection.instances[0]
    if series is None:
        label = f"study_id={first.series.study_id}"
    else:
        label = f"series_id={first.series_id}"
    return selection, retrieve.collection_options(selection.instances, kind), label


class RetrieveView(DicomWebView):
    """``GET /dicomweb/studies/{study}[/series/{series}[/instances/{instance}]]`` (PS3.18 10.4).

    Returns every stored instance of the study, of the series or the one instance.
    """

    @extend_schema(responses=DICOM_RESPONSES)
    def get(
        self, request: Request, study: str, series: str | None = None, instance: str | None = None
    ) -> HttpResponseBase:
        selection, options, label = _select(request, study, series, instance, "dicom")
        return retrieve.dicom_response(request._request, selection, options, label)


class MetadataView(DicomWebView):
    """``GET`` the same resources as ``RetrieveView`` plus ``/metadata``: headers as DICOM JSON."""

    @extend_schema(responses=METADATA_RESPONSES)
    def get(
        self, request: Request, study: str, series: str | None = None, instance: str | None = None
    ) -> HttpResponseBase:
        selection, options, label = _select(request, study, series, instance, "metadata")
        return retrieve.metadata_response(request._request, selection, options, label)


class FramesView(DicomWebView):
    """``GET .../instances/{instance}/frames/{frame_list}``: stored frame bytes (PS3.18 10.4)."""

    @extend_schema(responses={200: OpenApiTypes.BINARY, 304: DICOM_RESPONSES[304]})
    def get(
        self, request: Request, study: str, series: str, instance: str, frame_list: str
    ) -> HttpResponseBase:
        stored = access.instance_for_user(request.user, study, series, instance)
        return wado.instance_frames_response(request._request, stored, frame_list)
