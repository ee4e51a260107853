"""Template context shared by every page."""

from __future__ import annotations

from django.http import HttpRequest

from webapp.core.roles import ALL_ROLES, roles_of


def roles(request: HttpRequest) -> dict[str, object]:
    """Expose the current user's roles, so templates show only the links a user may follow."""
    held = roles_of(request.user)
    return {"user_roles": [role for role in ALL_ROLES if role in held]}
