"""REST API access and content, the schema, and the read-only admin pages."""

from __future__ import annotations

from typing import Any

from django.test import Client
from rest_framework.authtoken.models import Token

from webapp.core.models import AuditEvent, Case
from webapp.core.services import ClientContext, create_case
from webapp.jobs.models import ModelVersion


def test_case_list_api_returns_cases_for_token_user(
    client: Client, reader: Any, coordinator: Any
) -> None:
    create_case(ClientContext(coordinator), code="API-002", split=Case.Split.TRAIN)
    create_case(ClientContext(coordinator), code="API-001")
    token = Token.objects.create(user=reader)
    response = client.get("/api/v1/cases/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [row["code"] for row in body["results"]] == ["API-001", "API-002"]
    assert body["results"][1]["split"] == "train"
    assert body["results"][0]["study_count"] == 0


def test_api_rejects_user_without_role(client: Client, outsider: Any) -> None:
    token = Token.objects.create(user=outsider)
    response = client.get("/api/v1/cases/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 403
    assert "needs a logged-in user with a project role" in response.json()["message"]


def test_invalid_token_gets_401(client: Client, db: None) -> None:
    response = client.get("/api/v1/cases/", HTTP_AUTHORIZATION="Token 0123456789abcdef")
    assert response.status_code == 401


def test_case_detail_api_by_code(client: Client, reader: Any, coordinator: Any) -> None:
    create_case(ClientContext(coordinator), code="API.003")
    client.force_login(reader)
    response = client.get("/api/v1/cases/API.003/")
    assert response.status_code == 200
    assert response.json()["code"] == "API.003"
    assert client.get("/api/v1/cases/NOPE/").status_code == 404


def test_api_is_read_only(client: Client, coordinator: Any) -> None:
    client.force_login(coordinator)
    response = client.post("/api/v1/cases/", {"code": "NEW-1"}, content_type="application/json")
    assert response.status_code == 405
    assert Case.objects.count() == 0


def test_schema_lists_case_endpoints(client: Client, researcher: Any) -> None:
    client.force_login(researcher)
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/v1/cases/" in paths
    assert "/api/v1/cases/{code}/" in paths


def test_case_list_page_shows_cases(client: Client, reader: Any, coordinator: Any) -> None:
    create_case(ClientContext(coordinator), code="PAGE-001", is_synthetic=True)
    client.force_login(reader)
    html = client.get("/").content.decode()
    assert '<a href="/cases/PAGE-001/">PAGE-001</a>' in html
    assert '<span class="tag">synthetic</span>' in html
    assert "<caption>All cases by pseudonymous code (1)</caption>" in html


def test_empty_case_list_says_so(client: Client, reader: Any) -> None:
    client.force_login(reader)
    assert b"No cases yet." in client.get("/").content


def test_audit_admin_is_read_only(client: Client, admin_user: Any, coordinator: Any) -> None:
    case = create_case(ClientContext(coordinator), code="ADM-001")
    event = AuditEvent.objects.get(action="case.created")
    client.force_login(admin_user)
    assert client.get("/admin/core/auditevent/").status_code == 200
    assert client.get(f"/admin/core/auditevent/{event.pk}/change/").status_code == 200
    assert client.get("/admin/core/auditevent/add/").status_code == 403
    response = client.post(f"/admin/core/auditevent/{event.pk}/change/", {"action": "case.deleted"})
    assert response.status_code == 403
    assert (
        client.post(f"/admin/core/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    event.refresh_from_db()
    assert event.action == "case.created"
    assert case.pk is not None


def test_case_change_in_admin_is_audited(client: Client, admin_user: Any, coordinator: Any) -> None:
    case = create_case(ClientContext(coordinator), code="ADM-002")
    client.force_login(admin_user)
    response = client.post(
        f"/admin/core/case/{case.pk}/change/",
        {"code": "ADM-002", "split": "train", "readers_blinded": "on"},
        REMOTE_ADDR="192.0.2.55",
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="case.changed")
    assert event.actor == admin_user
    assert event.details["changed_fields"] == ["split"]
    assert event.client_address == "192.0.2.55"


def test_case_list_query_count_is_constant(
    client: Client, reader: Any, coordinator: Any, django_assert_max_num_queries: Any
) -> None:
    client.force_login(reader)
    for number in range(3):
        create_case(ClientContext(coordinator), code=f"Q-{number:03d}")
    with django_assert_max_num_queries(6) as few:
        assert client.get("/").status_code == 200
    for number in range(3, 30):
        create_case(ClientContext(coordinator), code=f"Q-{number:03d}")
    with django_assert_max_num_queries(6) as many:
        assert client.get("/").status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)


def test_model_version_admin_registers_and_promotes(client: Client, admin_user: Any) -> None:
    client.force_login(admin_user)
    response = client.post(
        "/admin/jobs/modelversion/add/",
        {
            "kind": "lr",
            "version": "1.0.0",
            "artifact_path": "lr-1.0.0.skops",
            "sha256": "b" * 64,
            "params": "{}",
            "metrics": "{}",
            "training_cohort": "{}",
            "intended_use": "Research evaluation only.",
        },
    )
    assert response.status_code == 302
    model_version = ModelVersion.objects.get(kind="lr", version="1.0.0")
    assert model_version.registered_by == admin_user

    # Only the promotion flag is editable; a changed hash in the form is ignored.
    response = client.post(
        f"/admin/jobs/modelversion/{model_version.pk}/change/",
        {"is_promoted": "on", "sha256": "c" * 64},
    )
    assert response.status_code == 302
    model_version.refresh_from_db()
    assert model_version.is_promoted is True
    assert model_version.sha256 == "b" * 64

    actions = list(
        AuditEvent.objects.filter(object_type="jobs.modelversion")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["model_version.registered", "model_version.promotion_changed"]
