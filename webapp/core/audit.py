"""Writing audit events. Call ``record_audit_event`` inside the transaction of the change."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import models
from django.http import HttpRequest

from webapp.core.models import AuditEvent
from webapp.request_id import NO_REQUEST_ID, get_request_id


class Action:
    """Audit action names; stable strings, because exports and reports filter on them."""

    CASE_CREATED = "case.created"
    CASE_CHANGED = "case.changed"
    REANALYSIS_REQUESTED = "case.reanalysis_requested"
    GROUND_TRUTH_RECORDED = "ground_truth.recorded"
    ADJUDICATION_RECORDED = "adjudication.recorded"
    CONSENSUS_RECORDED = "adjudication.consensus_recorded"
    MODEL_VERSION_REGISTERED = "model_version.registered"
    MODEL_VERSION_PROMOTION_CHANGED = "model_version.promotion_changed"
    MODEL_TRAINING_REQUESTED = "model_training.requested"
    UPLOAD_RECEIVED = "upload.received"
    EXPORT_DOWNLOADED = "export.downloaded"
    LOGIN_SUCCEEDED = "auth.login_succeeded"
    LOGIN_FAILED = "auth.login_failed"
    LOGIN_THROTTLED = "auth.login_throttled"
    USER_CREATED = "user.created"
    USER_CHANGED = "user.changed"
    USER_ROLES_CHANGED = "user.roles_changed"
    USER_DELETED = "user.deleted"


def client_address_from_request(request: HttpRequest) -> str | None:
    """Return the client's IP address as the server saw it, or None when it is not an IP.

    NOTE: behind a reverse proxy this is the proxy's address unless the proxy or the WSGI
    server rewrites REMOTE_ADDR; X-Forwarded-For is not trusted because clients can forge it.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    try:
        return str(ipaddress.ip_address(remote))
    except ValueError:
        return None


def record_audit_event(
    action: str,
    *,
    actor: User | AnonymousUser | None,
    target: models.Model | None = None,
    client_address: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write one audit event. Details must hold no patient identifiers (codes and row ids only)."""
    user = actor if isinstance(actor, User) else None
    request_id = get_request_id()
    return AuditEvent.objects.create(
        actor=user,
        actor_username=user.get_username() if user is not None else "",
        action=action,
        object_type=target._meta.label_lower if target is not None else "",
        object_id=str(target.pk) if target is not None else "",
        client_address=client_address,
        request_id="" if request_id == NO_REQUEST_ID else request_id,
        details=details or {},
    )
