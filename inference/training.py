"""Training and evaluation runs over a cohort: features, models, registry, report.

A cohort is a list of ``CohortEntry`` rows (code, label, split, and either a study folder or
an in-memory volume). Cases labelled ``none`` (no hyperdensity) are not part of the
three-class question and are skipped. Training uses the ``train`` split only; evaluation
uses the ``test`` split only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.errors import InferenceError
from inference.evaluation.metrics import CLASS_LABELS
from inference.models.classical import (
    CLASSICAL_KINDS,
    TrainingConfig,
    train_classical,
)
from inference.models.hybrid import train_stacker
from inference.models.registry import ModelRegistry, ModelVersion
from inference.pipeline import analyse_volume
from inference.radiomics import RadiomicsSettings, case_feature_names, load_settings
from inference.volume import Volume

logger = logging.getLogger(__name__)


@dataclass
class CohortEntry:
    """One case of a cohort; ``volume`` replaces ``study_path`` in tests and notebooks."""

    code: str
    label: str
    split: str
    study_path: Path | None = None
    volume: Volume | None = None
    load_volume: Callable[[], Volume] | None = None
    # True lesion labels on the baseline grid (0 = background), used to train the U-Net's
    # segmentation head; None trains its classification head only.
    load_true_labels: Callable[[], np.ndarray] | None = None

    def baseline_volume(self) -> Volume:
        if self.volume is not None:
            return self.volume
        if self.load_volume is not None:
            return self.load_volume()
        if self.study_path is None:
            raise InferenceError(
                f"case {self.code} has neither a study folder nor a volume",
                code="cohort_case_incomplete",
            )
        from inference.dicom import load_study

        volume, _scan = load_study(self.study_path)
        return volume


def cohort_from_directory(cohort_dir: Path | str) -> tuple[str, list[CohortEntry]]:
    """Read a cohort written by the synthetic generator; return its id and entries."""
    from inference.synthetic import load_cohort

    try:
        manifest = load_cohort(Path(cohort_dir))
    except (FileNotFoundError, ValueError) as error:
        raise InferenceError(
            f"cannot read the cohort in {cohort_dir}: {error}",
            path=str(cohort_dir),
            code="cohort_invalid",
        ) from error
    entries = [
        CohortEntry(
            code=case.code,
            label=case.label,
            split=case.split,
            study_path=case.baseline_dir,
            # The U-Net's segmentation head learns from the generator's true lesion masks.
            load_true_labels=case.true_labels,
        )
        for case in manifest.cases
    ]
    return manifest.cohort_id, entries


@dataclass
class FeatureTable:
    """Case-level radiomics vectors of a set of cases, one row per patient."""

    codes: list[str]
    labels: list[str]
    matrix: np.ndarray
    feature_names: list[str]
    settings_id: str
    settings_sha256: str
    case_details: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self, path: Path) -> None:
        payload = {
            "codes": self.codes,
            "labels": self.labels,
            "feature_names": self.feature_names,
            "settings_id": self.settings_id,
            "settings_sha256": self.settings_sha256,
            "matrix": [
                [None if not np.isfinite(v) else float(v) for v in row] for row in self.matrix
            ],
            "case_details": self.case_details,
        }
        path.write_text(json.dumps(payload) + "\n", encoding="utf-8")


def build_feature_table(
    entries: Iterable[CohortEntry],
    settings: RadiomicsSettings | None = None,
    split: str | None = None,
) -> FeatureTable:
    """Segment and extract radiomics for every three-class case (of ``split`` if given)."""
    settings = settings or load_settings()
    names = case_feature_names(settings)
    started = time.perf_counter()
    codes: list[str] = []
    labels: list[str] = []
    rows: list[np.ndarray] = []
    details: list[dict[str, Any]] = []
    for entry in entries:
        if split is not None and entry.split != split:
            continue
        if entry.label not in CLASS_LABELS:
            continue
        analysis = analyse_volume(entry.baseline_volume(), settings)
        codes.append(entry.code)
        labels.append(entry.label)
        rows.append(analysis.feature_vector(names))
        details.append(
            {
                "code": entry.code,
                "n_lesions": len(analysis.segmentation.lesions),
                "too_small": sorted(
                    {cls for lesion in analysis.radiomics.lesions for cls in lesion.too_small}
                ),
                "timings_s": analysis.timings_s,
            }
        )
    if not rows:
        raise InferenceError(
            f"no HT, CE or HT+CE case in the {split or 'whole'} split; check the cohort's labels",
            code="cohort_empty",
        )
    empty = sum(1 for item in details if item["n_lesions"] == 0)
    if empty:
        logger.warning("Segmentation found no hyperdensity in %d of %d cases", empty, len(details))
    return FeatureTable(
        codes,
        labels,
        np.vstack(rows),
        names,
        settings.settings_id,
        settings.sha256,
        details,
        time.perf_counter() - started,
    )


def train_models(
    table: FeatureTable,
    registry: ModelRegistry,
    *,
    version: str,
    cohort_id: str,
    config: TrainingConfig | None = None,
    synthetic_training_data: bool = True,
    kinds: Sequence[str] = CLASSICAL_KINDS,
    with_hybrid: bool = True,
) -> list[ModelVersion]:
    """Train the classical models (and the stacked hybrid) on ``table`` and register them."""
    config = config or TrainingConfig()
    common_extra = {
        "classes": list(CLASS_LABELS),
        "feature_names": table.feature_names,
        "radiomics_settings_id": table.settings_id,
        "radiomics_settings_sha256": table.settings_sha256,
        "training_cases": len(table.codes),
        "training_class_counts": {label: table.labels.count(label) for label in CLASS_LABELS},
        "unit_of_analysis": "patient (one case-level radiomics vector per patient)",
    }
    registered: list[ModelVersion] = []
    oof: dict[str, np.ndarray] = {}
    versions: dict[str, ModelVersion] = {}
    for kind in kinds:
        trained = train_classical(kind, table.matrix, table.labels, table.feature_names, config)  # type: ignore[arg-type]
        oof[kind] = trained.oof_probabilities
        record = registry.register_sklearn(
            trained.estimator,
            name=kind,
            kind=kind,
            version=version,
            params={**config.to_dict(), **trained.params()},
            training_cohort_id=cohort_id,
            seed=config.seed,
            metrics={
                "cv_" + config.scoring: trained.cv_score,
                "cv_" + config.scoring + "_sd": trained.cv_score_sd,
                "cv_scheme": f"{config.n_repeats} x {config.n_splits}-fold stratified, train split only",
            },
            synthetic_training_data=synthetic_training_data,
            extra={
                **common_extra,
                "selected_features": trained.selected_features,
                "training_seconds": trained.seconds,
            },
        )
        versions[kind] = record
        registered.append(record)
    if with_hybrid and len(oof) >= 2:
        stacker = train_stacker(oof, table.labels, config)
        record = registry.register_sklearn(
            stacker.estimator,
            name="hybrid",
            kind="hybrid",
            version=version,
            params={**config.to_dict(), **stacker.best_params},
            training_cohort_id=cohort_id,
            seed=config.seed,
            metrics={
                "cv_" + config.scoring: stacker.cv_score,
                "cv_" + config.scoring + "_sd": stacker.cv_score_sd,
                "cv_scheme": "stacker on out-of-fold base-model probabilities",
            },
            synthetic_training_data=synthetic_training_data,
            extra={
                **common_extra,
                "base_models": [
                    {
                        "name": name,
                        "version": versions[name].version,
                        "sha256": versions[name].sha256,
                    }
                    for name in stacker.base_models
                ],
                "input_columns": stacker.input_columns,
            },
        )
        registered.append(record)
    return registered


def train_unet_model(
    entries: Iterable[CohortEntry],
    registry: ModelRegistry,
    *,
    version: str,
    cohort_id: str,
    seed: int = 0,
    config: Any = None,
    synthetic_training_data: bool = True,
) -> ModelVersion:
    """Train the slice U-Net on the train split's three-class cases and register it.

    The hybrid stacker does not include the U-Net: its out-of-fold probabilities would need
    one U-Net per fold.
    """
    from inference.models.unet import TrainingCase, UNetConfig, train_unet

    config = config or UNetConfig()
    cases = [
        TrainingCase(
            volume=entry.baseline_volume(),
            lesion_labels=None if entry.load_true_labels is None else entry.load_true_labels(),
            label=entry.label,
        )
        for entry in entries
        if entry.split == "train" and entry.label in CLASS_LABELS
    ]
    trained = train_unet(cases, config, seed)
    return registry.register_unet(
        trained,
        name="unet",
        kind="unet",
        version=version,
        params=config.to_dict(),
        training_cohort_id=cohort_id,
        seed=seed,
        metrics={
            "best_epoch": trained.best_epoch,
            "history": trained.history[-1:] if trained.history else [],
        },
        synthetic_training_data=synthetic_training_data,
        extra={
            "classes": list(CLASS_LABELS),
            "training_cases": len(cases),
            "unit_of_analysis": "patient (slice probabilities weighted by predicted lesion area)",
        },
    )


def predict_entries(
    entries: Iterable[CohortEntry],
    registry: ModelRegistry,
    *,
    split: str | None = "test",
    settings: RadiomicsSettings | None = None,
) -> tuple[list[str], list[str], dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Run every registered model through the full pipeline on each three-class case.

    Returns the case codes, true labels, probabilities per model name (n_cases, 3) and each
    model's registry information. A model that fails on any case is left out of the result
    and its first error is logged.
    """
    from inference.pipeline import ModelSet, predict_volume

    settings = settings or load_settings()
    models = ModelSet(registry, settings)
    if not models.records:
        raise InferenceError(
            f"no registered model in {registry.root}; run `python -m inference train` first",
            path=str(registry.root),
            code="model_not_found",
        )
    codes: list[str] = []
    truth: list[str] = []
    rows: dict[str, list[np.ndarray]] = {name: [] for name in models.records}
    failed: set[str] = set()
    for entry in entries:
        if (split is not None and entry.split != split) or entry.label not in CLASS_LABELS:
            continue
        analysis = analyse_volume(entry.baseline_volume(), settings)
        codes.append(entry.code)
        truth.append(entry.label)
        for output in predict_volume(analysis, models):
            name = output.model_id.split(":", 1)[0]
            if output.prediction is None:
                if name not in failed:
                    logger.warning(
                        "Model %s left out of evaluation: %s", output.model_id, output.error
                    )
                failed.add(name)
                continue
            rows[name].append(
                np.array([output.prediction.probabilities[label] for label in CLASS_LABELS])
            )
    if not codes:
        raise InferenceError(
            f"no HT, CE or HT+CE case in the {split or 'whole'} split; check the cohort's labels",
            code="cohort_empty",
        )
    probabilities = {name: np.vstack(values) for name, values in rows.items() if name not in failed}
    info = {
        name: {
            "model_id": record.model_id,
            "sha256": record.sha256,
            "training_cohort_id": record.training_cohort_id,
            "intended_use": record.intended_use,
            "params": record.params,
        }
        for name, record in models.records.items()
        if name in probabilities
    }
    return codes, truth, probabilities, info
