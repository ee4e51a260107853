"""The latest facts of many cases at once, in a fixed number of queries.

Exports and dashboards need, per case, the latest ground truth, each reader's latest label, the
latest consensus, each model version's latest prediction and a lesion summary. Loading them per
case would cost several queries per row, so every table is read once for the whole set of cases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from webapp.core.models import Adjudication, Case, GroundTruth, Study
from webapp.jobs.models import InferenceJob, Lesion, ModelVersion, Prediction


@dataclass
class StudyFacts:
    study_instance_uid: str
    hours_after_mt: Decimal | None
    out_of_window: bool | None


@dataclass
class CaseFacts:
    """Latest state of one case; ``None`` where nothing was recorded yet."""

    case: Case
    baseline: StudyFacts | None = None
    follow_up: StudyFacts | None = None
    ground_truth: GroundTruth | None = None
    consensus: Adjudication | None = None
    # Reader user id -> that reader's latest adjudication (consensus rows excluded).
    readers: dict[int, Adjudication] = field(default_factory=dict)
    # Reader user id -> that reader's first adjudication version, to see later changes of mind.
    first_readings: dict[int, Adjudication] = field(default_factory=dict)
    # Model version id -> latest prediction of that version on the baseline study.
    predictions: dict[int, Prediction] = field(default_factory=dict)
    # Lesions of the latest run of the most recent job on the baseline study, automatic source.
    lesions: list[Lesion] = field(default_factory=list)


def load_case_facts(cases: Iterable[Case]) -> list[CaseFacts]:
    """Return the facts of ``cases`` in their given order, using six queries for any count."""
    facts = [CaseFacts(case=case) for case in cases]
    by_id = {item.case.pk: item for item in facts}
    ids = list(by_id)

    for study in Study.objects.filter(case_id__in=ids).order_by("created_at", "pk"):
        study_facts = StudyFacts(
            study.study_instance_uid, study.hours_after_mt, study.out_of_window
        )
        # The most recently added study of each role wins, which matches a re-upload.
        if study.role == Study.Role.BASELINE:
            by_id[study.case_id].baseline = study_facts
        else:
            by_id[study.case_id].follow_up = study_facts

    for truth in GroundTruth.objects.filter(case_id__in=ids).order_by("version"):
        by_id[truth.case_id].ground_truth = truth

    for adjudication in Adjudication.objects.filter(case_id__in=ids).order_by("version"):
        item = by_id[adjudication.case_id]
        if adjudication.is_consensus:
            item.consensus = adjudication
        else:
            item.readers[adjudication.reader_id] = adjudication
            item.first_readings.setdefault(adjudication.reader_id, adjudication)

    predictions = (
        Prediction.objects.filter(job__study__case_id__in=ids, job__study__role=Study.Role.BASELINE)
        .select_related("job__study", "model_version")
        .order_by("created_at", "pk")
    )
    for prediction in predictions:
        by_id[prediction.job.study.case_id].predictions[prediction.model_version_id] = prediction

    latest_jobs: dict[int, InferenceJob] = {}
    jobs = (
        InferenceJob.objects.filter(study__case_id__in=ids, study__role=Study.Role.BASELINE)
        .exclude(run_count=0)
        .select_related("study")
        .order_by("queued_at", "pk")
    )
    for job in jobs:
        latest_jobs[job.study.case_id] = job
    latest_runs = {(job.pk, job.run_count) for job in latest_jobs.values()}
    lesions = Lesion.objects.filter(
        job_id__in=[job.pk for job in latest_jobs.values()], source=Lesion.Source.AUTO
    ).select_related("job__study")
    for lesion in lesions.order_by("label_index"):
        # Automatic lesions always have a job; only true lesions belong to a study instead.
        if lesion.job is not None and (lesion.job_id, lesion.run_number) in latest_runs:
            by_id[lesion.job.study.case_id].lesions.append(lesion)
    return facts


def model_versions_used(facts: Iterable[CaseFacts]) -> list[ModelVersion]:
    """Return the model versions with a prediction in ``facts``, ordered by kind and version."""
    ids = {version_id for item in facts for version_id in item.predictions}
    return list(ModelVersion.objects.filter(pk__in=ids).order_by("kind", "version", "pk"))
