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
