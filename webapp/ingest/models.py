"""Uploads (one or more request batches grouped by an upload id) and per-case pseudonym keys."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from webapp.core.models import Case, Study


class DeidentificationKey(models.Model):
    """The secret seed that maps a case's original UIDs and dates to pseudonymous ones.

    One seed per case makes de-identification repeatable: uploading the same file again gives
    the same de-identified bytes and SOPInstanceUID, so it is recognised as a duplicate, and the
    baseline and follow-up of a case keep consistent UIDs. The seed cannot restore an original
    value; it can only confirm a guessed one, so it stays in the database and never in a response.
    """

    case = models.OneToOneField(Case, on_delete=models.CASCADE, related_name="+")
    seed = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"de-identification key of case {self.case_id}"


class Upload(models.Model):
    """One upload from the page or the API; its batches share ``upload_id``.

    ``report`` accumulates the reports of every batch, so the final report covers all of them.
    """

    class Status(models.TextChoices):
        RECEIVING = "receiving", "Receiving files"
        COMPLETED = "completed", "Completed"

    upload_id = models.UUIDField(default=uuid.uuid4, unique=True)
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="uploads")
    role = models.CharField(max_length=16, choices=Study.Role.choices)
    hours_after_mt = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVING)
    batch_count = models.PositiveIntegerField(default=0)
    created_case = models.BooleanField(
        default=False,
        help_text="The upload created its case; an upload that stores nothing deletes such a "
        "case again.",
    )
    report = models.JSONField(default=dict, blank=True)
    studies = models.ManyToManyField(Study, blank=True, related_name="uploads")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"upload {self.upload_id} ({self.status})"


class IdentityMapping(models.Model):
    """Original patient name and id behind a case's pseudonym; the only place they are kept.

    Rows are written only while the site setting INGEST KEEP_IDENTITY_MAPPING is on (default
    off). They are read only through ``webapp.ingest.identity.read_identity_mapping``, which
    allows the identity steward role and admins and audits every read. The model is not in the
    admin site, the exports or any other API response; ``str()`` names no identifier, so a
    row in a log line or an error page shows none.
    """

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="+")
    original_patient_name = models.CharField(max_length=324, blank=True)
    original_patient_id = models.CharField(max_length=64, blank=True)
    pseudonym = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["case", "original_patient_name", "original_patient_id"],
                name="ingest_identity_mapping_unique",
            )
        ]

    def __str__(self) -> str:
        return f"identity mapping {self.pk} of case {self.case_id}"
