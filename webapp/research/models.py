"""Retraining runs: a researcher's request to train new model versions from adjudicated cases.

A run is a background job like an inference job (status, progress step, step timings, error
code and message), so its page shows the same live progress. Its evaluation report is stored
on the row; the model versions it registered are linked and start unpromoted.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.jobs.models import InferenceJob, ModelVersion


class TrainingRun(models.Model):
    """One explicit request to train classical models; never started by anything else."""

    # The states of an inference job, so dashboards and the status JSON read both alike.
    Status = InferenceJob.Status

    class Step(models.TextChoices):
        PENDING = "pending", "Waiting to start"
        FEATURES = "features", "Collecting radiomics features"
        TRAIN = "train", "Training the models"
        EVALUATE = "evaluate", "Evaluating on the test split"
        REGISTER = "register", "Registering the model versions"
        DONE = "done", "Done"

    class LabelSource(models.TextChoices):
        GROUND_TRUTH = "ground_truth", "Follow-up ground truth (latest version)"
        CONSENSUS = "consensus", "Consensus adjudication (latest version)"

    version = models.CharField(
        max_length=32, unique=True, help_text="Version name given to every model of the run."
    )
    label_source = models.CharField(max_length=16, choices=LabelSource.choices)
    train_split = models.CharField(max_length=16)
    test_split = models.CharField(max_length=16)
    kinds = models.JSONField(default=list, help_text='Model kinds trained, e.g. ["svm", "lr"].')
    config = models.JSONField(
        default=dict, blank=True, help_text="Cross-validation and search settings."
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    progress_step = models.CharField(max_length=16, choices=Step.choices, default=Step.PENDING)
    step_timings_s = models.JSONField(default=dict, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    worker_id = models.CharField(max_length=64, blank=True)
    task_result_id = models.CharField(max_length=64, blank=True)
    # Case codes and labels used, where each case's features came from, class counts.
    cohort = models.JSONField(default=dict, blank=True)
    report = models.JSONField(
        default=dict, blank=True, help_text="inference.evaluation report on the test split."
    )
    model_versions = models.ManyToManyField(ModelVersion, blank=True, related_name="+")
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-queued_at"]

    def __str__(self) -> str:
        return f"training run {self.version} ({self.status})"
