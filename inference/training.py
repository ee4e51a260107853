"""Training and evaluation runs over a cohort: features, models, registry, report.

A cohort is a list of ``CohortEntry`` rows (code, label, split, and either a study folder or
an in-memory volume). Cases labelled ``none`` (no hyperdensity) are not part of the
three-class question and are skipped. Training uses the ``train`` split only; evaluation
uses the ``test`` split only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

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

if TYPE_CHECKING:
    from inference.models.unet import TrainingCase, UNetConfig, UNetOutOfFold

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


# Stored in the hybrid's registered parameters, so a reader of model.json can tell which base
# models it stacks without reading the code.
STACKING_RADIOMICS_ONLY = (
    "radiomics models only: trained without --with-unet, so the U-Net's probabilities are "
    "not among the stacker's inputs"
)
STACKING_WITH_UNET = (
    "radiomics models and the U-Net: the stacker was fitted on every base model's "
    "out-of-fold probabilities, the U-Net's from one U-Net trained per fold"
)


def out_of_fold_splits(
    labels: Sequence[str], n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the seeded stratified K-fold that the classical models' out-of-fold
    probabilities use (``train_classical``), as (training indices, held-out indices) pairs.
    """
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(labels), 1)), np.asarray(labels)))


def _common_extra(table: FeatureTable) -> dict[str, Any]:
    return {
        "classes": list(CLASS_LABELS),
        "feature_names": table.feature_names,
        "radiomics_settings_id": table.settings_id,
        "radiomics_settings_sha256": table.settings_sha256,
        "training_cases": len(table.codes),
        "training_class_counts": {label: table.labels.count(label) for label in CLASS_LABELS},
        "unit_of_analysis": "patient (one case-level radiomics vector per patient)",
    }


@dataclass
class _ClassicalRun:
    records: list[ModelVersion]
    oof: dict[str, np.ndarray]
    versions: dict[str, ModelVersion]


def _train_classical_models(
    table: FeatureTable,
    registry: ModelRegistry,
    *,
    version: str,
    cohort_id: str,
    config: TrainingConfig,
    synthetic_training_data: bool,
    kinds: Sequence[str],
) -> _ClassicalRun:
    run = _ClassicalRun([], {}, {})
    for kind in kinds:
        trained = train_classical(kind, table.matrix, table.labels, table.feature_names, config)  # type: ignore[arg-type]
        run.oof[kind] = trained.oof_probabilities
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
                **_common_extra(table),
                "selected_features": trained.selected_features,
                "training_seconds": trained.seconds,
            },
        )
        run.versions[kind] = record
        run.records.append(record)
    return run


def register_hybrid(
    table: FeatureTable,
    registry: ModelRegistry,
    oof_probabilities: Mapping[str, np.ndarray],
    base_records: Mapping[str, ModelVersion],
    *,
    version: str,
    cohort_id: str,
    config: TrainingConfig,
    synthetic_training_data: bool = True,
    unet_out_of_fold: UNetOutOfFold | None = None,
    final_unet_epochs: int | None = None,
) -> ModelVersion:
    """Fit the stacker on the base models' out-of-fold probabilities and register it.

    ``oof_probabilities`` rows follow ``table.codes``. With ``unet_out_of_fold`` the U-Net
    (``oof_probabilities["unet"]``) is among the inputs, and the parameters record how its
    out-of-fold probabilities were made. Without it they state that the hybrid stacks the
    radiomics models only.
    """
    stacker = train_stacker(oof_probabilities, table.labels, config)
    stacks_unet = "unet" in stacker.base_models
    if stacks_unet and unet_out_of_fold is None:
        raise ValueError(
            "oof_probabilities include the U-Net, but unet_out_of_fold is missing; pass the "
            "UNetOutOfFold that produced them so the hybrid records how they were made"
        )
    params: dict[str, Any] = {
        **config.to_dict(),
        **stacker.best_params,
        "stacked_models": list(stacker.base_models),
        "stacks_unet": stacks_unet,
        "stacking": STACKING_WITH_UNET if stacks_unet else STACKING_RADIOMICS_ONLY,
    }
    if stacks_unet and unet_out_of_fold is not None:
        folds = out_of_fold_splits(table.labels, config.n_splits, config.seed)
        same_folds = len(folds) == len(unet_out_of_fold.fold_seeds) and all(
            unet_out_of_fold.fold_of_case[int(index)] == number
            for number, (_train, held_out) in enumerate(folds)
            for index in held_out
        )
        params["unet_out_of_fold"] = {
            **unet_out_of_fold.params(),
            "final_unet_max_epochs": final_unet_epochs,
            "same_folds_as_radiomics": same_folds,
            "note": (
                "each fold's U-Net trains for at most "
                f"{unet_out_of_fold.config.max_epochs} epochs, the final U-Net for at most "
                f"{final_unet_epochs}; the stacker learns from these cheaper fold models and "
                "then weighs the final U-Net's outputs the same way"
            ),
        }
    record = registry.register_sklearn(
        stacker.estimator,
        name="hybrid",
        kind="hybrid",
        version=version,
        params=params,
        training_cohort_id=cohort_id,
        seed=config.seed,
        metrics={
            "cv_" + config.scoring: stacker.cv_score,
            "cv_" + config.scoring + "_sd": stacker.cv_score_sd,
            "cv_scheme": "stacker on out-of-fold base-model probabilities",
        },
        synthetic_training_data=synthetic_training_data,
        extra={
            **_common_extra(table),
            "base_models": [
                {
                    "name": name,
                    "version": base_records[name].version,
                    "sha256": base_records[name].sha256,
                }
                for name in stacker.base_models
            ],
            "input_columns": stacker.input_columns,
        },
    )
    logger.info("Registered hybrid %s stacking %s", record.model_id, ", ".join(stacker.base_models))
    return record


def unet_training_cases(
    entries: Iterable[CohortEntry], codes: Sequence[str] | None = None
) -> list[TrainingCase]:
    """Load the U-Net's training cases: the train split's three-class cases.

    With ``codes`` the cases come in that order (the feature table's), so their rows line up
    with the radiomics models' out-of-fold probabilities.
    """
    from inference.models.unet import TrainingCase

    chosen = [entry for entry in entries if entry.split == "train" and entry.label in CLASS_LABELS]
    if codes is not None:
        by_code = {entry.code: entry for entry in chosen}
        missing = [code for code in codes if code not in by_code]
        if missing:
            raise InferenceError(
                f"cases {missing[:5]} are in the feature table but not among the cohort's "
                "train-split HT, CE or HT+CE cases; rebuild the table from the same cohort",
                code="cohort_case_incomplete",
            )
        chosen = [by_code[code] for code in codes]
    return [
        TrainingCase(
            volume=entry.baseline_volume(),
            lesion_labels=None if entry.load_true_labels is None else entry.load_true_labels(),
            label=entry.label,
        )
        for entry in chosen
    ]


def train_unet_model(
    entries: Iterable[CohortEntry],
    registry: ModelRegistry,
    *,
    version: str,
    cohort_id: str,
    seed: int = 0,
    config: Any = None,
    synthetic_training_data: bool = True,
    cases: Sequence[TrainingCase] | None = None,
) -> ModelVersion:
    """Train the slice U-Net on the train split's three-class cases and register it.

    ``cases`` reuses training cases already loaded by ``unet_training_cases``.
    """
    from inference.models.unet import UNetConfig, train_unet

    config = config or UNetConfig()
    if cases is None:
        cases = unet_training_cases(entries)
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


def default_oof_epochs(final_epochs: int) -> int:
    """Epochs of each out-of-fold U-Net when not given: half the final U-Net's, at least 1."""
    return max(1, (final_epochs + 1) // 2)


@dataclass(frozen=True)
class UNetStacking:
    """Settings for training the U-Net and its per-fold copies so the hybrid can stack it.

    ``oof_folds`` defaults to the classical models' ``n_splits`` (the same seeded splits) and
    ``oof_epochs`` to half the final U-Net's maximum epochs.
    """

    entries: Sequence[CohortEntry]
    config: UNetConfig | None = None
    oof_folds: int | None = None
    oof_epochs: int | None = None


def _add_unet(
    run: _ClassicalRun,
    table: FeatureTable,
    registry: ModelRegistry,
    stacking: UNetStacking,
    *,
    version: str,
    cohort_id: str,
    config: TrainingConfig,
    synthetic_training_data: bool,
) -> tuple[UNetOutOfFold, int]:
    """Train and register the final U-Net, then add its out-of-fold probabilities to ``run``.

    Returns the out-of-fold run and the final U-Net's maximum epochs.
    """
    from inference.models.unet import UNetConfig, out_of_fold_probabilities

    unet_config = stacking.config or UNetConfig()
    cases = unet_training_cases(stacking.entries, table.codes)
    unet_record = train_unet_model(
        stacking.entries,
        registry,
        version=version,
        cohort_id=cohort_id,
        seed=config.seed,
        config=unet_config,
        synthetic_training_data=synthetic_training_data,
        cases=cases,
    )
    run.records.append(unet_record)

    oof_epochs = stacking.oof_epochs or default_oof_epochs(unet_config.max_epochs)
    oof_config = dataclasses.replace(unet_config, max_epochs=oof_epochs)
    folds = out_of_fold_splits(table.labels, stacking.oof_folds or config.n_splits, config.seed)
    logger.info(
        "Training %d out-of-fold U-Nets (at most %d epochs each) for the hybrid",
        len(folds),
        oof_epochs,
    )
    unet_oof = out_of_fold_probabilities(cases, folds, oof_config, config.seed)
    order = [list(unet_oof.classes).index(label) for label in CLASS_LABELS]
    run.oof["unet"] = unet_oof.probabilities[:, order]
    run.versions["unet"] = unet_record
    return unet_oof, unet_config.max_epochs


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
    unet: UNetStacking | None = None,
) -> list[ModelVersion]:
    """Train the classical models on ``table``, optionally the U-Net, and the hybrid.

    With ``unet`` the final U-Net trains on all training cases. Then one U-Net per fold gives
    the U-Net's out-of-fold probabilities, so the hybrid stacks the radiomics models and the
    U-Net. Without it the hybrid stacks the radiomics models only. On CPU the fold U-Nets cost
    about ``folds x oof_epochs`` epochs, each on ``(folds - 1) / folds`` of the training cases.
    """
    config = config or TrainingConfig()
    run = _train_classical_models(
        table,
        registry,
        version=version,
        cohort_id=cohort_id,
        config=config,
        synthetic_training_data=synthetic_training_data,
        kinds=kinds,
    )
    unet_oof: UNetOutOfFold | None = None
    final_unet_epochs: int | None = None
    if unet is not None:
        unet_oof, final_unet_epochs = _add_unet(
            run,
            table,
            registry,
            unet,
            version=version,
            cohort_id=cohort_id,
            config=config,
            synthetic_training_data=synthetic_training_data,
        )
    if with_hybrid and len(run.oof) >= 2:
        run.records.append(
            register_hybrid(
                table,
                registry,
                run.oof,
                run.versions,
                version=version,
                cohort_id=cohort_id,
                config=config,
                synthetic_training_data=synthetic_training_data,
                unet_out_of_fold=unet_oof,
                final_unet_epochs=final_unet_epochs,
            )
        )
    return run.records


def train_cohort(
    entries: Sequence[CohortEntry],
    registry: ModelRegistry,
    *,
    version: str,
    cohort_id: str,
    config: TrainingConfig | None = None,
    synthetic_training_data: bool = True,
    with_unet: bool = False,
    unet_config: UNetConfig | None = None,
    unet_oof_folds: int | None = None,
    unet_oof_epochs: int | None = None,
) -> list[ModelVersion]:
    """Build the train split's feature table, then train and register every model on it.

    ``with_unet`` adds the U-Net and stacks it in the hybrid (see ``train_models``).
    """
    table = build_feature_table(entries, split="train")
    stacking = None
    if with_unet:
        stacking = UNetStacking(entries, unet_config, unet_oof_folds, unet_oof_epochs)
    return train_models(
        table,
        registry,
        version=version,
        cohort_id=cohort_id,
        config=config,
        synthetic_training_data=synthetic_training_data,
        unet=stacking,
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
