"""The readers' and operations dashboards.

Readers: agreement between readers (Cohen's kappa per pair, Fleiss' kappa over cases read by
every reader), each reader against the ground truth and against the model, and how often a
reader changed the label after seeing the model. The unit of analysis is the patient, and each
reader's latest adjudication version counts. Operations: jobs by state, failures, step times.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.evaluation import cohen_kappa, fleiss_kappa_ci, proportion_with_ci
from webapp.core.models import Case
from webapp.jobs.models import InferenceJob, ModelVersion, Prediction
from webapp.research.casefacts import CaseFacts, load_case_facts
from webapp.research.provenance import trained_on_synthetic_data

# Minimum shared cases for a kappa. Below it, the table shows the count and the reason instead.
MIN_SHARED_CASES = 2
MAX_FAILURES_SHOWN = 50


@dataclass(frozen=True)
class PairAgreement:
    reader_a: str
    reader_b: str
    n_cases: int
    percent_agreement: float
    kappa: dict[str, Any] | None
    note: str = ""


def _shown_prediction(item: CaseFacts) -> Prediction | None:
    """Return the prediction the worklist shows: a promoted version's, else the newest."""
    if not item.predictions:
        return None
    return max(
        item.predictions.values(),
        key=lambda p: (p.model_version.is_promoted, p.created_at, p.pk),
    )


def _model_label(item: CaseFacts) -> str | None:
    prediction = _shown_prediction(item)
    return prediction.predicted_label if prediction else None


def _compared_models(facts: list[CaseFacts], reader_ids: list[int]) -> list[dict[str, Any]]:
    """Return the model versions whose predictions the readers were compared with."""
    versions: dict[int, ModelVersion] = {}
    for item in facts:
        prediction = _shown_prediction(item)
        if prediction is not None and any(reader in item.readers for reader in reader_ids):
            versions[prediction.model_version_id] = prediction.model_version
    return [
        {
            "name": f"{version.kind} {version.version}",
            "trained_on_synthetic_data": trained_on_synthetic_data(version),
        }
        for version in sorted(versions.values(), key=lambda v: (v.kind, v.version, v.pk))
    ]


def reader_code(user_id: int) -> str:
    return f"reader_{user_id}"


def build_reader_dashboard(split: str | None = None) -> dict[str, Any]:
    """Return reader agreement, accuracy against truth and model, and changes of mind."""
    cases = Case.objects.order_by("code")
    if split:
        cases = cases.filter(split=split)
    facts = load_case_facts(cases)
    reader_ids = sorted({reader for item in facts for reader in item.readers})

    pairs = []
    for first, second in itertools.combinations(reader_ids, 2):
        shared = [item for item in facts if first in item.readers and second in item.readers]
        labels_a = [item.readers[first].label for item in shared]
        labels_b = [item.readers[second].label for item in shared]
        agree = sum(a == b for a, b in zip(labels_a, labels_b, strict=True))
        kappa = None
        note = ""
        if len(shared) >= MIN_SHARED_CASES:
            kappa = cohen_kappa(labels_a, labels_b).to_dict()
        else:
            note = f"{len(shared)} shared case(s); kappa needs at least {MIN_SHARED_CASES}"
        pairs.append(
            PairAgreement(
                reader_code(first),
                reader_code(second),
                len(shared),
                agree / len(shared) if shared else float("nan"),
                kappa,
                note,
            )
        )

    fleiss = None
    fleiss_note = ""
    if len(reader_ids) >= 2:
        complete = [item for item in facts if all(r in item.readers for r in reader_ids)]
        if len(complete) >= MIN_SHARED_CASES:
            table = [[item.readers[r].label for r in reader_ids] for item in complete]
            fleiss = fleiss_kappa_ci(table).to_dict()
        else:
            fleiss_note = (
                f"{len(complete)} case(s) read by all {len(reader_ids)} readers; Fleiss' kappa "
                f"needs at least {MIN_SHARED_CASES}"
            )

    readers = []
    for reader_id in reader_ids:
        read = [item for item in facts if reader_id in item.readers]
        with_truth = [item for item in read if item.ground_truth]
        with_model = [item for item in read if _model_label(item)]
        truth_hits = sum(
            item.readers[reader_id].label == item.ground_truth.label
            for item in with_truth
            if item.ground_truth is not None
        )
        model_hits = sum(item.readers[reader_id].label == _model_label(item) for item in with_model)
        # A change of mind: first version recorded without the model, latest with it shown.
        reviewed = [
            item
            for item in read
            if not item.first_readings[reader_id].model_shown
            and item.readers[reader_id].model_shown
            and item.readers[reader_id].version > 1
        ]
        changed = [
            item
            for item in reviewed
            if item.readers[reader_id].label != item.first_readings[reader_id].label
        ]
        toward_model = [
            item for item in changed if item.readers[reader_id].label == _model_label(item)
        ]
        readers.append(
            {
                "reader": reader_code(reader_id),
                "n_cases": len(read),
                "vs_truth": proportion_with_ci(truth_hits, len(with_truth)).to_dict()
                if with_truth
                else None,
                "vs_model": proportion_with_ci(model_hits, len(with_model)).to_dict()
                if with_model
                else None,
                "reviewed_with_model": len(reviewed),
                "changed_after_model": len(changed),
                "changed_toward_model": len(toward_model),
            }
        )
    models = _compared_models(facts, reader_ids)
    return {
        "unit_of_analysis": "patient",
        "split": split or "all",
        "pairs": pairs,
        "fleiss": fleiss,
        "fleiss_note": fleiss_note,
        "readers": readers,
        "models": models,
        "any_model_synthetic": any(model["trained_on_synthetic_data"] for model in models),
    }


def build_operations_dashboard() -> dict[str, Any]:
    """Return job counts by state, recent failures, and median and p95 seconds per step."""
    counts = Counter(dict.fromkeys(InferenceJob.Status.values, 0))
    counts.update(dict(Counter(InferenceJob.objects.values_list("status", flat=True))))
    failures = list(
        InferenceJob.objects.filter(status=InferenceJob.Status.FAILED)
        .select_related("study__case")
        .order_by("-finished_at", "-pk")[:MAX_FAILURES_SHOWN]
    )
    per_step: dict[str, list[float]] = {}
    for timings in InferenceJob.objects.exclude(step_timings_s={}).values_list(
        "step_timings_s", flat=True
    ):
        for step, seconds in (timings or {}).items():
            if isinstance(seconds, int | float):
                per_step.setdefault(step, []).append(float(seconds))
    steps = [
        {
            "step": step,
            "n_jobs": len(values),
            "median_s": float(np.median(values)),
            "p95_s": float(np.percentile(values, 95)),
        }
        for step, values in per_step.items()
    ]
    order = {value: index for index, value in enumerate(InferenceJob.Step.values)}
    steps.sort(key=lambda row: order.get(str(row["step"]), len(order)))
    return {"counts": dict(counts), "failures": failures, "steps": steps}
