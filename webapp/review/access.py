"""Access rules: who may fetch which images, and who may view model output and other labels."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import Http404

from webapp.core import roles
from webapp.core.models import Adjudication, Case, Instance, Series, Study


def is_blinded(user: User | AnonymousUser, case: Case, has_submitted: bool) -> bool:
    """Return whether the user must not see predictions, lesions, ground truth or other labels.

    Readers of a blinded case stay blinded until they submit their own adjudication. Users
    without the reader role (coordinators, researchers, admins) are never blinded, because they
    do not record adjudications. A user with the reader role and another role is
    blinded like any reader, so their label stays independent of the model.
    """
    if not case.readers_blinded or has_submitted:
        return False
    return roles.has_any_role(user, roles.READER)


def has_submitted(user: User | AnonymousUser, case: Case) -> bool:
    """Return whether the user has recorded at least one (non-consensus) adjudication of the case."""
    if not user.is_authenticated:
        return False
    return Adjudication.objects.filter(case=case, reader=user, is_consensus=False).exists()


def _check_image_role(user: User | AnonymousUser) -> None:
    if not roles.has_any_role(user):
        raise PermissionDenied("Images need a role; ask an admin to assign one.")


BURNED_IN_MESSAGE = (
    "This series is flagged as having burned-in annotation and may show patient "
    "identifiers; only admins can open it."
)


def instance_for_user(
    user: User | AnonymousUser, study_uid: str, series_uid: str, object_uid: str
) -> Instance:
    """Return the stored instance named by its three UIDs if the user may see its pixels.

    Raises Http404 when no stored instance has these UIDs. Raises PermissionDenied when the user
    has no role, or when the series is flagged with Burned In Annotation (0028,0301) and the user
    is not an admin, because burned-in text may show patient identifiers that de-identification
    of the header cannot remove. Blinding never hides images, only labels and model output.
    """
    _check_image_role(user)
    instance = (
        Instance.objects.select_related("series__study")
        .filter(
            sop_instance_uid=object_uid,
            series__series_instance_uid=series_uid,
            series__study__study_instance_uid=study_uid,
        )
        .first()
    )
    if instance is None:
        raise Http404(
            f"No stored instance with objectUID {object_uid!r} in series {series_uid!r} "
            f"of study {study_uid!r}; check the UIDs."
        )
    if instance.series.burned_in_annotation and not roles.has_any_role(user, roles.ADMIN):
        raise PermissionDenied(BURNED_IN_MESSAGE)
    return instance


@dataclass(frozen=True)
class InstanceSelection:
    """The stored instances of a study or series that a user may retrieve.

    ``withheld`` counts the instances left out because their series has burned-in annotation
    and the user is not an admin.
    """

    instances: list[Instance]
    withheld: int


def instances_for_user(
    user: User | AnonymousUser, study_uid: str, series_uid: str | None = None
) -> InstanceSelection:
    """Return the instances of a study (or of one of its series) that the user may retrieve.

    The rules of ``instance_for_user`` apply to each instance. Raises Http404 when the study or
    the series is unknown or has no stored instance, and PermissionDenied when every instance
    is withheld. Instances come in series number order, then by slice position and number.
    """
    _check_image_role(user)
    if series_uid is None:
        if not Study.objects.filter(study_instance_uid=study_uid).exists():
            raise Http404(f"No stored study with StudyInstanceUID {study_uid!r}; check the UID.")
    elif not Series.objects.filter(
        series_instance_uid=series_uid, study__study_instance_uid=study_uid
    ).exists():
        raise Http404(f"No stored series {series_uid!r} in study {study_uid!r}; check the UIDs.")
    found = Instance.objects.select_related("series__study").filter(
        series__study__study_instance_uid=study_uid
    )
    if series_uid is not None:
        found = found.filter(series__series_instance_uid=series_uid)
    instances = list(
        found.order_by(
            "series__series_number", "series_id", "slice_position_mm", "instance_number", "pk"
        )
    )
    if not instances:
        where = f"series {series_uid!r}" if series_uid else f"study {study_uid!r}"
        raise Http404(f"The {where} has no stored instance to retrieve.")
    if roles.has_any_role(user, roles.ADMIN):
        return InstanceSelection(instances, 0)
    allowed = [item for item in instances if not item.series.burned_in_annotation]
    if not allowed:
        raise PermissionDenied(BURNED_IN_MESSAGE)
    return InstanceSelection(allowed, len(instances) - len(allowed))
