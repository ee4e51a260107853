"""The health endpoint, request ids in responses and log records."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client
from django_tasks_db.models import DBTaskResultQuerySet

from webapp.request_id import RequestIdLogFilter


def test_healthz_reports_database_and_queue(client: Client, db: None) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "queue": "ok"}}
    assert "no-cache" in response["Cache-Control"]


def test_healthz_reports_unreachable_queue(
    client: Client, db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Any) -> None:
        raise OperationalError("relation django_tasks_database_dbtaskresult does not exist")

    monkeypatch.setattr(DBTaskResultQuerySet, "ready", fail)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "queue": "unreachable"},
    }


def test_response_carries_generated_request_id(client: Client, db: None) -> None:
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]
    assert len(first) == 32
    assert first != second


def test_wellformed_incoming_request_id_is_kept(client: Client, db: None) -> None:
    response = client.get("/healthz", HTTP_X_REQUEST_ID="proxy-abc-12345")
    assert response["X-Request-ID"] == "proxy-abc-12345"


def test_malformed_incoming_request_id_is_replaced(client: Client, db: None) -> None:
    response = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert response["X-Request-ID"] != "bad id\nwith newline"
    assert len(response["X-Request-ID"]) == 32


def test_log_records_in_a_request_carry_its_id(
    client: Client, reader: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdLogFilter())
    client.force_login(reader)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get("/cases/NO-SUCH-CASE/")
    assert response.status_code == 404
    records = [record for record in caplog.records if record.name == "django.request"]
    assert len(records) == 1
    assert records[0].request_id == response["X-Request-ID"]  # type: ignore[attr-defined]


def test_log_records_outside_requests_use_placeholder() -> None:
    record = logging.LogRecord("webapp", logging.INFO, __file__, 1, "message", None, None)
    RequestIdLogFilter().filter(record)
    assert record.request_id == "-"  # type: ignore[attr-defined]
