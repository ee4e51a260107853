"""DRF permission classes built on the project's roles."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from webapp.core.roles import has_any_role


class HasAnyRole(BasePermission):
    """Allows authenticated users who hold at least one project role.

    Anonymous requests get 401 with token authentication offered (DRF sends 401 when the first
    authentication class defines a WWW-Authenticate header, else 403).
    """

    message = "This endpoint needs a logged-in user with a project role (reader, coordinator, researcher, adjudicator or admin)."

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and has_any_role(request.user))
