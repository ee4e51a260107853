"""A stacked model on the base models' out-of-fold probabilities.

The stacker is a multinomial logistic regression whose inputs are the class probabilities of
each base model (three columns per model, in a fixed model order). It is trained on
out-of-fold probabilities, so it learns how far to trust each base model on cases that model
did not see. Any set of base models works: the classical ones, the U-Net, or both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold

from inference.evaluation.metrics import CLASS_LABELS
from inference.models.classical import TrainingConfig, reorder_probability_columns

logger = logging.getLogger(__name__)


@dataclass
class TrainedStacker:
    """A fitted stacker and the base model names its input columns come from, in order."""

    estimator: LogisticRegression
    base_models: list[str]
    best_params: dict[str, Any]
    cv_score: float
    cv_score_sd: float

    @property
    def input_columns(self) -> list[str]:
        return [f"{name}:{label}" for name in self.base_models for label in CLASS_LABELS]


def stack_inputs(probabilities: Mapping[str, np.ndarray], base_models: Sequence[str]) -> np.ndarray:
    """Concatenate base-model probabilities (n_cases, 3 each) in ``base_models`` order."""
    missing = [name for name in base_models if name not in probabilities]
    if missing:
        raise ValueError(
            f"probabilities of base models {missing} are missing; the stacker was trained on "
            f"{list(base_models)}"
        )
    blocks = [
        np.atleast_2d(np.asarray(probabilities[name], dtype=np.float64)) for name in base_models
    ]
    rows = {block.shape[0] for block in blocks}
    if len(rows) != 1 or any(block.shape[1] != len(CLASS_LABELS) for block in blocks):
        raise ValueError(
            f"base-model probabilities have shapes {[block.shape for block in blocks]}; expected "
            f"(n_cases, {len(CLASS_LABELS)}) for every model"
        )
    return np.hstack(blocks)


def train_stacker(
    oof_probabilities: Mapping[str, np.ndarray],
    labels: Sequence[str],
    config: TrainingConfig | None = None,
) -> TrainedStacker:
    """Fit the stacker on out-of-fold probabilities of the named base models."""
    config = config or TrainingConfig()
    base_models = sorted(oof_probabilities)
    if not base_models:
        raise ValueError("no base-model probabilities given; train at least one base model first")
    inputs = stack_inputs(oof_probabilities, base_models)
    search = GridSearchCV(
        LogisticRegression(class_weight="balanced", max_iter=5000, random_state=config.seed),
        {"C": [0.1, 1.0, 10.0]},
        scoring=config.scoring,
        cv=RepeatedStratifiedKFold(
            n_splits=config.n_splits, n_repeats=config.n_repeats, random_state=config.seed
        ),
        n_jobs=1,
        refit=True,
    )
    search.fit(inputs, np.asarray(labels))
    index = search.best_index_
    logger.info(
        "Trained stacker on %s: CV %.3f", base_models, search.cv_results_["mean_test_score"][index]
    )
    return TrainedStacker(
        estimator=search.best_estimator_,
        base_models=base_models,
        best_params=dict(search.best_params_),
        cv_score=float(search.cv_results_["mean_test_score"][index]),
        cv_score_sd=float(search.cv_results_["std_test_score"][index]),
    )


def predict_stacked(
    estimator: Any, probabilities: Mapping[str, np.ndarray], base_models: Sequence[str]
) -> np.ndarray:
    """Return the stacker's probabilities (columns in ``CLASS_LABELS`` order)."""
    inputs = stack_inputs(probabilities, base_models)
    return reorder_probability_columns(
        estimator.predict_proba(inputs), [str(value) for value in estimator.classes_]
    )
