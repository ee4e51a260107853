"""A cohort with stored radiomics features for the retraining tests (this module has no tests).

Each case has a succeeded baseline job whose prediction row carries the complete case-level
feature vector, computed (here: drawn) with the current radiomics settings, as the worker
stores it. The first five features separate the three classes; the rest are noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inference.radiomics import case_feature_names, load_settings
from webapp.core.models import Case, GroundTruth, Study
from webapp.jobs.models import InferenceJob, ModelVersion, Prediction
from webapp.research.retraining import DEFAULT_CONFIG

# Small settings so a run trains in seconds: one cross-validation repeat, few trees.
FAST_CONFIG = {
    **DEFAULT_CONFIG,
    "n_repeats": 1,
    "k_features": [5, 10],
    "rf_trees": 20,
    "n_resamples": 200,
}
CLASS_CENTRES = {"HT": 0.0, "CE": 3.0, "HT+CE": 6.0}


def feature_values(label: str, rng: np.random.Generator) -> dict[str, float | None]:
    names = case_feature_names(load_settings())
    values: dict[str, float | None] = {}
    for index, name in enumerate(names):
        value = float(rng.normal()) + (CLASS_CENTRES[label] if index < 5 else 0.0)
        values[name] = value
    # A missing feature is stored as null, as the worker stores NaN; training imputes it.
    values[names[-1]] = None
    return values


def add_case(
    code: str,
    split: str,
    label: str | None,
    user: Any,
    seed_version: ModelVersion,
    *,
    rng: np.random.Generator,
    features: dict[str, Any] | None = None,
    settings_sha256: str | None = None,
    synthetic: bool = True,
) -> Case:
    case = Case.objects.create(code=code, split=split, is_synthetic=synthetic)
    study = Study.objects.create(
        case=case, role=Study.Role.BASELINE, study_instance_uid=f"2.25.77{case.pk}"
    )
    job = InferenceJob.objects.create(
        study=study, pipeline_version="test-1", status="succeeded", run_count=1
    )
    Prediction.objects.create(
        job=job,
        model_version=seed_version,
        probabilities={"HT": 0.4, "CE": 0.3, "HT+CE": 0.3},
        predicted_label="HT",
        features=features if features is not None else feature_values(label or "HT", rng),
        provenance={
            "radiomics": {"settings_sha256": settings_sha256 or load_settings().sha256},
        },
    )
    if label is not None:
        GroundTruth.objects.create(case=case, version=1, label=label, entered_by=user)
    return case


def build_cohort(
    user: Any, train_per_class: int = 4, test_per_class: int = 2, seed: int = 0
) -> ModelVersion:
    """Create the cohort; return the model version its stored predictions came from."""
    rng = np.random.default_rng(seed)
    seed_version = ModelVersion.objects.create(kind="lr", version="1.0.0", sha256="0" * 64)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for label in CLASS_CENTRES:
            for index in range(per_class):
                code = f"{split[:2].upper()}-{label.replace('+', '')}-{index}"
                add_case(code, split, label, user, seed_version, rng=rng)
    return seed_version
