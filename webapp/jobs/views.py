"""Job status as JSON, polled by the case page (static/js/job_status.js)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404

from webapp.core import roles
from webapp.core.models import Case
from webapp.jobs.models import InferenceJob


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
