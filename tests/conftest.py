"""Shared fixtures: one user per persona, each with exactly the roles in its name.

Django is imported inside the fixtures, so inference tests can still run with ``-p no:django``.
"""

from __future__ import annotations

from typing import Any

import pytest

PERSONA_PASSWORD = "correct horse battery staple 42"


def _make_user(username: str, roles: list[str], **extra: Any) -> Any:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(
        username=username, password=PERSONA_PASSWORD, **extra
    )
    for role in roles:
        group, _ = Group.objects.get_or_create(name=role)
        user.groups.add(group)
    return user


@pytest.fixture
def reader(db: None) -> Any:
    return _make_user("reader_ann", ["reader"])


@pytest.fixture
def second_reader(db: None) -> Any:
    return _make_user("reader_ben", ["reader"])


@pytest.fixture
def coordinator(db: None) -> Any:
    return _make_user("coordinator_cai", ["coordinator"])


@pytest.fixture
def researcher(db: None) -> Any:
    return _make_user("researcher_dee", ["researcher"])


@pytest.fixture
def adjudicator(db: None) -> Any:
    return _make_user("adjudicator_eli", ["adjudicator", "reader"])


@pytest.fixture
def admin_user(db: None) -> Any:
    """An administrator: in the admin group, staff and superuser (the admin site needs both flags)."""
    return _make_user("admin_fay", ["admin"], is_staff=True, is_superuser=True)


@pytest.fixture
def outsider(db: None) -> Any:
    """A user who can log in but has no role."""
    return _make_user("outsider_gus", [])
