"""Role groups, role checks and the management commands that set them up."""

from __future__ import annotations

from io import StringIO
from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.models import AnonymousUser, Group, User
from django.core.management import call_command

from webapp.core.roles import ALL_ROLES, has_any_role, roles_of
from webapp.ingest.identity import IDENTITY_STEWARD


def test_migrations_create_role_groups(db: None) -> None:
    # The identity steward group guards the optional identity mapping and grants no page.
    assert sorted(Group.objects.values_list("name", flat=True)) == sorted(
        [*ALL_ROLES, IDENTITY_STEWARD]
    )


def test_setup_roles_is_idempotent(db: None) -> None:
    Group.objects.filter(name="researcher").delete()
    output = StringIO()
    call_command("setup_roles", stdout=output)
    assert "role group researcher: created" in output.getvalue()
    assert "role group reader: already present" in output.getvalue()
    assert Group.objects.filter(name__in=ALL_ROLES).count() == len(ALL_ROLES)


def test_roles_of_personas(reader: Any, adjudicator: Any, admin_user: Any, outsider: Any) -> None:
    assert roles_of(reader) == {"reader"}
    assert roles_of(adjudicator) == {"adjudicator", "reader"}
    # A superuser has the admin role, but is not a reader unless added to the group.
    assert roles_of(admin_user) == {"admin"}
    assert roles_of(outsider) == frozenset()
    assert roles_of(AnonymousUser()) == frozenset()


def test_inactive_user_holds_no_role(reader: Any) -> None:
    reader.is_active = False
    reader.save()
    assert has_any_role(reader) is False


def test_has_any_role_checks_named_roles(coordinator: Any) -> None:
    assert has_any_role(coordinator, "coordinator", "admin") is True
    assert has_any_role(coordinator, "reader") is False
    assert has_any_role(coordinator) is True


def _demo_password(output: str) -> str:
    return output.splitlines()[-1].removeprefix("password (the same for every demo user): ")


def test_demo_team_passwords_work(db: None) -> None:
    output = StringIO()
    call_command("create_demo_user", stdout=output)
    lines = output.getvalue().splitlines()
    assert lines[:4] == [
        "demo user 'demo' created; roles: coordinator, researcher",
        "demo user 'demo-reader1' created; roles: reader",
        "demo user 'demo-reader2' created; roles: reader",
        "demo user 'demo-adjudicator' created; roles: reader, adjudicator",
    ]
    password = _demo_password(output.getvalue())
    expected = {
        "demo": {"coordinator", "researcher"},
        "demo-reader1": {"reader"},
        "demo-reader2": {"reader"},
        "demo-adjudicator": {"reader", "adjudicator"},
    }
    for username, roles in expected.items():
        user = authenticate(username=username, password=password)
        assert user is not None, username
        assert roles_of(user) == roles


def test_create_demo_user_again_resets_password_and_roles(db: None) -> None:
    call_command("create_demo_user", stdout=StringIO())
    # An older demo user held every role; running the command again narrows it.
    old = User.objects.get(username="demo")
    old.groups.add(Group.objects.get_or_create(name="reader")[0])
    output = StringIO()
    call_command("create_demo_user", stdout=output)
    assert output.getvalue().count("password reset for existing user") == 4
    password = _demo_password(output.getvalue())
    user = authenticate(username="demo", password=password)
    assert user is not None
    assert roles_of(user) == {"coordinator", "researcher"}
    assert authenticate(username="demo-reader2", password=password) is not None
