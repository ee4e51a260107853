"""Access rules: who may fetch which images, and who may view model output and other labels."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import Http404

from webapp.core import roles
from webapp.core.models import Adjudication, Case, Instance


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


def instance_for_user(
    user: User | AnonymousUser, study_uid: str, series_uid: str, object_uid: str
) -> Instance:
    """Return the stored instance named by its three UIDs if the user may see its pixels.

    Raises Http404 when no stored instance has these UIDs. Raises PermissionDenied when the user
    has no role, or when the series is flagged with Burned In Annotation (0028,0301) and the user
    is not an admin, because burned-in text may show patient identifiers that de-identification
    of the header cannot remove. Blinding never hides images, only labels and model output.
    """
    if not roles.has_any_role(user):
        raise PermissionDenied("Images need a role; ask an admin to assign one.")
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
        raise PermissionDenied(
            "This series is flagged as having burned-in annotation and may show patient "
            "identifiers; only admins can open it."
        )
    return instance
