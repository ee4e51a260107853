"""The optional original-to-pseudonym mapping (site setting INGEST KEEP_IDENTITY_MAPPING).

With the setting off (the default) nothing original is stored. With it on, ingest records each
distinct original patient name and id of a case in ``IdentityMapping``, and only users in the
identity steward group, or admins, can read it, each read leaving an audit event. Names and
ids are never logged; audit events hold the case and row counts only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction

from webapp.core import roles
from webapp.core.audit import record_audit_event
from webapp.core.models import Case
from webapp.core.services import ServiceError
from webapp.ingest.models import IdentityMapping

logger = logging.getLogger(__name__)

# A group of its own, outside the five roles of the app: holding it grants no other page.
IDENTITY_STEWARD = "identity_steward"
ACTION_READ = "identity_mapping.read"
ACTION_READ_DENIED = "identity_mapping.read_denied"


class IdentityAccessDenied(ServiceError):
    code = "identity_steward_required"


def mapping_enabled() -> bool:
    """Return whether ingest keeps the mapping (it needs de-identification to mean anything)."""
    ingest = settings.INGEST
    return bool(ingest["DEIDENTIFY"]) and bool(ingest["KEEP_IDENTITY_MAPPING"])


def may_read_identities(user: User | AnonymousUser) -> bool:
    """Return whether ``user`` is an admin or in the identity steward group."""
    if not user.is_authenticated or not user.is_active:
        return False
    if roles.has_any_role(user, roles.ADMIN):
        return True
    return bool(user.groups.filter(name=IDENTITY_STEWARD).exists())


def record_identities(case: Case, identities: Iterable[tuple[str, str]]) -> int:
    """Store the (original name, original id) pairs of ``case``; return how many were new.

    Call inside the ingest transaction. A pair stored before is kept as it is.
    """
    rows = [
        IdentityMapping(
            case=case,
            original_patient_name=name[:324],
            original_patient_id=patient_id[:64],
            pseudonym=case.code,
        )
        for name, patient_id in set(identities)
        if name or patient_id
    ]
    before = IdentityMapping.objects.filter(case=case).count()
    IdentityMapping.objects.bulk_create(rows, ignore_conflicts=True)
    added = IdentityMapping.objects.filter(case=case).count() - before
    if added:
        logger.info("Identity mapping recorded case_id=%s new_rows=%d", case.pk, added)
    return added


def read_identity_mapping(
    user: User | AnonymousUser, case: Case, client_address: str | None
) -> dict[str, Any]:
    """Return the case's mapping for an identity steward or admin, and audit the read.

    Raises IdentityAccessDenied for anyone else, after auditing the attempt.
    """
    if not may_read_identities(user):
        record_audit_event(
            ACTION_READ_DENIED, actor=user, target=case, client_address=client_address
        )
        logger.warning("Identity mapping read denied case_id=%s", case.pk)
        raise IdentityAccessDenied(
            "Reading the identity mapping needs the identity steward group or the admin role; "
            "ask an administrator."
        )
    with transaction.atomic():
        rows = list(IdentityMapping.objects.filter(case=case).order_by("pk"))
        record_audit_event(
            ACTION_READ,
            actor=user,
            target=case,
            client_address=client_address,
            details={"rows": len(rows)},
        )
    logger.info("Identity mapping read case_id=%s rows=%d", case.pk, len(rows))
    return {
        "case": case.code,
        "enabled": mapping_enabled(),
        "entries": [
            {
                "original_patient_name": row.original_patient_name,
                "original_patient_id": row.original_patient_id,
                "pseudonym": row.pseudonym,
                "recorded_at": row.created_at.isoformat(),
            }
            for row in rows
        ],
    }
