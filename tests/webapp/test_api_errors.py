"""API error responses: documented in the schema, and JSON even where no API view matched."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db


def test_unmatched_api_path_returns_json(client: Client, reader: Any) -> None:
    client.force_login(reader)
    response = client.get("/api/v1/jobs/0.5/")  # ids are integers: no URL pattern matches
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "not_found"
    assert "/api/v1/jobs/0.5/" in body["message"]


def test_unmatched_page_path_keeps_the_html_page(client: Client, reader: Any) -> None:
    client.force_login(reader)
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_case_endpoint_errors_use_the_api_error_body(client: Client, reader: Any) -> None:
    client.force_login(reader)
    response = client.get("/api/v1/cases/NO-SUCH-CASE/")
    assert response.status_code == 404
    assert set(response.json()) == {"code", "message"}


def test_schema_documents_error_responses() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    detail = schema["paths"]["/api/v1/jobs/{id}/"]["get"]["responses"]
    assert {"200", "400", "401", "403", "404"} <= set(detail)
    assert detail["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert set(schema["components"]["schemas"]["ErrorBody"]["required"]) == {"code", "message"}
    write = schema["paths"]["/api/v1/ground-truth/"]["post"]["responses"]
    assert "409" in write
    export = schema["paths"]["/api/v1/exports/{kind}/"]["get"]
    assert export["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
