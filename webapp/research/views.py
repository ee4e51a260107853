"""Research pages: the worklist body, exports and the ground-truth CSV import."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import BadRequest
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from inference.evaluation import CLASS_LABELS
from webapp.core import roles
from webapp.core.audit import client_address_from_request
from webapp.core.models import Case
from webapp.core.roles import role_required
from webapp.core.services import ClientContext, ServiceError
from webapp.jobs.models import Prediction
from webapp.research import dashboards, exports, imports, masks, performance
from webapp.research.figures import figure_response
from webapp.research.worklist import (
    SORT_FIELDS,
    WorklistQuery,
    build_worklist,
    is_blinded_reader,
    required_readers,
    status_choices,
    status_help,
)

logger = logging.getLogger(__name__)

# Session key of the validated, not yet applied import.
PENDING_IMPORT_KEY = "research_pending_ground_truth_import"


def _context(request: HttpRequest) -> ClientContext:
    return ClientContext(request.user, client_address_from_request(request))  # type: ignore[arg-type]


def render_worklist(request: HttpRequest) -> HttpResponse:
    """Render the worklist page for the case-list URL (the caller checks the role)."""
    query = WorklistQuery.from_params(request.GET)
    page, rows = build_worklist(request.user, query)  # type: ignore[arg-type]
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "core/case_list.html",
        {
            "page": page,
            "rows": rows,
            "query": query,
            "statuses": status_choices(request.user),
            "status_help": status_help(required_readers()),
            "required_readers": required_readers(),
            "splits": Case.Split.choices,
            "sort_fields": SORT_FIELDS,
            "is_reader": is_blinded_reader(request.user),
            "querystring": params.urlencode(),
        },
    )


@role_required(*exports.EXPORT_ROLES)
@require_GET
def export_index(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "research/exports.html",
        {"kinds": exports.KINDS, "formats": exports.FORMATS, "splits": Case.Split.choices},
    )


@role_required(*exports.EXPORT_ROLES)
@require_GET
def export_download(request: HttpRequest, kind: str, export_format: str) -> HttpResponse:
    if kind not in exports.KINDS or export_format not in exports.FORMATS:
        raise Http404(f"No export {kind}.{export_format}.")
    split = request.GET.get("split") or None
    if split is not None and split not in Case.Split.values:
        return HttpResponse(
            f"Split {split!r} is not one of {', '.join(Case.Split.values)}.",
            status=400,
            content_type="text/plain",
        )
    text, _rows = exports.export_dataset(
        _context(request), kind=kind, export_format=export_format, split=split
    )
    content_type = "text/csv" if export_format == "csv" else "application/json"
    response = HttpResponse(text, content_type=f"{content_type}; charset=utf-8")
    suffix = f"-{split}" if split else ""
    response["Content-Disposition"] = f'attachment; filename="ceht-{kind}{suffix}.{export_format}"'
    return response


@role_required(*imports.IMPORT_ROLES)
@require_http_methods(["GET", "POST"])
def import_ground_truth(request: HttpRequest) -> HttpResponse:
    """Upload a CSV and show its preview; the pending import waits in the session."""
    preview = None
    error = ""
    if request.method == "POST":
        upload = request.FILES.get("file")
        if upload is None:
            error = "No file was uploaded; choose a CSV file with case_code and label columns."
        else:
            try:
                preview = imports.preview_ground_truth_csv(
                    _context(request), upload.read(), file_name=upload.name or "upload.csv"
                )
            except ServiceError as failure:
                error = failure.message
            else:
                if preview.changes:
                    request.session[PENDING_IMPORT_KEY] = preview.to_dict()
                else:
                    # Nothing to confirm: drop an older preview so it cannot be applied instead.
                    request.session.pop(PENDING_IMPORT_KEY, None)
    return render(
        request,
        "research/import.html",
        {"preview": preview, "error": error, "columns": imports.REQUIRED_COLUMNS},
        status=400 if error else 200,
    )


@role_required(*imports.IMPORT_ROLES)
@require_POST
def confirm_ground_truth_import(request: HttpRequest) -> HttpResponse:
    """Apply the pending import whose hash the form carries; a different hash is rejected."""
    pending: dict[str, Any] | None = request.session.get(PENDING_IMPORT_KEY)
    if pending is None or pending.get("sha256") != request.POST.get("sha256"):
        messages.error(
            request,
            "The import to confirm is not the one previewed (or has already been applied); "
            "upload the file again.",
        )
        return redirect("research:import")
    preview = imports.ImportPreview.from_dict(pending)
    try:
        added = imports.apply_ground_truth_import(_context(request), preview)
    except ServiceError as failure:
        messages.error(request, failure.message)
        return redirect("research:import")
    del request.session[PENDING_IMPORT_KEY]
    messages.success(
        request,
        f"Import applied: {added} new ground-truth version(s); "
        f"{len(preview.accepted) - added} row(s) unchanged; {len(preview.rejected)} rejected.",
    )
    return redirect("research:import")


PERFORMANCE_ROLES = (roles.RESEARCHER, roles.ADMIN)


def _performance_params(request: HttpRequest) -> tuple[str, str]:
    split = request.GET.get("split", Case.Split.TEST)
    reference = request.GET.get("reference", "ground_truth")
    if split not in Case.Split.values or reference not in performance.REFERENCES:
        raise BadRequest(
            f"split must be one of {', '.join(Case.Split.values)} and reference one of "
            f"{', '.join(performance.REFERENCES)}."
        )
    return split, reference


@role_required(*PERFORMANCE_ROLES)
@require_GET
def performance_dashboard(request: HttpRequest) -> HttpResponse:
    """Metrics with 95% intervals, confusion matrices, figures and paired comparisons."""
    split, reference = _performance_params(request)
    result = performance.build_performance_report(split, reference)
    figures: dict[str, dict[str, dict[str, str]]] = {}
    if result.report is not None:
        query = urlencode({"split": split, "reference": reference})
        for name, model in result.report["models"].items():
            figures[name] = {
                figure: {
                    "svg": performance.figure_svg(result.report, name, figure),
                    "svg_url": reverse(
                        "research:performance-figure", args=[model["info"]["pk"], figure]
                    )
                    + f"?{query}",
                    "png_url": reverse(
                        "research:performance-figure-png", args=[model["info"]["pk"], figure]
                    )
                    + f"?{query}",
                }
                for figure in performance.FIGURES
            }
    return render(
        request,
        "research/performance.html",
        {
            "result": result,
            "report": result.report,
            "figures": figures,
            "published": performance.published_rows(result.report) if result.report else [],
            "synthetic_models": performance.synthetic_model_names(result.report)
            if result.report
            else [],
            "splits": Case.Split.choices,
            "references": performance.REFERENCES.items(),
            "split": split,
            "reference": reference,
            "labels": CLASS_LABELS,
        },
    )


@role_required(*PERFORMANCE_ROLES)
@require_GET
def performance_figure(
    request: HttpRequest, version_id: int, figure: str, file_format: str = "svg"
) -> HttpResponse:
    """Download one model version's ROC or calibration chart as an SVG or PNG file."""
    split, reference = _performance_params(request)
    if figure not in performance.FIGURES:
        raise Http404(f"No figure {figure!r}.")
    result = performance.build_performance_report(split, reference)
    version = next((item for item in result.versions if item.pk == version_id), None)
    if result.report is None or version is None:
        raise Http404(
            f"Model version {version_id} has no evaluation on the {split} split against the "
            f"{reference.replace('_', ' ')}."
        )
    svg = performance.figure_svg(result.report, performance.model_name(version), figure)
    response = figure_response(
        svg, f"{figure}-{version.kind}-{version.version}-{split}-{reference}", file_format
    )
    if response.status_code == 200:
        performance.record_figure_download(
            _context(request), version, figure, file_format, split, reference
        )
    return response


READER_DASHBOARD_ROLES = (roles.RESEARCHER, roles.ADMIN)
OPERATIONS_ROLES = (roles.COORDINATOR, roles.RESEARCHER, roles.ADMIN)


@role_required(*READER_DASHBOARD_ROLES)
@require_GET
def reader_dashboard(request: HttpRequest) -> HttpResponse:
    """Reader agreement, readers against truth and model, and changes of mind."""
    split = request.GET.get("split") or None
    if split is not None and split not in Case.Split.values:
        raise BadRequest(f"split must be one of {', '.join(Case.Split.values)}.")
    return render(
        request,
        "research/readers.html",
        {
            "dashboard": dashboards.build_reader_dashboard(split),
            "splits": Case.Split.choices,
            "split": split or "",
        },
    )


@role_required(*OPERATIONS_ROLES)
@require_GET
def operations_dashboard(request: HttpRequest) -> HttpResponse:
    """Jobs by state, failures with their messages, median and p95 seconds per step."""
    return render(
        request,
        "research/operations.html",
        {"dashboard": dashboards.build_operations_dashboard()},
    )


@role_required(*exports.EXPORT_ROLES)
@require_GET
def mask_download(request: HttpRequest, prediction_id: int, mask_format: str) -> HttpResponse:
    """Download a prediction's lesion mask as NIfTI or DICOM SEG (audited)."""
    if mask_format not in masks.MASK_FORMATS:
        raise Http404(f"No mask format {mask_format!r}.")
    prediction = (
        Prediction.objects.select_related("job__study__case", "model_version")
        .filter(pk=prediction_id)
        .first()
    )
    if prediction is None:
        raise Http404(f"No prediction {prediction_id}.")
    try:
        data = masks.export_mask(_context(request), prediction, mask_format)
    except masks.MaskExportError as failure:
        return HttpResponse(failure.message, status=409, content_type="text/plain")
    code = prediction.job.study.case.code
    if mask_format == "seg":
        response = HttpResponse(data, content_type="application/dicom")
        file_name = f"{code}-prediction-{prediction.pk}-seg.dcm"
    else:
        response = HttpResponse(data, content_type="application/gzip")
        file_name = f"{code}-prediction-{prediction.pk}-mask.nii.gz"
    response["Content-Disposition"] = f'attachment; filename="{file_name}"'
    return response
