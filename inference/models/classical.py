"""scikit-learn classifiers on case-level radiomics: SVM, random forest, logistic regression.

Each model is one Pipeline (median imputation, removal of constant features, scaling,
univariate feature selection, classifier), so scaling and selection are refitted inside every
cross-validation fold and never see the fold's held-out cases. Hyperparameters are chosen by
grid search with stratified, repeated K-fold on the training split only. Every estimator and
splitter gets an integer ``random_state`` derived from one seed, so a run is repeatable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    RepeatedStratifiedKFold,
    StratifiedKFold,
    cross_val_predict,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from inference.evaluation.metrics import CLASS_LABELS

logger = logging.getLogger(__name__)

ClassicalKind = Literal["svm", "rf", "lr"]
CLASSICAL_KINDS: tuple[ClassicalKind, ...] = ("svm", "rf", "lr")
DEFAULT_UNCERTAINTY_MARGIN = 0.15
# Folds of the SVM's inner Platt-scaling cross-validation.
CALIBRATION_FOLDS = 3


@dataclass(frozen=True)
class TrainingConfig:
    """Cross-validation and search settings shared by every classical model."""

    seed: int = 0
    n_splits: int = 4
    n_repeats: int = 3
    k_features: tuple[int, ...] = (10, 20, 40)
    rf_trees: int = 200
    scoring: str = "f1_macro"
    uncertainty_margin: float = DEFAULT_UNCERTAINTY_MARGIN

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "n_splits": self.n_splits,
            "n_repeats": self.n_repeats,
            "k_features": list(self.k_features),
            "rf_trees": self.rf_trees,
            "scoring": self.scoring,
            "uncertainty_margin": self.uncertainty_margin,
        }


def _classifier(kind: ClassicalKind, config: TrainingConfig) -> Any:
    if kind == "svm":
        # Explicit Platt scaling on inner folds: scikit-learn 1.9 deprecates
        # SVC(probability=True), and its internal calibration ignored random_state anyway.
        return CalibratedClassifierCV(
            SVC(kernel="rbf", class_weight="balanced", random_state=config.seed),
            method="sigmoid",
            cv=StratifiedKFold(n_splits=CALIBRATION_FOLDS, shuffle=True, random_state=config.seed),
        )
    if kind == "rf":
        return RandomForestClassifier(
            n_estimators=config.rf_trees,
            class_weight="balanced",
            random_state=config.seed,
            n_jobs=1,
        )
    if kind == "lr":
        # lbfgs fits a multinomial model for three classes.
        return LogisticRegression(class_weight="balanced", max_iter=5000, random_state=config.seed)
    raise ValueError(f"unknown classical model kind {kind!r}; expected one of {CLASSICAL_KINDS}")


def _grid(kind: ClassicalKind, config: TrainingConfig, n_features: int) -> dict[str, list[Any]]:
    k_values = sorted({min(k, n_features) for k in config.k_features})
    grid: dict[str, list[Any]] = {"select__k": k_values}
    if kind == "svm":
        grid["clf__estimator__C"] = [0.3, 1.0, 3.0, 10.0]
        grid["clf__estimator__gamma"] = ["scale", 0.01]
    elif kind == "rf":
        grid["clf__max_depth"] = [None, 4]
        grid["clf__min_samples_leaf"] = [1, 3]
    else:
        grid["clf__C"] = [0.01, 0.1, 1.0]
    return grid


def build_pipeline(kind: ClassicalKind, config: TrainingConfig, k_features: int = 20) -> Pipeline:
    """Return the untrained pipeline of one model kind."""
    return Pipeline(
        [
            # Cases where segmentation found no lesion, or a lesion too small for a feature
            # class, have NaN features, which the training median replaces.
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("constant", VarianceThreshold()),
            ("scale", StandardScaler()),
            ("select", SelectKBest(f_classif, k=k_features)),
            ("clf", _classifier(kind, config)),
        ]
    )


@dataclass
class TrainedModel:
    """A fitted pipeline with its search results and out-of-fold probabilities."""

    kind: ClassicalKind
    estimator: Pipeline
    best_params: dict[str, Any]
    cv_score: float
    cv_score_sd: float
    oof_probabilities: np.ndarray
    classes: tuple[str, ...]
    feature_names: list[str]
    seconds: float
    selected_features: list[str] = field(default_factory=list)

    def params(self) -> dict[str, Any]:
        return {key: value for key, value in self.best_params.items()}


def _check_training_data(
    kind: ClassicalKind, features: np.ndarray, labels: Sequence[str], n_splits: int
) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != len(labels):
        raise ValueError(
            f"features have shape {matrix.shape} but there are {len(labels)} labels; "
            "expected one row per case"
        )
    unknown = sorted(set(labels) - set(CLASS_LABELS))
    if unknown:
        raise ValueError(f"training labels {unknown} are not among {list(CLASS_LABELS)}")
    counts = {label: list(labels).count(label) for label in CLASS_LABELS}
    too_few = {label: count for label, count in counts.items() if count < n_splits}
    if too_few:
        raise ValueError(
            f"classes {too_few} have fewer cases than the {n_splits} cross-validation folds; "
            "add cases or lower n_splits"
        )
    if kind == "svm":
        # The SVM calibrates inside each search fold, so the smallest class must still fill
        # every calibration fold after one search fold is held out.
        smallest = min(counts.values())
        left_in_fold = smallest - -(-smallest // n_splits)
        if left_in_fold < CALIBRATION_FOLDS:
            raise ValueError(
                f"the smallest class has {smallest} cases, which leaves {left_in_fold} per "
                f"search fold for the SVM's {CALIBRATION_FOLDS}-fold probability calibration; "
                f"use at least {CALIBRATION_FOLDS + -(-CALIBRATION_FOLDS // (n_splits - 1))} "
                "cases per class or fewer folds"
            )
    return matrix


def train_classical(
    kind: ClassicalKind,
    features: np.ndarray,
    labels: Sequence[str],
    feature_names: Sequence[str],
    config: TrainingConfig | None = None,
) -> TrainedModel:
    """Tune and fit one model on the training split; also return its out-of-fold probabilities.

    The out-of-fold probabilities come from the tuned pipeline refitted in a stratified
    K-fold over the same cases (seeded), and feed the stacked hybrid model.
    """
    config = config or TrainingConfig()
    started = time.perf_counter()
    matrix = _check_training_data(kind, features, labels, config.n_splits)
    y = np.asarray(labels)
    search = GridSearchCV(
        build_pipeline(kind, config),
        _grid(kind, config, matrix.shape[1]),
        scoring=config.scoring,
        cv=RepeatedStratifiedKFold(
            n_splits=config.n_splits, n_repeats=config.n_repeats, random_state=config.seed
        ),
        n_jobs=1,
        refit=True,
        error_score="raise",
    )
    search.fit(matrix, y)
    best = search.best_estimator_
    oof = cross_val_predict(
        build_pipeline(kind, config).set_params(**search.best_params_),
        matrix,
        y,
        cv=StratifiedKFold(n_splits=config.n_splits, shuffle=True, random_state=config.seed),
        method="predict_proba",
    )
    classes = tuple(str(value) for value in best.classes_)
    oof = reorder_probability_columns(oof, classes)
    selected = _selected_feature_names(best, list(feature_names))
    index = search.best_index_
    seconds = time.perf_counter() - started
    logger.info(
        "Trained %s: CV %s %.3f (+/- %.3f) in %.1f s",
        kind,
        config.scoring,
        search.cv_results_["mean_test_score"][index],
        search.cv_results_["std_test_score"][index],
        seconds,
    )
    return TrainedModel(
        kind=kind,
        estimator=best,
        best_params=dict(search.best_params_),
        cv_score=float(search.cv_results_["mean_test_score"][index]),
        cv_score_sd=float(search.cv_results_["std_test_score"][index]),
        oof_probabilities=oof,
        classes=CLASS_LABELS,
        feature_names=list(feature_names),
        seconds=seconds,
        selected_features=selected,
    )


def reorder_probability_columns(probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Return probability columns in ``CLASS_LABELS`` order; scikit-learn sorts classes."""
    order = [list(classes).index(label) for label in CLASS_LABELS]
    return np.asarray(probabilities)[:, order]


def _selected_feature_names(pipeline: Pipeline, feature_names: list[str]) -> list[str]:
    kept = pipeline.named_steps["constant"].get_support()
    after_constant = [name for name, keep in zip(feature_names, kept, strict=True) if keep]
    chosen = pipeline.named_steps["select"].get_support()
    return [name for name, keep in zip(after_constant, chosen, strict=True) if keep]


def predict_probabilities(estimator: Any, features: np.ndarray) -> np.ndarray:
    """Return class probabilities with columns in ``CLASS_LABELS`` order."""
    matrix = np.atleast_2d(np.asarray(features, dtype=np.float64))
    probabilities = estimator.predict_proba(matrix)
    return reorder_probability_columns(probabilities, [str(value) for value in estimator.classes_])


@dataclass(frozen=True)
class Prediction:
    """One model's prediction for one case.

    ``uncertain`` is True when the top two probabilities are closer than ``margin``; the
    label is still given and shown as uncertain, never hidden.
    """

    label: str
    probabilities: dict[str, float]
    uncertain: bool
    margin: float
    top_two_gap: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "probabilities": dict(self.probabilities),
            "uncertain": self.uncertain,
            "uncertainty_margin": self.margin,
            "top_two_gap": self.top_two_gap,
        }


def predictions_with_abstention(
    probabilities: np.ndarray,
    margin: float = DEFAULT_UNCERTAINTY_MARGIN,
    labels: Sequence[str] = CLASS_LABELS,
) -> list[Prediction]:
    """Turn probability rows into labelled predictions with an ``uncertain`` flag."""
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"uncertainty margin {margin} must be between 0 and 1")
    rows = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    predictions = []
    for row in rows:
        order = np.argsort(-row, kind="stable")
        gap = float(row[order[0]] - row[order[1]])
        predictions.append(
            Prediction(
                label=str(labels[order[0]]),
                probabilities={
                    str(label): float(value) for label, value in zip(labels, row, strict=True)
                },
                uncertain=gap < margin,
                margin=margin,
                top_two_gap=gap,
            )
        )
    return predictions
