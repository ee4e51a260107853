"""A small hand-built cohort shared by the research tests (this module contains no tests).

Eight cases, one per worklist status, with readers, ground truth, two model versions and
lesions, so every exported value and dashboard number can be checked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.utils import timezone

from webapp.core.models import Adjudication, Case, GroundTruth, Study
from webapp.jobs.models import InferenceJob, Lesion, ModelVersion, Prediction


@dataclass
class Cohort:
    cases: dict[str, Case]
    svm: ModelVersion
    lr: ModelVersion


def _probabilities(label: str, top: float = 0.8) -> dict[str, float]:
    rest = round((1.0 - top) / 2, 4)
    return {name: (top if name == label else rest) for name in ("HT", "CE", "HT+CE")}


def _baseline(case: Case, *, job_status: str = InferenceJob.Status.SUCCEEDED) -> InferenceJob:
    study = Study.objects.create(
        case=case,
        role=Study.Role.BASELINE,
        study_instance_uid=f"2.25.1{case.pk:04d}",
        hours_after_mt=Decimal("2.50"),
    )
    finished = job_status in (InferenceJob.Status.SUCCEEDED, InferenceJob.Status.FAILED)
    return InferenceJob.objects.create(
        study=study,
        pipeline_version="test-1",
        status=job_status,
        run_count=1 if finished else 0,
        error_code="load_failed" if job_status == InferenceJob.Status.FAILED else "",
        error_message="Series has one slice; upload the complete series."
        if job_status == InferenceJob.Status.FAILED
        else "",
        step_timings_s={"load": 1.0, "segment": 2.0} if finished else {},
        started_at=timezone.now() if finished else None,
        finished_at=timezone.now() if finished else None,
    )


def _predict(job: InferenceJob, version: ModelVersion, label: str, top: float = 0.8) -> None:
    Prediction.objects.create(
        job=job,
        run_number=1,
        model_version=version,
        probabilities=_probabilities(label, top),
        predicted_label=label,
        is_uncertain=top < 0.5,
    )


def _follow_up(case: Case) -> Study:
    return Study.objects.create(
        case=case,
        role=Study.Role.FOLLOW_UP,
        study_instance_uid=f"2.25.2{case.pk:04d}",
        hours_after_mt=Decimal("80.00"),
    )


def _truth(case: Case, label: str, user: Any, subtype: str = "") -> None:
    version = case.ground_truths.count() + 1
    GroundTruth.objects.create(
        case=case, version=version, label=label, heidelberg_subtype=subtype, entered_by=user
    )


def _read(case: Case, reader: Any, label: str, confidence: int = 4, shown: bool = False) -> None:
    version = Adjudication.objects.filter(case=case, reader=reader, is_consensus=False).count() + 1
    Adjudication.objects.create(
        case=case,
        reader=reader,
        version=version,
        label=label,
        confidence=confidence,
        model_shown=shown,
    )


def build_cohort(coordinator: Any, reader: Any, second_reader: Any) -> Cohort:
    """Create the eight cases R-01 ... R-08; the docstring of each block gives its status."""
    svm = ModelVersion.objects.create(kind="svm", version="1.0", sha256="a" * 64, is_promoted=True)
    lr = ModelVersion.objects.create(kind="lr", version="2.0-beta", sha256="b" * 64)
    cases = {
        code: Case.objects.create(code=code, split=split)
        for code, split in [
            ("R-01", "test"),
            ("R-02", "test"),
            ("R-03", "test"),
            ("R-04", "test"),
            ("R-05", "train"),
            ("R-06", "train"),
            ("R-07", "train"),
            ("R-08", "unassigned"),
        ]
    }

    # R-01 adjudicated: both readers HT (reader changed mind from CE), truth HT, two models.
    job = _baseline(cases["R-01"])
    _predict(job, svm, "HT")
    _predict(job, lr, "CE", top=0.45)
    Lesion.objects.create(
        job=job, label_index=1, volume_ml=1.5, mean_hu=70.0, max_hu=85.0,
        centroid_zyx_mm=[10.0, -20.5, 30.0], compartment="parenchymal", paired_with_index=2,
    )  # fmt: skip
    Lesion.objects.create(
        job=job, label_index=2, volume_ml=2.25, mean_hu=95.0, max_hu=120.0,
        centroid_zyx_mm=[12.0, -18.0, 28.0], paired_with_index=1,
    )  # fmt: skip
    _follow_up(cases["R-01"])
    _truth(cases["R-01"], "HT", coordinator, subtype="PH1")
    _read(cases["R-01"], reader, "CE", confidence=2)
    _read(cases["R-01"], reader, "HT", confidence=4, shown=True)
    _read(cases["R-01"], second_reader, "HT", confidence=5)

    # R-02 disagreement: readers CE and HT, truth CE.
    job = _baseline(cases["R-02"])
    _predict(job, svm, "CE")
    _truth(cases["R-02"], "CE", coordinator)
    _read(cases["R-02"], reader, "CE", confidence=3)
    _read(cases["R-02"], second_reader, "HT", confidence=3)

    # R-03 awaiting adjudication: prediction HT+CE, truth HT, no readers.
    job = _baseline(cases["R-03"])
    _predict(job, svm, "HT+CE")
    _truth(cases["R-03"], "HT", coordinator)

    # R-04 awaiting follow-up: prediction CE, no follow-up study, no truth.
    _predict(_baseline(cases["R-04"]), svm, "CE")

    # R-05 processing: job queued, nothing predicted.
    _baseline(cases["R-05"], job_status=InferenceJob.Status.QUEUED)

    # R-06 awaiting upload: no study at all.

    # R-07 failed: the job failed before predicting.
    _baseline(cases["R-07"], job_status=InferenceJob.Status.FAILED)

    # R-08 predicted: follow-up uploaded but not read yet.
    _predict(_baseline(cases["R-08"]), svm, "HT")
    _follow_up(cases["R-08"])
    return Cohort(cases=cases, svm=svm, lr=lr)
