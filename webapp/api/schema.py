"""OpenAPI schema generation: operations document their error responses.

Without this, drf-spectacular documents only the success status, while the API also returns
401 (no or bad token), 403 (no role, or a blinded case), 404 (unknown id or page) and 400
(invalid input), each with the body ``{"code": ..., "message": ...}``. Only views that use that
body (``ErrorBodyMixin``) get these declarations; others keep their own. The schemathesis tests
(tests/webapp/test_api_schemathesis.py) check responses against these declarations.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

ERROR_DESCRIPTIONS = {
    "400": "Invalid input; the message names the field and what to do.",
    "401": "No credentials, or an unknown token.",
    "403": "The user lacks the role this needs, or the case is blinded for this reader.",
    "404": "No such object or page (or hidden from this reader).",
}
WRITE_ERROR_DESCRIPTIONS = {
    "409": "A newer version exists; reload and resubmit with its version number.",
}


def _uses_error_body(view: Any) -> bool:
    """Return whether the view returns errors as ``{"code", "message"}`` (``ErrorBodyMixin``)."""
    from webapp.research.api import error_body_handler

    get_handler = getattr(view, "get_exception_handler", None)
    return get_handler is not None and get_handler() is error_body_handler


class ErrorBodySerializer(serializers.Serializer[Any]):
    """The body of every error response of the API."""

    code = serializers.CharField(help_text="Stable error code for programs, e.g. not_found.")
    message = serializers.CharField(help_text="What went wrong and what to do, for people.")


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's schema, plus the error responses every API view can return."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        if self.method == "OPTIONS" or not _uses_error_body(self.view):
            return responses
        errors = dict(ERROR_DESCRIPTIONS)
        if self.method in ("POST", "PUT", "PATCH"):
            errors.update(WRITE_ERROR_DESCRIPTIONS)
        component = self.resolve_serializer(ErrorBodySerializer, "response")
        for status_code, description in errors.items():
            responses.setdefault(
                status_code,
                {
                    "content": {"application/json": {"schema": component.ref}},
                    "description": description,
                },
            )
        return responses
