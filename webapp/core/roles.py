"""Roles as Django auth groups, and the checks that views and the API use.

A user may hold several roles. Superusers hold the admin role in addition to their groups, but
not the reader role: reading is a deliberate assignment, because readers' labels are data.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

READER = "reader"
COORDINATOR = "coordinator"
RESEARCHER = "researcher"
ADJUDICATOR = "adjudicator"
ADMIN = "admin"

ALL_ROLES: tuple[str, ...] = (READER, COORDINATOR, RESEARCHER, ADJUDICATOR, ADMIN)

# Roles that may record each kind of label, checked by the services and the views.
ADJUDICATION_ROLES: tuple[str, ...] = (READER,)
CONSENSUS_ROLES: tuple[str, ...] = (ADJUDICATOR, ADMIN)
# Roles that may enter or edit the follow-up ground truth of any case at any time.
GROUND_TRUTH_ROLES: tuple[str, ...] = (COORDINATOR, ADMIN)
# Roles that may enter or edit the ground truth of a case only after submitting their own
# adjudication of it. A reader's label is scored against the ground truth, so the reader must
# submit it before writing the reference. Blinding ends at the same moment.
GROUND_TRUTH_AFTER_READING_ROLES: tuple[str, ...] = (READER,)

ROLE_DESCRIPTIONS: dict[str, str] = {
    READER: "Reviews cases in the viewer and records blinded adjudications, then may enter the ground truth of the cases read.",
    COORDINATOR: "Uploads studies, links baseline and follow-up, enters or imports ground truth, exports labels.",
    RESEARCHER: "Trains and evaluates model versions, views metrics, exports labels.",
    ADJUDICATOR: "Records the consensus label when readers disagree.",
    ADMIN: "Manages users and roles and reads the audit log.",
}

ViewFunction = TypeVar("ViewFunction", bound=Callable[..., HttpResponse])


def roles_of(user: User | AnonymousUser) -> frozenset[str]:
    """Return the names of the user's roles; empty for anonymous or inactive users."""
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    cached: frozenset[str] | None = getattr(user, "_ceht_roles", None)
    if cached is None:
        # Cached on the user object, which lives for one request, to avoid a query per check.
        names = set(user.groups.filter(name__in=ALL_ROLES).values_list("name", flat=True))
        if getattr(user, "is_superuser", False):
            names.add(ADMIN)
        cached = frozenset(names)
        user._ceht_roles = cached  # type: ignore[attr-defined]
    return cached


def has_any_role(user: User | AnonymousUser, *roles: str) -> bool:
    """Return whether the user has at least one of ``roles`` (any role when none are given)."""
    held = roles_of(user)
    if not roles:
        return bool(held)
    return bool(held.intersection(roles))


def may_enter_ground_truth(user: User | AnonymousUser, *, has_read_case: bool) -> bool:
    """Return whether the user may write a case's ground truth.

    ``has_read_case`` is whether the user has submitted their own adjudication of that case.
    """
    if has_any_role(user, *GROUND_TRUTH_ROLES):
        return True
    return has_read_case and has_any_role(user, *GROUND_TRUTH_AFTER_READING_ROLES)


def role_required(*roles: str) -> Callable[[ViewFunction], ViewFunction]:
    """Decorate a view: anonymous users are redirected to login, users without a role get 403."""

    def decorator(view: ViewFunction) -> ViewFunction:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not has_any_role(request.user, *roles):
                needed = ", ".join(roles) if roles else "any role"
                raise PermissionDenied(f"This page needs one of these roles: {needed}.")
            return view(request, *args, **kwargs)

        return login_required(wrapped)  # type: ignore[return-value]

    return decorator
