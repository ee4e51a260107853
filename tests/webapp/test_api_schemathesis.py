"""The OpenAPI schema against the API: schemathesis generates requests from the schema, sends
them to the in-process WSGI app with a token, and checks every response against the schema
(status codes, content type, body, headers) and that the server never returns 5xx.

Covered: every read endpoint of /api/v1/, and POST /api/v1/ground-truth/, whose accepted
requests add valid ground-truth versions. Uploads and STOW-RS are left out: their bodies are
DICOM files that random data cannot stand for (tests/webapp/test_ingest_api.py covers them).
The number of examples per operation is bounded, so the whole file runs in well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.webapp.test_research_support import build_cohort

MAX_EXAMPLES = 5


class LazyWsgiApp:
    """Django's WSGI app, built at the first request: after the test settings apply (plain
    HTTP; see tests/webapp/conftest.py), not when this module is imported."""

    def __init__(self) -> None:
        self.handler: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.handler is None:
            self.handler = get_wsgi_application()
        return self.handler(environ, start_response)


schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
schema.app = LazyWsgiApp()
api_schema = schema.include(path_regex=r"^/api/v1/").exclude(path_regex=r"/uploads/|/studies/$")


@pytest.fixture
def api_token(
    db: None,
    settings: Any,
    coordinator: Any,
    researcher: Any,
    reader: Any,
    second_reader: Any,
) -> str:
    """A token of a user holding the coordinator and researcher roles, over a small cohort."""
    # schemathesis' WSGI transport sends "Host: localhost".
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    from django.contrib.auth.models import Group

    build_cohort(coordinator, reader, second_reader)
    researcher.groups.add(Group.objects.get(name="coordinator"))
    return Token.objects.create(user=researcher).key


@pytest.fixture
def keep_db_connection(api_token: str) -> Iterator[None]:
    """As in Django's test client, requests must not close the database connection at their
    end: the test's transaction lives on it."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@api_schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
def test_api_matches_its_schema(case: Any, api_token: str, keep_db_connection: None) -> None:
    excluded = []
    if case.method == "POST":
        # Whether a write is accepted depends on the database (the case code must exist and
        # expected_version must be the latest), which the schema cannot express.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(
        headers={"Authorization": f"Token {api_token}"}, excluded_checks=excluded
    )
