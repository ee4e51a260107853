"""Job status as JSON, polled by the case page (static/js/job_status.js), and re-analysis."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from webapp.core import roles
from webapp.core.audit import client_address_from_request
from webapp.core.models import Case
from webapp.jobs.models import InferenceJob
from webapp.jobs.services import count_queued, reanalyse_cases


@roles.role_required()
def case_job_status(request: HttpRequest, code: str) -> JsonResponse:
    """Return the inference jobs of a case's studies: status, step, timings and errors.

    Predictions are not included, so blinded readers can poll this without seeing them.
    """
    case = get_object_or_404(Case, code=code)
    jobs = (
        InferenceJob.objects.filter(study__case=case)
        .select_related("study")
        .order_by("study__role", "study_id", "-queued_at")
    )
    return JsonResponse(
        {
            "case": case.code,
            "jobs": [
                {
                    "job_id": job.pk,
                    "study_role": job.study.role,
                    "pipeline_version": job.pipeline_version,
                    "status": job.status,
                    "progress_step": job.progress_step,
                    "progress_label": job.get_progress_step_display(),
                    "step_timings_s": job.step_timings_s,
                    "attempts": job.attempts,
                    "run_count": job.run_count,
                    "error_code": job.error_code,
                    "error_message": job.error_message,
                    "queued_at": job.queued_at.isoformat(),
                    "started_at": job.started_at.isoformat() if job.started_at else None,
                    "finished_at": job.finished_at.isoformat() if job.finished_at else None,
                }
                for job in jobs
            ],
        }
    )


def _queued_message(jobs: list[InferenceJob], scope: str) -> str:
    queued = count_queued(jobs)
    if not jobs:
        return f"No study of {scope} has a series chosen for analysis, so nothing was queued."
    busy = len(jobs) - queued
    message = (
        f"Re-analysis of {scope}: {queued} stud{'y' if queued == 1 else 'ies'} queued with the "
        "model versions in use now; earlier predictions are kept."
    )
    if busy:
        message += f" {busy} already running, left alone."
    return message


@roles.role_required(roles.RESEARCHER, roles.ADMIN)
@require_POST
def reanalyse_case(request: HttpRequest, code: str) -> HttpResponse:
    """Queue the case's analysed studies again, e.g. after a model version was promoted."""
    case = get_object_or_404(Case, code=code)
    jobs = reanalyse_cases(
        request.user,  # type: ignore[arg-type]
        [case],
        client_address=client_address_from_request(request),
    )
    messages.success(request, _queued_message(jobs, f"case {case.code}"))
    return redirect("case-detail", code=case.code)


@roles.role_required(roles.RESEARCHER, roles.ADMIN)
@require_POST
def reanalyse_all(request: HttpRequest) -> HttpResponse:
    """Queue every analysed study of every case again."""
    if request.POST.get("confirm") != "all":
        messages.error(
            request, "Tick the confirmation box to re-analyse every case; nothing was queued."
        )
        return redirect("research:operations")
    jobs = reanalyse_cases(
        request.user,  # type: ignore[arg-type]
        None,
        client_address=client_address_from_request(request),
    )
    messages.success(request, _queued_message(jobs, "all cases"))
    return redirect("research:operations")
