"""Admin pages. Append-only and upload-derived records are view-only here: changing them would
bypass the services that version them and write the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpRequest

from webapp.core.audit import Action, client_address_from_request, record_audit_event
from webapp.core.models import Adjudication, AuditEvent, Case, GroundTruth, Instance, Series, Study


class ViewOnlyAdmin(admin.ModelAdmin):
    """Lists and shows rows but offers no add, change or delete."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ["code", "split", "readers_blinded", "is_synthetic", "created_at"]
    list_filter = ["split", "readers_blinded", "is_synthetic"]
    search_fields = ["code"]
    readonly_fields = ["created_at", "created_by", "updated_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # Studies, ground truth and adjudications protect their case; deleting is a data
        # management decision that belongs in a reviewed script, not a button.
        return False

    def save_model(
        self, request: HttpRequest, obj: Case, form: ModelForm[Case], change: bool
    ) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            record_audit_event(
                Action.CASE_CHANGED if change else Action.CASE_CREATED,
                actor=request.user,
                target=obj,
                client_address=client_address_from_request(request),
                details={
                    "code": obj.code,
                    "changed_fields": sorted(form.changed_data),
                    "via": "admin",
                },
            )


@admin.register(Study)
class StudyAdmin(ViewOnlyAdmin):
    list_display = ["case", "role", "hours_after_mt", "out_of_window", "modality", "created_at"]
    list_filter = ["role", "out_of_window"]
    search_fields = ["case__code"]


@admin.register(Series)
class SeriesAdmin(ViewOnlyAdmin):
    list_display = [
        "study",
        "series_number",
        "kind",
        "kernel",
        "slice_thickness_mm",
        "image_count",
        "is_chosen",
    ]
    list_filter = ["kind", "is_chosen"]
    search_fields = ["study__case__code"]


@admin.register(Instance)
class InstanceAdmin(ViewOnlyAdmin):
    list_display = ["series", "instance_number", "slice_position_mm", "size_bytes", "sha256"]
    search_fields = ["series__study__case__code", "sha256"]


@admin.register(GroundTruth)
class GroundTruthAdmin(ViewOnlyAdmin):
    list_display = [
        "case",
        "version",
        "label",
        "heidelberg_subtype",
        "source",
        "entered_by",
        "entered_at",
    ]
    list_filter = ["label", "source"]
    search_fields = ["case__code"]


@admin.register(Adjudication)
class AdjudicationAdmin(ViewOnlyAdmin):
    list_display = [
        "case",
        "reader",
        "version",
        "is_consensus",
        "label",
        "confidence",
        "model_shown",
        "created_at",
    ]
    list_filter = ["label", "is_consensus", "model_shown"]
    search_fields = ["case__code", "reader__username"]


@admin.register(AuditEvent)
class AuditEventAdmin(ViewOnlyAdmin):
    list_display = [
        "occurred_at",
        "actor_username",
        "action",
        "object_type",
        "object_id",
        "client_address",
    ]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_username", "object_id", "request_id"]
    date_hierarchy = "occurred_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in AuditEvent._meta.fields]


class AuditedUserAdmin(UserAdmin):
    """Django's user admin, with every account and role change written to the audit log."""

    def _audit(self, request: HttpRequest, action: str, user: Any, **details: Any) -> None:
        record_audit_event(
            action,
            actor=request.user,
            target=user,
            client_address=client_address_from_request(request),
            details={"username": user.get_username(), **details},
        )

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # Field names only; a password or its hash never goes into the log.
        fields = sorted(name for name in form.changed_data if "password" not in name)
        if change:
            self._audit(request, Action.USER_CHANGED, obj, fields=fields)
        else:
            self._audit(request, Action.USER_CREATED, obj)

    def save_related(
        self, request: HttpRequest, form: ModelForm, formsets: Any, change: bool
    ) -> None:
        # Group membership is saved here, after save_model, so the old roles are still readable.
        user = form.instance
        before = set(user.groups.values_list("name", flat=True)) if change else set()
        super().save_related(request, form, formsets, change)
        after = set(user.groups.values_list("name", flat=True))
        if before != after:
            self._audit(
                request,
                Action.USER_ROLES_CHANGED,
                user,
                granted=sorted(after - before),
                revoked=sorted(before - after),
            )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self._audit(request, Action.USER_DELETED, obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for user in queryset:
            self._audit(request, Action.USER_DELETED, user)
        super().delete_queryset(request, queryset)


admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
