"""Model versions, inference jobs, and the predictions and lesions they produce.

A ModelVersion is immutable once registered. Predictions are never overwritten: a re-run of a
job increments ``InferenceJob.run_count`` and writes new Prediction and Lesion rows under it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from webapp.core.models import AppendOnlyModel, HyperdensityLabel, Study


class ImmutableModelVersionError(Exception):
    """Raised when code tries to change a registered model version."""


class ModelVersion(models.Model):
    """A trained classifier artifact with its parameters, metrics and provenance."""

    class Kind(models.TextChoices):
        SVM = "svm", "Support vector machine"
        RF = "rf", "Random forest"
        LR = "lr", "Logistic regression"
        UNET = "unet", "U-Net"
        HYBRID = "hybrid", "Hybrid"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    version = models.CharField(max_length=32)
    artifact_path = models.CharField(
        max_length=255, blank=True, help_text="Path of the weights file under the model directory."
    )
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the weights file.")
    params = models.JSONField(
        default=dict, blank=True, help_text="Hyperparameters and preprocessing settings."
    )
    metrics = models.JSONField(
        default=dict, blank=True, help_text="Evaluation results, each with its unit of analysis."
    )
    training_cohort = models.JSONField(
        default=dict,
        blank=True,
        help_text="Case codes or cohort description, label source, split and seed.",
    )
    intended_use = models.TextField(blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Promotion decides which versions run on new cases; it is the one field that may change.
    is_promoted = models.BooleanField(default=False)

    MUTABLE_FIELDS = frozenset({"is_promoted"})

    class Meta:
        ordering = ["kind", "-registered_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "version"], name="model_version_unique_kind_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.version}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            stored = type(self).objects.filter(pk=self.pk).values().first()
            if stored is not None:
                changed = sorted(
                    field.attname
                    for field in self._meta.concrete_fields
                    if field.attname not in self.MUTABLE_FIELDS
                    and stored[field.attname] != getattr(self, field.attname)  # type: ignore[literal-required]
                )
                if changed:
                    raise ImmutableModelVersionError(
                        f"Model version {self} is registered and cannot change ({', '.join(changed)}); "
                        "register a new version instead."
                    )
        super().save(*args, **kwargs)


class InferenceJob(models.Model):
    """One run of the pipeline on one study for one pipeline version."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class Step(models.TextChoices):
        PENDING = "pending", "Waiting to start"
        LOAD = "load", "Loading the series"
        SEGMENT = "segment", "Segmenting hyperdensities"
        RADIOMICS = "radiomics", "Extracting radiomics features"
        MODELS = "models", "Running the models"
        DONE = "done", "Done"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="inference_jobs")
    pipeline_version = models.CharField(max_length=32)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    progress_step = models.CharField(max_length=16, choices=Step.choices, default=Step.PENDING)
    step_timings_s = models.JSONField(
        default=dict, blank=True, help_text="Seconds spent per step of the last run."
    )
    attempts = models.PositiveIntegerField(default=0)
    run_count = models.PositiveIntegerField(
        default=0, help_text="Completed or started runs; predictions of each run are kept."
    )
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    worker_id = models.CharField(max_length=64, blank=True)
    task_result_id = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Another worker may take the job over after this time."
    )
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-queued_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "pipeline_version"], name="inference_job_unique_study_pipeline"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"], name="inference_job_lease_idx")
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.status})"


class Prediction(AppendOnlyModel):
    """One model version's output for one run of a job."""

    job = models.ForeignKey(InferenceJob, on_delete=models.CASCADE, related_name="predictions")
    run_number = models.PositiveIntegerField(default=1)
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="predictions"
    )
    probabilities = models.JSONField(
        help_text='Class probabilities, e.g. {"HT": 0.7, "CE": 0.2, "HT+CE": 0.1}.'
    )
    predicted_label = models.CharField(max_length=8, choices=HyperdensityLabel.choices)
    is_uncertain = models.BooleanField(default=False)
    runtime_s = models.FloatField(null=True, blank=True)
    mask_file = models.FileField(
        max_length=255, blank=True, help_text="Lesion label mask (NIfTI) under MEDIA_ROOT."
    )
    features = models.JSONField(default=dict, blank=True)
    provenance = models.JSONField(
        default=dict,
        blank=True,
        help_text="Library versions, weights hash, input series UID and pixel hash, seed.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "-run_number", "model_version"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "run_number", "model_version"], name="prediction_unique_run_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_version}: {self.predicted_label}"


class Lesion(models.Model):
    """A connected hyperdense region found by a job run, drawn by a user, or from a true mask."""

    class Source(models.TextChoices):
        AUTO = "auto", "Automatic segmentation"
        USER = "user", "Uploaded or drawn by a user"
        TRUTH = "truth", "Ground-truth mask"

    class Compartment(models.TextChoices):
        PARENCHYMAL = "parenchymal", "Parenchymal"
        SUBARACHNOID = "subarachnoid", "Subarachnoid"
        INTRAVENTRICULAR = "intraventricular", "Intraventricular"
        UNKNOWN = "unknown", "Unknown"

    # A job run's lesions belong to the job. No job produces a true mask, so its lesions belong to
    # the study it was drawn on instead; the constraints below keep exactly one owner.
    job = models.ForeignKey(
        InferenceJob, on_delete=models.CASCADE, related_name="lesions", null=True, blank=True
    )
    study = models.ForeignKey(
        Study,
        on_delete=models.CASCADE,
        related_name="true_lesions",
        null=True,
        blank=True,
        help_text="The study a true mask was drawn on; set for true lesions only.",
    )
    run_number = models.PositiveIntegerField(default=1, help_text="0 for true lesions (no run).")
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.AUTO)
    label_index = models.PositiveIntegerField(help_text="Value of this lesion in the label mask.")
    volume_ml = models.FloatField()
    mean_hu = models.FloatField()
    max_hu = models.FloatField()
    percentiles_hu = models.JSONField(
        default=dict, blank=True, help_text='e.g. {"p10": 52.0, "p90": 88.0}.'
    )
    bbox_zyx_voxels = models.JSONField(
        default=list,
        blank=True,
        help_text="[z0, y0, x0, z1, y1, x1] in voxel indices, end exclusive.",
    )
    centroid_zyx_mm = models.JSONField(default=list, blank=True)
    compartment = models.CharField(
        max_length=16, choices=Compartment.choices, default=Compartment.UNKNOWN
    )
    paired_with_index = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Label of the other part of the same hyperdensity, when the segmentation split "
        "a hyperdensity of two densities (staining against blood) into two lesions.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "-run_number", "label_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "run_number", "source", "label_index"], name="lesion_unique_label"
            ),
            models.UniqueConstraint(
                fields=["study", "label_index"],
                condition=models.Q(source="truth"),
                name="lesion_unique_true_label",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(source="truth", job__isnull=True, study__isnull=False)
                    | (~models.Q(source="truth") & models.Q(job__isnull=False, study__isnull=True))
                ),
                name="lesion_has_one_owner",
            ),
        ]

    def __str__(self) -> str:
        return f"lesion {self.label_index} ({self.volume_ml:.2f} mL)"

    @staticmethod
    def measured_fields(lesion: Any) -> dict[str, Any]:
        """Field values from one measured ``inference.segmentation.result.Lesion``."""
        return {
            "label_index": lesion.label,
            "volume_ml": lesion.volume_ml,
            "mean_hu": lesion.mean_hu,
            "max_hu": lesion.max_hu,
            "percentiles_hu": {"p10": lesion.p10_hu, "p50": lesion.p50_hu, "p90": lesion.p90_hu},
            "bbox_zyx_voxels": list(lesion.bbox_zyx),
            "centroid_zyx_mm": list(lesion.centroid_zyx_mm),
            "paired_with_index": lesion.paired_with,
        }
