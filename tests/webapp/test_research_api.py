"""REST API of the research app: access rules, blinding, error bodies, exports and the schema."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.webapp.test_research_support import Cohort, build_cohort
from webapp.core.models import AuditEvent, GroundTruth


@pytest.fixture
def cohort(coordinator: Any, reader: Any, second_reader: Any) -> Cohort:
    return build_cohort(coordinator, reader, second_reader)


def _api(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _codes(response: Any) -> list[str]:
    return [row["case"] for row in response.json()["results"]]


def test_researcher_sees_every_prediction(researcher: Any, cohort: Cohort) -> None:
    response = _api(researcher).get("/api/v1/predictions/")

    assert response.status_code == 200
    assert response.json()["count"] == 6
    assert sorted(set(_codes(response))) == ["R-01", "R-02", "R-03", "R-04", "R-08"]


def test_reader_sees_predictions_only_of_labelled_cases(reader: Any, cohort: Cohort) -> None:
    response = _api(reader).get("/api/v1/predictions/")

    assert sorted(set(_codes(response))) == ["R-01", "R-02"]


def test_reader_sees_ground_truth_only_of_labelled_cases(reader: Any, cohort: Cohort) -> None:
    response = _api(reader).get("/api/v1/ground-truth/")

    assert _codes(response) == ["R-01", "R-02"]
    assert response.json()["results"][0]["heidelberg_subtype"] == "PH1"


def test_unlabelled_reader_sees_only_own_adjudications(
    adjudicator: Any, reader: Any, cohort: Cohort
) -> None:
    # The adjudicator also has the reader role and has labelled nothing yet.
    assert _api(adjudicator).get("/api/v1/adjudications/").json()["count"] == 0
    # The reader labelled R-01, so the other reader's label is visible too.
    rows = _api(reader).get("/api/v1/adjudications/?case=R-01").json()["results"]
    assert len(rows) == 3
    assert [row["version"] for row in rows if row["reader"] == f"reader_{reader.pk}"] == [1, 2]


def test_adjudications_use_reader_codes(researcher: Any, reader: Any, cohort: Cohort) -> None:
    rows = _api(researcher).get("/api/v1/adjudications/?case=R-02").json()["results"]

    assert {row["reader"] for row in rows} <= {f"reader_{reader.pk}", f"reader_{reader.pk + 1}"}
    assert "reader_ann" not in str(rows)


def test_jobs_are_listed_with_errors(reader: Any, cohort: Cohort) -> None:
    rows = _api(reader).get("/api/v1/jobs/?case=R-07").json()["results"]

    assert len(rows) == 1
    assert rows[0]["status"] == "failed"
    assert rows[0]["error_code"] == "load_failed"
    assert "predictions" not in rows[0]


def test_studies_and_model_versions(researcher: Any, cohort: Cohort) -> None:
    studies = _api(researcher).get("/api/v1/studies/?case=R-01").json()["results"]
    versions = _api(researcher).get("/api/v1/model-versions/").json()["results"]

    assert [row["role"] for row in studies] == ["baseline", "follow_up"]
    assert studies[1]["out_of_window"] is True
    assert [(row["kind"], row["version"]) for row in versions] == [
        ("lr", "2.0-beta"),
        ("svm", "1.0"),
    ]
    assert versions[1]["is_promoted"] is True


def test_ground_truth_post_appends_version(coordinator: Any, cohort: Cohort) -> None:
    response = _api(coordinator).post(
        "/api/v1/ground-truth/",
        {"case": "R-04", "label": "HT", "heidelberg_subtype": "HI1", "expected_version": 0},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert response.json()["version"] == 1
    assert GroundTruth.objects.get(case__code="R-04").heidelberg_subtype == "HI1"


def test_stale_ground_truth_post_is_409(coordinator: Any, cohort: Cohort) -> None:
    response = _api(coordinator).post(
        "/api/v1/ground-truth/",
        {"case": "R-01", "label": "CE", "expected_version": 0},
        format="json",
    )

    assert response.status_code == 409
    assert response.json()["code"] == "stale_version"
    assert "now version 1" in response.json()["message"]


def test_researcher_cannot_post_ground_truth(researcher: Any, cohort: Cohort) -> None:
    response = _api(researcher).post(
        "/api/v1/ground-truth/",
        {"case": "R-04", "label": "HT", "expected_version": 0},
        format="json",
    )

    assert response.status_code == 403
    assert response.json()["code"] == "role_required"


def test_invalid_label_gets_error_body(coordinator: Any, cohort: Cohort) -> None:
    response = _api(coordinator).post(
        "/api/v1/ground-truth/", {"case": "R-04", "label": "blood", "expected_version": 0}
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "is not a valid choice" in response.json()["message"]


def test_unknown_row_gets_error_body(researcher: Any, cohort: Cohort) -> None:
    response = _api(researcher).get("/api/v1/predictions/999999/")

    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "message": "No Prediction matches the given query.",
    }


def test_export_endpoint_returns_rows_and_audits(researcher: Any, cohort: Cohort) -> None:
    response = _api(researcher).get("/api/v1/exports/cases/?split=test")

    assert response.status_code == 200
    assert [row["case_code"] for row in response.json()] == ["R-01", "R-02", "R-03", "R-04"]
    event = AuditEvent.objects.get(action="export.downloaded")
    assert event.details["format"] == "json"


def test_export_endpoint_rejects_reader(reader: Any, cohort: Cohort) -> None:
    response = _api(reader).get("/api/v1/exports/cases/")

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_anonymous_gets_401_error_body(db: None) -> None:
    response = APIClient().get("/api/v1/predictions/")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_schema_lists_research_endpoints(researcher: Any) -> None:
    response = _api(researcher).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    paths = response.json()["paths"]
    for path in (
        "/api/v1/predictions/",
        "/api/v1/ground-truth/",
        "/api/v1/adjudications/",
        "/api/v1/jobs/",
        "/api/v1/studies/",
        "/api/v1/model-versions/",
        "/api/v1/exports/{kind}/",
    ):
        assert path in paths
