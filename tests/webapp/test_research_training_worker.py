"""Retraining end to end with a real ``db_worker``: request, run, register, promote, use.

The cohort's features are stored on its prediction rows, as the worker stores them, so the run
trains in seconds. The two studies uploaded afterwards go through the whole pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connection  # noqa: F401 - the skipif condition reads it
from django.test import Client
from django.urls import reverse

from tests.webapp import test_ingest_support as support
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    named_files,
    register_test_model,
    test_model_dir,
    wait_for,
    write_study,
)
from tests.webapp.test_research_training_support import FAST_CONFIG, build_cohort
from webapp.core.models import AuditEvent, Case
from webapp.core.services import ClientContext
from webapp.ingest.services import ingest_files
from webapp.jobs.models import InferenceJob, ModelVersion
from webapp.research.models import TrainingRun
from webapp.research.retraining import request_training

start_worker = support.start_worker

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="needs PostgreSQL row locks"),
]


def analyse_new_case(code: str, user: Any, folder: Path) -> set[str]:
    """Upload a baseline study, wait for its job, return the model versions that predicted."""
    case = Case.objects.create(code=code)
    ingest_files(case, "baseline", 2, named_files(write_study(folder, 12)), user)
    job = InferenceJob.objects.get(study__case=case)
    wait_for(
        lambda: InferenceJob.objects.get(pk=job.pk).status in ("succeeded", "failed"),
        90,
        f"the analysis of {code}",
    )
    job.refresh_from_db()
    assert job.status == "succeeded", job.error_message
    return {
        f"{prediction.model_version.kind} {prediction.model_version.version}"
        for prediction in job.predictions.select_related("model_version")
    }


def test_request_train_promote_and_use(
    client: Client,
    researcher: Any,
    coordinator: Any,
    ingest_settings: Any,  # noqa: F811
    start_worker: Any,
    tmp_path: Path,
) -> None:
    model_dir = tmp_path / "models"
    register_test_model(model_dir)
    ingest_settings.INFERENCE = {**ingest_settings.INFERENCE, "MODEL_DIR": str(model_dir)}
    build_cohort(coordinator)
    run = request_training(
        ClientContext(researcher, "127.0.0.1"),
        label_source="ground_truth",
        train_split="train",
        test_split="test",
        kinds=["rf", "lr"],
        version="app-e2e",
        config=FAST_CONFIG,
    )
    assert run.status == "queued"
    worker = start_worker("worker-trainer")

    wait_for(
        lambda: TrainingRun.objects.get(pk=run.pk).status in ("succeeded", "failed"),
        240,
        "the training run",
    )
    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    assert run.worker_id == "worker-trainer"
    assert set(run.step_timings_s) == {"features", "train", "evaluate", "register"}
    versions = {v.kind: v for v in run.model_versions.all()}
    assert sorted(versions) == ["hybrid", "lr", "rf"]
    for version in versions.values():
        assert version.version == "app-e2e"
        assert version.is_promoted is False
        assert version.metrics["test"]["n_cases"] == 6
        assert 0.0 <= version.metrics["test"]["macro_f1"] <= 1.0
    assert run.report["n_cases"] == 6
    assert set(run.report["models"]) == {"rf", "lr", "hybrid"}
    assert AuditEvent.objects.filter(action="model_version.registered").count() == 3

    # Registered but not promoted: a new case still runs the shipped model only.
    assert analyse_new_case("NEW-1", coordinator, tmp_path / "new1") == {"lr 1.0.0"}

    client.force_login(researcher)
    response = client.post(
        reverse("research:model-version-promotion", args=[versions["lr"].pk]),
        {"promote": "1", "run_id": str(run.pk)},
    )
    assert response.status_code == 302
    assert ModelVersion.objects.get(pk=versions["lr"].pk).is_promoted

    # Promoted: the next case runs the new lr in place of the shipped one; rf and the hybrid
    # are still waiting for a promotion.
    assert analyse_new_case("NEW-2", coordinator, tmp_path / "new2") == {"lr app-e2e"}
    assert "Traceback" not in worker.output()
