"""Login page, login audit events and the failed-login throttle."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.conftest import PERSONA_PASSWORD
from webapp.core.models import AuditEvent

LOGIN_URL = "/accounts/login/"


def _attempt(client: Client, username: str, password: str, address: str = "198.51.100.7") -> Any:
    return client.post(LOGIN_URL, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_login_page_is_accessible_markup(client: Client, db: None) -> None:
    response = client.get(LOGIN_URL)
    html = response.content.decode()
    assert response.status_code == 200
    assert '<html lang="en">' in html
    assert '<label for="id_username">Username</label>' in html
    assert '<label for="id_password">Password</label>' in html
    assert '<main id="main">' in html
    assert "Research use only — not a medical device" in html


def test_valid_login_is_audited(client: Client, reader: Any) -> None:
    response = _attempt(client, "reader_ann", PERSONA_PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == "/"
    event = AuditEvent.objects.get(action="auth.login_succeeded")
    assert event.actor == reader
    assert event.client_address == "198.51.100.7"


def test_failed_login_is_audited_without_password(client: Client, reader: Any) -> None:
    response = _attempt(client, "reader_ann", "wrong password 1")
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.actor is None
    assert event.details == {"username": "reader_ann"}
    assert "wrong password" not in str(event.details)


def test_login_is_throttled_after_five_failures(client: Client, reader: Any, settings: Any) -> None:
    settings.LOGIN_THROTTLE_MAX_FAILURES = 5
    for attempt in range(5):
        assert _attempt(client, "reader_ann", f"wrong password {attempt}").status_code == 200
    # The correct password is rejected too while the throttle is active.
    response = _attempt(client, "reader_ann", PERSONA_PASSWORD)
    assert response.status_code == 200
    assert b"Too many failed logins for this username from your address" in response.content
    assert b"Wait 15 minutes" in response.content
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="auth.login_throttled").count() == 1


def test_throttle_is_per_username_and_address(
    client: Client, reader: Any, second_reader: Any, settings: Any
) -> None:
    settings.LOGIN_THROTTLE_MAX_FAILURES = 2
    for attempt in range(2):
        _attempt(client, "reader_ann", f"wrong {attempt}")
    # Same username from another address, and another username from the same address, pass.
    assert (
        _attempt(Client(), "reader_ann", PERSONA_PASSWORD, address="203.0.113.9").status_code == 302
    )
    assert _attempt(Client(), "reader_ben", PERSONA_PASSWORD).status_code == 302
    assert b"Too many failed logins" in _attempt(client, "READER_ANN", PERSONA_PASSWORD).content


def test_successful_login_resets_failure_count(client: Client, reader: Any, settings: Any) -> None:
    settings.LOGIN_THROTTLE_MAX_FAILURES = 3
    _attempt(client, "reader_ann", "wrong 1")
    _attempt(client, "reader_ann", "wrong 2")
    assert _attempt(client, "reader_ann", PERSONA_PASSWORD).status_code == 302
    client.logout()
    _attempt(client, "reader_ann", "wrong 3")
    _attempt(client, "reader_ann", "wrong 4")
    assert _attempt(client, "reader_ann", PERSONA_PASSWORD).status_code == 302


def test_admin_login_goes_to_throttled_login_page(client: Client, db: None) -> None:
    response = client.get("/admin/login/?next=/admin/core/case/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=%2Fadmin%2Fcore%2Fcase%2F"


@pytest.mark.parametrize("target", ["https://evil.example.com/", "//evil.example.com/"])
def test_login_ignores_offsite_next(client: Client, reader: Any, target: str) -> None:
    response = client.post(
        f"{LOGIN_URL}?next={target}",
        {"username": "reader_ann", "password": PERSONA_PASSWORD, "next": target},
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
