"""Real ``db_worker`` processes against PostgreSQL: crash takeover and two workers sharing jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.webapp import test_ingest_support as support
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    named_files,
    test_model_dir,
    wait_for,
    write_study,
)
from webapp.core.models import Case
from webapp.ingest.services import ingest_files
from webapp.jobs.models import InferenceJob, Prediction

# Bound by assignment, not import, because the tests take a parameter of the same name.
start_worker = support.start_worker

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="needs PostgreSQL row locks"),
]


def upload_study(code: str, user: Any, folder: Path) -> InferenceJob:
    case = Case.objects.create(code=code)
    paths = write_study(folder, 8)
    files = named_files(paths)
    ingest_files(case, "baseline", 2, files, user)
    return InferenceJob.objects.get(study__case=case)


def job_status(job_id: int) -> tuple[str, str]:
    job = InferenceJob.objects.get(pk=job_id)
    return job.status, job.progress_step


def test_killed_worker_job_is_taken_over(
    coordinator: Any, tmp_path: Path, start_worker: Any
) -> None:
    job = upload_study("CRASH-1", coordinator, tmp_path / "in")
    slow = start_worker("worker-killed", INFERENCE_TEST_STEP_DELAY_S="3")
    wait_for(lambda: job_status(job.pk)[0] == "running", 60, "the first worker to start the job")

    slow.kill()
    assert job_status(job.pk)[0] == "running"
    start_worker("worker-rescuer")
    wait_for(lambda: job_status(job.pk)[0] != "running", 60, "the second worker to finish")

    job.refresh_from_db()
    assert job.status == "succeeded", job.error_message
    assert job.worker_id == "worker-rescuer"
    assert job.attempts == 2
    assert job.run_count == 2
    assert list(Prediction.objects.filter(job=job).values_list("run_number", flat=True)) == [2]
    assert connection.vendor == "postgresql"


def test_two_workers_share_jobs_without_double_work(
    coordinator: Any, tmp_path: Path, start_worker: Any
) -> None:
    jobs = [upload_study(f"PAIR-{i}", coordinator, tmp_path / f"in{i}") for i in range(6)]
    job_ids = [job.pk for job in jobs]
    first = start_worker("worker-one", INFERENCE_TEST_STEP_DELAY_S="0.5")
    second = start_worker("worker-two", INFERENCE_TEST_STEP_DELAY_S="0.5")

    wait_for(
        lambda: InferenceJob.objects.filter(pk__in=job_ids, status="succeeded").count() == 6,
        120,
        "both workers to finish six jobs",
    )

    finished = InferenceJob.objects.filter(pk__in=job_ids)
    assert sorted(finished.values_list("attempts", flat=True)) == [1] * 6
    assert sorted(finished.values_list("run_count", flat=True)) == [1] * 6
    assert Prediction.objects.filter(job__in=job_ids).count() == 6
    assert set(finished.values_list("worker_id", flat=True)) == {"worker-one", "worker-two"}
    assert "Traceback" not in first.output()
    assert "Traceback" not in second.output()


def test_heartbeat_keeps_long_job_with_its_worker(
    coordinator: Any, tmp_path: Path, start_worker: Any
) -> None:
    job = upload_study("LONG-1", coordinator, tmp_path / "in")
    # Four steps of 4 s each outlast the 10 s lease, so only the heartbeat keeps the job.
    start_worker("worker-slow", INFERENCE_TEST_STEP_DELAY_S="4")
    wait_for(lambda: job_status(job.pk)[0] == "running", 60, "the slow worker to start the job")
    start_worker("worker-idle")
    wait_for(lambda: job_status(job.pk)[0] != "running", 60, "the slow worker to finish")

    job.refresh_from_db()
    assert job.status == "succeeded", job.error_message
    assert job.worker_id == "worker-slow"
    assert job.attempts == 1
    assert job.step_timings_s["load"] >= 4
    assert Prediction.objects.filter(job=job).count() == 1
