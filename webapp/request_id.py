"""Request ids: one per request, added to every log record and to the response header."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
# Placeholder in log records written outside a request (workers, management commands).
NO_REQUEST_ID = "-"

_current_request_id: ContextVar[str] = ContextVar("request_id", default=NO_REQUEST_ID)
# An id sent by a trusted proxy is reused only when it is short and plain, so a client cannot
# inject line breaks or long text into the log.
_INCOMING_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def get_request_id() -> str:
    """Return the id of the request being handled, or ``NO_REQUEST_ID`` outside a request."""
    return _current_request_id.get()


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to every record so the log format can print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Django logs 4xx and 5xx responses after the middleware has returned, so the context
        # variable is already reset; those records carry the request itself instead.
        request = getattr(record, "request", None)
        record.request_id = getattr(request, "request_id", None) or _current_request_id.get()
        return True


class RequestIdMiddleware:
    """Assigns each request an id, reusing a well-formed incoming ``X-Request-ID``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _INCOMING_ID_PATTERN.match(incoming) else uuid.uuid4().hex
        token = _current_request_id.set(request_id)
        try:
            request.request_id = request_id  # type: ignore[attr-defined]
            response = self.get_response(request)
        finally:
            _current_request_id.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response
