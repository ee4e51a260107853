"""Retraining pages: request a run, follow its progress, read its report, promote its models."""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from inference.evaluation import CLASS_LABELS
from inference.models.classical import CLASSICAL_KINDS
from webapp.core.audit import client_address_from_request
from webapp.core.models import Case
from webapp.core.roles import role_required
from webapp.core.services import ClientContext, ServiceError
from webapp.jobs.models import ModelVersion
from webapp.research import performance, retraining
from webapp.research.models import TrainingRun

logger = logging.getLogger(__name__)

REFRESH_S = 3
KIND_CHOICES = [(kind, ModelVersion.Kind(kind).label) for kind in CLASSICAL_KINDS]


class TrainingRequestForm(forms.Form):
    label_source = forms.ChoiceField(
        choices=TrainingRun.LabelSource.choices, initial=TrainingRun.LabelSource.GROUND_TRUTH
    )
    train_split = forms.ChoiceField(choices=Case.Split.choices, initial=Case.Split.TRAIN)
    test_split = forms.ChoiceField(choices=Case.Split.choices, initial=Case.Split.TEST)
    kinds = forms.MultipleChoiceField(
        choices=KIND_CHOICES,
        initial=list(CLASSICAL_KINDS),
        widget=forms.CheckboxSelectMultiple,
        label="Models",
        error_messages={"required": "Choose at least one model kind to train."},
    )
    version = forms.CharField(
        max_length=32,
        required=False,
        help_text="Leave empty for a new name such as app-20260101-1.",
    )


def _context(request: HttpRequest) -> ClientContext:
    return ClientContext(request.user, client_address_from_request(request))  # type: ignore[arg-type]


def _is_active(run: TrainingRun) -> bool:
    return run.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)


@role_required(*retraining.TRAINING_ROLES)
@require_http_methods(["GET", "POST"])
def training_index(request: HttpRequest) -> HttpResponse:
    """List the runs and take a new request; a rejected request names what is missing."""
    form = TrainingRequestForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            run = retraining.request_training(
                _context(request),
                label_source=data["label_source"],
                train_split=data["train_split"],
                test_split=data["test_split"],
                kinds=list(data["kinds"]),
                version=data["version"],
            )
        except ServiceError as failure:
            error = failure.message
            logger.info(
                "Training request rejected (%s) for user_id=%s", failure.code, request.user.pk
            )
        else:
            messages.success(request, f"Training run {run.version} queued.")
            return redirect("research:training-detail", run_id=run.pk)
    status = 400 if request.method == "POST" else 200
    n_splits = int(retraining.DEFAULT_CONFIG["n_splits"])
    counts = retraining.labelled_counts(n_splits)
    return render(
        request,
        "research/training.html",
        {
            "form": form,
            "error": error,
            "labels": CLASS_LABELS,
            "counts": counts,
            "requirements": retraining.requirements_text(n_splits),
            "demo_hint": retraining.DEMO_HINT if retraining.too_few_to_train(counts) else "",
            "runs": TrainingRun.objects.select_related("requested_by")[:50],
            "unet_note": retraining.UNET_NOTE,
        },
        status=status,
    )


def _figures(run: TrainingRun) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for name in run.report.get("models", {}):
        figures[name] = {}
        for figure in performance.FIGURES:
            urls = {
                f"{file_format}_url": reverse(
                    "research:training-figure",
                    kwargs={
                        "run_id": run.pk,
                        "name": name,
                        "figure": figure,
                        "file_format": file_format,
                    },
                )
                for file_format in ("svg", "png")
            }
            figures[name][figure] = {
                "svg": performance.figure_svg(run.report, name, figure),
                **urls,
            }
    return figures


@role_required(*retraining.TRAINING_ROLES)
@require_GET
def training_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("requested_by"), pk=run_id)
    report = run.report or None
    response = render(
        request,
        "research/training_detail.html",
        {
            "run": run,
            "active": _is_active(run),
            "steps": [
                (value, label, run.step_timings_s.get(value))
                for value, label in TrainingRun.Step.choices
                if value not in (TrainingRun.Step.PENDING, TrainingRun.Step.DONE)
            ],
            "report": report,
            "published": performance.published_rows(report) if report else [],
            "synthetic_models": performance.synthetic_model_names(report) if report else [],
            "figures": _figures(run) if report else {},
            "versions": list(run.model_versions.order_by("kind")),
            "labels": CLASS_LABELS,
            "unet_note": retraining.UNET_NOTE,
        },
    )
    if _is_active(run):
        # The browser reloads the page every few seconds until the run has finished.
        response["Refresh"] = str(REFRESH_S)
    return response


@role_required(*retraining.TRAINING_ROLES)
@require_GET
def training_status(request: HttpRequest, run_id: int) -> JsonResponse:
    """Return the run's state as JSON for polling while it is queued or running."""
    run = get_object_or_404(TrainingRun, pk=run_id)
    return JsonResponse(
        {
            "training_run_id": run.pk,
            "version": run.version,
            "status": run.status,
            "progress_step": run.progress_step,
            "progress_label": run.get_progress_step_display(),
            "step_timings_s": run.step_timings_s,
            "error_code": run.error_code,
            "error_message": run.error_message,
            "model_versions": list(run.model_versions.values_list("pk", flat=True)),
            "queued_at": run.queued_at.isoformat(),
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        }
    )


@role_required(*retraining.TRAINING_ROLES)
@require_GET
def training_figure(
    request: HttpRequest, run_id: int, name: str, figure: str, file_format: str
) -> HttpResponse:
    """Download a ROC or calibration chart of a run's report as SVG or PNG."""
    from webapp.research.figures import figure_response

    run = get_object_or_404(TrainingRun, pk=run_id)
    if figure not in performance.FIGURES or name not in run.report.get("models", {}):
        return HttpResponse(
            f"Training run {run.version} has no {figure} figure for model {name!r}.",
            status=404,
            content_type="text/plain",
        )
    svg = performance.figure_svg(run.report, name, figure)
    return figure_response(svg, f"{figure}-{name}-{run.version}", file_format)


@role_required(*retraining.TRAINING_ROLES)
@require_POST
def model_version_promotion(request: HttpRequest, version_id: int) -> HttpResponse:
    """Promote or demote a model version (audited), then go back to the page it came from."""
    version = get_object_or_404(ModelVersion, pk=version_id)
    promote = request.POST.get("promote") == "1"
    try:
        retraining.set_promotion(_context(request), version, promote)
    except ServiceError as failure:
        messages.error(request, failure.message)
    else:
        state = "promoted: new analyses use it" if promote else "no longer promoted"
        messages.success(request, f"Model {version.kind} {version.version} {state}.")
    run_id = request.POST.get("run_id", "")
    if run_id.isdigit():
        return redirect("research:training-detail", run_id=int(run_id))
    return redirect("research:training")
