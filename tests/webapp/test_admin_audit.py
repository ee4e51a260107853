"""Account and role changes made in the admin site are written to the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, User
from django.test import Client

from webapp.core.models import AuditEvent


def _admin_client(admin_user: Any) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def _change_form(user: User, groups: list[Group]) -> dict[str, Any]:
    return {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "groups": [str(group.pk) for group in groups],
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": "2026-12-04",
        "date_joined_1": "10:00:00",
    }


def test_adding_a_user_is_audited_without_the_password(admin_user: Any) -> None:
    response = _admin_client(admin_user).post(
        "/admin/auth/user/add/",
        {
            "username": "new_reader",
            "password1": "a long enough passphrase 73",
            "password2": "a long enough passphrase 73",
            "usable_password": "true",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    created = User.objects.get(username="new_reader")
    event = AuditEvent.objects.get(action="user.created")
    assert event.actor_username == "admin_fay"
    assert event.object_id == str(created.pk)
    assert event.details == {"username": "new_reader"}
    assert "passphrase" not in str(AuditEvent.objects.values_list("details", flat=True))


def test_granting_and_revoking_roles_is_audited(admin_user: Any, reader: Any) -> None:
    coordinator_group = Group.objects.get(name="coordinator")
    response = _admin_client(admin_user).post(
        f"/admin/auth/user/{reader.pk}/change/", _change_form(reader, [coordinator_group])
    )
    assert response.status_code == 302, response.content[:2000]
    assert set(reader.groups.values_list("name", flat=True)) == {"coordinator"}
    event = AuditEvent.objects.get(action="user.roles_changed")
    assert event.actor_username == "admin_fay"
    assert event.object_id == str(reader.pk)
    assert event.details == {
        "username": "reader_ann",
        "granted": ["coordinator"],
        "revoked": ["reader"],
    }


def test_saving_unchanged_roles_writes_no_role_event(admin_user: Any, reader: Any) -> None:
    reader_group = Group.objects.get(name="reader")
    response = _admin_client(admin_user).post(
        f"/admin/auth/user/{reader.pk}/change/", _change_form(reader, [reader_group])
    )
    assert response.status_code == 302, response.content[:2000]
    assert not AuditEvent.objects.filter(action="user.roles_changed").exists()
    assert AuditEvent.objects.filter(action="user.changed", object_id=str(reader.pk)).exists()


def test_deleting_a_user_is_audited(admin_user: Any, reader: Any) -> None:
    user_id = reader.pk
    response = _admin_client(admin_user).post(
        f"/admin/auth/user/{user_id}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert not User.objects.filter(pk=user_id).exists()
    event = AuditEvent.objects.get(action="user.deleted")
    assert event.object_id == str(user_id)
    assert event.details == {"username": "reader_ann"}


def test_admin_page_icon_and_header(admin_user: Any) -> None:
    response = _admin_client(admin_user).get("/admin/")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<link rel="icon" href="data:,">' in page
    assert "ceht-review administration (research use only)" in page
