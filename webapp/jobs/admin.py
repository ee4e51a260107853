"""Admin pages for model versions and jobs. Jobs, predictions and lesions are written by workers
and are view-only; a registered model version can only be promoted or demoted."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest

from webapp.core.admin import ViewOnlyAdmin
from webapp.core.audit import Action, client_address_from_request, record_audit_event
from webapp.jobs.models import InferenceJob, Lesion, ModelVersion, Prediction


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["kind", "version", "is_promoted", "registered_at", "sha256"]
    list_filter = ["kind", "is_promoted"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return ["registered_at", "registered_by"]
        return [
            f.name for f in ModelVersion._meta.fields if f.name not in ModelVersion.MUTABLE_FIELDS
        ]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ModelVersion, form: Any, change: bool) -> None:
        if not change:
            obj.registered_by = request.user  # type: ignore[assignment]
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            record_audit_event(
                Action.MODEL_VERSION_PROMOTION_CHANGED
                if change
                else Action.MODEL_VERSION_REGISTERED,
                actor=request.user,
                target=obj,
                client_address=client_address_from_request(request),
                details={
                    "kind": obj.kind,
                    "version": obj.version,
                    "is_promoted": obj.is_promoted,
                    "via": "admin",
                },
            )


@admin.register(InferenceJob)
class InferenceJobAdmin(ViewOnlyAdmin):
    list_display = [
        "pk",
        "study",
        "pipeline_version",
        "status",
        "progress_step",
        "attempts",
        "worker_id",
        "queued_at",
    ]
    list_filter = ["status", "progress_step", "pipeline_version"]
    search_fields = ["study__case__code", "worker_id"]


@admin.register(Prediction)
class PredictionAdmin(ViewOnlyAdmin):
    list_display = [
        "job",
        "run_number",
        "model_version",
        "predicted_label",
        "is_uncertain",
        "runtime_s",
    ]
    list_filter = ["predicted_label", "is_uncertain"]


@admin.register(Lesion)
class LesionAdmin(ViewOnlyAdmin):
    list_display = [
        "job",
        "study",
        "run_number",
        "label_index",
        "source",
        "volume_ml",
        "mean_hu",
        "max_hu",
        "compartment",
    ]
    list_filter = ["source", "compartment"]
