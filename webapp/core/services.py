"""State changes on cases, ground truth and adjudications.

Each function is one atomic block that also writes its audit event, so a change and its audit
record are committed together or not at all. Views and API endpoints parse input, call one of
these, and render the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from webapp.core import roles
from webapp.core.audit import Action, record_audit_event
from webapp.core.models import (
    Adjudication,
    Case,
    GroundTruth,
    HeidelbergSubtype,
    HyperdensityLabel,
    Study,
)

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A rejected change, with a stable ``code`` for programs and a message for people."""

    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class RoleRequiredError(ServiceError):
    code = "role_required"


class StaleVersionError(ServiceError):
    """The caller edited an older version than the latest one stored."""

    code = "stale_version"


@dataclass(frozen=True)
class ClientContext:
    """The acting user and client address of a change, for the audit log."""

    actor: User
    client_address: str | None = None


def _require_role(context: ClientContext, *needed: str) -> None:
    if not roles.has_any_role(context.actor, *needed):
        raise RoleRequiredError(
            f"User {context.actor.get_username()!r} needs one of the roles {', '.join(needed)} for this change."
        )


def create_case(
    context: ClientContext,
    *,
    code: str,
    split: str = Case.Split.UNASSIGNED,
    readers_blinded: bool = True,
    is_synthetic: bool = False,
) -> Case:
    """Create a case with a pseudonymous code. Raises ServiceError when the code is taken or invalid."""
    _require_role(context, roles.COORDINATOR, roles.ADMIN)
    case = Case(
        code=code.strip(),
        split=split,
        readers_blinded=readers_blinded,
        is_synthetic=is_synthetic,
        created_by=context.actor,
    )
    try:
        case.full_clean(validate_unique=False)
    except ValidationError as error:
        raise ServiceError(f"Case {code!r} is invalid: {'; '.join(error.messages)}") from None

    try:
        with transaction.atomic():
            case.save()
            record_audit_event(
                Action.CASE_CREATED,
                actor=context.actor,
                target=case,
                client_address=context.client_address,
                details={"code": case.code, "split": case.split, "is_synthetic": is_synthetic},
            )
    except IntegrityError:
        raise ServiceError(
            f"Case code {case.code!r} already exists; open that case or choose another code.",
            code="duplicate_case",
        ) from None
    logger.info("Created case id=%s split=%s", case.pk, case.split)
    return case


def _check_expected_version(latest: int, expected_version: int | None, what: str) -> None:
    """Reject an edit based on an older version (optimistic locking)."""
    if expected_version is not None and expected_version != latest:
        raise StaleVersionError(
            f"The {what} was changed by someone else (now version {latest}, you edited version "
            f"{expected_version}). Reload the page to see the current version, then apply your change again."
        )


def _require_ground_truth_permission(context: ClientContext, case: Case) -> None:
    """Raise RoleRequiredError unless the actor may write the case's ground truth.

    Readers may, but only after submitting their own adjudication of the case.
    """
    if roles.has_any_role(context.actor, *roles.GROUND_TRUTH_ROLES):
        # No query for coordinators and admins, who may write any case's ground truth.
        return
    has_read_case = Adjudication.objects.filter(
        case=case, reader=context.actor, is_consensus=False
    ).exists()
    if not roles.may_enter_ground_truth(context.actor, has_read_case=has_read_case):
        raise RoleRequiredError(
            f"User {context.actor.get_username()!r} needs one of the roles "
            f"{', '.join(roles.GROUND_TRUTH_ROLES)} to enter the ground truth of case "
            f"{case.code}, or the role {', '.join(roles.GROUND_TRUTH_AFTER_READING_ROLES)} "
            "and their own submitted adjudication of it."
        )


def record_ground_truth(
    context: ClientContext,
    case: Case,
    *,
    label: str,
    heidelberg_subtype: str = "",
    source: str = GroundTruth.Source.READING,
    follow_up_study: Study | None = None,
    notes: str = "",
    expected_version: int | None = None,
) -> GroundTruth:
    """Append a new ground-truth version for ``case``.

    ``expected_version`` is the version the user saw (0 when there was none); when another
    version was stored since, StaleVersionError is raised and nothing is written. Pass None
    only for imports that intentionally append regardless.
    """
    _require_ground_truth_permission(context, case)
    if label not in HyperdensityLabel.values:
        raise ServiceError(
            f"Label {label!r} is not one of {HyperdensityLabel.values}.", code="invalid_label"
        )
    if heidelberg_subtype and heidelberg_subtype not in HeidelbergSubtype.values:
        raise ServiceError(
            f"Heidelberg subtype {heidelberg_subtype!r} is not one of {HeidelbergSubtype.values}.",
            code="invalid_subtype",
        )
    if follow_up_study is not None and (
        follow_up_study.case_id != case.pk or follow_up_study.role != Study.Role.FOLLOW_UP
    ):
        raise ServiceError(
            f"Study {follow_up_study.pk} is not a follow-up study of case {case.code}.",
            code="invalid_study",
        )

    try:
        with transaction.atomic():
            # Lock the case row: two people saving at the same moment would otherwise both
            # read the same latest version and one insert would fail on the unique constraint.
            Case.objects.select_for_update().filter(pk=case.pk).first()
            latest = case.ground_truths.aggregate(latest=Max("version"))["latest"] or 0
            _check_expected_version(latest, expected_version, "ground truth")
            ground_truth = GroundTruth.objects.create(
                case=case,
                version=latest + 1,
                label=label,
                heidelberg_subtype=heidelberg_subtype,
                source=source,
                follow_up_study=follow_up_study,
                notes=notes,
                entered_by=context.actor,
            )
            record_audit_event(
                Action.GROUND_TRUTH_RECORDED,
                actor=context.actor,
                target=ground_truth,
                client_address=context.client_address,
                details={
                    "case": case.code,
                    "version": ground_truth.version,
                    "label": label,
                    "heidelberg_subtype": heidelberg_subtype,
                    "source": source,
                },
            )
    except IntegrityError:
        # Reached only if the lock above is not taken (SQLite ignores select_for_update).
        raise StaleVersionError(
            f"The ground truth of case {case.code} was changed at the same moment; reload and try again."
        ) from None
    logger.info("Recorded ground truth case_id=%s version=%s", case.pk, ground_truth.version)
    return ground_truth


def record_adjudication(
    context: ClientContext,
    case: Case,
    *,
    label: str,
    confidence: int,
    notes: str = "",
    agrees_with_model: bool | None = None,
    model_shown: bool = False,
    expected_version: int = 0,
    is_consensus: bool = False,
) -> Adjudication:
    """Append a new version of the acting reader's adjudication (or of the case's consensus).

    ``expected_version`` is the latest version the reader saw, 0 for a first adjudication. A
    mismatch raises StaleVersionError: the edit was based on an outdated version, and nothing
    is written.
    """
    if is_consensus:
        _require_role(context, *roles.CONSENSUS_ROLES)
    else:
        _require_role(context, *roles.ADJUDICATION_ROLES)
    if label not in HyperdensityLabel.values:
        raise ServiceError(
            f"Label {label!r} is not one of {HyperdensityLabel.values}.", code="invalid_label"
        )
    if not 1 <= confidence <= 5:
        raise ServiceError(f"Confidence {confidence} is outside 1-5.", code="invalid_confidence")

    try:
        with transaction.atomic():
            # Same race as in record_ground_truth: lock the case so versions stay sequential.
            Case.objects.select_for_update().filter(pk=case.pk).first()
            stream = Adjudication.objects.filter(case=case, is_consensus=is_consensus)
            if not is_consensus:
                stream = stream.filter(reader=context.actor)
            latest = stream.aggregate(latest=Max("version"))["latest"] or 0
            what = "consensus label" if is_consensus else "adjudication"
            _check_expected_version(latest, expected_version, what)
            adjudication = Adjudication.objects.create(
                case=case,
                reader=context.actor,
                version=latest + 1,
                is_consensus=is_consensus,
                label=label,
                confidence=confidence,
                notes=notes,
                agrees_with_model=agrees_with_model,
                model_shown=model_shown,
            )
            record_audit_event(
                Action.CONSENSUS_RECORDED if is_consensus else Action.ADJUDICATION_RECORDED,
                actor=context.actor,
                target=adjudication,
                client_address=context.client_address,
                details={
                    "case": case.code,
                    "version": adjudication.version,
                    "label": label,
                    "confidence": confidence,
                    "model_shown": model_shown,
                },
            )
    except IntegrityError:
        raise StaleVersionError(
            f"The adjudication of case {case.code} was changed at the same moment; reload and try again."
        ) from None
    logger.info(
        "Recorded adjudication case_id=%s reader_id=%s version=%s consensus=%s",
        case.pk,
        context.actor.pk,
        adjudication.version,
        is_consensus,
    )
    return adjudication


def change_study_role(context: ClientContext, study: Study, role: str) -> Study:
    """Set a study's role (baseline or follow-up), re-check its timing window, and audit it.

    Study.save recomputes ``out_of_window`` from the new role. Setting the role a study
    already has changes nothing and writes no audit event. Raises ServiceError for another
    role value, RoleRequiredError without the coordinator or admin role.
    """
    _require_role(context, roles.COORDINATOR, roles.ADMIN)
    if role not in Study.Role.values:
        raise ServiceError(
            f"Study role {role!r} is invalid; use one of {', '.join(Study.Role.values)}.",
            code="invalid_role",
        )
    with transaction.atomic():
        locked = Study.objects.select_for_update().select_related("case").get(pk=study.pk)
        if locked.role == role:
            return locked
        before = locked.role
        locked.role = role
        locked.save(update_fields=["role"])
        record_audit_event(
            Action.CASE_CHANGED,
            actor=context.actor,
            target=locked.case,
            client_address=context.client_address,
            details={
                "study_id": locked.pk,
                "field": "study.role",
                "old": before,
                "new": role,
                "out_of_window": locked.out_of_window,
            },
        )
    logger.info("Changed role of study_id=%s from %s to %s", locked.pk, before, role)
    return locked
