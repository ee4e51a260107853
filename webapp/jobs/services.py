"""Queueing inference jobs: one job per study and pipeline version, queued after commit.

A job row is created (or reset, when forced) inside the caller's transaction, and the task that
runs it is sent with ``transaction.on_commit``, so a worker never picks up a job whose study is
not committed yet.
"""

from __future__ import annotations

import logging
from datetime import datetime
from itertools import groupby

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from webapp.core import roles
from webapp.core.audit import Action, record_audit_event
from webapp.core.models import Case, Study
from webapp.core.services import RoleRequiredError
from webapp.jobs.models import InferenceJob

logger = logging.getLogger(__name__)


def pipeline_version() -> str:
    return str(settings.INFERENCE["PIPELINE_VERSION"])


def enqueue_inference(
    study: Study,
    *,
    requested_by: User | None = None,
    force: bool = False,
) -> InferenceJob:
    """Queue the study's job for the current pipeline version and return it.

    Idempotent: a job that is queued or running is left alone. A finished (succeeded or
    failed) job is queued again only with ``force``. Its next run then gets a new
    ``run_count`` and new prediction rows, and the earlier rows stay.
    """
    version = pipeline_version()
    with transaction.atomic():
        try:
            with transaction.atomic():
                job, created = InferenceJob.objects.get_or_create(
                    study=study, pipeline_version=version, defaults={"requested_by": requested_by}
                )
        except IntegrityError:
            # Two requests queued the same study at once; the other one created the row.
            job, created = InferenceJob.objects.get(study=study, pipeline_version=version), False
        # Lock the row: a worker finishing the job and a forced re-run must not interleave.
        job = InferenceJob.objects.select_for_update().get(pk=job.pk)
        finished = job.status in (InferenceJob.Status.SUCCEEDED, InferenceJob.Status.FAILED)
        if not created and not (force and finished):
            return job
        if not created:
            job.status = InferenceJob.Status.QUEUED
            job.progress_step = InferenceJob.Step.PENDING
            job.attempts = 0
            job.error_code = ""
            job.error_message = ""
            job.lease_expires_at = None
            job.worker_id = ""
            job.requested_by = requested_by
            job.save(
                update_fields=[
                    "status",
                    "progress_step",
                    "attempts",
                    "error_code",
                    "error_message",
                    "lease_expires_at",
                    "worker_id",
                    "requested_by",
                ]
            )
        job_id = job.pk
        transaction.on_commit(lambda: send_job_task(job_id))
    logger.info("Queued inference job_id=%s study_id=%s forced=%s", job.pk, study.pk, force)
    return job


def send_job_task(job_id: int, run_after: datetime | None = None) -> None:
    """Put a task for the job on the queue; ``run_after`` defers it (retries, lease checks)."""
    from webapp.jobs.inference_tasks import run_inference_job

    task = run_inference_job.using(run_after=run_after) if run_after else run_inference_job
    result = task.enqueue(job_id)
    InferenceJob.objects.filter(pk=job_id).update(task_result_id=str(result.id)[:64])


def count_queued(jobs: list[InferenceJob]) -> int:
    """Return how many of ``jobs`` are queued; the others were already running."""
    return sum(1 for job in jobs if job.status == InferenceJob.Status.QUEUED)


def reanalyse_cases(
    user: User,
    cases: list[Case] | None = None,
    *,
    force: bool = True,
    client_address: str | None = None,
) -> list[InferenceJob]:
    """Queue every study of ``cases`` (all cases when None) that has a chosen series.

    Used after a new model version is registered or promoted: each finished job runs again with
    the model versions selected then and gets new prediction rows; the earlier rows stay. A job
    that is queued or running is left alone. Needs the researcher or admin role; the request is
    audited once per case.
    """
    if not roles.has_any_role(user, roles.RESEARCHER, roles.ADMIN):
        raise RoleRequiredError(
            f"User {user.get_username()!r} needs the researcher or admin role to re-analyse cases."
        )
    studies = (
        Study.objects.filter(series__is_chosen=True)
        .distinct()
        .select_related("case")
        .order_by("case_id", "pk")
    )
    if cases is not None:
        studies = studies.filter(case__in=cases)
    with transaction.atomic():
        jobs = [enqueue_inference(study, requested_by=user, force=force) for study in studies]
        for case, case_studies in groupby(studies, key=lambda study: study.case):
            record_audit_event(
                Action.REANALYSIS_REQUESTED,
                actor=user,
                target=case,
                client_address=client_address,
                details={"study_ids": [study.pk for study in case_studies]},
            )
    logger.info("Re-analysis requested by user_id=%s for %d studies", user.pk, len(jobs))
    return jobs
