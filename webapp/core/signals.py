"""Audit receivers for login events."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from webapp.core.audit import Action, client_address_from_request, record_audit_event


@receiver(user_logged_in, dispatch_uid="audit_login_succeeded")
def audit_login_succeeded(
    sender: Any, request: HttpRequest | None, user: User, **kwargs: Any
) -> None:
    record_audit_event(
        Action.LOGIN_SUCCEEDED,
        actor=user,
        client_address=client_address_from_request(request) if request is not None else None,
    )


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def audit_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Django has already replaced the password in ``credentials`` with asterisks.
    username = str(credentials.get("username", ""))[:150]
    record_audit_event(
        Action.LOGIN_FAILED,
        actor=None,
        client_address=client_address_from_request(request) if request is not None else None,
        details={"username": username},
    )
